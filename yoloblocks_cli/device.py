"""Device and dtype from command-line text, with one-line errors a user can act on.

Kept apart from the commands so that every command resolves ``--device``/``--dtype``
the same way, and so that tests can monkeypatch CUDA availability in one place.
"""

from __future__ import annotations

import re
from typing import Any

from yoloblocks_cli.errors import UsageError

DTYPES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}
SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def resolve_device(text: str | None) -> Any:
    """``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device``; UsageError (exit 2) if CUDA is absent."""
    import torch

    t = (text or "cpu").strip().lower()
    if t == "gpu":
        t = "cuda"
    if t.isdigit():
        t = f"cuda:{t}"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", t):
        raise UsageError(f"unknown device '{text}': expected cpu, cuda or cuda:N")
    if t.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"CUDA requested but torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or install a CUDA build of torch"
            )
        index = int(t.split(":")[1]) if ":" in t else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise UsageError(f"device '{text}' does not exist: {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    return torch.device("cpu")


def resolve_dtype(text: str | None) -> Any:
    """``fp32``/``fp16``/``bf16`` (and their long names) -> ``torch.dtype``; UsageError otherwise."""
    import torch

    key = (text or "fp32").strip().lower()
    if key not in DTYPES:
        raise UsageError(f"unknown dtype '{text}': expected fp32, fp16 or bf16")
    return getattr(torch, DTYPES[key])


def dtype_name(dtype: Any) -> str:
    """``torch.float16`` -> ``fp16`` (the spelling the CLI accepts)."""
    name = str(dtype).replace("torch.", "")
    return SHORT_DTYPE.get(name, name)


def synchronize(device: Any) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU); timing and memory need it on CUDA."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def device_name(device: Any) -> str:
    """A human name for the device: the GPU model, or the CPU model from the OS."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
