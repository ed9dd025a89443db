"""Statistics of interleaved rounds (`yb compare`, `yb check`): each target's latency with its
interval, each ratio with a bootstrap interval over rounds, and the machine's verdict.

Why a ratio interval of its own: the ratio of two medians is not the ratio of two intervals.
Rounds are resampled as pairs (both targets of a round together), so drift common to a round
cancels as the interleaving intends, and the interval says what is left. A budget whose
limit lies inside the interval cannot be decided from this run (``yb check`` says
"inconclusive").
"""

from __future__ import annotations

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
    """The machine's verdict over all rounds; the spread is the widest target's IQR / median."""
    import torch

    from yoloblocks_cli.measuring import contention
    from yoloblocks_cli.measuring.stats import median_iqr

    spreads = [iqr / med for med, iqr in (median_iqr(s) for s in samples if s) if med > 0]
    return contention.assess(before, after, threads=int(torch.get_num_threads()), cpus=contention.usable_cpus(),
                             cuda=cuda, spread=max(spreads) if spreads else None, affinity=contention.affinity())


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
