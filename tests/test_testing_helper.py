"""The pytest helpers users import: precise AssertionErrors, and the shipped example passes."""

from __future__ import annotations

import importlib.util
import re

import pytest

from conftest import FIXTURES, ROOT
from yoloblocks_cli.checks.testing import assert_budget, assert_traces

SQUARE = (FIXTURES / "check_square_only.py").as_posix() + ":SquareOnly"


def _example_tests():
    spec = importlib.util.spec_from_file_location("yb_example_test_my_model", ROOT / "examples" / "test_my_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(name, fn) for name, fn in vars(module).items() if name.startswith("test_") and callable(fn)]


@pytest.mark.parametrize("name,fn", _example_tests(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_file_passes(name, fn):
    fn()


def test_assert_traces_names_the_failing_size_line_and_cause():
    with pytest.raises(AssertionError) as info:
        assert_traces(SQUARE, sizes=["8x4x4", "8x4x6", "8x6x6"])
    text = str(info.value)
    assert text.splitlines()[0] == "SquareOnly(8): 1 check(s) failed"
    assert text.splitlines()[1] == (
        "  sweep 1x8x4x6: RuntimeError: shape '[1, 8, 4, 4]' is invalid for input of size 192 "
        "[layer <root> (SquareOnly), at check_square_only.py:18]; hint: assumes a square input: reshapes 24 "
        "(4x6) tokens to 4x4 with s = int(sqrt(N)); pass H and W from the input instead (x.shape[-2:])")
    assert len(text.splitlines()) == 2


def test_assert_budget_is_exact():
    m = assert_budget("C2f", size="16x8x8", max_params=1_888)
    assert m.params == 1_888
    with pytest.raises(AssertionError, match=re.escape(
            "C2f(16, 16): 1 check(s) failed\n  max_params: params 1,888 > max_params 1,887 (+1, 0.1% over)")):
        assert_budget("C2f", size="16x8x8", max_params=1_887)
    with pytest.raises(AssertionError, match=re.escape(
            "max_gflops: GFLOPs (torch) 0.000229 > max_gflops 0.000229 (0.2% over)")):
        assert_budget("C2f", size="16x8x8", max_gflops=0.000229)  # exactly 229,376 FLOPs
    assert_budget("C2f", size="16x8x8", max_gflops=0.000229376)


def test_helper_usage_errors():
    with pytest.raises(ValueError, match="needs max_params and/or max_gflops"):
        assert_budget("C2f", size="16x8x8")
    with pytest.raises(ValueError, match=r"unknown probe\(s\) \['batc'\]"):
        assert_traces("C2f", sizes=["16x8x8"], probes=["batc"])
