"""A target string -> something measurable: a constructed module and the input it takes.

`yb compare` and `yb check` accept blocks and models alike. A ``.yaml``/``.yml`` path or
a shipped model short name (``yolov8n``) is a model, built by
:func:`yoloblocks_cli.loading.yaml_model.build_model`; anything else is a block spec for
:func:`yoloblocks_cli.loading.load.load_block` (registry name, ``pkg.module:Class``,
``file.py:Class``). Blocks take ``CxHxW``/``BxCxHxW`` sizes, models ``S``/``HxW``/``BxCxHxW``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading.spec import Shape, parse_block_size, parse_model_size

DEFAULT_MODEL_SIZE = "640"


@dataclass
class Target:
    """A constructed module, the input shape to feed it, and how to name it in reports."""

    name: str
    kind: str  # "block" or "model"
    module: Any  # torch.nn.Module
    shape: Shape
    call: str  # exact constructor call or model file
    built: Any = None  # the yaml helper's BuiltModel (layers, stride) for a model


def is_model(text: str) -> bool:
    """A YAML path, a trained checkpoint (``best.pt``) or the short name of a model the tool ships."""
    from yoloblocks_cli.loading.checkpoint import is_checkpoint

    if text.lower().endswith((".yaml", ".yml")) or is_checkpoint(text):
        return True
    if ":" in text or "/" in text or "\\" in text:
        return False
    try:
        from yoloblocks_cli.loading.yaml_model import resolve_model_path
    except ModuleNotFoundError as exc:  # no model builder installed: look in the shipped cfg folder
        if exc.name != "yoloblocks_cli.loading.yaml_model":
            raise
        import blocks

        cfg = Path(blocks.__file__).parent / "cfg"
        return any(cfg.rglob(f"{text}.yaml"))
    try:
        resolve_model_path(text)
    except Exception:
        return False
    return True


def block_shape(size: str | None, batch: int | None = None, channels: int | None = None) -> Shape:
    """``CxHxW``/``BxCxHxW``; with ``channels``, ``HxW`` (or ``S``) is accepted too."""
    if size is None:
        raise UsageError("a block needs an input size: pass --size CxHxW, e.g. --size 64x40x40")
    parts = size.lower().replace("×", "x").split("x")
    if channels is not None and len(parts) in (1, 2):
        hw = parts if len(parts) == 2 else parts * 2
        size = "x".join([str(channels), *hw])
    return parse_block_size(size, batch)


def model_shape(size: str | None, batch: int | None = None, channels: int | None = None) -> Shape:
    return parse_model_size(size or DEFAULT_MODEL_SIZE, batch, channels or 3)


def shape_for(kind: str, size: str | None, batch: int | None = None, channels: int | None = None) -> Shape:
    return (block_shape if kind == "block" else model_shape)(size, batch, channels)


def resolve_target(text: str, size: str | None = None, *, batch: int | None = None, channels: int | None = None,
                   args: list | None = None, kwargs: dict | None = None, scale: str | None = None,
                   nc: int | None = None, plugins: Sequence[str | Path] = (), name: str | None = None) -> Target:
    """Build ``text`` as a block or a model and pair it with its input shape."""
    if is_model(text):
        if args or kwargs:
            raise UsageError(f"{text} is a model: --args/--kwargs apply to blocks only")
        shape = model_shape(size, batch, channels)
        try:
            from yoloblocks_cli.loading.yaml_model import build_model
        except ModuleNotFoundError as exc:
            if exc.name != "yoloblocks_cli.loading.yaml_model":
                raise
            raise UsageError(f"cannot build model {text}: yoloblocks_cli.loading.yaml_model is not available") from None
        built = build_model(text, scale=scale, plugins=tuple(plugins), nc=nc)
        call = text if scale is None else f"{text} (scale {scale})"
        return Target(name or text, "model", built.model, shape, call, built)
    shape = block_shape(size, batch, channels)
    from yoloblocks_cli.loading.load import import_file, load_block
    from yoloblocks_cli.loading.plugins import plugin_block_spec

    for plugin in plugins:
        import_file(plugin)
    loaded = load_block(plugin_block_spec(text, plugins), shape.channels, args, kwargs)  # the user's class wins
    return Target(name or text, "block", loaded.module, shape, loaded.call)
