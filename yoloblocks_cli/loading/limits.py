"""Resource bounds, checked before work: a hostile or careless input is exit 2 in a second.

Why a module of its own: the expensive things `yb` does (expand a YAML, construct a model,
allocate an input, start threads) happen in several commands; the few entry points call
the estimators here first, so a bound is stated once and a refusal always reads the same:
what was asked, the estimate, the limit and the option that changes it.

Two kinds of bound:

- fixed sanity bounds (document size, alias expansion, repeats, multipliers, channel
  counts, digits of a dimension, nesting of a literal): nothing legitimate comes near them;
- the memory limit (default: half of the memory available when `yb` starts; ``yb
  --max-memory 8G`` or ``$YB_MAX_MEMORY`` to change it). An input's bytes are computed from
  its shape; a model's or block's tensors are counted while it is constructed by
  intercepting torch's factory functions (:func:`guard_allocations`), so a weight that
  would pass the limit is refused *before* it is allocated, whatever the block's code.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

from yoloblocks_cli.errors import UsageError

MAX_YAML_BYTES = 2 * 1024 * 1024  # the largest shipped model YAML is 3.5 KB
MAX_YAML_NODES = 100_000  # nodes of the document with every alias expanded (yolov9-e: ~1,500)
MAX_REPEATS = 1_000  # repeats of one YAML row, before and after depth scaling (YOLO uses <= 9)
MAX_MULTIPLIER = 16.0  # depth_multiple / width_multiple (YOLO uses <= 1.5)
MAX_CHANNELS = 1 << 17  # input, output and class counts (131,072)
MAX_DIM_DIGITS = 9  # a size dimension below 1e9 (a single dimension that large is over any limit)
MAX_LITERAL_CHARS = 100_000  # --args / --kwargs text
MAX_LITERAL_DEPTH = 100  # nesting of brackets in --args / --kwargs
THREADS_PER_CPU = 4  # --threads at most this times the CPU count
DEFAULT_MEMORY_FRACTION = 0.5
ENV_MAX_MEMORY = "YB_MAX_MEMORY"


class LimitExceeded(UsageError):
    """A bound was passed: bad input (exit 2), reported with the estimate and the limit."""


# --- sizes in bytes ------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
          "tib": 1 << 40}


def human_bytes(n: float) -> str:
    """``1.5 GiB``: binary units, three significant figures."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """Bytes the system can give now (``MemAvailable``), else physical memory, else 8 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def parse_memory(text: str) -> int:
    """``8G``, ``512MiB``, ``1.5GB``, ``75%`` (of available memory) or plain bytes -> bytes."""
    t = str(text).strip().lower().replace(" ", "")
    if t.endswith("%"):
        try:
            pct = float(t[:-1])
        except ValueError:
            pct = math.nan
        if not (0 < pct <= 100):
            raise UsageError(f"malformed --max-memory '{text}': a percentage must be in (0, 100]")
        return int(available_memory() * pct / 100)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", t)
    if m is None or m.group(2) not in _UNITS or len(m.group(1)) > 20:
        raise UsageError(f"malformed --max-memory '{text}': expected bytes such as 8G, 512M, 1.5GiB or 50%")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise UsageError(f"malformed --max-memory '{text}': must be positive")
    return value


def memory_limit() -> int:
    """The memory limit in bytes: ``$YB_MAX_MEMORY`` (``--max-memory``), else half of what is available."""
    text = os.environ.get(ENV_MAX_MEMORY, "").strip()
    if text:
        return parse_memory(text)
    return int(available_memory() * DEFAULT_MEMORY_FRACTION)


def _limit_text(limit: int) -> str:
    how = "--max-memory" if os.environ.get(ENV_MAX_MEMORY, "").strip() else \
        f"{int(DEFAULT_MEMORY_FRACTION * 100)}% of available memory; yb --max-memory SIZE to change it"
    return f"the memory limit of {human_bytes(limit)} ({how})"


# --- inputs ----------------------------------------------------------------------------------------


