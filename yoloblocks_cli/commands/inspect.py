"""`yb inspect`: one block, every number (shapes, parameters, FLOPs, latency, memory).

The command parses options, asks the engine (load, flops, bench) for numbers and renders
them; torch is imported only once the command runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import (ArgsOpt, BatchOpt, ChannelsLastOpt, CountersOpt, DeviceOpt, DtypeOpt, InputsOpt,
                                    JsonOpt, KwargsOpt, LayoutOpt, OutputOpt, RootOpt, SizeOpt, ThreadsOpt, TrainOpt,
                                    parse_counters)

RunsOpt = Annotated[int, typer.Option("--runs", min=1, help="Minimum timed runs (more run until the spread settles).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up runs before timing.")]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", min=0.0, help="Seconds of timing per size at most.")]
NoLatencyOpt = Annotated[bool, typer.Option("--no-latency", help="Skip timing (shapes, parameters, FLOPs, memory only).")]
NoMemoryOpt = Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory pass.")]


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        block: Annotated[str, typer.Argument(help="A registered name (C2f), package.module:Class or path/file.py:Class.")],
        size: SizeOpt,
        args: ArgsOpt = None,
        kwargs: KwargsOpt = None,
        device: DeviceOpt = "cpu",
        dtype: DtypeOpt = "fp32",
        channels_last: ChannelsLastOpt = False,
        threads: ThreadsOpt = None,
        train: TrainOpt = False,
        batch: BatchOpt = None,
        runs: RunsOpt = 10,
        warmup: WarmupOpt = 3,
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

        opts = InspectOptions(block=block, shapes=shapes, user_args=user_args, user_kwargs=user_kwargs,
                              device=device, dtype=dtype, channels_last=channels_last, threads=threads,
                              train=train, runs=runs, warmup=warmup, max_time=max_time,
                              latency=not no_latency, memory=not no_memory, counters=counters,
                              inputs=parse_input_spec(layout, inputs), root=root)
        from yoloblocks_cli.reporting.report import status, write_json

        quiet = json_out or output is not None
        with status(f"inspecting {block}") as update:
            report = run_inspect(opts, progress=None if quiet else update)
        if output is not None:
            write_json(report, output)
        if json_out:
            write_json(report, None)
        if not json_out:
            render(report)
            if output is not None:
                typer.echo(f"JSON report written to {output}")



# ----------------------------------------------------------------------------- measuring


@dataclass
class InspectOptions:
    """Everything `yb inspect` measures with, already parsed (sizes, args) but not resolved."""

    block: str
    shapes: list
    user_args: list | None = None
    user_kwargs: dict | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    threads: int | None = None
    train: bool = False
    runs: int = 10
    warmup: int = 3
    max_time: float = 3.0
    latency: bool = True
    memory: bool = True
    counters: tuple = ("torch", "ultralytics", "fvcore")
    inputs: Any = None  # loading.inputs.InputSpec: --layout / --inputs (None: plain forward(x))
    root: Any = None  # --root DIR of a file block


def run_inspect(opts: InspectOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load the block, run it at every size and return the JSON report (schema yoloblocks.report/1)."""
    import torch

    from yoloblocks_cli.device import resolve_device, resolve_dtype
    from yoloblocks_cli.loading.load import build_block, resolve_spec
    from yoloblocks_cli.reporting.report import base_report, env_info

    say = progress or (lambda text: None)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype)
    if opts.threads is not None:
        if opts.threads < 1:
            from yoloblocks_cli.errors import UsageError

            raise UsageError(f"--threads must be at least 1, got {opts.threads}")
        torch.set_num_threads(opts.threads)
    spec = resolve_spec(opts.block, opts.root)
    built: dict[int, Any] = {}
    results = []
    for shape in opts.shapes:
        if shape.channels not in built:
            say(f"building {spec.name} for {shape.channels} input channels")
            built[shape.channels] = build_block(spec, shape.channels, opts.user_args, opts.user_kwargs)
        loaded = built[shape.channels]
        results.append(_measure(loaded, shape, device, dtype, opts, say))
    first = built[opts.shapes[0].channels]
    report = base_report("inspect", opts.block, env_info(device, dtype, opts.threads))
    report["block"] = {"name": first.spec.name, "call": first.call, "origin": first.spec.origin,
                       "class": f"{first.spec.cls.__module__}.{first.spec.cls.__qualname__}",
                       "source": getattr(first.spec.info, "source", "") or _source_file(first.spec.cls)}
    report["options"] = {"channels_last": opts.channels_last, "train": opts.train, "batch": opts.shapes[0].batch}
    if opts.inputs is not None:
        report["inputs"] = opts.inputs.as_json()
    report.update(results[0])  # the first size's fields stay at top level (contract); all sizes in `results`
    report["results"] = results
    return report


