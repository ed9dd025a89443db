"""The one measurement: a target, at one shape, under a plan -> a :class:`Measurement`.

Every command that reports a number goes through :func:`measure`: ``yb inspect`` (each
``--size``), ``yb profile`` (with the per-layer table), ``yb compare`` and ``yb check``
(static part; their latency is interleaved by :mod:`.measure`), ``yb scale`` (each point of
the sweep) and the catalog. So a figure printed by one command is the figure printed by
the others for the same module and shape.

What one call does, in order, and why in that order:

1. the module goes to the device and dtype (and channels-last) in eval mode; the input is
   made once (:func:`make_input`);
2. ONE counting forward, in place, feeds the dispatch counter and thop (per layer too,
   for a model's table), records the output shape (and each YAML layer's) and, on CPU,
   the peak of live tensor storage; fvcore traces its own forward. These passes are the
   timing warm-up;
3. if that forward failed, a plain guarded forward names the error (file:line in the
   block); a block that fails is :class:`~yoloblocks_cli.errors.CheckFailed` (exit 1);
4. peak memory: the counting pass's figure when that forward left no tensor behind (no
   cache was built), else a warm pass of its own;
5. latency (with the layer timers of a model's table on CPU), then train mode if asked.

Worked example (C2f, 64 channels, at 1x64x80x80, counters torch and ultralytics)::

    >>> from yoloblocks_cli.loading.targets import resolve_target
    >>> t = resolve_target("C2f", "64x80x80")
    >>> m = measure(t, t.shape, Plan(counters=("torch", "ultralytics"), latency=False))
    >>> m.params, m.flops["torch"], m.flops["ultralytics"], m.output_shape
    (29056, 367001600, 376832000, [1, 64, 80, 80])
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from yoloblocks_cli.errors import CheckFailed, UsageError
from yoloblocks_cli.measuring.flops import COUNTERS
from yoloblocks_cli.reporting.report import relative_path

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What to measure, and how long to time it. Commands fill it from their options."""

    counters: tuple[str, ...] = COUNTERS
    latency: bool = True
    memory: bool = True
    train: bool = False  # also time forward+backward and its peak memory
    per_layer: bool = False  # a YAML model's table: per-layer shapes, thop FLOPs, time shares
    channels_last: bool = False
    inputs: Any = None  # loading.inputs.InputSpec: feed a token / NHWC layout or extra forward inputs
    warmup: int | None = 3  # None: until three passes agree (bench.time_forward)
    runs: int | None = None  # exactly N timed runs; None: adaptive
    min_runs: int = 10
    max_runs: int = 10_000
    min_seconds: float = 0.25
    max_seconds: float = 3.0
    layer_runs: int = 3  # CUDA: synchronised passes for the per-layer shares (0: none)

    def timing(self, cuda: bool) -> dict[str, Any]:
        """Keyword arguments for :func:`~yoloblocks_cli.measuring.bench.time_forward`."""
        return dict(warmup=self.warmup, runs=self.runs, min_runs=self.min_runs, max_runs=self.max_runs,
                    min_seconds=self.min_seconds, max_seconds=self.max_seconds)


def make_input(shape: Any, device: Any, dtype: Any, channels_last: bool = False) -> Any:
    """The random input a target is measured with (one place, so every command feeds the same)."""
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.randn(tuple(shape.dims), device=device).to(dtype=dtype).contiguous(memory_format=fmt)


def count_params(module: Any) -> tuple[int, int, int]:
    """(total, trainable, buffer elements)."""
    params = list(module.parameters())
    return (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad),
            sum(b.numel() for b in module.buffers()))


