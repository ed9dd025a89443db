"""Robustness probes: what a block must survive before a 300-epoch run.

A *configuration* is one input shape (and, for a model, one scale). For each one the
probes run in a fixed order and share work through a per-configuration cache: the eval
forward is run once for ``sweep``, ``finite``, ``batch`` and ``channels-last``; the
train-mode forward+backward once for ``train`` and ``grads``. Probes register themselves
with :func:`register_probe`, so adding one is one function.

Sweeps: :func:`block_sweep` and :func:`model_sweep` derive the shapes YOLO really feeds a
layer (rectangular validation batches in both orientations, sizes that are not multiples
of the stride, odd sizes, batch 2) from one base size.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.tracer import (Failure, ShapeTracer, TraceResult, flatten_tensors, fmt_shape, module_source,
                                  run_with_timeout, shape_of, traced_call)

# --- sweeps ---------------------------------------------------------------------------------


def _dedupe(shapes: Sequence[Shape]) -> list[Shape]:
    out: list[Shape] = []
    for s in shapes:
        if s not in out:
            out.append(s)
    return out


def block_sweep(base: Shape) -> list[Shape]:
    """Shapes derived from a block's ``CxHxW``: as given, rectangular both ways (or square
    and swapped), not divisible (21x14 from 20x20), odd, 1xN, twice the size, batch 2."""
    b, c, h, w = base.dims
    shapes = [base]
    if h == w:
        r = max(1, round(w * 3 / 4))
        shapes += [Shape(b, c, h, r), Shape(b, c, r, h)]
    else:
        s = max(h, w)
        shapes += [Shape(b, c, s, s), Shape(b, c, w, h)]
    shapes.append(Shape(b, c, h + 1, max(1, round(w * 0.7))))
    shapes.append(Shape(b, c, h if h % 2 else h + 1, w if w % 2 else w + 1))
    shapes.append(Shape(b, c, 1, w))
    shapes.append(Shape(b, c, 2 * h, 2 * w))
    shapes.append(base.with_batch(max(2, b)))
    return _dedupe(shapes)


def model_sweep(size: int = 640, stride: int = 32, channels: int = 3) -> list[Shape]:
    """Image shapes YOLO feeds a model: square, rectangular validation shapes in both
    orientations (multiples of the largest stride, odd multiples included: 672x448), half and
    double size, and batch 2 at the square and the first rectangular shape."""
    k = max(1, math.ceil(size / stride))
    sq = k * stride
    r = max(1, round(k * 3 / 4)) * stride
    odd_h, odd_w = (k + 1) * stride, max(1, round(k * 0.7)) * stride
    half, double = max(1, round(k / 2)) * stride, 2 * sq
    hw = [(sq, sq), (sq, r), (r, sq), (odd_h, odd_w), (odd_w, odd_h), (half, half), (double, double)]
    shapes = [Shape(1, channels, a, b) for a, b in hw]
    shapes += [Shape(2, channels, sq, sq), Shape(2, channels, sq, r)]
    return _dedupe(shapes)


def with_batches(shapes: Sequence[Shape], batches: Sequence[int]) -> list[Shape]:
    """Every shape at every batch size (``--batch 1,4``)."""
    return _dedupe([s.with_batch(b) for s in shapes for b in batches])


# --- configurations and results -------------------------------------------------------------


@dataclass
class Target:
    """A module under test plus its tracer; one per model scale."""

    module: Any
    tracer: ShapeTracer
    name: str
    scale: str | None = None
    kind: str = "block"  # "block" or "model"
    build_failure: Failure | None = None  # this scale could not even be built
    export_shape: Any = None  # where the export probe exports (the sweep's base size); None: the first run


@dataclass
class ProbeResult:
    probe: str
    status: str  # "pass", "fail", "skip" or "timeout"
    detail: str = ""
    failure: Failure | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "timeout")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"status": self.status, "detail": self.detail, "seconds": round(self.seconds, 4)}
        if self.failure is not None:
            d["error"] = self.failure.to_json()
        return d


@dataclass
class Point:
    """One swept configuration and what every probe said about it."""

    shape: Shape
    scale: str | None
    results: dict[str, ProbeResult] = field(default_factory=dict)
    output_shape: Any = None
    layers: list[Any] = field(default_factory=list)
    phase: str = "numeric"  # "shape": checked on meta tensors only (tracing/phases.py)

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results.values())

    @property
    def label(self) -> str:
        return (f"{self.scale}:" if self.scale else "") + str(self.shape)

    @property
    def error(self) -> Failure | None:
        for r in self.results.values():
            if r.failed and r.failure is not None:
                return r.failure
        return None


# --- the per-configuration context -------------------------------------------------------------


class ProbeRun:
    """Everything the probes of one configuration share: input, cached runs, the deadline."""

    def __init__(self, target: Target, shape: Shape, enabled: Sequence[str], *, device: Any = None,
                 dtype: Any = None, timeout: float | None = None, record_layers: bool = False, seed: int = 0):
        import torch

        self.torch = torch
        self.target, self.shape, self.enabled = target, shape, list(enabled)
        self.device = device if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        self.record_layers = record_layers
        self.cache: dict[str, Any] = {}
        self.timed_out = False
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.rand(shape.dims, generator=gen).to(self.device, self.dtype)

    @property
    def module(self) -> Any:
        return self.target.module

    # -- running with the tracer, under the configuration's deadline
    def call(self, fn: Callable[[], Any], record_layers: bool = False) -> TraceResult:
        if self.timed_out:
            return TraceResult(timed_out=True, failure=self._timeout_failure())
        remaining = None
        if self.deadline is not None:
            remaining = max(0.0, self.deadline - time.monotonic())
        finished, value = run_with_timeout(
            lambda: traced_call(self.target.tracer, fn, x_shape=self.shape.dims, record_layers=record_layers),
            remaining if self.deadline is not None else None)
        if not finished:
            self.timed_out = True
            return TraceResult(timed_out=True, failure=self._timeout_failure())
        return value

    def _timeout_failure(self) -> Failure:
        return Failure(type="Timeout", message=f"no result within --timeout {self.timeout:g} s; the worker thread "
                       "cannot be killed and finishes in the background", cause="timeout",
                       hint="timeout: the configuration ran longer than --timeout")

    def eval(self) -> TraceResult:
        """The eval-mode forward of the configuration's input (run once)."""
        if "eval" not in self.cache:
            torch = self.torch
            self.module.eval()

            def fwd() -> Any:
                with torch.no_grad():
                    return self.module(self.x)

            self.cache["eval"] = self.call(fwd, record_layers=self.record_layers)
        return self.cache["eval"]

    def train(self) -> tuple[TraceResult, list[str]]:
        """Train-mode forward + backward at batch >= 2; returns parameters left without grad.

        Batch 1 is lifted to 2 because YOLO never trains at batch 1 and BatchNorm refuses a
        single value per channel. Buffers (BatchNorm statistics) are restored afterwards so
        the probe leaves the module as it found it.
        """
        if "train" not in self.cache:
            torch = self.torch
            module = self.module
            x = self.x if self.shape.batch >= 2 else self.x.repeat(2, 1, 1, 1)
            # An input that requires grad, as inside a model: a block without parameters is
            # then judged by whether the gradient reaches its input (a clone: in-place ops on it are legal).
            leaf = x.detach().requires_grad_(True)
            saved = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()
                     if not isinstance(v, torch.nn.Parameter)}
            params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
            for _, p in params:
                p.grad = None

            def step() -> Any:
                with torch.enable_grad():
                    module.train()
                    out = module(leaf.clone())
                    tensors = [t for t in flatten_tensors(out) if t.is_floating_point() and t.requires_grad]
                    if not tensors:
                        raise RuntimeError("train-mode output has no tensor that requires grad")
                    loss = sum(t.float().mean() for t in tensors)
                    loss.backward()
                    return out

            try:
                result = self.call(step)
                missing = [n for n, p in params if p.grad is None] if result.ok else []
                self.cache["input_grad"] = leaf.grad is not None
            finally:
                if not self.timed_out:
                    module.load_state_dict(saved, strict=False)
                    for _, p in params:
                        p.grad = None
                    module.eval()
            self.cache["train"] = (result, missing)
        return self.cache["train"]

    def depends(self, owner: str, result: TraceResult, probe: str) -> ProbeResult:
        """A probe whose prerequisite failed: report it once, under its owner if enabled."""
        if result.timed_out:
            return ProbeResult(probe, "timeout", "timed out", result.failure)
        if too_small(result.failure):
            return ProbeResult(probe, "skip", "not run: input too small for this block")
        if owner in self.enabled and owner != probe:
            return ProbeResult(probe, "skip", f"not run: {owner} failed")
        return ProbeResult(probe, "fail", _one_line(result.failure), result.failure)

    def tolerance(self) -> tuple[float, float]:
        """(rtol, atol relative to the output's magnitude) for this dtype."""
        torch = self.torch
        if self.dtype in (torch.float16,):
            return 1e-2, 1e-2
        if self.dtype in (torch.bfloat16,):
            return 2e-2, 2e-2
        if self.dtype in (torch.float64,):
            return 1e-7, 1e-9
        return 1e-4, 1e-5


