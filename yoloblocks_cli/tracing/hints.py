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
    # The (B, C, H, W) map the block (or a model's YAML layer) was fed, whatever layout its
    # forward received it in; what the block's forward really received; and that layout.
    feature_shape: list[int] | None = None
    block_input_shape: list[int] | None = None
    layout: str | None = None

    @property
    def geometry(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the map: the evidence that tells a channel axis from a spatial one."""
        shape = self.feature_shape or (self.x_shape if self.layout else None)
        if shape and len(shape) == 4:
            return shape[1], shape[2], shape[3]
        return None

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


@dataclass(frozen=True)
class WidthMismatch:
    """A layer that reduces one axis (conv, BatchNorm: axis 1; Linear, LayerNorm: the last)
    was built for ``want`` values along it and the tensor has ``got``."""

    what: str  # "a convolution", "a linear layer", ...
    want: int
    got: int
    last_axis: bool  # True: Linear/LayerNorm (reads the last axis), False: conv/BatchNorm (axis 1)


def width_mismatch(ctx: HintContext) -> WidthMismatch | None:
    m = _CONV_WIDTH.search(ctx.message)
    if m:
        return WidthMismatch("a convolution", int(m.group(4)), int(m.group(5)), False)
    m = _MATMUL.search(ctx.message)
    if m and int(m.group(2)) != int(m.group(3)):
        return WidthMismatch("a linear layer", int(m.group(3)), int(m.group(2)), True)
    m = _NORM.search(ctx.message)
    if m:
        return WidthMismatch("a LayerNorm", int(m.group(1)), int(m.group(3).split(",")[-1]), True)
    m = _BN.search(ctx.message)
    if m:
        return WidthMismatch("a BatchNorm", int(m.group(1)), int(m.group(2)), False)
    return None


def _fed_the_block_input(ctx: HintContext) -> bool:
    """The failing layer received the block's own input (as is, or only reshaped): its first layer."""
    inp, block_in = ctx.input_shape, ctx.block_input_shape
    if not inp or not block_in:
        return False
    return inp == block_in or math.prod(inp) == math.prod(block_in)


_LAYOUT_TEXT = {"nchw": "(B, C, H, W)", "nhwc": "(B, H, W, C)", "bnc": "(B, N, C) tokens"}


@register_hint("input-layout")
def _input_layout(ctx: HintContext) -> tuple[str, str] | None:
    """The first layer reads channels on an axis that holds a spatial size in this layout."""
    mm, geo = width_mismatch(ctx), ctx.geometry
    if mm is None or geo is None or not _fed_the_block_input(ctx):
        return None
    c, h, w = geo
    if mm.want != c or mm.got == c or mm.got not in (h, w, h * w):
        return None
    layout = ctx.layout or "nchw"
    if mm.last_axis:
        if layout != "nchw":
            return None
        wants = "--layout nhwc (B, H, W, C) or --layout bnc (B, N, C)"
        reads = "the last axis"
    else:
        if layout == "nchw":
            return None
        wants = "--layout nchw (B, C, H, W)"
        reads = "axis 1"
    return ("input-layout",
            f"input layout: the block's first layer ({mm.what} built for c1 = {c} channels) reads channels on "
            f"{reads}, but this {layout.upper()} input {_LAYOUT_TEXT[layout]} has {mm.got} there; the block's "
            f"code is fine, it takes another layout: run with {wants}")


@register_hint("fixed-spatial-size")
def _fixed_spatial(ctx: HintContext) -> tuple[str, str] | None:
    """A Linear over a spatial axis (height, width or the H*W tokens): its weight holds the size."""
    mm, geo = width_mismatch(ctx), ctx.geometry
    if mm is None or geo is None or not mm.last_axis or mm.want == geo[0] or mm.got == geo[0]:
        return None
    c, h, w = geo
    if mm.got == h * w and h * w not in (h, w):
        s = math.isqrt(mm.want)
        grid = f" = {s}x{s}" if s * s == mm.want else ""
        return ("fixed-token-count",
                f"fixed token count: a linear layer over the tokens (N = H*W) was built for {mm.want}{grid} "
                f"tokens but this input has {mm.got} ({h}x{w}); its weight holds the size it was built for: "
                f"the block only works at that size (mix tokens with a conv or attention instead)")
    if mm.got not in (h, w):
        return None
    axis = "height" if mm.got == h and h != w else "width" if mm.got == w and h != w else "height/width"
    return ("fixed-spatial-size",
            f"fixed spatial size: a linear layer over the {axis} (Linear({mm.want}, ...) applied along a spatial "
            f"axis) was built for a map {mm.want} wide but this input has {mm.got} there ({h}x{w}); its weight "
            f"holds the size: the block only works at the size it was built for (not a channel width: "
            f"do not change c1)")


@register_hint("hard-coded-width")
def _hard_coded_width(ctx: HintContext) -> tuple[str, str] | None:
    """Only when the axis the layer reads holds channels and its constant is not c1."""
    mm = width_mismatch(ctx)
    if mm is None:
        return None
    geo = ctx.geometry
    c1 = geo[0] if geo is not None else mm.got
    if geo is not None and mm.last_axis and mm.got in (geo[1], geo[2], geo[1] * geo[2]) and mm.got != geo[0]:
        return None  # a spatial axis, not channels: not a width (see fixed-spatial-size)
    if mm.want == c1:
        return ("width-mismatch",
                f"width mismatch inside the block: {mm.what} built for c1 = {mm.want} channels receives a "
                f"tensor with {mm.got}; a concat, expansion or split upstream in the block changes the width "
                f"its layers were built for")
    return ("hard-coded-width", _width_text(mm.want, mm.got, mm.what))


def _width_text(want: int, got: int, what: str) -> str:
    return (f"hard-coded width: {what} was built for {want} input channels but the tensor has {got}; "
            f"build it from the block's input width (c1) instead of a constant {want}")


_VIEW_SHAPE = re.compile(r"shape '\[([-\d, ]+)\]' is invalid for input of size (\d+)")


_EINOPS_DIVIDE = re.compile(r"can't divide axis of length (\d+) in chunks of (\d+)")
_MODULO = re.compile(r"%\s*\(?\s*(self\.[\w.]+|\d+)")


def _divisor(ctx: HintContext) -> int | None:
    """The k of ``x % k`` on the failing source line: a literal, or ``self.attr`` of an active module."""
    m = _MODULO.search(ctx.source_line or "")
    if m is None:
        return None
    text = m.group(1)
    if text.isdigit():
        return int(text)
    for mod in ctx.modules:
        value: Any = mod
        for part in text.split(".")[1:]:
            value = getattr(value, part, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return value
    return None


def _divisibility_text(k: int, h: int, w: int, how: str) -> str:
    bad = " and ".join(f"{n} = {v}" for n, v in (("H", h), ("W", w)) if v % k)
    return (f"divisibility: {how} needs H and W to be multiples of {k}, and {bad} is not; pad the map to a "
            f"multiple of {k} inside the block (F.pad, crop after) or feed only such sizes")


@register_hint("divisibility")
def _divisibility(ctx: HintContext) -> tuple[str, str] | None:
    """An assertion on ``H % k``, a reshape into k x k blocks, or einops' chunks of k."""
    geo = ctx.geometry or (tuple(ctx.input_shape[1:]) if ctx.input_shape and len(ctx.input_shape) == 4 else None)
    if geo is None:
        return None
    _, h, w = geo
    if ctx.exc_type == "AssertionError" and "%" in (ctx.source_line or ""):
        k = _divisor(ctx)
        if k is not None and (h % k or w % k):
            expr = re.search(r"[\w.]+\s*%\s*\(?[\w.]+", ctx.source_line or "")
            return ("divisibility", _divisibility_text(k, h, w, f"an assertion on {expr.group(0) if expr else '%'}"))
        if k is None:
            return ("divisibility",
                    f"divisibility: an assertion on a remainder fails at {h}x{w}: the block "
                    f"needs H and W to be multiples of a block size; pad the map inside the block or feed only "
                    f"such sizes")
    m = _EINOPS_DIVIDE.search(ctx.message)
    if m:
        length, k = int(m.group(1)), int(m.group(2))
        if length in (h, w) and length % k:
            return ("divisibility", _divisibility_text(k, h, w, f"a rearrange into chunks of {k}"))
    m = _VIEW_SHAPE.search(ctx.message)
    if m:
        target = [int(v) for v in m.group(1).split(",") if v.strip()]
        if len(target) >= 2 and target[-1] == target[-2] == math.isqrt(h * w) and target[-1] ** 2 != h * w:
            return None  # a view to s x s with s = int(sqrt(H*W)): the square assumption, not a block size
        for a, b in zip(target, target[1:]):
            for size in (h, w):
                if b > 1 and target.count(b) >= 2 and size % b and a == size // b:
                    return ("divisibility", _divisibility_text(
                        b, h, w, f"a reshape into {b}x{b} blocks (view to {target})"))
    return None


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


@register_hint("fixed-token-count-view")
def _flattening_view(ctx: HintContext) -> tuple[str, str] | None:
    """``view(-1, 1024)``: rows of a constant size the input no longer divides into."""
    m = _VIEW_SHAPE.search(ctx.message)
    if m is None:
        return None
    target = [int(v) for v in m.group(1).split(",") if v.strip()]
    numel = int(m.group(2))
    fixed = [v for v in target if v > 0]
    if -1 not in target or not fixed:
        return None
    row = math.prod(fixed)
    if numel % row == 0:
        return None
    geo = ctx.geometry or (tuple(ctx.input_shape[1:]) if ctx.input_shape and len(ctx.input_shape) == 4 else None)
    parts = ""
    now = ""
    if geo is not None:
        c, h, w = geo
        now = f" ({h}x{w}: {h * w} tokens per channel)"
        if row % c == 0:
            per = row // c
            s = math.isqrt(per)
            parts = f" = {c} channels x {per}" + (f" ({s}x{s})" if s * s == per else "") + " positions"
        else:
            s = math.isqrt(row)
            parts = f" = {s}x{s} positions" if s * s == row else ""
    shown = ", ".join(str(v) for v in target)
    return ("fixed-token-count",
            f"fixed token count: a flattening view(-1 ...) to rows of {row} values (view({shown})){parts} "
            f"assumes the size the block was built for; this input's {numel} values{now} do not split into "
            f"rows of {row}: derive the row size from x.shape")


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


@register_hint("fixed-size-tensor")
def _fixed_size_tensor(ctx: HintContext) -> tuple[str, str] | None:
    """A broadcast of the map (H or W now) against a parameter or buffer that holds another size."""
    pair, geo = _pair(ctx.message), ctx.geometry
    if pair is None or geo is None:
        return None
    _, h, w = geo
    for fixed, actual in (pair, pair[::-1]):
        if actual not in (h, w) or fixed == actual:
            continue
        found = _user_tensor_with(ctx.modules[:1], fixed)
        if found is not None:
            name, shape = found
            return ("fixed-size-tensor",
                    f"broadcast against a fixed-size tensor: '{name}' has shape {'x'.join(map(str, shape))} "
                    f"(built for {fixed}) but the map is {h}x{w}; build it from the input's size (or "
                    f"interpolate it to H x W) instead of fixing it in __init__")
    return None


def _user_tensor_with(modules: list[Any], size: int) -> tuple[str, list[int]] | None:
    """A parameter or buffer of a user's module (not a torch layer's weight) with a spatial dim of ``size``."""
    for mod in modules:
        for path, sub in mod.named_modules():
            if type(sub).__module__.startswith("torch.nn"):
                continue
            for name, t in list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False)):
                dims = tuple(t.shape)
                spatial = dims[-2:] if len(dims) >= 3 else dims
                if len(dims) >= 2 and size in spatial:
                    return (f"{path}.{name}" if path else name), list(dims)
    return None


