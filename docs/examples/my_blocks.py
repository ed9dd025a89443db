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
