"""`yb compare A B [C ...]`: blocks or models side by side, measured in one interleaved run."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import BatchOpt, DeviceOpt, DtypeOpt, JsonOpt, OutputOpt, PluginOpt

TargetsArg = Annotated[List[str], typer.Argument(help="Two or more blocks (C2f, file.py:Class) or models "
                                                        "(yolov8n, path/model.yaml); deltas are against the first.")]
OptSizeOpt = Annotated[Optional[str], typer.Option("--size", "-s", help="Input: CxHxW/BxCxHxW for blocks "
                                                   "(HxW with --channels); S, HxW or BxCxHxW for models "
                                                   "(default 640).")]
ChannelsOpt = Annotated[Optional[int], typer.Option("--channels", "-c", help="Input channels: with --size HxW "
                                                    "for blocks; image channels for models (default 3).")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (for a paper or a PR).")]
RoundsOpt = Annotated[Optional[int], typer.Option("--rounds", min=1, help="Exactly N interleaved timing rounds (one "
                                                  "run of each target per round; default: until every latency and "
                                                  "ratio is known to +-5%, 10 s at most).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Untimed rounds before timing.")]
NoLatencyOpt = Annotated[bool, typer.Option("--no-latency", help="Skip timing (parameters and FLOPs only).")]


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(targets: TargetsArg, size: OptSizeOpt = None, batch: BatchOpt = None,
                    channels: ChannelsOpt = None, device: DeviceOpt = "cpu", dtype: DtypeOpt = "fp32",
                    rounds: RoundsOpt = None, warmup: WarmupOpt = 3, no_latency: NoLatencyOpt = False,
                    markdown: MarkdownOpt = False, json_out: JsonOpt = False, output: OutputOpt = None,
                    plugin: PluginOpt = None) -> None:
        """Compare blocks or models: parameters, GFLOPs (each counter), latency, peak memory, deltas in %."""
        from yoloblocks_cli.errors import UsageError

        if json_out and markdown:
            from yoloblocks_cli.errors import UsageError as _Usage

            raise _Usage("--json and --markdown both print to stdout: choose one (or --output FILE for the JSON)")
        if len(targets) < 2:
            raise UsageError("compare needs at least two targets, e.g. yb compare C2f C3 --size 64x40x40")
        from yoloblocks_cli.checks.markdown import compare_markdown, compare_table
        from yoloblocks_cli.device import resolve_device, resolve_dtype
        from yoloblocks_cli.measuring.measure import deltas_pct, measure
        from yoloblocks_cli.reporting.report import base_report, console, env_info, write_json
        from yoloblocks_cli.loading.targets import resolve_target

        dev = resolve_device(device)
        built = [resolve_target(t, size, batch=batch, channels=channels, plugins=plugin or ()) for t in targets]
        if not no_latency:
            from yoloblocks_cli.measuring.contention import apply_threads

            apply_threads()  # torch's default thread count minus the CPUs busy elsewhere
        results = measure(built, str(dev), dtype, latency=not no_latency, rounds=rounds, warmup=warmup)
        environment = env_info(dev, resolve_dtype(dtype))
        if json_out or output is not None:
            report = base_report("compare", " vs ".join(m.target for m in results), environment)
            report["targets"] = [{**m.as_json(), "delta_pct": deltas_pct(m, results[0])} for m in results]
            report["rounds"] = 0 if no_latency or results[0].latency is None else results[0].latency.runs
            write_json(report, output)
            if not json_out:
                console().print(f"wrote {output}")
            return
        if markdown:
            typer.echo(compare_markdown(results, environment), nl=False)
            return
        from rich.markup import escape
        from rich.table import Table

        headers, rows = compare_table(results)
        table = Table(title_justify="left", title=f"yb compare on {environment.get('device_name') or environment.get('device')}"
                            f" ({dtype})")
        for i, h in enumerate(headers):
            table.add_column(h, justify="right" if i >= 2 else "left")
        for row in rows:
            table.add_row(*(escape(c) for c in row))
        out = console()
        out.print(table)
        notes = ["FLOPs = 2 x MACs"]
        if not no_latency:
            notes.append(f"latency: median of {results[0].latency.runs if results[0].latency else 0} interleaved rounds")
        notes.append(f"deltas against {results[0].target}")
        out.print("; ".join(notes))
        from yoloblocks_cli.reporting.latency_text import rounds_lines

        for line in rounds_lines(results):
            out.print(line)
        for m in results:
            for u in m.uncounted:
                out.print(f"note: {escape(m.target)}: {escape(u)}")
