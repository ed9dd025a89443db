"""The anchor-based ``Detect`` head of the YOLOv5 repository (ultralytics/yolov5, v6.0-v7.0).

Its YAMLs name it ``Detect`` like ultralytics' anchor-free head; the yolov5-repo dialect
renames it to ``AnchorDetect`` so both live in one registry. Per level it is a single
``nn.Conv2d(c, na * (nc + 5), 1)`` with bias; the anchors come from the YAML's top-level
``anchors`` (a list of ``[w, h, w, h, ...]`` per level, or an int = anchors per level).
Attribute names (``m``, ``anchors``) follow the repository so its checkpoints load.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.registry import register_block

_SOURCE = "YOLOv5 repository (ultralytics/yolov5 v6.0-v7.0), models/yolo.py"


def expand_anchors(anchors: int | list, nl: int) -> list[list[float]]:
    """The repository's rule: an int ``a`` means ``a`` placeholder anchors on each of ``nl`` levels."""
    if isinstance(anchors, bool) or not isinstance(anchors, (int, list, tuple)):
        raise ValueError(f"anchors must be an int or a list of per-level lists, got {anchors!r}")
    if isinstance(anchors, int):
        return [list(range(anchors * 2))] * nl
    return [list(level) for level in anchors]


def _anchor_head(ctx: LayerContext) -> Resolved:
    args = list(ctx.args)
    if len(args) < 2:
        raise ValueError("anchor Detect needs args [nc, anchors]")
    if isinstance(args[1], str):  # the name `anchors`, when the builder left it unsubstituted
        if "anchors" not in ctx.extra:
            raise ValueError(f"anchor Detect: {args[1]!r} is not defined (no top-level 'anchors' in the YAML)")
        args[1] = ctx.extra["anchors"]
    args[1] = expand_anchors(args[1], len(ctx.ch_in))
    return Resolved([*args, list(ctx.ch_in)], None, repeats=1)


ANCHOR_HEAD = register_convention(Convention(
    "anchor_head",
    "YOLOv5 anchor head: args [nc, anchors] (anchors: per-level lists or an int per level), input widths appended",
    _anchor_head,
    lambda c1, rest: [*(rest if rest is not None else [80, 3]), [c1]],
))


@register_block(ANCHOR_HEAD, family="head", source=_SOURCE, aliases=("YOLOv5Detect",))
class AnchorDetect(nn.Module):
    """YOLOv5 anchor-based head: one 1x1 conv (with bias) per level, na * (nc + 5) outputs."""

    dynamic = False
    export = False
    cls_prior_offset = 0.99999  # class prior log(0.6 / (nc - offset)); YOLOv7's heads use 0.99

    def __init__(self, nc: int = 80, anchors: list | int = 3, ch: tuple[int, ...] = (), inplace: bool = True):
        super().__init__()
        anchors = expand_anchors(anchors, len(ch))
        if len(anchors) != len(ch):
            raise ValueError(f"anchor Detect: {len(anchors)} anchor levels for {len(ch)} inputs")
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))  # pixels until strided
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace
        self._stride = torch.zeros(self.nl)  # a tensor, so model builders recognise the head
        self._bound = False

    @property
    def stride(self) -> torch.Tensor:
        return self._stride

    @stride.setter
    def stride(self, value) -> None:
        """The first positive strides bind the head, as the repository's DetectionModel does once:
        anchor order checked against the strides, anchors converted to grid units, prior biases."""
        value = torch.as_tensor(value, dtype=torch.float32, device=self.anchors.device).flatten()[: self.nl]
        self._stride = value
        if self._bound or len(value) != self.nl or not bool((value > 0).all()):
            return
        self._bound = True
        area = self.anchors.prod(-1).mean(-1).view(-1)
        if (area[-1] - area[0]).sign() != (value[-1] - value[0]).sign():
            self.anchors[:] = self.anchors.flip(0)
        self.anchors /= value.view(-1, 1, 1)
        self.bias_init()

    def stride_maps(self, out) -> list[torch.Tensor]:
        """The raw per-level maps in a training-mode output; their sizes give the strides."""
        return [o.permute(0, 1, 4, 2, 3).flatten(1, 2) for o in out]

    def bias_init(self) -> None:
        """Objectness and class priors (8 objects per 640 image, 0.6 class frequency), once per stride binding."""
        for conv, s in zip(self.m, self.stride):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / float(s)) ** 2)
            b.data[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - self.cls_prior_offset))

    def project(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Level i's raw output map (YOLOv7's IDetect wraps the conv in implicit layers)."""
        return self.m[i](x)

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        z = []
        for i in range(self.nl):
            x[i] = self.project(i, x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if not self._bound:
                    raise RuntimeError("anchor Detect has no strides: build it inside a model (or set .stride)")
                if self.dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                nm = self.no - self.nc - 5  # a segment head's mask coefficients stay raw, as the repository's
                if nm:
                    xy, wh, conf, mask = x[i].split((2, 2, self.nc + 1, nm), 4)
                    xy, wh, conf = xy.sigmoid(), wh.sigmoid(), conf.sigmoid()
                else:
                    xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]
                wh = (wh * 2) ** 2 * self.anchor_grid[i]
                z.append(torch.cat((xy, wh, conf, mask) if nm else (xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        if self.training:
            return x
        return (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)

    def _make_grid(self, nx: int, ny: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        d, t = self.anchors[i].device, self.anchors[i].dtype
        shape = (1, self.na, ny, nx, 2)
        yv, xv = torch.meshgrid(torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t),
                                indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5  # offset so that xy = 2 * sigmoid - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid

    def _apply(self, fn, *args, **kwargs):
        self = super()._apply(fn, *args, **kwargs)
        self._stride = fn(self._stride)
        self.grid = [fn(g) for g in self.grid]
        self.anchor_grid = [fn(g) for g in self.anchor_grid]
        return self


# --- the repository's own versions of modules ultralytics also names -------------------------
# The yolov5-repo dialect renames Bottleneck, SPP, C3TR and Segment to these (ultralytics'
# Bottleneck is 3x3 + 3x3; the repository's is 1x1 + 3x3: hub/yolov3.yaml has 61,949,149
# parameters with it, 97,092,829 with ultralytics').

from typing import ClassVar  # noqa: E402

from blocks.conv import Conv  # noqa: E402
from blocks.csp import C3  # noqa: E402


@register_block("c1_c2", source=_SOURCE, name="Bottleneck_yolov5repo")
class BottleneckRepo(nn.Module):
    """1x1 then 3x3 (grouped) conv, residual when c1 == c2 (YOLOv5/YOLOv7 repositories)."""

    conv: ClassVar[type] = Conv

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = self.conv(c1, c_, 1, 1)
        self.cv2 = self.conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register_block("c1_c2", source=_SOURCE, name="SPP_yolov5repo")
class SPPRepo(nn.Module):
    """SPP: a 1x1 to c1/2, max-pools (5, 9, 13) concatenated with it, a 1x1 to c2."""

    conv: ClassVar[type] = Conv

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = self.conv(c1, c_, 1, 1)
        self.cv2 = self.conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class TransformerLayer(nn.Module):
    """q/k/v projections, multi-head attention and a 2-layer MLP, residual, no LayerNorm."""

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Tokens of a map (H*W, B, C) + a learned linear position term, through num_layers layers."""

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int):
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        p = x.flatten(2).permute(2, 0, 1)
        return self.tr(p + self.linear(p)).permute(1, 2, 0).reshape(b, self.c2, h, w)


