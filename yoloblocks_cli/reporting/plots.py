"""Figures (PNG, SVG, PDF) with matplotlib, an optional extra: ``pip install yoloblocks[plot]``.

matplotlib is imported only here and only when a figure is asked for; a missing
matplotlib is one clear line (exit 2) before any measuring starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from yoloblocks_cli.errors import UsageError

FIGURE_FORMATS = ("png", "svg", "pdf")
METRIC_TITLES = {"flops": "FLOPs (forward)", "latency": "latency (ms, median)", "memory": "peak memory (bytes)"}


def require_matplotlib(path: Path) -> None:
    """Fail early and clearly: an unknown extension or no matplotlib is a usage error."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise UsageError(f"cannot write figure '{path}': the name must end in .png, .svg or .pdf")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed: pip install 'yoloblocks[plot]'") from None


def _poly_label(poly: Any) -> str:
    return f"{poly.c0:.3g} + {poly.c1:.3g}·N + {poly.c2:.3g}·N²"


def _pretty_tokens(n: float) -> str:
    return f"{int(n)}" if n < 1e4 else f"{n / 1e3:.0f}k"


def save_scale_figure(results: Sequence[Any], metrics: Sequence[str], path: Path, title: str) -> None:
    """One subplot per metric, log-log: measured points and fitted power law per target.

    ``results`` are :class:`yoloblocks_cli.measuring.scaling.TargetResult`. The file is written to a
    temporary name next to ``path`` and renamed, so a reader never sees half a figure.
    """
    require_matplotlib(path)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n_lines = max(len(results), 1) * 2
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4.0 + 0.17 * n_lines), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for i, result in enumerate(results):
            colour = colours[i % len(colours)]
            pts = [(p.tokens, p.value(metric)) for p in result.points if p.ok and p.value(metric)]
            if not pts:
                continue
            fit = next((f for f in result.fits if f.metric == metric), None)
            label = result.name
            if fit is not None and fit.power is not None:
                label += f": N^{fit.power.slope:.2f} (R² {fit.power.r2:.3f})"
            ax.loglog([n for n, _ in pts], [v for _, v in pts], "o", color=colour, label=label, markersize=5)
            if fit is not None and fit.power is not None:
                lo, hi = min(n for n, _ in pts), max(n for n, _ in pts)
                xs = [lo * (hi / lo) ** (k / 40) for k in range(41)]
                ys = [math.exp(fit.power.intercept) * x ** fit.power.slope for x in xs]
                ax.loglog(xs, ys, "-", color=colour, linewidth=1.2, alpha=0.8)
                poly = fit.poly
                if poly is not None and poly.c2 > 0 and poly.c1 + poly.c0 > 0:
                    # the power law is straight; a growing N^2 term bends: show the bend
                    ys = [poly.c0 + poly.c1 * x + poly.c2 * x * x for x in xs]
                    ax.loglog(xs, ys, "--", color=colour, linewidth=1.0, alpha=0.9,
                              label=f"{result.name}: {_poly_label(poly)}")
        ax.set_title(METRIC_TITLES.get(metric, metric))
        ax.set_xlabel("tokens N = H × W")
        ax.grid(True, which="both", alpha=0.25)
        ticks = sorted({p.tokens for r in results for p in r.points if p.ok})
        if ticks and len(ticks) <= 10:
            ax.set_xticks(ticks)
            ax.set_xticklabels([_pretty_tokens(t) for t in ticks], rotation=45, fontsize=8)
            ax.minorticks_off()
        if ax.get_legend_handles_labels()[0]:
            # under the axes, so that it never hides a measured point
            ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def _atomic_savefig(fig: Any, path: Path) -> None:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write figure '{path}': no such folder '{folder}'")
    from yoloblocks_cli.reporting.atomic import atomic_path

    with atomic_path(path, make_parents=False) as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=100, metadata=_stable_metadata(path))


def _stable_metadata(path: Path) -> dict[str, Any]:
    """No creation date in the file, so regenerating a figure does not change it needlessly."""
    fmt = path.suffix.lower()
    if fmt == ".svg":
        return {"Date": None}
    if fmt == ".pdf":
        return {"CreationDate": None}
    return {}
