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
            b.data[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if not self._bound:
                    raise RuntimeError("anchor Detect has no strides: build it inside a model (or set .stride)")
                if self.dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]
                wh = (wh * 2) ** 2 * self.anchor_grid[i]
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
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
