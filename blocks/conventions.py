"""YAML argument conventions: how a layer's ``args`` become constructor arguments.

ultralytics' ``parse_model`` encodes these as an ``if m in {...}`` chain per block family.
Here each convention is a small object, chosen once when a block registers, so the model
builder and ``yb inspect`` both read the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` not below ``x`` (ultralytics' channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


@dataclass
class LayerContext:
    """Everything a convention may need about one YAML layer being built."""

    ch_in: list[int]  # widths of the layers named by `from`, in order
    args: list  # YAML args with `nc` and friends already substituted
    n: int = 1  # repeats after depth scaling
    nc: int = 80
    width: float = 1.0
    max_channels: int = 1 << 30
    scale: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # dialect-specific facts

    @property
    def c1(self) -> int:
        return self.ch_in[0]

    def scale_width(self, c2: int) -> int:
        """Apply the width multiple to an output width, except for the class count."""
        if c2 == self.nc:
            return c2
        return make_divisible(min(c2, self.max_channels) * self.width, 8)


@dataclass
class Resolved:
    """Constructor call and output width for one layer."""

    args: list
    c_out: int | list[int] | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1  # copies the builder stacks in an nn.Sequential


@dataclass(frozen=True)
class Convention:
    """A named rule mapping YAML args to constructor args and an output width."""

    name: str
    description: str
    resolve: Callable[[LayerContext], Resolved]
    # standalone_args(c1, rest) -> positional args for a block built outside a YAML;
    # ``rest`` is None when the user gave no arguments.
    standalone: Callable[[int, list | None], list]

    def standalone_args(self, c1: int, rest: list | None) -> list:
        return self.standalone(c1, rest)


_CONVENTIONS: dict[str, Convention] = {}


def register_convention(conv: Convention) -> Convention:
    _CONVENTIONS[conv.name] = conv
    return conv


def get_convention(name: str) -> Convention:
    try:
        return _CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown convention {name!r}; known: {sorted(_CONVENTIONS)}") from None


def all_conventions() -> list[Convention]:
    return list(_CONVENTIONS.values())


# --- the built-in conventions -------------------------------------------------------


def _c1_c2(ctx: LayerContext) -> Resolved:
    c2 = ctx.scale_width(ctx.args[0])
    return Resolved([ctx.c1, c2, *ctx.args[1:]], c2, repeats=ctx.n)


def _c1_c2_n(ctx: LayerContext) -> Resolved:
    c2 = ctx.scale_width(ctx.args[0])
    return Resolved([ctx.c1, c2, ctx.n, *ctx.args[1:]], c2, repeats=1)


def _prepend_c1(c1: int, rest: list | None) -> list:
    return [c1, *(rest if rest is not None else [c1])]


def _prepend_c1_only(c1: int, rest: list | None) -> list:
    return [c1, *(rest or [])]


def _c1_c2_n_standalone(c1: int, rest: list | None) -> list:
    return [c1, *(rest if rest is not None else [c1])]


def _preserve(ctx: LayerContext) -> Resolved:
    return Resolved([ctx.c1, *ctx.args], ctx.c1, repeats=ctx.n)


def _passthrough(ctx: LayerContext) -> Resolved:
    return Resolved(list(ctx.args), ctx.c1, repeats=ctx.n)


def _concat(ctx: LayerContext) -> Resolved:
    return Resolved(list(ctx.args), sum(ctx.ch_in), repeats=1)


def _head(ctx: LayerContext) -> Resolved:
    return Resolved([*ctx.args, list(ctx.ch_in)], None, repeats=1)


C1_C2 = register_convention(Convention(
    "c1_c2",
    "c1, c2 with width scaling: args [c2, ...] become (c1, c2*width, ...); n stacks copies",
    _c1_c2, _prepend_c1,
))
C1_C2_N = register_convention(Convention(
    "c1_c2_n",
    "c1, c2 with width scaling, repeats inserted: args [c2, ...] become (c1, c2*width, n, ...)",
    _c1_c2_n, _c1_c2_n_standalone,
))
PRESERVE = register_convention(Convention(
    "preserve",
    "channel-preserving: args [...] become (c1, ...); output width equals input width",
    _preserve, _prepend_c1_only,
))
PASSTHROUGH = register_convention(Convention(
    "passthrough",
    "no width argument: args are passed as written; output width equals input width",
    _passthrough, lambda c1, rest: list(rest or []),
))
CONCAT = register_convention(Convention(
    "concat",
    "joins several inputs: output width is the sum of the input widths",
    _concat, lambda c1, rest: list(rest or []),
))
HEAD = register_convention(Convention(
    "head",
    "detection head: the list of input widths is appended to the args",
    _head, lambda c1, rest: [*(rest or []), [c1]],
))
