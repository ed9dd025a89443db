"""Rich rendering of catalog entries for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from yoloblocks_cli.catalog.entries import Entry


def render_table(rows: list[Entry], console: Console | None = None) -> None:
    console = console or Console()
    if not rows:
        console.print("no registered block matches (yb blocks lists them all)")
        return
    table = Table(title=f"{len(rows)} registered blocks", show_lines=False)
    for col in ("name", "family", "convention", "default args (c1=64)", "source"):
        table.add_column(col, overflow="fold")
    for e in rows:
        table.add_row(e.name, e.family, e.convention, repr(e.default_args), e.source)
    console.print(table)


def render_entry(e: Entry, console: Console | None = None) -> None:
    console = console or Console()
    lines = [f"# {e.name}", "", f"**family** {e.family} · **source** {e.source or 'n/a'}", "", e.doc or e.summary, "",
             f"**constructor** `{e.name}{e.signature}`", "",
             f"**YAML convention** `{e.convention}`: {e.convention_help}", "",
             "**in a YAML**", "", "```yaml", e.yaml_snippet, "```"]
    console.print(Markdown("\n".join(lines)))
    if e.measured:
        m = e.measured
        table = Table(title=f"measured at {m['reference_input']} (cpu, fp32)", show_header=False)
        table.add_column("fact")
        table.add_column("value", justify="right")
        table.add_row("parameters", f"{m['params']:,}")
        table.add_row("FLOPs (dispatch counter, 2 x MACs)", f"{m['flops']:,}")
        if "flops_exponent" in m:
            table.add_row("FLOPs exponent in N = H*W", f"{m['flops_exponent']:.2f}")
        if "passes_rectangular_sweep" in m:
            table.add_row("yb trace default block sweep", "passes" if m["passes_rectangular_sweep"] else "FAILS")
        console.print(table)
    elif e.family in ("head", "utility"):
        console.print("not measured standalone: it takes several inputs or a list (see `yb profile` on a model)")
