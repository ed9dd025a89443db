"""Baselines: compare a run with a previous `yb check --json` result; rewrite it atomically.

A baseline is an ordinary report (schema ``yoloblocks.report/1``) with a ``targets`` list;
entries are matched by ``name``. Only metrics given a tolerance are compared, and only
increases count as regressions: a block that got cheaper always passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from yoloblocks_cli.checks.budget import Finding, fmt_gflops, fmt_int, fmt_ratio
from yoloblocks_cli.checks.config import Tolerance
from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.measuring.measure import Measurement

SCHEMA = "yoloblocks.report/1"


def load_baseline(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a baseline report -> {target name: entry}; a broken file is bad input (exit 2)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"baseline file {p} not found: create it with `yb check --update-baseline`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"baseline file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"baseline file {p} is not a yb report (expected schema {SCHEMA!r})")
    targets = data.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, dict) and "name" in t for t in targets):
        raise UsageError(f"baseline file {p} has no 'targets' list: write it with `yb check --json` "
                         "or `yb check --update-baseline`")
    return {t["name"]: t for t in targets}


def _old_value(entry: Mapping[str, Any], metric: str, counter: str) -> float | None:
    if metric == "params":
        params = entry.get("params")
        return params.get("total") if isinstance(params, dict) else params
    if metric == "gflops":
        flops = (entry.get("flops") or {}).get(counter)
        return None if flops is None else flops / 1e9
    return entry.get("latency_ratio")


def _new_value(m: Measurement, metric: str, counter: str) -> float | None:
    if metric == "params":
        return m.params
    if metric == "gflops":
        return m.gflops(counter)
    return m.latency_ratio


def _fmt(metric: str, value: float) -> str:
    if metric == "params":
        return fmt_int(int(value))
    if metric == "gflops":
        return fmt_gflops(value)
    return f"{fmt_ratio(value)}x"


def _change(metric: str, old: float, new: float) -> str:
    diff = new - old
    absolute = f"{'+' if diff >= 0 else '-'}{_fmt(metric, abs(diff))}"
    pct = f", {diff / old * 100:+.2f}%" if old else ""
    return f"({absolute}{pct})"


def diff_baseline(measurements: Sequence[Measurement], baseline: Mapping[str, Mapping[str, Any]],
                  tolerances: Mapping[str, Tolerance], counter: str = "torch") -> list[Finding]:
    """One finding per (target, metric with a tolerance); a target new since the baseline gets one note."""
    out: list[Finding] = []
    for m in measurements:
        entry = baseline.get(m.name)
        if entry is None:
            out.append(Finding(m.name, "baseline", True, "not in the baseline (new target)"))
            continue
        for metric, tol in tolerances.items():
            new, old = _new_value(m, metric, counter), _old_value(entry, metric, counter)
            if new is None:
                continue  # not measured in this run (e.g. no latency reference for this target)
            check = f"baseline {metric}"
            if old is None:
                out.append(Finding(m.name, check, True, f"{metric} not in the baseline entry"))
                continue
            text = f"{metric} {_fmt(metric, old)} -> {_fmt(metric, new)} {_change(metric, old, new)}"
            if metric == "latency_ratio" and getattr(m, "latency_ratio_ci", None) is not None:
                from yoloblocks_cli.checks.budget import ratio_verdict

                verdict, why = ratio_verdict(m, tol.limit(old))
                if verdict == "inconclusive":
                    out.append(Finding(m.name, check, True, f"{text} vs tolerance {tol}: inconclusive, {why}",
                                       inconclusive=True))
                    continue
                out.append(Finding(m.name, check, verdict == "pass",
                                   f"{text} {'within' if verdict == 'pass' else 'exceeds'} tolerance {tol}"))
            elif new <= tol.limit(old):
                out.append(Finding(m.name, check, True, f"{text} within tolerance {tol}"))
            else:
                out.append(Finding(m.name, check, False, f"{text} exceeds tolerance {tol}"))
    return out


def write_atomic(path: str | Path, text: str) -> None:
    """Temp file beside ``path`` + :func:`os.replace` (the shared writer): a crash leaves
    the old baseline or the new one, never a truncated file, and no temporary file behind."""
    from yoloblocks_cli.reporting.atomic import write_text_atomic

    write_text_atomic(path, text)


def write_baseline(path: str | Path, report: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