def measure(target: Any, shape: Any, plan: Plan = Plan(), *, device: Any = None, dtype: Any = None,
            progress: Progress | None = None, dtype_label: str = "fp32") -> Any:
    """Measure ``target`` (a :class:`~yoloblocks_cli.loading.targets.Target`) at ``shape``.

    ``device``/``dtype`` are torch objects (default CPU, float32). Returns a
    :class:`~yoloblocks_cli.measuring.measure.Measurement`; its ``as_json()`` is the JSON
    contract's per-size object. A failing block raises :class:`CheckFailed` with the
    file:line inside the block.
    """
    import torch

    from yoloblocks_cli.measuring.bench import CPU_MEMORY_METHOD, Memory, StorageTracker, peak_memory, time_forward
    from yoloblocks_cli.measuring.flops import FlopsReport, count_flops
    from yoloblocks_cli.measuring.measure import Measurement
    from yoloblocks_cli.reporting.report import output_shape

    say = progress or (lambda text: None)
    device = device if device is not None else torch.device("cpu")
    dtype = dtype if dtype is not None else torch.float32
    cuda = getattr(device, "type", "") == "cuda"
    call = target.call
    guard = _Guard(call, shape, dtype_label, device)
    module = target.module.to(device=device, dtype=dtype)
    if plan.channels_last:
        module.to(memory_format=torch.channels_last)
    module.eval()
    x = make_input(shape, device, dtype, plan.channels_last)
    if plan.inputs is not None:  # --layout/--inputs: x in the forward's layout, sizes and extras bound to the module
        from yoloblocks_cli.loading.inputs import prepare_input

        x = prepare_input(module, plan.inputs, x)
    layers = _layer_list(target) if plan.per_layer else None

    # 2. the counting forward: dispatch + thop (+ per-layer thop), output shapes, CPU memory
    tracker = StorageTracker() if plan.memory and not cuda else None
    shapes: list[Any] = [None] * len(layers) if layers is not None else []
    seen: dict[str, Any] = {}
    hooks = [module.register_forward_hook(_first_output(seen, output_shape))]
    for k, layer in enumerate(layers or ()):
        hooks.append(layer.register_forward_hook(_first_shape(shapes, k, output_shape)))
    per_path: dict[str, float] = {}
    if tracker is not None:
        tracker.remember_existing(x, *module.parameters(), *module.buffers())
    say(f"counting FLOPs{' and peak memory' if tracker else ''} at {shape}")
    try:
        if plan.counters or tracker is not None:
            flops = count_flops(module, (x,), plan.counters, in_place=True,
                                thop_layers=per_path if layers is not None else None, memory=tracker)
        else:
            flops = FlopsReport()
            with torch.inference_mode():
                module(x)
    except (CheckFailed, UsageError):
        raise
    except Exception:  # noqa: BLE001 - the plain forward below names the failure
        flops = FlopsReport()
    finally:
        for h in hooks:
            h.remove()
    shared_pass_ok = "out" in seen

    # 3. a forward that did not run to the end: name the error (or take the shapes from it)
    if not shared_pass_ok:
        say(f"forward at {shape}")
        out = guard(lambda: _plain_forward(module, x, layers, shapes, output_shape))
        seen["out"] = output_shape(out)
        del out
    total, trainable, buffers = count_params(module)
    m = Measurement(name=getattr(target, "name", call), kind=getattr(target, "kind", "block"), target=call,
                    input_shape=list(shape.dims), params=total, trainable=trainable, buffers=buffers,
                    flops={c: getattr(flops, c) for c in COUNTERS}, uncounted=list(flops.uncounted),
                    output_shape=seen["out"], flops_report=flops)

    # 4. peak memory
    if tracker is not None and tracker.passes == 1 and not tracker.live:
        mem = Memory(tracker.peak, CPU_MEMORY_METHOD)
    elif plan.memory:
        say(f"peak memory at {shape}")
        mem = guard(lambda: peak_memory(module, x, device))
    else:
        mem = None
    if mem is not None:
        m.memory, m.memory_peak, m.memory_method = mem, mem.peak_bytes, mem.method

    # 5. latency (+ per-layer shares), train mode
    times = None
    if plan.latency:
        say(f"timing at {shape}")
        timer_ctx = _layer_timer(layers) if layers is not None and not cuda else contextlib.nullcontext()
        with timer_ctx as timer:
            m.latency = guard(lambda: time_forward(module, x, device, **plan.timing(cuda)))
        if layers is not None:
            times = _layer_times(module, x, layers, plan, device, timer, cuda)
    if layers is not None:
        m.layers = _table(target, shapes, per_path if shared_pass_ok else None, flops, x, times)
    if plan.train:
        say(f"forward+backward (train mode) at {shape}")
        if plan.latency:
            m.train_latency = guard(lambda: time_forward(module, x, device, train=True, **plan.timing(cuda)),
                                    "forward+backward")
        if plan.memory:
            m.train_memory = guard(lambda: peak_memory(module, x, device, train=True), "forward+backward")
    return m


# ----------------------------------------------------------------------------- the steps


def _first_shape(shapes: list[Any], k: int, output_shape: Callable[[Any], Any]) -> Callable:
    """A forward hook that keeps layer ``k``'s first output shape (fvcore's JIT trace comes
    later and turns sizes into tensors)."""
    def hook(mod: Any, inp: Any, out: Any) -> None:
        if shapes[k] is None:
            shapes[k] = output_shape(out)
    return hook


def _first_output(seen: dict[str, Any], output_shape: Callable[[Any], Any]) -> Callable:
    """A forward hook that keeps the module's first output shape (and returns None, so the
    output itself is left alone)."""
    def hook(mod: Any, inp: Any, out: Any) -> None:
        if "out" not in seen:
            seen["out"] = output_shape(out)
    return hook


