"""Terminal lines of one latency object (``latency_ms`` of the JSON): the figure with its
interval, the machine's verdict, and a warning when the machine was noisy.

Reads only the JSON, so the table and ``--json`` never disagree; older reports without the
interval or the verdict still print their median, IQR and runs.
"""

from __future__ import annotations

from typing import Any

DOC = "docs/latency.md"


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def _cpus(ids: list[int]) -> str:
    if not ids:
        return "-"
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ",".join(str(i) for i in ids)


def latency_lines(lat: dict[str, Any] | None, label: str = "latency") -> list[str]:
    """Rich-markup lines: figure, machine, and (when noisy) a warning."""
    if not lat:
        return []
    head = f"{label:<11} {_ms(lat['median'])} ms median"
    ci = lat.get("ci")
    if ci:
        rel = lat.get("ci_rel")
        pm = f" (+-{100 * rel:.1f}%)" if rel is not None else ""
        head += f" · {95 if ci['level'] >= 0.95 else int(100 * ci['level'])}% CI [{_ms(ci['low'])}, {_ms(ci['high'])}]{pm}"
    head += f" · IQR {_ms(lat['iqr'])} ms · {lat['runs']} runs"
    stopped = {"runs": "as asked by --runs", "time budget": "time budget reached"}.get(lat.get("stopped") or "",
                                                                                     lat.get("stopped"))
    if stopped:
        head += f" ({stopped})"
    head += f" · {lat['images_per_s']:,.1f} images/s  [dim]({lat['method']}, {lat['mode']})[/]"
    lines = [head]
    c = lat.get("contention")
    if c:
        where = f"{lat.get('threads') or c.get('threads')} threads on CPUs {_cpus(c.get('affinity') or [])}"
        where = where.replace("1 threads", "1 thread")
        if c["verdict"] == "noisy":
            lines.append(f"{'':<11} [yellow]machine noisy[/]: {'; '.join(c['reasons'])} · {where}")
            lines.append(f"{'':<11} [bold yellow]warning:[/] the machine was busy while timing; this latency may be "
                         f"off by a large factor (see {DOC})")
        else:
            bits = []
            if c.get("load_avg_1m") is not None:
                bits.append(f"load {c['load_avg_1m']:.2f} on {c['cpus']} CPUs")
            if c.get("other_busy_cpus") is not None:
                bits.append(f"{c['other_busy_cpus']:.1f} CPUs busy elsewhere")
            lines.append(f"{'':<11} [dim]machine quiet: {', '.join(bits) or 'no readings'} · {where}[/]")
    return lines


def rounds_lines(measurements: list[Any]) -> list[str]:
    """`yb compare`: each ratio with its interval, then the machine's verdict (a warning when noisy)."""
    lines = []
    for m in measurements[1:]:
        ci = getattr(m, "latency_ratio_ci", None)
        if m.latency_ratio is None or ci is None:
            continue
        lines.append(f"latency {m.target} / {m.reference}: {m.latency_ratio:.3g}x "
                     f"({100 * ci.level:.0f}% CI {ci.low:.3g}-{ci.high:.3g}, bootstrap over rounds)")
    noise = next((m.latency.contention for m in measurements
                  if m.latency is not None and getattr(m.latency, "contention", None) is not None), None)
    if noise is not None and noise.noisy:
        lines.append(f"[bold yellow]warning:[/] timed on a noisy machine: {'; '.join(noise.reasons)}; the latencies "
                     f"may be off by a large factor (see {DOC})")
    elif noise is not None:
        lines.append(f"[dim]machine while timing: {noise.summary()}[/]")
    return lines


def sizes_lines(results: list[dict[str, Any]]) -> list[str]:
    """`yb inspect` with several sizes: one warning naming the sizes timed on a noisy machine."""
    noisy = [r for r in results if ((r.get("latency_ms") or {}).get("contention") or {}).get("verdict") == "noisy"]
    if not noisy:
        return []
    reasons = noisy[0]["latency_ms"]["contention"]["reasons"]
    which = "every size" if len(noisy) == len(results) else f"{len(noisy)} of {len(results)} sizes"
    return [f"[bold yellow]warning:[/] latency of {which} timed on a noisy machine: {'; '.join(reasons)}; it may "
            f"be off by a large factor (see {DOC})"]
