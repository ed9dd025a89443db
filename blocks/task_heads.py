"""The task heads of ultralytics 8.4 beside Detect: instance masks, keypoints, oriented boxes, classes.

Each head is a :class:`~blocks.heads.Detect` with one more per-level branch (``cv4``) that the
shared forward flattens and decodes. The YOLO26 variants differ where ultralytics' do:
``Segment26`` fuses all levels into its prototypes and trains a semantic branch, ``Pose26``
predicts keypoint offsets without the 2x scale and trains a RealNVP flow and a sigma branch,
``OBB26`` keeps the raw angle. Training-only parts are dropped by ``fuse_deploy`` exactly as
ultralytics' ``fuse`` drops them, so ``yb profile --fuse`` counts what inference keeps.

YAML rules: Pose/OBB use the Detect rule; Segment's third argument (prototype width) scales with
the model width; Classify's output width is the class count, never scaled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv import Conv
from blocks.conventions import Convention, LayerContext, Resolved, make_divisible, register_convention
from blocks.heads import DETECT_RULE, Detect, dist2bbox
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/head.py"


def _segment(ctx: LayerContext) -> Resolved:
    res = DETECT_RULE.resolve(ctx)
    if len(res.args) > 5:  # [nc, nm, npr, reg_max, end2end, ch]: npr is a width
        res.args[2] = make_divisible(min(res.args[2], ctx.max_channels) * ctx.width, 8)
    return res


SEGMENT_RULE = register_convention(Convention(
    "segment",
    "as detect; args [nc, nm, npr]: the prototype width npr scales with the model width",
    _segment, lambda c1, rest: [*(rest or [80, 32, 256]), 16, None, [c1]],
))


def _classify(ctx: LayerContext) -> Resolved:
    c2 = ctx.args[0]
    return Resolved([ctx.c1, c2, *ctx.args[1:]], c2)


CLASSIFY_RULE = register_convention(Convention(
    "classify",
    "c1, c2 where c2 is the class count: args [nc, k, s, ...] become (c1, nc, k, s, ...), never width-scaled",
    _classify, lambda c1, rest: [c1, *(rest if rest is not None else [1000])],
))


# --- prototypes ------------------------------------------------------------------------------


@register_block("c1_c2", family="head", source="ultralytics nn/modules/block.py")
class Proto(nn.Module):
    """Mask prototypes: 3x3 Conv, 2x transposed-conv upsampling, 3x3 Conv, 1x1 Conv to nm maps."""

    def __init__(self, c1: int, c_: int = 256, c2: int = 32):
        super().__init__()
        self.cv1 = Conv(c1, c_, k=3)
        self.upsample = nn.ConvTranspose2d(c_, c_, 2, 2, 0, bias=True)
        self.cv2 = Conv(c_, c_, k=3)
        self.cv3 = Conv(c_, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


class Proto26(Proto):
    """YOLO26 prototypes: coarser levels refined to P3's width, upsampled and summed, then Proto;
    a semantic branch (training only) predicts per-class maps from the same fused features."""

    def __init__(self, ch: tuple | list = (), c_: int = 256, c2: int = 32, nc: int = 80):
        super().__init__(c_, c_, c2)
        self.feat_refine = nn.ModuleList(Conv(x, ch[0], k=1) for x in ch[1:])
        self.feat_fuse = Conv(ch[0], c_, k=3)
        self.semseg = nn.Sequential(Conv(ch[0], c_, k=3), Conv(c_, c_, k=3), nn.Conv2d(c_, nc, 1))

    def forward(self, x: list[torch.Tensor], semantic: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feat = x[0]
        for i, refine in enumerate(self.feat_refine):
            feat = feat + F.interpolate(refine(x[i + 1]), scale_factor=2 ** (i + 1), mode="nearest")
        p = super().forward(self.feat_fuse(feat))
        if self.training and semantic and self.semseg is not None:
            return p, self.semseg(feat)
        return p

    def fuse_deploy(self) -> None:
        """The semantic branch only trains."""
        self.semseg = None


# --- segment -----------------------------------------------------------------------------------


def with_protos(head: nn.Module, out, proto: torch.Tensor):
    """A segment head's result: training predictions carry the prototypes, eval returns (predictions, protos)."""
    if head.training:
        for part in (out.values() if "one2one" in out else [out]):
            part["proto"] = proto
        return out
    return out, proto


