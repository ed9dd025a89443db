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
        return "yes (stripped: EMA copied into 'model')"
    if c.get("weights_key") == "model":
        return "no ('model' entry, no EMA recorded)"
    return "-"


def _epoch(c: dict[str, Any]) -> str:
    e = c.get("epoch")
    if e is None:
        return "-"
    return "final (-1)" if e == -1 else str(e)


def _dash(v: Any) -> str:
    return "-" if v in (None, "", []) else str(v)


def checkpoint_lines(c: dict[str, Any]) -> list[str]:
    """One line for every checkpoint, two more for a trainer's (the caller escapes them for rich)."""
    fmt = c.get("format", "?")
    source = "its stored YAML" if c.get("yaml_source") == "checkpoint" else f"--model {c.get('yaml_source')}"
    lines = [f"checkpoint {c.get('path')} · {fmt} · saved as {_dash(c.get('saved_dtype'))} · "
             f"{c.get('tensors')} tensors loaded strictly into {source}"]
    if fmt not in ("state_dict", "safetensors"):
        date = c.get("date")
        lines.append(f"  task {_dash(c.get('task'))} · nc {_dash(c.get('nc'))} · names {_names(c.get('names'))} · "
                     f"train imgsz {_dash(c.get('imgsz'))} · epoch {_epoch(c)} · EMA {_ema(c)}")
        lines.append(f"  {_dash(c.get('version'))} · {_dash(date[:19] if isinstance(date, str) else None)} · "
                     f"{_dash(c.get('model_class'))}")
    return lines
