"""Per-layer shape tracing with hooks, and failure localisation.

Why hooks and a stack: when a block raises, the traceback says *where in the code*, but not
*which module instance* with *which input*. A forward pre-hook pushes each module as its
forward starts and a forward hook pops it when it returns; a forward that raises never pops,
so after the exception the top of the stack is the innermost module whose forward was
running. Hooks only record shapes (tuples of ints), never tensors, so tracing stays cheap.

The stack is thread-local: with ``--timeout`` a forward runs in a worker thread that cannot
be killed, and a timed-out forward may still be running while the next one starts.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import sysconfig
import threading
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT_LABEL = "<root>"
from yoloblocks_cli.reporting.report import format_shape, shape_of  # noqa: E402  (re-exported: probes and tests read them here)


# --- shapes ----------------------------------------------------------------------------


def _args_shape(args: tuple) -> Any:
    """Input shape of a module call: the first tensor-like argument's shape."""
    for a in args:
        s = shape_of(a)
        if s is not None:
            return s
    return None


# --- the tracer -------------------------------------------------------------------------


@dataclass
class LayerRecord:
    """One completed module call, recorded when ``record_layers`` is on."""

    label: str  # module path (block) or YAML index (model)
    module: str  # class name
    input_shape: Any
    output_shape: Any
    depth: int
    failed: bool = False  # the call was still running when the exception escaped


class Frame:
    """An active module call on the stack.

    The hook keeps the call's arguments, not their shape: reading shapes on every call is
    most of what tracing costs on a small block, and it is needed only when a call fails
    or the layer log is on. The arguments are alive for the whole call anyway.
    """

    __slots__ = ("module", "args", "path")

    def __init__(self, module: Any, args: tuple, path: str | None = None):
        self.module = module
        self.args = args
        self.path = path  # resolved through the parent, only while recording layers

    @property
    def input_shape(self) -> Any:
        return _args_shape(self.args)


