"""The engine's import direction: commands -> engine -> blocks, and one way inside the engine.

Every import counts, including the lazy ones inside functions (that is how the engine keeps
torch out of ``yb --help``): a lazy import running the wrong way is still a cycle waiting
to happen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "yoloblocks_cli"

# Lowest first. A subpackage may import itself, the ones before it, and the core modules.
LAYERS = ["reporting", "loading", "measuring", "tracing", "checks", "catalog"]
CORE = {"errors", "device", "runtime", "__init__"}  # imported by anything, import no subpackage
TOP = {"app", "__main__", "commands"}  # the CLI: may import everything, imported by nothing below


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "yoloblocks_cli":
                found += [(node.lineno, f"yoloblocks_cli.{a.name}") for a in node.names]
            elif node.module.startswith("yoloblocks_cli."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("yoloblocks_cli")]
    return found


def _unit(dotted: str) -> str:
    """``yoloblocks_cli.measuring.bench`` -> ``measuring``; ``yoloblocks_cli.errors`` -> ``errors``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _allowed(src: str, dst: str) -> bool:
    if dst in ("__version__",) or dst == src:
        return True
    if src in TOP:
        return True
    if dst in TOP:
        return False
    if src in CORE:
        return dst in CORE
    if dst in CORE:
        return True
    return LAYERS.index(dst) <= LAYERS.index(src)


def _violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for line, target in _imports(path):
            dst = _unit(target)
            if not _allowed(src, dst):
                bad.append(f"yoloblocks_cli/{rel}:{line} ({src}) imports {target} ({dst})")
    return bad


def test_every_module_belongs_to_a_known_layer():
    units = {p.relative_to(PKG).parts[0] if len(p.relative_to(PKG).parts) > 1 else p.stem
             for p in PKG.rglob("*.py")}
    assert units <= set(LAYERS) | CORE | TOP, units - (set(LAYERS) | CORE | TOP)


def test_imports_run_one_way():
    assert _violations() == []


def test_the_block_library_never_imports_the_tool():
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "blocks").rglob("*.py"))
                 for line, _ in _imports(p)]
    assert offenders == []


@pytest.mark.parametrize("layer", LAYERS)
def test_each_subpackage_says_what_it_may_import(layer):
    doc = ast.get_docstring(ast.parse((PKG / layer / "__init__.py").read_text()))
    assert doc and "import" in doc, f"{layer}/__init__.py needs a docstring naming what it may import"


def test_the_checker_catches_a_wrong_way_import():
    assert not _allowed("measuring", "tracing")
    assert not _allowed("reporting", "measuring")
    assert not _allowed("checks", "commands")
    assert _allowed("tracing", "measuring")
