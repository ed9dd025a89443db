"""MLLA: Mamba-Like Linear Attention (seed 000), working on any H x W.

Paper: "Demystify Mamba in Vision: A Linear Attention Perspective", arXiv:2405.16605
(LeapLabTHU/MLLA). The block is the paper's linear attention with RoPE and LePE:

    q, k = elu(x Wq) + 1, elu(x Wk) + 1;  v = x
    out_i = rope(q_i) . sum_j rope(k_j)^T v_j / N  /  (q_i . mean_j k_j + 1e-6)  + LePE(v)_i

What the article's copy got wrong, and what is fixed here:

- it took ``h = w = int(sqrt(N))``: any non-square map failed. H and W come from the input;
- it reshaped (B, C, H, W) to (B, N, C) without a permute, scrambling channels with
  positions. The computation here stays channel-first (B, C, N) throughout, so no permute
  is needed at all: projections are matmuls on the channel axis;
- its RoPE indexed the rotation grid by one spatial axis only and broadcast it against the
  other. The paper's 2-D RoPE is used: half of the channel pairs rotate with the row
  index, half with the column index.

Parameter tensors (``qk``, ``lepe``) keep the published names and shapes, so checkpoints
trained with the article's module load unchanged.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from blocks.attention.common import like_input_format
from blocks.flop_formulas import register_module_macs
from blocks.registry import register_block

_SOURCE = "MLLA, arXiv:2405.16605 (seed 000)"


@functools.lru_cache(maxsize=64)
def rope_tables(h: int, w: int, channels: int, base: float, device: torch.device,
                dtype: torch.dtype, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the 2-D RoPE angles, each (channels // 2, h * w).

    Channel pair p = (2p, 2p + 1) is one complex number. The first half of the pairs rotate
    by ``row * theta_p``, the second half by ``col * theta_p`` with
    ``theta_p = base ** (-p / k)`` (k pairs per axis), as in the paper's RoPE for (H, W, C).
    The angles are computed in float32: bf16 cannot even count positions past 256.
    Both tables are multiplied by ``scale``. Cached: they depend on the grid only.
    """
    with torch.inference_mode(False):  # cached tables must stay usable when autograd is on
        return _rope_tables(h, w, channels, base, device, dtype, scale)


def _rope_tables(h: int, w: int, channels: int, base: float, device: torch.device,
                 dtype: torch.dtype, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = channels // 2
    kh, kw = pairs // 2, pairs - pairs // 2
    rows = torch.arange(h, device=device, dtype=torch.float32)
    cols = torch.arange(w, device=device, dtype=torch.float32)
    th = base ** (-torch.arange(kh, device=device, dtype=torch.float32) / max(kh, 1))
    tw = base ** (-torch.arange(kw, device=device, dtype=torch.float32) / max(kw, 1))
    ang_h = (th[:, None, None] * rows[None, :, None]).expand(kh, h, w)
    ang_w = (tw[:, None, None] * cols[None, None, :]).expand(kw, h, w)
    angles = torch.cat((ang_h, ang_w), 0).reshape(pairs, h * w)
    return (angles.cos() * scale).to(dtype), (angles.sin() * scale).to(dtype)


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of a channel-first (B, C, N) tensor; an odd last channel is kept."""
    pairs = cos.shape[0]
    x0, x1 = t[:, : 2 * pairs].unflatten(1, (pairs, 2)).unbind(2)
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), 2).flatten(1, 2)
    if t.shape[1] > 2 * pairs:
        out = torch.cat((out, t[:, 2 * pairs:]), 1)
    return out


class RoPE(nn.Module):
    """2-D rotary position embedding on a channel-first (B, C, N) tensor of an H x W grid."""

    def __init__(self, base: float = 10000.0):
        super().__init__()
        self.base = base

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        cos, sin = rope_tables(hw[0], hw[1], t.shape[1], self.base, t.device, t.dtype)
        return apply_rope(t, cos, sin)


@register_block("preserve", family="attention", source=_SOURCE, default_args=lambda c1: ())
class MLLAttention(nn.Module):
    """Mamba-like linear attention with RoPE and LePE; channel-preserving, any H x W."""

    def __init__(self, dim: int = 3, input_resolution: tuple[int, int] | None = None,
                 num_heads: int = 4, qkv_bias: bool = True, **kwargs):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MLLAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.input_resolution = input_resolution  # accepted for compatibility; H, W come from the input
        self.num_heads = num_heads
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.elu = nn.ELU()
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.rope = RoPE()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = h * w
        nh, hd = self.num_heads, c // self.num_heads
        # The (C -> 2C) projection as a 1x1 convolution: bias fused, any memory format,
        # and the result is already channel-first (B, 2C, N).
        qk = F.conv2d(x, self.qk.weight[:, :, None, None], self.qk.bias).flatten(2)
        q, k = (self.elu(qk) + 1.0).chunk(2, 1)
        cos, sin = rope_tables(h, w, c, self.rope.base, x.device, x.dtype)
        cos_k, sin_k = rope_tables(h, w, c, self.rope.base, x.device, x.dtype, 1.0 / n)
        q_rope = apply_rope(q, cos, sin)
        k_rope = apply_rope(k, cos_k, sin_k)  # the 1/N of both N^-0.5 factors folded in

        v = x.flatten(2).view(b, nh, hd, n)  # (B, C, N): a view for NCHW and for channels_last
        q, k_mean = q.view(b, nh, hd, n), k.view(b, nh, hd, n).mean(-1, keepdim=True)
        z = 1.0 / (torch.matmul(k_mean.transpose(-2, -1), q) + 1e-6)  # (B, nh, 1, N)
        kv = torch.matmul(k_rope.view(b, nh, hd, n), v.transpose(-2, -1))  # (B, nh, hd_k, hd_v)
        out = torch.matmul(kv.transpose(-2, -1), q_rope.view(b, nh, hd, n))  # (B, nh, hd_v, N)
        out = (out * z).view(b, c, h, w) + self.lepe(x)
        return like_input_format(out, x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


@register_module_macs(MLLAttention)
def _mlla_macs(m: MLLAttention, inputs: tuple, output: torch.Tensor) -> int:
    """MACs thop cannot see: the ``qk`` projection (computed as a 1x1 conv on its weight, so its
    Linear hook never fires) and the three attention products. LePE is a child module, counted
    by its own rule. Equal to thop's count of the published module, which calls ``qk``."""
    b, c, h, w = inputs[0].shape
    n, hd = h * w, c // m.num_heads
    return b * n * c * 2 * c + b * n * c * (1 + 2 * hd)
