"""`yb inspect`: one block, every number (shapes, parameters, FLOPs, latency, memory).

The command parses options into :class:`~yoloblocks_cli.measuring.runs.InspectOptions`,
gets the report from :func:`~yoloblocks_cli.measuring.runs.inspect_report` (one
:func:`~yoloblocks_cli.measuring.engine.measure` per size) and renders it; torch is
imported only once the command runs.
"""

from __future__ import annotations

from typing import Any, Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import (ArgsOpt, BatchOpt, BlockSizeOpt, ChannelsLastOpt, CountersOpt, DeviceOpt,
                                    DtypeOpt, InputsOpt, JsonOpt, KwargsOpt, LayoutOpt, OutputOpt, RootOpt, ThreadsOpt,
                                    TrainOpt, parse_counters)

RunsOpt = Annotated[Optional[int], typer.Option("--runs", min=1, help="Exactly N timed runs (default: adaptive, until the median's 95% interval is within +-5% or --max-time).")]
WarmupOpt = Annotated[Optional[int], typer.Option("--warmup", min=0, help="Untimed warm-up runs (default: until 3 consecutive passes agree within 10%).")]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", min=0.0, help="Seconds of timing per size at most.")]
NoLatencyOpt = Annotated[bool, typer.Option("--no-latency", help="Skip timing (shapes, parameters, FLOPs, memory only).")]
NoMemoryOpt = Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory pass.")]


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        block: Annotated[str, typer.Argument(help="A registered name (C2f), package.module:Class or path/file.py:Class.")],
        size: BlockSizeOpt,
        args: ArgsOpt = None,
        kwargs: KwargsOpt = None,
        device: DeviceOpt = "cpu",
        dtype: DtypeOpt = "fp32",
        channels_last: ChannelsLastOpt = False,
        threads: ThreadsOpt = None,
        train: TrainOpt = False,
        batch: BatchOpt = None,
        runs: RunsOpt = None,
        warmup: WarmupOpt = None,
        max_time: MaxTimeOpt = 3.0,
        no_latency: NoLatencyOpt = False,
        no_memory: NoMemoryOpt = False,
        counter: CountersOpt = None,
        json_out: JsonOpt = False,
        output: OutputOpt = None,
        layout: LayoutOpt = None,
        inputs: InputsOpt = None,
        root: RootOpt = None,
    ) -> None:
        """Inspect one block: call, shapes, parameters, FLOPs (3 counters), latency and peak memory.

        Example: yb inspect C2f --size 64x80x80 --size 64x40x40
        """
        from yoloblocks_cli.loading.inputs import parse_input_spec
        from yoloblocks_cli.loading.spec import parse_args_list, parse_block_sizes, parse_kwargs

        shapes = parse_block_sizes(size, batch)
        user_args = parse_args_list(args)
        user_kwargs = parse_kwargs(kwargs)
        counters = parse_counters(counter)

        from yoloblocks_cli.measuring.runs import InspectOptions, inspect_report

        opts = InspectOptions(block=block, shapes=tuple(shapes), user_args=user_args, user_kwargs=user_kwargs,
                              device=device, dtype=dtype, channels_last=channels_last, threads=threads,
                              train=train, runs=runs, warmup=warmup, max_time=max_time,
                              latency=not no_latency, memory=not no_memory, counters=counters,
                              inputs=parse_input_spec(layout, inputs), root=root)
        from yoloblocks_cli.reporting.report import status, write_json

        quiet = json_out or output is not None
        with status(f"inspecting {block}") as update:
            report = inspect_report(opts, progress=None if quiet else update)
        if output is not None:
            write_json(report, output)
        if json_out:
            write_json(report, None)
        if not json_out:
            render(report)
            if output is not None:
                typer.echo(f"JSON report written to {output}")



# ----------------------------------------------------------------------------- rendering


_COUNTER_LABELS = (
    ("torch", "torch (dispatch)", None),
    ("ultralytics", "ultralytics (thop)", "thop_macs"),
    ("fvcore", "fvcore", "fvcore_macs"),
)
_LEGEND = ("torch = FlopCounterMode (products: matmul, conv, SDPA, custom ops) · "
           "ultralytics = 2 x thop MACs · fvcore = 2 x MACs of a JIT trace")


