"""Two-phase sweep: shapes everywhere on meta tensors, numbers at a few real configurations.

Why two phases: shape bugs (square assumption, fixed token count, hard-coded width, odd
size) need no arithmetic, and the validation loader feeds 41 shapes at 640; value bugs
(non-finite output, batch mixing, layout dependence, a train-mode backward, unused
parameters) need real arithmetic, but not at 88 configurations. So:

- the *shape phase* runs every configuration's eval forward, and at batch >= 2 its
  train-mode forward when the ``train`` probe is on, on meta tensors (:mod:`.shape_phase`): the ``sweep`` cell
  and a shape-only ``train`` cell; the value probes are skipped there, and say where they ran;
- the *numeric phase* runs every enabled probe on real tensors at one rectangular
  configuration at batch 2, and the eval-mode value probes at the base size (no second
  train step: it is most of the numeric cost), exactly as
  :func:`~yoloblocks_cli.tracing.probes.run_point` always has.

A meta failure is run again on real tensors, so a failure is reported from the real run
(layer, input, file:line, cause), never from the meta one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.guard import guarded_point
from yoloblocks_cli.tracing.probes import Point, ProbeResult, Target
from yoloblocks_cli.tracing.shape_phase import ShapeChecker
from yoloblocks_cli.tracing.tracer import fmt_shape, shape_of

SHAPE_PROBES = ("sweep", "train")  # the cells the shape phase answers
EVAL_PROBES = ("sweep", "finite", "batch", "channels-last")  # no train step: cheap at a second configuration
# An exported graph can bake one size in (a reshape traced to constants): the export probe runs the
# graph on real tensors at every configuration of the sweep, the shape phase's ones included.
EVERY_CONFIGURATION = ("export",)


@dataclass(frozen=True)
class SweepPlan:
    """What to run: every configuration, and those where the numeric probes run (all of them
    for ``--quick`` and ``--sizes``: the user asked for those exactly)."""

    shapes: tuple[Shape, ...]
    numeric: tuple[Shape, ...]
    origins: tuple[str, ...] = ()  # why each shape is in the sweep (validation, train, band...)
    eval_only: tuple[Shape, ...] = ()  # numeric shapes that run the eval-mode value probes only

    @property
    def two_phase(self) -> bool:
        return len(self.numeric) < len(self.shapes)

    def origin(self, shape: Shape) -> str | None:
        if not self.origins:
            return None
        return dict(zip(self.shapes, self.origins)).get(shape)


OnPoint = Callable[[Point, float], None]


def run_plan(targets: Sequence[Target], plan: SweepPlan, probes: Sequence[str], *, device: Any = None,
             dtype: Any = None, timeout: float | None = None, record_layers: bool = False,
             on_point: OnPoint | None = None, checkers: list[Any] | None = None) -> list[Point]:
    """Every target through both phases -> points in plan order.

    ``on_point`` is called as each configuration finishes (CI progress, interrupt safety);
    the caller may collect the points there, since a KeyboardInterrupt escapes this function.
    Each target's :class:`ShapeChecker` (with its fallbacks) is appended to ``checkers``
    as soon as it exists, for the same reason.
    """
    points: list[Point] = []
    for target in targets:
        try:
            points += _run_target(target, plan, probes, device, dtype, timeout, record_layers, on_point,
                                  checkers if checkers is not None else [])
        finally:
            if target.tracer is not None:
                target.tracer.detach()
    return points


def _run_target(target: Target, plan: SweepPlan, probes: Sequence[str], device: Any, dtype: Any,
                timeout: float | None, record_layers: bool,
                on_point: OnPoint | None, checkers: list[Any]) -> list[Point]:
    f = target.build_failure
    by_shape: dict[Shape, Point] = {}

    def finish(p: Point, seconds: float) -> None:
        by_shape[p.shape] = p
        if on_point is not None:
            on_point(p, seconds)

    if f is not None:  # this scale could not be built: every configuration of it fails alike
        for shape in plan.shapes:
            finish(Point(shape, target.scale, {"sweep": ProbeResult(
                "sweep", "fail", f"build failed: {f.type}: {f.message.splitlines()[0]}", f)}), 0.0)
        return [by_shape[s] for s in plan.shapes]
    if device is not None:
        target.module.to(device=device, dtype=dtype)
    if plan.eval_only and target.export_shape is None:
        target.export_shape = plan.eval_only[0]  # the base size: export there, as ultralytics does at imgsz
    checker = ShapeChecker(target, device=device, dtype=dtype) if plan.two_phase else None
    if checker is not None:
        checkers.append(checker)
    full = [s for s in plan.numeric if s not in plan.eval_only]
    where = ", ".join(str(s) for s in plan.numeric) or "no configuration"
    only_full = ", ".join(str(s) for s in full) or "no configuration"
    kw = dict(device=device, dtype=dtype, timeout=timeout, record_layers=record_layers)
    if checker is not None:
        for shape in plan.shapes:
            if shape in plan.numeric:
                continue
            start = time.perf_counter()
            p = shape_point(checker, target, shape, probes, where, **kw)
            every = [n for n in probes if n in EVERY_CONFIGURATION]
            if every and p.ok:
                real = guarded_point(target, shape, every, **kw)
                p.results.update({n: r for n, r in real.results.items() if n in every})
            finish(p, time.perf_counter() - start)
    for shape in plan.numeric:
        start = time.perf_counter()
        enabled = ([n for n in probes if n in EVAL_PROBES + EVERY_CONFIGURATION] if shape in plan.eval_only
                   else list(probes))
        p = guarded_point(target, shape, enabled, **kw)  # input allocation and SystemExit inside the guard
        p.results = {n: p.results.get(n) or ProbeResult(n, "skip", f"numeric probe: runs at {only_full}")
                     for n in probes}
        finish(p, time.perf_counter() - start)
    return [by_shape[s] for s in plan.shapes if s in by_shape]


def shape_point(checker: ShapeChecker, target: Target, shape: Shape, probes: Sequence[str], numeric_at: str, *,
                device: Any, dtype: Any, timeout: float | None, record_layers: bool) -> Point:
    """One configuration of the shape phase: the sweep (and train-mode) forward on meta."""
    point = Point(shape, target.scale)
    point.phase = "shape"
    kw = dict(device=device, dtype=dtype, timeout=timeout, record_layers=record_layers)
    sweep_ok = True
    if "sweep" in probes:
        start = time.perf_counter()
        r, out, layers = _check(checker, target, shape, "sweep", False, record_layers, kw)
        r.seconds = time.perf_counter() - start
        point.results["sweep"] = r
        point.output_shape, point.layers = out, layers
        sweep_ok = r.status == "pass"
    for name in probes:
        if name == "sweep":
            continue
        start = time.perf_counter()
        if name == "train":
            if shape.batch < 2:
                # YOLO never trains at batch 1 (BatchNorm refuses it): the train-mode forward
                # is checked at the batch-2 configurations (every model shape has one).
                r = ProbeResult("train", "skip", "train-mode forward: checked at batch >= 2")
            elif not sweep_ok:
                skipped = point.results["sweep"].status == "skip"
                r = ProbeResult("train", "skip", "not run: input too small for this block" if skipped
                                else "not run: sweep failed")
            else:
                r, _, _ = _check(checker, target, shape, "train", True, False, kw)
        else:
            r = ProbeResult(name, "skip", f"numeric probe: runs at {numeric_at}")
        r.seconds = time.perf_counter() - start
        point.results[name] = r
    return point


def _check(checker: ShapeChecker, target: Target, shape: Shape, probe: str, train: bool, record_layers: bool,
           kw: dict[str, Any]) -> tuple[ProbeResult, Any, list[Any]]:
    """Meta forward; on a meta failure, the real probe decides (and a real pass teaches a fallback).

    The meta forward runs inline, without ``--timeout``: it computes nothing, and a worker
    thread left running would keep the module's parameters swapped for meta ones while the
    next configuration runs. The real reruns keep the timeout.
    """
    outcome = checker.run(shape, train=train, record_layers=record_layers)
    mode = "train-mode forward" if train else "forward"
    if outcome.ok:
        used = _fallback_note(checker)
        return (ProbeResult(probe, "pass", f"{fmt_shape(shape_of(outcome.output))} ({mode} on meta tensors{used})"),
                shape_of(outcome.output) if not train else None, list(outcome.layers))
    real = guarded_point(target, shape, [probe], **kw)
    r = real.results[probe]
    if r.status == "pass":
        fb = checker.learn(shape, train=train)
        note = f"; {fb.describe()}" if fb is not None else ""
        r.detail = f"{r.detail} (real tensors{note})"
    return r, real.output_shape, list(real.layers)


def _fallback_note(checker: ShapeChecker) -> str:
    if not checker.fallbacks:
        return ""
    return "; real tensors in " + ", ".join(f"layer {f.layer} ({f.module})" for f in checker.fallbacks)
