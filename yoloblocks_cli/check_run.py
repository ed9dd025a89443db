"""Run a `yb check` configuration: build, measure, sweep, probe, judge budgets and baseline.

The command (:mod:`yoloblocks_cli.commands.check`) only renders what :func:`run_check`
returns. Every verdict is a :class:`~yoloblocks_cli.budget.Finding`; a target that cannot
be built or run becomes failed findings rather than aborting the run, so one CI job
reports everything that is wrong at once. Bad configuration or bad input is still a
:class:`~yoloblocks_cli.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from yoloblocks_cli.baseline import diff_baseline, load_baseline, write_baseline
from yoloblocks_cli.budget import Finding, evaluate_budgets
from yoloblocks_cli.check_config import CheckConfig, TargetConfig
from yoloblocks_cli.errors import CheckFailed, UsageError
from yoloblocks_cli.measure import Measurement, measure


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


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame outside torch: where the block itself raised."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {Path(f.filename).name}:{f.lineno})"


def _failure(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}{_where(exc)}"


def _label(cfg: CheckConfig, t: TargetConfig) -> str:
    prefix = "tool.yoloblocks." if cfg.path.name == "pyproject.toml" else ""
    return f"{cfg.path.name}: [{prefix}{'blocks' if t.kind == 'block' else 'models'}.{t.name}]"


def _shape(cfg: CheckConfig, t: TargetConfig, size: str | None, key: str) -> Any:
    from yoloblocks_cli.targets import shape_for

    try:
        return shape_for(t.kind, size)
    except UsageError as exc:
        raise UsageError(f"{_label(cfg, t)} {key}: {exc}") from None


def run_sweep(module: Any, shapes: list[Any], device: Any, dtype: Any) -> list[dict[str, Any]]:
    """Forward every shape; one point per shape (``input_shape``, ``ok``, ``output_shape``/``error``).

    Uses the trace engine when it is present (it localises the failing layer); this
    local fallback runs the whole module and reports the exception and where it was raised.
    """
    import torch

    points = []
    for shape in shapes:
        x = torch.randn(*shape.dims, device=device, dtype=dtype)
        try:
            with torch.no_grad():
                out = module(x)
        except Exception as exc:  # the block failing at this size is the finding
            points.append({"input_shape": list(shape.dims), "ok": False,
                           "error": {"type": exc.__class__.__name__, "message": str(exc).strip(),
                                     "where": _where(exc).strip(" ()")},
                           "text": _failure(exc)})
            continue
        from yoloblocks_cli.measure import _shape_of

        points.append({"input_shape": list(shape.dims), "ok": True, "output_shape": _shape_of(out)})
    return points


def run_probes(names: list[str], module: Any, shape: Any, device: Any, dtype: Any,
               label: str) -> list[dict[str, Any]]:
    """Robustness probes from the trace engine (:mod:`yoloblocks_cli.probes`)."""
    if not names:
        return []
    try:
        from yoloblocks_cli import probes as engine
    except ImportError:
        raise UsageError(f"{label} probes: this build of yb has no probe engine (yoloblocks_cli.probes)") from None
    runner: Callable | None = getattr(engine, "run_probes", None)
    if runner is None:
        raise UsageError(f"{label} probes: yoloblocks_cli.probes has no run_probes()")
    return list(runner(module, shape, names=names, device=device, dtype=dtype))


def run_check(cfg: CheckConfig, *, update_baseline: bool = False, threads: int | None = None,
              progress: Callable[[str], None] | None = None) -> CheckResult:
    """Everything the configuration asks for, in one run; the latency of all targets interleaved."""
    from yoloblocks_cli.measure import resolve_device, resolve_dtype
    from yoloblocks_cli.reporting import base, env
    from yoloblocks_cli.targets import resolve_target

    say = progress or (lambda text: None)
    dev, dt = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
    findings: list[Finding] = []
    built = []
    for t in cfg.targets:
        say(f"building {t.name}")
        shape = _shape(cfg, t, t.size, "size")
        try:
            target = resolve_target(t.spec, str(shape) if t.kind == "block" else t.size, args=t.args,
                                    kwargs=t.kwargs, scale=t.scale, nc=t.nc, name=t.name)
        except CheckFailed as exc:
            findings.append(Finding(t.name, "build", False, str(exc)))
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
        findings.extend(evaluate_budgets(m, budgets, cfg.counter))
        module = target.module
        if t.sweep:
            say(f"sweeping {t.name}")
            shapes = [_shape(cfg, t, s, "sweep") for s in t.sweep]
            points = run_sweep(module, shapes, dev, dt)
            for p in points:
                size = "x".join(str(d) for d in p["input_shape"])
                findings.append(Finding(t.name, f"sweep {size}", p["ok"],
                                        f"output {p['output_shape']}" if p["ok"] else p.pop("text")))
            extra.setdefault(t.name, {})["sweep"] = points
        if t.probes:
            say(f"probing {t.name}")
            results = run_probes(t.probes, module, target.shape, dev, dt, _label(cfg, t))
            for r in results:
                findings.append(Finding(t.name, f"probe {r['name']}", bool(r["ok"]), str(r.get("message", ""))))
            extra.setdefault(t.name, {})["probes"] = results

    baseline_written = None
    if cfg.baseline is not None and not update_baseline:
        say("comparing with the baseline")
        findings.extend(diff_baseline(measurements, load_baseline(cfg.baseline.file),
                                      cfg.baseline.tolerances, cfg.counter))

    report = base("check", str(cfg.path), env(str(dev), cfg.dtype, threads))
    report["counter"] = cfg.counter
    report["targets"] = [{**m.as_json(), **extra.get(m.name, {})} for m in measurements]
    report["checks"] = [f.as_json() for f in findings]
    report["passed"] = sum(f.ok for f in findings)
    report["failed"] = sum(not f.ok for f in findings)
    report["ok"] = report["failed"] == 0
    if update_baseline:
        if cfg.baseline is None:
            raise UsageError(f"{cfg.path.name}: --update-baseline needs a [baseline] table with file = \"...\"")
        if report["ok"]:
            write_baseline(cfg.baseline.file, report)
            baseline_written = cfg.baseline.file
    return CheckResult(cfg, measurements, findings, report, baseline_written, extra)


def write_junit(findings: list[Finding], path: str | Path, suite: str = "yb check") -> None:
    """JUnit XML, one test case per finding (local writer until the trace helper's junit.py lands)."""
    import xml.etree.ElementTree as ET

    from yoloblocks_cli.baseline import write_atomic

    root = ET.Element("testsuites")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(findings)),
                         failures=str(sum(not f.ok for f in findings)), errors="0", skipped="0")
    for f in findings:
        case = ET.SubElement(node, "testcase", classname=f.target, name=f.check)
        if f.ok:
            ET.SubElement(case, "system-out").text = f.message
        else:
            ET.SubElement(case, "failure", message=f.message, type="CheckFailed").text = f.message
    ET.indent(root)
    write_atomic(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")