class MaskParts:
    """What every instance-segment head adds to its detect head: nm mask coefficients per anchor (one
    branch per level, named by the head: Segment's ``cv4``, YOLOE's ``cv5``) and the prototypes."""

    def _add_masks(self, ch: list[int] | tuple, nc: int, nm: int, npr: int, branch: str) -> None:
        self.nm, self.npr = nm, npr
        self.proto = self._make_proto(ch, nc)
        c = max(ch[0] // 4, nm)
        setattr(self, branch, nn.ModuleList(
            nn.Sequential(Conv(x, c, 3), Conv(c, c, 3), nn.Conv2d(c, nm, 1)) for x in ch))
        self._copy_one2one(branch)

    def _make_proto(self, ch: list[int] | tuple, nc: int) -> nn.Module:
        return Proto(ch[0], self.npr, self.nm)

    def _protos(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.proto(x[0])

    def _decode_extra(self, p: dict[str, torch.Tensor], anchors: torch.Tensor,
                      strides: torch.Tensor) -> list[torch.Tensor]:
        return [p["mask_coefficient"]]


@register_block(SEGMENT_RULE, family="head", source=_SOURCE)
class Segment(MaskParts, Detect):
    """Detect plus nm mask coefficients per anchor (cv4) and prototypes from P3; eval returns (predictions, protos)."""

    extra_parts = {"cv4": "mask_coefficient"}

    def __init__(self, nc: int = 80, nm: int = 32, npr: int = 256, reg_max: int = 16, end2end: bool | None = False,
                 ch: list[int] | tuple = (), legacy: bool = False):
        super().__init__(nc, reg_max, end2end, ch, legacy)
        self._add_masks(ch, nc, nm, npr, "cv4")

    def forward(self, x: list[torch.Tensor]):
        return with_protos(self, super().forward(x), self._protos(x))


@register_block(SEGMENT_RULE, family="head", source=_SOURCE + " (YOLO26)")
class Segment26(Segment):
    """Segment whose prototypes fuse every level (Proto26) and train a semantic branch."""

    def _make_proto(self, ch: list[int] | tuple, nc: int) -> nn.Module:
        return Proto26(ch, self.npr, self.nm, nc)

    def _protos(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.proto(x)

    def fuse_deploy(self) -> None:
        super().fuse_deploy()
        self.proto.fuse_deploy()


# --- pose --------------------------------------------------------------------------------------


@register_block(DETECT_RULE, family="head", source=_SOURCE)
class Pose(Detect):
    """Detect plus kpt_shape[0] x kpt_shape[1] keypoint channels per anchor (cv4), decoded to pixels."""

    extra_parts = {"cv4": "kpts"}

    def __init__(self, nc: int = 80, kpt_shape: tuple | list = (17, 3), reg_max: int = 16,
                 end2end: bool | None = False, ch: list[int] | tuple = (), legacy: bool = False):
        super().__init__(nc, reg_max, end2end, ch, legacy)
        self.kpt_shape = tuple(kpt_shape)
        self.nk = self.kpt_shape[0] * self.kpt_shape[1]
        self._build_kpt_branch(ch)

    def _build_kpt_branch(self, ch: list[int] | tuple) -> None:
        c4 = max(ch[0] // 4, self.nk)
        self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, self.nk, 1)) for x in ch)
        self._copy_one2one("cv4")

    def _decode_extra(self, p: dict[str, torch.Tensor], anchors: torch.Tensor,
                      strides: torch.Tensor) -> list[torch.Tensor]:
        ndim = self.kpt_shape[1]
        y = p["kpts"].clone()
        if ndim == 3:
            y[:, 2::ndim] = y[:, 2::ndim].sigmoid()
        y[:, 0::ndim] = self._kpt_xy(y[:, 0::ndim], anchors[0]) * strides
        y[:, 1::ndim] = self._kpt_xy(y[:, 1::ndim], anchors[1]) * strides
        return [y]

    def _kpt_xy(self, offset: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return offset * 2.0 + (anchor - 0.5)


class RealNVP(nn.Module):
    """Six coupling layers of a 2-D RealNVP flow (Pose26's keypoint-error likelihood; training only)."""

    @staticmethod
    def _mlp(tanh: bool) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2)]
        return nn.Sequential(*layers, nn.Tanh()) if tanh else nn.Sequential(*layers)

    def __init__(self):
        super().__init__()
        self.register_buffer("loc", torch.zeros(2))
        self.register_buffer("cov", torch.eye(2))
        self.register_buffer("mask", torch.tensor([[0, 1], [1, 0]] * 3, dtype=torch.float32))
        self.s = nn.ModuleList(self._mlp(True) for _ in range(len(self.mask)))
        self.t = nn.ModuleList(self._mlp(False) for _ in range(len(self.mask)))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) + log|det J| of the inverse pass, for (N, 2) samples."""
        log_det, z = x.new_zeros(x.shape[0]), x
        for i in reversed(range(len(self.t))):
            keep = self.mask[i]
            z_ = keep * z
            s = self.s[i](z_) * (1 - keep)
            t = self.t[i](z_) * (1 - keep)
            z = (1 - keep) * (z - t) * torch.exp(-s) + z_
            log_det = log_det - s.sum(dim=1)
        return -0.5 * (z ** 2).sum(-1) - math.log(2 * math.pi) + log_det


@register_block(DETECT_RULE, family="head", source=_SOURCE + " (YOLO26)")
class Pose26(Pose):
    """Pose with a shared keypoint trunk (cv4) feeding keypoint (cv4_kpts) and, in training, sigma
    (cv4_sigma) convolutions, plus a RealNVP flow for the loss; offsets are not doubled."""

    outside_forward = {"flow_model": "the keypoint loss (RealNVP likelihood), not in the forward pass"}

    def _build_kpt_branch(self, ch: list[int] | tuple) -> None:
        self.flow_model = RealNVP()
        c4 = max(ch[0] // 4, self.kpt_shape[0] * (self.kpt_shape[1] + 2))
        self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3)) for x in ch)
        self.cv4_kpts = nn.ModuleList(nn.Conv2d(c4, self.nk, 1) for _ in ch)
        self.nk_sigma = self.kpt_shape[0] * 2
        self.cv4_sigma = nn.ModuleList(nn.Conv2d(c4, self.nk_sigma, 1) for _ in ch)
        self._copy_one2one("cv4", "cv4_kpts", "cv4_sigma")

    def _extra(self, x: list[torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        trunk = self._branch(prefix, "cv4")
        if trunk is None:
            return {}
        feats = [trunk[i](x[i]) for i in range(self.nl)]
        out = {"kpts": self._flat(self._branch(prefix, "cv4_kpts"), feats)}
        sigma = self._branch(prefix, "cv4_sigma")
        if self.training and sigma is not None:
            out["kpts_sigma"] = self._flat(sigma, feats)
        return out

    def _kpt_xy(self, offset: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return offset + anchor

    def fuse_deploy(self) -> None:
        super().fuse_deploy()
        self.flow_model = None
        setattr(self, "one2one_cv4_sigma" if self.end2end else "cv4_sigma", None)


# --- oriented boxes ----------------------------------------------------------------------------


def dist2rbox(dist: torch.Tensor, angle: torch.Tensor, anchors: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Rotated boxes (cx, cy, w, h) from ltrb distances and an angle, rotating the centre offset."""
    lt, rb = dist.split(2, dim=dim)
    cos, sin = torch.cos(angle), torch.sin(angle)
    xf, yf = ((rb - lt) / 2).split(1, dim=dim)
    xy = torch.cat([xf * cos - yf * sin, xf * sin + yf * cos], dim=dim) + anchors
    return torch.cat([xy, lt + rb], dim=dim)


