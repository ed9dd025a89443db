"""Blocks of the YOLOv7 repository (WongKinYiu/yolov7), as its YAMLs name them.

The repository's YAMLs (``cfg/training``, ``cfg/deploy``, ``cfg/baseline``) read like
YOLOv5's but build with another module set: ELAN stacks of plain ``Conv`` joined by
``Concat``, ``MP``/``SP`` pooling, ``SPPCSPC``, CSP variants (``BottleneckCSPA/B/C``,
``ResCSPB``, ``ResXCSPC``...), ``DownC``/``ReOrg``/``Stem`` stems, ``RepConv`` before the
head, and the YOLOR heads ``IDetect`` (implicit knowledge) and ``IAuxDetect`` (auxiliary
lead head of the P6 models). Two facts make its counts differ from YOLOv5's:

- its ``Conv`` makes a new ``nn.SiLU()`` per layer (YOLOv5 shares one), so the summary
  line, ``len(list(model.modules()))``, counts one activation per Conv;
- its ``Conv`` signature is ``(c1, c2, k, s, p, g, act)``: YOLOv7-tiny passes
  ``nn.LeakyReLU(0.1)`` as the seventh argument (no dilation slot).

Deployment folds (``fuse_deploy``): ``RepConv`` merges its 3x3, 1x1 and identity branches
into one biased 3x3 conv; ``IDetect`` folds its implicit add/multiply into the output
convs and drops them; ``IAuxDetect`` does the same and drops its auxiliary convs, which is
the head of the repository's deploy YAMLs (a plain ``Detect``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from blocks.conv import Conv, autopad
from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.registry import register_block
from blocks.yolov5_repo import ANCHOR_HEAD, AnchorDetect, BottleneckRepo, SPPRepo
from blocks.yolov9_repo import SP

_SOURCE = "YOLOv7 repository (WongKinYiu/yolov7), models/common.py and models/yolo.py"


# --- conventions -----------------------------------------------------------------------------


def _measured(ctx: LayerContext) -> Resolved:
    # args as written; the output width comes from the builder's dry run (ReOrg: 4 x c1)
    return Resolved(list(ctx.args), None, repeats=ctx.n)


def _first_input(ctx: LayerContext) -> Resolved:
    # Shortcut adds two maps: the width is the first input's
    return Resolved(list(ctx.args), ctx.ch_in[0], repeats=ctx.n)


MEASURED = register_convention(Convention(
    "measured",
    "args passed as written; the output width is measured by running the layer once (ReOrg: 4 x c1)",
    _measured, lambda c1, rest: list(rest or []),
))
FIRST_INPUT = register_convention(Convention(
    "first_input",
    "joins several inputs element-wise: args passed as written; output width = the first input's",
    _first_input, lambda c1, rest: list(rest or []),
))


# --- convolutions ----------------------------------------------------------------------------


@register_block("c1_c2", source=_SOURCE, name="Conv_yolov7repo")
class ConvV7(Conv):
    """The repository's Conv: ``(c1, c2, k, s, p, g, act)``, a new activation module per layer."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, p, g, 1, act=nn.SiLU() if act is True else act)


