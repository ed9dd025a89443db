"""A trained checkpoint -> yb's own model with the trained weights, and what the file says about itself.

Formats, told apart by what the unpickled object holds (never by running it):

- ``ultralytics``: an 8.x trainer's dict (``model``/``ema`` records of ``ultralytics.nn.tasks.*Model``,
  ``train_args``, ``version``, ``date``); the model's ``yaml`` dict rides inside the model record;
- ``yolov5`` / ``yolov9``: the repositories' ``train.py`` dicts (``model``/``ema`` records of
  ``models.yolo.*Model``, ``opt``); the dialect of the stored YAML tells which repository;
- ``state_dict``: a plain mapping of names to tensors (``.pt``/``.pth``, optionally under a
  ``state_dict``/``model`` key), or ``.safetensors`` where that package is installed; these carry
  no architecture, so ``--model YAML`` says what they belong to.

The model is rebuilt by :func:`yoloblocks_cli.loading.yaml_model.build_model` from the stored YAML
(the classes in the file are never imported), and the harvested tensors are loaded with
``strict=True`` semantics: every missing or unexpected key and every shape difference is one line
of a single exit-2 error, checked before any weight is copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading.safe_unpickle import Record, safe_load

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt")
TASKS_BY_CLASS = {"DetectionModel": "detect", "SegmentationModel": "segment", "PoseModel": "pose",
                  "OBBModel": "obb", "ClassificationModel": "classify", "WorldModel": "detect",
                  "RTDETRDetectionModel": "detect", "YOLOEModel": "detect", "Model": "detect"}
DIALECT_OF_FORMAT = {"ultralytics": "ultralytics", "yolov5": "yolov5-repo", "yolov9": "yolov9-repo"}
MAX_MISMATCH_LINES = 40


def is_checkpoint(text: str) -> bool:
    """A path ending in ``.pt``/``.pth``/``.safetensors``/``.ckpt`` (the file need not exist yet)."""
    return str(text).lower().endswith(CHECKPOINT_SUFFIXES)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (``None``: the file does not say)."""

    path: str
    format: str
    weights_key: str | None
    ema: bool | None
    stripped: bool
    task: str | None
    nc: int | None
    names: tuple[str, ...] | None
    imgsz: Any
    epoch: int | None
    date: str | None
    version: str | None
    saved_dtype: str | None
    model_class: str | None
    yaml_source: str
    tensors: int
    tensor_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "weights_key": self.weights_key, "ema": self.ema,
                "stripped": self.stripped, "task": self.task, "nc": self.nc,
                "names": list(self.names) if self.names is not None else None, "imgsz": self.imgsz,
                "epoch": self.epoch, "date": self.date, "version": self.version, "saved_dtype": self.saved_dtype,
                "model_class": self.model_class, "yaml_source": self.yaml_source, "tensors": self.tensors,
                "tensor_bytes": self.tensor_bytes}


@dataclass(frozen=True)
class Checkpoint:
    """The harvested weights, the stored YAML (if any) and the facts."""

    state_dict: dict[str, Any]
    yaml: dict | None
    info: CheckpointInfo
    extra: dict[str, Any] = field(default_factory=dict)


# --- reading ------------------------------------------------------------------------------------


def _is_tensor(v: Any) -> bool:
    return type(v).__name__ in ("Tensor", "Parameter") and hasattr(v, "shape")