@register_block("c1_c2_n", source=_SOURCE, name="C3TR_yolov5repo", family="attention")
class C3TRRepo(C3):
    """C3 whose repeated part is a 4-head TransformerBlock of n layers (hub/yolov5s-transformer)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)


class Proto(nn.Module):
    """Mask prototypes: 3x3 conv, 2x nearest upsample, 3x3 conv, 1x1 to nm (YOLOv5/YOLOv9 repositories)."""

    def __init__(self, c1: int, c_: int = 256, c2: int = 32):
        super().__init__()
        self.cv1 = Conv(c1, c_, k=3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.cv2 = Conv(c_, c_, k=3)
        self.cv3 = Conv(c_, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


def scaled_protos(ctx: LayerContext, index: int) -> list:
    """Both repositories width-scale one argument of their segment heads (``args[index]``)."""
    from blocks.conventions import make_divisible

    args = list(ctx.args)
    if len(args) > index:
        args[index] = make_divisible(args[index] * ctx.width, 8)
    ctx.args[:] = args
    return args


def _anchor_segment(ctx: LayerContext) -> Resolved:
    scaled_protos(ctx, 3)  # [nc, anchors, nm, npr]: npr scaled
    return _anchor_head(ctx)


ANCHOR_SEGMENT = register_convention(Convention(
    "anchor_segment",
    "YOLOv5 anchor segment head: args [nc, anchors, nm, npr], npr width-scaled, input widths appended",
    _anchor_segment,
    lambda c1, rest: [*(rest if rest is not None else [80, 3, 32, 256]), [c1]],
))


@register_block(ANCHOR_SEGMENT, family="head", source=_SOURCE, name="Segment_yolov5repo")
class SegmentRepo(AnchorDetect):
    """Anchor head with nm mask coefficients per anchor and a Proto on the first level."""

    def __init__(self, nc: int = 80, anchors: list | int = 3, nm: int = 32, npr: int = 256,
                 ch: tuple[int, ...] = (), inplace: bool = True):
        super().__init__(nc, anchors, ch, inplace)
        self.nm, self.npr = nm, npr
        self.no = 5 + nc + nm
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.proto = Proto(ch[0], npr, nm)

    def forward(self, x: list[torch.Tensor]):
        p = self.proto(x[0])
        out = super().forward(x)
        return (out, p) if self.training else (out[0], p) if self.export else (out[0], p, out[1])

    def bias_init(self) -> None:
        for conv, s in zip(self.m, self.stride):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / float(s)) ** 2)
            b.data[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - self.cls_prior_offset))
