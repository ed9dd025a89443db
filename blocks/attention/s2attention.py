"""S2Attention: S2-MLPv2's spatial-shift + split-attention block (seed 004), any width.

Paper: "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision", arXiv:2108.01072.
An MLP expands C to 3C; the first two thirds are spatially shifted by one pixel (four
channel groups, four directions, two different direction orders), the third is left as is;
split attention (ResNeSt-style, over the three branches) fuses them; an MLP maps back to C.

What the article's copy got wrong, and what is fixed here:

- ``S2Attention`` built ``SplitAttention()`` with its default width 512: every other width
  failed. The split attention gets the layer's width;
- the spatial shifts assigned overlapping slices of a tensor to itself in place
  (``x[:, 1:] = x[:, :-1]``): the copy reads values it has already overwritten, so one
  border row is smeared over the whole map instead of shifting it. Shifts here read
  from the input and write into a new tensor (a border row keeps its own value, as meant);
- the YAML width ``[1024]`` was used as the constructor width although the input had been
  width-scaled (``width_multiple: 0.50`` gives 512): the block is built on the real input width.

Parameter names and shapes are the published ones (``mlp1``, ``mlp2``,
``split_attention.mlp1``, ``split_attention.mlp2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.attention.common import PRESERVE_NOMINAL
from blocks.registry import register_block

_SOURCE = "S2-MLPv2, arXiv:2108.01072 (seed 004)"

# (axis, direction) per channel quarter: axis 1 = rows (H), 2 = columns (W) of (B, H, W, C);
# +1 moves content to larger indices. Order as in the paper's two shift variants.
SHIFT1 = ((1, +1), (1, -1), (2, +1), (2, -1))
SHIFT2 = ((2, +1), (2, -1), (1, +1), (1, -1))


def _quarters(c: int) -> list[tuple[int, int]]:
    bounds = (0, c // 4, c // 2, c * 3 // 4, c)
    return [(bounds[i], bounds[i + 1]) for i in range(4)]


def spatial_shift(x: torch.Tensor, pattern: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Shift each channel quarter of a (B, H, W, C) tensor by one pixel, out of place.

    The border row/column a shift uncovers keeps its own value.
    """
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for (lo, hi), (axis, step) in zip(_quarters(x.shape[-1]), pattern):
        src, dst = x[..., lo:hi], out[..., lo:hi]
        size = x.shape[axis]
        if size == 1:
            dst.copy_(src)
            continue
        keep = 0 if step > 0 else size - 1  # the uncovered border index
        moved_dst = (slice(1, None) if step > 0 else slice(0, size - 1))
        moved_src = (slice(0, size - 1) if step > 0 else slice(1, None))
        idx = [slice(None)] * 4
        idx[axis] = moved_dst
        dst[tuple(idx)] = src[tuple(idx[:axis] + [moved_src] + idx[axis + 1:])]
        idx[axis] = slice(keep, keep + 1)
        dst[tuple(idx)] = src[tuple(idx)]
    return out


class SplitAttention(nn.Module):
    """Split attention over k branches: a softmax over branches, per channel, from their global sum."""

    def __init__(self, channel: int = 512, k: int = 3):
        super().__init__()
        self.channel = channel
        self.k = k
        self.mlp1 = nn.Linear(channel, channel, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = nn.Linear(channel, channel * k, bias=False)
        self.softmax = nn.Softmax(1)

    def weights(self, a: torch.Tensor) -> torch.Tensor:
        """Branch weights (B, k, C) from the summed descriptor a (B, C)."""
        hat_a = self.mlp2(self.gelu(self.mlp1(a)))
        return self.softmax(hat_a.view(a.shape[0], self.k, self.channel))

    def forward(self, x_all: torch.Tensor) -> torch.Tensor:
        """x_all: (B, k, H, W, C) -> (B, H, W, C), the published interface."""
        a = x_all.sum((1, 2, 3))
        bar_a = self.weights(a)
        return (bar_a[:, :, None, None, :] * x_all).sum(1)


@register_block(PRESERVE_NOMINAL, family="mlp", source=_SOURCE, default_args=lambda c1: (c1,))
class S2Attention(nn.Module):
    """S2-MLPv2 spatial-shift attention: expand to 3C, shift two thirds, split-attend, project."""

    def __init__(self, channels: int = 512):
        super().__init__()
        self.channels = channels
        self.mlp1 = nn.Linear(channels, channels * 3)
        self.mlp2 = nn.Linear(channels, channels)
        self.split_attention = SplitAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        t = self.mlp1(x.permute(0, 2, 3, 1))  # (B, H, W, 3C)
        x1 = spatial_shift(t[..., :c], SHIFT1)
        x2 = spatial_shift(t[..., c:2 * c], SHIFT2)
        x3 = t[..., 2 * c:]
        a = (x1.sum((1, 2)) + x2.sum((1, 2))) + x3.sum((1, 2))
        wgt = self.split_attention.weights(a)[:, :, None, None, :]  # (B, 3, 1, 1, C)
        fused = x1 * wgt[:, 0] + x2 * wgt[:, 1] + x3 * wgt[:, 2]
        return self.mlp2(fused).permute(0, 3, 1, 2)
