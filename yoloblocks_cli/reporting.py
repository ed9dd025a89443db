"""Small output helpers shared by `yb compare` and `yb check`.

``console()`` is plain (no colour, no terminal control) when stdout is not a terminal or
NO_COLOR is set, so CI logs and pipes get clean text. ``env``/``report`` use the engine's
:mod:`yoloblocks_cli.report` when it is present; the fallbacks below are marked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

SCHEMA = "yoloblocks.report/1"


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    plain = not tty or bool(os.environ.get("NO_COLOR"))
    return Console(file=stream, no_color=plain, force_terminal=None if tty else False, highlight=not plain,
                   soft_wrap=not tty, width=None if tty else int(os.environ.get("COLUMNS", "200")))


def env(device: str, dtype: str, threads: int | None = None) -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    try:
        from yoloblocks_cli.report import env_info
    except ImportError:  # local fallback until yoloblocks_cli.report lands
        from yoloblocks_cli import __version__

        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        return {"torch": torch.__version__, "device": str(dev), "device_name": name, "dtype": dtype,
                "threads": threads or torch.get_num_threads(), "yoloblocks": __version__}
    return env_info(dev, dtype, threads)


def base(command: str, target: Any, environment: dict[str, Any]) -> dict[str, Any]:
    try:
        from yoloblocks_cli.report import base_report
    except ImportError:  # local fallback until yoloblocks_cli.report lands
        return {"schema": SCHEMA, "command": command, "target": target, "env": environment}
    return base_report(command, target, environment)


def write_json(report: dict[str, Any], output: Path | None) -> None:
    """Print the report, or write it to ``output`` (atomically)."""
    import json

    text = json.dumps(report, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        from yoloblocks_cli.baseline import write_atomic

        write_atomic(output, text)
