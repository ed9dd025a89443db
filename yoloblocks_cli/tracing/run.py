"""`yb trace` orchestration: build the targets, sweep the configurations, render the results.

Kept apart from the Typer command so tests and other commands can call :func:`sweep`
directly, and from ``probes.py`` so the probes know nothing about the CLI.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.tracing.guard import guarded_point
from yoloblocks_cli.tracing.probes import (Point, ProbeResult, Target, block_sweep, default_probes, model_sweep, probe_names,
                                          run_point, with_batches)
from yoloblocks_cli.loading.spec import Shape, parse_args_list, parse_block_sizes, parse_kwargs, parse_model_sizes
from yoloblocks_cli.tracing.tracer import ShapeTracer, fmt_shape

DEFAULT_BLOCK_SIZE = "64x20x20"  # the P5 map of a 640 image at width 64
DEFAULT_MODEL_SIZE = "640"


@dataclass
class TraceRequest:
    target: str
    size: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    batch: str | None = None
    scales: str | None = None
    probes: str = "default"
    no_probe: list[str] = field(default_factory=list)
    layers: bool = False
    args: str | None = None
    kwargs: list[str] = field(default_factory=list)
    plugins: list[Path] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int | None = None
    timeout: float | None = None
    json_out: bool = False
    output: Path | None = None
    junit: Path | None = None
    model_yaml: str | None = None  # the YAML a plain state_dict target belongs to
    layout: str | None = None  # --layout nchw|nhwc|bnc
    inputs: list[str] = field(default_factory=list)  # --inputs k=BxNxC
    root: Path | None = None  # --root DIR of a file block
    quick: bool = False  # today's small set, every probe at every configuration


# --- inputs ------------------------------------------------------------------------------------


def parse_probes(text: str, disabled: Sequence[str] = ()) -> list[str]:
    known = probe_names()
    choice = text.strip().lower()
    names = (known if choice == "all" else default_probes() if choice in ("", "default")
             else [p.strip() for p in text.split(",") if p.strip()])
    for n in list(names) + list(disabled):
        if n not in known:
            raise UsageError(f"unknown probe '{n}': choose from {', '.join(known)}")
    return [n for n in known if n in names and n not in disabled]


def parse_batches(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"malformed --batch '{text}': expected integers such as 1,2") from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"malformed --batch '{text}': batch sizes must be positive")
    return values


def is_model_target(text: str) -> bool:
    from yoloblocks_cli.loading.checkpoint import is_checkpoint

    if text.lower().endswith((".yaml", ".yml")) or is_checkpoint(text):
        return True
    if ":" in text or text.endswith(".py"):
        return False
    try:
        from yoloblocks_cli.loading.yaml_model import resolve_model_path  # type: ignore[import-not-found]
    except ImportError:
        return False
    try:
        return resolve_model_path(text) is not None
    except Exception:  # noqa: BLE001 - not a shipped model name: treat as a block
        return False


def resolve_device_dtype(device: str, dtype: str) -> tuple[Any, Any]:
    try:
        from yoloblocks_cli.device import resolve_device, resolve_dtype  # type: ignore[import-not-found]

        return resolve_device(device), resolve_dtype(dtype)
    except ImportError:
        pass
    # Stand-in until yoloblocks_cli.device lands (engine helper).
    import torch

    dtypes = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "half": torch.float16,
              "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp64": torch.float64}
    if dtype.lower() not in dtypes:
        raise UsageError(f"unknown dtype '{dtype}': expected fp32, fp16 or bf16")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"malformed device '{device}': use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"CUDA requested ('{device}') but torch.cuda.is_available() is False; use --device cpu")
    return dev, dtypes[dtype.lower()]


def env_dict(device: Any, dtype: Any) -> dict[str, Any]:
    try:
        from yoloblocks_cli.reporting.report import env_info  # type: ignore[import-not-found]

        return env_info(device, dtype, None)
    except ImportError:
        pass
    import torch

    from yoloblocks_cli import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"torch": torch.__version__, "device": str(device), "device_name": name,
            "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(), "yoloblocks": __version__}


# --- targets ------------------------------------------------------------------------------------


def block_targets(req: TraceRequest, c1: int) -> list[Target]:
    from yoloblocks_cli.loading.load import load_block

    from yoloblocks_cli.loading.inputs import feed_from_map, parse_input_spec
    from yoloblocks_cli.loading.plugins import block_origin

    spec = plugin_spec(req.target, req.plugins, req.root)
    loaded = load_block(spec, c1, parse_args_list(req.args), parse_kwargs(req.kwargs), root=req.root)
    plan = feed_from_map(loaded.module, parse_input_spec(req.layout, req.inputs))
    tracer = ShapeTracer(loaded.module).attach(persistent=req.layers)
    tracer.input_layout = plan.spec.layout.value
    tracer.input_plan = plan  # read by build_report (target_notes)
    tracer.block_origin = block_origin(loaded.spec)
    return [Target(loaded.module, tracer, loaded.call, None, "block")]


def model_layer_modules(built: Any) -> list[tuple[Any, Any]]:
    """(YAML index, module) of each layer of a built model.

    Reads, in order: ``built.layer_modules``; a ``module`` on each ``built.layers`` entry;
    an ultralytics-style ``built.model.model`` list (index from each layer's ``.i``); the
    top-level children when there is one per YAML layer.
    """
    import torch.nn as nn

    explicit = getattr(built, "layer_modules", None)
    if callable(explicit):
        explicit = explicit()
    if explicit:
        return [(getattr(m, "i", pos), m) if isinstance(m, nn.Module) else tuple(m) for pos, m in enumerate(explicit)]
    infos = list(getattr(built, "layers", None) or [])
    mods = [getattr(info, "module", None) for info in infos]
    if infos and all(isinstance(m, nn.Module) for m in mods):
        return [(getattr(info, "index", pos), m) for pos, (info, m) in enumerate(zip(infos, mods))]
    seq = getattr(built.model, "model", None)
    if isinstance(seq, (nn.ModuleList, nn.Sequential)):
        return [(getattr(m, "i", pos), m) for pos, m in enumerate(seq)]
    children = list(built.model.children())
    if infos and len(children) == len(infos):
        return [(getattr(info, "index", pos), m) for pos, (info, m) in enumerate(zip(infos, children))]
    return []


def model_targets(req: TraceRequest) -> tuple[list[Target], int]:
    try:
        from yoloblocks_cli.loading.yaml_model import build_model  # type: ignore[import-not-found]
    except ImportError:
        raise UsageError("model YAMLs need yoloblocks_cli.loading.yaml_model, which this installation lacks") from None
    scales = [s.strip() for s in req.scales.split(",") if s.strip()] if req.scales else [None]
    targets, stride = [], 0
    for scale in scales:
        try:
            built = build_model(req.target, scale=scale, plugins=tuple(str(p) for p in req.plugins),
                                weights_yaml=req.model_yaml)
        except UsageError as exc:
            if not _LAYER_RAN.search(str(exc)) or exc.__context__ is None:
                raise  # a malformed YAML, an unknown module: bad input
            # The builder's dry run of one layer raised: the block fails at this scale.
            targets.append(Target(None, None, f"{Path(req.target).name} (scale {scale})", scale, "model",
                                  build_failure=build_failure(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one scale that cannot be built is a failed scale
            targets.append(Target(None, None, f"{Path(req.target).name} (scale {scale})", scale, "model",
                                  build_failure=build_failure(exc)))
            continue
        layer_mods = model_layer_modules(built)
        tracer = ShapeTracer(built.model, layer_modules=layer_mods, only_layers=True).attach(persistent=req.layers)
        tracer.plugin_uses = getattr(built, "plugins", [])  # read by build_report (target_notes)
        stride = max(stride, largest_stride(getattr(built, "stride", None)))
        name = Path(req.target).name + (f" (scale {scale})" if scale else "")
        targets.append(Target(built.model, tracer, name, getattr(built, "scale", None) or scale, "model"))
    # ultralytics' loaders lay images on a grid of max(model stride, 32) (a classifier's stride is 1)
    return targets, max(stride, 32)


def largest_stride(value: Any) -> int:
    """A model's stride as int, list or tensor -> its largest value (0 when unknown)."""
    if value is None:
        return 0
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return int(max(value)) if value else 0
    return int(value)


_LAYER_RAN = re.compile(r"layer (\d+) \(([^)]*)\): fails on its input ([\dx\[\], ]+?): ")


def build_failure(exc: BaseException) -> Any:
    """A model that raised while being built: the builder runs each layer once on a small
    input to learn its width, so a block that cannot handle this scale fails there. The
    builder's one-line error keeps the layer; the exception it replaced (``__context__``)
    keeps the block's file:line."""
    import torch.nn as nn

    from yoloblocks_cli.tracing import hints
    from yoloblocks_cli.tracing.tracer import locate

    original = exc.__cause__ or exc.__context__ or exc
    f = locate(original, ShapeTracer(nn.Identity()), [], None)
    f.layer = None
    f.message = f"while building the model: {exc}"
    m = _LAYER_RAN.search(str(exc))
    if m:
        f.layer, f.module = int(m.group(1)), m.group(2)
        dims = m.group(3).strip()
        if re.fullmatch(r"\d+(x\d+)*", dims):
            f.layer_input_shape = [int(d) for d in dims.split("x")]
        if f.cause is None:
            found = hints.recognise(hints.HintContext(
                type(original).__name__, str(original), input_shape=f.layer_input_shape))
            if found:
                f.cause, f.hint = found
    return f


def plugin_spec(target: str, plugins: Sequence[Path], root: Path | None = None) -> str:
    """`yb trace MyBlock --plugin my_blocks.py`: a bare name defined in a plugin file wins."""
    from yoloblocks_cli.loading.plugins import plugin_block_spec

    return plugin_block_spec(target, plugins, root)


def configurations(req: TraceRequest, kind: str, stride: int = 32) -> list[Shape]:
    batches = parse_batches(req.batch)
    if req.sizes:
        shapes = (parse_block_sizes(req.sizes) if kind == "block" else parse_model_sizes(req.sizes))
        return with_batches(shapes, batches) if batches else shapes
    if kind == "block":
        bases = parse_block_sizes(req.size or [DEFAULT_BLOCK_SIZE])
        shapes = [s for b in bases for s in block_sweep(b)]
    else:
        bases = parse_model_sizes(req.size or [DEFAULT_MODEL_SIZE])
        shapes = []
        for b in bases:
            if b.height != b.width:
                shapes.append(b)
            shapes += [s if b.channels == 3 else Shape(s.batch, b.channels, s.height, s.width)
                       for s in model_sweep(max(b.height, b.width), stride)]
    if batches:
        shapes = with_batches([s.with_batch(1) for s in shapes], batches)
    out: list[Shape] = []
    for s in shapes:
        if s not in out:
            out.append(s)
    return out


def plan_for(req: TraceRequest, kind: str, stride: int = 32) -> Any:
    """The two-phase plan of the default sweep; ``--quick`` and ``--sizes`` run every probe
    at every configuration they name (one phase)."""
    from yoloblocks_cli.tracing.phases import SweepPlan

    if req.sizes or req.quick:
        shapes = tuple(configurations(req, kind, stride))
        return SweepPlan(shapes, shapes)
    from yoloblocks_cli.tracing.validation_shapes import SweptShape, block_shapes, model_shapes, numeric_shapes

    batches = tuple(parse_batches(req.batch) or (1, 2))
    swept: list[SweptShape] = []
    numeric: list[Shape] = []
    eval_only: list[Shape] = []
    if kind == "block":
        for b in parse_block_sizes(req.size or [DEFAULT_BLOCK_SIZE]):
            part = block_shapes(b.with_batch(1), batches)
            swept += part
            full, light = numeric_shapes(part, b.with_batch(1), model=False)
            numeric, eval_only = numeric + full, eval_only + light
    else:
        for b in parse_model_sizes(req.size or [DEFAULT_MODEL_SIZE]):
            imgsz = max(b.height, b.width)
            part = model_shapes(imgsz, stride, b.channels, batches)
            if b.height != b.width:  # the rectangle the user named, beside the loader's
                part = [SweptShape(Shape(n, b.channels, b.height, b.width), "given") for n in batches] + part
            swept += part
            train = max(1, -(-imgsz // stride)) * stride
            full, light = numeric_shapes(part, Shape(1, b.channels, train, train), model=True)
            numeric, eval_only = numeric + full, eval_only + light
    shapes: list[Shape] = []
    origins: list[str] = []
    for s in swept:
        if s.shape not in shapes:
            shapes.append(s.shape)
            origins.append(s.origin)
    light = [n for n in eval_only if n not in numeric]
    picked = [n for i, n in enumerate(numeric + light) if n in shapes and n not in (numeric + light)[:i]]
    return SweepPlan(tuple(shapes), tuple(picked), tuple(origins), tuple(n for n in light if n in picked))


# --- the sweep -----------------------------------------------------------------------------------


def sweep(targets: Sequence[Target], shapes: Sequence[Shape], probes: Sequence[str], *, device: Any = None,
          dtype: Any = None, timeout: float | None = None, record_layers: bool = False,
          progress: Any = None) -> list[Point]:
    """Every configuration (target x shape) through every probe; nothing stops the sweep.

    Each target's hooks are removed when its configurations are done: a module instance
    shared process-wide (ultralytics' one SiLU) must not keep them.
    """
    points = []
    for target in targets:
        try:
            points += _sweep_target(target, shapes, probes, device, dtype, timeout, record_layers, progress)
        finally:
            if target.tracer is not None:
                target.tracer.detach()
    return points


def _sweep_target(target: Target, shapes: Sequence[Shape], probes: Sequence[str], device: Any, dtype: Any,
                  timeout: float | None, record_layers: bool, progress: Any) -> list[Point]:
    points: list[Point] = []
    f = target.build_failure
    for shape in shapes:
        if f is not None:  # this scale could not be built: every configuration of it fails alike
            points.append(Point(shape, target.scale, {"sweep": ProbeResult(
                "sweep", "fail", f"build failed: {f.type}: {f.message.splitlines()[0]}", f)}))
        else:
            if not points and device is not None:
                target.module.to(device=device, dtype=dtype)
            points.append(guarded_point(target, shape, probes, device=device, dtype=dtype, timeout=timeout,
                                        record_layers=record_layers))
        if progress is not None:
            progress()
    return points


def run_trace(req: TraceRequest) -> int:
    probes = parse_probes(req.probes, req.no_probe)
    if req.timeout is not None and req.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if req.quick and req.sizes:
        raise UsageError("--quick picks the derived sizes; --sizes names them: choose one")
    kind = "model" if is_model_target(req.target) else "block"
    device, dtype = resolve_device_dtype(req.device, req.dtype)
    if req.threads is not None:
        if req.threads <= 0:
            raise UsageError("--threads must be a positive integer")
        import torch

        torch.set_num_threads(req.threads)
    if kind == "block":
        if req.scales:
            raise UsageError("--scales applies to model YAMLs only")
        plan = plan_for(req, "block")
        targets = block_targets(req, plan.shapes[0].channels)
        if len({s.channels for s in plan.shapes}) > 1:
            raise UsageError("every size of a block sweep must have the same channel count")
    else:
        if req.layout or req.inputs:
            raise UsageError("--layout and --inputs apply to blocks only (a model takes an image)")
        configurations(req, "model")  # a malformed --size/--sizes/--batch stops before any model is built
        targets, stride = model_targets(req)
        plan = plan_for(req, "model", stride)
    from yoloblocks_cli.tracing.phases import run_plan
    from yoloblocks_cli.tracing.progress import CiLines, sigterm_as_interrupt

    total = len(targets) * len(plan.shapes)
    finished: list[Point] = []
    checkers: list[Any] = []
    ci = CiLines(total) if not req.json_out and not sys.stdout.isatty() else None

    def on_point(p: Point, seconds: float) -> None:
        finished.append(p)
        if ci is not None:
            ci(p, seconds)

    kw = dict(device=device, dtype=dtype, timeout=req.timeout, record_layers=req.layers, checkers=checkers)
    interrupted = False
    from yoloblocks_cli.tracing.block_warnings import collect_warnings

    caught: Any = []
    try:
        with sigterm_as_interrupt(), collect_warnings() as caught:  # PyTorch's warnings in the block, with their line
            if not req.json_out and sys.stderr.isatty():
                from rich.progress import Progress

                with Progress(transient=True) as bar:
                    task = bar.add_task(f"tracing {req.target}", total=total)

                    def advance(p: Point, seconds: float) -> None:
                        on_point(p, seconds)
                        bar.advance(task)

                    points = run_plan(targets, plan, probes, on_point=advance, **kw)
            else:
                points = run_plan(targets, plan, probes, on_point=on_point, **kw)
    except KeyboardInterrupt:
        interrupted = True
        order = {(t.scale, s): i for i, (t, s) in enumerate((t, s) for t in targets for s in plan.shapes)}
        points = sorted(finished, key=lambda p: order.get((p.scale, p.shape), len(order)))
    fallbacks = [fb for c in checkers for fb in c.fallbacks]
    report = build_report(req, kind, targets, probes, points, env_dict(device, dtype), caught)
    report.update(phase_report(plan, points, fallbacks, total, interrupted))
    if req.junit is not None:
        write_junit_report(req.junit, req.target, probes, points, partial=interrupted)
    from yoloblocks_cli.reporting.report import write_json

    if req.output is not None:
        write_json(report, req.output)
    if req.json_out:
        write_json(report, None)
    if not req.json_out:
        from yoloblocks_cli.tracing.render import render

        render(req, kind, targets, probes, points, report, fallbacks=fallbacks, total=total if interrupted else None)
    if interrupted:
        print(f"yb trace: interrupted: {len(points)} of {total} configurations finished; "
              "the report holds those, marked partial", file=sys.stderr)
        return 130
    return 0 if all(p.ok for p in points) else 1


def phase_report(plan: Any, points: Sequence[Point], fallbacks: Sequence[Any], total: int,
                 interrupted: bool) -> dict[str, Any]:
    """The fields a two-phase sweep adds to the report: phases, fallbacks, groups, partial."""
    from yoloblocks_cli.tracing.grouping import group_failures

    shape_pts = [p for p in points if p.phase == "shape"]
    return {
        "phases": {
            "shape": {"configurations": len(shape_pts), "passed": sum(p.ok for p in shape_pts),
                      "seconds": round(sum(r.seconds for p in shape_pts for r in p.results.values()), 4)},
            "numeric": {"configurations": [list(s.dims) for s in plan.numeric],
                        "seconds": round(sum(r.seconds for p in points if p.phase != "shape"
                                             for r in p.results.values()), 4)},
        },
        "fallbacks": [fb.to_json() for fb in fallbacks],
        "failure_groups": [g.to_json() for g in group_failures(points)],
        "configurations": total,
        "partial": interrupted,
        "interrupted": interrupted,
    }


def build_report(req: TraceRequest, kind: str, targets: Sequence[Target], probes: Sequence[str],
                 points: Sequence[Point], env: dict[str, Any], warnings: Sequence[Any] = ()) -> dict[str, Any]:
    from yoloblocks_cli.reporting.report import base_report

    report = base_report("trace", req.target, env)
    report.update({
        "kind": kind,
        "built": [t.name for t in targets],
        **target_notes(targets),
        "warnings": [w.as_json() for w in warnings],
        "probes": list(probes),
        "points": [point_json(p, req.layers) for p in points],
        "passed": sum(point_status(p) == "pass" for p in points),
        "failed": sum(not p.ok for p in points),
        "skipped": sum(point_status(p) == "skip" for p in points),
    })
    return report


def target_notes(targets: Sequence[Target]) -> dict[str, Any]:
    """What the report says about how the target was built: the block's class and file, the
    plugin classes a YAML used (and whether they shadow registered blocks), the input plan."""
    notes: dict[str, Any] = {}
    tracer = next((t.tracer for t in targets if t.tracer is not None), None)
    if tracer is None:
        return notes
    if getattr(tracer, "block_origin", None) is not None:
        notes["block"] = tracer.block_origin
    uses = {u.name: u.as_json() for t in targets if t.tracer is not None for u in getattr(t.tracer, "plugin_uses", [])}
    if uses:
        notes["plugins"] = list(uses.values())
    plan = getattr(tracer, "input_plan", None)
    if plan is not None:
        notes["inputs"] = {**plan.spec.as_json(), "sizes": list(plan.sizes), "forward": plan.signature}
    return notes


def point_status(p: Point) -> str:
    """"fail" if a probe failed; "skip" when the configuration was not run (too small for the
    block: every probe skipped, or the forward itself); else "pass"."""
    if not p.ok:
        return "fail"
    sweep = p.results.get("sweep")
    if (sweep is not None and sweep.status == "skip") or (p.results and all(
            r.status == "skip" for r in p.results.values())):
        return "skip"
    return "pass"


def point_json(p: Point, layers: bool) -> dict[str, Any]:
    status = point_status(p)
    d: dict[str, Any] = {"input_shape": list(p.shape.dims), "scale": p.scale,
                         "ok": None if status == "skip" else p.ok, "status": status,
                         "output_shape": p.output_shape, "phase": p.phase}
    err = p.error
    if err is not None:
        d["error"] = err.to_json()
    d["probes"] = {name: r.to_json() for name, r in p.results.items()}
    if layers:
        d["layers"] = [{"layer": _int_or(r.label), "module": r.module, "input_shape": r.input_shape,
                        "output_shape": r.output_shape, "depth": r.depth, "failed": r.failed} for r in p.layers]
    return d


def _int_or(label: str) -> Any:
    return int(label) if label.isdigit() else label


def write_junit_report(path: Path, target: str, probes: Sequence[str], points: Sequence[Point],
                       partial: bool = False) -> None:
    from yoloblocks_cli.reporting.junit import Case, write_junit

    cases = []
    for p in points:
        for name in probes:
            r = p.results.get(name)
            if r is None or (p.phase == "shape" and r.status == "skip" and not r.detail.startswith("not run:")):
                continue  # a value probe of a shape-only configuration, or batch-1 train: checked elsewhere
            f = r.failure
            details = ""
            if f is not None:
                details = "\n".join(x for x in (
                    f"{f.type}: {f.message}",
                    f"layer: {f.layer} ({f.module}) input {fmt_shape(f.layer_input_shape)}",
                    f"at: {f.file}:{f.line}" if f.file else "",
                    f"hint: {f.hint}" if f.hint else "") if x)
            status = {"pass": "pass", "skip": "skip"}.get(r.status, "fail")
            cases.append(Case(classname=f"yb.trace.{target}", name=f"{p.label}::{name}", status=status,
                              message=r.detail, details=details, error_type=f.type if f else "",
                              seconds=r.seconds))
    write_junit(path, f"yb trace {target}" + (" (partial: interrupted)" if partial else ""), cases,
                properties={"partial": "true"} if partial else None)