def too_small(failure: Failure | None) -> bool:
    """A map smaller than a pooling window is not a shape bug: such cells are "skip"."""
    return failure is not None and failure.cause == "input-too-small"


def _one_line(failure: Failure | None) -> str:
    if failure is None:
        return ""
    return f"{failure.type}: {failure.message.splitlines()[0] if failure.message else ''}"


# --- the probe registry ---------------------------------------------------------------------------

ProbeFn = Callable[[ProbeRun], ProbeResult]
_PROBES: dict[str, tuple[ProbeFn, str]] = {}
_OPT_IN: set[str] = set()  # slow probes: run when named or with 'all', not by default


def register_probe(name: str, description: str, default: bool = True) -> Callable[[ProbeFn], ProbeFn]:
    def deco(fn: ProbeFn) -> ProbeFn:
        _PROBES[name] = (fn, description)
        if not default:
            _OPT_IN.add(name)
        return fn

    return deco


def probe_names() -> list[str]:
    return list(_PROBES)


def default_probes() -> list[str]:
    return [n for n in _PROBES if n not in _OPT_IN]


def probe_description(name: str) -> str:
    return _PROBES[name][1]


def run_point(target: Target, shape: Shape, enabled: Sequence[str], **kwargs: Any) -> Point:
    """Every enabled probe on one configuration; a failing probe never stops the next one."""
    run = ProbeRun(target, shape, enabled, **kwargs)
    point = Point(shape, target.scale)
    for name in [n for n in _PROBES if n in enabled]:
        fn = _PROBES[name][0]
        start = time.perf_counter()
        if run.timed_out:
            result = ProbeResult(name, "skip", "not run: configuration timed out")
        else:
            try:
                result = fn(run)
            except Exception as exc:  # noqa: BLE001 - a probe's own bug is a failed cell, not a crash
                result = ProbeResult(name, "fail", f"probe error: {exc.__class__.__name__}: {exc}",
                                     Failure(type=exc.__class__.__name__, message=str(exc)))
        result.seconds = time.perf_counter() - start
        point.results[name] = result
    ev = run.cache.get("eval")
    if ev is not None:
        point.output_shape = shape_of(ev.output) if ev.ok else None
        point.layers = ev.layers
    if ev is None or not ev.ok:
        if run.record_layers and ev is not None:
            point.layers = ev.layers
    return point


