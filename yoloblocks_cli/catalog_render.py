"""Rich rendering of catalog entries for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from yoloblocks_cli.catalog import Entry


def render_table(rows: list[Entry], console: Console | None = None) -> None:
    console = console or Console()
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
        table = Table(title="measured")
        table.add_column("fact")
        table.add_column("value")
        for key, value in e.measured.items():
            table.add_row(key, str(value))
        console.print(table)