def check_dim_text(digits: str, text: str) -> None:
    """A dimension of more than 9 digits is refused before ``int()`` (5,000 digits stall it)."""
    if len(digits) > MAX_DIM_DIGITS:
        raise LimitExceeded(f"malformed size '{text[:40]}{'...' if len(text) > 40 else ''}': a dimension has "
                            f"{len(digits)} digits (at most {MAX_DIM_DIGITS})")


def input_bytes(dims: tuple[int, ...] | list[int], element_size: int = 4) -> int:
    """Bytes of an input tensor of these dims (fp32 by default: inputs are drawn in fp32, then cast)."""
    return math.prod(int(d) for d in dims) * element_size


def check_input(dims: tuple[int, ...] | list[int], *, what: str = "input") -> int:
    """Refuse an input whose bytes alone pass the memory limit; returns the estimate."""
    need = input_bytes(dims)
    limit = memory_limit()
    if need > limit:
        shape = "x".join(str(d) for d in dims)
        raise LimitExceeded(f"{what} {shape} needs {human_bytes(need)} for the input tensor alone "
                            f"({shape} x 4 bytes), over {_limit_text(limit)}")
    return need


def check_batch(batch: int | None) -> None:
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {batch}")


def check_threads(threads: int | None) -> int | None:
    """``--threads`` between 1 and CPU count x 4 (libgomp aborts on 100,000)."""
    if threads is None:
        return None
    cap = (os.cpu_count() or 1) * THREADS_PER_CPU
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    if threads > cap:
        raise LimitExceeded(f"--threads must be at most {cap} ({os.cpu_count() or 1} CPUs x {THREADS_PER_CPU}), "
                            f"got {threads}")
    return threads


def check_literal_text(text: str, what: str) -> None:
    """Bound a literal's length and bracket nesting before ``ast`` parses it (deep nesting
    overflows the parser's stack)."""
    if len(text) > MAX_LITERAL_CHARS:
        raise LimitExceeded(f"{what} is {len(text):,} characters long (at most {MAX_LITERAL_CHARS:,})")
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_LITERAL_DEPTH:
        raise LimitExceeded(f"{what} nests brackets {deepest} deep (at most {MAX_LITERAL_DEPTH})")


# --- YAML --------------------------------------------------------------------------------------------


def check_yaml_bytes(size: int, where: str) -> None:
    if size > MAX_YAML_BYTES:
        raise LimitExceeded(f"{where}: the YAML is {human_bytes(size)}, over the limit of "
                            f"{human_bytes(MAX_YAML_BYTES)} for a model file")


def expanded_nodes(root: Any, cap: int = MAX_YAML_NODES) -> int:
    """Nodes of a composed YAML tree with every alias expanded, counted without expanding.

    PyYAML's composer shares one node object per anchor, so the tree is a DAG whose
    expansion can be exponential (billion laughs); the count is memoised per node and
    stops as soon as it passes ``cap``.
    """
    memo: dict[int, int] = {}

    def count(node: Any, depth: int) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if depth > 200:
            return cap + 1  # deeper than any model file (and than Python's stack allows)
        memo[key] = cap + 1  # a node reached again while being counted: a cycle
        value = node.value
        total = 1
        if isinstance(value, list):
            for item in value:
                children = item if isinstance(item, tuple) else (item,)
                for child in children:
                    total += count(child, depth + 1)
                    if total > cap:
                        memo[key] = total
                        return total
        memo[key] = total
        return total

    return count(root, 0)


def check_yaml_nodes(root: Any, where: str) -> None:
    n = expanded_nodes(root)
    if n > MAX_YAML_NODES:
        raise LimitExceeded(f"{where}: YAML aliases expand to more than {MAX_YAML_NODES:,} nodes "
                            f"(alias expansion limit; a model file has a few thousand at most)")


