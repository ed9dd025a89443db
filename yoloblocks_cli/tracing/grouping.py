"""Group repeated failures: "fails at 31 of 40 validation shapes: every shape with H != W".

Why: a square-assuming block fails at most of 88 configurations with the same exception at
the same line; 60 identical paragraphs hide what matters, which is the one failure and the
rule that says where it strikes. A failure group is keyed by (probe, status, type, layer,
file:line, cause); its configurations are then described by the first registered pattern
that selects exactly them among the configurations of the same origin that ran.

Patterns are registered functions ``Shape -> bool`` with a text; add one with
:func:`register_pattern`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from yoloblocks_cli.loading.spec import Shape

Pattern = Callable[[Shape], bool]
_PATTERNS: list[tuple[str, Pattern]] = []


def register_pattern(text: str) -> Callable[[Pattern], Pattern]:
    """Decorator: a predicate on a configuration's shape, described by ``text``."""

    def deco(fn: Pattern) -> Pattern:
        _PATTERNS.append((text, fn))
        return fn

    return deco


register_pattern("every shape")(lambda s: True)
register_pattern("every shape with H != W")(lambda s: s.height != s.width)
register_pattern("every shape with H == W")(lambda s: s.height == s.width)
register_pattern("every shape with H < W")(lambda s: s.height < s.width)
register_pattern("every shape with H > W")(lambda s: s.height > s.width)
register_pattern("every shape with an odd H or W")(lambda s: s.height % 2 == 1 or s.width % 2 == 1)
register_pattern("every shape with H = 1 or W = 1")(lambda s: s.height == 1 or s.width == 1)
register_pattern("every shape at batch >= 2")(lambda s: s.batch >= 2)
register_pattern("every shape at batch 1")(lambda s: s.batch == 1)


def describe(failed: Sequence[Shape], ran: Sequence[Shape]) -> str | None:
    """The first pattern true for every failed shape and for no other shape that ran."""
    bad, good = set(failed), [s for s in ran if s not in set(failed)]
    for text, fn in _PATTERNS:
        if all(fn(s) for s in bad) and not any(fn(s) for s in good):
            return text
    return _by_size(bad, good)


def _by_size(bad: set[Shape], good: list[Shape]) -> str | None:
    """A threshold on H x W (a table built for one size, a memory limit)."""
    if not bad or not good:
        return None
    lo, hi = min(s.tokens for s in bad), max(s.tokens for s in good)
    if lo > hi:
        return f"every shape with H x W > {hi}"
    lo_good, hi_bad = min(s.tokens for s in good), max(s.tokens for s in bad)
    if hi_bad < lo_good:
        return f"every shape with H x W < {lo_good}"
    tokens = {s.tokens for s in good}
    if len(tokens) == 1:
        n = next(iter(tokens))
        return f"every shape with H x W != {n}"
    return None


@dataclass
class FailureGroup:
    """One distinct failure and the configurations it struck."""

    probe: str
    result: Any  # the ProbeResult of the first configuration (its failure is shown)
    labels: list[str] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)
    of: int = 0  # configurations that ran this probe (not skipped for another reason)
    pattern: str | None = None

    def summary(self) -> str:
        text = f"fails at {len(self.labels)} of {self.of} configurations"
        return text + (f": {self.pattern}" if self.pattern else "")

    def to_json(self) -> dict[str, Any]:
        f = self.result.failure
        return {"probe": self.probe, "status": self.result.status, "type": f.type if f else None,
                "layer": f.layer if f else None, "file": f.file if f else None, "line": f.line if f else None,
                "cause": f.cause if f else None, "configurations": list(self.labels), "of": self.of,
                "pattern": self.pattern}


def group_failures(points: Sequence[Any]) -> list[FailureGroup]:
    """Failures grouped by (probe, status, type, layer, file:line, cause), in first-seen order,
    each with the pattern that selects its configurations."""
    groups: dict[tuple, FailureGroup] = {}
    for p in points:
        for name, r in p.results.items():
            if not r.failed:
                continue
            f = r.failure
            key = (name, r.status) + ((f.type, str(f.layer), f.file, f.line, f.cause) if f else (r.detail,))
            g = groups.setdefault(key, FailureGroup(name, r))
            g.labels.append(p.label)
            g.shapes.append(p.shape)
    for (name, *_), g in groups.items():
        ran = [p.shape for p in points if name in p.results and not _not_applicable(p.results[name])]
        g.of = len(ran)
        g.pattern = describe(g.shapes, ran) if len(g.shapes) > 1 or len(ran) > 2 else None
    return list(groups.values())


def _not_applicable(r: Any) -> bool:
    """A cell skipped for a reason of its own (batch 1, numeric probe elsewhere), not because
    its configuration failed; such configurations did not run the probe."""
    return r.status == "skip" and not r.detail.startswith("not run:")
