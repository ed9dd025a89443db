"""What a checkpoint says about itself, as the lines ``yb profile`` prints above its layer table.

Reads only the report's ``checkpoint`` object (``CheckpointInfo.as_json``), so the table and
``--json`` cannot disagree; a fact the file does not state is shown as ``-``.
"""

from __future__ import annotations

from typing import Any

MAX_NAMES = 8


def _names(names: list[str] | None) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > MAX_NAMES else "")


def _ema(c: dict[str, Any]) -> str:
    if c.get("weights_key") == "ema":
        return "yes (the 'ema' entry)"
    if c.get("stripped") and c.get("ema"):
        return "yes (stripped: the trainer copied the EMA into 'model')"
    if c.get("weights_key") == "model":
        return "no ('model' entry, no EMA recorded)"
    return "-"


def _epoch(c: dict[str, Any]) -> str:
    e = c.get("epoch")
    if e is None:
        return "-"
    return "final (-1: training finished)" if e == -1 else str(e)


def checkpoint_lines(c: dict[str, Any]) -> list[str]:
    """Two or three plain-text lines (the caller escapes them for rich)."""
    fmt = c.get("format", "?")
    source = "its stored YAML" if c.get("yaml_source") == "checkpoint" else f"--model {c.get('yaml_source')}"
    dash = lambda v: "-" if v in (None, "", []) else str(v)  # noqa: E731
    lines = [f"checkpoint {c.get('path')}: {fmt} format, rebuilt from {source}, {c.get('tensors')} tensors loaded "
             f"strictly, saved as {dash(c.get('saved_dtype'))}"]
    if fmt not in ("state_dict", "safetensors"):
        imgsz = c.get("imgsz")
        lines.append(f"  task {dash(c.get('task'))} · nc {dash(c.get('nc'))} · names {_names(c.get('names'))} · "
                     f"train imgsz {dash(imgsz)} · epoch {_epoch(c)}")
        lines.append(f"  EMA {_ema(c)} · date {dash(c.get('date'))} · {dash(c.get('version'))} · "
                     f"model class {dash(c.get('model_class'))}")
    return lines