# --- model scaling -----------------------------------------------------------------------------------


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def check_multipliers(depth: Any, width: Any, max_channels: Any, where: str) -> None:
    """depth/width multipliers finite and in (0, 16]; max_channels a positive count."""
    for name, value in (("depth_multiple", depth), ("width_multiple", width)):
        v = _number(value, name, where)
        if not (math.isfinite(v) and 0 < v <= MAX_MULTIPLIER):
            raise LimitExceeded(f"{where}: {name} {value!r} is out of range (0, {MAX_MULTIPLIER:g}]")
    v = _number(max_channels, "max_channels", where)
    if not (v > 0 and (math.isinf(v) or v <= MAX_CHANNELS)):
        raise LimitExceeded(f"{where}: max_channels {max_channels!r} is out of range 1..{MAX_CHANNELS:,}")


def check_count(value: Any, what: str, where: str, maximum: int = MAX_CHANNELS) -> int:
    """A positive integer count (channels, nc) at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: {what} must be a positive integer, got {value!r}")
    if not 1 <= value <= maximum:
        raise LimitExceeded(f"{where}: {what} {value:,} is out of range 1..{maximum:,}")
    return value


def check_repeats(n: int, n_scaled: int, where: str) -> None:
    """A row's repeats, as written and after depth scaling, at most MAX_REPEATS."""
    if n > MAX_REPEATS:
        raise LimitExceeded(f"{where}: {n:,} repeats is over the limit of {MAX_REPEATS:,}")
    if n_scaled > MAX_REPEATS:
        raise LimitExceeded(f"{where}: {n:,} repeats x depth_multiple = {n_scaled:,}, over the limit of "
                            f"{MAX_REPEATS:,}")


def check_channels(c_out: Any, where: str) -> None:
    """A layer's output width, as its convention computed it, within 1..MAX_CHANNELS."""
    if isinstance(c_out, bool) or not isinstance(c_out, int):
        return  # a list (multi-output layer) or unknown until the dry run
    if not 1 <= c_out <= MAX_CHANNELS:
        raise LimitExceeded(f"{where}: {c_out:,} output channels is out of range 1..{MAX_CHANNELS:,}")


# --- construction: tensors counted before they are allocated -----------------------------------------


@dataclass
class _Tally:
    bytes: int = 0


_TALLY = _Tally()


def reset_allocations() -> None:
    """A new model or block is about to be constructed: start counting from zero."""
    _TALLY.bytes = 0


_FACTORIES = frozenset({"empty", "zeros", "ones", "full", "rand", "randn", "randint", "empty_strided",
                        "new_empty", "new_zeros", "new_ones", "new_full", "eye", "empty_like", "zeros_like",
                        "ones_like", "rand_like", "randn_like", "full_like"})


def _requested_numel(name: str, args: tuple, kwargs: dict) -> tuple[int, tuple]:
    """(numel, shape) a factory call asks for, from its arguments, without calling it."""
    import torch

    if name.endswith("_like"):
        t = args[0] if args else kwargs.get("input")
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else ()
        return (math.prod(shape) if shape else 1), shape
    rest = args[1:] if name.startswith("new_") else args  # self of Tensor.new_*
    if name == "eye":
        n = rest[0] if rest else kwargs.get("n", 1)
        m = rest[1] if len(rest) > 1 and isinstance(rest[1], int) else kwargs.get("m", n)
        return int(n) * int(m), (int(n), int(m))
    if name == "randint":  # randint(high, size) / randint(low, high, size)
        rest = tuple(a for a in rest if isinstance(a, (tuple, list, torch.Size)))
    elif name == "full" or name == "new_full":
        rest = rest[:1]
    elif name == "empty_strided":
        rest = rest[:1]
    size: Any = kwargs.get("size", rest)
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = size[0]
    try:
        shape = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        return 0, ()
    return (math.prod(shape) if shape else 1), shape


def _element_size(kwargs: dict, args: tuple, name: str) -> int:
    import torch

    dtype = kwargs.get("dtype")
    if dtype is None and name.startswith("new_") and args and isinstance(args[0], torch.Tensor):
        dtype = args[0].dtype
    if dtype is None:
        dtype = torch.get_default_dtype()
    try:
        return torch.empty((), dtype=dtype, device="meta").element_size()
    except (TypeError, RuntimeError):
        return 4


