"""A FLOP counter at ATen dispatch, on ``torch.utils.flop_counter``'s formula registry.

Why not ``FlopCounterMode`` itself: its ``__torch_dispatch__`` is wrapped by torch's
``_disable_dynamo``, whose first call imports ``torch._dynamo`` (about a second on a
2-core CPU) only to mark the hook as not compilable. A CLI that counts once and exits
would pay that second on every run. Our modes never run under ``torch.compile``, so
they opt out of the wrapping (``_should_skip_dynamo``, the switch torch documents).
This mode uses the same registry (torch's formulas plus the ones ``blocks.flop_formulas``
registers), so its totals are FlopCounterMode's; a test holds the two equal. It counts
on any device, ``meta`` included.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class PlainDispatchMode(TorchDispatchMode):
    """A dispatch mode that is never compiled, so torch does not wrap it for dynamo."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # no torch._dynamo import on first dispatch
        return False


class DispatchFlopCounter(PlainDispatchMode):
    """Sum of registered FLOP formulas over every ATen op run inside the mode.

    ``on_flops(func, flops)``, if given, is called for each op with a positive count, so a
    caller can attribute FLOPs to the module or torch function around the op.
    """

    def __init__(self, on_flops: Callable[[Any, int], None] | None = None):
        super().__init__()
        self.total = 0
        self.by_op: Counter[str] = Counter()
        self._on_flops = on_flops

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = getattr(func, "_overloadpacket", func)
        formula = flop_registry.get(packet)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
            if flops > 0:
                self.total += flops
                self.by_op[str(packet)] += flops
                if self._on_flops is not None:
                    self._on_flops(func, flops)
        return out
