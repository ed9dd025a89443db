"""`yb check`: CI smoke checks from yb.toml / pyproject.toml; exit 1 on any failed verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import JsonOpt, OutputOpt, ThreadsOpt, writable_path

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="yb.toml or pyproject.toml to read "
                                                   "(default: ./yb.toml, else ./pyproject.toml \\[tool.yoloblocks]).")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", callback=writable_path, help="Also write the verdicts as JUnit XML.")]
UpdateOpt = Annotated[bool, typer.Option("--update-baseline", help="Write this run as the new baseline "
                                         "(atomically; only when every other check passes).")]
FailInconclusiveOpt = Annotated[bool, typer.Option("--fail-inconclusive", help="A latency verdict this run cannot "
                                                  "decide (noisy machine, interval straddles the limit) fails "
                                                  "(exit 1) instead of exit 3.")]
IgnoreNoiseOpt = Annotated[bool, typer.Option("--ignore-noise", help="Judge latency budgets by their intervals even "
                                              "when the machine was noisy (the warning stays; also "
                                              "YB_IGNORE_NOISE=1).")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Run the K-th of N slices of the targets, "
                                                 "e.g. 2/4 (a CI matrix job each; see docs/check.md).")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print the verdicts as a Markdown table "
                                           "(e.g. >> $GITHUB_STEP_SUMMARY).")]


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_cmd(config: ConfigOpt = None, junit: JunitOpt = None, update_baseline: UpdateOpt = False,
                  json_out: JsonOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
                  threads: ThreadsOpt = None, fail_inconclusive: FailInconclusiveOpt = False,
                  ignore_noise: IgnoreNoiseOpt = False, shard: ShardOpt = None) -> None:
        """Check blocks and models against budgets, sweeps, probes and a baseline (exit 1 on failure,
        3 when nothing failed but a latency verdict was inconclusive)."""
        from yoloblocks_cli.checks.config import find_config, load_config
        from yoloblocks_cli.checks.run import run_check, write_junit
        from yoloblocks_cli.reporting.report import console, write_json

        if json_out and markdown:
            from yoloblocks_cli.errors import UsageError as _Usage

            raise _Usage("--json and --markdown both print to stdout: choose one (or --output FILE for the JSON)")
        cfg = load_config(config if config is not None else find_config())
        if shard is not None:
            from yoloblocks_cli.checks.shard import parse_shard, select
            from yoloblocks_cli.errors import UsageError as _Usage

            part = parse_shard(shard)
            if update_baseline:
                raise _Usage("--update-baseline needs every target: run it without --shard")
            cfg = select(cfg, part)
            if not cfg.targets:
                console(stderr=True).print(f"yb check: shard {part} has no targets (fewer target groups than shards)")
                return
            console(stderr=True).print(f"yb check: shard {part}: {', '.join(t.name for t in cfg.targets)}")
        if ignore_noise:
            import os

            os.environ["YB_IGNORE_NOISE"] = "1"  # read where budgets are judged (checks/budget.py)
        if threads is not None or cfg.needs_latency:
            from yoloblocks_cli.measuring.contention import apply_threads

            apply_threads(threads)  # --threads, else torch's default minus the CPUs busy elsewhere
        quiet = json_out or markdown
        err = console(stderr=True)
        result = run_check(cfg, update_baseline=update_baseline, threads=threads, fail_inconclusive=fail_inconclusive,
                           progress=None if quiet else (lambda text: err.print(f"yb check: {text}")))
        if junit is not None:
            write_junit(result.findings, junit)
        if json_out or output is not None:
            write_json(result.report, output)
        if markdown:
            from yoloblocks_cli.checks.markdown import findings_markdown

            typer.echo(findings_markdown(result.findings), nl=False)
        if not quiet:
            _render(result)
        if update_baseline and result.baseline_written is None:
            console(stderr=True).print("yb check: baseline NOT updated: " + (
                "fix the failed checks first" if not result.ok else
                "a latency verdict was inconclusive (rerun on a quieter machine, or raise rounds)"))
        if not result.ok:
            raise typer.Exit(1)
        if result.inconclusive:
            raise typer.Exit(3)


def _render(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    from yoloblocks_cli.reporting.report import console

    out = console()
    table = Table(title_justify="left", title=f"yb check ({result.config.path.name}, {result.config.device}, {result.config.dtype})")
    for name in ("Target", "Check", "Result", "Detail"):
        table.add_column(name)
    for f in result.findings:
        status = "[bold red]FAIL[/]" if not f.ok else "[yellow]inconclusive[/]" if f.inconclusive else f.status
        table.add_row(f.target, f.check, status, escape(f.message))
    out.print(table)
    for line in _noise_lines(result):
        out.print(line)
    if result.baseline_written is not None:
        out.print(f"baseline written: {result.baseline_written}")
    failed = len(result.failed)
    skipped = sum(f.skipped for f in result.findings)
    unsure = len(result.inconclusive)
    out.print(f"{len(result.findings) - failed - skipped - unsure} passed, {failed} failed"
              + (f", {skipped} skipped" if skipped else "") + (f", {unsure} inconclusive" if unsure else ""))


def _noise_lines(result) -> list[str]:
    """The machine's verdict during the interleaved rounds, with a warning when it was noisy."""
    noise = next((m.latency.contention for m in result.measurements
                  if m.latency is not None and getattr(m.latency, "contention", None) is not None), None)
    if noise is None:
        return []
    if noise.noisy:
        return [f"[bold yellow]warning:[/] latency timed on a noisy machine: {'; '.join(noise.reasons)} "
                f"(see docs/latency.md)"]
    return [f"[dim]machine while timing: {noise.summary()}[/]"]
