"""CSP-style blocks of YOLOv5/v8: Bottleneck, C3, C2f, SPPF and SPP (ultralytics' layout)."""

from __future__ import annotations

import torch
from torch import nn

from blocks.conv import Conv
from blocks.conventions import C1_C2, Convention, LayerContext, Resolved, register_convention
from blocks.registry import register_block


@register_block("c1_c2", source="ultralytics nn/modules/block.py")
class Bottleneck(nn.Module):
    """Two convolutions with an optional residual connection."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1,
                 k: tuple[int, int] = (3, 3), e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register_block("c1_c2_n", source="ultralytics nn/modules/block.py (YOLOv8)")
class C2f(nn.Module):
    """CSP bottleneck with two convolutions whose every stage output is concatenated."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


@register_block("c1_c2_n", source="ultralytics nn/modules/block.py (YOLOv5)")
class C3(nn.Module):
    """CSP bottleneck with three convolutions."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, k=(1, 3), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


def _sppf(ctx: LayerContext) -> Resolved:
    """YOLO26 rows give ``[c2, k, n, shortcut]`` and leave cv1 unactivated; older rows (``[c2, k]``) keep the
    activation on cv1, as ultralytics restores it for them."""
    res = C1_C2.resolve(ctx)
    if len(ctx.args) <= 2:
        res.kwargs["cv1_act"] = True
    return res


SPPF_RULE = register_convention(Convention(
    "sppf",
    "as c1_c2; args [c2, k, n, shortcut] (YOLO26) build cv1 without activation, a row [c2, k] keeps it",
    _sppf, lambda c1, rest: [c1, *(rest if rest is not None else [c1])],
))


@register_block(SPPF_RULE, source="ultralytics nn/modules/block.py (YOLOv5/v8/26)")
class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: n chained max-pools concatenated, optionally with a residual (YOLO26)."""

    def __init__(self, c1: int, c2: int, k: int = 5, n: int = 3, shortcut: bool = False, cv1_act: bool = False):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1, act=cv1_act)
        self.cv2 = Conv(c_ * (n + 1), c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.n = n
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(self.n))
        y = self.cv2(torch.cat(y, 1))
        return y + x if self.add else y


@register_block("c1_c2", source="ultralytics nn/modules/block.py (YOLOv3-SPP)")
class SPP(nn.Module):
    """Spatial pyramid pooling: parallel max-pools of kernels k concatenated with their input."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] | list[int] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(m(x) for m in self.m)], 1))
