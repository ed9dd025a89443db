"""`yb inspect`: one block, every number (placeholder, being built)."""

from __future__ import annotations

import typer

from yoloblocks_cli.options import ArgsOpt, KwargsOpt, SizeOpt


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(block: str, size: SizeOpt, args: ArgsOpt = None, kwargs: KwargsOpt = None) -> None:
        """Inspect one block: shapes, parameters, FLOPs, latency and memory."""
        from yoloblocks_cli.load import load_block
        from yoloblocks_cli.spec import parse_args_list, parse_block_sizes, parse_kwargs

        shapes = parse_block_sizes(size)
        loaded = load_block(block, shapes[0].channels, parse_args_list(args), parse_kwargs(kwargs))
        typer.echo(loaded.call)
