"""C2, the two-convolution CSP bottleneck that YOLOv8-p6 uses in its P6 stage (ultralytics' layout)."""

from __future__ import annotations

import torch
from torch import nn

from blocks.conv import Conv
from blocks.csp import Bottleneck
from blocks.registry import register_block


@register_block("c1_c2_n", source="ultralytics nn/modules/block.py")
class C2(nn.Module):
    """Split cv1's output in two; n Bottlenecks on one half; concatenate; 1x1 Conv."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat((self.m(a), b), 1))