class ShapeTracer:
    """Hooks on every submodule of ``root``: a stack of active calls, optionally a layer log.

    ``labels`` maps a module object to the label shown for it (a YAML index for a model's
    layers); modules not in it are labelled by their path. ``layer_of`` maps module ids to
    the top-level layer that contains them (models), so a failure can name its YAML index.
    """

    def __deepcopy__(self, memo: dict) -> "ShapeTracer":
        # A traced module may be deep-copied (thop, fvcore, EMA) while hooked; the hooks are
        # bound methods of this tracer, whose thread-local state cannot be copied. Share it.
        return self

    def __init__(self, root: Any, *, labels: dict[int, str] | None = None,
                 layer_modules: Sequence[tuple[Any, Any]] | None = None,
                 only_layers: bool = False):
        self.root = root
        self.paths: dict[int, str] = {}
        for name, mod in root.named_modules(remove_duplicate=False):
            self.paths.setdefault(id(mod), name or ROOT_LABEL)
        self.labels = dict(labels or {})
        # (label, module) of a model's YAML layers, in order; empty for a block.
        self.layer_modules = list(layer_modules or [])
        self._layer_ids = {id(m): lbl for lbl, m in self.layer_modules}
        self.only_layers = only_layers and bool(self.layer_modules)
        self._local = threading.local()
        self.record_layers = False
        self._handles: list[Any] = []
        self.input_layout = "nchw"  # how the block's forward receives its input (yb trace --layout)

    # thread-local state
    @property
    def stack(self) -> list[Frame]:
        st = getattr(self._local, "stack", None)
        if st is None:
            st = self._local.stack = []
        return st

    @property
    def records(self) -> list[LayerRecord]:
        rec = getattr(self._local, "records", None)
        if rec is None:
            rec = self._local.records = []
        return rec

    def reset(self, record_layers: bool | None = None) -> None:
        """Clear this thread's stack and log before a new forward."""
        self._local.stack = []
        self._local.records = []
        if record_layers is not None:
            self._local.record = record_layers

    def attach(self, persistent: bool = False) -> "ShapeTracer":
        """Make this tracer the one :func:`traced_call` uses for ``root``.

        By default no hook is registered here: hooks put every module call on nn.Module's
        slow path (5-20% on a small block), so a call runs bare and the hooks go on only to
        diagnose a failure (a second run) or to log layers (:meth:`hooked`).
        ``persistent=True`` (a sweep that logs every layer) registers them once, until
        :meth:`detach`, instead of around every call.
        """
        if persistent and not self._handles:
            self._register()
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def hooked(self) -> Iterator["ShapeTracer"]:
        """Pre/post hooks on every submodule for the duration of the block."""
        if self._handles:  # hooked already (persistent, or nested use)
            yield self
            return
        try:
            self._register()
            yield self
        finally:
            self.detach()

    def _register(self) -> None:
        seen: set[int] = set()
        for _, mod in self.root.named_modules():
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            self._handles.append(mod.register_forward_pre_hook(self._pre, prepend=True))  # before any user hook
            self._handles.append(mod.register_forward_hook(self._post))

    def __enter__(self) -> "ShapeTracer":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    # hooks: shapes only
    def _pre(self, module: Any, args: tuple) -> None:
        stack = self.stack
        frame = Frame(module, args)
        if getattr(self._local, "record", False):
            frame.path = self._child_path(stack[-1] if stack else None, module)
        stack.append(frame)

    def _child_path(self, parent: Frame | None, module: Any) -> str:
        if parent is not None and parent.path is not None:
            for name, child in parent.module.named_children():
                if child is module:
                    return name if parent.path == ROOT_LABEL else f"{parent.path}.{name}"
        return self.paths.get(id(module), type(module).__name__)

    def _post(self, module: Any, args: tuple, output: Any) -> None:
        stack = self.stack
        frame = stack.pop() if stack else Frame(module, args)
        if getattr(self._local, "record", False):
            mid = id(module)
            if self.only_layers and mid not in self._layer_ids:
                return
            label = self.label_of(module) if frame.path is None or mid in self._layer_ids else frame.path
            self.records.append(LayerRecord(
                label, type(module).__name__, frame.input_shape,
                shape_of(output), len(stack)))

    def label_of(self, module: Any) -> str:
        mid = id(module)
        if mid in self._layer_ids:
            return str(self._layer_ids[mid])
        return self.labels.get(mid) or self.paths.get(mid, type(module).__name__)

    def path_along_stack(self, frames: Sequence[Frame]) -> str:
        """Module path of the innermost frame, resolved through its active parents.

        A module object shared by several parents (ultralytics' one SiLU instance) has one
        registered path; walking the active chain names the instance that was really running.
        """
        if not frames:
            return ROOT_LABEL
        path = self.paths.get(id(frames[0].module), ROOT_LABEL)
        for parent, child in zip(frames, frames[1:]):
            name = next((n for n, c in parent.module.named_children() if c is child.module), None)
            if name is None:
                path = self.paths.get(id(child.module), type(child.module).__name__)
            else:
                path = name if path == ROOT_LABEL else f"{path}.{name}"
        return path

    def failed_records(self, frames: Sequence[Frame]) -> list[LayerRecord]:
        """The calls that never returned, innermost first (where completion order would put them)."""
        out = []
        for depth in range(len(frames) - 1, -1, -1):
            mod = frames[depth].module
            if self.only_layers and id(mod) not in self._layer_ids:
                continue
            label = (self.label_of(mod) if id(mod) in self._layer_ids
                     else self.path_along_stack(frames[: depth + 1]))
            out.append(LayerRecord(label, type(mod).__name__, frames[depth].input_shape, None, depth, True))
        return out

    def enclosing_layer(self, frames: Sequence[Frame]) -> Frame | None:
        """The outermost active frame that is one of a model's YAML layers."""
        for frame in frames:
            if id(frame.module) in self._layer_ids:
                return frame
        return None


# --- failures ---------------------------------------------------------------------------


