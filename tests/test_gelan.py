"""YOLOv9 GELAN family: parameter counts of the YOLOv9-c layers (as the YOLOv9 repository
prints them) and shapes, including odd sizes for the down-sampling blocks."""

from __future__ import annotations

import pytest
import torch

from blocks.gelan import ADown, AConv, ELAN1, RepNCSPELAN4, SPPELAN


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("module, expected", [
    # yolov9-c.yaml layers: RepNCSPELAN4 [256, 128, 64, 1] after 128 channels, etc.
    (lambda: RepNCSPELAN4(128, 256, 128, 64, 1), 212_864),
    (lambda: RepNCSPELAN4(256, 512, 256, 128, 1), 847_616),
    (lambda: RepNCSPELAN4(512, 512, 512, 256, 1), 2_857_472),
    (lambda: ADown(256, 256), 164_352),
    (lambda: ADown(512, 512), 656_384),
    (lambda: SPPELAN(512, 512, 256), 656_896),
])
def test_yolov9c_layer_params(module, expected):
    assert n_params(module()) == expected


@pytest.mark.parametrize("h, w, out", [((20, 20), None, (10, 10)), ((21, 15), None, (10, 7)), ((2, 9), None, (1, 4))])
def test_downsamplers_output_size(h, w, out):
    # The 2x2 stride-1 average pool first trims one row/column, so an odd side rounds
    # down: out = (side - 2) // 2 + 1, exactly as in the YOLOv9 repository.
    x = torch.randn(2, 16, *h)
    for m in (ADown(16, 32), AConv(16, 32)):
        assert m(x).shape == (2, 32, *out)


def test_elan_blocks_keep_size():
    x = torch.randn(1, 32, 9, 13)
    assert RepNCSPELAN4(32, 48, 32, 16, 2)(x).shape == (1, 48, 9, 13)
    assert ELAN1(32, 48, 32, 16)(x).shape == (1, 48, 9, 13)
    assert SPPELAN(32, 40, 16)(x).shape == (1, 40, 9, 13)
