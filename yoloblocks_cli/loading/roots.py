"""Where a user's file is imported from: its own folder, and its repository root when it needs one.

Files in collections of blocks import from the repository root
(``model/attention/DANet.py`` does ``from model.attention.X import Y``), so loading them
by path fails with "No module named 'model'" unless that root is on ``sys.path``. The root
is the nearest parent folder in which every unresolved absolute import of the file exists
(as a folder or a ``.py``); ``--root DIR`` names it instead.

The root and the file's folder are handed to :func:`.isolation.allow_siblings`, never put on
``sys.path``: a ``thop.py`` or ``blocks/`` beside the user's file cannot shadow a module the
tool imports, then or later.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def absolute_imports(path: Path) -> list[str]:
    """Top-level package names of the file's absolute imports (``from a.b import c`` -> ``a``)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return list(dict.fromkeys(names))


def _exists_in(folder: Path, name: str) -> bool:
    return (folder / name).is_dir() or (folder / f"{name}.py").is_file()


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def find_root(path: Path) -> Path | None:
    """The nearest parent of ``path``'s folder that holds every import the folder itself and
    ``sys.path`` do not; None when nothing is missing or no parent has them all."""
    folder = path.parent
    missing = [n for n in absolute_imports(path) if not _exists_in(folder, n) and not _importable(n)]
    if not missing:
        return None
    for parent in folder.parents:
        if all(_exists_in(parent, n) for n in missing):
            return parent
    return None
