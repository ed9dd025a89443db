"""A compact log-log scatter chart in plain text, for `yb scale` without ``--plot``.

One marker per series, the fitted power law drawn with dots under the markers, decade
ticks on both axes. Pure text so it works in CI logs; ``ascii=True`` avoids Unicode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

UNICODE_MARKERS = "●▲■◆✚✖"
ASCII_MARKERS = "o^#*+x"


@dataclass
class Series:
    """Points (x, y) of one target plus, optionally, a fitted y = exp(a) * x ** s."""

    label: str
    points: Sequence[tuple[float, float]]
    slope: float | None = None
    intercept: float | None = None


def _fmt(value: float) -> str:
    """3 significant figures with k/M/G/T suffixes: 4096 -> 4.1k."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def loglog_chart(series: Sequence[Series], *, title: str = "", x_label: str = "N", y_label: str = "",
                 width: int = 56, height: int = 12, ascii: bool = False) -> list[str]:
    """Render series on shared log-log axes; returns the lines (no trailing newline)."""
    markers = ASCII_MARKERS if ascii else UNICODE_MARKERS
    dot = "." if ascii else "·"
    pts = [(x, y) for s in series for x, y in s.points if x > 0 and y > 0]
    if not pts:
        return [title, "  (no points to draw)"] if title else ["  (no points to draw)"]
    lx = [math.log10(x) for x, _ in pts]
    ly = [math.log10(y) for _, y in pts]
    x0, x1 = min(lx), max(lx)
    y0, y1 = min(ly), max(ly)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def col(lxv: float) -> int:
        return round((lxv - x0) / (x1 - x0) * (width - 1))

    def row(lyv: float) -> int:
        return height - 1 - round((lyv - y0) / (y1 - y0) * (height - 1))

    grid = [[" "] * width for _ in range(height)]
    for s in series:  # fitted lines first, markers drawn over them
        if s.slope is None or s.intercept is None or not s.points:
            continue
        xs = [math.log10(x) for x, _ in s.points if x > 0]
        for c in range(col(min(xs)), col(max(xs)) + 1):
            lxv = x0 + c / (width - 1) * (x1 - x0)
            lyv = (s.intercept + s.slope * lxv * math.log(10)) / math.log(10)
            r = row(lyv)
            if 0 <= r < height:
                grid[r][c] = dot
    for i, s in enumerate(series):
        mark = markers[i % len(markers)]
        for x, y in s.points:
            if x > 0 and y > 0:
                grid[row(math.log10(y))][col(math.log10(x))] = mark

    top, bottom = _fmt(10 ** y1), _fmt(10 ** y0)
    pad = max(len(top), len(bottom))
    lines = [title] if title else []
    for r, cells in enumerate(grid):
        label = top if r == 0 else bottom if r == height - 1 else ""
        lines.append(f"{label:>{pad}} {'|' if ascii else '│'}{''.join(cells)}")
    lines.append(" " * pad + " " + ("+" if ascii else "└") + ("-" if ascii else "─") * width)
    left, right = _fmt(10 ** x0), _fmt(10 ** x1)
    lines.append(" " * (pad + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    axis = f"{x_label} (log)" + (f", {y_label} (log)" if y_label else "")
    lines.append(" " * (pad + 2) + axis)
    for i, s in enumerate(series):
        fit = f"  slope {s.slope:.2f}" if s.slope is not None else ""
        lines.append(f"{' ' * (pad + 2)}{markers[i % len(markers)]} {s.label}{fit}")
    return lines
