"""The reports of `yb inspect` and `yb profile`: typed options in, one JSON report out.

Both load their target, call :func:`.engine.measure` once per shape and wrap the
:class:`~.measure.Measurement` in the ``yoloblocks.report/1`` envelope. The command
modules only parse options into :class:`InspectOptions` / :class:`ProfileOptions` and render
the report, so the terminal table and ``--json`` can never disagree.
"""

from __future__ import annotations

import inspect as pyinspect
from dataclasses import dataclass, field
from typing import Any, Callable

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.measuring.engine import Plan
from yoloblocks_cli.reporting.report import relative_path
from yoloblocks_cli.measuring.flops import COUNTERS

Progress = Callable[[str], None]


def _quiet(text: str) -> None:
    return None


# identity keys of a Measurement that must not overwrite the report envelope's own `target`
_IDENTITY = ("name", "kind", "target", "latency_ratio", "reference")


@dataclass(frozen=True)
class InspectOptions:
    """Everything `yb inspect` measures with, already parsed (sizes, args) but not resolved."""

    block: str
    shapes: tuple = ()
    user_args: list | None = None
    user_kwargs: dict | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    threads: int | None = None
    train: bool = False
    runs: int | None = None  # exactly N timed runs; None: adaptive (measuring/stats.py)
    warmup: int | None = None  # None: until three passes agree
    max_time: float = 3.0
    latency: bool = True
    memory: bool = True
    counters: tuple = COUNTERS
    inputs: Any = None  # loading.inputs.InputSpec: --layout / --inputs (None: plain forward(x))
    root: Any = None  # --root DIR of a file block

    def plan(self) -> Plan:
        return Plan(counters=tuple(self.counters), latency=self.latency, memory=self.memory, train=self.train,
                    channels_last=self.channels_last, inputs=self.inputs, warmup=self.warmup, runs=self.runs,
                    max_seconds=self.max_time)


@dataclass(frozen=True)
class ProfileOptions:
    """Everything `yb profile` measures with. ``runs`` timed runs exactly; None: adaptive, 10 s at most."""

    model: str
    size: str = "640"
    scale: str | None = None
    nc: int | None = None
    plugins: tuple = ()
    dialect: str | None = None
    model_yaml: str | None = None  # the YAML a plain state_dict belongs to (--model)
    device: str = "cpu"
    dtype: str = "fp32"
    batch: int | None = None
    threads: int | None = None
    train: bool = False
    runs: int | None = None
    layer_runs: int = 3
    latency: bool = True
    memory: bool = True
    counters: tuple = field(default=COUNTERS)
    fuse: bool = False  # fold for deployment first (ultralytics' model.fuse())

    def plan(self, cuda: bool) -> Plan:
        # CPU: the counting passes warmed the model up; CUDA: one pass to settle the allocator
        return Plan(counters=tuple(self.counters), latency=self.latency, memory=self.memory, train=self.train,
                    per_layer=True, warmup=1 if cuda else 0, runs=self.runs, min_runs=5, max_seconds=10.0,
                    layer_runs=self.layer_runs)


def _set_threads(threads: int | None, latency: bool = True) -> None:
    """``--threads``, else (when timing) torch's default minus the CPUs busy elsewhere."""
    if threads is not None or latency:
        from yoloblocks_cli.measuring.contention import apply_threads

        apply_threads(threads)


# ----------------------------------------------------------------------------- inspect


