"""YOLOv9's GELAN family: RepConvN, RepNCSP, RepNCSPELAN4, ADown, SPPELAN, ELAN1, AConv.

The YOLOv9 repository and ultralytics' port build these with the same parameter tensors,
so one implementation serves both dialects (and the seed 002 MMQARepNCSPELAN4 block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv import Conv
from blocks.registry import register_block

_SOURCE = "YOLOv9 (arXiv:2402.13616), models/common.py"


@register_block("c1_c2", source=_SOURCE)
class RepConvN(nn.Module):
    """Re-parameterisable 3x3 + 1x1 convolution pair (no identity branch), summed then activated."""

    default_act = nn.SiLU()  # shared, as in the reference implementations

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int = 1, g: int = 1, d: int = 1,
                 act: bool | nn.Module = True, bn: bool = False, deploy: bool = False):
        super().__init__()
        if k != 3 or p != 1:
            raise ValueError(f"RepConvN needs k=3 and p=1, got k={k}, p={p}")
        self.g, self.c1, self.c2 = g, c1, c2
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()
        self.bn = None
        self.conv1 = Conv(c1, c2, k, s, p=p, g=g, act=False)
        self.conv2 = Conv(c1, c2, 1, s, p=(p - k // 2), g=g, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is None:  # fused
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def fuse_deploy(self) -> None:
        """Merge both branches into one frozen 3x3 Conv2d (ultralytics' ``RepConv.fuse_convs``)."""
        if self.conv1 is None:
            return
        for branch in (self.conv1, self.conv2):
            branch.fuse_deploy()
        a, b = self.conv1.conv, self.conv2.conv
        fused = nn.Conv2d(a.in_channels, a.out_channels, a.kernel_size, a.stride, a.padding, a.dilation, a.groups,
                          bias=True).requires_grad_(False)
        fused.weight.copy_(a.weight + nn.functional.pad(b.weight, [1, 1, 1, 1]))
        fused.bias.copy_(a.bias + b.bias)
        self.conv = fused
        self.conv1 = self.conv2 = None


@register_block("c1_c2", source=_SOURCE)
class RepNBottleneck(nn.Module):
    """Bottleneck whose first convolution is a RepConvN."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1,
                 k: tuple[int, int] = (3, 3), e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = RepConvN(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register_block("c1_c2_n", source=_SOURCE, aliases=("RepCSP",))
class RepNCSP(nn.Module):
    """C3-style CSP block built from RepNBottlenecks (ultralytics calls it RepCSP)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(RepNBottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


@register_block("c1_c2", source=_SOURCE, default_args=lambda c1: (c1, c1, c1 // 2, 1))
class RepNCSPELAN4(nn.Module):
    """GELAN block: split, two RepNCSP+Conv stages, concatenate every branch, fuse with a 1x1."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, c5: int = 1):
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, c5), Conv(c4, c4, 3, 1))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, c5), Conv(c4, c4, 3, 1))
        self.cv4 = Conv(c3 + (2 * c4), c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))


@register_block("c1_c2", source=_SOURCE + " (ultralytics port, YOLOv9t/s)",
                default_args=lambda c1: (c1, c1, c1 // 2))
class ELAN1(nn.Module):
    """Light GELAN block of YOLOv9t/s: plain convolutions instead of RepNCSP stages."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int):
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = Conv(c3 // 2, c4, 3, 1)
        self.cv3 = Conv(c4, c4, 3, 1)
        self.cv4 = Conv(c3 + (2 * c4), c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))


@register_block("c1_c2", source=_SOURCE)
class ADown(nn.Module):
    """Down-sampling by 2: average-pool, then half the channels through a strided 3x3, half through max-pool + 1x1."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1 // 2, self.c, 3, 2, 1)
        self.cv2 = Conv(c1 // 2, self.c, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2, 1, 0, False, True)
        x1, x2 = x.chunk(2, 1)
        x1 = self.cv1(x1)
        x2 = self.cv2(F.max_pool2d(x2, 3, 2, 1))
        return torch.cat((x1, x2), 1)


@register_block("c1_c2", source=_SOURCE + " (ultralytics port, YOLOv9t/s)")
class AConv(nn.Module):
    """Down-sampling by 2: average-pool then a strided 3x3 convolution."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv1(F.avg_pool2d(x, 2, 1, 0, False, True))


@register_block("c1_c2", source=_SOURCE, default_args=lambda c1: (c1, c1 // 2))
class SPPELAN(nn.Module):
    """SPP in ELAN form: a 1x1, three chained max-pools, all four concatenated and fused."""

    def __init__(self, c1: int, c2: int, c3: int, k: int = 5):
        super().__init__()
        self.c = c3
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cv3 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cv4 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.cv5 = Conv(4 * c3, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3, self.cv4))
        return self.cv5(torch.cat(y, 1))
