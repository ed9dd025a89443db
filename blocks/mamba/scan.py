"""``selective_scan``: one function, one torch op, any device.

The scan is defined as the torch custom op ``yoloblocks::selective_scan`` so that

- FLOP counters see ONE op with a registered formula (``blocks.flop_formulas``), instead
  of thousands of small aten ops (torch dispatch counter) or nothing at all (a CUDA
  extension called through pybind is invisible to every counter);
- autograd goes through one analytic backward (``scan_torch.scan_backward``).

Backends: ``torch`` (chunked pure PyTorch, :mod:`blocks.mamba.scan_torch`, every device)
and ``kernel`` (a CUDA extension when one is installed: ``selective_scan_cuda_core`` as
Mamba-YOLO/VMamba ship it, or ``selective_scan_cuda`` from ``mamba_ssm``). Choose with
``YB_SCAN=torch|kernel|auto`` or :func:`set_scan_backend`; ``auto`` (default) uses the
kernel for CUDA tensors when importable, torch otherwise.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

from blocks.flop_formulas import register_op_formula
from blocks.mamba.scan_torch import scan_backward, scan_forward

BACKENDS = ("auto", "torch", "kernel")
KERNEL_MODULES = ("selective_scan_cuda_core", "selective_scan_cuda")
_backend_override: str | None = None


# --- backend choice -----------------------------------------------------------------


def set_scan_backend(name: str | None) -> None:
    """Force ``torch``/``kernel``/``auto`` for this process; None falls back to ``$YB_SCAN``."""
    global _backend_override
    if name is not None and name not in BACKENDS:
        raise ValueError(f"scan backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _backend_override = name


def get_scan_backend() -> str:
    """The requested backend: :func:`set_scan_backend` value, else ``$YB_SCAN``, else auto."""
    name = _backend_override or os.environ.get("YB_SCAN", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"YB_SCAN must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def load_kernel() -> ModuleType | None:
    """The first importable CUDA selective-scan extension, or None."""
    for mod in KERNEL_MODULES:
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    return None


def resolve_backend(device: torch.device | str) -> str:
    """``"torch"`` or ``"kernel"`` for tensors on ``device`` under the current setting."""
    device = torch.device(device)
    want = get_scan_backend()
    if want == "torch":
        return "torch"
    kernel_ok = device.type == "cuda" and load_kernel() is not None
    if want == "kernel":
        if not kernel_ok:
            raise RuntimeError(
                "YB_SCAN=kernel needs CUDA tensors and an installed selective-scan extension "
                f"({' or '.join(KERNEL_MODULES)}); got device {device.type}"
                + ("" if device.type != "cuda" else " and no extension")
            )
        return "kernel"
    return "kernel" if kernel_ok else "torch"


# --- kernel calls (mamba_ssm / VMamba calling conventions) --------------------------


def _kernel_fwd(kmod: ModuleType, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Run the extension's forward; return (out, last_state, kernel_states)."""
    grouped_b = B if B.dim() == 4 else B.unsqueeze(1)
    grouped_c = C if C.dim() == 4 else C.unsqueeze(1)
    args = [t.contiguous() if t is not None else None for t in (u, delta, A, grouped_b, grouped_c, D)]
    if kmod.__name__.endswith("_core"):  # VMamba's core kernel has no z input
        out, states, *_ = kmod.fwd(*args, delta_bias, delta_softplus, 1)
        if z is not None:
            out = out * torch.nn.functional.silu(z)
    else:
        outs = kmod.fwd(*args, z, delta_bias, delta_softplus)
        out, states = (outs[2] if z is not None else outs[0]), outs[1]
    last = states[:, :, -1, 1::2]  # states hold interleaved (real, imag) pairs per chunk
    return out, last, states


def _kernel_bwd(kmod, grad_out, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    grouped_b = B if B.dim() == 4 else B.unsqueeze(1)
    grouped_c = C if C.dim() == 4 else C.unsqueeze(1)
    args = [t.contiguous() if t is not None else None for t in (u, delta, A, grouped_b, grouped_c, D)]
    dz = None
    if kmod.__name__.endswith("_core"):
        core, states, *_ = kmod.fwd(*args, delta_bias, delta_softplus, 1)  # no z in this kernel
        if z is not None:
            sig = torch.sigmoid(z)
            dz = grad_out * core * sig * (1 + z * (1 - sig))
            grad_out = grad_out * torch.nn.functional.silu(z)
        du, ddelta, dA, dB, dC, dD, dbias, *_ = kmod.bwd(
            *args, delta_bias, grad_out.contiguous(), states, delta_softplus, 1)
    else:  # mamba_ssm: bwd wants the un-gated out; dz comes after ddelta_bias
        out, states, *_ = kmod.fwd(*args, z, delta_bias, delta_softplus)
        du, ddelta, dA, dB, dC, dD, dbias, *rest = kmod.bwd(
            *args, z, delta_bias, grad_out.contiguous(), states, out, None, delta_softplus, False)
        dz = rest[0] if z is not None else None
    if B.dim() == 3:
        dB = dB.squeeze(1)
    if C.dim() == 3:
        dC = dC.squeeze(1)
    return du, ddelta, dA, dB, dC, dD, dz, dbias


# --- the custom op ------------------------------------------------------------------


@torch.library.custom_op("yoloblocks::selective_scan", mutates_args=())
def _selective_scan_op(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
    z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (out (b, D, L), last_state (b, D, N), checkpoints for the torch backward)."""
    if resolve_backend(u.device) == "kernel":
        out, last, _ = _kernel_fwd(load_kernel(), u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        return out, last, u.new_empty(0)
    return scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    bsz, dim, length = u.shape
    nstate = A.shape[-1]
    return u.new_empty(bsz, dim, length), u.new_empty(bsz, dim, nstate), u.new_empty(0)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    ctx.delta_softplus = delta_softplus
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])


def _backward(ctx, grad_out, grad_last, _grad_ckpt):
    u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
    if checkpoints.numel() == 0 and resolve_backend(u.device) == "kernel":
        grads = _kernel_bwd(load_kernel(), grad_out, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus)
    else:
        grads = scan_backward(grad_out, grad_last, checkpoints, u, delta, A, B, C, D, z, delta_bias,
                              ctx.delta_softplus)
    return (*grads, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan with ``mamba_ssm.selective_scan_fn``'s signature and layouts.

    u, delta: (b, D, L); A: (D, N) (real, negative); B, C: (b, N, L) or grouped
    (b, G, N, L); D, delta_bias: (D,); z: (b, D, L). Returns out (b, D, L), and the final
    state (b, D, N) when ``return_last_state``.
    """
    out, last, _ = torch.ops.yoloblocks.selective_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
    return (out, last) if return_last_state else out


# --- FLOP formula -------------------------------------------------------------------


def selective_scan_flops(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape=None, z_shape=None,
                         *_, **__) -> int:
    """FLOPs of one scan: 9*b*D*L*N (+ b*D*L for the D skip, + b*D*L for the z gate).

    Same count as the official ``flops_selective_scan_fn`` of VMamba / Mamba-YOLO. Per state
    element and step: dt*A (1), exp (1), dt*u*B (2), a*h + b (2), C*h accumulated (2), and
    1 for the softplus/bias share.
    """
    bsz, dim, length = u_shape
    nstate = A_shape[-1]
    flops = 9 * bsz * dim * length * nstate
    if D_shape is not None:
        flops += bsz * dim * length
    if z_shape is not None:
        flops += bsz * dim * length
    return int(flops)


register_op_formula("yoloblocks::selective_scan")(selective_scan_flops)
