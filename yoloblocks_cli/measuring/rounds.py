"""Statistics of interleaved rounds (`yb compare`, `yb check`): each target's latency with its
interval, each ratio with a bootstrap interval over rounds, and the machine's verdict.

Why a ratio interval of its own: the ratio of two medians is not the ratio of two intervals.
Rounds are resampled as pairs (both targets of a round together), so drift common to a round
cancels as the interleaving intends, and the interval says what is left. A budget whose
limit lies inside the interval cannot be decided from this run (``yb check`` says
"inconclusive").
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def latency_of(samples_ms: Sequence[float], verdict: Any = None) -> Any:
    """A target's :class:`~yoloblocks_cli.measuring.measure.LatencyStats` with its interval and the verdict."""
    from yoloblocks_cli.measuring.measure import LatencyStats
    from yoloblocks_cli.measuring.stats import summarize

    s = summarize(samples_ms)
    return LatencyStats(s.median, s.iqr, s.runs, ci=s.ci, contention=verdict, seconds=sum(samples_ms) / 1000.0)


def extra_json(stats: Any) -> dict[str, Any]:
    """Fields added to ``latency_ms`` by this module (never replacing median/iqr/runs)."""
    out: dict[str, Any] = {}
    if getattr(stats, "ci", None) is not None:
        out["ci"] = stats.ci.as_json()
        out["ci_rel"] = round(stats.ci.rel_halfwidth(stats.median_ms), 4) if stats.median_ms > 0 else None
    if getattr(stats, "contention", None) is not None:
        out["contention"] = stats.contention.as_json()
        out["noisy"] = stats.contention.noisy
    return out


def verdict_of(before: Any, after: Any, samples: Sequence[Sequence[float]], cuda: bool) -> Any:
    """The machine's verdict over all rounds, from the machine's readings alone.

    The runs' own spread is left out here: each ratio's bootstrap interval over the same
    rounds already carries it (a wide interval is inconclusive by itself). Judged as
    "noisy", a sub-millisecond block whose runs spread 31% on a quiet machine made every
    budget inconclusive (benchmarks/bench_latency_noise.py, load 0.87)."""
    import torch

    from yoloblocks_cli.measuring import contention

    return contention.assess(before, after, threads=int(torch.get_num_threads()), cpus=contention.usable_cpus(),
                             cuda=cuda, spread=None, affinity=contention.affinity(), online=contention.online_cpus())


def assign_ratios(results: Sequence[Any], samples: Sequence[Sequence[float]],
                  pick: Callable[[str], str | None]) -> None:
    """Set ``latency_ratio`` (ratio of medians), ``latency_ratio_ci`` and ``reference`` of each measurement."""
    from yoloblocks_cli.measuring.stats import ratio_ci

    index = {m.name: i for i, m in enumerate(results)}
    for i, m in enumerate(results):
        j = index.get(pick(m.name) or "")
        if j is None or m.latency is None or results[j].latency is None or results[j].latency.median_ms <= 0:
            continue
        ref = results[j]
        m.latency_ratio = m.latency.median_ms / ref.latency.median_ms
        m.latency_ratio_ci = ratio_ci(samples[i], samples[j])
        m.reference = ref.name


def ref_pairs(names: Sequence[str], pick: Callable[[str], str | None]) -> list[tuple[int, int]]:
    """(target, reference) index pairs whose ratio is reported."""
    index = {n: i for i, n in enumerate(names)}
    return [(i, index[r]) for i, n in enumerate(names) if (r := pick(n)) in index and index[r] != i]


def settled(samples: Sequence[Sequence[float]], pairs: Sequence[tuple[int, int]], target_rel: float) -> bool:
    """Every median and every ratio known to +-``target_rel`` (95%)."""
    from yoloblocks_cli.measuring.stats import converged, median_iqr, ratio_ci

    if not all(converged(s, target_rel) for s in samples):
        return False
    for i, j in pairs:
        den = median_iqr(samples[j])[0]
        if den <= 0:
            return False
        ratio = median_iqr(samples[i])[0] / den
        if ratio_ci(samples[i], samples[j], resamples=400).rel_halfwidth(ratio) > target_rel:
            return False
    return True


def timed_rounds(runners: Sequence[Callable[[], float]], rounds: int | None, warmup: int,
                 pairs: Sequence[tuple[int, int]] = (), *, min_rounds: int = 10, max_rounds: int = 2000,
                 max_seconds: float = 10.0, target_rel: float = 0.05,
                 clock: Callable[[], float] = time.perf_counter) -> list[list[float]]:
    """Interleaved rounds (each round times every runner once, starting one further along):
    exactly ``rounds`` when given, else until every median and ratio is known to +-5% (after
    ``min_rounds``), or ``max_seconds`` (at least 3 rounds), or ``max_rounds``."""
    n = len(runners)
    for _ in range(warmup):
        for run in runners:
            run()
    samples: list[list[float]] = [[] for _ in range(n)]
    started, next_check, r = clock(), min_rounds, 0
    while True:
        for k in range(n):
            i = (r + k) % n
            samples[i].append(runners[i]())
        r += 1
        if rounds is not None:
            if r >= rounds:
                return samples
            continue
        if r >= max_rounds or (clock() - started >= max_seconds and r >= 3):
            return samples
        if r >= next_check:
            next_check = max(r + 1, int(r * 1.1))
            if settled(samples, pairs, target_rel):
                return samples