def inspect_report(opts: InspectOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Load the block, measure it at every size; the JSON report (schema yoloblocks.report/1).

    The block is built once per input width: a block's parameters depend on its width, so
    each size's row carries its own ``params``.
    """
    from yoloblocks_cli.device import resolve_device, resolve_dtype
    from yoloblocks_cli.loading.load import build_block, resolve_spec
    from yoloblocks_cli.loading.targets import Target
    from yoloblocks_cli.measuring.engine import measure
    from yoloblocks_cli.reporting.report import base_report, env_info

    say = progress or _quiet
    device, dtype = resolve_device(opts.device), resolve_dtype(opts.dtype)
    _set_threads(opts.threads, opts.latency)
    spec = resolve_spec(opts.block, opts.root)
    built: dict[int, Any] = {}
    results = []
    for shape in opts.shapes:
        if shape.channels not in built:
            say(f"building {spec.name} for {shape.channels} input channels")
            built[shape.channels] = build_block(spec, shape.channels, opts.user_args, opts.user_kwargs)
        loaded = built[shape.channels]
        target = Target(spec.name, "block", loaded.module, shape, loaded.call)
        m = measure(target, shape, opts.plan(), device=device, dtype=dtype, progress=say, dtype_label=opts.dtype)
        results.append({k: v for k, v in m.as_json().items() if k not in _IDENTITY})
    first = built[opts.shapes[0].channels]
    report = base_report("inspect", opts.block, env_info(device, dtype, opts.threads))
    report["block"] = {"name": first.spec.name, "call": first.call, "origin": first.spec.origin,
                       "class": f"{first.spec.cls.__module__}.{first.spec.cls.__qualname__}",
                       "source": getattr(first.spec.info, "source", "") or _source_file(first.spec.cls)}
    report["options"] = {"channels_last": opts.channels_last, "train": opts.train, "batch": opts.shapes[0].batch}
    if opts.inputs is not None:
        report["inputs"] = opts.inputs.as_json()
    report.update(results[0])  # the first size's fields stay at top level (contract); all sizes in `results`
    report["results"] = results
    return report


def _source_file(cls: type) -> str:
    try:
        return relative_path(pyinspect.getsourcefile(cls) or "")
    except (TypeError, OSError):
        return ""


# ----------------------------------------------------------------------------- profile


def profile_report(opts: ProfileOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Build the YAML, measure it with its layer table; the JSON report (schema yoloblocks.report/1)."""
    from yoloblocks_cli.device import resolve_device, resolve_dtype
    from yoloblocks_cli.errors import CheckFailed
    from yoloblocks_cli.loading.spec import parse_model_size
    from yoloblocks_cli.loading.targets import Target
    from yoloblocks_cli.loading.yaml_model import build_model, summary_line, ultralytics_gflops
    from yoloblocks_cli.measuring.engine import measure
    from yoloblocks_cli.reporting.report import base_report, env_info
    from yoloblocks_cli.runtime import freeze_imported_objects

    say = progress or _quiet
    freeze_imported_objects()
    device, dtype = resolve_device(opts.device), resolve_dtype(opts.dtype)
    _set_threads(opts.threads, opts.latency)
    parse_model_size(opts.size or "640", opts.batch, 3)  # a malformed --size stops before the model is built
    say(f"building {opts.model}")
    built = build_model(opts.model, scale=opts.scale, plugins=opts.plugins, nc=opts.nc, dialect=opts.dialect,
                        weights_yaml=opts.model_yaml)
    if opts.fuse:
        from yoloblocks_cli.loading.fuse import fuse_built

        say("fusing for deployment")
        fuse_built(built)
    shape = parse_model_size(opts.size or "640", opts.batch, built.channels)
    if shape.channels != built.channels:
        raise UsageError(f"--size {opts.size}: {built.name} takes {built.channels} input channels, "
                         f"not {shape.channels}")
    say("ultralytics GFLOPs at 640")
    try:
        gflops_640: float | None = ultralytics_gflops(built, 640)
    except Exception:  # noqa: BLE001 - as the repositories' model_info: thop raised, the line prints no GFLOPs
        gflops_640 = None  # (ultralytics-thop 2.2.3 on YOLOv7's ReOrg P6 models)
    target = Target(built.name, "model", built.model, shape, built.name, built)
    try:
        m = measure(target, shape, opts.plan(device.type == "cuda"), device=device, dtype=dtype, progress=say,
                    dtype_label=opts.dtype)
    except CheckFailed as exc:  # the model failed at the requested size / dtype / device: exit 1, one line
        raise CheckFailed(f"{exc} ({opts.dtype}, {device})") from exc.__cause__
    result = m.as_json()
    report = base_report("profile", opts.model, env_info(device, dtype, opts.threads))
    report["model"] = {"name": built.name, "yaml": str(built.yaml_path), "scale": built.scale,
                       "dialect": built.dialect, "stride": list(built.stride)}
    if getattr(built, "checkpoint", None) is not None:
        report["checkpoint"] = built.checkpoint.as_json()
    report["input_shape"] = result["input_shape"]
    report["output_shape"] = result["output_shape"]
    report["params"] = {"total": built.params, "trainable": built.gradients, "buffers": result["params"]["buffers"]}
    report["flops"] = result["flops"]
    report["flops"]["ultralytics_extrapolated_640"] = None if gflops_640 is None else int(round(gflops_640 * 1e9))
    report["flops"]["ultralytics_rules"] = _thop_rule_modules(built.model)
    report["summary"] = {"layers": built.n_layers, "params": built.params, "gradients": built.gradients,
                         "gflops": None if gflops_640 is None else round(gflops_640, 1), "gflops_exact": gflops_640,
                         "line": summary_line(built, gflops_640), "fused": built.fused}
    report["layers"] = result["layers"]
    report["latency_ms"] = result["latency_ms"]
    report["memory_bytes"] = result["memory_bytes"]
    for key in ("train_latency_ms", "train_memory_bytes"):
        if key in result:
            report[key] = result[key]
    report["options"] = {"size": opts.size, "batch": shape.batch, "train": opts.train, "plugins": list(opts.plugins)}
    report["plugins"] = [u.as_json() for u in getattr(built, "plugins", [])]  # which plugin classes were used
    return report


def _thop_rule_modules(model: Any) -> list[str]:
    """Class names in the model that yb's thop counter has a rule for (``MODULE_MACS``) and plain thop,
    hence ultralytics' ``get_flops`` and the summary line, has not (Mamba-YOLO's SS2D: its scan and einsums)."""
    from blocks.flop_formulas import MODULE_MACS

    return sorted({type(m).__name__ for m in model.modules() if type(m) in MODULE_MACS})
