"""The size grammar and safe argument parsing shared by every command.

Block sizes are ``CxHxW`` or ``BxCxHxW``; model sizes are ``S`` (square image),
``HxW`` or ``BxCxHxW``. Several sizes come from repeating the option or a comma list.
Arguments are Python literals parsed with :func:`ast.literal_eval`, never evaluated.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Iterable

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading import limits

_DIMS = re.compile(r"^\d+(x\d+)*$")


@dataclass(frozen=True)
class Shape:
    """An input shape (B, C, H, W) with the text it came from."""

    batch: int
    channels: int
    height: int
    width: int

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def with_batch(self, batch: int) -> "Shape":
        return Shape(batch, self.channels, self.height, self.width)

    def __str__(self) -> str:
        return "x".join(str(d) for d in self.dims)


def _split(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in str(value).split(",") if part.strip())
    return out


def _dims(text: str) -> list[int]:
    t = text.lower().replace("×", "x").replace(" ", "")
    if not _DIMS.match(t):
        raise UsageError(f"malformed size '{text[:40]}': expected digits joined by 'x', e.g. 64x160x160")
    for digits in t.split("x"):
        limits.check_dim_text(digits, text)
    dims = [int(d) for d in t.split("x")]
    if any(d <= 0 for d in dims):
        raise UsageError(f"malformed size '{text}': every dimension must be positive")
    return dims


def parse_block_size(text: str, batch: int | None = None) -> Shape:
    """``CxHxW`` or ``BxCxHxW`` for a block input."""
    dims = _dims(text)
    if len(dims) == 3:
        shape = Shape(1, *dims)
    elif len(dims) == 4:
        shape = Shape(*dims)
    else:
        raise UsageError(f"malformed size '{text}': a block takes CxHxW or BxCxHxW, e.g. 64x160x160")
    return _bounded(shape.with_batch(batch) if batch is not None else shape, batch)


def parse_model_size(text: str, batch: int | None = None, channels: int = 3) -> Shape:
    """``S`` (square), ``HxW`` or ``BxCxHxW`` for a model input."""
    dims = _dims(text)
    if len(dims) == 1:
        shape = Shape(1, channels, dims[0], dims[0])
    elif len(dims) == 2:
        shape = Shape(1, channels, dims[0], dims[1])
    elif len(dims) == 4:
        shape = Shape(*dims)
    else:
        raise UsageError(f"malformed size '{text}': a model takes S, HxW or BxCxHxW, e.g. 640 or 640x480")
    return _bounded(shape.with_batch(batch) if batch is not None else shape, batch)


def _bounded(shape: Shape, batch: int | None) -> Shape:
    """A positive batch and an input that fits the memory limit (see :mod:`limits`), before any allocation."""
    limits.check_batch(batch)
    limits.check_count(shape.channels, "channels", f"size {shape}")
    limits.check_input(shape.dims, what="size")
    return shape


def parse_block_sizes(values: Iterable[str], batch: int | None = None) -> list[Shape]:
    sizes = [parse_block_size(v, batch) for v in _split(values)]
    if not sizes:
        raise UsageError("no size given: pass --size CxHxW, e.g. --size 64x160x160")
    return sizes


def parse_model_sizes(values: Iterable[str], batch: int | None = None, channels: int = 3) -> list[Shape]:
    sizes = [parse_model_size(v, batch, channels) for v in _split(values)]
    if not sizes:
        raise UsageError("no size given: pass --size 640 or --size 640x480")
    return sizes


def parse_literal(text: str, what: str = "value") -> Any:
    """A Python literal (number, string, list, tuple, dict, bool, None); never evaluated."""
    limits.check_literal_text(text, what)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise UsageError(f"malformed {what} {shown!r}: only Python literals are accepted ({exc.__class__.__name__})") from None


def parse_args_list(text: str | None) -> list | None:
    """``--args '[8, 48, 48]'`` (a bare ``8, 48`` works too) -> list, or None if absent."""
    if text is None or not text.strip():
        return None
    value = parse_literal(text.strip(), "--args")
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, list):
        return [value]
    return value


def parse_kwargs(pairs: Iterable[str] | None) -> dict[str, Any]:
    """``--kwargs num_heads=8 --kwargs qkv_bias=True`` -> dict; bare words stay strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        limits.check_literal_text(raw, f"--kwargs {key[:40]}")
        if not sep or not key.isidentifier():
            raise UsageError(f"malformed --kwargs {pair!r}: expected name=value, e.g. num_heads=8")
        try:
            out[key] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            if re.fullmatch(r"[A-Za-z_][\w.\-]*", raw.strip()):
                out[key] = raw.strip()
            else:
                shown = raw if len(raw) <= 60 else raw[:57] + "..."
                raise UsageError(f"malformed --kwargs value {shown!r} for {key}: only literals are accepted") from None
    return out
