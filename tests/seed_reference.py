"""Straightforward reference formulas for the seed blocks, written independently of the blocks.

Token-major (B, N, C) layout, explicit permutes, N x N matrices and Python loops: slow and
obvious, so a layout or formula mistake in the fast channel-first blocks shows up as a mismatch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C) with the permute the published MLLA forgot."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def untokens(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def rope_2d_complex(t: torch.Tensor, h: int, w: int, base: float = 10000.0) -> torch.Tensor:
    """The paper's 2-D RoPE on (B, H, W, C) via complex numbers (C divisible by 4)."""
    c = t.shape[-1]
    k_max = c // 4
    theta = 1.0 / (base ** (torch.arange(k_max, dtype=torch.float64) / k_max))
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    angles = torch.cat((ii[..., None] * theta, jj[..., None] * theta), -1)  # (H, W, C/2)
    rot = torch.polar(torch.ones_like(angles), angles)
    tc = torch.view_as_complex(t.double().reshape(*t.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(tc * rot).flatten(-2).to(t.dtype)


def mlla_reference(m, x: torch.Tensor, scrambled: bool = False) -> torch.Tensor:
    """MLLA with the N x N kernel matrix materialised, per head.

    ``scrambled=True`` feeds the tokens the article's ``x.reshape(B, N, C)`` produced (C-major
    memory read as tokens, no permute), to show what that bug computes.
    """
    b, c, h, w = x.shape
    n, nh = h * w, m.num_heads
    hd = c // nh
    t = x.reshape(b, n, c) if scrambled else tokens(x)
    q, k = (F.elu(F.linear(t, m.qk.weight, m.qk.bias)) + 1.0).chunk(2, -1)
    qr = rope_2d_complex(q.reshape(b, h, w, c), h, w).reshape(b, n, c)
    kr = rope_2d_complex(k.reshape(b, h, w, c), h, w).reshape(b, n, c)
    out = torch.empty_like(t)
    for head in range(nh):
        s = slice(head * hd, (head + 1) * hd)
        kernel = qr[..., s] @ kr[..., s].transpose(1, 2) / n  # (B, N, N)
        denom = (q[..., s] @ k[..., s].transpose(1, 2)).mean(-1, keepdim=True) + 1e-6
        out[..., s] = kernel @ t[..., s] / denom
    return untokens(out, h, w) + m.lepe(untokens(t, h, w))


def fla_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Focused linear attention with the N x N kernel matrix phi(Q) phi(K)^T, per head."""
    b, c, h, w = x.shape
    n, nh = h * w, m.num_heads
    hd = c // nh
    q, k, v = F.linear(tokens(x), m.qkv.weight, m.qkv.bias).chunk(3, -1)
    gh, gw = m.window_size
    table = m.positional_encoding.reshape(1, gh, gw, c).permute(0, 3, 1, 2)
    if (gh, gw) != (h, w):
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
    k = k + tokens(table)
    scale = F.softplus(m.scale)

    def phi(t: torch.Tensor) -> torch.Tensor:
        t = (F.relu(t) + 1e-6) / scale
        p = t ** m.focusing_factor
        return p / p.norm(dim=-1, keepdim=True) * t.norm(dim=-1, keepdim=True)

    q, k = phi(q), phi(k)
    out = torch.empty_like(v)
    for head in range(nh):
        s = slice(head * hd, (head + 1) * hd)
        kernel = q[..., s] @ k[..., s].transpose(1, 2)  # (B, N, N)
        attn = (kernel @ v[..., s]) / (kernel.sum(-1, keepdim=True) + 1e-6)
        vmap = untokens(v[..., s], h, w)
        out[..., s] = attn + tokens(m.dwc(vmap))
    out = F.linear(out, m.proj.weight, m.proj.bias)
    return untokens(out, h, w)


def mqa_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Mobile MQA with an explicit softmax per head; K and V are the same for all heads."""
    b, _, h, w = x.shape
    if m.downsamples_query:
        xq = F.avg_pool2d(x, (m.query_h_strides, m.query_w_strides), ceil_mode=True)
        q = m._query_proj(m._query_downsampling_norm(xq))
    else:
        q = m._query_proj(x)
    hq, wq = q.shape[-2:]
    xk = m._key_dw_conv(x) if m.kv_strides > 1 else x
    xv = m._value_dw_conv(x) if m.kv_strides > 1 else x
    k, v = tokens(m._key_proj(xk)), tokens(m._value_proj(xv))  # (B, P, dk), (B, P, dv)
    qt = tokens(q)  # (B, L, heads*dk), head-major channels
    heads = []
    for j in range(m.num_heads):
        qj = qt[..., j * m.key_dim:(j + 1) * m.key_dim]
        logits = torch.einsum("bld,bpd->blp", qj, k) / m.key_dim ** 0.5
        heads.append(torch.einsum("blp,bpv->blv", logits.softmax(-1), v))
    o = untokens(torch.cat(heads, -1), hq, wq)
    if (hq, wq) != (h, w):
        o = F.interpolate(o, size=(h, w), mode="bilinear", align_corners=False)
    return m._output_proj(o)


def shift_reference(t: torch.Tensor, pattern) -> torch.Tensor:
    """One-pixel shifts by index arithmetic on a (B, H, W, C) tensor; uncovered borders kept."""
    c = t.shape[-1]
    bounds = (0, c // 4, c // 2, c * 3 // 4, c)
    out = t.clone()
    for g, (axis, step) in enumerate(pattern):
        size = t.shape[axis]
        src_index = torch.clamp(torch.arange(size) - step, 0, size - 1)
        part = t[..., bounds[g]:bounds[g + 1]].index_select(axis, src_index)
        out[..., bounds[g]:bounds[g + 1]] = part
    return out


def s2_reference(m, x: torch.Tensor) -> torch.Tensor:
    """S2Attention via the published stacked form, with out-of-place shifts."""
    from blocks.attention.s2attention import SHIFT1, SHIFT2

    c = x.shape[1]
    t = F.linear(x.permute(0, 2, 3, 1), m.mlp1.weight, m.mlp1.bias)
    x_all = torch.stack((shift_reference(t[..., :c], SHIFT1), shift_reference(t[..., c:2 * c], SHIFT2),
                         t[..., 2 * c:]), 1)  # (B, 3, H, W, C)
    a = x_all.sum(1).sum((1, 2))
    sa = m.split_attention
    weights = F.linear(F.gelu(F.linear(a, sa.mlp1.weight)), sa.mlp2.weight).reshape(-1, 3, c).softmax(1)
    fused = (weights[:, :, None, None, :] * x_all).sum(1)
    return F.linear(fused, m.mlp2.weight, m.mlp2.bias).permute(0, 3, 1, 2)
