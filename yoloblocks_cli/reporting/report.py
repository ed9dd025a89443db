"""Report plumbing shared by every command: environment, JSON envelope, atomic writes, rich.

The JSON envelope (schema ``yoloblocks.report/1``) is the contract CI scripts read; fields
are added, never renamed, without a schema bump. Rich output degrades to plain text when
stdout is not a terminal or ``NO_COLOR`` is set, so logs and pipes stay clean.
"""

from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "yoloblocks.report/1"


def env_info(device: Any, dtype: Any, threads: int | None = None) -> dict[str, Any]:
    """The ``env`` object: what the numbers were measured with."""
    import torch

    from yoloblocks_cli import __version__
    from yoloblocks_cli.device import device_name, dtype_name

    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "dtype": dtype_name(dtype),
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "yoloblocks": __version__,
        "scan": _scan_backend(device),
    }


def _scan_backend(device: Any) -> str:
    """The selective scan Mamba blocks use on ``device`` ("torch" or "kernel"), as requested."""
    try:
        from blocks.mamba.scan import resolve_backend

        return resolve_backend(device)
    except Exception as exc:  # e.g. kernel requested for CPU tensors: the forward will say so
        return f"unavailable ({exc.__class__.__name__})"


def base_report(command: str, target: str, env: dict[str, Any]) -> dict[str, Any]:
    """The common fields every ``--json`` report starts with."""
    return {"schema": SCHEMA, "command": command, "target": target, "env": dict(env)}


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_clean(report), indent=2, allow_nan=False) + "\n"


def write_json(report: dict[str, Any], output_path: str | Path | None = None) -> None:
    """Print the report to stdout, or write it atomically (temp file + ``os.replace``):
    a reader never sees a half-written file."""
    text = to_json(report)
    if output_path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from yoloblocks_cli.reporting.atomic import write_text_atomic

    write_text_atomic(output_path, text)


# ----------------------------------------------------------------------------- rich


def plain_output(stream: Any = None) -> bool:
    """No colours and no live spinners: not a terminal, or NO_COLOR set."""
    stream = stream or sys.stdout
    return bool(os.environ.get("NO_COLOR")) or not getattr(stream, "isatty", lambda: False)()


def console(stderr: bool = False) -> Any:
    """A rich Console that writes plain text when the stream is not a terminal or NO_COLOR is set."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    plain = plain_output(stream)
    tty = getattr(stream, "isatty", lambda: False)()
    # Not a terminal: rich would wrap at 80 columns; logs and files read better unwrapped.
    width = None if tty else int(os.environ.get("COLUMNS") or 160)
    return Console(file=stream, no_color=plain, color_system=None if plain else "auto", highlight=False,
                   emoji=False, soft_wrap=False, width=width, force_terminal=None if not plain else False)


@contextmanager
def status(message: str) -> Iterator[Any]:
    """A spinner on stderr while measuring, only on a terminal; yields a function to update its text."""
    if plain_output(sys.stderr):
        yield lambda text: None
        return
    con = console(stderr=True)
    with con.status(message) as st:
        yield lambda text: st.update(text)


def human_count(n: int | float | None) -> str:
    """3,157,200 -> '3.16 M'; None -> '-'."""
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def human_bytes(n: int | None) -> str:
    """Bytes in binary units (MiB), as allocators report them."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def gflops(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.3f}"


__all__ = ["SCHEMA", "env_info", "base_report", "write_json", "to_json", "console", "status", "plain_output",
           "human_count", "human_bytes", "gflops", "nullcontext", "render_timing", "output_shape"]


def format_shape(shape: Any) -> str:
    """``[1, 64, 80, 80]`` -> ``1x64x80x80``; nested lists -> ``[a, b]``; dicts -> ``{k: a}``;
    None -> ``-``. The one shape formatter of every table and message."""
    if shape is None:
        return "-"
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(d, int) for d in shape):
        return "x".join(str(d) for d in shape)
    if isinstance(shape, (list, tuple)):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {format_shape(v)}" for k, v in shape.items()) + "}"
    return str(shape)


def relative_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (reports name no home)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def display_path(path: str) -> str:
    """A path as reports print it: a shipped YAML as ``blocks/cfg/...`` (wherever the package
    is installed), a file below the working folder relative to it, anything else as given."""
    import blocks

    p = Path(path)
    shipped = Path(blocks.__file__).resolve().parent
    try:
        return str(Path("blocks") / p.resolve().relative_to(shipped))
    except ValueError:
        pass
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def shape_of(value: Any) -> Any:
    """Shape of a tensor (list of ints), or nested lists for tuples/lists of tensors; None otherwise."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return list(shape)
    if isinstance(value, (list, tuple)):
        inner = [shape_of(v) for v in value]
        inner = [s for s in inner if s is not None]
        return inner or None
    if isinstance(value, dict):
        inner = [shape_of(v) for v in value.values()]
        inner = [s for s in inner if s is not None]
        return inner or None
    return None


def output_shape(out: Any) -> Any:
    """A forward's output as the JSON reports write it: tensor -> [B, C, H, W] (ints, even
    inside a JIT trace, where sizes are tensors); tuple/list -> nested lists; dict ->
    {key: shape}; anything else -> its type name."""
    import torch

    if isinstance(out, torch.Tensor):
        return [int(d) for d in out.shape]
    if isinstance(out, (tuple, list)):
        return [output_shape(o) for o in out]
    if isinstance(out, dict):
        return {str(k): output_shape(v) for k, v in out.items()}
    return type(out).__name__


def render_timing(con: Any, r: dict[str, Any]) -> None:
    """The latency and peak-memory lines shared by `yb inspect` and `yb profile`."""
    from yoloblocks_cli.reporting.latency_text import latency_lines

    for key, label in (("latency_ms", "latency"), ("train_latency_ms", "train")):
        for line in latency_lines(r.get(key), label):
            con.print(line)
    mem = r.get("memory_bytes")
    if mem:
        con.print(f"peak memory {human_bytes(mem['peak'])} ({mem['peak']:,} bytes)  [dim]{mem['method']}[/]")
    tm = r.get("train_memory_bytes")
    if tm:
        con.print(f"train peak  {human_bytes(tm['peak'])} ({tm['peak']:,} bytes)  [dim]forward+backward[/]")