def _source_file(cls: type) -> str:
    import inspect as pyinspect

    try:
        return _rel(pyinspect.getsourcefile(cls) or "")
    except (TypeError, OSError):
        return ""


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _measure(loaded: Any, shape: Any, device: Any, dtype: Any, opts: InspectOptions,
             say: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from yoloblocks_cli.measuring.bench import peak_memory, time_forward
    from yoloblocks_cli.measuring.flops import count_flops
    from yoloblocks_cli.reporting.report import output_shape

    module = loaded.module
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    module.to(device=device, dtype=dtype)
    if opts.channels_last:
        module.to(memory_format=torch.channels_last)
    module.eval()
    x = torch.randn(shape.dims, device=device).to(dtype=dtype).contiguous(memory_format=fmt)
    if opts.inputs is not None:  # --layout/--inputs: x in the forward's layout, sizes and extras bound
        from yoloblocks_cli.loading.inputs import prepare_input

        x = prepare_input(module, opts.inputs, x)

    say(f"forward {loaded.call} on {shape}")
    out = _checked_forward(loaded, x, shape, opts, device)
    result: dict[str, Any] = {
        "input_shape": list(shape.dims),
        "output_shape": output_shape(out),
        "params": _params(module),
    }
    del out
    say(f"counting FLOPs at {shape}")
    result["flops"] = count_flops(module, (x,), opts.counters).as_json()
    result["latency_ms"] = None
    if opts.latency:
        say(f"timing {loaded.call} at {shape}")
        lat = _guard(lambda: time_forward(module, x, device, warmup=opts.warmup, min_runs=opts.runs,
                                          max_seconds=opts.max_time), loaded, shape, opts, device)
        result["latency_ms"] = lat.as_json()
    result["memory_bytes"] = None
    if opts.memory:
        say(f"measuring peak memory at {shape}")
        result["memory_bytes"] = _guard(lambda: peak_memory(module, x, device), loaded, shape, opts, device).as_json()
    if opts.train:
        say(f"timing forward+backward (train mode) at {shape}")
        if opts.latency:
            tl = _guard(lambda: time_forward(module, x, device, train=True, warmup=opts.warmup,
                                             min_runs=opts.runs, max_seconds=opts.max_time),
                        loaded, shape, opts, device, "forward+backward")
            result["train_latency_ms"] = tl.as_json()
        if opts.memory:
            tm = _guard(lambda: peak_memory(module, x, device, train=True), loaded, shape, opts, device,
                        "forward+backward")
            result["train_memory_bytes"] = tm.as_json()
    return result


def _params(module: Any) -> dict[str, int]:
    params = list(module.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "buffers": sum(b.numel() for b in module.buffers()),
    }


def _checked_forward(loaded: Any, x: Any, shape: Any, opts: InspectOptions, device: Any) -> Any:
    import torch

    def fwd() -> Any:
        with torch.inference_mode():
            return loaded.module(x)

    return _guard(fwd, loaded, shape, opts, device)


def _guard(fn: Callable[[], Any], loaded: Any, shape: Any, opts: InspectOptions, device: Any,
           what: str = "forward") -> Any:
    """Run ``fn``; a block that raises becomes one line with the file:line inside the block."""
    from yoloblocks_cli.errors import CheckFailed, UsageError

    try:
        return fn()
    except (CheckFailed, UsageError):
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = block_frame(exc)
        at = f" (at {where})" if where else ""
        head = f"{loaded.call} {what} on {shape} raised {exc.__class__.__name__}: {msg}{at}"
        dtype = opts.dtype.lower()
        if dtype in ("fp16", "float16", "half", "bf16", "bfloat16") and getattr(device, "type", "") == "cpu" and (
                "not implemented for" in msg and ("'Half'" in msg or "'BFloat16'" in msg)):
            raise UsageError(f"--dtype {opts.dtype} is not supported on CPU by an op of this block: {head}; "
                             f"use --dtype fp32 (or bf16), or --device cuda") from exc
        if isinstance(exc, MemoryError) or "out of memory" in msg.lower():
            raise CheckFailed(f"out of memory: {head}") from exc
        raise CheckFailed(head) from exc


def block_frame(exc: BaseException) -> str:
    """``file:line in function`` of the innermost traceback frame outside torch, einops and yb."""
    import traceback

    skip = []
    for name in ("torch", "einops", "yoloblocks_cli", "typer", "click"):
        mod = __import__("sys").modules.get(name)
        if mod is not None and getattr(mod, "__file__", None):
            skip.append(os.path.dirname(os.path.abspath(mod.__file__)) + os.sep)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = os.path.abspath(frame.filename)
        if frame.filename.startswith("<") or any(path.startswith(s) for s in skip):
            continue
        found = f"{_rel(frame.filename)}:{frame.lineno} in {frame.name}"
    return found


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
    p = report["params"]
    con.print(f"parameters  {p['total']:,} total · {p['trainable']:,} trainable · {p['buffers']:,} buffer elements")
    results = report["results"]
    if len(results) == 1:
        _render_one(con, results[0])
    else:
        _render_many(con, results)


def _render_one(con: Any, r: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from yoloblocks_cli.reporting.report import gflops, render_timing

    con.print(f"input       {_fmt_shape(r['input_shape'])}")
    con.print(f"output      {_fmt_shape(r['output_shape'])}")
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

    from yoloblocks_cli.reporting.report import gflops, human_bytes

    table = Table(title="per size (GFLOPs = 2 x GMACs)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just in (("input", "left"), ("output", "left"), ("torch", "right"), ("ultralytics", "right"),
                      ("fvcore", "right"), ("latency ms", "right"), ("IQR ms", "right"), ("images/s", "right"),
                      ("peak mem", "right")):
        table.add_column(col, justify=just)
    has_train = any(r.get("train_latency_ms") for r in results)
    if has_train:
        table.add_column("train ms", justify="right")
    for r in results:
        fl, lat, mem = r["flops"], r.get("latency_ms"), r.get("memory_bytes")
        row = [_fmt_shape(r["input_shape"]), _fmt_shape(r["output_shape"]), gflops(fl.get("torch")),
               gflops(fl.get("ultralytics")), gflops(fl.get("fvcore")),
               f"{lat['median']:.3f}" if lat else "-", f"{lat['iqr']:.3f}" if lat else "-",
               f"{lat['images_per_s']:,.1f}" if lat else "-", human_bytes(mem["peak"]) if mem else "-"]
        if has_train:
            tl = r.get("train_latency_ms")
            row.append(f"{tl['median']:.3f}" if tl else "-")
        table.add_row(*row)
    con.print(table)
    seen: set = set()
    for r in results:
        key = tuple(r["flops"].get("uncounted", [])) + tuple(r["flops"].get("notes", []))
        if key in seen:
            continue
        seen.add(key)
        con.print(f"at {_fmt_shape(r['input_shape'])}:")
        _render_uncounted(con, r["flops"], prefix="")
    methods = {(r.get("latency_ms") or {}).get("method") for r in results} - {None}
    mems = {(r.get("memory_bytes") or {}).get("method") for r in results} - {None}
    if methods or mems:
        con.print(f"[dim]latency: {', '.join(sorted(methods)) or '-'}; memory: {', '.join(sorted(mems)) or '-'}[/]")


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape):
        return "x".join(str(d) for d in shape)
    if isinstance(shape, list):
        return "(" + ", ".join(_fmt_shape(s) for s in shape) + ")"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {_fmt_shape(v)}" for k, v in shape.items()) + "}"
    return str(shape)