# --- probes ----------------------------------------------------------------------------------------


@register_probe("sweep", "eval-mode forward at this shape does not raise")
def probe_sweep(run: ProbeRun) -> ProbeResult:
    r = run.eval()
    if r.timed_out:
        return ProbeResult("sweep", "timeout", "timed out", r.failure)
    if too_small(r.failure):
        return ProbeResult("sweep", "skip", f"input too small for this block ({_one_line(r.failure)})", r.failure)
    if r.failure is not None:
        return ProbeResult("sweep", "fail", _one_line(r.failure), r.failure)
    return ProbeResult("sweep", "pass", fmt_shape(shape_of(r.output)))


@register_probe("finite", "every output value is finite (no NaN or Inf)")
def probe_finite(run: ProbeRun) -> ProbeResult:
    r = run.eval()
    if not r.ok:
        return run.depends("sweep", r, "finite")
    tensors = [t for t in flatten_tensors(r.output) if t.is_floating_point()]
    bad = sum(int((~run.torch.isfinite(t)).sum()) for t in tensors)
    if not bad:
        return ProbeResult("finite", "pass", "all finite")
    total = sum(t.numel() for t in tensors)
    failure = _first_nonfinite(run) or Failure(type="NonFiniteOutput", message="")
    failure.type = "NonFiniteOutput"
    failure.message = f"{bad} of {total} output values are NaN or Inf"
    failure.cause, failure.hint = "non-finite", "non-finite output: look for a division, log or sqrt of a value that can be 0 or negative"
    return ProbeResult("finite", "fail", failure.message, failure)


