"""Sibling imports of a user's file, without letting that folder shadow anything else.

A block file often does ``from my_common import Attention``: the file's folder must be
importable. Putting the folder first on ``sys.path`` (what ``python blk.py`` does) also
made a ``thop.py`` or ``fvcore.py`` lying beside the block win over the installed
counter, imported later by `yb` itself. Instead the folder is served by a finder placed
*after* the standard one: an installed module is always found first, and the names `yb`
and its counters import (:data:`PROTECTED`, checked by a test against the source) are
never served from a user's folder, installed or not.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from typing import Any, Sequence

# Top-level modules the tool, the block library and the FLOP counters import (optional ones
# included: an uninstalled matplotlib must stay uninstalled, not come from a user's folder).
PROTECTED = frozenset({
    "yoloblocks_cli", "blocks", "torch", "torchvision", "thop", "fvcore", "iopath", "einops", "numpy", "yaml",
    "rich", "typer", "click", "typing_extensions", "tomli", "tomllib", "matplotlib", "ultralytics", "mamba_ssm",
    "selective_scan_cuda", "selective_scan_cuda_core", "causal_conv1d", "triton", "timm", "scipy", "pandas",
    "PIL", "psutil", "sympy", "networkx", "jinja2", "tabulate", "termcolor", "pydantic",
    "onnx", "onnxruntime", "onnxscript", "safetensors",
})


class SiblingFinder(importlib.abc.MetaPathFinder):
    """Finds a top-level module in the folders of the user's files, after every other finder."""

    def __init__(self) -> None:
        self.folders: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if path is not None or "." in fullname or fullname.split(".")[0] in PROTECTED or fullname in sys.stdlib_module_names:
            return None  # submodules follow their package's __path__; protected names never come from here
        return importlib.machinery.PathFinder.find_spec(fullname, self.folders) if self.folders else None


_FINDER = SiblingFinder()


def allow_siblings(folder: str | Path) -> None:
    """Let modules in ``folder`` be imported by name, unless something installed has that name."""
    text = str(folder)
    if text not in _FINDER.folders:
        _FINDER.folders.append(text)
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
