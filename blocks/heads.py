"""Anchor-free detection heads of ultralytics YOLOv8 / YOLO11 / YOLOv10 (Detect, v10Detect, DFL).

The head's YAML rule is its own Convention: the builder appends ``reg_max``, ``end2end``
(model-level YAML keys) and the input widths, and passes the model's ``legacy`` fact
(v3/v5/v8/v9 layout vs. the depth-wise classification branch of YOLO11) as a keyword,
where ultralytics sets a class attribute.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from blocks.conv import Conv
from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.ghost import DWConv
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/head.py"


def _detect(ctx: LayerContext) -> Resolved:
    yaml_dict = ctx.extra.get("yaml", {})
    state = ctx.extra.get("state", {})
    args = [*ctx.args, yaml_dict.get("reg_max", 16), yaml_dict.get("end2end"), list(ctx.ch_in)]
    return Resolved(args, None, kwargs={"legacy": state.get("legacy_head", True)})


DETECT_RULE = register_convention(Convention(
    "detect",
    "anchor-free Detect head: args [nc] become (nc, reg_max, end2end, [input widths]); the layout "
    "(legacy or depth-wise class branch) follows the model's blocks",
    _detect, lambda c1, rest: [*(rest or [80]), 16, None, [c1]],
))


@register_block("passthrough", family="head", source=_SOURCE)
class DFL(nn.Module):
    """Distribution focal loss integral: expectation over reg_max bins, a frozen 1x1 conv."""

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5):
    """Cell-centre anchor points and their strides for every level, concatenated."""
    points, stride_list = [], []
    for i, f in enumerate(feats):
        h, w = f.shape[-2:]
        sx = torch.arange(w, device=f.device, dtype=f.dtype) + offset
        sy = torch.arange(h, device=f.device, dtype=f.dtype) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(strides[i]), dtype=f.dtype, device=f.device))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: torch.Tensor, anchors: torch.Tensor, xywh: bool = True, dim: int = 1) -> torch.Tensor:
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchors - lt, anchors + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


@register_block(DETECT_RULE, family="head", source=_SOURCE)
class Detect(nn.Module):
    """Decoupled anchor-free head: box branch (4*reg_max DFL bins) and class branch per level.

    Train mode returns the raw per-level maps; eval mode returns decoded boxes and class
    scores, shape (B, 4 + nc, anchors), or (B, max_det, 6) for an end-to-end head.
    """

    max_det = 300

    def __init__(self, nc: int = 80, reg_max: int = 16, end2end: bool | None = False, ch: list[int] | tuple = (),
                 legacy: bool = False):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        self.no = nc + reg_max * 4
        self.legacy = legacy
        self.stride = torch.zeros(self.nl)  # set by the model builder from a dry run
        c2, c3 = max((16, ch[0] // 4, reg_max * 4)), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        if legacy:
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        else:
            self.cv3 = nn.ModuleList(
                nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                              nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                              nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        if end2end:
            self.one2one_cv2 = copy.deepcopy(self.cv2)
            self.one2one_cv3 = copy.deepcopy(self.cv3)

    @property
    def end2end(self) -> bool:
        return getattr(self, "one2one_cv2", None) is not None

    def _heads(self, x: list[torch.Tensor], box: nn.ModuleList, cls: nn.ModuleList) -> list[torch.Tensor]:
        return [torch.cat((box[i](x[i]), cls[i](x[i])), 1) for i in range(self.nl)]

    def forward(self, x: list[torch.Tensor]):
        one2many = self._heads(x, self.cv2, self.cv3)
        one2one = None
        if self.end2end:
            xd = [xi.detach() for xi in x] if self.training else x
            one2one = self._heads(xd, self.one2one_cv2, self.one2one_cv3)
        if self.training:
            return one2many if one2one is None else {"one2many": one2many, "one2one": one2one}
        y = self._decode(one2one if one2one is not None else one2many)
        return self._topk(y.permute(0, 2, 1)) if one2one is not None else y

    def _decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        b = maps[0].shape[0]
        flat = torch.cat([m.view(b, self.no, -1) for m in maps], 2)
        box, cls = flat.split((self.reg_max * 4, self.nc), 1)
        anchors, strides = (a.transpose(0, 1) for a in make_anchors(maps, self.stride, 0.5))
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), xywh=not self.end2end, dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    def _topk(self, preds: torch.Tensor) -> torch.Tensor:
        boxes, scores = preds.split((4, self.nc), -1)
        k = min(self.max_det, preds.shape[1])
        best, index = scores.amax(-1).topk(k, dim=1)
        labels = scores.gather(1, index[..., None].expand(-1, -1, self.nc)).argmax(-1)
        return torch.cat((boxes.gather(1, index[..., None].expand(-1, -1, 4)), best[..., None],
                          labels[..., None].to(preds.dtype)), -1)


@register_block("head", family="head", source=_SOURCE + " (YOLOv10)")
class v10Detect(Detect):
    """YOLOv10's NMS-free head: one-to-many and one-to-one branches, light class branch."""

    def __init__(self, nc: int = 80, ch: list[int] | tuple = ()):
        super().__init__(nc, end2end=True, ch=ch)
        c3 = max(ch[0], min(self.nc, 100))
        self.cv3 = nn.ModuleList(
            nn.Sequential(nn.Sequential(Conv(x, x, 3, g=x), Conv(x, c3, 1)),
                          nn.Sequential(Conv(c3, c3, 3, g=c3), Conv(c3, c3, 1)),
                          nn.Conv2d(c3, self.nc, 1)) for x in ch)
        self.one2one_cv3 = copy.deepcopy(self.cv3)
