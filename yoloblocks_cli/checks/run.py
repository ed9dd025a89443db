"""Run a `yb check` configuration: build, measure, sweep, probe, judge budgets and baseline.

The command (:mod:`yoloblocks_cli.commands.check`) only renders what :func:`run_check`
returns. Every verdict is a :class:`~yoloblocks_cli.checks.budget.Finding`; a target that cannot
be built or run becomes failed findings rather than aborting the run, so one CI job
reports everything that is wrong at once. Bad configuration or bad input is still a
:class:`~yoloblocks_cli.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from yoloblocks_cli.checks.baseline import diff_baseline, load_baseline, write_baseline
from yoloblocks_cli.checks.budget import Finding, evaluate_budgets
from yoloblocks_cli.checks.config import CheckConfig, TargetConfig
from yoloblocks_cli.errors import CheckFailed, UsageError
from yoloblocks_cli.measuring.measure import Measurement, measure


@dataclass
class CheckResult:
    config: CheckConfig
    measurements: list[Measurement]
    findings: list[Finding]
    report: dict[str, Any]
    baseline_written: Path | None = None
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def inconclusive(self) -> list[Finding]:
        """Latency verdicts this run could not decide (exit 3 when nothing failed)."""
        return [f for f in self.findings if f.inconclusive and f.ok]


def _where(exc: BaseException) -> str:
    """file:line of the frame in the user's code where the block raised (trace engine's rule)."""
    from yoloblocks_cli.tracing.tracer import user_frame

    found = user_frame(exc)
    return f" (at {Path(found[0]).name}:{found[1]})" if found else ""


def _failure(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}{_where(exc)}"


def _label(cfg: CheckConfig, t: TargetConfig) -> str:
    prefix = "tool.yoloblocks." if cfg.path.name == "pyproject.toml" else ""
    return f"{cfg.path.name}: [{prefix}{'blocks' if t.kind == 'block' else 'models'}.{t.name}]"


def _shape(cfg: CheckConfig, t: TargetConfig, size: str | None, key: str) -> Any:
    from yoloblocks_cli.loading.targets import shape_for

    try:
        return shape_for(t.kind, size)
    except UsageError as exc:
        raise UsageError(f"{_label(cfg, t)} {key}: {exc}") from None


def _failure_text(f: Any) -> str:
    """A trace engine Failure in one line: what, where (layer, file:line) and the hint."""
    first = f.message.strip().splitlines()[0] if f.message and f.message.strip() else ""
    where = []
    if f.layer is not None:
        where.append(f"layer {f.layer}" + (f" ({f.module})" if f.module else ""))
    if f.file:
        where.append(f"at {Path(f.file).name}:{f.line}")
    text = f"{f.type}: {first}" + (f" [{', '.join(where)}]" if where else "")
    return text + (f"; hint: {f.hint}" if f.hint else "")


def probe_target(target: Any) -> Any:
    """The trace engine's view of a target: the module with a shape tracer attached."""
    from yoloblocks_cli.tracing.probes import Target as ProbeTarget
    from yoloblocks_cli.tracing.tracer import ShapeTracer

    if target.kind == "model" and target.built is not None:
        from yoloblocks_cli.tracing.run import model_layer_modules

        tracer = ShapeTracer(target.module, layer_modules=model_layer_modules(target.built), only_layers=True)
    else:
        tracer = ShapeTracer(target.module)
    return ProbeTarget(target.module, tracer.attach(), target.call, None, target.kind)


def run_probes(target: Any, shapes: list[Any], probes: list[str], device: Any, dtype: Any) -> tuple[
        list[Finding], list[dict[str, Any]]]:
    """Every probe at every shape through the trace engine -> findings and JSON points."""
    from yoloblocks_cli.tracing.probes import probe_names, run_point
    from yoloblocks_cli.tracing.run import point_status

    enabled = [n for n in probe_names() if n in {"sweep", *probes}]
    pt = probe_target(target)
    findings, points = [], []
    try:
        for shape in shapes:
            point = run_point(pt, shape, enabled, device=device, dtype=dtype)
            for name, r in point.results.items():
                if r.status == "pass":
                    msg = r.detail if name != "sweep" else f"output {r.detail}"
                elif r.status == "skip":
                    msg = r.detail
                else:
                    msg = _failure_text(r.failure) if r.failure is not None else r.detail
                findings.append(Finding(target.name, f"{name} {shape}", not r.failed, msg, r.status == "skip",
                                        seconds=r.seconds))
            status = point_status(point)  # a configuration too small for the block is "ok": null, never true
            points.append({"input_shape": list(shape.dims), "ok": None if status == "skip" else point.ok,
                           "status": status, "output_shape": point.output_shape,
                           "probes": {n: r.to_json() for n, r in point.results.items()}})
    finally:
        pt.tracer.detach()
    return findings, points