def _mode_class() -> type:
    """A TorchFunctionMode that checks every factory call against the memory limit first."""
    if "_AllocationGuard" in globals():
        return globals()["_AllocationGuard"]
    from torch.overrides import TorchFunctionMode

    class _AllocationGuard(TorchFunctionMode):
        def __init__(self, label: str, limit: int):
            super().__init__()
            self.label, self.limit = label, limit

        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name in _FACTORIES and str(kwargs.get("device", "")) != "meta":
                numel, shape = _requested_numel(name, args, kwargs)
                if any(d < 0 for d in shape):  # Conv(3, -8): bad input, not a failure of the block
                    raise UsageError(f"{self.label}: asks for a tensor of shape {'x'.join(map(str, shape))}: "
                                     "a width or size argument is negative")
                need = numel * _element_size(kwargs, args, name)
                if _TALLY.bytes + need > self.limit:
                    total = _TALLY.bytes + need
                    raise LimitExceeded(
                        f"{self.label}: its tensors would need at least {human_bytes(total)} "
                        f"(a {'x'.join(map(str, shape)) or 'scalar'} tensor of {human_bytes(need)} on top of "
                        f"{human_bytes(_TALLY.bytes)} already built), over {_limit_text(self.limit)}; "
                        f"nothing was allocated")
                _TALLY.bytes += need
            return func(*args, **kwargs)

    globals()["_AllocationGuard"] = _AllocationGuard
    return _AllocationGuard


@contextlib.contextmanager
def guard_allocations(label: str) -> Iterator[None]:
    """Count the bytes of every tensor created by torch factories inside the block, adding to
    what was counted since :func:`reset_allocations`; refuse (exit 2) the call that would pass
    the memory limit before it allocates."""
    mode = _mode_class()(label, memory_limit())
    with mode:
        yield


def allocated_estimate() -> int:
    """Bytes counted since the last :func:`reset_allocations`."""
    return _TALLY.bytes


def read_model_text(path: Any) -> str:
    """A model YAML's text: size checked before reading it, UTF-8 required (exit 2 otherwise)."""
    from pathlib import Path

    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            check_yaml_bytes(size, str(p))
        with open(p, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {p}: {exc.strerror or exc}") from None
    check_yaml_bytes(len(raw), str(p))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        kind = "UTF-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "binary or not UTF-8"
        raise UsageError(f"{p}: not a UTF-8 text file ({kind}: byte {exc.start} cannot be decoded)") from None
    if "\x00" in text:
        raise UsageError(f"{p}: not a text file (it contains NUL bytes)")
    return text


def preflight_model(name: Any) -> None:
    """Read a model YAML and check its bounds *before* torch is imported (a refusal in well under
    a second); the builder checks again, with the scale it chooses, while it builds."""
    from yoloblocks_cli.loading.yaml_model import read_yaml, resolve_model_path

    try:
        path = resolve_model_path(name)
    except UsageError:
        return  # not a model name: the command reports it in its own words
    if path.suffix.lower() not in (".yaml", ".yml"):
        return  # a checkpoint: its stored YAML is bounded when the builder reads it
    doc = read_yaml(path)
    data = doc.data
    where = str(path)
    rows = [(data.get("depth_multiple", 1.0), data.get("width_multiple", 1.0), float("inf"))]
    scales = data.get("scales")
    if isinstance(scales, dict):
        rows += [tuple(v) for v in scales.values() if isinstance(v, (list, tuple)) and len(v) == 3]
    for depth, width, max_channels in rows:
        check_multipliers(depth, width, max_channels, where)
    if "nc" in data:
        check_count(data["nc"], "nc", where)
    if "channels" in data:
        check_count(data["channels"], "channels", where)
    for i, (row, line) in enumerate(doc.rows):
        if isinstance(row, list) and len(row) == 4 and isinstance(row[1], int) and not isinstance(row[1], bool):
            check_repeats(row[1], 0, f"{path}:{line}: layer {i} ({row[2]})")
