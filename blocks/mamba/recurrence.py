"""A chunked first-order linear recurrence ``h_l = a_l * h_{l-1} + b_l``.

Why not a per-step loop: a loop of length L issues L tiny kernels, so Python and dispatch
overhead dominate (tens of microseconds per step). Here the sequence of length
``L = nc * T`` is stored *step-major*: position ``l = c*T + t`` lives at ``[t, c, ...]``
(see :func:`to_chunks`), so the block ``[t]`` holds step t of every chunk and every
channel, contiguously, and ``[t, c]`` one chunk's state (the trailing dims stay innermost,
so a caller can contract the last one with a matmul). Then

1. a first sweep runs the recurrence inside every chunk at once (T steps, each one
   ``addcmul`` over a contiguous block), from a zero state, keeping only each chunk's
   end state and the product of its decays;
2. the end states are carried across chunks (nc small steps), the coefficient of a
   chunk being the product of its ``a``;
3. a second sweep runs every chunk again, in place, from its true incoming state.

That is about ``2T + nc`` kernels instead of ``L``. Numerics: the decays ``a`` lie in
[0, 1] (exp of non-positive numbers) and only products of them are formed, never
inverses or exp of positive sums, so nothing overflows; a huge decay underflows to 0,
which is the exact limit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def chunk_length(length: int) -> int:
    """T ~ sqrt(L) balances the in-chunk loop (T steps) against the carry (L/T steps)."""
    return max(1, int(math.ceil(math.sqrt(max(length, 1)))))


def to_chunks(x: torch.Tensor, t_len: int, pad_value: float = 0.0) -> torch.Tensor:
    """(..., L) -> contiguous step-major (T, nc, ...), padding L up to nc*T at the end.

    May return a view of ``x`` (e.g. when T == 1); copy before writing into it.
    """
    length = x.shape[-1]
    n_chunks = -(-length // t_len)
    pad = n_chunks * t_len - length
    if pad:
        x = F.pad(x, (0, pad), value=pad_value)
    lead = x.dim() - 1
    return x.reshape(*x.shape[:-1], n_chunks, t_len).permute(lead + 1, lead, *range(lead)).contiguous()


def from_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`to_chunks`: (T, nc, ...) -> (..., L)."""
    rest = x.dim() - 2
    return x.permute(*range(2, 2 + rest), 1, 0).reshape(*x.shape[2:], -1)[..., :length]


def scan_chunks(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None,
                chunk_decay: torch.Tensor | None = None) -> torch.Tensor:
    """All states of the recurrence, for ``a`` and ``b`` in step-major layout (T, nc, ...).

    ``b`` is overwritten with the result (and returned); ``a`` is only read. ``h0``
    (shape ``(...)``) is the state before position 0. ``chunk_decay`` (shape ``(nc, ...)``),
    if the caller has it cheaper, is the product of ``a`` over each chunk (for
    ``a = exp(s)`` it is ``exp(sum of s)``: one small op instead of T large multiplies).
    """
    t_len, n_chunks = b.shape[0], b.shape[1]
    # sweep 1: each chunk's end state from a zero start (and the product of its decays)
    end = b[0].clone()
    prod = a[0].clone() if chunk_decay is None else None
    for t in range(1, t_len):
        end = torch.addcmul(b[t], a[t], end)
        if prod is not None:
            prod.mul_(a[t])
    decay_end = prod if prod is not None else chunk_decay  # (nc, ...)
    # carry: the state entering chunk c is the global state at the end of chunk c-1
    incoming = torch.empty((n_chunks + 1, *end.shape[1:]), dtype=b.dtype, device=b.device)
    if h0 is not None:
        incoming[0] = h0
    else:
        incoming[0].zero_()
    for c in range(n_chunks):
        torch.addcmul(end[c], decay_end[c], incoming[c], out=incoming[c + 1])
    # sweep 2: run every chunk again, in place, from its true incoming state
    h = b
    h[0].addcmul_(a[0], incoming[:-1])
    for t in range(1, t_len):
        h[t].addcmul_(a[t], h[t - 1])
    return h


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Convenience form for (..., L) tensors: returns h with the shape of ``b``."""
    length = b.shape[-1]
    if length == 0:
        return b.clone()
    t_len = chunk_length(length)
    # to_chunks may return a view of its input; scan_chunks works in place, so copy
    h = scan_chunks(to_chunks(a, t_len, 1.0), to_chunks(b, t_len).clone(), h0)
    return from_chunks(h, length)
