"""Per-layer numbers of a built YAML model: output shape, FLOPs, share of latency.

One forward with hooks gives every layer's input and output; thop (as ultralytics counts)
gives each layer's MACs in one profiled pass; a few timed passes with pre/post hooks give
each layer's share of the forward time. Only the YAML's top-level layers are hooked, so
the cost is one hook pair per row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class LayerRow:
    """One row of the profile table (JSON ``layers[]``)."""

    index: int
    from_: Any
    n: int
    module: str
    args: list
    params: int
    output_shape: Any
    flops: int | None  # 2 x thop MACs at the measured size (ultralytics' convention)
    latency_ms: float | None = None
    latency_share: float | None = None
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        from yoloblocks_cli.loading.yaml_model import _jsonable

        return {"index": self.index, "from": self.from_, "n": self.n, "module": self.module,
                "args": _jsonable(self.args), "params": self.params, "output_shape": self.output_shape,
                "flops": self.flops, "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 6),
                "latency_share": None if self.latency_share is None else round(self.latency_share, 6),
                "line": self.line}


def layer_shapes_and_flops(model: Any, x: Any) -> tuple[list[Any], list[int], Any]:
    """One profiled forward: every top-level layer's output shape and 2 x thop MACs (with the
    formula registry's custom rules, as ``flops.count_flops`` counts), and the model output's shape."""
    import torch

    from yoloblocks_cli.measuring.flops import thop_macs
    from yoloblocks_cli.reporting.report import output_shape

    shapes: list[Any] = [None] * len(model.model)
    handles = [m.register_forward_hook(lambda mod, inp, out, k=k: shapes.__setitem__(k, output_shape(out)))
               for k, m in enumerate(model.model)]
    per: dict[str, float] = {}
    try:
        with torch.inference_mode():
            thop_macs(model, (x,), per)  # it profiles a deepcopy: the hooks (same functions) come along
    finally:
        for h in handles:
            h.remove()
    flops = [int(round(2 * per.get(f"model.{k}", 0.0))) for k in range(len(model.model))]
    return shapes, flops, shapes[-1]


class LayerTimer:
    """Pre/post hooks on the YAML layers that record each layer's time of every pass.

    On CPU it can stay attached while the model-level latency is measured (no
    synchronisation, a few microseconds per layer); on CUDA pass ``sync`` and use it alone.
    """

    def __init__(self, model: Any, sync: Callable[[], None] | None = None):
        self.model, self.sync = model, sync
        self.samples: list[list[float]] = [[] for _ in model.model]
        self._starts: dict[int, float] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "LayerTimer":
        for k, m in enumerate(self.model.model):
            self._handles.append(m.register_forward_pre_hook(self._pre(k)))
            self._handles.append(m.register_forward_hook(self._post(k)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _pre(self, k: int) -> Callable:
        def hook(mod: Any, inp: Any) -> None:
            if self.sync:
                self.sync()
            self._starts[k] = time.perf_counter()
        return hook

    def _post(self, k: int) -> Callable:
        def hook(mod: Any, inp: Any, out: Any) -> None:
            if self.sync:
                self.sync()
            if k in self._starts:
                self.samples[k].append((time.perf_counter() - self._starts.pop(k)) * 1e3)
        return hook

    def fastest_ms(self) -> list[float] | None:
        """The fastest pass of each layer: with few passes on a shared CPU, the least disturbed."""
        if not all(self.samples):
            return None
        return [min(s) for s in self.samples]


def layer_latency(model: Any, x: Any, runs: int = 3, sync: Callable[[], None] | None = None) -> list[float] | None:
    """Fastest milliseconds per YAML layer over ``runs`` passes."""
    import torch

    with torch.inference_mode(), LayerTimer(model, sync) as timer:
        for _ in range(max(1, runs)):
            model(x)
    return timer.fastest_ms()


def table_rows(built: Any, shapes: list[Any], flops: list[int], times: list[float] | None) -> list[LayerRow]:
    """Join the builder's per-layer facts with what was measured."""
    total = sum(times) if times else 0.0
    rows = []
    for k, info in enumerate(built.layers):
        t = times[k] if times else None
        rows.append(LayerRow(info.index, info.from_, info.n, info.module, info.args, info.params, shapes[k],
                             flops[k], t, (t / total) if (times and total > 0) else None, info.line))
    return rows


def profile_layers(built: Any, x: Any, *, latency_runs: int = 3,
                   sync: Callable[[], None] | None = None) -> list[LayerRow]:
    """The layer table of a :class:`~yoloblocks_cli.loading.yaml_model.BuiltModel` at input ``x``."""
    shapes, flops, _ = layer_shapes_and_flops(built.model, x)
    times = layer_latency(built.model, x, latency_runs, sync) if latency_runs > 0 else None
    return table_rows(built, shapes, flops, times)
