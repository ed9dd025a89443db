"""Nothing runs unless named (issue 16, bullet 3): a ``module:Class`` spec must name an
nn.Module subclass before anything is called, and files beside a user's block or plugin
cannot shadow the counters or the tool's own imports."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

from yoloblocks_cli.app import main
from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading import isolation
from yoloblocks_cli.loading.load import import_file, resolve_spec

ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err.splitlines()


def test_popen_in_args_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "ran"
    code, err = _cli(capsys, ["inspect", "subprocess:Popen", "--size", "3x8x8", "--args", f"[['touch', '{marker}']]"])
    assert (code, err) == (2, ["error: 'subprocess:Popen' is not a torch.nn.Module subclass (subprocess.Popen); "
                               "a block spec must name one"])
    assert not marker.exists()


def test_popen_in_yb_toml_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "ran"
    cfg = tmp_path / "yb.toml"
    cfg.write_text(f'[blocks.evil]\nblock = "subprocess:Popen"\nsize = "3x8x8"\nargs = [["touch", "{marker}"]]\n')
    code, err = _cli(capsys, ["check", "--config", str(cfg)])
    assert code == 2  # (stderr's first line is check's progress line "yb check: building evil")
    assert err[-1] == ("error: yb.toml: [blocks.evil] 'subprocess:Popen' is not a torch.nn.Module subclass "
                       "(subprocess.Popen); a block spec must name one")
    assert not marker.exists()


@pytest.mark.parametrize("spec", ["os:getcwd", "collections:OrderedDict", "torch:Tensor"])
def test_a_spec_must_name_a_module_class(spec):
    with pytest.raises(UsageError, match="not a class|not a torch.nn.Module subclass"):
        resolve_spec(spec)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder with a block, its sibling helper, and a thop.py / fvcore.py that must never load."""
    (tmp_path / "thop.py").write_text("raise RuntimeError('the thop.py beside the block was imported')\n")
    (tmp_path / "fvcore.py").write_text("raise RuntimeError('the fvcore.py beside the block was imported')\n")
    (tmp_path / "helper_for_blk16.py").write_text("FACTOR = 3\n")
    (tmp_path / "blk16.py").write_text(
        "import torch.nn as nn\nfrom helper_for_blk16 import FACTOR\n\n\n"
        "class Blk(nn.Module):\n    def forward(self, x):\n        return x * FACTOR\n")
    for name in ("thop", "fvcore", "helper_for_blk16"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # as in a fresh `yb` process
    yield tmp_path
    isolation._FINDER.folders[:] = [f for f in isolation._FINDER.folders if f != str(tmp_path.resolve())]


def test_files_beside_a_user_block_do_not_shadow_the_counters(user_dir):
    module = import_file(user_dir / "blk16.py")
    assert module.FACTOR == 3  # its own sibling import works
    assert str(user_dir.resolve()) not in sys.path
    for name in ("thop", "fvcore"):
        mod = importlib.import_module(name)
        assert not Path(mod.__file__).resolve().is_relative_to(user_dir.resolve()), name


def test_a_plugin_folder_does_not_shadow_either(user_dir):
    from yoloblocks_cli.loading.yaml_model import load_plugins

    assert "Blk" in load_plugins([user_dir / "blk16.py"])
    assert not Path(importlib.import_module("thop").__file__).resolve().is_relative_to(user_dir.resolve())


def _top_level_imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_module_the_tool_imports_is_protected():
    """A new import in yoloblocks_cli/ or blocks/ must be added to isolation.PROTECTED
    (standard-library names are protected without being listed)."""
    used = _top_level_imports(ROOT / "yoloblocks_cli") | _top_level_imports(ROOT / "blocks")
    missing = sorted(n for n in used if n not in isolation.PROTECTED and n not in sys.stdlib_module_names
                     and n != "__future__")
    assert missing == []
