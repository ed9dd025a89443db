"""Mobile MQA of MobileNetV4 (seed 002), and the article's MMQARepNCSPELAN4, on any H x W.

Paper: "MobileNetV4 - Universal Models for the Mobile Ecosystem", arXiv:2404.10518 (reference
code: tensorflow/models ``OptimizedMultiQueryAttentionLayerWithDownSampling``; timm
``MultiQueryAttention2d``). Multi-query attention: every head has its own query, all heads
share one key and one value projection; keys/values may be down-sampled by a strided
depth-wise conv, queries by average pooling (then the output is up-sampled back):

    attention_j = softmax(Q_j K^T / sqrt(d_k)) V,  Q_j = X Wq_j,  K = SR(X) Wk,  V = SR(X) Wv

What the article's copy got wrong, and what is fixed here:

- ``context.view(bs, heads * key_dim, px, px)`` with ``px = q.size(2)``: non-square maps
  failed. The query grid is taken from the tensor itself;
- ``q.view(bs, heads, -1, key_dim)`` and ``v.view(bs, 1, -1, key_dim)`` split a (C, H, W)
  tensor as if it were (H, W, C): channels and positions were mixed. Queries are
  (B, heads, key_dim, N) here, and the output is produced channel-first directly;
- the query down-sampling called ``F.avg_pool2d(strides_h, strides_w)`` without the input,
  and nothing brought the output back to the input resolution. Queries are average-pooled
  (ceil mode, so 1 x N maps work), and the attention output is bilinearly resized to the
  input's H x W before the output projection, as the reference code does;
- the logits were scaled by ``(key_dim // heads) ** -0.5`` and dropout hit the logits before
  the softmax. The paper (and the reference code) scale by ``key_dim ** -0.5`` and drop
  attention weights;
- ``value_dim`` was ignored (values used ``key_dim``): it is honoured. With the published
  defaults (key_dim == value_dim) every parameter tensor has its published shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blocks.attention.common import like_input_format
from blocks.conv import Conv
from blocks.flop_formulas import register_module_macs
from blocks.gelan import RepNCSP
from blocks.registry import register_block

# Above this many attention scores (B * heads * L * P) the CPU path switches from explicit
# matmul + softmax to fused attention, which never materialises the score matrix.
EXPLICIT_MAX_SCORES = 1 << 24

_SOURCE = "MobileNetV4 Mobile MQA, arXiv:2404.10518 (seed 002)"


def conv_norm(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, norm: bool = False) -> nn.Sequential:
    """Bias-free Conv2d (+ BatchNorm2d) as a Sequential, laid out like the article's ``conv2d``
    helper so that state-dict keys (``_query_proj.0.weight``, ...) are the published ones."""
    layers: list[nn.Module] = [nn.Conv2d(c1, c2, k, s, (k - 1) // 2, groups=groups, bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(c2))
    return nn.Sequential(*layers)


@register_block("preserve", family="attention", source=_SOURCE, aliases=("MobileMQA",),
                default_args=lambda c1: (8, 48, 48, 1, 1, 1))
class MultiQueryAttentionLayerWithDownSampling(nn.Module):
    """Mobile MQA: multi-query attention with optional K/V and query down-sampling; any H x W."""

    def __init__(self, in_channels: int, num_heads: int, key_dim: int, value_dim: int,
                 query_h_strides: int = 1, query_w_strides: int = 1, kv_strides: int = 1,
                 dw_kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.query_h_strides = query_h_strides
        self.query_w_strides = query_w_strides
        self.kv_strides = kv_strides
        self.dw_kernel_size = dw_kernel_size
        self.head_dim = key_dim // num_heads  # published attribute, kept for introspection
        self.scale = key_dim ** -0.5
        if query_h_strides > 1 or query_w_strides > 1:
            self._query_downsampling_norm = nn.BatchNorm2d(in_channels)
        self._query_proj = conv_norm(in_channels, num_heads * key_dim)
        if kv_strides > 1:
            self._key_dw_conv = conv_norm(in_channels, in_channels, dw_kernel_size, kv_strides,
                                          groups=in_channels, norm=True)
            self._value_dw_conv = conv_norm(in_channels, in_channels, dw_kernel_size, kv_strides,
                                            groups=in_channels, norm=True)
        self._key_proj = conv_norm(in_channels, key_dim)
        self._value_proj = conv_norm(in_channels, value_dim)
        self._output_proj = conv_norm(num_heads * value_dim, in_channels)
        self.dropout = nn.Dropout(p=dropout)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q^T k * scale) v^T per head; q (B, heads, dk, L), k (B, dk, P), v (B, dv, P)
        -> (B, heads, dv, L), already in the channel-first order of the output projection."""
        b, heads, dk, n_q = q.shape
        p = k.shape[-1]
        drop = self.dropout.p if self.training else 0.0
        if q.device.type == "cpu" and b * heads * n_q * p <= EXPLICIT_MAX_SCORES:
            # Small maps on CPU: two matmuls and a softmax beat the fused kernel.
            attn = torch.matmul(q.transpose(-2, -1), (k * self.scale).unsqueeze(1)).softmax(-1)
            attn = F.dropout(attn, drop, self.training)  # (B, heads, L, P)
            return torch.matmul(v.unsqueeze(1), attn.transpose(-2, -1))
        # Fused attention (flash / memory-efficient): the score matrix is never stored. K and
        # V are shared, so the heads are stacked with the query positions: (B, 1, heads*L, dk).
        q = q.transpose(-2, -1).reshape(b, 1, heads * n_q, dk)
        k, v = (t.transpose(-2, -1).contiguous().unsqueeze(1) for t in (k, v))  # fused kernels want d last
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)  # (B, 1, heads*L, dv)
        return o.view(b, heads, n_q, self.value_dim).transpose(-2, -1)

    @property
    def downsamples_query(self) -> bool:
        return self.query_h_strides > 1 or self.query_w_strides > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.downsamples_query:
            xq = F.avg_pool2d(x, (self.query_h_strides, self.query_w_strides), ceil_mode=True)
            q = self._query_proj(self._query_downsampling_norm(xq))
        else:
            q = self._query_proj(x)
        hq, wq = q.shape[-2:]
        kv_in_k = self._key_dw_conv(x) if self.kv_strides > 1 else x
        kv_in_v = self._value_dw_conv(x) if self.kv_strides > 1 else x
        k = self._key_proj(kv_in_k).flatten(2)  # (B, dk, P)
        v = self._value_proj(kv_in_v).flatten(2)  # (B, dv, P)

        q = q.flatten(2).unflatten(1, (self.num_heads, self.key_dim))  # (B, heads, dk, L)
        o = self._attend(q, k, v).reshape(b, self.num_heads * self.value_dim, hq, wq)
        if self.downsamples_query and (hq, wq) != (h, w):
            o = F.interpolate(o, size=(h, w), mode="bilinear", align_corners=False)
        return like_input_format(self._output_proj(o), x)


