"""The registry and its conventions: what the model builder and `yb inspect` rely on."""

from __future__ import annotations

import pytest

from blocks.conventions import LayerContext, get_convention, make_divisible
from blocks.registry import UnknownBlockError, get_block


def test_standard_blocks_registered_with_conventions():
    assert get_block("Conv").convention.name == "c1_c2"
    assert get_block("C2f").convention.name == "c1_c2_n"
    assert get_block("C3").convention.name == "c1_c2_n"
    assert get_block("SPPF").convention.name == "sppf"
    assert get_block("Bottleneck").convention.name == "c1_c2"
    assert get_block("nn.Upsample").name == "Upsample"


def test_unknown_block_suggests_close_names():
    with pytest.raises(UnknownBlockError) as err:
        get_block("C2ff")
    assert "did you mean: C2f" in str(err.value)


def test_lookup_is_case_insensitive():
    assert get_block("c2f").name == "C2f"


def test_make_divisible_rounds_up_to_multiple_of_8():
    assert make_divisible(64 * 0.25) == 16
    assert make_divisible(1024 * 0.25) == 256
    assert make_divisible(20.1) == 24


def test_c1_c2_n_inserts_repeats_and_scales_width():
    ctx = LayerContext(ch_in=[32], args=[128, True], n=2, width=0.25, max_channels=1024)
    r = get_convention("c1_c2_n").resolve(ctx)
    assert r.args == [32, 32, 2, True] and r.c_out == 32 and r.repeats == 1


def test_c1_c2_keeps_class_count_unscaled():
    ctx = LayerContext(ch_in=[64], args=[80, 1], nc=80, width=0.25)
    r = get_convention("c1_c2").resolve(ctx)
    assert r.args == [64, 80, 1] and r.c_out == 80


def test_concat_and_head_conventions():
    assert get_convention("concat").resolve(LayerContext(ch_in=[64, 128], args=[1])).c_out == 192
    r = get_convention("head").resolve(LayerContext(ch_in=[64, 128, 256], args=[80]))
    assert r.args == [80, [64, 128, 256]]


def test_standalone_args_fill_width_from_size():
    assert get_block("C2f").inspect_args(64, None) == [64, 64]
    assert get_block("Conv").inspect_args(16, [32, 3, 2]) == [16, 32, 3, 2]
