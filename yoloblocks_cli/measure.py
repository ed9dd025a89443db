"""Measure several targets in ONE run: parameters, FLOPs, peak memory and interleaved latency.

Why interleave: on a laptop or a shared CI runner the clock drifts (thermal throttling,
another job starting). Timing A for ten seconds and then B for ten seconds puts all of
the drift on one side of the comparison. Here every round times each target once, and
the starting target rotates from round to round, so drift hits every target equally and
ratios between targets stay meaningful.

Engine pieces (``flops.count_flops``, ``bench.peak_memory``, ``device``) are used when
present; the small fallbacks below are marked and only run without them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from yoloblocks_cli.errors import CheckFailed, UsageError

COUNTERS = ("torch", "ultralytics", "fvcore")


@dataclass
class LatencyStats:
    median_ms: float
    iqr_ms: float
    runs: int

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median_ms, "iqr": self.iqr_ms, "runs": self.runs}


@dataclass
class Measurement:
    """What one target costs at one input shape (a row of `yb compare`, an entry of `yb check`)."""

    name: str
    kind: str  # "block" or "model"
    target: str  # the exact call or model file that was measured
    input_shape: list[int]
    params: int
    trainable: int = 0
    buffers: int = 0
    flops: dict[str, int | None] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)
    output_shape: Any = None
    latency: LatencyStats | None = None
    memory_peak: int | None = None
    memory_method: str | None = None
    latency_ratio: float | None = None  # latency / latency of `reference`, same run
    reference: str | None = None

    def gflops(self, counter: str = "torch") -> float | None:
        value = self.flops.get(counter)
        return None if value is None else value / 1e9

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "input_shape": list(self.input_shape),
            "output_shape": self.output_shape,
            "params": {"total": self.params, "trainable": self.trainable, "buffers": self.buffers},
            "flops": {**{c: self.flops.get(c) for c in COUNTERS}, "uncounted": list(self.uncounted)},
            "latency_ms": self.latency.as_json() if self.latency else None,
            "memory_bytes": ({"peak": self.memory_peak, "method": self.memory_method}
                             if self.memory_peak is not None else None),
            "latency_ratio": self.latency_ratio,
            "reference": self.reference,
        }


# ----------------------------------------------------------------------------- pure parts


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Median and inter-quartile range of timed runs."""
    xs = sorted(samples_ms)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        iqr = q3 - q1
    else:
        iqr = 0.0
    return LatencyStats(statistics.median(xs), iqr, len(xs))


def interleaved(runners: Sequence[Callable[[], float]], rounds: int, warmup: int = 1) -> list[list[float]]:
    """Round-robin timing: each round calls every runner once, starting one further along.

    A runner executes one forward pass and returns its duration in ms. Returns the
    samples of each runner, in the order of ``runners``.
    """
    n = len(runners)
    for _ in range(warmup):
        for run in runners:
            run()
    samples: list[list[float]] = [[] for _ in range(n)]
    for r in range(rounds):
        for k in range(n):
            i = (r + k) % n
            samples[i].append(runners[i]())
    return samples


# ----------------------------------------------------------------------------- torch parts


def resolve_device(text: str) -> Any:
    try:
        from yoloblocks_cli.device import resolve_device as engine_resolve
    except ImportError:  # local fallback until yoloblocks_cli.device lands
        import torch

        dev = torch.device(text)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {text}: CUDA is not available on this machine") from None
        return dev
    return engine_resolve(text)


def resolve_dtype(text: str) -> Any:
    try:
        from yoloblocks_cli.device import resolve_dtype as engine_dtype
    except ImportError:  # local fallback until yoloblocks_cli.device lands
        import torch

        table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if text not in table:
            raise UsageError(f"--dtype must be fp32, fp16 or bf16, got {text!r}") from None
        return table[text]
    return engine_dtype(text)


def synchronize(device: Any) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def count_params(module: Any) -> tuple[int, int, int]:
    params = list(module.parameters())
    return (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad),
            sum(b.numel() for b in module.buffers()))


def count_flops(module: Any, x: Any, counters: Sequence[str]) -> tuple[dict[str, int | None], list[str]]:
    try:
        from yoloblocks_cli.flops import count_flops as engine_count
    except ImportError:  # local fallback until yoloblocks_cli.flops lands: dispatch counter only
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as mode:
            module(x)
        return {"torch": mode.get_total_flops()}, []
    report = engine_count(module, x, counters=tuple(counters))
    return {c: getattr(report, c) for c in COUNTERS}, list(report.uncounted)


def peak_memory(module: Any, x: Any, device: Any) -> tuple[int | None, str | None]:
    try:
        from yoloblocks_cli.bench import peak_memory as engine_peak
    except ImportError:  # not measured until yoloblocks_cli.bench lands
        return None, None
    mem = engine_peak(module, x, device)
    return mem.peak_bytes, mem.method


def _shape_of(out: Any) -> Any:
    if hasattr(out, "shape"):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [_shape_of(o) for o in out]
    return None


def _runner(module: Any, x: Any, device: Any) -> Callable[[], float]:
    import torch

    def run() -> float:
        synchronize(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            module(x)
        synchronize(device)
        return (time.perf_counter() - t0) * 1e3

    return run


def measure(targets: Sequence[Any], device: str = "cpu", dtype: str = "fp32", *,
            counters: Sequence[str] = COUNTERS, latency: bool = True, memory: bool = True,
            rounds: int = 15, warmup: int = 3, reference: Callable[[str], str | None] | None = None,
            on_error: Callable[[Any, Exception], None] | None = None) -> list[Measurement]:
    """Measure :class:`~yoloblocks_cli.targets.Target` objects together.

    ``reference(name)`` gives the name of the target whose latency divides this one's
    (``latency_ratio``); by default the first target. A target whose forward pass raises
    is a :class:`CheckFailed`, or, with ``on_error``, reported there and left out.
    """
    import torch

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    prepared = []
    results: list[Measurement] = []
    for t in targets:
        module = t.module.to(device=dev, dtype=dt).eval()
        x = torch.randn(*t.shape.dims, device=dev, dtype=dt)
        total, trainable, buffers = count_params(module)
        try:
            with torch.no_grad():
                out = module(x)
        except Exception as exc:
            if on_error is not None:
                on_error(t, exc)
                continue
            raise CheckFailed(f"{t.call} failed on input {t.shape}: {exc.__class__.__name__}: {exc}") from exc
        flops, uncounted = count_flops(module, x, counters)
        m = Measurement(name=t.name, kind=t.kind, target=t.call, input_shape=list(t.shape.dims), params=total,
                        trainable=trainable, buffers=buffers, flops=flops, uncounted=uncounted,
                        output_shape=_shape_of(out))
        if memory:
            m.memory_peak, m.memory_method = peak_memory(module, x, dev)
        prepared.append((module, x))
        results.append(m)
    if latency and results:
        samples = interleaved([_runner(mod, x, dev) for mod, x in prepared], rounds=rounds, warmup=warmup)
        for m, s in zip(results, samples):
            m.latency = summarize(s)
        by_name = {m.name: m for m in results}
        pick = reference or (lambda name: results[0].name)
        for m in results:
            ref = by_name.get(pick(m.name) or "")
            if ref is not None and ref.latency and m.latency:
                m.latency_ratio = m.latency.median_ms / ref.latency.median_ms
                m.reference = ref.name
    return results
