"""`yb check`: CI smoke checks from yb.toml / pyproject.toml; exit 1 on any failed verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import JsonOpt, OutputOpt, ThreadsOpt

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="yb.toml or pyproject.toml to read "
                                                   "(default: ./yb.toml, else ./pyproject.toml \\[tool.yoloblocks]).")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="Also write the verdicts as JUnit XML.")]
UpdateOpt = Annotated[bool, typer.Option("--update-baseline", help="Write this run as the new baseline "
                                         "(atomically; only when every other check passes).")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Run the K-th of N slices of the targets, "
                                                 "e.g. 2/4 (a CI matrix job each; see docs/check.md).")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print the verdicts as a Markdown table "
                                           "(e.g. >> $GITHUB_STEP_SUMMARY).")]


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_cmd(config: ConfigOpt = None, junit: JunitOpt = None, update_baseline: UpdateOpt = False,
                  json_out: JsonOpt = False, output: OutputOpt = None, markdown: MarkdownOpt = False,
                  threads: ThreadsOpt = None, shard: ShardOpt = None) -> None:
        """Check blocks and models against budgets, sweeps, probes and a baseline (exit 1 on failure)."""
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
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        quiet = json_out or markdown
        err = console(stderr=True)
        result = run_check(cfg, update_baseline=update_baseline, threads=threads,
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
            console(stderr=True).print("yb check: baseline NOT updated: fix the failed checks first")
        if not result.ok:
            raise typer.Exit(1)


def _render(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    from yoloblocks_cli.reporting.report import console

    out = console()
    table = Table(title_justify="left", title=f"yb check ({result.config.path.name}, {result.config.device}, {result.config.dtype})")
    for name in ("Target", "Check", "Result", "Detail"):
        table.add_column(name)
    for f in result.findings:
        table.add_row(f.target, f.check, "[bold red]FAIL[/]" if not f.ok else f.status, escape(f.message))
    out.print(table)
    if result.baseline_written is not None:
        out.print(f"baseline written: {result.baseline_written}")
    failed = len(result.failed)
    skipped = sum(f.skipped for f in result.findings)
    out.print(f"{len(result.findings) - failed - skipped} passed, {failed} failed"
              + (f", {skipped} skipped" if skipped else ""))
