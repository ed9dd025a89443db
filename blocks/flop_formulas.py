"""FLOP formulas for custom ops and modules that generic counters cannot see.

A block that computes through its own op (e.g. the selective scan, registered as the
torch custom op ``yoloblocks::selective_scan``) declares its cost here, once, in the style
of ``torch/utils/flop_counter.py``: a small function registered by decorator. The
counters in ``yoloblocks_cli.measuring.flops`` read these tables:

- ``OP_FORMULAS[qualified_op_name](*input_shapes, **kw) -> FLOPs`` for the dispatch
  counter (torch) and for fvcore (whose jit trace shows the same op name);
- ``MODULE_MACS[cls](module, inputs, output) -> MACs`` for thop's ``custom_ops``.

Convention: FLOPs = 2 x MACs (a fused multiply-add is two FLOPs).
"""

from __future__ import annotations

from typing import Callable

OP_FORMULAS: dict[str, Callable[..., int]] = {}
MODULE_MACS: dict[type, Callable[..., int]] = {}


def register_op_formula(qualified_name: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register ``fn(*input_shapes, **kwargs) -> FLOPs`` for a custom op ``ns::name``.

    The formula receives the shapes of the op's tensor inputs (``None`` for non-tensors),
    in call order. It is also installed into torch's dispatch FLOP counter when the op
    exists, so ``torch.utils.flop_counter.FlopCounterMode`` counts it.
    """

    def decorator(fn: Callable[..., int]) -> Callable[..., int]:
        OP_FORMULAS[qualified_name] = fn
        _install_in_torch(qualified_name, fn)
        return fn

    return decorator


def register_module_macs(cls: type) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register ``fn(module, inputs, output) -> MACs`` used as a thop custom rule for ``cls``."""

    def decorator(fn: Callable[..., int]) -> Callable[..., int]:
        MODULE_MACS[cls] = fn
        return fn

    return decorator


def _install_in_torch(qualified_name: str, fn: Callable[..., int]) -> None:
    import torch
    from torch.utils.flop_counter import register_flop_formula

    ns, _, name = qualified_name.partition("::")
    try:
        packet = getattr(getattr(torch.ops, ns), name)
    except (AttributeError, RuntimeError):
        return  # the op is defined later; the op's module must register after defining it

    def formula(*args, out_shape=None, **kwargs):  # torch passes shapes of tensor args
        return int(fn(*args, **kwargs))

    register_flop_formula(packet)(formula)
