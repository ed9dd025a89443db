"""Convolution building blocks shared by every YOLO family (ultralytics' layout)."""

from __future__ import annotations

import torch
from torch import nn

from blocks.registry import register_block


def autopad(k: int | list[int], p: int | list[int] | None = None, d: int = 1) -> int | list[int]:
    """Padding that keeps the spatial size for stride 1 ('same'), dilation aware."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``conv`` with ``bn`` folded into its weight and bias (eval statistics), parameters frozen."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return conv.requires_grad_(False)


@register_block("c1_c2", source="ultralytics nn/modules/conv.py")
class Conv(nn.Module):
    """Conv2d + BatchNorm2d + SiLU, the unit every YOLO is made of."""

    # One activation instance shared by all Conv layers, as ultralytics does: its layer
    # count (`len(list(model.modules()))`) depends on that.
    default_act = nn.SiLU()

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                 g: int = 1, d: int = 1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    def fuse_deploy(self) -> None:
        """Fold the BatchNorm into the convolution (ultralytics' ``fuse``: the folded conv is frozen)."""
        if "bn" not in self._modules:
            return
        self.conv = fold_bn(self.conv, self.bn)
        del self.bn
        self.forward = self._forward_fused


@register_block("concat", family="utility", source="ultralytics nn/modules/conv.py")
class Concat(nn.Module):
    """Concatenate a list of tensors along a dimension (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)
