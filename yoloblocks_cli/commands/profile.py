"""`yb profile MODEL`: build a YOLO YAML without ultralytics and profile it layer by layer.

Prints ultralytics' layer table (plus output shape, FLOPs and share of latency per layer),
its summary line with the same numbers, then the model-level figures of `yb inspect`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import (BatchOpt, CountersOpt, DeviceOpt, DtypeOpt, JsonOpt, OutputOpt, PluginOpt,
                                    ThreadsOpt, TrainOpt, parse_counters)

ScaleOpt = Annotated[Optional[str], typer.Option("--scale", help="Model scale letter (n, s, m, l, x...); default from the file name.")]
NcOpt = Annotated[Optional[int], typer.Option("--nc", help="Number of classes (overrides the YAML's nc).")]
ModelSizeOpt = Annotated[str, typer.Option("--size", "-s", help="Input image: S, HxW or BxCxHxW; measured at that size.")]
RunsOpt = Annotated[Optional[int], typer.Option("--runs", min=1, help="Exactly N timed runs of the whole model (default: adaptive, until the median's 95% interval is within +-5% or 10 s).")]
LayerRunsOpt = Annotated[int, typer.Option("--layer-runs", min=0, help="CUDA: synchronised passes for the per-layer latency share (0: skip). On CPU the shares come from the timed runs.")]
NoLatencyOpt = Annotated[bool, typer.Option("--no-latency", help="Skip timing.")]
NoMemoryOpt = Annotated[bool, typer.Option("--no-memory", help="Skip the peak-memory measurement.")]
FuseOpt = Annotated[bool, typer.Option("--fuse", help="Fold the model for deployment first, as ultralytics' model.fuse(): Conv+BN folded, RepConv/RepVGGDW merged, training-only head branches dropped.")]
DialectOpt = Annotated[Optional[str], typer.Option("--dialect", help="YAML dialect (default: detected; ultralytics).")]
WeightsYamlOpt = Annotated[Optional[str], typer.Option("--model", help="The YAML a plain state_dict (.pt/.pth/.safetensors) belongs to.")]


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_cmd(
        model: Annotated[str, typer.Argument(help="A model YAML, a shipped model's name (yolov8n, yolo11s) or a trained checkpoint (best.pt).")],
        size: ModelSizeOpt = "640",
        scale: ScaleOpt = None,
        nc: NcOpt = None,
        plugin: PluginOpt = None,
        dialect: DialectOpt = None,
        model_yaml: WeightsYamlOpt = None,
        device: DeviceOpt = "cpu",
        dtype: DtypeOpt = "fp32",
        batch: BatchOpt = None,
        threads: ThreadsOpt = None,
        train: TrainOpt = False,
        runs: RunsOpt = None,
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
        from yoloblocks_cli.loading.limits import preflight_model
        from yoloblocks_cli.reporting.report import write_json

        preflight_model(model)  # bounds of the YAML before torch is imported (docs/limits.md)
        from yoloblocks_cli.measuring.runs import ProfileOptions, profile_report

        opts = ProfileOptions(model=model, size=size, scale=scale, nc=nc, plugins=tuple(str(p) for p in plugin or ()),
                              dialect=dialect, model_yaml=model_yaml, device=device, dtype=dtype, batch=batch, threads=threads, train=train,
                              runs=runs, layer_runs=layer_runs, latency=not no_latency, memory=not no_memory,
                              counters=parse_counters(counter), fuse=fuse)
        quiet = json_out or output is not None
        with _progress(not quiet) as step:
            report = profile_report(opts, step)
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


def thop_difference_note(thop_640: float, summary_640: float, rules: list[str]) -> str:
    """Why the thop counter at 640x640 and the summary line differ: a module rule that ultralytics' get_flops
    lacks (its stride-sized pass scales exactly: thop is linear in H*W here), else the extrapolation."""
    if rules:
        return (f"thop at 640x640 gives {thop_640 / 1e9:.3f} GFLOPs with yb's rule for {', '.join(rules)}; the summary "
                f"line ({summary_640 / 1e9:.3f}) is ultralytics' get_flops, plain thop without that rule (not an "
                f"extrapolation: thop is linear in H*W here); the difference ({(thop_640 - summary_640) / 1e9:+.3f}) "
                "is what the rule adds, for SS2D the selective scan (docs/mamba.md)")
    return (f"thop measured at 640x640 gives {thop_640 / 1e9:.3f} GFLOPs; the summary line extrapolates from a "
            f"stride-sized input as ultralytics does ({summary_640 / 1e9:.3f})")


# ----------------------------------------------------------------------------- rendering


def _args_text(args: list) -> str:
    return "[" + ", ".join(repr(a) for a in args) + "]"


def render(report: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from yoloblocks_cli.reporting.report import console, display_path, format_shape, gflops, render_timing

    con = console()
    env, m = report["env"], report["model"]
    con.print(f"[bold]{escape(m['name'])}[/]  [dim]{escape(display_path(m['yaml']))} · scale {m['scale'] or '-'} · "
              f"dialect {m['dialect']} · stride {', '.join(f'{s:g}' for s in m['stride'])}[/]")
    if report.get("checkpoint"):
        from yoloblocks_cli.reporting.checkpoint_facts import checkpoint_lines

        for line in checkpoint_lines(report["checkpoint"]):
            con.print(escape(line))
    con.print(f"[dim]{env['device']} ({env['device_name']}) · {env['dtype']} · {env['threads']} threads · "
              f"torch {env['torch']} · input {format_shape(report['input_shape'])}[/]")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just in (("", "right"), ("from", "right"), ("n", "right"), ("params", "right"), ("module", "left"),
                      ("arguments", "left"), ("output", "left"), ("GFLOPs", "right"), ("time %", "right")):
        table.add_column(col, justify=just)
    for r in report["layers"]:
        share = r.get("latency_share")
        table.add_row(str(r["index"]), str(r["from"]), str(r["n"]), f"{r['params']:,}", escape(r["module"]),
                      escape(_args_text(r["args"])), format_shape(r["output_shape"]),
                      "-" if r["flops"] is None else f"{r['flops'] / 1e9:.3f}",
                      "-" if share is None else f"{100 * share:.1f}")
    con.print(table)
    con.print(report["summary"]["line"])
    fl = report["flops"]
    size = format_shape(report["input_shape"])
    con.print(f"FLOPs at {size} (FLOPs = 2 x MACs): torch {gflops(fl.get('torch'))} · "
              f"ultralytics (thop) {gflops(fl.get('ultralytics'))} · fvcore {gflops(fl.get('fvcore'))} GFLOPs")
    ex = fl.get("ultralytics_extrapolated_640")
    if fl.get("ultralytics") is not None and ex is not None and report["input_shape"][-2:] == [640, 640] \
            and report["input_shape"][0] == 1 and abs(fl["ultralytics"] - ex) > 0.0005 * ex:
        con.print(f"[yellow]note:[/] {escape(thop_difference_note(fl['ultralytics'], ex, fl.get('ultralytics_rules') or []))}")
    for line in fl.get("uncounted", []):
        con.print(f"  uncounted  {escape(line)}")
    render_timing(con, report)