@dataclass
class Failure:
    """Where and why a forward (or a probe) failed; the JSON `error` object."""

    type: str
    message: str
    layer: Any = None  # YAML index (model) or module path (block)
    module: str | None = None  # class name of that layer
    layer_input_shape: Any = None
    file: str | None = None
    line: int | None = None
    hint: str | None = None
    cause: str | None = None  # short code of the recognised cause
    inner: dict[str, Any] | None = None  # innermost module inside a model layer

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["inner"] is None:
            d.pop("inner")
        return d


def _internal_roots() -> tuple[str, ...]:
    roots = []
    for mod_name in ("torch", "einops", "typer", "click", "rich"):
        mod = sys.modules.get(mod_name)
        if mod is not None and getattr(mod, "__file__", None):
            roots.append(str(Path(mod.__file__).resolve().parent))
    roots.append(str(Path(__file__).resolve().parent))  # yoloblocks_cli itself
    for key in ("stdlib", "platstdlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.append(str(Path(p).resolve()))
    return tuple(r + os.sep for r in roots)


def is_internal(filename: str) -> bool:
    """Frames that are never 'the block's own source'."""
    if filename.startswith("<"):
        return True
    if "site-packages" in filename or "dist-packages" in filename:
        return True
    try:
        resolved = str(Path(filename).resolve())
    except OSError:
        resolved = filename
    return resolved.startswith(_internal_roots())


def user_frame(exc: BaseException) -> tuple[str, int] | None:
    """Innermost traceback frame outside torch/einops/site-packages/stdlib/yoloblocks_cli."""
    found = None
    for fs in traceback.extract_tb(exc.__traceback__):
        if not is_internal(fs.filename):
            found = (fs.filename, fs.lineno)
    return found


def display_path(filename: str) -> str:
    """Relative to the working directory when inside it (what a user can click)."""
    try:
        return os.path.relpath(filename) if Path(filename).resolve().is_relative_to(Path.cwd()) else filename
    except (ValueError, OSError):
        return filename


def is_oom(exc: BaseException) -> bool:
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    return isinstance(exc, oom_types) or "CUDA out of memory" in str(exc)


def locate(exc: BaseException, tracer: ShapeTracer, frames: Sequence[Frame],
           x_shape: Sequence[int] | None = None) -> Failure:
    """Turn an exception plus the active-module stack into a :class:`Failure` with a hint."""
    from yoloblocks_cli.tracing import hints

    message = str(exc).strip() or exc.__class__.__name__
    frames = list(frames)
    inner = frames[-1] if frames else None
    inner_path = tracer.path_along_stack(frames) if frames else ROOT_LABEL
    failure = Failure(type=exc.__class__.__name__, message=_short(message))
    layer = tracer.enclosing_layer(frames) if tracer.layer_modules else None
    if layer is not None:
        failure.layer = _maybe_int(tracer.label_of(layer.module))
        failure.module = type(layer.module).__name__
        failure.layer_input_shape = layer.input_shape
        if inner is not None and inner is not layer:
            failure.inner = {"path": inner_path, "module": type(inner.module).__name__,
                             "input_shape": inner.input_shape}
    elif inner is not None:
        failure.layer = inner_path
        failure.module = type(inner.module).__name__
        failure.layer_input_shape = inner.input_shape
    where = user_frame(exc)
    if where is not None:
        failure.file, failure.line = display_path(where[0]), where[1]
    if is_oom(exc):
        failure.type = "OutOfMemoryError"
        failure.cause, failure.hint = "oom", "CUDA out of memory: the configuration needs more memory than the device has"
        return failure
    ctx = hints.HintContext(
        exc_type=failure.type, message=message,
        input_shape=list(inner.input_shape) if inner is not None and _is_flat(inner.input_shape) else None,
        x_shape=list(x_shape) if x_shape is not None else None,
        modules=[f.module for f in reversed(frames)],
        source_line=_source_line(where),
        feature_shape=_flat_or_none(layer.input_shape if layer is not None else x_shape),
        block_input_shape=_flat_or_none(frames[0].input_shape) if frames else None,
        layout=None if layer is not None else getattr(tracer, "input_layout", "nchw"),
    )
    found = hints.recognise(ctx)
    if found is not None:
        failure.cause, failure.hint = found
    return failure


def _flat_or_none(shape: Any) -> list[int] | None:
    return list(shape) if shape is not None and _is_flat(list(shape)) else None


def _is_flat(shape: Any) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) for d in shape)