def harvest(record: Record, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A module record's persistent parameters and buffers, named as ``nn.Module.state_dict`` names them."""
    st = record.state
    skip = st.get("_non_persistent_buffers_set") or set()
    for key in ("_parameters", "_buffers"):
        for name, t in (st.get(key) or {}).items():
            if t is None or (key == "_buffers" and name in skip):
                continue
            if not _is_tensor(t):
                raise UsageError(f"{prefix}{name}: a {key[1:-1]} entry that is not a tensor")
            yield prefix + name, t
    for name, sub in (st.get("_modules") or {}).items():
        if isinstance(sub, Record):
            yield from harvest(sub, f"{prefix}{name}.")


def _names(raw: Any) -> tuple[str, ...] | None:
    if isinstance(raw, dict):
        try:
            return tuple(str(raw[k]) for k in sorted(raw))
        except TypeError:
            return tuple(str(v) for v in raw.values())
    if isinstance(raw, (list, tuple)):
        return tuple(str(v) for v in raw)
    return None


def _as_dict(v: Any) -> dict:
    if isinstance(v, dict):
        return v
    if isinstance(v, Record):
        return v.state
    return {}


def _saved_dtype(sd: dict[str, Any]) -> str | None:
    kinds = sorted({str(t.dtype).replace("torch.", "") for t in sd.values() if t.is_floating_point()})
    return "+".join(kinds) if kinds else None


def _plain_state_dict(obj: Any) -> dict[str, Any] | None:
    """A mapping of names to tensors, at the top or under ``state_dict``/``model``/``model_state_dict``."""
    for cand in (obj, *(obj.get(k) for k in ("state_dict", "model_state_dict", "model", "ema")
                        if isinstance(obj, dict))):
        if isinstance(cand, dict) and cand and all(isinstance(k, str) for k in cand) \
                and all(_is_tensor(v) for v in cand.values()):
            return dict(cand)
    return None


def _repo_format(yaml: dict) -> str:
    from yoloblocks_cli.loading.dialects_repo import is_yolov9_repo

    return "yolov9" if is_yolov9_repo(yaml) else "yolov5"


def _imgsz(args: dict) -> Any:
    v = args.get("imgsz", args.get("img_size"))
    return list(v) if isinstance(v, tuple) else v


def _version(ckpt: dict, fmt: str) -> str | None:
    if isinstance(ckpt.get("version"), str):
        return f"ultralytics {ckpt['version']}" if fmt == "ultralytics" else str(ckpt["version"])
    git = ckpt.get("git")
    if isinstance(git, dict) and git.get("commit"):
        return f"{fmt} git {str(git['commit'])[:10]}"  # the remote may be a local path: not shown
    return None


def read_checkpoint(path: str | Path, model_yaml: str | None = None) -> Checkpoint:
    """Unpickle safely, tell the format, harvest the weights; ``model_yaml`` for a plain state_dict."""
    p = Path(path)
    where = str(path)
    if p.suffix.lower() == ".safetensors":
        return _read_safetensors(p, model_yaml)
    loaded = safe_load(p)
    obj = loaded.obj
    model_rec = None
    key = None
    if isinstance(obj, dict):
        for k in ("ema", "model"):  # the EMA is what the trainers validate and keep
            if isinstance(obj.get(k), Record):
                model_rec, key = obj[k], k
                break
    elif isinstance(obj, Record):
        model_rec, obj = obj, {}
    if model_rec is None:
        sd = _plain_state_dict(obj)
        if sd is None:
            top = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__
            raise UsageError(f"{where}: no model and no state_dict found (top level: {top})")
        return _state_dict_checkpoint(where, sd, model_yaml, "state_dict", loaded.bytes)
    st = model_rec.state
    yaml = st.get("yaml")
    if not isinstance(yaml, dict):
        raise UsageError(f"{where}: the model in the checkpoint carries no YAML dict ({model_rec.global_name})")
    gname = model_rec.global_name
    fmt = "ultralytics" if gname.startswith("ultralytics.") or "train_args" in obj else _repo_format(yaml)
    sd = dict(harvest(model_rec))
    if not sd:
        raise UsageError(f"{where}: the model record holds no tensors")
    args = _as_dict(obj.get("train_args")) or _as_dict(st.get("args")) or _as_dict(obj.get("opt"))
    names = _names(st.get("names"))
    task = args.get("task") if isinstance(args.get("task"), str) else TASKS_BY_CLASS.get(model_rec.class_name)
    nc = yaml.get("nc") if isinstance(yaml.get("nc"), int) else (len(names) if names else None)
    stripped = obj.get("optimizer", 0) is None and obj.get("ema", 0) is None and "updates" in obj \
        and obj.get("updates") is None
    ema = True if key == "ema" else (True if stripped else None)
    epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
    info = CheckpointInfo(where, fmt, key, ema, bool(stripped), task, nc, names, _imgsz(args), epoch,
                          obj.get("date") if isinstance(obj.get("date"), str) else None, _version(obj, fmt),
                          _saved_dtype(sd), gname, "checkpoint" if model_yaml is None else str(model_yaml),
                          len(sd), loaded.bytes)
    return Checkpoint(sd, yaml, info, {"yaml_file": st.get("yaml_file") or yaml.get("yaml_file")})


def _state_dict_checkpoint(where: str, sd: dict[str, Any], model_yaml: str | None, fmt: str,
                           nbytes: int) -> Checkpoint:
    if model_yaml is None:
        raise UsageError(f"{where}: a plain state_dict carries no architecture: pass --model YAML "
                         "(e.g. --model yolov8n or --model my.yaml)")
    info = CheckpointInfo(where, fmt, None, None, False, None, None, None, None, None, None, None,
                          _saved_dtype(sd), None, str(model_yaml), len(sd), nbytes)
    return Checkpoint(sd, None, info)


def _read_safetensors(p: Path, model_yaml: str | None) -> Checkpoint:
    try:
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise UsageError(f"{p}: reading .safetensors needs the safetensors package (pip install safetensors)"
                         ) from None
    if not p.is_file():
        raise UsageError(f"no such checkpoint: {p}")
    try:
        sd = load_file(str(p))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UsageError(f"{p}: damaged safetensors file: {msg}") from None
    return _state_dict_checkpoint(str(p), sd, model_yaml, "safetensors", sum(t.nbytes for t in sd.values()))


# --- rebuilding ---------------------------------------------------------------------------------


def mismatches(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """One line per difference between the model's state_dict and the file's, as ``strict=True`` sees it."""
    lines = [f"shape differs: {k}: checkpoint {tuple(got[k].shape)}, model {tuple(v.shape)}"
             for k, v in expected.items() if k in got and tuple(got[k].shape) != tuple(v.shape)]
    lines += [f"missing in the checkpoint: {k} {tuple(v.shape)}" for k, v in expected.items() if k not in got]
    lines += [f"unexpected in the checkpoint: {k} {tuple(v.shape)}" for k, v in got.items() if k not in expected]
    return lines


def load_weights(model: Any, ckpt: Checkpoint, against: str) -> None:
    """``load_state_dict(strict=True)``, after listing every difference (exit 2 if any)."""
    import torch

    expected = model.state_dict()
    diff = mismatches(expected, ckpt.state_dict)
    if diff:
        shown = diff[:MAX_MISMATCH_LINES]
        more = [f"... and {len(diff) - len(shown)} more"] if len(diff) > len(shown) else []
        raise UsageError("\n".join([f"{ckpt.info.path} does not fit {against}: {len(diff)} difference"
                                    f"{'s' if len(diff) != 1 else ''} (strict loading)", *shown, *more]))
    with torch.no_grad():
        model.load_state_dict(ckpt.state_dict, strict=True)


def yaml_doc(ckpt: Checkpoint) -> Any:
    """The stored YAML dict as the builder's :class:`YamlDoc` (rows without source lines)."""
    from yoloblocks_cli.loading.yaml_model import YamlDoc

    d = dict(ckpt.yaml or {})
    rows = [(row, 0) for section in ("backbone", "head") for row in (d.get(section) or [])]
    if not isinstance(d.get("backbone"), list):
        raise UsageError(f"{ckpt.info.path}: the stored YAML has no 'backbone' list")
    return YamlDoc(Path(ckpt.info.path), d, rows, {})


def build_from_checkpoint(path: str | Path, model_yaml: str | None = None, *, scale: str | None = None,
                          plugins: Any = (), nc: int | None = None, dialect: str | None = None) -> Any:
    """A :class:`BuiltModel` (float32, eval) carrying the trained weights; ``.checkpoint`` holds the facts."""
    import dataclasses

    from yoloblocks_cli.loading.yaml_model import build_model

    ckpt = read_checkpoint(path, model_yaml)
    if model_yaml is not None:
        built = build_model(model_yaml, scale=scale, plugins=plugins, nc=nc, dialect=dialect)
        against = str(model_yaml)
    else:
        for flag, value in (("--scale", scale), ("--nc", nc)):
            if value is not None:
                raise UsageError(f"{flag} does not apply to {path}: the YAML stored in the checkpoint fixes it")
        d = ckpt.yaml or {}
        stem = Path(str(ckpt.extra.get("yaml_file") or Path(str(path)).stem)).name
        stored_scale = d.get("scale") if isinstance(d.get("scale"), str) and d.get("scale") else None
        built = build_model(stem, scale=stored_scale, plugins=plugins,
                            dialect=dialect or DIALECT_OF_FORMAT.get(ckpt.info.format), source=yaml_doc(ckpt))
        against = f"the YAML stored in it ({stem})"
    built.model.float()
    load_weights(built.model, ckpt, against)
    built.model.eval()
    if ckpt.info.names:
        built.model.names = dict(enumerate(ckpt.info.names))
    return dataclasses.replace(built, checkpoint=ckpt.info)
