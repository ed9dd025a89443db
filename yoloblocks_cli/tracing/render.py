"""Terminal output of `yb trace`: configurations x probes table, failure details, layer traces."""

from __future__ import annotations

from typing import Any, Sequence

from yoloblocks_cli.tracing.probes import Point, Target
from yoloblocks_cli.tracing.tracer import fmt_shape

_MAX_ROWS = 12  # failing shape-phase rows listed in the table

_CELL = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]-[/]", "timeout": "[bold red]timeout[/]"}


def render(req: Any, kind: str, targets: Sequence[Target], probes: Sequence[str], points: Sequence[Point],
           report: dict[str, Any] | None = None, fallbacks: Sequence[Any] = (),
           total: int | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    for t in targets:
        console.print(f"[bold]{escape(t.name)}[/]")
    for line in _notes(report or {}):
        console.print(f"  [dim]{escape(line)}[/]")
    multi_scale = len(targets) > 1
    table = Table(show_edge=False, pad_edge=False)
    if multi_scale:
        table.add_column("scale")
    table.add_column("input (BxCxHxW)")
    for name in probes:
        table.add_column(name, justify="center")
    table.add_column("output")
    shape_only = [p for p in points if p.phase == "shape"]
    listed = [p for p in points if p.phase != "shape" or not p.ok]
    if len(listed) > _MAX_ROWS:  # a grouped failure below says where the rest failed
        listed = [p for p in listed if p.phase != "shape"] + [p for p in listed if p.phase == "shape"][:_MAX_ROWS]
    for p in points:
        if p not in listed:
            continue
        row = [p.scale or ""] if multi_scale else []
        row.append(str(p.shape))
        row += [_CELL.get(p.results[n].status, p.results[n].status) if n in p.results else "" for n in probes]
        row.append(escape(fmt_shape(p.output_shape)))
        table.add_row(*row)
    console.print(table)
    if shape_only:
        n_ok = sum(p.ok for p in shape_only)
        hidden = len(shape_only) - sum(1 for p in shape_only if p in listed)
        console.print(f"shape phase: {len(shape_only)} configurations on meta tensors, {n_ok} passed"
                      + (f" ({hidden} rows not shown: passing, or grouped below; --json lists every one)"
                         if hidden else "")
                      + f"; numeric probes at {len(points) - len(shape_only)}")
    for fb in fallbacks:
        console.print(f"[yellow]real-tensor fallback:[/] {escape(fb.describe())}")

    if req.layers and points:
        shown = [points[0]] + [p for p in points[1:] if not p.ok]
        for p in shown:
            _layers(console, p, kind)

    from yoloblocks_cli.tracing.grouping import group_failures

    failed = [p for p in points if not p.ok]
    for g in group_failures(points):
        configs, name, r = g.labels, g.probe, g.result
        console.print()
        shown = ", ".join(configs[:6]) + (f", ... ({len(configs)} configurations)" if len(configs) > 6 else "")
        console.print(f"[bold red]FAIL[/] {name} at {escape(shown)}")
        if len(configs) > 1:
            console.print(f"  {escape(g.summary())}")
        f = r.failure
        if f is None:
            console.print(f"  {escape(r.detail)}")
            continue
        where = f" at layer {escape(str(f.layer))} ({escape(str(f.module))})" if f.layer is not None else ""
        inp = f" input {fmt_shape(f.layer_input_shape)}" if f.layer_input_shape is not None else ""
        console.print(f"  {escape(f.type)}{where}{inp}")
        if f.inner:
            console.print(f"    inside {escape(str(f.inner.get('path')))} ({escape(str(f.inner.get('module')))})"
                          f" input {fmt_shape(f.inner.get('input_shape'))}")
        if f.file:
            console.print(f"  {escape(f.file)}:{f.line}")
        console.print(f"  {escape(' '.join(line.strip() for line in f.message.splitlines()))}")
        if f.hint:
            console.print(f"  [yellow]hint:[/] {escape(f.hint)}")
    for w in (report or {}).get("warnings", []):
        console.print()
        times = f" (x{w['count']})" if w["count"] > 1 else ""
        console.print(f"[yellow]warning[/] raised in the block at {escape(w['file'])}:{w['line']}{times}")
        console.print(f"  {escape(w['category'])}: {escape(' '.join(w['message'].split()))}")
    from yoloblocks_cli.tracing.run import point_status

    n_pass = sum(point_status(p) == "pass" for p in points)
    n_skip = sum(point_status(p) == "skip" for p in points)
    skipped = f", {n_skip} skipped (too small for the block)" if n_skip else ""
    console.print()
    colour = "green" if not failed else "red"
    console.print(f"[{colour}]{len(points)} configurations x {len(probes)} probes: "
                  f"{n_pass} passed, {len(failed)} failed{skipped}[/]")
    if total is not None and total > len(points):
        console.print(f"[bold red]interrupted:[/] {len(points)} of {total} configurations finished (partial report)")


def _notes(report: dict[str, Any]) -> list[str]:
    """Lines under the target's name: which class (file:line), the plugin classes used, the input plan."""
    out = []
    blk = report.get("block")
    # The class's file is worth a line when the command did not name it, or when it shadows a registered block.
    named = ":" in str(report.get("target", ""))
    if blk and blk.get("origin") != "registry" and (blk.get("shadows_registered") or not named):
        shadow = f"; shadows the registered {blk['name']}" if blk.get("shadows_registered") else ""
        out.append(f"{blk['class']} from {blk['file']}:{blk['line']}{shadow}")
    for u in report.get("plugins", []):  # every one is in the JSON; on screen, those that shadow a shipped block
        if u["shadows_registered"]:
            out.append(f"{u['name']}: your class from {u['file']}:{u['line']} (shadows the registered {u['name']})")
    plan = report.get("inputs")
    if plan and (plan["layout"] != "nchw" or plan["extras"] or plan["sizes"]):
        from yoloblocks_cli.loading.inputs import LAYOUT_TEXT, Layout

        feeds = [f"input {plan['layout']} {LAYOUT_TEXT[Layout(plan['layout'])]}"]
        feeds += [f"{n} from the size" for n in plan["sizes"]]
        feeds += [f"{k} {v}" for k, v in plan["extras"].items()]
        out.append(f"forward{plan['forward']}: " + ", ".join(feeds))
    return out


def _layers(console: Any, p: Point, kind: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"layers at {p.label}", show_edge=False, pad_edge=False, title_justify="left")
    t.add_column("layer" if kind == "model" else "module")
    t.add_column("type")
    t.add_column("input")
    t.add_column("output")
    # Completion order puts children before parents; show calls as a depth-first outline.
    for rec in _outline(p.layers):
        indent = "" if kind == "model" else "  " * rec.depth
        out = "[bold red]FAILED[/]" if rec.failed else fmt_shape(rec.output_shape)
        t.add_row(indent + escape(rec.label), rec.module, fmt_shape(rec.input_shape), out)
    console.print(t)


def _outline(records: Sequence[Any]) -> list[Any]:
    """Reorder completion-ordered records into call order (parents first)."""
    out: list[Any] = []
    pending: list[list[Any]] = []  # children collected for each open depth
    for rec in records:
        while len(pending) <= rec.depth + 1:
            pending.append([])
        children = pending[rec.depth + 1]
        pending[rec.depth].append([rec, children[:]])
        children.clear()
    roots = next((level for level in pending if level), [])

    def walk(node: list[Any]) -> None:
        out.append(node[0])
        for child in node[1]:
            walk(child)

    for node in roots:
        walk(node)
    # Records never completed (the failing call) are reported by the failure itself.
    return out if out else list(records)
