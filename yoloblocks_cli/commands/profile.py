"""`yb profile MODEL`: build a YOLO YAML without ultralytics and profile it layer by layer.

Prints ultralytics' layer table (plus output shape, FLOPs and share of latency per layer),
its summary line with the same numbers, then the model-level figures of `yb inspect`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import (BatchOpt, CountersOpt, DeviceOpt, DtypeOpt, JsonOpt, OutputOpt, PluginOpt,
                                    ThreadsOpt, TrainOpt, parse_counters)

ScaleOpt = Annotated[Optional[str], typer.Option("--scale", help="Model scale letter (n, s, m, l, x...); default from the file name.")]
NcOpt = Annotated[Optional[int], typer.Option("--nc", help="Number of classes (overrides the YAML's nc).")]
ModelSizeOpt = Annotated[str, typer.Option("--size", "-s", help="Input image: S, HxW or BxCxHxW; measured at that size.")]
RunsOpt = Annotated[int, typer.Option("--runs", min=1, help="Timed runs of the whole model (after one warm-up).")]
LayerRunsOpt = Annotated[int, typer.Option("--layer-runs", min=0, help="CUDA: synchronised passes for the per-layer latency share (0: skip). On CPU the shares come from the timed runs.")]
NoLatencyOpt = Annotated[bool, typer.Option("--no-latency", help="Skip timing.")]
NoMemoryOpt = Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory measurement.")]
FuseOpt = Annotated[bool, typer.Option("--fuse", help="Fold the model for deployment first, as ultralytics' model.fuse(): Conv+BN folded, RepConv/RepVGGDW merged, training-only head branches dropped.")]
DialectOpt = Annotated[Optional[str], typer.Option("--dialect", help="YAML dialect (default: detected; ultralytics).")]


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_cmd(
        model: Annotated[str, typer.Argument(help="A model YAML, or a shipped model's name (yolov8n, yolo11s).")],
        size: ModelSizeOpt = "640",
        scale: ScaleOpt = None,
        nc: NcOpt = None,
        plugin: PluginOpt = None,
        dialect: DialectOpt = None,
        device: DeviceOpt = "cpu",
        dtype: DtypeOpt = "fp32",
        batch: BatchOpt = None,
        threads: ThreadsOpt = None,
        train: TrainOpt = False,
        runs: RunsOpt = 10,
        layer_runs: LayerRunsOpt = 3,
        no_latency: NoLatencyOpt = False,
        no_memory: NoMemoryOpt = False,
        counter: CountersOpt = None,
        fuse: FuseOpt = False,
        json_out: JsonOpt = False,
        output: OutputOpt = None,
    ) -> None:
        """Build MODEL (exact ultralytics parameter count) and profile it layer by layer.

        Example: yb profile yolov8n --size 640x480
        """
        from yoloblocks_cli.reporting.report import write_json

        opts = dict(model=model, size=size, scale=scale, nc=nc, plugins=tuple(str(p) for p in plugin or ()),
                    dialect=dialect, device=device, dtype=dtype, batch=batch, threads=threads, train=train,
                    runs=runs, layer_runs=layer_runs, latency=not no_latency, memory=not no_memory,
                    counters=parse_counters(counter), fuse=fuse)
        quiet = json_out or output is not None
        with _progress(not quiet) as step:
            report = run_profile(opts, step)
        if output is not None:
            write_json(report, output)
        if json_out:
            write_json(report, None)
        else:
            render(report)
            if output is not None:
                typer.echo(f"JSON report written to {output}")


class _progress:
    """A rich progress bar on stderr, only on a terminal; ``step(text)`` advances it."""

    STEPS = 6

    def __init__(self, enabled: bool):
        from yoloblocks_cli.reporting.report import plain_output
        import sys

        self.enabled = enabled and not plain_output(sys.stderr)
        self.bar = None

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda text: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from yoloblocks_cli.reporting.report import console

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                            console=console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("profiling", total=self.STEPS)

        def step(text: str) -> None:
            self.bar.update(task, description=text, advance=1)

        return step

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_profile(opts: dict[str, Any], step: Callable[[str], None] = lambda t: None) -> dict[str, Any]:
    """Build, count and time; return the JSON report (schema yoloblocks.report/1)."""
    import torch

    from yoloblocks_cli.device import resolve_device, resolve_dtype
    from yoloblocks_cli.errors import CheckFailed, UsageError, YBError
    from yoloblocks_cli.runtime import freeze_imported_objects
    from yoloblocks_cli.loading.spec import parse_model_size
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    freeze_imported_objects()
    device = resolve_device(opts["device"])
    dtype = resolve_dtype(opts["dtype"])
    if opts.get("threads") is not None:
        if opts["threads"] < 1:
            raise UsageError(f"--threads must be at least 1, got {opts['threads']}")
        torch.set_num_threads(opts["threads"])
    step(f"building {opts['model']}")
    built = build_model(opts["model"], scale=opts.get("scale"), plugins=opts.get("plugins", ()), nc=opts.get("nc"),
                        dialect=opts.get("dialect"))
    if opts.get("fuse"):
        from yoloblocks_cli.loading.fuse import fuse_built

        step("fusing for deployment")
        fuse_built(built)
    shape = parse_model_size(opts.get("size") or "640", opts.get("batch"), built.channels)
    if shape.channels != built.channels:
        raise UsageError(f"--size {opts.get('size')}: {built.name} takes {built.channels} input channels, "
                         f"not {shape.channels}")
    step("ultralytics GFLOPs at 640")
    gflops_640 = ultralytics_gflops(built, 640)
    try:
        return _measure(built, shape, gflops_640, device, dtype, opts, step)
    except YBError:
        raise
    except Exception as exc:  # the model failed at the requested size / dtype / device: exit 1, one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckFailed(f"{built.name} at {shape} ({opts['dtype']}, {device}): {exc.__class__.__name__}: {msg}"
                          ) from exc


def _measure(built: Any, shape: Any, gflops_640: float, device: Any, dtype: Any, opts: dict[str, Any],
             step: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from yoloblocks_cli.measuring.bench import CPU_MEMORY_METHOD, Memory, StorageTracker, peak_memory, time_forward
    from yoloblocks_cli.device import synchronize
    from yoloblocks_cli.measuring.flops import COUNTERS, count_flops
    from yoloblocks_cli.measuring.layer_profile import LayerTimer, layer_latency, layer_shapes_and_flops, table_rows
    from yoloblocks_cli.reporting.report import base_report, env_info, output_shape
    from yoloblocks_cli.loading.yaml_model import summary_line

    model = built.model.to(device=device, dtype=dtype).eval()
    x = torch.randn(shape.dims, device=device).to(dtype)
    cuda = device.type == "cuda"
    # CPU peak memory rides along the shared pass; it stands when that first forward left no
    # tensor behind (no cache built), so that a later pass would allocate exactly the same.
    tracker = StorageTracker() if opts.get("memory", True) and not cuda else None
    step(f"FLOPs, layer shapes{' and peak memory' if tracker else ''} at {shape}")
    # One forward feeds the dispatch counter, thop (per layer too) and the shape hooks; fvcore
    # traces another. Both run the model itself at this size: they are the timing warm-up on CPU.
    shapes: list[Any] = [None] * len(model.model)

    def keep_first_shape(k: int) -> Callable:  # the shared pass runs first; fvcore's JIT trace turns sizes into tensors
        def hook(mod: Any, inp: Any, out: Any) -> None:
            if shapes[k] is None:
                shapes[k] = output_shape(out)
        return hook

    hooks = [m.register_forward_hook(keep_first_shape(k)) for k, m in enumerate(model.model)]
    per_path: dict[str, float] = {}
    if tracker is not None:
        tracker.remember_existing(x, *model.parameters(), *model.buffers())
    try:
        flops = count_flops(model, (x,), opts.get("counters", COUNTERS), in_place=True, thop_layers=per_path,
                            memory=tracker)
    finally:
        for h in hooks:
            h.remove()
    if shapes[-1] is None:  # the shared pass failed: a plain forward gives the shapes (or the error)
        shapes, layer_macs, _ = layer_shapes_and_flops(model, x)
        layer_fl = layer_macs
    elif flops.ultralytics is not None:  # the table's FLOPs column is thop's, as ultralytics' would be
        layer_fl = [int(round(2 * per_path.get(f"model.{k}", 0.0))) for k in range(len(model.model))]
    else:
        layer_fl = [None] * len(model.model)
    out_shape = shapes[-1]
    report_memory = None
    if tracker is not None and tracker.passes == 1 and not tracker.live:
        report_memory = Memory(tracker.peak, CPU_MEMORY_METHOD).as_json()
    elif opts.get("memory", True):  # a pass of its own, now that caches (anchors, tables) exist
        step(f"peak memory at {shape}")
        report_memory = peak_memory(model, x, device).as_json()
    latency = None
    times = None
    if opts.get("latency", True):
        step(f"timing at {shape}")
        # CPU: the layer hooks stay on while the model is timed (no sync, microseconds per layer);
        # CUDA: per-layer times need a sync around every layer, so they get passes of their own.
        with (LayerTimer(model) if not cuda else contextlib.nullcontext()) as timer:
            latency = time_forward(model, x, device, warmup=1 if cuda else 0, min_runs=opts.get("runs", 10),
                                   max_runs=opts.get("runs", 10))
        if cuda and opts.get("layer_runs", 3) > 0:
            times = layer_latency(model, x, opts.get("layer_runs", 3), sync=lambda: synchronize(device))
        elif timer is not None:
            times = timer.fastest_ms()
    rows = table_rows(built, shapes, layer_fl, times)
    report = base_report("profile", opts["model"], env_info(device, dtype, opts.get("threads")))
    report["model"] = {"name": built.name, "yaml": str(built.yaml_path), "scale": built.scale,
                       "dialect": built.dialect, "stride": list(built.stride)}
    report["input_shape"] = list(shape.dims)
    report["output_shape"] = out_shape
    report["params"] = {"total": built.params, "trainable": built.gradients,
                        "buffers": sum(b.numel() for b in model.buffers())}
    report["flops"] = flops.as_json()
    report["flops"]["ultralytics_extrapolated_640"] = int(round(gflops_640 * 1e9))
    report["summary"] = {"layers": built.n_layers, "params": built.params, "gradients": built.gradients,
                         "gflops": round(gflops_640, 1), "gflops_exact": gflops_640,
                         "line": summary_line(built, gflops_640), "fused": built.fused}
    report["layers"] = [r.as_json() for r in rows]
    report["latency_ms"] = latency.as_json() if latency is not None else None
    report["memory_bytes"] = report_memory
    if opts.get("train"):
        step("forward+backward (train mode)")
        if opts.get("latency", True):
            report["train_latency_ms"] = time_forward(model, x, device, train=True,
                                                      min_runs=opts.get("runs", 10)).as_json()
        if opts.get("memory", True):
            report["train_memory_bytes"] = peak_memory(model, x, device, train=True).as_json()
    report["options"] = {"size": opts.get("size"), "batch": shape.batch, "train": bool(opts.get("train")),
                         "plugins": list(opts.get("plugins", ()))}
    return report


# ----------------------------------------------------------------------------- rendering


def _args_text(args: list) -> str:
    return "[" + ", ".join(repr(a) for a in args) + "]"


def _shape_text(s: Any) -> str:
    if isinstance(s, list) and s and all(isinstance(v, int) for v in s):
        return "x".join(str(v) for v in s)
    if isinstance(s, list):
        return "[" + ", ".join(_shape_text(v) for v in s) + "]"
    if isinstance(s, dict):
        return "{" + ", ".join(f"{k}: {_shape_text(v)}" for k, v in s.items()) + "}"
    return str(s)


def render(report: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from yoloblocks_cli.reporting.report import console, gflops, render_timing

    con = console()
    env, m = report["env"], report["model"]
    con.print(f"[bold]{escape(m['name'])}[/]  [dim]{escape(m['yaml'])} · scale {m['scale'] or '-'} · "
              f"dialect {m['dialect']} · stride {', '.join(f'{s:g}' for s in m['stride'])}[/]")
    con.print(f"[dim]{env['device']} ({env['device_name']}) · {env['dtype']} · {env['threads']} threads · "
              f"torch {env['torch']} · input {_shape_text(report['input_shape'])}[/]")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just in (("", "right"), ("from", "right"), ("n", "right"), ("params", "right"), ("module", "left"),
                      ("arguments", "left"), ("output", "left"), ("GFLOPs", "right"), ("time %", "right")):
        table.add_column(col, justify=just)
    for r in report["layers"]:
        share = r.get("latency_share")
        table.add_row(str(r["index"]), str(r["from"]), str(r["n"]), f"{r['params']:,}", escape(r["module"]),
                      escape(_args_text(r["args"])), _shape_text(r["output_shape"]),
                      "-" if r["flops"] is None else f"{r['flops'] / 1e9:.3f}",
                      "-" if share is None else f"{100 * share:.1f}")
    con.print(table)
    con.print(report["summary"]["line"])
    fl = report["flops"]
    size = _shape_text(report["input_shape"])
    con.print(f"FLOPs at {size} (FLOPs = 2 x MACs): torch {gflops(fl.get('torch'))} · "
              f"ultralytics (thop) {gflops(fl.get('ultralytics'))} · fvcore {gflops(fl.get('fvcore'))} GFLOPs")
    ex = fl.get("ultralytics_extrapolated_640")
    if fl.get("ultralytics") is not None and ex is not None and report["input_shape"][-2:] == [640, 640] \
            and report["input_shape"][0] == 1 and abs(fl["ultralytics"] - ex) > 0.0005 * ex:
        con.print(f"[yellow]note:[/] thop measured at 640x640 gives {fl['ultralytics'] / 1e9:.3f} GFLOPs; the summary "
                  f"line extrapolates from a stride-sized input as ultralytics does ({ex / 1e9:.3f})")
    for line in fl.get("uncounted", []):
        con.print(f"  uncounted  {escape(line)}")
    render_timing(con, report)
