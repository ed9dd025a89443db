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


def class_branch(ch: list[int] | tuple, c3: int, c_out: int, legacy: bool) -> nn.ModuleList:
    """Per level: two 3x3 Convs then a 1x1 to ``c_out`` (legacy: v3/v5/v8/v9), or YOLO11's depth-wise
    pairs (DWConv 3x3 + Conv 1x1, twice) before the 1x1."""
    if legacy:
        return nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, c_out, 1)) for x in ch)
    return nn.ModuleList(
        nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                      nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                      nn.Conv2d(c3, c_out, 1)) for x in ch)


@register_block(DETECT_RULE, family="head", source=_SOURCE)
class Detect(nn.Module):
    """Decoupled anchor-free head: box branch (4*reg_max DFL bins) and class branch per level.

    Train mode returns the raw predictions (a dict of ``boxes``, ``scores``, task parts and ``feats``;
    ``{"one2many": ..., "one2one": ...}`` for an end-to-end head). Eval mode returns what
    ultralytics' head returns first: decoded boxes, class scores and task channels, shape
    (B, 4 + nc + extra, anchors). A freshly built end-to-end head decodes its one-to-many branch,
    as ultralytics' does until ``end2end`` is switched on; then it returns the top ``max_det``
    detections, (B, max_det, 6 + extra).

    Subclasses add task branches by naming them in ``extra_parts`` (attribute -> prediction key)
    and decoding them in ``_decode_extra``.
    """

    max_det = 300
    extra_parts: dict[str, str] = {}  # branch attribute (cv4 ...) -> prediction key, for the task heads

    def __init__(self, nc: int = 80, reg_max: int = 16, end2end: bool | None = False, ch: list[int] | tuple = (),
                 legacy: bool = False):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        self.no = nc + reg_max * 4
        self.legacy = legacy
        self.use_one2one = False  # ultralytics' ``end2end`` switch: off for a fresh build
        self.stride = torch.zeros(self.nl)  # set by the model builder from a dry run
        c2, c3 = max((16, ch[0] // 4, reg_max * 4)), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        self.cv3 = class_branch(ch, c3, nc, legacy)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.has_one2one = bool(end2end)
        if end2end:
            self.one2one_cv2 = copy.deepcopy(self.cv2)
            self.one2one_cv3 = copy.deepcopy(self.cv3)

    def _copy_one2one(self, *names: str) -> None:
        """Give each task branch its one-to-one twin (subclasses call this after building them)."""
        if self.has_one2one:
            for name in names:
                setattr(self, f"one2one_{name}", copy.deepcopy(getattr(self, name)))

    @property
    def end2end(self) -> bool:
        """Whether inference reads the one-to-one branch (switched on, or the only one left after fusing)."""
        return getattr(self, "one2one_cv2", None) is not None and (self.use_one2one or self.cv2 is None)

    def _branch(self, prefix: str, name: str) -> nn.Module | None:
        return getattr(self, prefix + name, None)

    def _flat(self, branch: nn.ModuleList, x: list[torch.Tensor]) -> torch.Tensor:
        """Every level through its branch, (B, C, H*W) each, joined along the anchors."""
        return torch.cat([branch[i](x[i]).flatten(2) for i in range(self.nl)], -1)

    def _extra(self, x: list[torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """Task channels per anchor (mask coefficients, keypoints, angles): ``extra_parts`` branches, flattened."""
        out = {}
        for attr, key in self.extra_parts.items():
            branch = self._branch(prefix, attr)
            if branch is not None:
                out[key] = self._flat(branch, x)
        return out

    def _predict(self, x: list[torch.Tensor], prefix: str, text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        box, cls = self._branch(prefix, "cv2"), self._branch(prefix, "cv3")
        if box is None or cls is None:  # fused away
            return {}
        preds = {"boxes": self._flat(box, x), "scores": self._scores(x, prefix, text)}
        preds.update(self._extra(x, prefix))
        preds["feats"] = x
        return preds

    def _scores(self, x: list[torch.Tensor], prefix: str, text: torch.Tensor | None) -> torch.Tensor:
        """Class logits per anchor; the open-vocabulary heads compare against class embeddings instead."""
        return self._flat(self._branch(prefix, "cv3"), x)

    def forward(self, x: list[torch.Tensor], text: torch.Tensor | None = None):
        preds = self._predict(x, "", text)
        if self.has_one2one and getattr(self, "one2one_cv2", None) is not None:
            xd = [xi.detach() for xi in x] if self.training else x
            preds = {"one2many": preds, "one2one": self._predict(xd, "one2one_", text)}
        if self.training:
            return preds
        chosen = preds["one2one" if self.end2end else "one2many"] if "one2one" in preds else preds
        y = self._decode(chosen)
        return self._topk(y.permute(0, 2, 1)) if self.end2end else y

    def _decode(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        anchors, strides = (a.transpose(0, 1) for a in make_anchors(p["feats"], self.stride, 0.5))
        dbox = self._boxes(self.dfl(p["boxes"]), anchors.unsqueeze(0), p) * strides
        return torch.cat((dbox, p["scores"].sigmoid(), *self._decode_extra(p, anchors, strides)), 1)

    def _boxes(self, dist: torch.Tensor, anchors: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return dist2bbox(dist, anchors, xywh=not self.end2end, dim=1)

    def _decode_extra(self, p: dict[str, torch.Tensor], anchors: torch.Tensor,
                      strides: torch.Tensor) -> list[torch.Tensor]:
        return []

    def _topk(self, preds: torch.Tensor) -> torch.Tensor:
        """Top ``max_det`` anchors by best class score: [x1, y1, x2, y2, score, class, task channels...]."""
        boxes, scores, extra = preds.split((4, self.nc, preds.shape[-1] - 4 - self.nc), -1)
        k = min(self.max_det, preds.shape[1])
        best, index = scores.amax(-1).topk(k, dim=1)
        labels = scores.gather(1, index[..., None].expand(-1, -1, self.nc)).argmax(-1)

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))

        return torch.cat((take(boxes), best[..., None], labels[..., None].to(preds.dtype), take(extra)), -1)

    def fuse_deploy(self) -> None:
        """Drop the branch inference does not read (ultralytics' ``Detect.fuse``)."""
        end2end = self.end2end
        for name in tuple(self._modules):
            if name.startswith("one2one_"):
                setattr(self, name[8:] if end2end else name, None)


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
