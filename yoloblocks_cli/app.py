"""The `yb` command line: Typer commands only; the engine lives in sibling modules.

Start-up stays cheap: command modules import torch inside their functions, so
``yb --help`` and ``yb --version`` never load it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from enum import Enum
from typing import Any, Optional

import typer

from yoloblocks_cli import __version__
from yoloblocks_cli.errors import YBError

app = typer.Typer(
    name="yb",
    help="Load, trace and profile YOLO blocks and models: shapes, parameters, FLOPs, latency, memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command under yoloblocks_cli/commands; each exposes `register(app)`.
COMMAND_MODULES = (
    "inspect",
    "trace",
    "scale",
    "blocks",
    "compare",
    "check",
    "profile",
)

STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"yoloblocks {__version__}")
        raise typer.Exit()


class ScanBackend(str, Enum):
    auto = "auto"
    torch = "torch"
    kernel = "kernel"


# the CUDA selective-scan extensions `--scan kernel` can use (blocks.mamba.scan.KERNEL_MODULES)
_SCAN_KERNELS = ("selective_scan_cuda_core", "selective_scan_cuda")


def _scan(value: Optional[ScanBackend]) -> Optional[ScanBackend]:
    """Select the selective-scan implementation for this run (sets ``YB_SCAN``; torch stays unloaded)."""
    if value is None:
        return value
    if value is ScanBackend.kernel and not any(importlib.util.find_spec(m) for m in _SCAN_KERNELS):
        from yoloblocks_cli.errors import UsageError

        raise UsageError(f"--scan kernel: no selective-scan CUDA extension is installed "
                         f"({' or '.join(_SCAN_KERNELS)}); use --scan torch or --scan auto")
    os.environ["YB_SCAN"] = value.value
    return value


def _max_memory(value: Optional[str]) -> Optional[str]:
    """Set the memory limit of this run (``YB_MAX_MEMORY``; see loading/limits.py); torch stays unloaded."""
    if value is not None:
        from yoloblocks_cli.loading.limits import ENV_MAX_MEMORY, parse_memory

        parse_memory(value)  # a malformed size is exit 2 now
        os.environ[ENV_MAX_MEMORY] = value
    return value


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
    scan: Optional[ScanBackend] = typer.Option(
        None, "--scan", callback=_scan,
        help="Selective scan for Mamba blocks: torch (pure PyTorch, any device), kernel (the CUDA "
             "extension of mamba_ssm/VMamba), auto (kernel on CUDA when installed, else torch). "
             "Default: $YB_SCAN, else auto."),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", callback=_max_memory, metavar="SIZE",
        help="Refuse (exit 2) inputs and models whose estimated bytes pass SIZE (8G, 512M, 50%). "
             "Default: $YB_MAX_MEMORY, else half of the available memory. See docs/limits.md."),
) -> None:
    """Global options (before the command). `--debug` anywhere on the line shows full tracebacks."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"yoloblocks_cli.commands.{_name}").register(app)


def _print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")


def _click_exceptions() -> tuple[type, type]:
    """(ClickException, Abort) of the click typer runs on (vendored since typer 0.26, the
    ``click`` package before), reached through typer's public exception classes."""
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return click_error, typer.Abort


def _usage_line(exc: Any) -> str:
    """A click usage error as one line: the command, the problem, where help is."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "yb"
    return f"{path}: {exc.format_message()} (see {path} --help)"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `yb` console script; maps errors to one line and an exit code.

    Usage errors found by typer (a missing option, a value out of range) and ours
    (:class:`YBError`) alike print one line and exit 2; no traceback without ``--debug``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    STATE["debug"] = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not STATE["debug"]:
        from yoloblocks_cli.reporting.warn import one_line_warnings

        one_line_warnings()
    click_error, abort = _click_exceptions()
    try:
        code = app(args=args, prog_name="yb", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(code) from a command, or success
    except click_error as exc:
        if exc.format_message().strip():  # empty when typer printed the help (no arguments)
            _print_error(_usage_line(exc))
        sys.exit(exc.exit_code)
    except abort:
        _print_error("aborted")
        sys.exit(1)
    except YBError as exc:
        if STATE["debug"]:
            raise
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _print_error("interrupted")
        sys.exit(130)
    except Exception as exc:  # an unexpected failure inside yb itself
        if STATE["debug"]:
            raise
        _print_error(f"internal error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


def cli() -> None:
    """Console entry point (`yb`, `python -m yoloblocks_cli`): :func:`main` in a one-shot
    process, which may skip garbage-collection rescans and interpreter teardown (see runtime)."""
    from yoloblocks_cli import runtime

    runtime.enable()
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    runtime.exit_now(code)


if __name__ == "__main__":
    cli()
