"""`yb check --shard K/N`: the K-th of N slices of the configuration's targets.

Why shards: a check of ten models with sweeps and probes is a long CI job; a
``strategy.matrix`` of N jobs, each running ``--shard K/N``, spreads it over N machines.

The slicing rule: a target and its latency reference must be timed in the same run (a
latency budget is a ratio measured in one process), so a target is kept with its
reference as one unit. Units, in file order, go round-robin: unit i to shard i mod N + 1.
Every target lands in exactly one shard, and the same file always gives the same slices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from yoloblocks_cli.errors import UsageError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N; anything else is bad input (exit 2)."""
    m = _SHARD.match(text)
    if not m:
        raise UsageError(f"malformed --shard '{text}': expected K/N, e.g. 1/4")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"malformed --shard '{text}': K must be between 1 and N (N >= 1)")
    return Shard(k, n)


def units(targets: list[Any], baseline_ratio: bool = False) -> list[list[Any]]:
    """Targets grouped with their latency references (transitively), in file order.

    A reference binds only where a verdict reads the ratio: a ``max_latency_ratio`` budget,
    or a baseline with a ``latency_ratio`` tolerance (``baseline_ratio``).
    """
    by_name = {t.name: t for t in targets}
    parent = {t.name: t.name for t in targets}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for t in targets:
        ref = getattr(t, "reference", None)
        if ref in by_name and (baseline_ratio or t.budgets.max_latency_ratio is not None):
            a, b = root(t.name), root(ref)
            if a != b:
                parent[max(a, b, key=_order(targets))] = min(a, b, key=_order(targets))
    groups: dict[str, list[Any]] = {}
    for t in targets:
        groups.setdefault(root(t.name), []).append(t)
    return list(groups.values())


def _order(targets: list[Any]) -> Any:
    pos = {t.name: i for i, t in enumerate(targets)}
    return lambda name: pos[name]


def select(cfg: Any, shard: Shard) -> Any:
    """The configuration restricted to this shard's targets (possibly none)."""
    baseline_ratio = cfg.baseline is not None and "latency_ratio" in cfg.baseline.tolerances
    picked = [t for i, unit in enumerate(units(cfg.targets, baseline_ratio)) if i % shard.count == shard.index - 1 for t in unit]
    order = {t.name: i for i, t in enumerate(cfg.targets)}
    return replace(cfg, targets=sorted(picked, key=lambda t: order[t.name]))
