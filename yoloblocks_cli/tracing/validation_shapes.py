"""The shapes a sweep checks: what ultralytics' validation loader feeds, and a band of block sizes.

Why the loader's own rule: with ``rect=True`` (every validation run) ultralytics sorts the
images by aspect ratio and gives each batch one shape (``set_rectangle``)::

    shape = ceil(ratio * imgsz / stride + pad) * stride      (pad = 0.5 outside training)

where ``ratio`` is (h/w, 1) for a landscape batch and (1, w/h) for a portrait one. The
longer side is therefore always ``ceil(imgsz / stride + 0.5) * stride`` (672 at 640 and
stride 32) and the shorter any multiple of the stride up to it: 21 heights x 2 orientations
- 1 square = 41 shapes at 640 for a P5 model, 21 at stride 64 (P6). 640x640 is never one
of them; it is the training size, checked beside them with half and double.

A worked example: imgsz 640, stride 32, a 4:3 landscape batch (h/w = 0.75):
``ceil(0.75 * 20 + 0.5) * 32 = 16 * 32 = 512`` by ``ceil(20 + 0.5) * 32 = 672``: 512x672.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from yoloblocks_cli.loading.spec import Shape


def validation_side(ratio: float, imgsz: int, stride: int, pad: float = 0.5) -> int:
    """One side of a validation batch shape, by ultralytics' ``set_rectangle`` rule."""
    return int(math.ceil(ratio * imgsz / stride + pad)) * stride


def validation_shapes(imgsz: int = 640, stride: int = 32, pad: float = 0.5) -> list[tuple[int, int]]:
    """Every (H, W) the rectangular validation loader can feed at ``imgsz``, square first,
    then landscape (H < W) and portrait (H > W) by growing short side.

    The short side takes every value the rule can give for a ratio in (0, 1]: the multiples
    of ``stride`` from ``ceil(pad) * stride`` up to the long side.
    """
    long = validation_side(1.0, imgsz, stride, pad)
    # ratio * imgsz / stride + pad runs over (pad, imgsz / stride + pad]: its ceiling takes
    # every integer from floor(pad) + 1 to the long side's.
    shorts = [k * stride for k in range(math.floor(pad) + 1, long // stride + 1)]
    out = [(long, long)]
    out += [(s, long) for s in shorts if s != long]
    out += [(long, s) for s in shorts if s != long]
    return out


@dataclass(frozen=True)
class SweptShape:
    """A configuration of a derived sweep and why it is there (``validation``, ``train``,
    ``half``, ``double``, ``band``, ``1xN``...), for grouping failures by origin."""

    shape: Shape
    origin: str


def model_shapes(imgsz: int, stride: int, channels: int = 3, batches: tuple[int, ...] = (1, 2)) -> list[SweptShape]:
    """The default model sweep: every validation shape at ``imgsz``, the training size
    itself (rounded up to the stride), half and double, each at every batch size."""
    train = max(1, math.ceil(imgsz / stride)) * stride
    half = max(1, round(train / stride / 2)) * stride
    hw: list[tuple[tuple[int, int], str]] = [((h, w), "validation") for h, w in validation_shapes(imgsz, stride)]
    hw += [((train, train), "train"), ((half, half), "half"), ((2 * train, 2 * train), "double")]
    return _at_batches(hw, channels, batches)


BAND = 2  # the block sweep's half-width: 5 x 5 sizes around the base


def block_shapes(base: Shape, batches: tuple[int, ...] = (1, 2)) -> list[SweptShape]:
    """The default block sweep around ``CxHxW``: every H x W within +-2 of the base (so odd
    and even sizes, both orientations, sizes that are not a multiple of anything), the
    3:4 rectangles both ways (W or H at 3/4), 1xN and Nx1, twice the size, at the first
    batch size; the base and the shapes outside the band at the others. 30 + 6 = 36
    configurations at 20x20.

    Why +-2 and not a wider band: on meta tensors a small block costs more than on real
    ones (torch's meta kernels for element-wise ops are Python), so the band is sized to
    keep `yb trace BLOCK` within twice `yb inspect BLOCK`; the bugs it looks for strike at
    any H != W, any odd size, any H x W != the built size, which +-2 already holds."""
    _, c, h, w = base.dims
    hw: list[tuple[tuple[int, int], str]] = [((h, w), "base")]
    for hh in _band(h):
        for ww in _band(w):
            hw.append(((hh, ww), "band"))
    hw += [((h, max(1, round(w * 3 / 4))), "3:4"), ((max(1, round(h * 3 / 4)), w), "3:4")]
    hw += [((1, w), "1xN"), ((h, 1), "Nx1"), ((2 * h, 2 * w), "double")]
    first = _at_batches(hw, c, batches[:1])
    # Larger batches at the base and the shapes outside the band: a batch folded into the
    # tokens fails at any size, and the band at batch 2 would double the sweep's cost.
    wide = [x for x in hw if x[1] != "band"]
    return first + [s for s in _at_batches(wide, c, batches[1:]) if s.shape not in {f.shape for f in first}]


def _band(n: int) -> range:
    return range(max(1, n - BAND), n + BAND + 1)


def _at_batches(hw: list[tuple[tuple[int, int], str]], channels: int, batches: tuple[int, ...]) -> list[SweptShape]:
    out: list[SweptShape] = []
    seen: set[Shape] = set()
    for b in batches:
        for (h, w), origin in hw:
            s = Shape(b, channels, h, w)
            if s not in seen:
                seen.add(s)
                out.append(SweptShape(s, origin))
    return out


def numeric_shapes(swept: list[SweptShape], base: Shape, *, model: bool) -> tuple[list[Shape], list[Shape]]:
    """(every probe, eval-mode probes only): the few configurations of the numeric phase.

    1. one rectangular shape at batch 2 (the batch probe needs two samples, the train step
       BatchNorm two values): for a model the 16:9 validation batch (384x672 at 640: the
       commonest video aspect, and cheaper than 4:3 for the train step that dominates the
       numeric phase), for a block the base size with W at 3/4;
    2. the base (training) size at batch 1, for the eval-mode value probes only (finite,
       channels-last): a second, square, layout for the numbers, without a second train step.

    Both are taken from the sweep when it has them.
    """
    shapes = [s.shape for s in swept]
    batch = 2 if any(s.batch >= 2 for s in shapes) else 1
    if model:
        rect = [s.shape for s in swept if s.origin == "validation" and s.shape.height < s.shape.width
                and s.shape.batch == batch]
        picks = [min(rect, key=lambda s: abs(s.height / s.width - 9 / 16))] if rect else []
    else:
        r = max(1, round(base.width * 3 / 4))
        cand = Shape(batch, base.channels, base.height, r)
        picks = [cand if cand in shapes else next(
            (s.shape for s in swept if s.shape.height != s.shape.width and s.shape.batch == batch), cand)]
    b1 = base.with_batch(1)
    second = b1 if b1 in shapes or not shapes else base
    return picks, [second] if second not in picks else []
