"""YOLO12's area attention: AAttn, ABlock and the A2C2f stage that stacks them.

Area attention splits the H*W tokens into ``area`` equal runs of rows and attends within each,
so its cost is quadratic in H*W/area, not in H*W. ultralytics' ``parse_model`` special-cases
A2C2f twice (the model's Detect head takes the non-legacy layout; scales l and x append
``residual=True, mlp_ratio=1.2``); both rules live in A2C2f's Convention below.
"""

from __future__ import annotations

import torch
from torch import nn

from blocks.c3k2 import C3k, modern_head
from blocks.conv import Conv
from blocks.conventions import C1_C2_N, Convention, LayerContext, Resolved, register_convention
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/block.py (YOLO12)"


@register_block("preserve", family="attention", source=_SOURCE, default_args=lambda c1: (max(c1 // 32, 1), 4))
class AAttn(nn.Module):
    """Multi-head self-attention within each of ``area`` horizontal strips, with a 7x7 depth-wise positional conv."""

    def __init__(self, dim: int, num_heads: int, area: int = 1):
        super().__init__()
        self.area = area
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.all_head_dim = self.head_dim * num_heads
        self.qkv = Conv(dim, self.all_head_dim * 3, 1, act=False)
        self.proj = Conv(self.all_head_dim, dim, 1, act=False)
        self.pe = Conv(self.all_head_dim, self.all_head_dim, 7, 1, 3, g=self.all_head_dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n, c = h * w, self.all_head_dim
        qkv = self.qkv(x).flatten(2).transpose(1, 2)  # (B, N, 3C)
        bb, nn_ = b, n
        if self.area > 1:  # (B * area, N / area, 3C): needs N divisible by area, as in ultralytics
            bb, nn_ = b * self.area, n // self.area
            qkv = qkv.reshape(bb, nn_, c * 3)
        q, k, v = qkv.view(bb, nn_, self.num_heads, self.head_dim * 3).permute(0, 2, 3, 1).split(
            [self.head_dim] * 3, dim=2)  # each (B', heads, head_dim, N')
        attn = ((q * self.head_dim ** -0.5).transpose(-2, -1) @ k).softmax(dim=-1)
        y = (v @ attn.transpose(-2, -1)).permute(0, 3, 1, 2)  # (B', N', heads, head_dim)
        v = v.permute(0, 3, 1, 2)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2)
        v = v.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.proj(y + self.pe(v))


@register_block("preserve", family="attention", source=_SOURCE, default_args=lambda c1: (max(c1 // 32, 1),))
class ABlock(nn.Module):
    """Area attention then a 1x1-conv MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 1.2, area: int = 1):
        super().__init__()
        self.attn = AAttn(dim, num_heads=num_heads, area=area)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1), Conv(hidden, dim, 1, act=False))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def _a2c2f(ctx: LayerContext) -> Resolved:
    res = C1_C2_N.resolve(ctx)
    modern_head(ctx)
    if ctx.scale in {"l", "x"}:
        res.args.extend((True, 1.2))  # residual, mlp_ratio
    return res


A2C2F_RULE = register_convention(Convention(
    "a2c2f",
    "as c1_c2_n; on scales l/x residual=True and mlp_ratio=1.2 are appended, and the model's Detect head is "
    "the non-legacy layout",
    _a2c2f, C1_C2_N.standalone,
))


@register_block(A2C2F_RULE, family="attention", source=_SOURCE)
class A2C2f(nn.Module):
    """C2f-style stage whose n inner blocks are two ABlocks each (a2) or a C3k; optional scaled residual."""

    def __init__(self, c1: int, c2: int, n: int = 1, a2: bool = True, area: int = 1, residual: bool = False,
                 mlp_ratio: float = 2.0, e: float = 0.5, g: int = 1, shortcut: bool = True):
        super().__init__()
        c_ = int(c2 * e)
        if c_ % 32:
            raise ValueError(f"A2C2f hidden width {c_} must be a multiple of 32 (heads of 32 channels)")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv((1 + n) * c_, c2, 1)
        self.gamma = nn.Parameter(0.01 * torch.ones(c2), requires_grad=True) if a2 and residual else None
        self.m = nn.ModuleList(
            nn.Sequential(*(ABlock(c_, c_ // 32, mlp_ratio, area) for _ in range(2))) if a2
            else C3k(c_, c_, 2, shortcut, g)
            for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        y = self.cv2(torch.cat(y, 1))
        return x + self.gamma.view(1, -1, 1, 1) * y if self.gamma is not None else y