def render(report: dict[str, Any]) -> None:
    """The terminal report: a header, then one panel (one size) or one table (several sizes)."""
    from yoloblocks_cli.reporting.report import console

    con = console()
    env, blk = report["env"], report["block"]
    origin = blk["origin"] + (f" · {blk['source']}" if blk.get("source") else "")
    con.print(f"[bold]{blk['call']}[/]  [dim]{origin}[/]")
    if report.get("inputs") and (report["inputs"]["layout"] != "nchw" or report["inputs"]["extras"]):
        extras = "".join(f", {k} {v}" for k, v in report["inputs"]["extras"].items())
        con.print(f"[dim]input layout {report['inputs']['layout']}{extras} (sizes below are the map, BxCxHxW)[/]")
    extras = [x for x, on in (("channels_last", report["options"]["channels_last"]),) if on]
    con.print(f"[dim]{env['device']} ({env['device_name']}) · {env['dtype']} · {env['threads']} threads · "
              f"torch {env['torch']}{' · ' + ', '.join(extras) if extras else ''}[/]")
    results = report["results"]
    widths = {r["input_shape"][1] for r in results}
    if len(widths) == 1:
        p = report["params"]
        con.print(f"parameters  {p['total']:,} total · {p['trainable']:,} trainable · {p['buffers']:,} buffer elements")
    else:  # one block per input width: each row carries its own count
        con.print(f"parameters  per input width (one block built for each of {len(widths)} widths): see the params column")
    if len(results) == 1:
        _render_one(con, results[0])
    else:
        _render_many(con, results)


def _render_one(con: Any, r: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from yoloblocks_cli.reporting.report import format_shape, gflops, render_timing

    con.print(f"input       {format_shape(r['input_shape'])}")
    con.print(f"output      {format_shape(r['output_shape'])}")
    fl = r["flops"]
    table = Table(title="FLOPs (FLOPs = 2 x MACs)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("counter")
    table.add_column("GFLOPs", justify="right")
    table.add_column("FLOPs", justify="right")
    table.add_column("MACs", justify="right")
    for key, label, macs_key in _COUNTER_LABELS:
        value = fl.get(key)
        macs = fl.get(macs_key) if macs_key else (None if value is None else value // 2)
        table.add_row(label, gflops(value), "-" if value is None else f"{value:,}",
                      "-" if macs is None else f"{macs:,}")
    con.print(table)
    con.print(f"[dim]{_LEGEND}[/]")
    _render_uncounted(con, fl)
    render_timing(con, r)


def _render_uncounted(con: Any, fl: dict[str, Any], prefix: str = "") -> None:
    from rich.markup import escape

    vals = {fl.get(k) for k, _, _ in _COUNTER_LABELS if fl.get(k) is not None}
    if len(vals) > 1:
        con.print(f"{prefix}[yellow]counters disagree:[/] why, op by op (calls not counted):")
    for line in fl.get("uncounted", []):
        con.print(f"{prefix}  uncounted  {escape(line)}")
    for note in fl.get("notes", []):
        con.print(f"{prefix}  [red]note[/]  {escape(note)}")



def _render_many(con: Any, results: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table

    from yoloblocks_cli.reporting.report import format_shape, gflops, human_bytes

    table = Table(title="per size (GFLOPs = 2 x GMACs)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    per_width = len({r["input_shape"][1] for r in results}) > 1
    if per_width:
        table.add_column("params", justify="right")
    for col, just in (("input", "left"), ("output", "left"), ("torch", "right"), ("ultralytics", "right"),
                      ("fvcore", "right"), ("latency ms", "right"), ("IQR ms", "right"), ("images/s", "right"),
                      ("peak mem", "right")):
        table.add_column(col, justify=just)
    has_train = any(r.get("train_latency_ms") for r in results)
    if has_train:
        table.add_column("train ms", justify="right")
    for r in results:
        fl, lat, mem = r["flops"], r.get("latency_ms"), r.get("memory_bytes")
        row = [format_shape(r["input_shape"]), format_shape(r["output_shape"]), gflops(fl.get("torch")),
               gflops(fl.get("ultralytics")), gflops(fl.get("fvcore")),
               f"{lat['median']:.3f}" if lat else "-", f"{lat['iqr']:.3f}" if lat else "-",
               f"{lat['images_per_s']:,.1f}" if lat else "-", human_bytes(mem["peak"]) if mem else "-"]
        if has_train:
            tl = r.get("train_latency_ms")
            row.append(f"{tl['median']:.3f}" if tl else "-")
        if per_width:
            row.insert(0, f"{r['params']['total']:,}")
        table.add_row(*row)
    con.print(table)
    from yoloblocks_cli.reporting.latency_text import sizes_lines

    for line in sizes_lines(results):
        con.print(line)
    seen: set = set()
    for r in results:
        key = tuple(r["flops"].get("uncounted", [])) + tuple(r["flops"].get("notes", []))
        if key in seen:
            continue
        seen.add(key)
        con.print(f"at {format_shape(r['input_shape'])}:")
        _render_uncounted(con, r["flops"], prefix="")
    methods = {(r.get("latency_ms") or {}).get("method") for r in results} - {None}
    mems = {(r.get("memory_bytes") or {}).get("method") for r in results} - {None}
    if methods or mems:
        con.print(f"[dim]latency: {', '.join(sorted(methods)) or '-'}; memory: {', '.join(sorted(mems)) or '-'}[/]")
