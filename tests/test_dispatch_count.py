"""The dispatch FLOP counter equals torch's FlopCounterMode and never imports torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from blocks import attention, csp
from blocks.mamba.scan import selective_scan
from yoloblocks_cli.measuring.dispatch_count import DispatchFlopCounter
from yoloblocks_cli.measuring.flops import _ensure_op_formulas


def _both(fn):
    _ensure_op_formulas()
    ours = DispatchFlopCounter()
    with torch.no_grad(), ours:
        fn()
    ref = FlopCounterMode(display=False)
    with torch.no_grad(), ref:
        fn()
    by_op = {str(k): int(v) for k, v in ref.get_flop_counts()["Global"].items()}
    return ours, int(ref.get_total_flops()), by_op


@pytest.mark.parametrize("make, shape", [
    (lambda: csp.C2f(16, 16, 1, True), (2, 16, 12, 10)),
    (lambda: attention.MLLAttention(32), (1, 32, 9, 7)),
    (lambda: attention.FocusedLinearAttention(32), (1, 32, 8, 6)),
], ids=["C2f", "MLLAttention", "FocusedLinearAttention"])
def test_totals_and_per_op_equal_flop_counter_mode(make, shape):
    m = make().eval()
    x = torch.randn(*shape)
    ours, total, by_op = _both(lambda: m(x))
    assert total > 0
    assert ours.total == total
    assert dict(ours.by_op) == by_op


def test_custom_scan_op_counted_like_flop_counter_mode():
    u = torch.randn(1, 8, 37)
    args = (u, torch.randn(1, 8, 37), -torch.rand(8, 4), torch.randn(1, 2, 4, 37), torch.randn(1, 2, 4, 37),
            torch.randn(8), None, torch.randn(8), True)
    ours, total, _ = _both(lambda: selective_scan(*args))
    assert ours.total == total == 9 * 8 * 37 * 4 + 8 * 37  # 9 b*D*L*N for the scan, b*D*L for the D skip


def test_counting_does_not_import_dynamo():
    code = ("import sys, torch\n"
            "from blocks.csp import C2f\n"
            "from yoloblocks_cli.measuring.flops import count_flops\n"
            "r = count_flops(C2f(8, 8, 1), torch.randn(1, 8, 8, 8), counters=('torch',))\n"
            "print(r.torch, 'torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(out[0]), "False"] and int(out[0]) > 0
