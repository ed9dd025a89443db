"""A chunked first-order linear recurrence ``h_l = a_l * h_{l-1} + b_l``.

Why not a per-step loop: a loop of length L issues L tiny kernels, so Python and dispatch
overhead dominate (tens of microseconds per step). Here the sequence of length
``L = nc * T`` is stored *step-major*: position ``l = c*T + t`` lives at ``[t, ..., c]``
(see :func:`to_chunks`), so the block ``[t]`` holds step t of every chunk and every
channel, contiguously. Then

1. the recurrence runs inside every chunk at once: T steps, each one in-place
   ``addcmul`` over a contiguous block (all chunks start from a zero state);
2. the states at the chunk ends are carried across chunks (nc small steps), the
   coefficient of a chunk being the product of its ``a``;
3. every position adds its chunk's incoming state times the running product of ``a``.

That is about ``T + nc`` kernels instead of ``L``. Numerics: the decays ``a`` lie in
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
    """(..., L) -> contiguous step-major (T, ..., nc), padding L up to nc*T at the end.

    May return a view of ``x`` (e.g. when T == 1); copy before writing into it.
    """
    length = x.shape[-1]
    n_chunks = -(-length // t_len)
    pad = n_chunks * t_len - length
    if pad:
        x = F.pad(x, (0, pad), value=pad_value)
    return x.reshape(*x.shape[:-1], n_chunks, t_len).movedim(-1, 0).contiguous()


def from_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`to_chunks`: (T, ..., nc) -> (..., L)."""
    return x.movedim(0, -1).reshape(*x.shape[1:-1], -1)[..., :length]


def scan_chunks(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states of the recurrence, for ``a`` and ``b`` in step-major layout (T, ..., nc).

    ``b`` is overwritten with the result (and returned); ``a`` is overwritten with the
    running products of ``a`` inside each chunk. ``h0`` (shape ``(...)``) is the state
    before position 0.
    """
    t_len, n_chunks = b.shape[0], b.shape[-1]
    h = b
    for t in range(1, t_len):  # step 1: every chunk at once, from a zero state
        h[t].addcmul_(a[t], h[t - 1])
        a[t].mul_(a[t - 1])  # running product of the decays inside each chunk
    decay_end = a[-1].movedim(-1, 0).contiguous()  # (nc, ...)
    local_end = h[-1].movedim(-1, 0).contiguous()
    incoming = torch.empty_like(local_end)
    state = h0 if h0 is not None else torch.zeros_like(local_end[0])
    for c in range(n_chunks):  # step 2: carry across chunks
        incoming[c] = state
        state = torch.addcmul(local_end[c], decay_end[c], state)
    h.addcmul_(a, incoming.movedim(0, -1))  # step 3 (broadcast over T)
    return h


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Convenience form for (..., L) tensors: returns h with the shape of ``b``."""
    length = b.shape[-1]
    if length == 0:
        return b.clone()
    t_len = chunk_length(length)
    # to_chunks may return a view of its input; scan_chunks works in place, so copy
    h = scan_chunks(to_chunks(a, t_len, 1.0).clone(), to_chunks(b, t_len).clone(), h0)
    return from_chunks(h, length)