def _display(path: Path) -> str:
    """The config path relative to the working directory when inside it (baselines get committed)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def run_check(cfg: CheckConfig, *, update_baseline: bool = False, threads: int | None = None,
              progress: Callable[[str], None] | None = None, fail_inconclusive: bool = False) -> CheckResult:
    """Everything the configuration asks for, in one run; the latency of all targets interleaved."""
    from yoloblocks_cli.device import resolve_device, resolve_dtype
    from yoloblocks_cli.reporting.report import base_report, env_info
    from yoloblocks_cli.loading.targets import resolve_target

    say = progress or (lambda text: None)
    if update_baseline and cfg.baseline is None:
        raise UsageError(f"{cfg.path.name}: --update-baseline needs a [baseline] table with file = \"...\"")
    # Bad input fails before anything is built: a missing or broken baseline is exit 2 at once.
    baseline = load_baseline(cfg.baseline.file) if cfg.baseline is not None and not update_baseline else None
    if update_baseline:
        from yoloblocks_cli.reporting.atomic import check_output_path

        check_output_path(cfg.baseline.file, "[baseline] file")  # before the work, not after it
    dev, dt = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    findings: list[Finding] = []
    built = []
    for t in cfg.targets:
        say(f"building {t.name}")
        started = time.perf_counter()
        shape = _shape(cfg, t, t.size, "size")
        try:
            target = resolve_target(t.spec, str(shape) if t.kind == "block" else t.size, args=t.args,
                                    kwargs=t.kwargs, scale=t.scale, nc=t.nc, name=t.name, plugins=cfg.plugins)
        except CheckFailed as exc:
            findings.append(Finding(t.name, "build", False, str(exc), seconds=time.perf_counter() - started))
            continue
        except UsageError as exc:
            raise UsageError(f"{_label(cfg, t)} {exc}") from None
        built.append((t, target))

    def on_error(target: Any, exc: Exception) -> None:
        findings.append(Finding(target.name, "forward", False, f"input {target.shape}: {_failure(exc)}"))

    refs = {t.name: t.reference for t in cfg.targets}
    say("measuring" + (" (interleaved latency)" if cfg.needs_latency else ""))
    measurements = measure([b for _, b in built], str(dev), cfg.dtype, counters=(cfg.counter,),
                           latency=cfg.needs_latency, memory=False, rounds=cfg.rounds, warmup=cfg.warmup,
                           reference=lambda name: refs.get(name), on_error=on_error)
    measured = {m.name: m for m in measurements}
    extra: dict[str, dict[str, Any]] = {}
    for t, target in built:
        m = measured.get(t.name)
        if m is None:
            continue
        ref_missing = t.reference is not None and t.reference not in measured
        if t.budgets.max_latency_ratio is not None and ref_missing:
            findings.append(Finding(t.name, "max_latency_ratio", False,
                                    f"reference {t.reference} could not be measured"))
            budgets = type(t.budgets)(t.budgets.max_params, t.budgets.max_gflops, None)
        else:
            budgets = t.budgets
        found = evaluate_budgets(m, budgets, cfg.counter, fail_inconclusive)
        exact = [f for f in found if f.check != "max_latency_ratio"]
        for f in exact:  # parameters and FLOPs come from one counting pass: they share its time
            f.seconds = m.seconds / len(exact)
        findings.extend(found)
        if t.sweep or t.probes:
            say(f"tracing {t.name}")
            shapes = [_shape(cfg, t, size, "sweep") for size in (t.sweep or [t.size])]
            found, points = run_probes(target, shapes, t.probes, dev, dt)
            findings.extend(found)
            extra.setdefault(t.name, {})["sweep"] = points

    baseline_written = None
    if baseline is not None:
        say("comparing with the baseline")
        started = time.perf_counter()
        diffs = diff_baseline(measurements, baseline, cfg.baseline.tolerances, cfg.counter)
        for f in diffs:
            f.seconds = (time.perf_counter() - started) / len(diffs)
        findings.extend(diffs)

    if fail_inconclusive:  # the user opted into failing what this run could not decide
        for f in findings:
            f.ok = f.ok and not f.inconclusive
    report = base_report("check", _display(cfg.path), env_info(dev, dt, threads))
    report["counter"] = cfg.counter
    report["plugins"] = [u.as_json() for _, b in built if b.built is not None for u in getattr(b.built, "plugins", [])]
    report["targets"] = [{**m.as_json(), **extra.get(m.name, {})} for m in measurements]
    report["checks"] = [f.as_json() for f in findings]
    report["passed"] = sum(f.ok and not f.skipped and not f.inconclusive for f in findings)
    report["inconclusive"] = sum(f.ok and f.inconclusive for f in findings)
    report["failed"] = sum(not f.ok for f in findings)
    report["skipped"] = sum(f.skipped for f in findings)
    report["ok"] = report["failed"] == 0
    if update_baseline:
        if report["ok"] and not report["inconclusive"]:  # a noisy latency is not recorded as the reference
            write_baseline(cfg.baseline.file, report)
            baseline_written = cfg.baseline.file
    return CheckResult(cfg, measurements, findings, report, baseline_written, extra)


def write_junit(findings: list[Finding], path: str | Path, suite: str = "yb check") -> None:
    """JUnit XML through the shared writer: one test case per finding."""
    from yoloblocks_cli.reporting.junit import Case
    from yoloblocks_cli.reporting.junit import write_junit as write

    write(path, suite, [Case(classname=f"yb.check.{f.target}", name=f.check,
                             status="skip" if f.status == "inconclusive" else f.status.lower(),
                             message=f.message, error_type="CheckFailed", seconds=f.seconds) for f in findings])