def _maybe_int(label: str) -> Any:
    return int(label) if isinstance(label, str) and label.isdigit() else label


def _short(message: str, limit: int = 600) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _source_line(where: tuple[str, int] | None) -> str | None:
    if where is None:
        return None
    import linecache

    return linecache.getline(where[0], where[1]).strip() or None


def module_source(module: Any) -> tuple[str | None, int | None]:
    """file:line of a module's ``forward`` definition (for failures without a traceback)."""
    try:
        fn = type(module).forward
        file = inspect.getsourcefile(fn)
        _, line = inspect.getsourcelines(fn)
        return (display_path(file) if file else None), line
    except (TypeError, OSError):
        return None, None


# --- running one forward under the tracer -----------------------------------------------


@dataclass
class TraceResult:
    """Outcome of one traced call: the output or the failure, and the layer log."""

    output: Any = None
    failure: Failure | None = None
    layers: list[LayerRecord] = field(default_factory=list)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.timed_out


def traced_call(tracer: ShapeTracer, fn: Callable[[], Any], *, x_shape: Sequence[int] | None = None,
                record_layers: bool = False) -> TraceResult:
    """Run ``fn`` (which calls the traced module) and localise any exception it raises.

    A passing call runs without hooks, so tracing costs next to nothing; a failing one is run
    again with the hooks on, which names the layer, its input and the line. Should the
    second run pass or fail differently (a nondeterministic failure), the first exception is
    reported, with its file and line but without a layer. ``record_layers`` runs hooked
    from the start.
    """
    if record_layers:
        return _hooked_call(tracer, fn, x_shape, True)
    try:
        return TraceResult(output=fn(), layers=[])
    except Exception as exc:  # noqa: BLE001 - every failure is a result, never a crash
        first = exc
        traceback.clear_frames(exc.__traceback__)  # free the failed pass's tensors before the rerun
    if is_oom(first):
        release_cuda_cache()
    again = _hooked_call(tracer, fn, x_shape, False)
    if again.failure is not None and (again.failure.type, again.failure.message) == \
            (type(first).__name__, _short(str(first).strip() or type(first).__name__)):
        return again
    failure = locate(first, tracer, [], x_shape)  # the rerun passed or failed otherwise: unlocalised
    return TraceResult(failure=failure, layers=[])


def _hooked_call(tracer: ShapeTracer, fn: Callable[[], Any], x_shape: Sequence[int] | None,
                 record_layers: bool) -> TraceResult:
    tracer.reset(record_layers)
    with tracer.hooked():
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is a result, never a crash
            frames = list(tracer.stack)
            failure = locate(exc, tracer, frames, x_shape)
            if failure.cause == "oom":
                release_cuda_cache()
            layers = list(tracer.records)
            if record_layers:
                layers += tracer.failed_records(frames)
            return TraceResult(failure=failure, layers=layers)
    return TraceResult(output=out, layers=list(tracer.records))


def release_cuda_cache() -> None:
    """After an OOM the sweep goes on; give the allocator's cache back first."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_timeout(fn: Callable[[], Any], timeout: float | None) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon worker thread and stop waiting after ``timeout`` seconds.

    Returns (finished, value). A Python thread cannot be killed: a timed-out call keeps
    running in the background until it returns (its result is dropped). That is the honest
    price of staying in one process (a subprocess would have to rebuild the model and copy
    it for every configuration). Without a timeout ``fn`` runs inline.
    """
    if not timeout:
        return True, fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="yb-trace-worker", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box.get("value")


def flatten_tensors(value: Any) -> list[Any]:
    """Every tensor in a (nested) output, in order."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten_tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_tensors(v)]
    return []


fmt_shape = format_shape  # the one shape formatter (reporting.report)


__all__ = [
    "ShapeTracer", "Failure", "TraceResult", "traced_call", "locate", "run_with_timeout",
    "shape_of", "fmt_shape", "flatten_tensors", "module_source", "user_frame", "is_oom",
]
