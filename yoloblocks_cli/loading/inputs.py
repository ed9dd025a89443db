"""How a block's forward receives its input: layout (NCHW, NHWC, tokens), H and W, extra inputs.

Blocks people bring are not all ``forward(x)`` with ``x`` in (B, C, H, W): transformer
blocks take tokens (B, N, C) with ``forward(x, H, W)``; NHWC blocks take (B, H, W, C);
attention cores take ``forward(q, k, v)``. Every command still thinks in one (B, C, H, W)
*map* (``--size CxHxW``, the sweeps, the probes' batch slicing); this module turns that map
into the call the forward asks for.

Why the map travels and is converted at the call: the probes slice it (sample i alone),
repeat it (train at batch 2) and re-lay it (channels_last); converting inside the call
keeps all of them correct for every layout, and extra inputs derived *per sample* from
the map (``sin`` of its values, tiled to the shape asked for) stay consistent when a
sample is run alone. The conversion happens before any hook, so hooks, failures and
hints see what the forward really received.

Worked example: ``--layout bnc`` at ``--size 64x20x15`` calls ``forward(x, H, W)`` with
``x`` of shape 1x300x64 (contiguous), ``H=20``, ``W=15``. With ``--inputs k=BxNxC`` a
``forward(q, k)`` gets ``k`` of shape 1x300x64 too.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading.spec import Shape


class Layout(str, Enum):
    NCHW = "nchw"
    NHWC = "nhwc"
    BNC = "bnc"


LAYOUT_TEXT = {Layout.NCHW: "(B, C, H, W)", Layout.NHWC: "(B, H, W, C)", Layout.BNC: "(B, N, C) tokens, N = H*W"}

# Forward parameters that receive a size of the map, by name (what transformer blocks write).
SIZE_ARGUMENTS: dict[str, Callable[[Shape], Any]] = {
    "H": lambda s: s.height, "h": lambda s: s.height, "height": lambda s: s.height,
    "W": lambda s: s.width, "w": lambda s: s.width, "width": lambda s: s.width,
    "hw_shape": lambda s: (s.height, s.width), "x_size": lambda s: (s.height, s.width),
    "hw": lambda s: (s.height, s.width),
}

_DIM_SYMBOLS: dict[str, Callable[[Shape], int]] = {
    "B": lambda s: s.batch, "C": lambda s: s.channels, "H": lambda s: s.height, "W": lambda s: s.width,
    "N": lambda s: s.height * s.width,
}
_DIM = re.compile(r"^(\d+|[BCHWN])$")


@dataclass(frozen=True)
class ExtraInput:
    """``--inputs k=BxNxC``: a tensor for the forward parameter ``name``; dims are numbers or
    B, C, H, W, N (= H*W) of the map."""

    name: str
    dims: tuple[str, ...]

    def shape(self, s: Shape) -> tuple[int, ...]:
        return tuple(int(d) if d.isdigit() else _DIM_SYMBOLS[d](s) for d in self.dims)

    @property
    def per_sample(self) -> bool:
        return bool(self.dims) and self.dims[0] == "B"

    def __str__(self) -> str:
        return f"{self.name}={'x'.join(self.dims)}"


@dataclass(frozen=True)
class InputSpec:
    """The layout of the main input and the extra inputs; the default is plain ``forward(x)`` NCHW."""

    layout: Layout = Layout.NCHW
    extras: tuple[ExtraInput, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"layout": self.layout.value, "extras": {e.name: "x".join(e.dims) for e in self.extras}}


def parse_input_spec(layout: str | None = None, inputs: Iterable[str] | None = None) -> InputSpec:
    """``--layout`` and ``--inputs`` values -> an :class:`InputSpec` (bad text is exit 2)."""
    try:
        lay = Layout((layout or "nchw").strip().lower())
    except ValueError:
        raise UsageError(f"unknown --layout '{layout}': choose nchw, nhwc or bnc") from None
    extras: list[ExtraInput] = []
    for item in [part.strip() for value in inputs or [] for part in str(value).split(",") if part.strip()]:
        name, sep, dims = item.partition("=")
        parts = tuple(d.strip() for d in dims.replace("×", "x").split("x"))
        if not sep or not name.strip().isidentifier() or not all(_DIM.match(d) for d in parts):
            raise UsageError(f"malformed --inputs '{item}': expected name=DIMS with DIMS numbers or B, C, H, W, N "
                             "joined by 'x', e.g. k=BxNxC")
        extras.append(ExtraInput(name.strip(), parts))
    if len({e.name for e in extras}) != len(extras):
        raise UsageError("--inputs names a parameter twice")
    return InputSpec(lay, tuple(extras))


# --- the forward's call -------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardPlan:
    """Which forward parameters get a size and which an extra tensor (checked against the signature)."""

    spec: InputSpec
    sizes: tuple[str, ...] = ()  # parameter names filled from SIZE_ARGUMENTS
    signature: str = ""

    @property
    def plain(self) -> bool:
        return self.spec.layout is Layout.NCHW and not self.spec.extras and not self.sizes

    def describe(self) -> str:
        feeds = [f"input {LAYOUT_TEXT[self.spec.layout]}"] + [f"{n} from the size" for n in self.sizes]
        feeds += [f"{e.name} {'x'.join(e.dims)}" for e in self.spec.extras]
        return f"forward{self.signature}: " + ", ".join(feeds)


def plan_forward(cls: type, spec: InputSpec) -> ForwardPlan:
    """Match ``spec`` to ``cls.forward``: unknown extra names and unfilled required parameters are
    exit 2 with the option that fixes them."""
    try:
        sig = inspect.signature(cls.forward)
    except (TypeError, ValueError):
        return ForwardPlan(spec)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    shown = "(" + ", ".join(p.name for p in params) + ")"
    if not params:
        return ForwardPlan(spec, (), shown)
    rest = params[1:]
    names = {p.name for p in rest}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    unknown = [e.name for e in spec.extras if e.name not in names and not takes_any]
    if unknown:
        raise UsageError(f"--inputs {unknown[0]}: forward{shown} has no parameter '{unknown[0]}'")
    given = {e.name for e in spec.extras}
    sizes, missing = [], []
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in given:
            continue
        required = p.default is p.empty
        if p.name in SIZE_ARGUMENTS and (required or spec.layout is Layout.BNC):
            sizes.append(p.name)
        elif required:
            missing.append(p.name)
    if missing:
        example = ",".join(f"{n}=BxNxC" for n in missing)
        raise UsageError(f"forward{shown} also needs {', '.join(missing)}: pass --inputs {example} "
                         "(dims: numbers or B, C, H, W, N = H*W); H and W are passed from the size by name")
    return ForwardPlan(spec, tuple(sizes), shown)


def main_input(x: Any, layout: Layout) -> Any:
    """The map ``x`` (B, C, H, W) in ``layout``: contiguous, as a real pipeline hands it over; a
    channels_last map gives the strided (non-contiguous) variant, which is what the
    channels-last probe then checks for every layout."""
    import torch

    if layout is Layout.NCHW:
        return x
    strided = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    base = x.contiguous()
    t = base.permute(0, 2, 3, 1) if layout is Layout.NHWC else base.flatten(2).transpose(1, 2)
    return t if strided else t.contiguous()


def extra_input(extra: ExtraInput, x: Any, shape: Shape, index: int) -> Any:
    """A per-sample extra input is a function of that sample of the map (so sample i alone gets
    the same k and v as in the batch); one without a batch axis is seeded by its name."""
    import torch

    dims = extra.shape(shape)
    if extra.per_sample:
        rest = dims[1:]
        need = math.prod(rest)
        flat = x.reshape(x.shape[0], -1)
        reps = max(1, math.ceil(need / max(1, flat.shape[1])))
        t = flat.repeat(1, reps)[:, :need].reshape(x.shape[0], *rest)
        return torch.sin(t * (2.0 + index) + index)
    gen = torch.Generator().manual_seed(sum(map(ord, extra.name)) + 1000 * index)
    return torch.rand(dims, generator=gen).to(device=x.device, dtype=x.dtype)


def forward_call(plan: ForwardPlan, x: Any) -> tuple[tuple, dict[str, Any]]:
    """The map ``x`` -> (args, kwargs) of the forward."""
    b, c, h, w = (int(d) for d in x.shape)
    shape = Shape(b, c, h, w)
    kwargs: dict[str, Any] = {n: SIZE_ARGUMENTS[n](shape) for n in plan.sizes}
    for i, e in enumerate(plan.spec.extras):
        kwargs[e.name] = extra_input(e, x, shape, i + 1)
    return (main_input(x, plan.spec.layout),), kwargs


# --- binding: module(map) calls forward as planned ---------------------------------------------


@dataclass
class _MapFeed:
    """Every call's single 4-D argument is the map: convert it (trace: probes slice the map)."""

    plan: ForwardPlan

    def adapt(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if len(args) == 1 and not kwargs and getattr(args[0], "dim", lambda: 0)() == 4:
            return forward_call(self.plan, args[0])
        return args, kwargs


@dataclass
class _FixedFeed:
    """The main input is already laid out; add the sizes and extra tensors of one shape
    (inspect: the timed call is the block's own, without a conversion in it)."""

    kwargs: dict[str, Any] = field(default_factory=dict)

    def adapt(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**self.kwargs, **kwargs}


_FED: dict[type, type] = {}


def _fed_class(base: type) -> type:
    """A subclass of the block's class whose ``__call__`` adapts the arguments first (before
    hooks run); name, module and forward stay the block's, so reports do not change."""
    if base in _FED or getattr(base, "_yb_fed_base", None) is not None:
        return _FED.get(base, base)

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        feed = self.__dict__.get("_yb_feed")
        if feed is not None:
            args, kwargs = feed.adapt(args, kwargs)
        return base.__call__(self, *args, **kwargs)

    cls = type(base.__name__, (base,), {"__call__": __call__, "__module__": base.__module__,
                                         "__qualname__": base.__qualname__, "_yb_fed_base": base})
    _FED[base] = cls
    return cls


def _bind(module: Any, feed: Any) -> None:
    cls = _fed_class(type(module))
    try:
        module.__class__ = cls
    except TypeError as exc:
        raise UsageError(f"cannot feed {type(module).__name__} another input layout: {exc}") from None
    module.__dict__["_yb_feed"] = feed


def feed_from_map(module: Any, spec: InputSpec) -> ForwardPlan:
    """Make ``module(map)`` call its forward as ``spec`` and its signature ask (yb trace)."""
    base = getattr(type(module), "_yb_fed_base", type(module))
    plan = plan_forward(base, spec)
    if not plan.plain:
        _bind(module, _MapFeed(plan))
    return plan


def prepare_input(module: Any, spec: InputSpec, x: Any) -> Any:
    """The map ``x`` -> the main input to time and count with; the sizes and extra tensors of
    this shape are bound to ``module`` (yb inspect). Plain blocks get ``x`` back untouched."""
    base = getattr(type(module), "_yb_fed_base", type(module))
    plan = plan_forward(base, spec)
    if plan.plain:
        return x
    args, kwargs = forward_call(plan, x)
    _bind(module, _FixedFeed(kwargs))
    return args[0]
