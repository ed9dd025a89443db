"""Depth-wise and Ghost convolutions (GhostNet, as ultralytics lays them out for YOLOv8-ghost)."""

from __future__ import annotations

import math

import torch
from torch import nn

from blocks.conv import Conv
from blocks.csp import C3
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/conv.py, block.py"


@register_block("c1_c2", source=_SOURCE)
class DWConv(Conv):
    """Depth-wise convolution: a Conv grouped by gcd(c1, c2)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


@register_block("c1_c2", source=_SOURCE)
class GhostConv(nn.Module):
    """Half the outputs from a Conv, the other half from a cheap 5x5 depth-wise Conv of them."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


@register_block("c1_c2", source=_SOURCE)
class GhostBottleneck(nn.Module):
    """Two GhostConvs (a depth-wise Conv between them when strided) plus a shortcut."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        c_ = c2 // 2
        self.conv = nn.Sequential(
            GhostConv(c1, c_, 1, 1),
            DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
            GhostConv(c_, c2, 1, 1, act=False),
        )
        self.shortcut = (nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False))
                         if s == 2 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


@register_block("c1_c2_n", source=_SOURCE)
class C3Ghost(C3):
    """C3 whose bottlenecks are GhostBottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))
