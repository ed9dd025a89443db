"""Block specs: registry names, module:Class and file.py:Class with sibling imports."""

from __future__ import annotations

import textwrap

import pytest

from yoloblocks_cli.errors import CheckFailed, UsageError
from yoloblocks_cli.loading.load import load_block


def test_registered_block_gets_width_from_size():
    loaded = load_block("C2f", 64)
    assert loaded.args == [64, 64]
    assert sum(p.numel() for p in loaded.module.parameters()) == 29056  # cv1 4,224 + cv2 6,272 + 2 x 3x3 Conv(32,32) 9,280


def test_module_colon_class():
    loaded = load_block("torch.nn:Conv2d", 16, [32, 3])
    assert loaded.module.weight.shape == (32, 16, 3, 3)


def test_file_block_with_sibling_import(tmp_path):
    (tmp_path / "helpers_mod.py").write_text("SCALE = 3\n")
    (tmp_path / "my_blocks.py").write_text(textwrap.dedent("""
        from torch import nn
        from helpers_mod import SCALE

        class MyAttention(nn.Module):
            def __init__(self, dim, heads=2):
                super().__init__()
                self.proj = nn.Conv2d(dim, dim * SCALE, 1)
            def forward(self, x):
                return self.proj(x)
    """))
    loaded = load_block(f"{tmp_path}/my_blocks.py:MyAttention", 8)
    assert loaded.args == [8]
    assert loaded.module.proj.out_channels == 24


def test_missing_class_in_file_suggests(tmp_path):
    (tmp_path / "b.py").write_text("from torch import nn\nclass MyAttention(nn.Module):\n    pass\n")
    with pytest.raises(UsageError, match="did you mean: MyAttention"):
        load_block(f"{tmp_path}/b.py:MyAtention", 8)


def test_file_that_fails_to_import_names_line(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\nx = 1 / 0\n")
    with pytest.raises(UsageError, match=r"cannot import .*broken.py \(line 2\): ZeroDivisionError"):
        load_block(f"{tmp_path}/broken.py:X", 8)


def test_constructor_that_raises_is_a_block_failure(tmp_path):
    (tmp_path / "c.py").write_text("from torch import nn\nclass B(nn.Module):\n    def __init__(self, c1):\n        super().__init__()\n        assert c1 == 512, 'needs 512'\n")
    with pytest.raises(CheckFailed, match="raised AssertionError: needs 512"):
        load_block(f"{tmp_path}/c.py:B", 64)