@register_block("c1_c2", source=_SOURCE, name="RepConv_yolov7repo")
class RepConvV7(nn.Module):
    """RepVGG block: 3x3 conv+BN, 1x1 conv+BN and (when shapes allow) a BN identity, summed.

    ``fuse_deploy`` merges the three into ``rbr_reparam`` (one 3x3 conv with bias), the form the
    repository builds with ``deploy=True``: c2 * c1 / g * 9 + c2 parameters.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True, deploy: bool = False):
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError(f"RepConv needs k=3 and padding 1, got k={k}, p={p}")
        self.deploy, self.groups, self.in_channels, self.out_channels = deploy, g, c1, c2
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=True)
            return
        self.rbr_identity = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=False), nn.BatchNorm2d(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    @staticmethod
    def _folded(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    @torch.no_grad()
    def fuse_deploy(self) -> None:
        """Fold the branches (BN statistics included) into ``rbr_reparam``; same eval output."""
        if hasattr(self, "rbr_reparam"):
            return
        dense = self.rbr_dense[0]
        w, b = self._folded(dense.weight, self.rbr_dense[1])
        w1, b1 = self._folded(self.rbr_1x1[0].weight, self.rbr_1x1[1])
        w = w + nn.functional.pad(w1, [1, 1, 1, 1])
        b = b + b1
        if self.rbr_identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros_like(w)
            for i in range(self.in_channels):
                eye[i, i % per_group, 1, 1] = 1.0
            wi, bi = self._folded(eye, self.rbr_identity)
            w, b = w + wi, b + bi
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, dense.stride, 1, groups=self.groups, bias=True)
        conv = conv.to(device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.rbr_reparam = conv
        self.deploy = True


# --- pooling, routing, stems -------------------------------------------------------------------


@register_block("passthrough", family="utility", source=_SOURCE)
class MP(nn.Module):
    """Max-pool with stride = kernel (2): halves the map."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


register_block("passthrough", family="utility", source=_SOURCE)(SP)  # same-size max-pool (k, s)


@register_block(MEASURED, family="utility", source=_SOURCE)
class ReOrg(nn.Module):
    """Space-to-depth: every second pixel in each direction, stacked on channels (4 x c1, half size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


@register_block(FIRST_INPUT, family="utility", source=_SOURCE)
class Shortcut(nn.Module):
    """Sum of two maps (a residual written as a YAML row)."""

    def __init__(self, dimension: int = 0):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[0] + x[1]


@register_block("c1_c2_n", source=_SOURCE)
class DownC(nn.Module):
    """Strided 3x3 of a 1x1 beside a max-pooled 1x1, concatenated (half size, c2 outputs)."""

    def __init__(self, c1: int, c2: int, n: int = 1, k: int = 2):
        super().__init__()
        self.cv1 = ConvV7(c1, c1, 1, 1)
        self.cv2 = ConvV7(c1, c2 // 2, 3, k)
        self.cv3 = ConvV7(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), dim=1)


@register_block("c1_c2", source=_SOURCE)
class Stem(nn.Module):
    """Stride-4 stem: a strided 3x3, then a 1x1 -> strided 3x3 path beside a max-pool, fused by a 1x1."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        c_ = int(c2 / 2)
        self.cv1 = ConvV7(c1, c_, 3, 2)
        self.cv2 = ConvV7(c_, c_, 1, 1)
        self.cv3 = ConvV7(c_, c_, 3, 2)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.cv4 = ConvV7(2 * c_, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv4(torch.cat((self.cv3(self.cv2(x)), self.pool(x)), dim=1))


# --- bottlenecks and their CSP wrappers --------------------------------------------------------


@register_block("c1_c2", source=_SOURCE, name="Bottleneck_yolov7repo")
class BottleneckV7(BottleneckRepo):
    """The repositories' 1x1 + 3x3 Bottleneck, built from YOLOv7's Conv."""

    conv = ConvV7


@register_block("c1_c2", source=_SOURCE)
class Res(nn.Module):
    """1x1 -> 3x3 (grouped) -> 1x1 residual unit (ResNet bottleneck)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = ConvV7(c1, c_, 1, 1)
        self.cv2 = ConvV7(c_, c_, 3, 1, g=g)
        self.cv3 = ConvV7(c_, c2, 1, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv3(self.cv2(self.cv1(x)))
        return x + y if self.add else y


@register_block("c1_c2", source=_SOURCE)
class ResX(Res):
    """Res with 32 groups in its 3x3 (ResNeXt)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 32, e: float = 0.5):
        super().__init__(c1, c2, shortcut, g, e)


