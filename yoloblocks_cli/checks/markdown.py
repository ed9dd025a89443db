"""Tables of measurements as plain cells, and as Markdown ready for a paper or a pull request.

The cell text is computed once (:func:`compare_table`) so that the terminal table and the
Markdown table of `yb compare` never disagree. Deltas are against the first target, in %.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from yoloblocks_cli.checks.budget import Finding, fmt_gflops, fmt_int, fmt_ms
from yoloblocks_cli.measuring.measure import COUNTERS, Measurement


def delta_pct(value: float | None, first: float | None) -> str:
    """``+12.3%`` against the first target; ``n/a`` where either side is missing or zero."""
    if value is None or first is None or first == 0:
        return "n/a"
    return f"{(value - first) / first * 100:+.1f}%"


def _cell(text: str, value: float | None, first: float | None, is_first: bool) -> str:
    return text if is_first else f"{text} ({delta_pct(value, first)})"


def compare_table(measurements: Sequence[Measurement]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the comparison; columns without any value are left out."""
    counters = [c for c in COUNTERS if any(m.flops.get(c) is not None for m in measurements)]
    timed = any(m.latency is not None for m in measurements)
    with_memory = any(m.memory_peak is not None for m in measurements)
    headers = ["Target", "Input", "Params"] + [f"GFLOPs ({c})" for c in counters]
    if timed:
        headers.append("Latency (ms)")
    if with_memory:
        headers.append("Peak memory (MiB)")
    first = measurements[0] if measurements else None
    rows: list[list[str]] = []
    for i, m in enumerate(measurements):
        head = i == 0
        row = [m.target, "x".join(str(d) for d in m.input_shape),
               _cell(fmt_int(m.params), m.params, first.params, head)]
        for c in counters:
            g, g0 = m.gflops(c), first.gflops(c)
            row.append("n/a" if g is None else _cell(fmt_gflops(g), g, g0, head))
        if timed:
            lat = m.latency.median_ms if m.latency else None
            lat0 = first.latency.median_ms if first.latency else None
            row.append("n/a" if lat is None else _cell(fmt_ms(lat), lat, lat0, head))
        if with_memory:
            mib = None if m.memory_peak is None else m.memory_peak / 2**20
            mib0 = None if first.memory_peak is None else first.memory_peak / 2**20
            row.append("n/a" if mib is None else _cell(f"{mib:.1f}", mib, mib0, head))
        rows.append(row)
    return headers, rows


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align_right_from: int = 2) -> str:
    """A GitHub-flavoured Markdown table; numeric columns (from ``align_right_from``) right-aligned."""
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |",
             "| " + " | ".join("---:" if i >= align_right_from else "---" for i in range(len(headers))) + " |"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def compare_markdown(measurements: Sequence[Measurement], env: Mapping[str, Any] | None = None) -> str:
    """The comparison table plus one line saying how it was measured."""
    headers, rows = compare_table(measurements)
    notes = ["FLOPs = 2 x MACs"]
    if measurements and measurements[0].latency is not None:
        notes.append(f"latency: median of {measurements[0].latency.runs} interleaved runs")
    if env:
        notes.append(f"{env.get('device_name') or env.get('device')}, {env.get('dtype')}, torch {env.get('torch')}")
    if len(measurements) > 1:
        notes.append(f"deltas against {measurements[0].target}")
    return markdown_table(headers, rows) + "\n\n" + "; ".join(notes) + ".\n"


def findings_markdown(findings: Sequence[Finding]) -> str:
    """`yb check` verdicts as a Markdown table (for a CI job summary)."""
    rows = [[f.target, f.check, f.status, f.message] for f in findings]
    return markdown_table(["Target", "Check", "Result", "Detail"], rows, align_right_from=99) + "\n"
