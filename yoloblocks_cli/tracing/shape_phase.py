"""Shape phase: run a configuration on meta tensors, which carry a shape and no data.

Why meta tensors: a reshape to s x s, a fixed 20x20 table, a hard-coded width and an
odd-size concat all raise from shapes alone, and a meta forward does no arithmetic and
allocates nothing: yolov8n at 640x480 costs about a tenth of a real forward, at any
size. The module is not copied: ``torch.func.functional_call`` swaps every parameter and
buffer for a meta twin for the duration of one call, so the model is shared with the
numeric phase and costs no memory.

Why the answer is never taken on trust when it says "fails": a meta forward also raises
where the data matters (``.item()``, ``bool(tensor)``, a data-dependent ``nonzero``, a
tensor attribute that is not a registered buffer, a custom op without a meta kernel). So
every meta failure is run again on real tensors, through the probes' own traced call: a
real failure is reported exactly as the numeric phase would (layer, input, file:line,
cause); a real pass means the meta run could not follow this block. The module whose
forward was running when the meta run raised (a model's YAML layer; for a block the
innermost module) is then put on *real-tensor fallback* for the rest of the sweep: its
parameters stay real and its forward receives random real inputs of the meta inputs'
shapes, and its outputs go back to meta. The report lists every fallback and why.

A configuration that passes on meta has passed every shape check that its real forward
would have made: meta kernels check what the real ones check (sizes, channel counts,
view compatibility); ``tests/test_shape_phase.py`` holds every broken-on-purpose block to
the same verdict on meta as on real tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.tracer import ROOT_LABEL, LayerRecord, user_frame, display_path


@dataclass(frozen=True)
class Fallback:
    """A module the meta run could not follow, run on real tensors from then on."""

    layer: Any  # YAML index (model) or module path (block)
    module: str  # class name
    reason: str  # the exception the meta run raised, one line
    file: str | None
    line: int | None
    found_at: str  # the configuration where it was found

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "module": self.module, "reason": self.reason, "file": self.file,
                "line": self.line, "found_at": self.found_at}

    def describe(self) -> str:
        where = f" ({self.file}:{self.line})" if self.file else ""
        return f"layer {self.layer} ({self.module}) runs on real tensors: {self.reason}{where}"


@dataclass(frozen=True)
class MetaOutcome:
    """One meta forward: its output shape, or the exception it raised."""

    output: Any = None
    error: BaseException | None = None
    layers: tuple[LayerRecord, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


class ShapeChecker:
    """Meta forwards of one target, with the set of modules on real-tensor fallback."""

    def __init__(self, target: Any, *, device: Any = None, dtype: Any = None):
        import torch

        self.torch = torch
        self.target = target
        self.module = target.module
        self.device = device if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.fallbacks: list[Fallback] = []
        self._fallback_modules: dict[int, Any] = {}
        self._state: dict[str, Any] | None = None
        self._train_passed: dict[tuple[int, ...], int] = {}  # dims -> fallbacks known when it passed
        self._train_passed_outcome: dict[tuple[int, ...], MetaOutcome] = {}

    # -- meta state: every parameter and buffer but those of fallback modules
    def _meta_state(self) -> dict[str, Any]:
        if self._state is None:
            torch = self.torch
            skip = [self._path(m) for m in self._fallback_modules.values()]
            skip = [p for p in skip if p is not None]
            state: dict[str, Any] = {}
            if "" not in skip:
                named = list(self.module.named_parameters()) + list(self.module.named_buffers())
                for name, t in named:
                    if any(name.startswith(p + ".") for p in skip):
                        continue
                    state[name] = torch.empty_like(t, device="meta")
            self._state = state
        return self._state

    def _path(self, mod: Any) -> str | None:
        if mod is self.module:
            return ""
        return next((n for n, m in self.module.named_modules() if m is mod), None)

    # -- one meta forward
    def run(self, shape: Shape, *, train: bool = False, record_layers: bool = False) -> MetaOutcome:
        """The forward of ``shape`` on meta tensors (train mode: batch lifted to >= 2)."""
        torch = self.torch
        dims = shape.dims if not train or shape.batch >= 2 else (2, *shape.dims[1:])
        if train and not record_layers and self._train_passed.get(dims) == len(self.fallbacks):
            return self._train_passed_outcome[dims]  # batch 1 lifted to 2: the batch-2 run's answer
        out = self._run(dims, train, record_layers)
        if train and out.ok and not record_layers:
            self._train_passed[dims] = len(self.fallbacks)
            self._train_passed_outcome[dims] = out
        return out

    def _run(self, dims: tuple[int, ...], train: bool, record_layers: bool) -> MetaOutcome:
        torch = self.torch
        x = torch.empty(dims, device="meta", dtype=self.dtype)
        tracer = self.target.tracer
        if train:
            self.module.train(True)
        try:
            with torch.no_grad(), _patched(self._fallback_modules.values(), self._real_forward), meta_shortcuts():
                if record_layers and tracer is not None:
                    tracer.reset(True)
                    with tracer.hooked():
                        try:
                            out = self._call(x)
                        except Exception as exc:  # noqa: BLE001 - a meta failure is a result
                            return MetaOutcome(error=exc, layers=tuple(tracer.records))
                    return MetaOutcome(output=out, layers=tuple(tracer.records))
                try:
                    return MetaOutcome(output=self._call(x))
                except Exception as exc:  # noqa: BLE001 - a meta failure is a result
                    return MetaOutcome(error=exc)
        finally:
            if train:
                self.module.eval()

    def _call(self, x: Any) -> Any:
        from torch.func import functional_call

        state = self._meta_state()
        if not state and any(m is self.module for m in self._fallback_modules.values()):
            return self.module(x)  # the whole target is on fallback: its patched forward runs it for real
        return functional_call(self.module, state, (x,), strict=False)

    def _real_forward(self, bound: Callable[..., Any]) -> Callable[..., Any]:
        """A fallback module's forward: random real inputs of the meta inputs' shapes, its own
        real parameters, meta outputs."""
        torch = self.torch

        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch.no_grad():
                out = bound(*_map(args, self._real), **_map(kwargs, self._real))
            return _map(out, _meta)

        return forward

    def _real(self, t: Any) -> Any:
        torch = self.torch
        if getattr(t, "device", None) is None or t.device.type != "meta":
            return t
        if t.is_floating_point():
            return torch.rand(t.shape, dtype=t.dtype, device=self.device)
        return torch.zeros(t.shape, dtype=t.dtype, device=self.device)

    # -- fallback: learn which module the meta run cannot follow
    def learn(self, shape: Shape, *, train: bool = False) -> Fallback | None:
        """After a meta failure that real tensors do not reproduce: find the module whose
        forward was running (hooked meta rerun) and put it on real-tensor fallback."""
        tracer = self.target.tracer
        torch = self.torch
        dims = shape.dims if not train or shape.batch >= 2 else (2, *shape.dims[1:])
        x = torch.empty(dims, device="meta", dtype=self.dtype)
        frames: list[Any] = []
        error: BaseException | None = None
        self.module.train(train)
        try:
            tracer.reset(False)
            with torch.no_grad(), _patched(self._fallback_modules.values(), self._real_forward), \
                    meta_shortcuts(), tracer.hooked():
                try:
                    self._call(x)
                except Exception as exc:  # noqa: BLE001
                    error, frames = exc, list(tracer.stack)
        finally:
            self.module.eval()
        if error is None:
            return None  # the meta run passed this time: nothing to learn
        mod = self._culprit(frames)
        if id(mod) in self._fallback_modules:
            mod = self.module  # already real and still failing on meta: run the whole target for real
        self._fallback_modules[id(mod)] = mod
        self._state = None
        label = tracer.label_of(mod) if mod is not self.module else ROOT_LABEL
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        where = user_frame(error)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        fb = Fallback(label, type(mod).__name__, f"{type(error).__name__}: {first}",
                      display_path(where[0]) if where else None, where[1] if where else None, str(shape))
        self.fallbacks.append(fb)
        return fb

    def _culprit(self, frames: list[Any]) -> Any:
        tracer = self.target.tracer
        if not frames:
            return self.module
        if tracer.layer_modules:
            layer = tracer.enclosing_layer(frames)
            if layer is not None:
                return layer.module
        return frames[-1].module


# --- shortcuts: modules whose meta kernels are slow Python decompositions -------------------
#
# On meta tensors, BatchNorm runs torch's Python decomposition (about 0.5 ms a call) and an
# activation its Python elementwise reference: three quarters of a yolov8n meta forward.
# Their output has their input's shape, so the shortcut returns the input once it has
# checked what the real kernel checks (rank, channel count); anything else, and every
# real tensor, goes through the module's own forward.

Shortcut = Callable[[Any, Any], Any]  # (module, x) -> output, or None: run the real forward
_SHORTCUTS: dict[type, Shortcut] = {}


def register_meta_shortcut(*classes: type) -> Callable[[Shortcut], Shortcut]:
    """Decorator: a shape-only forward for exactly these classes (not their subclasses)."""

    def deco(fn: Shortcut) -> Shortcut:
        for cls in classes:
            if cls in _SHORTCUTS:
                raise ValueError(f"a meta shortcut for {cls.__name__} is already registered")
            _SHORTCUTS[cls] = fn
        return fn

    return deco


def _register_defaults() -> None:
    from torch import nn

    ranks = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}

    @register_meta_shortcut(*ranks)
    def _batch_norm(m: Any, x: Any) -> Any:
        if x.dim() not in ranks[type(m)] or x.shape[1] != m.num_features or x.dtype != getattr(m.weight, "dtype", x.dtype):
            return None
        if m.training and x.numel() // max(1, x.shape[1]) <= 1:
            return None  # "Expected more than 1 value per channel when training": let it raise
        return x

    @register_meta_shortcut(nn.SiLU, nn.ReLU, nn.ReLU6, nn.GELU, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid,
                            nn.LeakyReLU, nn.Mish, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d)
    def _same_shape(m: Any, x: Any) -> Any:
        return x


_ORIGINALS: dict[type, Callable[..., Any]] = {}


class meta_shortcuts:
    """Class-level forwards that take the shortcut on meta tensors only (a timed-out real
    forward still running in a worker thread sees the module's own forward)."""

    def __enter__(self) -> None:
        if not _SHORTCUTS:
            _register_defaults()
        for cls, fn in _SHORTCUTS.items():
            if cls in _ORIGINALS:
                continue
            _ORIGINALS[cls] = cls.__dict__.get("forward")  # None: inherited (BatchNorm2d's is _BatchNorm's)
            cls.forward = _shortcut_forward(fn, cls.forward)

    def __exit__(self, *exc: Any) -> None:
        for cls, original in list(_ORIGINALS.items()):
            if original is None:
                del cls.forward
            else:
                cls.forward = original
            del _ORIGINALS[cls]


def _shortcut_forward(fn: Shortcut, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and getattr(x, "device", None) is not None and x.device.type == "meta":
            out = fn(self, x)
            if out is not None:
                return out
        return original(self, x, *args, **kwargs)

    return forward


class _patched:
    """Replace the forward of each fallback module for the duration of one meta call."""

    def __init__(self, modules: Any, make: Callable[[Callable[..., Any]], Callable[..., Any]]):
        self.modules = list(modules)
        self.make = make

    def __enter__(self) -> None:
        for m in self.modules:
            m.forward = self.make(m.forward)

    def __exit__(self, *exc: Any) -> None:
        for m in self.modules:
            m.__dict__.pop("forward", None)


def _meta(t: Any) -> Any:
    import torch

    if isinstance(t, torch.Tensor) and t.device.type != "meta":
        return torch.empty_like(t, device="meta")
    return t


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list/dict (other values unchanged)."""
    import torch

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return type(value)(*(_map(v, fn) for v in value)) if hasattr(value, "_fields") else tuple(
            _map(v, fn) for v in value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value
