"""Budget verdicts: exact limits on parameters and FLOPs, a ratio limit on latency.

Parameters and FLOPs do not depend on the machine, so their budgets are absolute and
compared exactly. Latency does, so its budget is a ratio against a reference target
timed in the same run (see :mod:`yoloblocks_cli.measuring.measure`): "my block may be at most
1.5x as slow as C2f", which holds on a laptop and on a CI runner alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yoloblocks_cli.checks.config import Budgets
from yoloblocks_cli.measuring.measure import Measurement


@dataclass
class Finding:
    """One verdict of `yb check` (a JUnit test case)."""

    target: str
    check: str  # e.g. "max_params", "sweep 64x48x32", "probe batch", "baseline gflops"
    ok: bool
    message: str
    skipped: bool = False  # not applicable here (e.g. the batch probe at batch 1); counts as ok
    seconds: float = 0.0  # time of the work behind the verdict (a JUnit testcase's time)

    @property
    def status(self) -> str:
        return "skip" if self.skipped else "pass" if self.ok else "FAIL"

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "check": self.check, "ok": self.ok, "status": self.status.lower(),
                "message": self.message}


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_gflops(g: float) -> str:
    """Fixed decimals by magnitude: small blocks cost 0.01 GFLOPs, models hundreds."""
    if g >= 100:
        return f"{g:,.1f}"
    if g >= 1:
        return f"{g:.2f}"
    if g >= 0.01:
        return f"{g:.3f}"
    if g <= 0:
        return "0"
    import math

    return f"{g:.{min(9, 2 - math.floor(math.log10(g)))}f}"  # three significant digits, no exponent


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def fmt_ratio(r: float) -> str:
    """``1.23`` for ordinary ratios; three significant digits for tiny ones (never ``0.00``)."""
    return f"{r:.2f}" if abs(r) >= 0.1 or r == 0 else f"{r:.3g}"


def _over(value: float, limit: float) -> str:
    return f"{(value - limit) / limit * 100:.1f}% over" if limit else "limit is 0"


def evaluate_budgets(m: Measurement, budgets: Budgets, counter: str = "torch") -> list[Finding]:
    """Every budget set for a target -> one finding each (in the order params, GFLOPs, latency)."""
    out: list[Finding] = []
    if budgets.max_params is not None:
        limit = budgets.max_params
        if m.params <= limit:
            out.append(Finding(m.name, "max_params", True, f"params {fmt_int(m.params)} <= {fmt_int(limit)}"))
        else:
            out.append(Finding(m.name, "max_params", False,
                               f"params {fmt_int(m.params)} > max_params {fmt_int(limit)} "
                               f"(+{fmt_int(m.params - limit)}, {_over(m.params, limit)})"))
    if budgets.max_gflops is not None:
        limit_g = budgets.max_gflops
        flops = m.flops.get(counter)
        if flops is None:
            out.append(Finding(m.name, "max_gflops", False,
                               f"GFLOPs ({counter}) unavailable: the {counter} counter did not produce a number"))
        elif flops <= limit_g * 1e9:
            out.append(Finding(m.name, "max_gflops", True,
                               f"GFLOPs ({counter}) {fmt_gflops(flops / 1e9)} <= {limit_g:g}"))
        else:
            out.append(Finding(m.name, "max_gflops", False,
                               f"GFLOPs ({counter}) {fmt_gflops(flops / 1e9)} > max_gflops {limit_g:g} "
                               f"({_over(flops / 1e9, limit_g)})"))
    if budgets.max_latency_ratio is not None:
        limit_r = budgets.max_latency_ratio
        ratio = m.latency_ratio
        if ratio is None:
            out.append(Finding(m.name, "max_latency_ratio", False, "latency ratio unavailable: not timed"))
        elif ratio <= limit_r:
            out.append(Finding(m.name, "max_latency_ratio", True,
                               f"latency {fmt_ratio(ratio)}x {m.reference} <= {limit_r:g}x"))
        else:
            out.append(Finding(m.name, "max_latency_ratio", False,
                               f"latency {fmt_ratio(ratio)}x {m.reference} > max_latency_ratio {limit_r:g}x"))
    return out
