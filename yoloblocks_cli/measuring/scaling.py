"""How a block's or model's cost grows with resolution: sweep the token count, fit, explain.

Every attention article claims "linear complexity". This module measures it: it runs the
target at a geometric series of input sizes (square and non-square), records FLOPs,
latency and peak memory, and fits ``log(cost) = a + s * log(N)`` (N = H * W tokens) by
ordinary least squares. The exponent ``s`` with its standard error and R^2 says what
the cost grows like; the local slopes between neighbouring sizes say where it is
heading (a block that is linear at 8x8 and quadratic at 64x64 shows rising local slopes);
a non-negative fit ``c0 + c1 N + c2 N^2`` says how much of the cost the quadratic term is.

The maths is pure Python on purpose: a handful of points needs no numpy, and the fits
must give exactly 1 for exactly linear data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from yoloblocks_cli.errors import UsageError

METRICS = ("flops", "latency", "memory")
METRIC_UNITS = {"flops": "FLOPs", "latency": "ms", "memory": "bytes"}

# Block sweep: 8x8 .. 64x64 in factors of two of N, alternating square and 2:1 shapes
# (7 points, 64x in N). Small enough that a FLOPs-only sweep of a 32-channel block is fast.
DEFAULT_BLOCK_SIZES: tuple[tuple[int, int], ...] = (
    (8, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64),
)
# Model sweep: image sizes, multiples of 32 so every stride divides (6 points, 32x in N).
DEFAULT_MODEL_SIZES: tuple[tuple[int, int], ...] = (
    (128, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 1024),
)

# Verdict bands on an exponent s (documented in docs/scale.md).
LINEAR_BAND = 0.10      # |s - 1| <= 0.10 -> linear
QUADRATIC_BAND = 0.15   # |s - 2| <= 0.15 -> quadratic
CONSTANT_BELOW = 0.15   # s < 0.15 -> roughly constant
TENDENCY_GAP = 0.10     # large-N slope differs from the global one by more -> say where it tends
TAIL_POINTS = 3         # the large-N slope is fitted over this many largest token counts


# --------------------------------------------------------------------------- fits


@dataclass
class PowerFit:
    """OLS fit of log(cost) on log(N): cost ~ exp(intercept) * N ** slope."""

    slope: float
    stderr: float | None  # None with fewer than 3 distinct points
    intercept: float
    r2: float
    n: int


def parse_metrics(text: str | Iterable[str]) -> tuple[str, ...]:
    """``flops,latency`` -> ("flops", "latency"), in the canonical order, no duplicates."""
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    chosen = {p.strip().lower() for p in parts if p.strip()}
    unknown = sorted(chosen - set(METRICS))
    if unknown:
        raise UsageError(f"unknown metric '{unknown[0]}': choose from {', '.join(METRICS)}")
    if not chosen:
        raise UsageError(f"no metric given: choose from {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in chosen)


def fit_power(tokens: Sequence[float], costs: Sequence[float]) -> PowerFit:
    """Ordinary least squares of log(cost) against log(N).

    The standard error is the usual OLS one, sqrt(RSS / (n - 2) / Sxx). R^2 is 1 when the
    data has no residual (including the degenerate case of constant cost).
    """
    if len(tokens) != len(costs):
        raise ValueError("tokens and costs differ in length")
    if any(c <= 0 for c in costs) or any(n <= 0 for n in tokens):
        raise ValueError("a power fit needs positive tokens and costs")
    pts = [(math.log(n), math.log(c)) for n, c in zip(tokens, costs)]
    n = len(pts)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0.0:
        raise ValueError("a power fit needs at least two different token counts")
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    rss = math.fsum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    syy = math.fsum((y - my) ** 2 for y in ys)
    # Relative to the data's own scale, a residual below rounding is no residual.
    if rss <= 1e-24 * max(syy, 1.0):
        rss = 0.0
    r2 = 1.0 if syy == 0.0 or rss == 0.0 else max(0.0, 1.0 - rss / syy)
    stderr = math.sqrt(rss / (n - 2) / sxx) if n > 2 else None
    return PowerFit(slope, stderr, intercept, r2, n)


def merge_equal_tokens(tokens: Sequence[float], costs: Sequence[float]) -> list[tuple[float, float]]:
    """Sort by N; sizes with the same N (16x32 and 32x16) merge into their geometric mean."""
    groups: dict[float, list[float]] = {}
    for n, c in zip(tokens, costs):
        groups.setdefault(n, []).append(c)
    return [(n, math.exp(math.fsum(math.log(c) for c in cs) / len(cs))) for n, cs in sorted(groups.items())]


def local_slopes(tokens: Sequence[float], costs: Sequence[float]) -> list[dict[str, float]]:
    """The exponent between each pair of neighbouring token counts."""
    pts = merge_equal_tokens(tokens, costs)
    out = []
    for (n0, c0), (n1, c1) in zip(pts, pts[1:]):
        out.append({"from_tokens": n0, "to_tokens": n1, "slope": math.log(c1 / c0) / math.log(n1 / n0)})
    return out


@dataclass
class PolyFit:
    """Non-negative fit cost ~ c0 + c1 N + c2 N^2, least squares on relative error."""

    c0: float
    c1: float
    c2: float
    support: tuple[int, ...]  # which coefficients are free (the others are exactly 0)
    rel_rms: float            # root-mean-square relative residual

    def crossover_tokens(self) -> float | None:
        """N at which the quadratic term equals the linear one (None without both)."""
        if self.c1 > 0 and self.c2 > 0:
            return self.c1 / self.c2
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"c0": self.c0, "c1": self.c1, "c2": self.c2, "rel_rms": self.rel_rms,
                "crossover_tokens": self.crossover_tokens()}


def _lstsq(columns: list[list[float]], target: list[float]) -> list[float] | None:
    """Least squares by modified Gram-Schmidt QR (well conditioned for these few columns).

    Returns None when the columns are linearly dependent.
    """
    q = [list(c) for c in columns]
    k = len(q)
    r = [[0.0] * k for _ in range(k)]
    for j in range(k):
        for i in range(j):
            r[i][j] = math.fsum(a * b for a, b in zip(q[i], q[j]))
            q[j] = [b - r[i][j] * a for a, b in zip(q[i], q[j])]
        norm = math.sqrt(math.fsum(v * v for v in q[j]))
        orig = math.sqrt(math.fsum(v * v for v in columns[j]))
        if norm <= 1e-12 * max(orig, 1e-300):
            return None
        r[j][j] = norm
        q[j] = [v / norm for v in q[j]]
    qty = [math.fsum(a * b for a, b in zip(q[j], target)) for j in range(k)]
    coef = [0.0] * k
    for j in reversed(range(k)):
        coef[j] = (qty[j] - math.fsum(r[j][i] * coef[i] for i in range(j + 1, k))) / r[j][j]
    return coef


def fit_poly_nonneg(tokens: Sequence[float], costs: Sequence[float]) -> PolyFit:
    """Fit cost = c0 + c1 N + c2 N^2 with every c >= 0, minimising the relative error.

    With three coefficients NNLS is solved exactly by enumeration: the optimum is the
    unconstrained least-squares solution on some support, so among the 7 non-empty
    supports whose solution is non-negative the one with the smallest residual wins.
    Rows are divided by the cost (relative error, so 8x8 counts as much as 64x64) and N is
    scaled to at most 1 (conditioning); the coefficients are scaled back.
    """
    if len(tokens) != len(costs) or not tokens:
        raise ValueError("need as many costs as token counts, at least one")
    scale = float(max(tokens))
    xs = [n / scale for n in tokens]
    basis = [[1.0 / c for c in costs],
             [x / c for x, c in zip(xs, costs)],
             [x * x / c for x, c in zip(xs, costs)]]
    ones = [1.0] * len(costs)
    best: tuple[float, tuple[int, ...], list[float]] | None = None
    for support in ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)):
        coef = _lstsq([basis[j] for j in support], ones)
        if coef is None or any(c < 0 for c in coef):
            continue
        full = [0.0, 0.0, 0.0]
        for j, c in zip(support, coef):
            full[j] = c
        rss = math.fsum((full[0] * a + full[1] * b + full[2] * d - 1.0) ** 2
                        for a, b, d in zip(*basis))
        # residuals within rounding of each other tie; the tie goes to the smaller support
        key = rss if rss > 1e-20 * len(costs) else 0.0
        if best is None or key < best[0] * (1 - 1e-9) or (key <= best[0] * (1 + 1e-9) and len(support) < len(best[1])):
            best = (key, support, full)
    assert best is not None  # a single positive column always gives a positive coefficient
    rss, support, full = best
    return PolyFit(full[0], full[1] / scale, full[2] / scale ** 2, support, math.sqrt(rss / len(costs)))


def describe_exponent(s: float) -> str:
    """A word for an exponent: linear, quadratic, ... (bands are module constants)."""
    if abs(s - 1.0) <= LINEAR_BAND:
        return "linear"
    if abs(s - 2.0) <= QUADRATIC_BAND:
        return "quadratic"
    if abs(s) < CONSTANT_BELOW:
        return "roughly constant"
    if s < 0:
        return "decreasing"
    if s < 1.0:
        return "sub-linear"
    if s < 2.0:
        return "between linear and quadratic"
    return "super-quadratic"


def tail_slope(tokens: Sequence[float], costs: Sequence[float], k: int = TAIL_POINTS) -> float | None:
    """The exponent over the ``k`` largest token counts: where the cost is heading.

    A fit over three points rather than the last neighbouring pair, so one noisy latency
    does not decide the verdict. None with fewer than ``k + 1`` distinct token counts
    (then the tail would be the whole sweep).
    """
    pts = merge_equal_tokens(tokens, costs)
    if len(pts) <= k:
        return None
    tail = pts[-k:]
    return fit_power([n for n, _ in tail], [c for _, c in tail]).slope


def verdict(metric: str, fit: PowerFit, tail: float | None, local: Sequence[dict[str, float]] = ()) -> str:
    """One sentence: "FLOPs grow as N^1.00: linear", plus where the large-N slope tends.

    The tendency is named when the large-N slope differs from the global one by more than
    TENDENCY_GAP, or falls in a different band (N^1.83 overall but N^1.98 at the end). A
    FLOPs or memory cost that falls as N grows is named too: the block switched code path.
    """
    what = {"flops": "FLOPs grow", "latency": "latency grows", "memory": "peak memory grows"}[metric]
    text = f"{what} as N^{fit.slope:.2f}: {describe_exponent(fit.slope)}"
    if fit.r2 < 0.95:
        text += f" (poor fit, R^2 {fit.r2:.2f})"
    if tail is not None and (abs(tail - fit.slope) > TENDENCY_GAP
                             or describe_exponent(tail) != describe_exponent(fit.slope)):
        text += f"; tends to N^{_round_exponent(tail)} at large N"
    if metric != "latency":  # deterministic metrics: a drop means a different code path
        drops = [s for s in local if s["slope"] < 0]
        if drops:
            d = drops[0]
            text += f"; drops from N={d['from_tokens']:g} to N={d['to_tokens']:g} (another code path)"
    return text


def _round_exponent(s: float) -> str:
    """2 for 1.93 (inside the quadratic band), 1 inside the linear band, else two decimals."""
    if abs(s - 2.0) <= QUADRATIC_BAND:
        return "2"
    if abs(s - 1.0) <= LINEAR_BAND:
        return "1"
    return f"{s:.2f}"


# --------------------------------------------------------------------------- measurement


# --------------------------------------------------------------------------- sweep


@dataclass
class Point:
    """One measured size of one target."""

    height: int
    width: int
    flops: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    latency_runs: int | None = None
    memory_bytes: int | None = None
    memory_method: str | None = None
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def ok(self) -> bool:
        return self.error is None

    def value(self, metric: str) -> float | None:
        return {"flops": self.flops, "latency": self.latency_ms, "memory": self.memory_bytes}[metric]

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"height": self.height, "width": self.width, "tokens": self.tokens, "ok": self.ok}
        for key in ("flops", "latency_ms", "latency_iqr_ms", "latency_runs", "memory_bytes", "memory_method"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class MetricFit:
    """Everything fitted for one target and one metric."""

    target: str
    metric: str
    power: PowerFit | None
    local: list[dict[str, float]]
    poly: PolyFit | None
    verdict: str
    tail_slope: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"target": self.target, "metric": self.metric}
        if self.power is None:
            d.update(slope=None, stderr=None, r2=None, verdict=self.verdict, local_slopes=self.local)
            return d
        d.update(slope=self.power.slope, stderr=self.power.stderr, r2=self.power.r2,
                 intercept=self.power.intercept, points=self.power.n,
                 local_slopes=self.local, tail_slope=self.tail_slope, verdict=self.verdict)
        if self.poly is not None:
            d["poly"] = self.poly.as_dict()
        return d


@dataclass
class TargetResult:
    """The sweep of one target: its points and one fit per metric."""

    name: str
    kind: str  # "block" or "model"
    call: str
    family: str | None
    points: list[Point] = field(default_factory=list)
    fits: list[MetricFit] = field(default_factory=list)

    @property
    def failed(self) -> list[Point]:
        return [p for p in self.points if not p.ok]


def fit_metric(target: str, metric: str, points: Sequence[Point], poly: bool) -> MetricFit:
    """Fit one metric over the successful points of a target."""
    usable = [(p.tokens, p.value(metric)) for p in points if p.ok and p.value(metric)]
    usable = [(n, float(v)) for n, v in usable if v and v > 0]
    if len({n for n, _ in usable}) < 2:
        return MetricFit(target, metric, None, [], None,
                         f"not enough successful sizes to fit {metric} (need 2 different token counts)")
    tokens = [n for n, _ in usable]
    costs = [v for _, v in usable]
    power = fit_power(tokens, costs)
    slopes = local_slopes(tokens, costs)
    polyfit = fit_poly_nonneg(tokens, costs) if poly else None
    tail = tail_slope(tokens, costs)
    return MetricFit(target, metric, power, slopes, polyfit, verdict(metric, power, tail, slopes), tail)


def wants_poly(family: str | None) -> bool:
    """The c0 + c1 N + c2 N^2 decomposition is asked of token mixers (attention, SSM, MLP)
    and of unregistered blocks, which are usually one of those."""
    return family in (None, "attention", "ssm", "mlp")


def measure(target: "ScaleTarget", h: int, w: int, metrics: Sequence[str], point: Point,
            max_seconds: float = 0.5) -> None:
    """Fill ``point`` with the chosen metrics through the one engine; a failure at this size
    becomes ``point.error`` (a finding, not a crash)."""
    from yoloblocks_cli.errors import CheckFailed
    from yoloblocks_cli.loading.spec import Shape
    from yoloblocks_cli.measuring.engine import Plan
    from yoloblocks_cli.measuring.engine import measure as engine_measure

    plan = Plan(counters=("torch",) if "flops" in metrics else (), memory="memory" in metrics,
                latency="latency" in metrics, warmup=3, min_runs=5, min_seconds=min(0.1, max_seconds),
                max_seconds=max_seconds)
    shape = Shape(target.batch, target.channels, h, w)
    try:
        m = engine_measure(target, shape, plan, device=target.device, dtype=target.dtype)
    except CheckFailed as exc:
        cause = exc.__cause__ or exc
        point.error = f"{cause.__class__.__name__}: {_first_line(cause)}"
        return
    except Exception as exc:  # noqa: BLE001 - the input could not even be made at this size
        point.error = f"{exc.__class__.__name__}: {_first_line(exc)}"
        return
    if "flops" in metrics:
        point.flops = m.flops.get("torch")
    if m.memory is not None:
        point.memory_bytes, point.memory_method = int(m.memory.peak_bytes), str(m.memory.method)
    if m.latency is not None:
        point.latency_ms, point.latency_iqr_ms, point.latency_runs = (
            float(m.latency.median_ms), float(m.latency.iqr_ms), int(m.latency.runs))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def sweep(target: "ScaleTarget", sizes: Sequence[tuple[int, int]], metrics: Sequence[str],
          progress: Callable[[str], None] | None = None, max_seconds: float = 0.5) -> TargetResult:
    """Measure one constructed target at every size and fit every metric."""
    result = TargetResult(target.name, target.kind, target.call, target.family)
    for h, w in sizes:
        if progress is not None:
            progress(f"{target.name} {h}x{w}")
        point = Point(h, w)
        measure(target, h, w, metrics, point, max_seconds)
        result.points.append(point)
    for metric in metrics:
        result.fits.append(fit_metric(target.name, metric, result.points, wants_poly(target.family)))
    return result


def parse_sweep_sizes(values: Sequence[str] | None, model: bool) -> list[tuple[int, int]]:
    """``--sizes 320,480,640x480`` -> [(H, W), ...]; the default series when absent.

    A sweep must span at least two different token counts (three for a standard error).
    """
    from yoloblocks_cli.loading.spec import parse_model_size

    if not values:
        return list(DEFAULT_MODEL_SIZES if model else DEFAULT_BLOCK_SIZES)
    parts = [p.strip() for v in values for p in str(v).split(",") if p.strip()]
    sizes = []
    for part in parts:
        if part.lower().replace("×", "x").count("x") > 1:
            raise UsageError(f"malformed size '{part}' for --sizes: expected S or HxW, e.g. 32 or 32x64")
        shape = parse_model_size(part)
        sizes.append((shape.height, shape.width))
    if len({h * w for h, w in sizes}) < 2:
        raise UsageError("--sizes needs at least two different token counts (H*W) to fit a slope")
    return sizes


# --------------------------------------------------------------------------- targets


@dataclass
class ScaleTarget:
    """A constructed block or model, and the batch, width, device and dtype of its inputs."""

    name: str
    kind: str
    call: str
    family: str | None
    module: Any
    batch: int
    channels: int
    device: Any
    dtype: Any


def is_model_target(text: str) -> bool:
    """A registered block is a block; otherwise the shared rule of ``yoloblocks_cli.loading.targets``
    (a YAML file or a shipped model short name such as ``yolov8n``) decides."""
    t = text.strip()
    if not t.lower().endswith((".yaml", ".yml")) and ":" not in t:
        from blocks.registry import find_block

        if find_block(t) is not None:
            return False
    from yoloblocks_cli.loading.targets import is_model

    return is_model(t)


def load_target(text: str, channels: int, args: list | None, kwargs: dict[str, Any] | None,
                device: Any, dtype: Any, batch: int = 1, plugins: Sequence[Any] = ()) -> ScaleTarget:
    """Build a block (fed ``channels``) or a model (fed 3-channel images) in eval mode."""
    if is_model_target(text):
        if args or kwargs:
            raise UsageError(f"{text} is a model: --args/--kwargs apply to blocks only")
        try:
            from yoloblocks_cli.loading.yaml_model import build_model
        except ModuleNotFoundError as exc:
            if exc.name != "yoloblocks_cli.loading.yaml_model":
                raise
            raise UsageError(f"cannot scale model '{text}': the YAML model builder is not part of this build") from None
        built = build_model(text, plugins=tuple(plugins))
        module, name, call, family, in_ch = built.model, text, text, None, 3
        kind = "model"
    else:
        from yoloblocks_cli.loading.load import load_block

        loaded = load_block(text, channels, args, kwargs)
        # an alias the user typed (MobileMQA) labels the results better than the class name
        aliases = loaded.spec.info.aliases if loaded.spec.info is not None else ()
        name = text.strip() if text.strip() in aliases else loaded.spec.name
        module, call, in_ch, kind = loaded.module, loaded.call, channels, "block"
        family = loaded.spec.info.family if loaded.spec.info is not None else None
    module = module.to(device=device, dtype=dtype).eval()
    return ScaleTarget(name, kind, call, family, module, batch, in_ch, device, dtype)
