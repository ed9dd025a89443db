"""fvcore's FLOP count from one JIT trace, without fvcore's per-module bookkeeping.

Why not ``FlopCountAnalysis.total()`` itself: before tracing, it puts a scope pre/post hook
on every submodule (450 on YOLOv8n) and afterwards attributes every graph node to each of
its ancestor modules. `yb` reads only the model's totals, so that work is a third of the
cost of fvcore's pass (about 45 ms at 640 on a 2-core CPU). Here the same graph
(``torch.jit._get_trace_graph``, as fvcore traces it) is walked once with the handles and
the ignore list of a ``FlopCountAnalysis`` instance, so the numbers are fvcore's: a test
holds total, unsupported ops and per-operator counts equal to ``FlopCountAnalysis``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Callable


@dataclass
class JitCount:
    """What ``FlopCountAnalysis`` reports for the root module: ``total()``,
    ``unsupported_ops()`` and ``by_operator()``."""

    total: int = 0
    unsupported: Counter = field(default_factory=Counter)
    by_operator: Counter = field(default_factory=Counter)


def fvcore_tables(extra_handles: dict[str, Callable]) -> tuple[dict, set]:
    """(op handles, ignored ops) exactly as a fresh ``FlopCountAnalysis`` starts with them,
    plus ``extra_handles``. Constructing an analysis does not trace; on an empty module it
    does not walk the model either."""
    import torch
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(torch.nn.Identity(), ())
    analysis.set_op_handle(**extra_handles)
    return dict(analysis._op_handles), set(analysis._ignored_ops)


def _ignored(kind: str, ignored_ops: set) -> bool:
    """fvcore's rule: listed ops and every ``prim::`` op except Python and scripted calls."""
    if kind in ignored_ops:
        return True
    if kind.startswith("prim::PythonOp") or kind.startswith("prim::CallFunction"):
        return False
    return kind.startswith("prim::")


def count_graph(graph: Any, handles: dict[str, Callable], ignored_ops: set) -> JitCount:
    """Walk a traced graph as ``JitModelAnalysis._analyze`` does for the root module."""
    result = JitCount()
    for node in graph.nodes():
        kind = node.kind()
        if kind == "prim::PythonOp":  # a torch.autograd.Function: fvcore names it by its Python name
            kind = f"{kind}.{node.pyname()}"
        handle = handles.get(kind)
        if handle is None:
            if not _ignored(kind, ignored_ops):
                result.unsupported[kind] += 1
            continue
        counts = handle(list(node.inputs()), list(node.outputs()))
        if isinstance(counts, Number):
            counts = Counter({kind[kind.find("::") + 2:] if "::" in kind else kind: counts})
        result.by_operator += counts  # Counter addition keeps positive entries only, as fvcore's does
    result.total = int(sum(result.by_operator.values()))
    return result


def jit_count(module: Any, inputs: tuple, extra_handles: dict[str, Callable]) -> JitCount:
    """Trace ``module(*inputs)`` once and count it with fvcore's handles (MACs)."""
    import torch

    handles, ignored_ops = fvcore_tables(extra_handles)
    graph, _ = torch.jit._get_trace_graph(module, inputs)
    return count_graph(graph, handles, ignored_ops)
