"""Warnings as one line on stderr: a library's ``UserWarning`` must not print its source line.

Python's default ``showwarning`` prints ``file:line: Category: message`` and then the
source line that warned, which inside torch is a line of torch (``return func(*args,
**kwargs)``): two lines of noise that look like a crash. The CLI shows each distinct
warning once, as ``warning: message`` (``--debug`` keeps Python's format).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

_SEEN: set[str] = set()


def _show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
          file: TextIO | None = None, line: str | None = None) -> None:
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    if text in _SEEN:
        return
    _SEEN.add(text)
    stream: Any = file if file is not None else sys.stderr
    try:
        stream.write(f"warning: {text}\n")
    except (OSError, ValueError):
        pass


def one_line_warnings() -> None:
    """Install the one-line format for this process (called by the CLI entry point only)."""
    warnings.showwarning = _show