@register_hint("shrinking-map")
def _shrinking_map(ctx: HintContext) -> tuple[str, str] | None:
    """A stride-1 convolution with too little padding shrinks the map, which then no longer
    broadcasts against the input (BAM-style dilated convolutions with padding 0)."""
    pair, geo = _pair(ctx.message), ctx.geometry
    if pair is None or geo is None:
        return None
    _, h, w = geo
    for big, small in (pair, pair[::-1]):
        if big not in (h, w) or small >= big:
            continue
        convs = _shrinking_convs(ctx.modules[:1])
        total = 0
        for path, k, d, p, loss in convs:
            total += loss
            if loss == big - small or total == big - small:
                good = d * (k - 1) // 2
                return ("shrinking-map",
                        f"shrinking map: '{path}' (kernel {k}, dilation {d}, padding {p}) loses {loss} pixels per "
                        f"axis, so the branch comes out {small} wide and no longer broadcasts against the {big}-wide "
                        f"input; use padding = dilation * (kernel - 1) // 2 = {good}")
    return None


def _shrinking_convs(modules: list[Any]) -> list[tuple[str, int, int, int, int]]:
    import torch.nn as nn

    out = []
    for mod in modules:
        for path, sub in mod.named_modules():
            if isinstance(sub, nn.Conv2d) and tuple(sub.stride) == (1, 1) and isinstance(sub.padding, tuple):
                k, d, p = sub.kernel_size[-1], sub.dilation[-1], sub.padding[-1]
                loss = d * (k - 1) - 2 * p
                if loss > 0:
                    out.append((path, k, d, p, loss))
    return out


@register_hint("odd-size")
def _odd(ctx: HintContext) -> tuple[str, str] | None:
    pair = _pair(ctx.message)
    if pair is None or abs(pair[0] - pair[1]) != 1:
        return None
    a, b = sorted(pair)
    return ("odd-size",
            f"odd size: two branches differ by one pixel ({a} vs {b}); a stride-2 downsample followed by a x2 "
            f"upsample does not round-trip an odd size: interpolate to the skip's size or pad to even")
