"""The size grammar and safe literal parsing."""

from __future__ import annotations

import pytest

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading.spec import (parse_args_list, parse_block_sizes, parse_kwargs,
                                 parse_model_size)


def test_block_sizes_chw_bchw_and_lists():
    shapes = parse_block_sizes(["64x160x160", "2x64x20x15,32x7x9"])
    assert [s.dims for s in shapes] == [(1, 64, 160, 160), (2, 64, 20, 15), (1, 32, 7, 9)]


def test_batch_override():
    assert parse_block_sizes(["64x8x8"], batch=4)[0].dims == (4, 64, 8, 8)


def test_model_sizes():
    assert parse_model_size("640").dims == (1, 3, 640, 640)
    assert parse_model_size("640x480").dims == (1, 3, 640, 480)


@pytest.mark.parametrize("bad", ["64x80", "64x-1x3", "abc", "1x2x3x4x5", "64x0x8"])
def test_malformed_block_sizes(bad):
    with pytest.raises(UsageError, match="malformed size"):
        parse_block_sizes([bad])


def test_args_are_literals_never_evaluated():
    assert parse_args_list("[8, 48, 48]") == [8, 48, 48]
    assert parse_args_list("8, 48") == [8, 48]
    with pytest.raises(UsageError, match="only Python literals"):
        parse_args_list("__import__('os').system('true')")


def test_kwargs():
    assert parse_kwargs(["num_heads=8", "qkv_bias=True", "act=relu"]) == {"num_heads": 8, "qkv_bias": True, "act": "relu"}
    with pytest.raises(UsageError, match="expected name=value"):
        parse_kwargs(["8"])