def _plain_forward(module: Any, x: Any, layers: Sequence[Any] | None, shapes: list[Any],
                   output_shape: Callable[[Any], Any]) -> Any:
    import torch

    hooks = [layer.register_forward_hook(_first_shape(shapes, k, output_shape)) for k, layer in enumerate(layers or ())]
    try:
        with torch.inference_mode():
            return module(x)
    finally:
        for h in hooks:
            h.remove()


def _layer_list(target: Any) -> list[Any] | None:
    built = getattr(target, "built", None)
    return list(built.model.model) if built is not None else None


def _layer_timer(layers: Sequence[Any]) -> Any:
    from yoloblocks_cli.measuring.layer_profile import LayerTimer

    return LayerTimer(_Layers(layers))


class _Layers:
    """What :class:`LayerTimer` hooks: an object whose ``.model`` is the YAML's layer list."""

    def __init__(self, layers: Sequence[Any]):
        self.model = list(layers)

    def __call__(self, x: Any) -> Any:  # pragma: no cover - never called
        raise NotImplementedError


def _layer_times(module: Any, x: Any, layers: Sequence[Any], plan: Plan, device: Any, timer: Any,
                 cuda: bool) -> list[float] | None:
    """CPU: the shares come from the timed runs (hooks stayed on); CUDA: passes of their own,
    synchronised around every layer."""
    from yoloblocks_cli.device import synchronize
    from yoloblocks_cli.measuring.layer_profile import LayerTimer

    if not cuda:
        return timer.fastest_ms() if timer is not None else None
    if plan.layer_runs <= 0:
        return None
    import torch

    with torch.inference_mode(), LayerTimer(_Layers(layers), lambda: synchronize(device)) as t:
        for _ in range(plan.layer_runs):
            module(x)
    return t.fastest_ms()


def _table(target: Any, shapes: list[Any], per_path: dict[str, float] | None, flops: Any, x: Any,
           times: list[float] | None) -> list[Any]:
    """The profile table's rows, FLOPs as thop counts each layer (ultralytics' convention).

    ``per_path`` is None when the shared counting pass did not run to the end: then one
    profiled forward of its own gives every layer's shape and FLOPs."""
    from yoloblocks_cli.measuring.layer_profile import layer_shapes_and_flops, table_rows

    built = target.built
    n = len(built.model.model)
    if per_path is None:
        shapes, layer_fl, _ = layer_shapes_and_flops(built.model, x)
    elif flops.ultralytics is not None:
        layer_fl = [int(round(2 * per_path.get(f"model.{k}", 0.0))) for k in range(n)]
    else:
        layer_fl = [None] * n
    return table_rows(built, shapes, layer_fl, times)


# ----------------------------------------------------------------------------- failures


class _Guard:
    """Runs one step; a block that raises becomes one line with the file:line inside it."""

    def __init__(self, call: str, shape: Any, dtype_label: str, device: Any):
        self.call, self.shape, self.dtype_label, self.device = call, shape, dtype_label, device

    def __call__(self, fn: Callable[[], Any], what: str = "forward") -> Any:
        try:
            return fn()
        except (CheckFailed, UsageError):
            raise
        except Exception as exc:
            raise self.failure(exc, what) from exc

    def failure(self, exc: BaseException, what: str) -> Exception:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = block_frame(exc)
        at = f" (at {where})" if where else ""
        head = f"{self.call} {what} on {self.shape} raised {exc.__class__.__name__}: {msg}{at}"
        dtype = self.dtype_label.lower()
        if dtype in ("fp16", "float16", "half", "bf16", "bfloat16") and getattr(self.device, "type", "") == "cpu" \
                and "not implemented for" in msg and ("'Half'" in msg or "'BFloat16'" in msg):
            return UsageError(f"--dtype {self.dtype_label} is not supported on CPU by an op of this block: {head}; "
                              f"use --dtype fp32 (or bf16), or --device cuda")
        if isinstance(exc, MemoryError) or "out of memory" in msg.lower():
            return CheckFailed(f"out of memory: {head}")
        return CheckFailed(head)


def block_frame(exc: BaseException) -> str:
    """``file:line in function`` of the innermost traceback frame outside torch, einops and yb."""
    import sys
    import traceback

    skip = []
    for name in ("torch", "einops", "yoloblocks_cli", "typer", "click"):
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__file__", None):
            skip.append(os.path.dirname(os.path.abspath(mod.__file__)) + os.sep)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = os.path.abspath(frame.filename)
        if frame.filename.startswith("<") or any(path.startswith(s) for s in skip):
            continue
        found = f"{relative_path(frame.filename)}:{frame.lineno} in {frame.name}"
    return found
