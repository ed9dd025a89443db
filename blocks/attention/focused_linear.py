"""Focused Linear Attention (FLatten Transformer, seed 001), working on any H x W.

Paper: "FLatten Transformer: Vision Transformer using Focused Linear Attention",
arXiv:2308.00442 (LeapLabTHU/FLatten-Transformer). Kernel phi(x) = f_p(relu(x) + eps)
with the focusing function f_p(x) = ||x|| * x**p / ||x**p||, then linear attention

    out_i = phi(q_i) . sum_j phi(k_j)^T v_j  /  (phi(q_i) . sum_j phi(k_j) + 1e-6)  + DWC(v)_i

What the article's copy got wrong, and what is fixed here:

- ``num = int(sqrt(N))``: every non-square map failed (the article's own einops error,
  294 != 289, is a 14 x 21 validation batch). H and W come from the input;
- ``positional_encoding[:, :N]`` sliced a fixed 20 x 20 table: squares above 20 x 20 failed
  and smaller maps got the first N entries of the table, not a spatially matching grid.
  The table keeps its published shape (1, 400, C) and is resized bicubically to H x W;
  at exactly 20 x 20 it is used as is, so the output equals the published one there.
- the computation stays channel-first (B, C, N): no rearrange copies.

Parameter names and shapes are the published ones (``qkv``, ``proj``, ``positional_encoding``,
``dwc``, ``scale``): the article's checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.attention.common import PRESERVE_NOMINAL, like_input_format
from blocks.flop_formulas import register_module_macs
from blocks.registry import register_block

_SOURCE = "FLatten Transformer, arXiv:2308.00442 (seed 001)"


def resize_positional_table(table: torch.Tensor, grid: tuple[int, int], hw: tuple[int, int],
                            dtype: torch.dtype) -> torch.Tensor:
    """A (1, gh*gw, C) table as a channel-first (1, C, h*w) grid, bicubically resized if needed."""
    gh, gw = grid
    pe = table.view(1, gh, gw, -1).permute(0, 3, 1, 2)
    if (gh, gw) != tuple(hw):
        pe = F.interpolate(pe.float(), size=hw, mode="bicubic", align_corners=False)
    return pe.flatten(2).to(dtype)


def focus(t: torch.Tensor, p: float, dim: int = 1, gain: float = 1.0) -> torch.Tensor:
    """The focusing function ``||t|| * t**p / ||t**p||`` (times ``gain``) along ``dim``.

    Norms are taken as square roots of sums of squares: ``linalg.vector_norm`` over the
    channel axis of a channel-first tensor is an order of magnitude slower.
    """
    ss = (t * t).sum(dim, keepdim=True)
    if float(p) <= 6:
        tp = t ** p
    else:  # large powers overflow: normalise by the max first, as the paper's code does
        tp = (t / t.amax(dim=dim, keepdim=True)) ** p
    ssp = (tp * tp).sum(dim, keepdim=True)
    return tp * (ss.sqrt() / ssp.sqrt() * gain)


def focused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
                      p: float, heads: int) -> torch.Tensor:
    """phi(Q) (phi(K)^T V) / (phi(Q) . sum phi(K)) on channel-first (B, C, N) q, k, v.

    Numerator and denominator both carry a 1/N (the eps too), so sums over N stay small.
    """
    b, c, n = q.shape
    hd = c // heads
    q = focus((F.relu(q) + 1e-6) / scale, p).view(b, heads, hd, n)
    k = focus((F.relu(k) + 1e-6) / scale, p, gain=1.0 / n).view(b, heads, hd, n)
    v = v.view(b, heads, hd, n)
    z = 1.0 / (torch.matmul(k.sum(-1, keepdim=True).transpose(-2, -1), q) + 1e-6 / n)  # (B, heads, 1, N)
    if n > hd:  # linear order: (V K^T) first, O(N d^2)
        out = torch.matmul(torch.matmul(v, k.transpose(-2, -1)), q)
    else:  # tiny maps: the N x N kernel matrix is cheaper
        out = torch.matmul(v, torch.matmul(k.transpose(-2, -1), q))
    return (out * z).view(b, c, n)


@register_block(PRESERVE_NOMINAL, family="attention", source=_SOURCE, default_args=lambda c1: (c1,))
class FocusedLinearAttention(nn.Module):
    """Focused linear attention with a depth-wise conv on V; channel-preserving, any H x W."""

    def __init__(self, dim: int, window_size: tuple[int, int] | list[int] = (20, 20), num_heads: int = 8,
                 qkv_bias: bool = True, qk_scale: float | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, focusing_factor: float = 3, kernel_size: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"FocusedLinearAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        head_dim = dim // num_heads
        self.dim = dim
        self.num_heads = num_heads
        self.focusing_factor = focusing_factor
        self.window_size = tuple(window_size)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)  # kept from the published module, which never applies it
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.window_size[0] * self.window_size[1], dim))
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, groups=head_dim, padding=kernel_size // 2)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self._pe_cache: dict[tuple, torch.Tensor] = {}  # resized tables for inference, not state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n, nh = h * w, self.num_heads
        hd = c // nh
        # Linear layers as 1x1 convolutions: bias fused, any memory format, channel-first out.
        qkv = F.conv2d(x, self.qkv.weight[:, :, None, None], self.qkv.bias).flatten(2)  # (B, 3C, N)
        q, k, v = qkv.chunk(3, 1)
        v = v.contiguous()  # one copy, shared by the attention and the depth-wise conv
        k = k + self._positional(h, w, k.dtype)
        scale = F.softplus(self.scale).view(c, 1)
        if q.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
            # In 16 bits (1e-6)**3 underflows and a token with no positive feature gives
            # 0/0; the kernel part is ~1/16 of the block's FLOPs, so it runs in float32.
            with torch.autocast(x.device.type, enabled=False):
                out = focused_attention(q.float(), k.float(), v.float(), scale.float(), self.focusing_factor, nh)
            out = out.to(v.dtype)
        else:
            out = focused_attention(q, k, v, scale, self.focusing_factor, nh)
        out = out + self.dwc(v.view(b * nh, hd, h, w)).view(b, c, n)
        out = F.conv2d(out.view(b, c, h, w), self.proj.weight[:, :, None, None], self.proj.bias)
        return like_input_format(self.proj_drop(out), x)

    def _positional(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """The table on this grid. Without autograd the resized table is cached until the
        parameter changes (bicubic resizing costs ~10% of the block at 40 x 40)."""
        table = self.positional_encoding
        if torch.is_grad_enabled() or (h, w) == self.window_size:
            return resize_positional_table(table, self.window_size, (h, w), dtype)
        key = (h, w, dtype, table.device, table.data_ptr(), table._version)
        cached = self._pe_cache.get(key)
        if cached is None:
            with torch.inference_mode(False):
                cached = resize_positional_table(table.detach(), self.window_size, (h, w), dtype)
            if len(self._pe_cache) >= 8:
                self._pe_cache.clear()
            self._pe_cache[key] = cached
        return cached

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}"


@register_module_macs(FocusedLinearAttention)
def _fla_macs(m: FocusedLinearAttention, inputs: tuple, output: torch.Tensor) -> int:
    """MACs thop cannot see: ``qkv`` and ``proj`` (computed as 1x1 convs on their weights) and
    the attention products of the branch the block takes. ``dwc`` is a child module, counted by
    its own rule. (thop's count of the published module misses its three-operand einsum.)"""
    b, c, h, w = inputs[0].shape
    n, hd = h * w, c // m.num_heads
    linears = b * n * c * 4 * c
    z = b * n * c  # phi(q) . sum phi(k), per head
    products = 2 * b * n * c * hd if n > hd else 2 * b * n * n * c
    return linears + z + products
