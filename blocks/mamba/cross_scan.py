"""SS2D's cross scan: an image (b, c, H, W) as four 1-D sequences, and back.

Directions, for any H x W (square or not, odd or even):

0. row-major (left to right, top to bottom): ``x.flatten(2)``
1. column-major (top to bottom, left to right): ``x.transpose(2, 3).flatten(2)``
2. direction 0 reversed
3. direction 1 reversed

:func:`cross_merge` is the adjoint of :func:`cross_scan`: it maps each direction back to
row-major positions and sums, so ``cross_merge(cross_scan(x), H, W) == 4 * x.flatten(2)``.
Plain tensor ops: autograd differentiates them, and counters see only data movement.
"""

from __future__ import annotations

import torch

DIRECTIONS = 4


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) -> (b, 4, c, H*W)."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    fwd = torch.stack([rows, cols], dim=1)
    return torch.cat([fwd, fwd.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(b, 4, c, H*W) -> (b, c, H*W) in row-major order: the sum of the four directions."""
    bsz, k, c, length = ys.shape
    if k != DIRECTIONS or length != height * width:
        raise ValueError(f"cross_merge expects (b, 4, c, {height}*{width}), got {tuple(ys.shape)}")
    pair = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    cols = pair[:, 1].reshape(bsz, c, width, height).transpose(2, 3).reshape(bsz, c, length)
    return pair[:, 0] + cols
