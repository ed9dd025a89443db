"""Per-layer numbers of a built YAML model: output shape, FLOPs, share of latency.

One forward with hooks gives every layer's input and output; thop (as ultralytics counts)
gives each layer's MACs in one profiled pass; a few timed passes with pre/post hooks give
each layer's share of the forward time. Only the YAML's top-level layers are hooked, so
the cost is one hook pair per row.
"""

from __future__ import annotations

import io
import time
from contextlib import redirect_stdout
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
        from yoloblocks_cli.yaml_model import _jsonable

        return {"index": self.index, "from": self.from_, "n": self.n, "module": self.module,
                "args": _jsonable(self.args), "params": self.params, "output_shape": self.output_shape,
                "flops": self.flops, "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 6),
                "latency_share": None if self.latency_share is None else round(self.latency_share, 6),
                "line": self.line}


def shape_of(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (tuple, list)):
        return [shape_of(o) for o in out]
    if isinstance(out, dict):
        return {str(k): shape_of(v) for k, v in out.items()}
    return type(out).__name__


def layer_shapes(model: Any, x: Any) -> tuple[list[Any], Any]:
    """Output shape of every top-level layer, and the model output, from one forward."""
    import torch

    shapes: list[Any] = [None] * len(model.model)
    handles = [m.register_forward_hook(lambda mod, inp, out, k=k: shapes.__setitem__(k, shape_of(out)))
               for k, m in enumerate(model.model)]
    try:
        with torch.inference_mode():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, out


def layer_flops(model: Any, x: Any) -> list[int]:
    """2 x thop MACs per top-level layer at this input (ultralytics' per-layer convention)."""
    import thop

    with redirect_stdout(io.StringIO()):
        _, _, tree = thop.profile(model, inputs=(x,), verbose=False, ret_layer_info=True)
    per = tree.get("model", (0, 0, {}))[2]
    return [int(round(2 * float(per.get(str(k), (0,))[0]))) for k in range(len(model.model))]


def layer_latency(model: Any, x: Any, device: Any, runs: int = 3,
                  sync: Callable[[], None] | None = None) -> list[float]:
    """Fastest milliseconds per top-level layer over ``runs`` passes (after one warm-up).

    The minimum, not the median: with a handful of passes on a shared CPU, the fastest pass
    of each layer is the least disturbed estimate of its own cost."""
    import torch

    sync = sync or (lambda: None)
    starts: dict[int, float] = {}
    samples: list[list[float]] = [[] for _ in model.model]

    def pre(k: int) -> Callable:
        def hook(mod: Any, inp: Any) -> None:
            sync()
            starts[k] = time.perf_counter()
        return hook

    def post(k: int) -> Callable:
        def hook(mod: Any, inp: Any, out: Any) -> None:
            sync()
            samples[k].append((time.perf_counter() - starts[k]) * 1e3)
        return hook

    with torch.inference_mode():
        model(x)  # warm-up, untimed
        handles = []
        for k, m in enumerate(model.model):
            handles.append(m.register_forward_pre_hook(pre(k)))
            handles.append(m.register_forward_hook(post(k)))
        try:
            for _ in range(max(1, runs)):
                model(x)
        finally:
            for h in handles:
                h.remove()
    return [min(s) if s else 0.0 for s in samples]


def profile_layers(built: Any, x: Any, device: Any, *, latency_runs: int = 3,
                   sync: Callable[[], None] | None = None) -> list[LayerRow]:
    """The layer table of a :class:`~yoloblocks_cli.yaml_model.BuiltModel` at input ``x``."""
    model = built.model
    shapes, _ = layer_shapes(model, x)
    flops = layer_flops(model, x)
    times = layer_latency(model, x, device, latency_runs, sync) if latency_runs > 0 else None
    total = sum(times) if times else 0.0
    rows = []
    for k, info in enumerate(built.layers):
        t = times[k] if times else None
        rows.append(LayerRow(info.index, info.from_, info.n, info.module, info.args, info.params, shapes[k],
                             flops[k], t, (t / total) if (times and total > 0) else None, info.line))
    return rows
