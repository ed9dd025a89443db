"""Our walk of the JIT trace reports exactly what fvcore's FlopCountAnalysis reports."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

import blocks
from blocks import attention
from yoloblocks_cli.measuring.flops import _fvcore_handles, fvcore_count
from yoloblocks_cli.measuring.jit_count import jit_count
from yoloblocks_cli.loading.yaml_model import build_model


class _Twice(torch.autograd.Function):  # shows up in the trace as prim::PythonOp._Twice
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


class _WithPythonOp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 12)

    def forward(self, x):
        return torch.relu(_Twice.apply(self.fc(x))).sum(-1)


def _fvcore(module, x):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        fa = FlopCountAnalysis(module, (x,)).set_op_handle(**_fvcore_handles())
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(fa.total()), dict(fa.unsupported_ops()), {k: int(v) for k, v in fa.by_operator().items()}


def _ours(module, x):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        r = jit_count(module, (x,), _fvcore_handles())
    return r.total, dict(r.unsupported), {k: int(v) for k, v in r.by_operator.items()}


CFG = Path(blocks.__file__).parent / "cfg"


def _model(name, **kw):
    return build_model(name, **kw).model.eval()


CASES = {
    "yolov8n 256x320": (lambda: _model("yolov8n"), (1, 3, 256, 320)),
    "yolo11n (attention)": (lambda: _model("yolo11n"), (1, 3, 192, 160)),
    "yolov10n": (lambda: _model("yolov10n"), (1, 3, 160, 160)),
    "yolov5nu": (lambda: _model("yolov5n"), (2, 3, 128, 96)),
    "YOLOv5 repo (anchors)": (lambda: _model(str(CFG / "yolov5_repo" / "yolov5n.yaml")), (1, 3, 128, 160)),
    "YOLOv9 repo (dual head)": (lambda: _model(str(CFG / "yolov9_repo" / "yolov9-t.yaml")), (1, 3, 128, 128)),
    "seed yolov8-mlla": (lambda: _model("yolov8-mlla", scale="n"), (1, 3, 128, 128)),
    "mamba-yolo T (scan op)": (lambda: _model("mamba-yolo", scale="t"), (1, 3, 128, 96)),
    "FocusedLinearAttention": (lambda: attention.FocusedLinearAttention(32).eval(), (1, 32, 8, 6)),
    "autograd.Function": (lambda: _WithPythonOp().eval(), (3, 12)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_equals_flop_count_analysis(name):
    make, shape = CASES[name]
    torch.manual_seed(0)
    module, x = make(), torch.randn(*shape)
    with torch.no_grad():
        module(x)  # caches (anchors) built, as in yb profile
    total, unsupported, by_op = _fvcore(module, x)
    assert total > 0
    assert _ours(module, x) == (total, unsupported, by_op)


def test_python_op_named_like_fvcore():
    _, unsupported, by_op = _ours(_WithPythonOp().eval(), torch.randn(3, 12))
    assert unsupported == {"prim::PythonOp._Twice": 1, "aten::sum": 1}  # relu is on fvcore's ignore list
    assert by_op == {"linear": 3 * 12 * 12}


def test_fvcore_count_reports_scan_and_uncounted_ops():
    m = _model("mamba-yolo", scale="t")
    macs, unsupported, by_op, _ = fvcore_count(m, torch.randn(1, 3, 64, 64))
    assert by_op["selective_scan"] > 0 and macs == sum(by_op.values())
    assert "aten::add" in unsupported and "aten::cat" not in unsupported  # cat is ignored by fvcore