def _units(kind: str, c_: int, n: int, shortcut: bool, g: int) -> nn.Sequential:
    """The repeated units of a CSP block: Bottleneck (e=1), Res (e=0.5) or ResX-style Res (e=1)."""
    if kind == "bottleneck":
        return nn.Sequential(*(BottleneckV7(c_, c_, shortcut, g, e=1.0) for _ in range(n)))
    e = 0.5 if kind == "res" else 1.0
    return nn.Sequential(*(Res(c_, c_, shortcut, g, e=e) for _ in range(n)))


class _CSP(nn.Module):
    """The three CSP layouts of the repository; ``units`` picks what is repeated inside.

    A: cv1 -> m beside cv2, cv3 joins (hidden c2*e). B: cv1, then m beside cv2 of it, cv3 joins
    (hidden c2). C: cv1 -> m -> cv3 beside cv2, cv4 joins (hidden c2*e).
    """

    layout: ClassVar[str] = "A"
    units: ClassVar[str] = "bottleneck"

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2) if self.layout == "B" else int(c2 * e)
        self.cv1 = ConvV7(c1, c_, 1, 1)
        self.cv2 = ConvV7(c_ if self.layout == "B" else c1, c_, 1, 1)
        if self.layout == "C":
            self.cv3 = ConvV7(c_, c_, 1, 1)
            self.cv4 = ConvV7(2 * c_, c2, 1, 1)
        else:
            self.cv3 = ConvV7(2 * c_, c2, 1, 1)
        self.m = _units(self.units, c_, n, shortcut, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "A":
            return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))
        if self.layout == "B":
            x1 = self.cv1(x)
            return self.cv3(torch.cat((self.m(x1), self.cv2(x1)), dim=1))
        return self.cv4(torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), dim=1))


def _csp(name: str, layout: str, units: str, default_g: int, shortcut: bool) -> type:
    """One registered CSP class (the repository's defaults: B has shortcut=False, ResX g=32)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = shortcut, g: int = default_g,
                 e: float = 0.5) -> None:
        _CSP.__init__(self, c1, c2, n, shortcut, g, e)

    doc = f"CSP layout {layout} around {units} units (YOLOv7 repository's {name})."
    cls = type(name, (_CSP,), {"layout": layout, "units": units, "__init__": __init__, "__doc__": doc,
                               "__module__": __name__})
    return register_block("c1_c2_n", source=_SOURCE)(cls)


BottleneckCSPA = _csp("BottleneckCSPA", "A", "bottleneck", 1, True)
BottleneckCSPB = _csp("BottleneckCSPB", "B", "bottleneck", 1, False)
BottleneckCSPC = _csp("BottleneckCSPC", "C", "bottleneck", 1, True)
ResCSPA = _csp("ResCSPA", "A", "res", 1, True)
ResCSPB = _csp("ResCSPB", "B", "res", 1, True)
ResCSPC = _csp("ResCSPC", "C", "res", 1, True)
ResXCSPA = _csp("ResXCSPA", "A", "resx", 32, True)
ResXCSPB = _csp("ResXCSPB", "B", "resx", 32, True)
ResXCSPC = _csp("ResXCSPC", "C", "resx", 32, True)


# --- spatial pyramid pooling -------------------------------------------------------------------


@register_block("c1_c2", source=_SOURCE, name="SPP_yolov7repo")
class SPPV7(SPPRepo):
    """The repositories' SPP (5, 9, 13), built from YOLOv7's Conv."""

    conv = ConvV7


@register_block("c1_c2_n", source="YOLOv7/YOLOv9 repositories, models/common.py")
class SPPCSPC(nn.Module):
    """CSP SPP: pools (5, 9, 13) on a 1-3-1 conv path beside a 1x1 shortcut, joined by a 1x1.

    This class (shared-activation ``Conv``) is the YOLOv9 repository's; the YOLOv7 dialect uses
    ``SPPCSPC_yolov7repo``, the same layers with the repository's per-layer activations.
    """

    conv: ClassVar[type] = Conv

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c_ = int(2 * c2 * e)
        cv = self.conv
        self.cv1 = cv(c1, c_, 1, 1)
        self.cv2 = cv(c1, c_, 1, 1)
        self.cv3 = cv(c_, c_, 3, 1)
        self.cv4 = cv(c_, c_, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = cv(4 * c_, c_, 1, 1)
        self.cv6 = cv(c_, c_, 3, 1)
        self.cv7 = cv(2 * c_, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), dim=1))


@register_block("c1_c2_n", source=_SOURCE, name="SPPCSPC_yolov7repo")
class SPPCSPCV7(SPPCSPC):
    """SPPCSPC built from the YOLOv7 repository's Conv (one activation module per layer)."""

    conv = ConvV7


