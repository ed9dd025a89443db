"""Statistics of timed runs: median, IQR, a confidence interval of the median, ratio intervals.

Why an interval: a median of ten runs on a shared machine can be off by 2x and look just as
precise as a good one. The interval says how far the true median may be from the printed
one, so a reader (and ``yb check``) can tell a difference from noise.

- :func:`median_ci`: distribution-free, from order statistics. The number of runs below the
  true median is Binomial(n, 1/2), so ``[x_(l), x_(n-l+1)]`` covers the median with
  probability ``1 - 2 P(B <= l-1)``; ``l`` is the largest index that keeps the coverage at
  or above the level asked for. No normality is assumed (latency is skewed: long tails).
  Below 6 runs no 95% interval exists; the widest one (min, max) is returned with its true,
  lower coverage in ``level``.
- :func:`ratio_ci`: a percentile bootstrap of median(A) / median(B) over interleaved rounds.
  Rounds are resampled as pairs (A and B of the same round stay together), so drift that
  hit both in one round cancels, as the interleaving intends. Seeded: the same samples give
  the same interval.
- :func:`converged` and :func:`warmup_settled`: the stopping rules of the adaptive timer.

Worked example: 20 runs, 95%: l = 6, so the interval is [6th, 15th] smallest run, with
coverage 1 - 2 * P(Binomial(20, 0.5) <= 5) = 0.9586.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

LEVEL = 0.95
ORDER_METHOD = "order statistics (binomial, distribution-free)"
BOOTSTRAP_METHOD = "bootstrap over interleaved rounds (percentile, paired)"


@dataclass(frozen=True)
class Interval:
    """``[low, high]`` with its actual coverage ``level`` (may be below the one asked for)."""

    low: float
    high: float
    level: float
    method: str

    def as_json(self) -> dict[str, Any]:
        return {"low": round(self.low, 6), "high": round(self.high, 6), "level": round(self.level, 4),
                "method": self.method}

    def rel_halfwidth(self, center: float) -> float:
        """The larger side of the interval as a fraction of ``center`` (``0.05`` = +-5%)."""
        if center <= 0:
            return math.inf
        return max(center - self.low, self.high - center) / center


@dataclass(frozen=True)
class Summary:
    """Median, IQR and the median's interval of one series of timed runs (ms)."""

    median: float
    iqr: float
    runs: int
    ci: Interval

    @property
    def rel_ci(self) -> float:
        return self.ci.rel_halfwidth(self.median)


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    """Median and inter-quartile range (inclusive quartiles, as ``statistics.quantiles``)."""
    values = list(values)
    if len(values) < 2:
        return (values[0] if values else 0.0), 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q[2] - q[0]


def _binom_half_cdf(n: int, k: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2), summed in log space (no overflow at large n)."""
    if k < 0:
        return 0.0
    log_half_n = -n * math.log(2.0)
    lg_n = math.lgamma(n + 1)
    return min(1.0, sum(math.exp(lg_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
                        for i in range(0, min(k, n) + 1)))


def order_index(n: int, level: float = LEVEL) -> tuple[int, float]:
    """The 1-based rank ``l`` of the lower bound and the interval's coverage, for ``n`` runs."""
    if n < 1:
        return 0, 0.0
    alpha_half = (1.0 - level) / 2.0
    if n > 1000:  # normal approximation of the binomial, then verified
        guess = max(1, int(math.floor(n / 2.0 - 1.959964 * math.sqrt(n) / 2.0)))
        return guess, 1.0 - 2.0 * _binom_half_cdf(n, guess - 1)
    best, cum = 1, 0.0
    log_half_n, lg_n = -n * math.log(2.0), math.lgamma(n + 1)
    for l in range(1, n // 2 + 1):  # coverage of rank l: 1 - 2 P(B <= l-1)
        cum += math.exp(lg_n - math.lgamma(l) - math.lgamma(n - l + 2) + log_half_n)  # P(B = l-1)
        if cum > alpha_half + 1e-12:
            break
        best = l
    return best, 1.0 - 2.0 * _binom_half_cdf(n, best - 1)


def median_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Distribution-free interval of the median (see the module docstring)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return Interval(0.0, 0.0, 0.0, ORDER_METHOD)
    if n == 1:
        return Interval(xs[0], xs[0], 0.0, ORDER_METHOD)
    l, coverage = order_index(n, level)
    return Interval(xs[l - 1], xs[n - l], coverage, ORDER_METHOD)


def summarize(values: Sequence[float], level: float = LEVEL) -> Summary:
    med, iqr = median_iqr(values)
    return Summary(med, iqr, len(values), median_ci(values, level))


def ratio_ci(num: Sequence[float], den: Sequence[float], level: float = LEVEL, resamples: int = 2000,
             seed: int = 0) -> Interval:
    """Bootstrap interval of median(num) / median(den); ``num[i]`` and ``den[i]`` are one round."""
    n = min(len(num), len(den))
    if n == 0:
        return Interval(math.nan, math.nan, 0.0, BOOTSTRAP_METHOD)
    a, b = list(num[:n]), list(den[:n])
    if a == b:  # a target against itself: the ratio is 1 in every resample
        return Interval(1.0, 1.0, level, BOOTSTRAP_METHOD)
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        d = statistics.median(b[i] for i in idx)
        if d > 0:
            ratios.append(statistics.median(a[i] for i in idx) / d)
    if not ratios:
        return Interval(math.nan, math.nan, 0.0, BOOTSTRAP_METHOD)
    ratios.sort()
    lo_i = int(math.floor((1 - level) / 2 * (len(ratios) - 1)))
    hi_i = int(math.ceil((1 + level) / 2 * (len(ratios) - 1)))
    return Interval(ratios[lo_i], ratios[hi_i], level, BOOTSTRAP_METHOD)


def judge(ci: Interval, limit: float) -> str:
    """``pass`` (the whole interval is within ``limit``), ``fail`` (wholly above) or ``inconclusive``."""
    if math.isnan(ci.low) or math.isnan(ci.high):
        return "inconclusive"
    if ci.high <= limit:
        return "pass"
    if ci.low > limit:
        return "fail"
    return "inconclusive"


def converged(values: Sequence[float], target_rel: float, level: float = LEVEL) -> bool:
    """True when the median's interval is within +-``target_rel`` at the full ``level``."""
    if len(values) < 2:
        return False
    s = summarize(values, level)
    return s.ci.level >= level - 1e-9 and s.rel_ci <= target_rel


def warmup_settled(times: Sequence[float], window: int = 3, tol: float = 0.10) -> bool:
    """True when the last ``window`` warm-up passes agree within ``tol`` (max/min - 1), the
    first (cold) pass excluded: caches, allocator pools and lazy initialisation are done."""
    if len(times) < window + 1:
        return False
    last = list(times[-window:])
    low = min(last)
    return low > 0 and max(last) / low - 1.0 <= tol
