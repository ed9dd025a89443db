"""docs/check.md, step 3: a later change doubles the projection (the budget catches it)."""

import torch
from torch import nn


class MyAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gate = x.flatten(2).softmax(dim=-1)  # (B, C, N): where each channel looks
        y = (gate * x.flatten(2)).reshape(b, c, h, w)
        return x + self.proj(y)
