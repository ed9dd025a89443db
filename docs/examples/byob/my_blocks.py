"""A self-attention block as blog posts often write it (deliberately broken: see docs/byob.md)."""
import torch
from torch import nn


class MyBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual."""

    def __init__(self, c1: int):
        super().__init__()
        self.qkv = nn.Linear(c1, 3 * c1)
        self.proj = nn.Linear(c1, c1)
        self.scale = c1 ** -0.5

    def forward(self, x):
        b, c, _, _ = x.shape
        x = x.flatten(2).transpose(1, 2)          # (B, C, H, W) -> (B, N, C)
        n = x.shape[1]
        h = w = int(n ** 0.5)                     # the square assumption
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = (q @ k.transpose(1, 2) * self.scale).softmax(dim=-1)
        y = x + self.proj(attn @ v)
        return y.reshape(b, c, h, w)              # wrong unless H == W, and mixes N and C
