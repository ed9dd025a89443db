"""Blocks only the YOLOv9 repository (WongKinYiu/yolov9) names in its YAMLs.

The programmable-gradient-information (PGI) models of that repository carry an auxiliary
reversible branch: ``Silence`` hands the image on, ``CBLinear`` projects a feature map into
several widths at once, ``CBFuse`` resizes and sums the picked pieces into another
branch, and ``DualDDetect`` / ``TripleDDetect`` run one decoupled head per branch. The
GELAN models end in ``DDetect``. Attribute names (``cv2``..``cv7``, ``dfl``, ``dfl2``,
``conv``) follow the repository so that its checkpoints load into these modules, and the
layer structure is the same so that parameter counts and thop FLOPs agree to the unit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv import Conv, autopad
from blocks.gelan import SPPELAN
from blocks.conventions import Convention, LayerContext, Resolved, make_divisible, register_convention
from blocks.heads import DFL, dist2bbox, make_anchors  # identical to the YOLOv9 repository's
from blocks.registry import register_block

_SOURCE = "YOLOv9 repository (WongKinYiu/yolov9), models/common.py and models/yolo.py"
REG_MAX = 16  # distribution bins per box side in every YOLOv9-repository head


# --- conventions: the YOLOv9 repository's parse_model rules for these modules -----------


def _cblinear(ctx: LayerContext) -> Resolved:
    # c2 is the list of output widths, taken as written (no width multiple in the repo)
    widths = [int(c) for c in ctx.args[0]]
    return Resolved([ctx.c1, widths, *ctx.args[1:]], widths, repeats=ctx.n)


def _cbfuse(ctx: LayerContext) -> Resolved:
    # the sum has the width of the last input, the branch being fused into
    return Resolved(list(ctx.args), ctx.ch_in[-1], repeats=1)


CBLINEAR = register_convention(Convention(
    "cblinear",
    "args [[c2a, c2b, ...], k, ...] become (c1, [c2a, c2b, ...], k, ...); outputs one map per width, not width-scaled",
    _cblinear, lambda c1, rest: [c1, *(rest if rest is not None else [[c1]])],
))
CBFUSE = register_convention(Convention(
    "cbfuse",
    "fuses picked pieces of CBLinear outputs into the last input: args [[idx, ...]]; output width = last input's",
    _cbfuse, lambda c1, rest: list(rest or []),
))


# --- routing modules of the auxiliary branch ------------------------------------------


@register_block("passthrough", family="utility", source=_SOURCE)
class Silence(nn.Module):
    """Identity that lets a later layer read the network input by index (YOLOv9 PGI branch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_block(CBLINEAR, family="utility", source=_SOURCE, default_args=lambda c1: ([c1 // 2, c1],))
class CBLinear(nn.Module):
    """One convolution (with bias) split into several outputs of the listed widths."""

    def __init__(self, c1: int, c2s: list[int], k: int = 1, s: int = 1, p: int | None = None, g: int = 1):
        super().__init__()
        self.c2s = [int(c) for c in c2s]
        self.conv = nn.Conv2d(c1, sum(self.c2s), k, s, autopad(k, p), groups=g, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.conv(x).split(self.c2s, dim=1)


@register_block(CBFUSE, family="utility", source=_SOURCE)
class CBFuse(nn.Module):
    """Sum of the last input and one picked piece of each earlier CBLinear output, resized to it."""

    def __init__(self, idx: list[int]):
        super().__init__()
        self.idx = [int(i) for i in idx]

    def forward(self, xs: list) -> torch.Tensor:
        *routes, target = xs
        if len(routes) != len(self.idx):
            raise ValueError(f"CBFuse got {len(routes)} routed inputs for {len(self.idx)} indices {self.idx}")
        size = target.shape[2:]
        picked = [F.interpolate(r[i], size=size, mode="nearest") for r, i in zip(routes, self.idx)]
        return torch.sum(torch.stack([*picked, target]), dim=0)


# --- decoupled detection heads ---------------------------------------------------------


def _branch_widths(ch0: int, nc: int) -> tuple[int, int]:
    """Box and class tower widths of a DDetect branch fed first by a map of width ch0."""
    c2 = make_divisible(max(ch0 // 4, REG_MAX * 4, 16), 4)
    c3 = max(ch0, min(nc * 2, 128))
    return c2, c3


def _box_tower(c_in: int, c2: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, c2, 3), Conv(c2, c2, 3, g=4), nn.Conv2d(c2, 4 * REG_MAX, 1, groups=4))


def _cls_tower(c_in: int, c3: int, nc: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))


class _MultiBranchDDetect(nn.Module):
    """``branches`` DDetect heads side by side, one per group of ``nl`` input maps.

    The inputs are ordered branch by branch (e.g. A3, A4, A5, P3, P4, P5 for two). Towers
    are kept in the repository's attribute names: branch b uses ``cv{2+2b}`` (box) and
    ``cv{3+2b}`` (class) and ``dfl``, ``dfl2``, ``dfl3``.
    """

    branches = 1
    dynamic = False
    export = False

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), inplace: bool = True):
        super().__init__()
        if len(ch) % self.branches:
            raise ValueError(f"{type(self).__name__} needs a multiple of {self.branches} inputs, got {len(ch)}")
        self.nc = nc
        self.nl = len(ch) // self.branches
        self.reg_max = REG_MAX
        self.no = nc + REG_MAX * 4
        self.inplace = inplace
        self._stride = torch.zeros(self.nl)  # a tensor, so model builders recognise the head
        self._bound = False
        self.shape = None
        self.anchors = torch.empty(0)
        self.strides = torch.empty(0)
        for b in range(self.branches):
            group = ch[b * self.nl:(b + 1) * self.nl]
            c2, c3 = self.widths(group[0], nc)
            setattr(self, f"cv{2 + 2 * b}", nn.ModuleList(self.box_tower(x, c2) for x in group))
            setattr(self, f"cv{3 + 2 * b}", nn.ModuleList(_cls_tower(x, c3, nc) for x in group))
        for b in range(self.branches):
            setattr(self, "dfl" if b == 0 else f"dfl{b + 1}", DFL(REG_MAX))

    # DDetect's tower layout; the repository's plain Detect (yolov7-af) overrides both
    widths = staticmethod(_branch_widths)
    box_tower = staticmethod(_box_tower)

    def _towers(self, b: int) -> tuple[nn.ModuleList, nn.ModuleList, DFL]:
        return (getattr(self, f"cv{2 + 2 * b}"), getattr(self, f"cv{3 + 2 * b}"),
                getattr(self, "dfl" if b == 0 else f"dfl{b + 1}"))

    def _raw(self, x: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        out = []
        for b in range(self.branches):
            box, cls, _ = self._towers(b)
            maps = x[b * self.nl:(b + 1) * self.nl]
            out.append([torch.cat((box[i](m), cls[i](m)), 1) for i, m in enumerate(maps)])
        return out

    def _decode(self, d: list[torch.Tensor], dfl: DFL) -> torch.Tensor:
        shape = d[0].shape
        if self.dynamic or self.shape != shape:
            anchors, strides = make_anchors(d, self.stride, 0.5)
            self.anchors, self.strides = anchors.transpose(0, 1), strides.transpose(0, 1)
            self.shape = shape
        box, cls = torch.cat([di.view(shape[0], self.no, -1) for di in d], 2).split((REG_MAX * 4, self.nc), 1)
        dbox = dist2bbox(dfl(box), self.anchors.unsqueeze(0), xywh=True, dim=1) * self.strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    @property
    def stride(self) -> torch.Tensor:
        return self._stride

    @stride.setter
    def stride(self, value) -> None:
        """Strides of the nl levels (a builder may measure all inputs: A3..A5, P3..P5); the first
        positive ones also set the prior biases, as the repository does once after measuring."""
        self._stride = torch.as_tensor(value, dtype=torch.float32).flatten()[: self.nl]
        self.shape = None
        if not self._bound and len(self._stride) == self.nl and bool((self._stride > 0).all()):
            self._bound = True
            self.bias_init()

    def stride_maps(self, out) -> list[torch.Tensor]:
        """The first branch's raw maps in a training-mode output (what stride detection measures)."""
        return out[0] if self.branches > 1 else out

    def bias_init(self) -> None:
        """Prior biases as the repository sets them once strides are known."""
        for b in range(self.branches):
            box, cls, _ = self._towers(b)
            for a, c, s in zip(box, cls, self.stride):
                a[-1].bias.data[:] = 1.0
                c[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / float(s)) ** 2)

    def _apply(self, fn, *args, **kwargs):  # keep the plain-tensor state on the module's device
        self = super()._apply(fn, *args, **kwargs)
        self._stride, self.anchors, self.strides = fn(self._stride), fn(self.anchors), fn(self.strides)
        return self


@register_block("head", family="head", source=_SOURCE, default_args=lambda c1: (80,))
class DDetect(_MultiBranchDDetect):
    """GELAN decoupled anchor-free head: grouped box tower (g=4) + class tower per level, DFL boxes."""

    branches = 1

    def forward(self, x: list[torch.Tensor]):
        (d,) = self._raw(list(x))
        if self.training:
            return d
        y = self._decode(d, self.dfl)
        return y if self.export else (y, d)


@register_block("head", family="head", source=_SOURCE, default_args=lambda c1: (80,))
class DualDDetect(_MultiBranchDDetect):
    """Two DDetect heads: auxiliary branch (first nl inputs) and main branch (last nl inputs)."""

    branches = 2

    def forward(self, x: list[torch.Tensor]):
        d1, d2 = self._raw(list(x))
        if self.training:
            return [d1, d2]
        y = [self._decode(d1, self.dfl), self._decode(d2, self.dfl2)]
        return y if self.export else (y, [d1, d2])


@register_block("head", family="head", source=_SOURCE, default_args=lambda c1: (80,))
class TripleDDetect(_MultiBranchDDetect):
    """Three DDetect heads (yolov9-cf); inference returns the last branch only, as the repository does."""

    branches = 3

    def forward(self, x: list[torch.Tensor]):
        d1, d2, d3 = self._raw(list(x))
        if self.training:
            return [d1, d2, d3]
        # The repository decodes all three branches and returns the last; doing the same keeps
        # latency and counted FLOPs equal to what it reports.
        self._decode(d1, self.dfl)
        self._decode(d2, self.dfl2)
        y = self._decode(d3, self.dfl3)
        return y if self.export else (y, d3)


# --- SPPELAN as the repository writes it --------------------------------------------------


class SP(nn.Module):
    """The repository's max-pool wrapper (stride 1, same padding); no parameters."""

    def __init__(self, k: int = 3, s: int = 1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


@register_block("c1_c2", source=_SOURCE, name="SPPELAN_yolov9repo", family="utility",
                default_args=lambda c1: (c1, c1 // 2))
class SPPELANRepo(SPPELAN):
    """SPPELAN with each pool inside an ``SP`` module, as the repository builds it.

    Same parameters, state_dict keys and outputs as ultralytics' ``SPPELAN``; the wrappers add
    three modules, so the repository's summary line counts 3 more layers per SPPELAN
    (gelan-c: 621). The yolov9-repo dialect renames ``SPPELAN`` to this block.
    """

    def __init__(self, c1: int, c2: int, c3: int, k: int = 5):
        super().__init__(c1, c2, c3, k)
        self.cv2, self.cv3, self.cv4 = SP(k), SP(k), SP(k)


# --- the plain anchor-free Detect and the segment / panoptic heads ---------------------------

from blocks.yolov5_repo import Proto, scaled_protos  # noqa: E402


def _detect_widths(ch0: int, nc: int) -> tuple[int, int]:
    """The repository's plain Detect: no rounding to 4, ungrouped box tower."""
    return max(ch0 // 4, REG_MAX * 4, 16), max(ch0, min(nc * 2, 128))


def _plain_box_tower(c_in: int, c2: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1))


def _mask_tower(c_in: int, c4: int, nm: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, nm, 1))


def _segment_head(ctx: LayerContext) -> Resolved:
    scaled_protos(ctx, 2)  # the repository scales args[2] (npr for Segment, nm for Panoptic)
    return Resolved([*ctx.args, list(ctx.ch_in)], None, repeats=1)


SEGMENT_HEAD = register_convention(Convention(
    "segment_head",
    "YOLOv9 segment/panoptic head: args [nc, (sem_nc,) nm, npr], args[2] width-scaled, input widths appended",
    _segment_head, lambda c1, rest: [*(rest if rest is not None else [80, 32, 256]), [c1]],
))


@register_block("head", family="head", source=_SOURCE, name="Detect_yolov9repo", default_args=lambda c1: (80,))
class DetectRepo(DDetect):
    """The repository's anchor-free Detect (yolov7-af): DDetect without the grouped box tower."""

    widths = staticmethod(_detect_widths)
    box_tower = staticmethod(_plain_box_tower)


class _MaskMixin:
    """mask coefficients (cv4 per level) beside a detection result, as the repository returns them."""

    def _coefficients(self, towers: nn.ModuleList, maps: list[torch.Tensor]) -> torch.Tensor:
        bs = maps[0].shape[0]
        return torch.cat([t(m).view(bs, self.nm, -1) for t, m in zip(towers, maps)], 2)


@register_block(SEGMENT_HEAD, family="head", source=_SOURCE, name="Segment_yolov9repo")
class SegmentRepo9(_MaskMixin, DetectRepo):
    """Detect + Proto on the first level + nm mask coefficients per anchor (yolov7-af-seg, gelan-c-seg)."""

    def __init__(self, nc: int = 80, nm: int = 32, npr: int = 256, ch: tuple[int, ...] = (), inplace: bool = True):
        super().__init__(nc, ch, inplace)
        self.nm, self.npr = nm, npr
        self.proto = Proto(ch[0], npr, nm)
        c4 = max(ch[0] // 4, nm)
        self.cv4 = nn.ModuleList(_mask_tower(x, c4, nm) for x in ch)

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        p = self.proto(x[0])
        mc = self._coefficients(self.cv4, x)
        d = super().forward(x)
        if self.training:
            return d, mc, p
        return (torch.cat([d, mc], 1), p) if self.export else (torch.cat([d[0], mc], 1), (d[1], mc, p))


@register_block(SEGMENT_HEAD, family="head", source=_SOURCE)
class DSegment(_MaskMixin, DDetect):
    """DDetect on all inputs but the last; a 1x1 Conv of the last input gives the prototypes."""

    def __init__(self, nc: int = 80, nm: int = 32, npr: int = 256, ch: tuple[int, ...] = (), inplace: bool = True):
        super().__init__(nc, tuple(ch[:-1]), inplace)
        self.nm, self.npr = nm, npr
        self.proto = Conv(ch[-1], nm, 1)
        c4 = max(ch[0] // 4, nm)
        self.cv4 = nn.ModuleList(_mask_tower(x, c4, nm) for x in ch[:-1])

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        p = self.proto(x[-1])
        mc = self._coefficients(self.cv4, x[:-1])
        d = super().forward(x[:-1])
        if self.training:
            return d, mc, p
        return (torch.cat([d, mc], 1), p) if self.export else (torch.cat([d[0], mc], 1), (d[1], mc, p))


@register_block(SEGMENT_HEAD, family="head", source=_SOURCE)
class DualDSegment(_MaskMixin, DualDDetect):
    """DualDDetect plus one prototype Conv and one coefficient tower set per branch (aux first)."""

    def __init__(self, nc: int = 80, nm: int = 32, npr: int = 256, ch: tuple[int, ...] = (), inplace: bool = True):
        super().__init__(nc, tuple(ch[:-2]), inplace)
        self.nm, self.npr = nm, npr
        self.proto = Conv(ch[-2], nm, 1)
        self.proto2 = Conv(ch[-1], nm, 1)
        c6, c7 = max(ch[0] // 4, nm), max(ch[self.nl] // 4, nm)
        self.cv6 = nn.ModuleList(_mask_tower(x, c6, nm) for x in ch[:self.nl])
        self.cv7 = nn.ModuleList(_mask_tower(x, c7, nm) for x in ch[self.nl:2 * self.nl])

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        p = [self.proto(x[-2]), self.proto2(x[-1])]
        mc = [self._coefficients(self.cv6, x[:self.nl]), self._coefficients(self.cv7, x[self.nl:2 * self.nl])]
        d = super().forward(x[:-2])
        if self.training:
            return d, mc, p
        return torch.cat([d[0][1], mc[1]], 1), (d[1][1], mc[1], p[1])


class UConv(nn.Module):
    """Semantic branch: 3x3 Conv, 1x1 conv to the class count, 2x bilinear upsample."""

    def __init__(self, c1: int, c_: int = 256, c2: int = 256):
        super().__init__()
        self.cv1 = Conv(c1, c_, k=3)
        self.cv2 = nn.Conv2d(c_, c2, 1, 1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.cv2(self.cv1(x)))


@register_block(SEGMENT_HEAD, family="head", source=_SOURCE, default_args=lambda c1: (80, 93, 32, 256))
class Panoptic(_MaskMixin, DetectRepo):
    """Segment head plus a semantic map of sem_nc + nc classes (``UConv`` on the first level)."""

    def __init__(self, nc: int = 80, sem_nc: int = 93, nm: int = 32, npr: int = 256, ch: tuple[int, ...] = (),
                 inplace: bool = True):
        super().__init__(nc, ch, inplace)
        self.sem_nc, self.nm, self.npr = sem_nc, nm, npr
        self.proto = Proto(ch[0], npr, nm)
        self.uconv = UConv(ch[0], ch[0] // 4, sem_nc + nc)
        c4 = max(ch[0] // 4, nm)
        self.cv4 = nn.ModuleList(_mask_tower(x, c4, nm) for x in ch)

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        p, s = self.proto(x[0]), self.uconv(x[0])
        mc = self._coefficients(self.cv4, x)
        d = super().forward(x)
        if self.training:
            return d, mc, p, s
        return (torch.cat([d, mc], 1), p, s) if self.export else (torch.cat([d[0], mc], 1), (d[1], mc, p, s))
