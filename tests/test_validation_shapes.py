"""The sweep's shapes: ultralytics' rectangular validation rule, the block band, the numeric picks."""

from __future__ import annotations

import math

import pytest

from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.validation_shapes import (block_shapes, model_shapes, numeric_shapes, validation_shapes,
                                                      validation_side)


def loader_shapes(imgsz: int, stride: int, pad: float = 0.5) -> set[tuple[int, int]]:
    """ultralytics' set_rectangle, restated over a fine grid of aspect ratios (h/w)."""
    out = set()
    for ar in [i / 1000 for i in range(1, 1001)] + [1000 / i for i in range(1, 1001)]:  # h/w, both orientations
        shape = [ar, 1] if ar < 1 else [1, 1 / ar] if ar > 1 else [1, 1]
        out.add(tuple(int(math.ceil(v * imgsz / stride + pad)) * stride for v in shape))
    return out


@pytest.mark.parametrize("imgsz, stride, count", [(640, 32, 41), (640, 64, 21), (1280, 64, 41), (320, 32, 21)])
def test_validation_shapes_are_what_the_loader_feeds(imgsz, stride, count):
    shapes = validation_shapes(imgsz, stride)
    assert len(shapes) == len(set(shapes)) == count
    assert set(shapes) == loader_shapes(imgsz, stride)


def test_validation_shapes_at_640():
    shapes = validation_shapes(640, 32)
    assert shapes[0] == (672, 672)
    assert (512, 672) in shapes and (672, 512) in shapes and (32, 672) in shapes
    assert (640, 640) not in shapes and (640, 480) not in shapes  # never fed by the loader
    assert validation_side(0.75, 640, 32) == 512


def test_default_model_sweep_counts_and_numeric_picks():
    swept = model_shapes(640, 32)
    assert len(swept) == 88  # (41 validation + 640, 320, 1280) x batch 1 and 2
    assert {s.origin for s in swept} == {"validation", "train", "half", "double"}
    assert Shape(2, 3, 1280, 1280) in [s.shape for s in swept]
    assert len(model_shapes(640, 64)) == 2 * (21 + 3)
    assert numeric_shapes(swept, Shape(1, 3, 640, 640), model=True) == (
        [Shape(2, 3, 384, 672)], [Shape(1, 3, 640, 640)])


def test_default_block_sweep_band_odd_and_1xn():
    swept = [s.shape for s in block_shapes(Shape(1, 64, 20, 20))]
    hw = {(s.height, s.width) for s in swept}
    assert {(h, w) for h in range(18, 23) for w in range(18, 23)} <= hw  # every H x W in the band
    assert hw - {(h, w) for h in range(18, 23) for w in range(18, 23)} == {(20, 15), (15, 20), (1, 20), (20, 1),
                                                                          (40, 40)}
    assert len(swept) == 30 + 6
    assert {(s.height, s.width) for s in swept if s.batch == 2} == {(20, 20), (20, 15), (15, 20), (1, 20), (20, 1),
                                                                   (40, 40)}
    assert numeric_shapes(block_shapes(Shape(1, 64, 20, 20)), Shape(1, 64, 20, 20), model=False) == (
        [Shape(2, 64, 20, 15)], [Shape(1, 64, 20, 20)])