@register_block(DETECT_RULE, family="head", source=_SOURCE)
class OBB(Detect):
    """Detect plus ne angle channels per anchor (cv4), in [-pi/4, 3pi/4); boxes rotate by the angle."""

    extra_parts = {"cv4": "angle"}

    def __init__(self, nc: int = 80, ne: int = 1, reg_max: int = 16, end2end: bool | None = False,
                 ch: list[int] | tuple = (), legacy: bool = False):
        super().__init__(nc, reg_max, end2end, ch, legacy)
        self.ne = ne
        c4 = max(ch[0] // 4, ne)
        self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, ne, 1)) for x in ch)
        self._copy_one2one("cv4")

    def _extra(self, x: list[torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        out = super()._extra(x, prefix)
        if "angle" in out:
            out["angle"] = self._angle(out["angle"])
        return out

    def _angle(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.sigmoid() - 0.25) * math.pi

    def _boxes(self, dist: torch.Tensor, anchors: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return dist2rbox(dist, p["angle"], anchors, dim=1)

    def _decode_extra(self, p: dict[str, torch.Tensor], anchors: torch.Tensor,
                      strides: torch.Tensor) -> list[torch.Tensor]:
        return [p["angle"]]


@register_block(DETECT_RULE, family="head", source=_SOURCE + " (YOLO26)")
class OBB26(OBB):
    """OBB whose angle is the raw branch output (no sigmoid mapping)."""

    def _angle(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


# --- classify ----------------------------------------------------------------------------------


@register_block(CLASSIFY_RULE, family="head", source=_SOURCE)
class Classify(nn.Module):
    """Conv to 1280 channels, global average pool, dropout, linear to c2 classes; eval returns softmax."""

    model_stride = 1.0  # ultralytics' ClassificationModel: no stride constraint

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1):
        super().__init__()
        c_ = 1280  # efficientnet_b0's width, as ultralytics
        self.conv = Conv(c1, c_, k, s, p, g)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=0.0, inplace=True)
        self.linear = nn.Linear(c_, c2)

    def forward(self, x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(x, list):
            x = torch.cat(x, 1)
        x = self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
        return x if self.training else x.softmax(1)


# --- dense heads (YOLO26 semantic segmentation and depth) ----------------------------------------


@register_block("head", family="head", source=_SOURCE + " (YOLO26)")
class SemanticSegment(nn.Module):
    """Per-pixel class logits at P3 (3x3 Conv, 1x1 Conv); an auxiliary P4 classifier trains alongside."""

    # the model's stride is the backbone's deepest (P5: 32), not the head's P3/P4: the FPN concats need
    # inputs aligned to it (ultralytics' SemanticSegmentationModel measures it the same way)
    model_stride = "deepest"

    def __init__(self, nc: int = 19, ch: list[int] | tuple = ()):
        super().__init__()
        self.nc, self.nl = nc, len(ch)
        self.stride = torch.zeros(self.nl)
        c_mid = ch[0]
        self.classifier = nn.Sequential(Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, nc, 1))
        self.aux_head = nn.Sequential(Conv(ch[1], c_mid, 3), nn.Conv2d(c_mid, nc, 1)) if len(ch) > 1 else None

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(x[0])  # (B, nc, H/8, W/8)
        if self.training and self.aux_head is not None:
            return logits, self.aux_head(x[1])
        return logits


@register_block("head", family="head", source=_SOURCE + " (YOLO26)")
class Depth(nn.Module):
    """Monocular depth: levels projected to c_mid, fused top-down with refinement, 2x transposed-conv
    upsampling to a (B, 1, H/4, W/4) positive depth map (exp of a clamped log-depth, calibrated)."""

    def __init__(self, c_mid: int = 256, ch: list[int] | tuple = ()):
        super().__init__()
        self.nl = len(ch)
        self.proj = nn.ModuleList(Conv(c, c_mid, k=1) for c in ch)
        self.refine = nn.ModuleList(nn.Sequential(Conv(c_mid, c_mid, k=3), Conv(c_mid, c_mid, k=3)) for _ in ch[:-1])
        self.head = nn.Sequential(Conv(c_mid, c_mid // 2, k=3),
                                  nn.ConvTranspose2d(c_mid // 2, c_mid // 2, kernel_size=2, stride=2, bias=True),
                                  Conv(c_mid // 2, c_mid // 4, k=3), nn.Conv2d(c_mid // 4, 1, kernel_size=1))
        self.head[-1].bias.data.fill_(0.182)
        self.register_buffer("cal_a", torch.ones(1))
        self.register_buffer("cal_b", torch.zeros(1))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        feats = [self.proj[i](x[i]) for i in range(self.nl)]
        out = feats[-1]
        for i in range(self.nl - 2, -1, -1):
            out = self.refine[i](F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True) + feats[i])
        out = self.head(out).clamp(-4.0, 5.0)
        if self.training:
            return {"depth": torch.exp(out)}
        return torch.exp(self.cal_a * out + self.cal_b)


__all__ = ["Classify", "Depth", "OBB", "OBB26", "Pose", "Pose26", "Proto", "Proto26", "RealNVP", "Segment", "Segment26",
           "SemanticSegment", "dist2bbox", "dist2rbox"]