def _first_nonfinite(run: ProbeRun) -> Failure | None:
    """Re-run with a finiteness hook: the first module (in completion order) whose output
    is not finite is where the NaN/Inf was made."""
    torch = run.torch
    found: list[Any] = []
    stack: list[Any] = []

    def finite(value: Any) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in flatten_tensors(value) if t.is_floating_point())

    def pre(mod: Any, args: tuple) -> None:
        stack.append(mod)

    def post(mod: Any, args: tuple, out: Any) -> None:
        if stack:
            stack.pop()
        if not found and not finite(out):
            # A module fed non-finite input did not make the NaN: its caller's own code did.
            culprit = mod if finite(args) or not stack else stack[-1]
            found.append((culprit, shape_of(args[0]) if args and culprit is mod else None))

    handles = [h for m in run.module.modules()
               for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.no_grad():
            run.module(run.x)
    finally:
        for h in handles:
            h.remove()
    if not found:
        return None
    return _failure_at(run, *found[0])


def _failure_at(run: ProbeRun, mod: Any, input_shape: Any) -> Failure:
    """A failure without an exception, attributed to a module (and its forward's source)."""
    tracer = run.target.tracer
    file, line = _user_source(run, mod)
    failure = Failure(type="", message="", layer=None, module=type(mod).__name__,
                      layer_input_shape=input_shape, file=file, line=line)
    layer = next((m for lbl, m in tracer.layer_modules if m is mod or any(c is mod for c in m.modules())), None)
    if layer is not None:
        failure.layer = _int_or(tracer.label_of(layer))
        failure.module = type(layer).__name__
        failure.inner = {"path": tracer.paths.get(id(mod)), "module": type(mod).__name__, "input_shape": input_shape}
    else:
        failure.layer = tracer.paths.get(id(mod))
    return failure


def _user_source(run: ProbeRun, mod: Any) -> tuple[str | None, int | None]:
    """forward() of the module, or of its nearest ancestor written outside torch (a
    torch layer's own source says nothing about the user's bug)."""
    from yoloblocks_cli.tracing.tracer import is_internal

    path = run.target.tracer.paths.get(id(mod), "")
    candidates = [mod]
    parts = path.split(".") if path and not path.startswith("<") else []
    while parts:
        parts.pop()
        candidates.append(run.module.get_submodule(".".join(parts)) if parts else run.module)
    for cand in candidates:
        file, line = module_source(cand)
        if file is not None and not is_internal(str(Path(file).resolve())):
            return file, line
    return None, None


def _int_or(label: str) -> Any:
    return int(label) if label.isdigit() else label


@register_probe("batch", "eval output of sample i in a batch equals sample i run alone")
def probe_batch(run: ProbeRun) -> ProbeResult:
    b = run.shape.batch
    if b < 2:
        return ProbeResult("batch", "skip", "batch 1")
    r = run.eval()
    if not r.ok:
        return run.depends("sweep", r, "batch")
    torch = run.torch
    rtol, atol_rel = run.tolerance()
    batched = flatten_tensors(r.output)
    for i in range(b):
        single = run.call(lambda i=i: _no_grad(torch, run.module, run.x[i:i + 1]))
        if not single.ok:
            return run.depends("sweep", single, "batch") if single.timed_out else ProbeResult(
                "batch", "fail", f"sample {i} alone: {_one_line(single.failure)}", single.failure)
        alone = flatten_tensors(single.output)
        diff, scale = _max_diff(batched, alone, i, b)
        atol = atol_rel * max(1.0, scale)
        if diff is None or diff > atol + rtol * scale:
            from yoloblocks_cli.tracing.mixing import MixingSite, explain, locate_mixing, point_at, replay_selections

            def same(got: Any, ref: Any, i: int = i) -> bool:
                d, s = _max_diff(flatten_tensors(got), flatten_tensors(ref), i, b)
                return d is not None and d <= atol_rel * max(1.0, s) + rtol * s

            if diff is not None:
                ties = replay_selections(run.module, run.x[i:i + 1], run.x, i, b, rtol, atol_rel, same)
                if ties is not None:
                    return ProbeResult("batch", "pass", ties.message(i))
            why = explain(run, i) if diff is not None else None
            where = _first_divergence(run, i) or Failure(type="", message="")
            what = ("output structure differs" if diff is None else
                    f"max abs diff {diff:.3g} > tolerance {atol + rtol * scale:.3g}")
            where.type = "BatchDependence"
            where.message = (f"sample {i} of a batch of {b} differs from the same sample run alone ({what}): "
                             "samples leak into each other")
            where.cause = "batch-mixing"
            where.hint = ("batch mixing: a reshape or reduction folds the batch axis into tokens (e.g. view(-1, C) "
                          "then softmax/mean over dim 0); keep B as its own axis")
            if isinstance(why, MixingSite):  # the op (file:line) whose output mixes samples
                point_at(run, where, why)
            elif diff is None:
                locate_mixing(run, i, where)
            return ProbeResult("batch", "fail", where.message, where)
    return ProbeResult("batch", "pass", f"{b} samples independent")


def _no_grad(torch: Any, module: Any, x: Any) -> Any:
    with torch.no_grad():
        return module(x)


def _max_diff(batched: list[Any], alone: list[Any], i: int, b: int) -> tuple[float | None, float]:
    """Largest |batched[i] - alone[0]| over every output tensor, and the outputs' magnitude."""
    if len(batched) != len(alone):
        return None, 0.0
    worst, scale = 0.0, 0.0
    for tb, ta in zip(batched, alone):
        if tb.dim() == 0 or tb.shape[0] != b or tuple(tb.shape[1:]) != tuple(ta.shape[1:]):
            return None, 0.0
        a, s = tb[i:i + 1].double(), ta.double()
        worst = max(worst, float((a - s).abs().max())) if a.numel() else worst
        scale = max(scale, float(s.abs().max())) if s.numel() else scale
    return worst, scale


def _first_divergence(run: ProbeRun, i: int) -> Failure | None:
    """Which module first produces a different output for sample i batched vs alone.

    Only run after a failure: it copies each module's sample-i output, which the normal path
    never does.
    """
    torch = run.torch
    rtol, atol_rel = run.tolerance()

    def capture(x: Any, pick: int) -> list[tuple[Any, Any, Any]]:
        log: list[tuple[Any, Any, Any]] = []

        def hook(mod: Any, args: tuple, out: Any) -> None:
            ts = flatten_tensors(out)
            log.append((mod, shape_of(args[0]) if args else None,
                        [t[pick:pick + 1].detach().double().clone() if t.dim() else t for t in ts]))

        handles = [m.register_forward_hook(hook) for m in run.module.modules()]
        try:
            with torch.no_grad():
                run.module(x)
        finally:
            for h in handles:
                h.remove()
        return log

    batched, alone = capture(run.x, i), capture(run.x[i:i + 1], 0)
    for (mod, shp, tb), (_, _, ta) in zip(batched, alone):
        for a, s in zip(tb, ta):
            if a.shape != s.shape:
                return _failure_at(run, mod, shp)
            scale = float(s.abs().max()) if s.numel() else 0.0
            if s.numel() and float((a - s).abs().max()) > atol_rel * max(1.0, scale) + rtol * scale:
                return _failure_at(run, mod, shp)
    return None


@register_probe("channels-last", "channels_last input gives the same output as contiguous input")
def probe_channels_last(run: ProbeRun) -> ProbeResult:
    r = run.eval()
    if not r.ok:
        return run.depends("sweep", r, "channels-last")
    torch = run.torch
    x_cl = run.x.contiguous(memory_format=torch.channels_last)
    cl = run.call(lambda: _no_grad(torch, run.module, x_cl))
    if cl.timed_out:
        return ProbeResult("channels-last", "timeout", "timed out", cl.failure)
    if cl.failure is not None:
        return ProbeResult("channels-last", "fail", _one_line(cl.failure), cl.failure)
    ref, got = flatten_tensors(r.output), flatten_tensors(cl.output)
    rtol, atol_rel = run.tolerance()
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            f = Failure(type="ChannelsLastMismatch", message=f"output shape {list(b.shape)} != {list(a.shape)}")
            return ProbeResult("channels-last", "fail", f.message, f)
        finite = a.double()[torch.isfinite(a.double())]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        close = torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol_rel * max(1.0, scale), equal_nan=True)
        if a.numel() and not close:
            from yoloblocks_cli.tracing.mixing import replay_selections

            def same(got: Any, ref: Any) -> bool:
                return _all_close(torch, flatten_tensors(ref), flatten_tensors(got), rtol, atol_rel)

            ties = replay_selections(run.module, run.x, x_cl, 0, 1, rtol, atol_rel, same)
            if ties is not None:
                return ProbeResult("channels-last", "pass", ties.layout_message())
            f = Failure(type="ChannelsLastMismatch", message="output differs with channels_last input",
                        cause="layout", hint="layout dependence: the block reads memory as if it were NCHW-contiguous")
            return ProbeResult("channels-last", "fail", f.message, f)
    return ProbeResult("channels-last", "pass", "same output")


