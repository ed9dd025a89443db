"""YOLOv10 blocks: SCDown, RepVGGDW, CIB and C2fCIB (PSA lives in blocks.psa)."""

from __future__ import annotations

import torch
from torch import nn

from blocks.c3k2 import C1_C2_N_MODERN
from blocks.conv import Conv
from blocks.csp import C2f
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/block.py (YOLOv10)"


@register_block("c1_c2", source=_SOURCE, default_args=lambda c1: (2 * c1, 3, 2))
class SCDown(nn.Module):
    """Spatial-channel decoupled downsampling: a 1x1 Conv then a strided depth-wise Conv."""

    def __init__(self, c1: int, c2: int, k: int, s: int):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.cv2 = Conv(c2, c2, k=k, s=s, g=c2, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


@register_block("preserve", source=_SOURCE)
class RepVGGDW(nn.Module):
    """Depth-wise 7x7 and 3x3 Convs summed (re-parameterisable into one 7x7)."""

    def __init__(self, ed: int):
        super().__init__()
        self.conv = Conv(ed, ed, 7, 1, 3, g=ed, act=False)
        self.conv1 = Conv(ed, ed, 3, 1, 1, g=ed, act=False)
        self.dim = ed
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is None:  # fused
            return self.act(self.conv(x))
        return self.act(self.conv(x) + self.conv1(x))

    @torch.no_grad()
    def fuse_deploy(self) -> None:
        """Merge the 3x3 branch into the 7x7 one: one frozen depth-wise Conv2d (its Convs are folded first)."""
        if self.conv1 is None:
            return
        for branch in (self.conv, self.conv1):
            branch.fuse_deploy()
        conv, conv1 = self.conv.conv, self.conv1.conv
        conv.weight.copy_(conv.weight + nn.functional.pad(conv1.weight, [2, 2, 2, 2]))
        conv.bias.copy_(conv.bias + conv1.bias)
        self.conv = conv
        self.conv1 = None


@register_block("c1_c2", source=_SOURCE)
class CIB(nn.Module):
    """Compact inverted block: depth-wise / point-wise Conv sandwich with an optional large kernel."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, lk: bool = False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = nn.Sequential(
            Conv(c1, c1, 3, g=c1),
            Conv(c1, 2 * c_, 1),
            RepVGGDW(2 * c_) if lk else Conv(2 * c_, 2 * c_, 3, g=2 * c_),
            Conv(2 * c_, c2, 1),
            Conv(c2, c2, 3, g=c2),
        )
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv1(x) if self.add else self.cv1(x)


@register_block(C1_C2_N_MODERN, source=_SOURCE)
class C2fCIB(C2f):
    """C2f whose inner blocks are CIBs."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, lk: bool = False, g: int = 1,
                 e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(CIB(self.c, self.c, shortcut, e=1.0, lk=lk) for _ in range(n))
