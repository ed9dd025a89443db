"""Pieces shared by the seed attention blocks: their YAML convention and layout helpers."""

from __future__ import annotations

import torch

from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.flop_formulas import register_op_formula


def _resolve_nominal(ctx: LayerContext) -> Resolved:
    return Resolved([ctx.c1, *ctx.args[1:]], ctx.c1, repeats=ctx.n)


def _standalone_nominal(c1: int, rest: list | None) -> list:
    return [c1, *(rest or [])[1:]]


# The seed articles write channel-preserving blocks as ``[-1, 1, FocusedLinearAttention, [256]]``
# or ``[-1, 1, S2Attention, [1024]]``: the number is the width the author had in mind for one
# model scale, and the published code then used it as the block's width, which breaks at every
# other scale. Here it is read as a nominal width: the block is built on the real input width.
PRESERVE_NOMINAL = register_convention(Convention(
    "preserve_nominal",
    "channel-preserving; the first YAML arg is a nominal width (not used): "
    "args [c, ...] become (c1, ...); output width equals input width",
    _resolve_nominal, _standalone_nominal,
))


def like_input_format(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Give ``out`` the memory format of ``x`` (channels_last in -> channels_last out)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


@register_op_formula("aten::scaled_dot_product_attention")  # what fvcore's JIT trace shows
@register_op_formula("aten::_scaled_dot_product_flash_attention_for_cpu")
def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *_, **__) -> int:
    """Fused attention: torch's FLOP counter has formulas for the CUDA kernels only, fvcore none.
    (B, H, L, E) x (B, H, S, E) scores, then (B, H, L, S) x (B, H, S, Ev): 2 MACs-worth each."""
    b, h, n_q, e = q_shape
    s, ev = k_shape[-2], v_shape[-1]
    return 2 * b * h * n_q * s * (e + ev)