def _all_close(torch: Any, ref: list, got: list, rtol: float, atol_rel: float) -> bool:
    """Every output tensor equal in shape and allclose (the channels-last probe's rule)."""
    if len(ref) != len(got):
        return False
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            return False
        finite = a.double()[torch.isfinite(a.double())]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        if a.numel() and not torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol_rel * max(1.0, scale),
                                            equal_nan=True):
            return False
    return True


@register_probe("train", "train-mode forward + backward runs (batch >= 2)")
def probe_train(run: ProbeRun) -> ProbeResult:
    if "sweep" in run.enabled:
        # The same exception again in train mode would only repeat the sweep's cell.
        ev = run.eval()
        if not ev.ok:
            return ProbeResult("train", "skip", "not run: input too small for this block" if too_small(ev.failure)
                               else "not run: sweep failed")
    r, _ = run.train()
    if r.timed_out:
        return ProbeResult("train", "timeout", "timed out", r.failure)
    if too_small(r.failure):
        return ProbeResult("train", "skip", "not run: input too small for this block", r.failure)
    if r.failure is not None:
        return ProbeResult("train", "fail", _one_line(r.failure), r.failure)
    return ProbeResult("train", "pass", "forward+backward")


def _used_outside_forward(module, missing: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split off parameters of submodules a block declares in ``outside_forward`` (name -> where it is used:
    a loss, a prompting path); the forward pass cannot reach them, which is their design, not a bug."""
    declared = {}
    for name, m in module.named_modules():
        for sub, why in (getattr(m, "outside_forward", None) or {}).items():
            declared[f"{name}.{sub}" if name else sub] = why
    if not declared:
        return missing, {}
    rest, hit = [], {}
    for p in missing:
        owner = next((d for d in declared if p.startswith(d + ".")), None)
        if owner is None:
            rest.append(p)
        else:
            hit[owner] = declared[owner]
    return rest, hit


@register_probe("grads", "every trainable parameter receives a gradient (DDP rejects unused ones)")
def probe_grads(run: ProbeRun) -> ProbeResult:
    r, missing = run.train()
    if not r.ok:
        return run.depends("train", r, "grads")
    if not missing and not any(True for _ in run.module.parameters()):
        reached = run.cache.get("input_grad")
        return ProbeResult("grads", "pass" if reached else "fail", "no parameters; the gradient reaches the input"
                           if reached else "no parameters and no gradient reaches the input")
    missing, elsewhere = _used_outside_forward(run.module, missing)
    if not missing:
        if elsewhere:
            return ProbeResult("grads", "pass", "all parameters the forward pass uses get a gradient; "
                               + "; ".join(f"{name}: {why}" for name, why in elsewhere.items()))
        return ProbeResult("grads", "pass", "all parameters get a gradient")
    owner_path = missing[0].rpartition(".")[0]
    owner = run.module.get_submodule(owner_path) if owner_path else run.module
    f = _failure_at(run, owner, None)
    f.type = "UnusedParameters"
    shown = ", ".join(missing[:8]) + (f", ... (+{len(missing) - 8})" if len(missing) > 8 else "")
    f.message = f"{len(missing)} parameter(s) received no gradient: {shown}"
    f.cause = "unused-parameters"
    f.hint = ("unused parameters: DistributedDataParallel stops with 'Expected to have finished reduction'; "
              "remove them or use find_unused_parameters=True")
    f.layer_input_shape = None
    return ProbeResult("grads", "fail", f.message, f)


from yoloblocks_cli.tracing import export_probe  # noqa: E402,F401 - registers "export" (opt-in), in its own module
