"""Example user blocks for `yb inspect docs/examples/my_blocks.py:MyAttention --size 64x20x20`.

A typical hand-written spatial self-attention: 1x1 convolutions make queries, keys and
values; the attention itself is two ``torch.matmul`` calls and a softmax, which module-hook
FLOP counters do not see unless they also count functional products.
"""

import torch
from torch import nn


class MyAttention(nn.Module):
    """Multi-head self-attention over all H*W positions, with a residual connection."""

    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        attn = torch.matmul(q.transpose(-2, -1), k) * self.scale  # (b, heads, hw, hw)
        attn = attn.softmax(dim=-1)
        out = torch.matmul(v, attn.transpose(-2, -1))  # (b, heads, c/heads, hw)
        return x + self.proj(out.reshape(b, c, h, w))


class KernelMix(nn.Module):
    """Dynamic convolution: a per-image mix of ``k`` 3x3 kernels applied with ``F.conv2d``.

    The convolution runs functionally (no ``nn.Conv2d`` module), as in CondConv/ODConv-style
    blocks, so a counter that only hooks modules cannot see it.
    """

    def __init__(self, c1: int, c2: int, k: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, c2, c1, 3, 3) * (c1 * 9) ** -0.5)
        self.route = nn.Linear(c1, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        mix = self.route(x.mean((2, 3))).softmax(-1)  # (b, k)
        kernels = torch.einsum("bk,koihw->boihw", mix, self.weight).flatten(0, 1)  # (b*c2, c1, 3, 3)
        out = torch.nn.functional.conv2d(x.reshape(1, b * c, h, w), kernels, padding=1, groups=b)
        return out.reshape(b, -1, h, w)