@register_module_macs(MultiQueryAttentionLayerWithDownSampling)
def _mqa_macs(m: MultiQueryAttentionLayerWithDownSampling, inputs: tuple, output: torch.Tensor) -> int:
    """The attention products, whichever path computes them (fused attention is invisible to
    thop). The projections and down-sampling convs are child modules with their own rules."""
    b, _, h, w = inputs[0].shape
    n_q = -(-h // m.query_h_strides) * -(-w // m.query_w_strides) if m.downsamples_query else h * w
    if m.kv_strides > 1:
        pad, k, s = (m.dw_kernel_size - 1) // 2, m.dw_kernel_size, m.kv_strides
        p = ((h + 2 * pad - k) // s + 1) * ((w + 2 * pad - k) // s + 1)
    else:
        p = h * w
    return b * m.num_heads * n_q * p * (m.key_dim + m.value_dim)


@register_block("c1_c2", family="attention", source=_SOURCE + " in YOLOv9 RepNCSPELAN4, arXiv:2402.13616",
                default_args=lambda c1: (2 * c1, c1, c1 // 2, 1))
class MMQARepNCSPELAN4(nn.Module):
    """YOLOv9 RepNCSPELAN4 whose two 3x3 convs are replaced by Mobile MQA (8 heads, key/value dim 48)."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, c5: int = 1):
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, c5),
                                 MultiQueryAttentionLayerWithDownSampling(c4, 8, 48, 48, 1, 1, 1))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, c5),
                                 MultiQueryAttentionLayerWithDownSampling(c4, 8, 48, 48, 1, 1, 1))
        self.cv4 = Conv(c3 + (2 * c4), c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))
