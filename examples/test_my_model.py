"""An example test file for a project that adds its own blocks: copy it next to your code.

Run with ``pytest examples/test_my_model.py``. Each test is one of `yb check`'s verdicts as a
plain assertion; when it fails, the message names the input shape, the layer, the file:line
inside the block and, where recognised, the cause (square-only reshape, fixed token count...).
"""

from __future__ import annotations

import torch
from torch import nn

from yoloblocks_cli.checks.testing import assert_budget, assert_traces

# YOLO validation batches are rectangular (rect=True): feed both orientations and an odd size.
RECT_SIZES = ["64x40x40", "64x48x32", "64x32x48", "64x20x15"]


class TokenMixer(nn.Module):
    """A user's block: 1x1 projection, attention over all H*W tokens, residual."""

    def __init__(self, c1: int, heads: int = 4):
        super().__init__()
        self.qkv = nn.Conv2d(c1, 3 * c1, 1)
        self.proj = nn.Conv2d(c1, c1, 1)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape  # keep H and W: never int(sqrt(N))
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        attn = torch.softmax(q.transpose(-2, -1) @ k / (c // self.heads) ** 0.5, dim=-1)
        y = (v @ attn.transpose(-2, -1)).reshape(b, c, h, w)
        return x + self.proj(y)


def test_registered_block_traces_rectangular_sizes():
    assert_traces("C2f", sizes=RECT_SIZES)


def test_my_block_traces_and_is_batch_independent():
    assert_traces(TokenMixer(64), sizes=RECT_SIZES, probes=["batch", "finite"])


def test_my_block_budget():
    # 64 -> 192 (qkv) and 64 -> 64 (proj) 1x1 convolutions with bias: 12,480 + 4,160 parameters;
    # attention over 40x40 = 1,600 tokens costs more than both convolutions: ~0.71 GFLOPs.
    m = assert_budget(TokenMixer(64), size="64x40x40", max_params=16_640, max_gflops=0.75)
    assert m.params == 16_640


def test_shipped_block_budget_with_args():
    assert_budget("C2f", size="64x40x40", args=[64, 2], max_params=50_000)