# --- YOLOR heads -------------------------------------------------------------------------------


class ImplicitA(nn.Module):
    """Learned per-channel offset added to the input (YOLOR implicit knowledge)."""

    def __init__(self, channel: int, mean: float = 0.0, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned per-channel scale applied to the output (YOLOR implicit knowledge)."""

    def __init__(self, channel: int, mean: float = 1.0, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x


@register_block(ANCHOR_HEAD, family="head", source=_SOURCE)
class IDetect(AnchorDetect):
    """YOLOv5-style anchor head with YOLOR implicit knowledge: ``im * conv(x + ia)`` per level."""

    cls_prior_offset = 0.99  # the repository's log(0.6 / (nc - 0.99))

    def __init__(self, nc: int = 80, anchors: list | int = 3, ch: tuple[int, ...] = ()):
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(x) for x in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def project(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "ia"):  # folded by fuse_deploy
            return self.m[i](x)
        return self.im[i](self.m[i](self.ia[i](x)))

    @torch.no_grad()
    def fuse_deploy(self) -> None:
        """Fold ia/im into the output convs and drop them: the deploy YAML's plain ``Detect``."""
        if not hasattr(self, "ia"):
            return
        for conv, ia, im in zip(self.m, self.ia, self.im):
            w = conv.weight  # (c_out, c_in, 1, 1)
            conv.bias += (w.flatten(1) @ ia.implicit.flatten()).view_as(conv.bias)
            scale = im.implicit.flatten()
            conv.bias *= scale
            conv.weight *= scale.view(-1, 1, 1, 1)
        del self.ia, self.im


@register_block(ANCHOR_HEAD, family="head", source=_SOURCE)
class IAuxDetect(IDetect):
    """IDetect on the first nl inputs plus plain 1x1 auxiliary convs (``m2``) on the last nl (training only)."""

    def __init__(self, nc: int = 80, anchors: list | int = 3, ch: tuple[int, ...] = ()):
        nl = len(anchors) if isinstance(anchors, (list, tuple)) else len(ch) // 2
        super().__init__(nc, anchors, tuple(ch[:nl]))
        self.m2 = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[nl:])

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        if not hasattr(self, "m2"):
            return super().forward(x[: self.nl])
        aux = []
        for i in range(self.nl):
            bs, _, ny, nx = x[self.nl + i].shape
            a = self.m2[i](x[self.nl + i])
            aux.append(a.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        main = super().forward(x[: self.nl])
        return [*main, *aux] if self.training else main

    def bias_init(self) -> None:
        super().bias_init()
        for conv, s in zip(getattr(self, "m2", []), self.stride):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (640 / float(s)) ** 2)
            b.data[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - self.cls_prior_offset))

    @torch.no_grad()
    def fuse_deploy(self) -> None:
        """Fold the implicit layers and drop the auxiliary convs (the deploy YAMLs' ``Detect``)."""
        super().fuse_deploy()
        if hasattr(self, "m2"):
            del self.m2
        self.reads_inputs = self.nl  # the layers feeding the auxiliary inputs go too (loading/fuse.py)
