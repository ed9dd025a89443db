"""Selective scan (Mamba S6) in plain PyTorch: exact forward and analytic backward.

Semantics (mamba_ssm / VMamba ``selective_scan_fn``), per batch b, channel d, state n::

    dt_t = softplus(delta_t + delta_bias)   (or delta_t + delta_bias)
    h_t  = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B_t[n] * u_t
    y_t  = sum_n C_t[n] h_t[n] + D[d] u_t,   then   y_t *= silu(z_t)   when z is given

B and C are ``(b, G, N, L)``: channel d uses group ``d // (D / G)``.

Memory stays bounded: the sequence is processed in segments whose state tensor
``(b, D, N, segment)`` holds about ``SEGMENT_ELEMENTS`` numbers; the state at the start of
every segment is kept (tiny) so the backward pass recomputes one segment at a time.
Inside a segment the recurrence is the chunked one of :mod:`blocks.mamba.recurrence`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blocks.mamba.recurrence import chunk_length, from_chunks, scan_chunks, to_chunks

SEGMENT_ELEMENTS = 1 << 20
EXP_FLOOR = -80.0  # exp(-80) = 1.8e-35: a decay this small is 0 for every purpose  # numbers in one segment's (b, D, N, L_seg) state tensor


def _segment_length(batch: int, dim: int, nstate: int, length: int) -> int:
    return max(1, min(length, SEGMENT_ELEMENTS // max(1, batch * dim * nstate)))


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Upcast, apply bias/softplus, and view everything grouped as (b, G, Dg, ...)."""
    dtype = _compute_dtype(u)
    bsz, dim, length = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    groups, nstate = B.shape[1], B.shape[2]
    if dim % groups:
        raise ValueError(f"channels ({dim}) must be divisible by the B/C groups ({groups})")
    dg = dim // groups
    pre = delta.to(dtype)
    if delta_bias is not None:
        pre = pre + delta_bias.to(dtype)[:, None]
    dt = F.softplus(pre) if delta_softplus else pre
    shape = (bsz, groups, dg, length)
    return dict(
        dtype=dtype, bsz=bsz, dim=dim, L=length, G=groups, N=nstate, Dg=dg, pre=pre,
        u=u.to(dtype).reshape(shape), dt=dt.reshape(shape),
        A=A.to(dtype).reshape(groups, dg, nstate),
        x=(dt * u.to(dtype)).reshape(shape),
        B=B.to(dtype), C=C.to(dtype),
    )


def _segment_inputs(p, s0: int, s1: int):
    """Per-segment small tensors in step-major layout (T, nc, ...), zero-padded."""
    t_len = chunk_length(s1 - s0)
    ch = lambda x: to_chunks(x[..., s0:s1], t_len)  # noqa: E731
    dt = ch(p["dt"])  # padding dt = 0 gives decay exp(0) = 1 and input 0: a no-op step
    x = ch(p["x"])
    return t_len, dt, x, ch(p["B"]), ch(p["C"])


