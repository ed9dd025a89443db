"""FLOP counters: exact figures against hand formulas, and exact explanations of what each missed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yoloblocks_cli.measuring import flops as F
from yoloblocks_cli.measuring.flops import count_flops, torch_flops


class PureConv(nn.Module):
    """One grouped convolution and nothing else: every counter must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False)

    def forward(self, x):
        return self.conv(x)


class MmBlock(nn.Module):
    """A 1x1 conv, then two `Tensor.mm` products that no thop rule or functional hook covers."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1, bias=False)
        self.w = nn.Parameter(torch.randn(c, c))

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.conv(x).reshape(c, h * w).t()  # (hw, c)
        return t.mm(self.w).mm(self.w)


class MatmulAttention(nn.Module):
    """Two torch.matmul products and a softmax in a module without a thop rule."""

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2)  # (b, c, n)
        a = torch.matmul(t.transpose(1, 2), t).softmax(-1)  # (b, n, n)
        return torch.matmul(t, a)


def conv_flops(cout, cin, k, h, w, groups=1):
    return 2 * cout * cin * k * k * h * w // groups


def test_conv_flops_exact_and_counters_agree():
    x = torch.randn(1, 8, 10, 12)
    r = count_flops(PureConv(), x)
    expected = conv_flops(16, 8, 3, 10, 12, groups=2)  # 2 * Cout * Cin * k * k * H * W / groups
    assert expected == 138240
    assert r.torch == expected
    assert r.ultralytics == expected and r.thop_macs == expected // 2
    assert r.fvcore == expected and r.fvcore_macs == expected // 2
    assert r.by_op == {"aten.convolution": expected}
    assert r.uncounted == [] and r.notes == []
    assert torch_flops(PureConv(), x) == expected


def test_thop_missed_mm_is_named_exactly():
    x = torch.randn(1, 8, 4, 5)
    r = count_flops(MmBlock(), x)
    conv = conv_flops(8, 8, 1, 4, 5)
    mm = 2 * (20 * 8 * 8)  # each (20x8)@(8x8) product
    assert r.torch == conv + 2 * mm
    assert r.fvcore == conv + 2 * mm
    assert r.ultralytics == conv  # thop saw only the conv
    assert r.missed["ultralytics"] == {"mm": 2}
    assert r.uncounted[0] == "thop: 2 mm not counted (functional calls outside modules thop has a rule for)"


def test_matmul_label_when_thop_has_no_functional_hooks(monkeypatch):
    """Older thop counts module leaves only: torch.matmul is then named as missed, by its Python name."""
    hooks, zero, _ = F._thop_tables()
    monkeypatch.setattr(F, "_thop_tables", lambda: (hooks, zero, {}))
    r = count_flops(MatmulAttention(), torch.randn(1, 4, 3, 3), counters=("torch", "ultralytics"))
    assert r.missed["ultralytics"] == {"matmul": 2}
    assert r.uncounted[0].startswith("thop: 2 matmul not counted")


def test_fvcore_warnings_are_captured_not_printed(capfd):
    r = count_flops(MatmulAttention(), torch.randn(1, 4, 3, 3), counters=("fvcore",))
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    assert r.missed["fvcore"]["aten::softmax"] == 1
    assert any(line.startswith("fvcore: ") and "1 aten::softmax" in line for line in r.uncounted)


def test_counting_leaves_the_users_module_untouched():
    m = MmBlock()
    m.train()
    keys = list(m.state_dict())
    count_flops(m, torch.randn(1, 8, 4, 5))
    assert m.training
    assert list(m.state_dict()) == keys
    for sub in m.modules():
        assert "total_ops" not in sub.__dict__ and "total_ops" not in sub._buffers
        assert not sub._forward_hooks and not sub._forward_pre_hooks


def test_a_failing_counter_gives_none_and_a_note(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(F, "thop_macs", boom)
    r = count_flops(PureConv(), torch.randn(1, 8, 4, 4))
    assert r.ultralytics is None and r.thop_macs is None
    assert r.notes == ["ultralytics (thop): failed (RuntimeError: boom)"]
    assert r.torch == r.fvcore == conv_flops(16, 8, 3, 4, 4, groups=2)


def test_batchnorm_is_named_as_uncounted_by_the_dispatch_counter():
    m = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4))
    r = count_flops(m, torch.randn(1, 4, 3, 3))
    assert r.torch == conv_flops(4, 4, 1, 3, 3)
    assert r.missed["torch"] == {"BatchNorm2d": 1}
    assert r.uncounted[0] == ("torch: 1 BatchNorm2d [thop counts]; batch_norm [fvcore counts] not counted "
                              "(no dispatch formula)")


def test_custom_op_formula_reaches_torch_and_fvcore():
    from blocks.flop_formulas import OP_FORMULAS, register_op_formula

    name = "ybtest::scale_sum"
    if not hasattr(torch.ops.ybtest, "scale_sum"):  # defined once per process
        @torch.library.custom_op(name, mutates_args=())
        def scale_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x * 2 + y

        @scale_sum.register_fake
        def _(x, y):
            return torch.empty_like(x)

    @register_op_formula(name)
    def _flops(x_shape, y_shape, **kw):
        return 2 * math.prod(x_shape)

    class M(nn.Module):
        def forward(self, x):
            return torch.ops.ybtest.scale_sum(x, x)

    try:
        r = count_flops(M(), torch.randn(1, 4, 5, 5))
        assert r.torch == 200 and r.fvcore == 200
        assert r.ultralytics == 0 and r.missed["ultralytics"] == {"scale_sum": 1}
    finally:
        OP_FORMULAS.pop(name, None)


def test_unknown_counter_is_rejected():
    with pytest.raises(ValueError, match="unknown FLOP counter"):
        count_flops(PureConv(), torch.randn(1, 8, 4, 4), counters=("flops",))
