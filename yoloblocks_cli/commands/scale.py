"""`yb scale`: how the cost of blocks or models grows with resolution, fitted and plotted."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import (ArgsOpt, DeviceOpt, DtypeOpt, JsonOpt, KwargsOpt, OutputOpt,
                                    PluginOpt, ThreadsOpt, writable_path)

TargetsArg = Annotated[List[str], typer.Argument(help="Blocks (registry name, module:Class, file.py:Class) or models (file.yaml, yolov8n).", show_default=False)]
ChannelsOpt = Annotated[int, typer.Option("--channels", "-c", help="Input width C fed to every block.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", "-b", min=1, help="Batch size of every measured input (default 1).")]
SizesOpt = Annotated[Optional[List[str]], typer.Option("--sizes", help="Spatial sizes S or HxW, comma-separated; default 8x8..64x64 for blocks, 128..512x1024 for models.")]
MetricsOpt = Annotated[str, typer.Option("--metrics", "-m", help="Comma list of flops, latency, memory (latency and memory cost time).")]
PlotOpt = Annotated[Optional[Path], typer.Option("--plot", callback=writable_path, help="Write a log-log figure (.png, .svg or .pdf; needs matplotlib).")]
AsciiOpt = Annotated[bool, typer.Option("--ascii", help="Draw the terminal chart with ASCII only.")]
BudgetOpt = Annotated[float, typer.Option("--time-per-size", help="Seconds of timed runs per size for latency.")]


def register(app: typer.Typer) -> None:
    @app.command("scale")
    def scale_cmd(
        targets: TargetsArg,
        channels: ChannelsOpt = 32,
        sizes: SizesOpt = None,
        metrics: MetricsOpt = "flops,latency,memory",
        device: DeviceOpt = "cpu",
        dtype: DtypeOpt = "fp32",
        batch: BatchOpt = None,
        threads: ThreadsOpt = None,
        args: ArgsOpt = None,
        kwargs: KwargsOpt = None,
        plugin: PluginOpt = None,
        plot: PlotOpt = None,
        ascii_chart: AsciiOpt = False,
        time_per_size: BudgetOpt = 0.5,
        json_out: JsonOpt = False,
        output: OutputOpt = None,
    ) -> None:
        """Fit how FLOPs, latency and peak memory grow with the token count N = H x W.

        Sweeps square and non-square sizes geometrically, fits log(cost) against log(N)
        (slope, standard error, R^2, local slopes) and a non-negative c0 + c1 N + c2 N^2,
        and says in words whether the cost is linear or quadratic.
        """
        from yoloblocks_cli.measuring import scaling
        from yoloblocks_cli.errors import CheckFailed, UsageError
        from yoloblocks_cli.loading.spec import parse_args_list, parse_kwargs

        chosen = scaling.parse_metrics(metrics)
        if channels <= 0:
            raise UsageError(f"--channels must be positive, got {channels}")
        if batch is not None and batch <= 0:
            raise UsageError(f"--batch must be positive, got {batch}")
        if plot is not None:
            from yoloblocks_cli.reporting.plots import require_matplotlib

            require_matplotlib(plot)
        user_args, user_kwargs = parse_args_list(args), parse_kwargs(kwargs)

        from yoloblocks_cli.loading.load import import_file

        from yoloblocks_cli.device import resolve_device, resolve_dtype
        from yoloblocks_cli.reporting.report import write_json

        dev, dt = resolve_device(device), resolve_dtype(dtype)
        if threads is not None or "latency" in chosen:
            from yoloblocks_cli.measuring.contention import apply_threads

            apply_threads(threads)  # --threads, else torch's default minus the CPUs busy elsewhere
        for path in plugin or []:
            import_file(path)
        loaded = [scaling.load_target(t, channels, user_args, user_kwargs, dev, dt, batch or 1, plugin or [])
                  for t in targets]
        kinds = {t.kind for t in loaded}
        if len(kinds) > 1:
            raise UsageError("cannot scale blocks and models in one call: their inputs differ (C channels vs images)")
        grid = scaling.parse_sweep_sizes(sizes, model="model" in kinds)

        from contextlib import nullcontext

        from yoloblocks_cli.reporting.report import status

        results = []
        with (nullcontext(lambda text: None) if json_out else status("measuring")) as say:
            for t in loaded:
                results.append(scaling.sweep(t, grid, chosen, progress=lambda text: say(f"measuring {text}"),
                                             max_seconds=time_per_size))

        title = _title(results, channels, batch or 1, dev, "model" in kinds)
        if plot is not None:
            from yoloblocks_cli.reporting.plots import save_scale_figure

            save_scale_figure(results, chosen, plot, title)
        report = _report(results, targets, chosen, channels, batch or 1, dev, dt, threads, plot)
        if json_out or output is not None:
            write_json(report, output)
            if output is not None and not json_out:
                typer.echo(f"wrote {output}")
        if not json_out:
            _render(results, chosen, title, plot, ascii_chart)
        failed = [(r.name, p) for r in results for p in r.failed]
        if failed:
            name, p = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise CheckFailed(f"{name} failed at {p.height}x{p.width}: {p.error}{more}")


# ----------------------------------------------------------------- report and rendering


def _report(results: list, targets: list[str], metrics: tuple, channels: int, batch: int, device: Any,
            dtype: Any, threads: int | None, plot: Path | None) -> dict[str, Any]:
    from yoloblocks_cli.reporting.report import base_report, env_info

    report = base_report("scale", ", ".join(targets), env_info(device, dtype, threads))
    report.update({
        "channels": channels if all(r.kind == "block" for r in results) else 3,
        "batch": batch,
        "metrics": list(metrics),
        "sizes": [[p.height, p.width] for p in results[0].points] if results else [],
        "targets": [{"target": r.name, "kind": r.kind, "call": r.call, "family": r.family,
                     "points": [p.as_dict() for p in r.points]} for r in results],
        "fits": [f.as_dict() for r in results for f in r.fits],
        "failed": sum(len(r.failed) for r in results),
    })
    if plot is not None:
        report["plot"] = str(plot)
    return report


def _title(results: list, channels: int, batch: int, device: Any, model: bool) -> str:
    what = "models" if model else f"blocks at C={channels}"
    return f"cost vs tokens N = H×W ({what}, batch {batch}, {device})"


def _fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "latency":
        return f"{value:.3g} ms"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:.3g}{suffix}" + ("B" if metric == "memory" else "")
    return f"{value:.3g}" + (" B" if metric == "memory" else "")


def _render(results: list, metrics: tuple, title: str, plot: Path | None, ascii_chart: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from yoloblocks_cli.reporting.report import console as make_console
    from yoloblocks_cli.reporting.termchart import Series, loglog_chart

    console = make_console()
    console.print(Text(title, style="bold"))
    for metric in metrics:
        table = Table(title=f"{metric}", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("size", justify="right")
        table.add_column("N", justify="right")
        for r in results:
            table.add_column(r.name, justify="right")
        for i, p0 in enumerate(results[0].points):
            cells = []
            for r in results:
                p = r.points[i]
                cells.append(_fmt_value(metric, p.value(metric)) if p.ok else "failed")
            table.add_row(f"{p0.height}x{p0.width}", str(p0.tokens), *cells)
        console.print(table)
        if plot is None:
            series = []
            for r in results:
                fit = next(f for f in r.fits if f.metric == metric)
                pts = [(p.tokens, float(p.value(metric))) for p in r.points if p.ok and p.value(metric)]
                series.append(Series(r.name, pts, fit.power.slope if fit.power else None,
                                     fit.power.intercept if fit.power else None))
            for line in loglog_chart(series, x_label="N", y_label=metric, ascii=ascii_chart):
                console.print(Text(line))
    fits = Table(title="fits: log(cost) = a + slope·log(N)", title_justify="left", show_edge=False, pad_edge=False)
    with_poly = any(f.poly is not None for r in results for f in r.fits)
    columns = [("target", "left"), ("metric", "left"), ("slope ± se", "right"), ("R²", "right"),
               ("local slopes", "left"), ("large-N slope", "right")]
    columns += [("c0 + c1·N + c2·N² (≥ 0)", "left")] if with_poly else []
    for col, just in columns + [("verdict", "left")]:
        fits.add_column(col, justify=just)
    for r in results:
        for f in r.fits:
            if f.power is None:
                fits.add_row(r.name, f.metric, "-", "-", "-", "-", *(["-"] if with_poly else []), f.verdict)
                continue
            se = f"{f.power.stderr:.3f}" if f.power.stderr is not None else "-"
            local = " ".join(f"{x['slope']:.2f}" for x in f.local) if f.local else "-"
            tail = f"{f.tail_slope:.2f}" if f.tail_slope is not None else "-"
            fits.add_row(r.name, f.metric, f"{f.power.slope:.3f} ± {se}", f"{f.power.r2:.4f}", local, tail,
                         *([_poly_text(f.poly)] if with_poly else []), f.verdict)
    console.print(fits)
    failed = [(r.name, p) for r in results for p in r.failed]
    for name, p in failed:
        console.print(Text(f"{name} failed at {p.height}x{p.width}: {p.error}", style="red"))
    if plot is not None:
        console.print(f"wrote {plot}")


def _poly_text(poly: Any) -> str:
    if poly is None:
        return "-"
    cross = poly.crossover_tokens()
    text = f"{poly.c0:.3g} + {poly.c1:.3g}·N + {poly.c2:.3g}·N²"
    if cross is not None:
        text += f" (N²≥N from N≈{cross:.3g})"
    return text