def _decay(dt_c: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """exp(dt * A) as (T, nc, b, G, Dg, N); dt >= 0 and A <= 0, so every value is in [0, 1].

    The exponent is clamped at ``EXP_FLOOR``: below about -87 float32 exp returns
    subnormals or 0 and takes a slow scalar path (~25x slower on x86). exp(-80) = 1.8e-35,
    so the clamp changes a decay by less than 2e-35 in absolute value. The clamp is a
    whole pass over the state, so it runs only when max(dt) * max|A| can reach the floor.
    """
    z = dt_c.unsqueeze(-1) * A
    if float(dt_c.max()) * float(A.abs().max()) > -EXP_FLOOR:
        z.clamp_(min=EXP_FLOOR)
    return z.exp_()


def _chunk_decay(dt_c: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Product of the decays over each chunk, exp(A * sum_t dt_t), as (nc, b, G, Dg, N)."""
    return (dt_c.sum(0).unsqueeze(-1) * A).clamp_(min=EXP_FLOOR).exp_()


def scan_forward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Return ``(out, last_state, checkpoints)``; checkpoints = state entering each segment."""
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    bsz, G, Dg, N, L = p["bsz"], p["G"], p["Dg"], p["N"], p["L"]
    seg = _segment_length(bsz, p["dim"], N, L)
    y = torch.empty(bsz, G, Dg, L, dtype=p["dtype"], device=u.device)
    state = torch.zeros(bsz, G, Dg, N, dtype=p["dtype"], device=u.device)
    checkpoints = []
    for s0 in range(0, L, seg):
        s1 = min(L, s0 + seg)
        checkpoints.append(state)
        t_len, dt, x, Bc, Cc = _segment_inputs(p, s0, s1)
        h = scan_chunks(_decay(dt, p["A"]), x.unsqueeze(-1) * Bc.unsqueeze(-2), state if s0 else None,
                        _chunk_decay(dt, p["A"]))
        last = s1 - s0 - 1
        state = h[last % t_len, last // t_len].clone()
        # y = C . h over the state (innermost, contiguous): one batched matmul reads h once
        y[..., s0:s1] = from_chunks(torch.matmul(h, Cc.unsqueeze(-1)).squeeze(-1), s1 - s0)
    y = y.reshape(bsz, p["dim"], L)
    if D is not None:
        y = y + D.to(p["dtype"])[:, None] * p["u"].reshape(bsz, p["dim"], L)
    if z is not None:
        y = y * F.silu(z.to(p["dtype"]))
    last = state.reshape(bsz, p["dim"], N)
    return y.to(u.dtype), last.to(u.dtype), torch.stack(checkpoints)


def scan_backward(grad_out, grad_last, checkpoints, u, delta, A, B, C, D=None, z=None,
                  delta_bias=None, delta_softplus=False):
    """Gradients for (u, delta, A, B, C, D, z, delta_bias); None where the input was None.

    Adjoint state: g_t = C_t dy_t + a_{t+1} g_{t+1}, the same recurrence run backwards in
    time; then dL/d(dt_t A) = g_t * a_t h_{t-1} = g_t * (h_t - b_t), which needs no shift.
    """
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    bsz, G, Dg, N, L, dim, dtype = p["bsz"], p["G"], p["Dg"], p["N"], p["L"], p["dim"], p["dtype"]
    seg = _segment_length(bsz, dim, N, L)
    u_flat = p["u"].reshape(bsz, dim, L)
    dy = grad_out.to(dtype) if grad_out is not None else torch.zeros(bsz, dim, L, dtype=dtype, device=u.device)

    dz = None
    if z is not None:  # out = core * silu(z); recompute core (rare path: Mamba-YOLO has no z)
        zf = z.to(dtype)
        sig = torch.sigmoid(zf)
        core, _, _ = scan_forward(u.to(dtype), delta.to(dtype), A, B, C, D, None, delta_bias, delta_softplus)
        dz = dy * core * (sig * (1 + zf * (1 - sig)))
        dy = dy * zf * sig
    dD = (dy * u_flat).sum((0, 2)) if D is not None else None
    du_flat = dy * D.to(dtype)[:, None] if D is not None else torch.zeros_like(u_flat)

    p["dy"] = dy.reshape(bsz, G, Dg, L)
    dt_next = torch.zeros_like(p["dt"])  # a_{t+1}; 0 at the segment end gives a = 1 there
    du = torch.zeros(bsz, G, Dg, L, dtype=dtype, device=u.device)
    ddt = torch.zeros_like(du)
    dA = torch.zeros(G, Dg, N, dtype=dtype, device=u.device)
    dB = torch.zeros(bsz, G, N, L, dtype=dtype, device=u.device)
    dC = torch.zeros(bsz, G, N, L, dtype=dtype, device=u.device)
    carry = (grad_last.to(dtype).reshape(bsz, G, Dg, N) if grad_last is not None
             else torch.zeros(bsz, G, Dg, N, dtype=dtype, device=u.device))
    starts = list(range(0, L, seg))
    for i in reversed(range(len(starts))):
        s0, s1 = starts[i], min(L, starts[i] + seg)
        n = s1 - s0
        start_state = checkpoints[i].to(dtype)
        t_len, dt, x, Bc, Cc = _segment_inputs(p, s0, s1)
        dyc = to_chunks(p["dy"][..., s0:s1], t_len)
        bx = x.unsqueeze(-1) * Bc.unsqueeze(-2)
        h = scan_chunks(_decay(dt, p["A"]), bx.clone(), start_state if s0 else None)
        # reversed-time scan, built directly in the flipped layout (flip T and nc)
        dt_next.zero_()
        dt_next[..., s0:s1 - 1] = p["dt"][..., s0 + 1:s1]
        a_rev = _decay(to_chunks(dt_next[..., s0:s1], t_len).flip(0, 1), p["A"])
        q_rev = Cc.flip(0, 1).unsqueeze(-2) * dyc.flip(0, 1).unsqueeze(-1)
        g = scan_chunks(a_rev, q_rev, carry).flip(0, 1)
        del a_rev, q_rev
        carry = g[0, 0] * (p["dt"][..., s0].unsqueeze(-1) * p["A"]).clamp_(min=EXP_FLOOR).exp_()
        dC[..., s0:s1] = from_chunks((dyc.unsqueeze(-1) * h).sum(-2), n)
        dB[..., s0:s1] = from_chunks((g * x.unsqueeze(-1)).sum(-2), n)
        dx = torch.matmul(g, Bc.unsqueeze(-1)).squeeze(-1)
        w = g.mul_(h.sub_(bx))  # dLoss/d(dt*A), in g's storage
        dA += (w * dt.unsqueeze(-1)).sum((0, 1, 2))
        ddt[..., s0:s1] = from_chunks((w * p["A"]).sum(-1) + dx * to_chunks(p["u"][..., s0:s1], t_len), n)
        du[..., s0:s1] = from_chunks(dx * dt, n)
    du = du.reshape(bsz, dim, L) + du_flat
    ddt = ddt.reshape(bsz, dim, L)
    dpre = ddt * torch.sigmoid(p["pre"]) if delta_softplus else ddt
    dbias = dpre.sum((0, 2)) if delta_bias is not None else None
    if B.dim() == 3:
        dB = dB.squeeze(1)
    if C.dim() == 3:
        dC = dC.squeeze(1)
    cast = lambda g, ref: None if g is None or ref is None else g.to(ref.dtype)  # noqa: E731
    return (cast(du, u), cast(dpre, delta), cast(dA.reshape(dim, N), A), cast(dB, B), cast(dC, C),
            cast(dD, D), cast(dz, z), cast(dbias, delta_bias))
