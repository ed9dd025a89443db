"""Blocks of the YOLOv5 and YOLOv9 repositories: exact sizes against the repositories' own builds.

The reference numbers in ``fixtures/repo_reference.json`` were measured by building the
repositories' code (see its ``_about``); here each block is built alone with the widths
that layer receives in the full model, so a wrong channel rule fails with a precise count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from blocks.conventions import LayerContext
from blocks.registry import get_block
from blocks.yolov5_repo import AnchorDetect, expand_anchors
from blocks.yolov9_repo import CBFuse, CBLinear, DDetect, DualDDetect, Silence, TripleDDetect

REF = json.loads((Path(__file__).parent / "fixtures" / "repo_reference.json").read_text())["models"]
V5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_anchor_detect_params_equal_yolov5s_head():
    head = AnchorDetect(80, V5_ANCHORS, (128, 256, 512))
    assert nparams(head) == REF["yolov5_repo/yolov5s"]["layer_params"][-1] == 229245
    assert [tuple(c.weight.shape) for c in head.m] == [(255, 128, 1, 1), (255, 256, 1, 1), (255, 512, 1, 1)]
    assert all(c.bias is not None for c in head.m)


def test_anchor_detect_int_anchors_means_placeholders_per_level():
    assert expand_anchors(2, 3) == [[0, 1, 2, 3]] * 3
    head = AnchorDetect(3, 2, (8, 16))
    assert head.na == 2 and head.anchors.shape == (2, 2, 2)
    assert head.m[0].out_channels == 2 * (3 + 5)


def test_anchor_detect_rejects_level_mismatch():
    with pytest.raises(ValueError, match="2 anchor levels for 3 inputs"):
        AnchorDetect(80, V5_ANCHORS[:2], (8, 16, 32))


def test_anchor_detect_decodes_rectangular_input_after_stride_binding():
    torch.manual_seed(0)
    head = AnchorDetect(2, V5_ANCHORS, (8, 8, 8))
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    assert torch.allclose(head.anchors[0], torch.tensor([[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]]))
    head.eval()
    feats = [torch.rand(1, 8, 6, 4), torch.rand(1, 8, 3, 2), torch.rand(1, 8, 2, 1)]
    y, raw = head(feats)
    assert y.shape == (1, 3 * (24 + 6 + 2), 7)
    assert raw[0].shape == (1, 3, 6, 4, 7)
    # cell (row 5, col 3) of level 0: centre = (2*sigmoid - 0.5 + col) * stride
    t = raw[0][0, 0, 5, 3]
    expected_x = (t[0].sigmoid() * 2 - 0.5 + 3) * 8
    assert torch.isclose(y[0, 5 * 4 + 3, 0], expected_x)


def test_anchor_detect_eval_without_strides_fails_clearly():
    head = AnchorDetect(80, V5_ANCHORS, (8, 8, 8)).eval()
    with pytest.raises(RuntimeError, match="no strides"):
        head([torch.rand(1, 8, 4, 4)] * 3)


def test_anchor_head_convention_substitutes_anchors_and_appends_widths():
    conv = get_block("AnchorDetect").convention
    r = conv.resolve(LayerContext(ch_in=[128, 256, 512], args=[80, "anchors"], extra={"anchors": 3}))
    assert r.args == [80, [[0, 1, 2, 3, 4, 5]] * 3, [128, 256, 512]] and r.c_out is None


def test_ddetect_params_equal_gelan_c_head():
    head = DDetect(80, (256, 512, 512))
    assert nparams(head) == REF["yolov9_repo/gelan-c"]["layer_params"][-1] == 5552320
    assert head.cv2[0][1].conv.groups == 4 and head.cv2[0][2].groups == 4
    assert head.cv2[0][0].conv.out_channels == 64  # make_divisible(max(256 // 4, 64, 16), 4)
    assert head.cv3[0][0].conv.out_channels == 256  # max(256, min(80 * 2, 128))


def test_dual_ddetect_params_equal_yolov9_c_head_and_seed_table():
    ch = (512, 512, 512, 256, 512, 512)
    assert nparams(DualDDetect(80, ch)) == REF["yolov9_repo/yolov9-c"]["layer_params"][-1] == 21725312
    # seed article 002 prints the same head built by the repository at nc=1
    assert nparams(DualDDetect(1, ch)) == 21542822
    head = DualDDetect(1, ch)
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert nparams(head) - trainable == 32  # the two DFL projections are frozen


def test_triple_ddetect_params_equal_yolov9_cf_head():
    assert nparams(TripleDDetect(80, (512, 512, 512, 256, 512, 512, 256, 512, 512))) == 27277632


def test_dual_ddetect_outputs_per_branch():
    torch.manual_seed(0)
    head = DualDDetect(3, (16, 16, 8, 8))
    feats = [torch.rand(2, 16, 8, 6), torch.rand(2, 16, 4, 3), torch.rand(2, 8, 8, 6), torch.rand(2, 8, 4, 3)]
    d1, d2 = head([f.clone() for f in feats])
    assert [tuple(t.shape) for t in d1] == [(2, 67, 8, 6), (2, 67, 4, 3)]
    assert head.stride_maps([d1, d2]) is d1
    head.stride = torch.tensor([8.0, 16.0])
    head.eval()
    (y1, y2), _ = head(feats)
    assert y1.shape == y2.shape == (2, 4 + 3, 8 * 6 + 4 * 3)


def test_cblinear_splits_into_listed_widths_unscaled():
    conv = get_block("CBLinear").convention
    r = conv.resolve(LayerContext(ch_in=[512], args=[[256, 512, 512]], width=0.25))
    assert r.args == [512, [256, 512, 512]] and r.c_out == [256, 512, 512]
    m = CBLinear(512, [256, 512, 512])
    assert nparams(m) == REF["yolov9_repo/yolov9-c"]["layer_params"][25] == 656640
    outs = m(torch.rand(1, 512, 4, 5))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 4, 5), (1, 512, 4, 5), (1, 512, 4, 5)]


def test_cbfuse_resizes_picked_pieces_and_sums_into_last_input():
    conv = get_block("CBFuse").convention
    r = conv.resolve(LayerContext(ch_in=[[2, 3], [2, 3, 4], 3], args=[[1, 1]]))
    assert r.c_out == 3 and r.args == [[1, 1]]
    a = (torch.zeros(1, 2, 2, 2), torch.ones(1, 3, 2, 2))
    b = (torch.zeros(1, 2, 1, 1), torch.full((1, 3, 1, 1), 2.0), torch.zeros(1, 4, 1, 1))
    target = torch.full((1, 3, 4, 4), 10.0)
    out = CBFuse([1, 1])([a, b, target])
    assert out.shape == (1, 3, 4, 4) and torch.all(out == 13.0)
    with pytest.raises(ValueError, match="2 routed inputs for 1 indices"):
        CBFuse([0])([a, b, target])


def test_silence_is_identity_and_keeps_width():
    x = torch.rand(1, 3, 4, 4)
    assert Silence()(x) is x
    r = get_block("Silence").convention.resolve(LayerContext(ch_in=[3], args=[]))
    assert r.c_out == 3 and r.args == []
