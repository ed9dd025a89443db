"""`yb blocks`: list the registered blocks, or document one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from yoloblocks_cli.commands.options import JsonOpt, OutputOpt, writable_path


def register(app: typer.Typer) -> None:
    @app.command("blocks")
    def blocks_cmd(
        name: Annotated[Optional[str], typer.Argument(help="Show one block's documentation.")] = None,
        family: Annotated[Optional[str], typer.Option("--family", "-f", help="standard, attention, ssm, mlp, head or utility.")] = None,
        grep: Annotated[Optional[str], typer.Option("--grep", "-g", help="Only names containing this text.")] = None,
        json_out: JsonOpt = False,
        output: OutputOpt = None,
        write_docs: Annotated[Optional[Path], typer.Option("--write-docs", callback=writable_path, help="Measure every block and write the catalog page (docs/blocks.md).")] = None,
    ) -> None:
        """List every registered block (name, family, YAML convention, source), or document one."""
        from blocks.registry import FAMILIES, UnknownBlockError, get_block
        from yoloblocks_cli.catalog import entries as catalog
        from yoloblocks_cli.errors import UsageError

        if write_docs is not None:
            from yoloblocks_cli.reporting.atomic import write_text_atomic

            from yoloblocks_cli.reporting.report import status

            with status("measuring every block (params, FLOPs, scaling sweep, trace sweep)") as update:
                page = catalog.build_page(progress=lambda name: update(f"measuring {name}"))
            write_text_atomic(write_docs, page)
            typer.echo(f"wrote {write_docs}")
            return
        if family is not None and family not in FAMILIES:
            raise UsageError(f"unknown family '{family}': choose from {', '.join(FAMILIES)}")
        if name is not None:
            try:
                info = get_block(name)
            except UnknownBlockError as exc:
                raise UsageError(str(exc)) from None
            entry = catalog.entry_for(info)
            entry.measured = catalog.measure(info)
            if json_out or output:
                _emit_json({"entry": entry.as_dict()}, "blocks", name, output)
            else:
                from yoloblocks_cli.catalog.render import render_entry

                render_entry(entry)
            return
        rows = catalog.entries(family, grep)
        if json_out or output:
            _emit_json({"blocks": [e.as_dict() for e in rows]}, "blocks", "registry", output)
            return
        from yoloblocks_cli.catalog.render import render_table

        render_table(rows)


def _emit_json(body: dict, command: str, target: str, output) -> None:
    import torch

    from yoloblocks_cli.reporting.report import base_report, env_info, write_json

    # measurements in the catalog are taken on CPU in fp32 (see catalog.measure)
    report = base_report(command, target, env_info(torch.device("cpu"), torch.float32))
    report.update(body)
    write_json(report, output)
