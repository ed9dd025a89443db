"""Cause recognition: turn an exception message plus shapes into a one-line diagnosis.

Each recogniser is a small registered function ``(HintContext) -> (cause, hint) | None``,
tried in registration order; the first answer wins. Recognisers read the message, the
input shape the failing module received, and the parameters of the active modules; they
never re-run anything. Add one with ``@register_hint("name")``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

Recogniser = Callable[["HintContext"], "tuple[str, str] | None"]


@dataclass
class HintContext:
    """What a recogniser may look at."""

    exc_type: str
    message: str
    input_shape: list[int] | None = None  # what the innermost active module received
    x_shape: list[int] | None = None  # the configuration's input (B, C, H, W)
    modules: list[Any] = field(default_factory=list)  # active modules, innermost first
    source_line: str | None = None  # the block's own source line that raised

    @property
    def numbers(self) -> list[int]:
        return [int(n) for n in re.findall(r"(?<![\w.])\d+(?![\w.])", self.message)]

    def token_counts(self) -> list[tuple[int, int, int]]:
        """Candidate (N, H, W) token counts: H*W of 4-D inputs, N of (B, N, C) inputs."""
        out: list[tuple[int, int, int]] = []
        for shape in (self.input_shape, self.x_shape):
            if not shape:
                continue
            if len(shape) == 4:
                out.append((shape[2] * shape[3], shape[2], shape[3]))
            elif len(shape) == 3:
                out.append((shape[1], 0, 0))
        return out


_RECOGNISERS: list[tuple[str, Recogniser]] = []


def register_hint(name: str) -> Callable[[Recogniser], Recogniser]:
    """Decorator: add a recogniser (tried after those registered before it)."""

    def deco(fn: Recogniser) -> Recogniser:
        _RECOGNISERS.append((name, fn))
        return fn

    return deco


def recognisers() -> list[str]:
    return [name for name, _ in _RECOGNISERS]


def recognise(ctx: HintContext) -> tuple[str, str] | None:
    """(cause, hint) of the first recogniser that knows this failure, else None."""
    for _, fn in _RECOGNISERS:
        try:
            found = fn(ctx)
        except Exception:  # noqa: BLE001 - a broken recogniser must not hide the failure
            found = None
        if found:
            return found
    return None


# --- recognisers, most specific first -------------------------------------------------------

_CONV_WIDTH = re.compile(r"weight of size \[(\d+), (\d+)[^\]]*\], expected input\[([\d, ]+)\] to have (\d+) channels, but got (\d+) channels")
_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
_NORM = re.compile(r"normalized_shape=\[(\d+)\], expected input with shape \[\*, (\d+)\], but got input of size\s*\[([\d, ]+)\]")
_BN = re.compile(r"running_mean should contain (\d+) elements not (\d+)")


@register_hint("non-contiguous-view")
def _noncontiguous(ctx: HintContext) -> tuple[str, str] | None:
    if "view size is not compatible with input tensor's size and stride" in ctx.message:
        return ("non-contiguous-view",
                "view() on a non-contiguous tensor (after permute/transpose or with channels_last input): "
                "use reshape() or call contiguous() first")
    return None


_TOO_SMALL = ("Output size is too small", "Kernel size can't be greater than actual input size",
              "smaller than kernel size")


@register_hint("input-too-small")
def _too_small(ctx: HintContext) -> tuple[str, str] | None:
    if any(t in ctx.message for t in _TOO_SMALL):
        return ("input-too-small",
                "input too small: a pooling or strided layer needs a larger map than this (not a shape bug; "
                "YOLO never feeds a map this small)")
    return None


@register_hint("hard-coded-width")
def _hard_coded_width(ctx: HintContext) -> tuple[str, str] | None:
    m = _CONV_WIDTH.search(ctx.message)
    if m:
        want, got = int(m.group(4)), int(m.group(5))
        return ("hard-coded-width", _width_text(want, got, "a convolution"))
    m = _MATMUL.search(ctx.message)
    if m:
        got, want = int(m.group(2)), int(m.group(3))
        if got != want:
            return ("hard-coded-width", _width_text(want, got, "a linear layer"))
    m = _NORM.search(ctx.message)
    if m:
        want, got = int(m.group(1)), int(m.group(3).split(",")[-1])
        return ("hard-coded-width", _width_text(want, got, "a LayerNorm"))
    m = _BN.search(ctx.message)
    if m:
        got, want = int(m.group(1)), int(m.group(2))
        return ("hard-coded-width", _width_text(want, got, "a BatchNorm"))
    return None


def _width_text(want: int, got: int, what: str) -> str:
    return (f"hard-coded width: {what} was built for {want} input channels but the tensor has {got}; "
            f"build it from the block's input width (c1) instead of a constant {want}")


_VIEW_SHAPE = re.compile(r"shape '\[([-\d, ]+)\]' is invalid for input of size (\d+)")


@register_hint("square-assumption")
def _square(ctx: HintContext) -> tuple[str, str] | None:
    nums = ctx.numbers
    target: list[int] = []
    m = _VIEW_SHAPE.search(ctx.message)
    if m:
        target = [int(v) for v in m.group(1).split(",") if v.strip()]
    for n, h, w in ctx.token_counts():
        s = math.isqrt(n)
        if s * s != n and (nums.count(s) >= 2 or (s * s) in nums or target[-2:] == [s, s]):
            where = f" ({h}x{w})" if h else ""
            return ("square-assumption",
                    f"assumes a square input: reshapes {n}{where} tokens to {s}x{s} with s = int(sqrt(N)); "
                    f"pass H and W from the input instead (x.shape[-2:])")
        if h and h != w and len(target) >= 2 and target[-1] == target[-2] and target[-1] in (h, w):
            a = target[-1]
            return ("square-assumption",
                    f"assumes a square input: reshapes a {h}x{w} map to {a}x{a}; keep H and W separately")
    return None


_SIZE_PAIR = re.compile(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)")
_CAT = re.compile(r"Sizes of tensors must match except in dimension \d+\. Expected size (\d+) but got size (\d+)")


def _pair(message: str) -> tuple[int, int] | None:
    m = _SIZE_PAIR.search(message) or _CAT.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else None


@register_hint("fixed-token-count")
def _fixed_tokens(ctx: HintContext) -> tuple[str, str] | None:
    pair = _pair(ctx.message)
    counts = ctx.token_counts()
    if pair is None or not counts:
        return None
    current = {n for n, _, _ in counts}
    for fixed, actual in (pair, pair[::-1]):
        if actual not in current or fixed == actual:
            continue
        owner = _owner_with_dim(ctx.modules, fixed)
        if owner is not None:
            s = math.isqrt(fixed)
            grid = f" = {s}x{s}" if s * s == fixed else ""
            n, h, w = next(c for c in counts if c[0] == actual)
            now = f" ({h}x{w})" if h else ""
            return ("fixed-token-count",
                    f"fixed token count: parameter '{owner}' holds {fixed}{grid} tokens but the input has "
                    f"{actual}{now}; the block only works at the size it was built for "
                    f"(interpolate the table to H x W, or compute it from the input)")
    return None


def _owner_with_dim(modules: list[Any], dim: int) -> str | None:
    for mod in modules:
        for name, t in list(mod.named_parameters()) + list(mod.named_buffers()):
            if t.dim() >= 2 and dim in tuple(t.shape):
                return name
    return None


@register_hint("odd-size")
def _odd(ctx: HintContext) -> tuple[str, str] | None:
    pair = _pair(ctx.message)
    if pair is None or abs(pair[0] - pair[1]) != 1:
        return None
    a, b = sorted(pair)
    return ("odd-size",
            f"odd size: two branches differ by one pixel ({a} vs {b}); a stride-2 downsample followed by a x2 "
            f"upsample does not round-trip an odd size: interpolate to the skip's size or pad to even")
