"""Measure several targets in ONE run: parameters, FLOPs, peak memory and interleaved latency.

Why interleave: on a laptop or a shared CI runner the clock drifts (thermal throttling,
another job starting). Timing A for ten seconds and then B for ten seconds puts all of
the drift on one side of the comparison. Here every round times each target once, and
the starting target rotates from round to round, so drift hits every target equally and
ratios between targets stay meaningful.

Counting, memory and the timing of one pass come from the engine (``flops``, ``bench``,
``device``); this module only decides the order of the passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from yoloblocks_cli.errors import CheckFailed
from yoloblocks_cli.measuring.flops import COUNTERS


@dataclass
class LatencyStats:
    median_ms: float
    iqr_ms: float
    runs: int
    ci: Any = None  # stats.Interval of the median (measuring/rounds.py)
    contention: Any = None  # contention.Contention during the rounds
    seconds: float = 0.0  # wall time of this target's timed runs

    def as_json(self) -> dict[str, Any]:
        from yoloblocks_cli.measuring.rounds import extra_json

        return {"median": self.median_ms, "iqr": self.iqr_ms, "runs": self.runs, **extra_json(self)}


@dataclass
class Measurement:
    """What one target costs at one input shape: the result of :func:`.engine.measure`.

    A row of `yb compare`, an entry of `yb check`, one size of `yb inspect`, the whole of
    `yb profile` (with ``layers``), a point of `yb scale`. ``as_json()`` is the contract's
    per-size object; fields that were not measured are None (train ones are left out).
    """

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
    latency_ratio_ci: Any = None  # stats.Interval, bootstrap over rounds (measuring/rounds.py)
    seconds: float = 0.0  # wall time spent counting and measuring memory (not timing)
    flops_report: Any = None  # the full flops.FlopsReport (per-op counts, notes, MACs)
    memory: Any = None  # bench.Memory
    train_latency: Any = None  # bench.Latency of forward+backward
    train_memory: Any = None  # bench.Memory of forward+backward
    layers: list[Any] | None = None  # layer_profile.LayerRow per YAML layer (yb profile)

    def gflops(self, counter: str = "torch") -> float | None:
        value = self.flops.get(counter)
        return None if value is None else value / 1e9

    def as_json(self) -> dict[str, Any]:
        flops = (self.flops_report.as_json() if self.flops_report is not None else
                 {**{c: self.flops.get(c) for c in COUNTERS}, "uncounted": list(self.uncounted)})
        out = {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "input_shape": list(self.input_shape),
            "output_shape": self.output_shape,
            "params": {"total": self.params, "trainable": self.trainable, "buffers": self.buffers},
            "flops": flops,
            "latency_ms": self.latency.as_json() if self.latency else None,
            "memory_bytes": ({"peak": self.memory_peak, "method": self.memory_method}
                             if self.memory_peak is not None else None),
            "latency_ratio": self.latency_ratio,
            "reference": self.reference,
            "latency_ratio_ci": self.latency_ratio_ci.as_json() if self.latency_ratio_ci is not None else None,
        }
        if self.train_latency is not None:
            out["train_latency_ms"] = self.train_latency.as_json()
        if self.train_memory is not None:
            out["train_memory_bytes"] = self.train_memory.as_json()
        if self.layers is not None:
            out["layers"] = [row.as_json() for row in self.layers]
        return out


# ----------------------------------------------------------------------------- pure parts


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Median and inter-quartile range of timed runs (the engine's statistics)."""
    from yoloblocks_cli.measuring.bench import _median_iqr

    med, iqr = _median_iqr(list(samples_ms))
    return LatencyStats(med, iqr, len(samples_ms))


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


def _pct(value: float | None, first: float | None) -> float | None:
    return None if value is None or first is None or first == 0 else (value - first) / first * 100


def deltas_pct(m: Measurement, first: Measurement) -> dict[str, float | None]:
    """Relative change against the first target, in % (None where either side is missing or zero)."""
    lat = m.latency.median_ms if m.latency else None
    lat0 = first.latency.median_ms if first.latency else None
    out = {"params": _pct(m.params, first.params)}
    out.update({f"flops_{c}": _pct(m.flops.get(c), first.flops.get(c)) for c in COUNTERS})
    out["latency"] = _pct(lat, lat0)
    out["memory"] = _pct(m.memory_peak, first.memory_peak)
    return out


# ----------------------------------------------------------------------------- torch parts


def _runner(module: Any, x: Any, device: Any) -> Callable[[], float]:
    """One timed eval pass, exactly as :func:`yoloblocks_cli.measuring.bench.time_forward` times it."""
    from yoloblocks_cli.measuring import bench

    step = bench.make_step(module, x)
    if bench._is_cuda(device):
        return lambda: bench._time_cuda(step, device)
    return lambda: bench._time_cpu(step)


def measure(targets: Sequence[Any], device: str = "cpu", dtype: str = "fp32", *,
            counters: Sequence[str] = COUNTERS, latency: bool = True, memory: bool = True,
            rounds: int | None = 15, warmup: int = 3, reference: Callable[[str], str | None] | None = None,
            on_error: Callable[[Any, Exception], None] | None = None) -> list[Measurement]:
    """Measure :class:`~yoloblocks_cli.loading.targets.Target` objects together.

    ``reference(name)`` gives the name of the target whose latency divides this one's
    (``latency_ratio``); by default the first target. A target whose forward pass raises
    is a :class:`CheckFailed`, or, with ``on_error``, reported there and left out.
    """
    from yoloblocks_cli.device import resolve_device, resolve_dtype, synchronize
    from yoloblocks_cli.measuring.engine import Plan, make_input
    from yoloblocks_cli.measuring.engine import measure as engine_measure

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    plan = Plan(counters=tuple(counters), latency=False, memory=memory)
    prepared = []
    results: list[Measurement] = []
    for t in targets:
        started = time.perf_counter()
        try:
            m = engine_measure(t, t.shape, plan, device=dev, dtype=dt, dtype_label=dtype)
        except CheckFailed as exc:
            if on_error is None:
                raise
            on_error(t, exc.__cause__ or exc)
            continue
        m.seconds = time.perf_counter() - started  # building the input, counting, memory (JUnit time)
        prepared.append((t.module, make_input(t.shape, dev, dt)))
        results.append(m)
    if latency and results:
        from yoloblocks_cli.measuring import contention, rounds as stats_of

        synchronize(dev)
        before = contention.read()
        pick = reference or (lambda name: results[0].name)
        samples = stats_of.timed_rounds([_runner(mod, x, dev) for mod, x in prepared], rounds, warmup,
                                        stats_of.ref_pairs([m.name for m in results], pick))  # rounds=None: adaptive
        verdict = stats_of.verdict_of(before, contention.read(), samples, dev.type == "cuda")
        for m, s in zip(results, samples):
            m.latency = stats_of.latency_of(s, verdict)
        stats_of.assign_ratios(results, samples, pick)
    return results
