"""YAML dialects: the facts that differ between the code bases that read YOLO YAMLs.

ultralytics (v5u, v8, v9 port, v10, 11) is the default. The YOLOv5 and YOLOv9 repositories
read the same row format with other module sets and a few other rules; each registers a
:class:`Dialect` here. The builder asks the dialect (never an ``if repo == ...`` chain):

- ``rename``: YAML module name -> registry name (``Detect`` -> ``AnchorDetect``);
- ``conventions``: registry name -> a Convention that replaces the block's own in this dialect;
- ``facts``: plain values the builder and conventions read (see ``ULTRALYTICS_FACTS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# Facts every dialect has; a dialect overrides what differs.
ULTRALYTICS_FACTS: dict[str, Any] = {
    # names a string argument may refer to; their values come from the YAML's top level
    "arg_names": ("nc", "kpt_shape"),
    # a YAML ``[c2, ...]`` equal to nc is left unscaled (YOLOv5 repo, ultralytics < 8.4); 8.4 scales it
    "keep_nc_width": False,
    # the state a model build starts from; conventions may change it (C3k2 sets legacy_head False)
    "initial_state": {"legacy_head": True},
    # the size ultralytics runs once at build time to learn the strides
    "stride_probe": 256,
    # ``yolov8n.yaml`` means ``yolov8.yaml`` at scale n
    "scale_from_file_name": True,
    # "layers" in the summary line: ultralytics 8.4 counts leaf modules (named_modules without
    # children: YOLOv8n 129); older ultralytics and the YOLOv5/YOLOv9 repositories count
    # len(list(model.modules())) (YOLOv8n 225)
    "summary_layers": "leaves",
    # the summary's GFLOPs: False = ultralytics 8.4's get_flops (thop's stride-aligned proxies); True = the
    # repositories' model_info (thop on one stride x stride image, times the area ratio: YOLOv5's C3TR
    # attention is counted at one token per P5 cell, 16.6 GFLOPs for hub/yolov5s-transformer)
    "gflops_from_stride_image": False,
    # registry names of classes besides Conv whose default_act an `activation:` key also sets
    "activation_also": (),
}


@dataclass(frozen=True)
class Dialect:
    """One code base's reading of a YOLO YAML."""

    name: str
    detect: Callable[[dict], bool]
    rename: Mapping[str, str] = field(default_factory=dict)
    conventions: Mapping[str, Any] = field(default_factory=dict)  # registry name -> Convention
    facts: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0  # higher is tried first by detect_dialect
    description: str = ""

    def fact(self, key: str) -> Any:
        return self.facts[key] if key in self.facts else ULTRALYTICS_FACTS[key]


_DIALECTS: dict[str, Dialect] = {}
DEFAULT = "ultralytics"


def register_dialect(dialect: Dialect) -> Dialect:
    """Add (or replace) a dialect by name."""
    _DIALECTS[dialect.name] = dialect
    return dialect


def get_dialect(name: str) -> Dialect:
    _load_builtin()
    try:
        return _DIALECTS[name]
    except KeyError:
        raise KeyError(f"unknown dialect {name!r}; known: {', '.join(sorted(_DIALECTS))}") from None


def all_dialects() -> list[Dialect]:
    _load_builtin()
    return sorted(_DIALECTS.values(), key=lambda d: -d.priority)


def detect_dialect(yaml_dict: dict) -> Dialect:
    """The highest-priority dialect whose ``detect`` accepts the YAML; ultralytics otherwise.

    A YAML may name its dialect explicitly with a top-level ``dialect:`` key.
    """
    _load_builtin()
    named = yaml_dict.get("dialect")
    if isinstance(named, str) and named in _DIALECTS:
        return _DIALECTS[named]
    for d in all_dialects():
        if d.name != DEFAULT and d.detect(yaml_dict):
            return d
    return _DIALECTS[DEFAULT]


register_dialect(Dialect(
    DEFAULT, detect=lambda d: True, priority=-1,
    description="ultralytics parse_model (YOLOv5u, YOLOv8, YOLOv9 port, YOLOv10, YOLO11)",
))

_BUILTIN_LOADED = False


def _load_builtin() -> None:
    """Import the modules that register the other dialects (they may not exist in every build)."""
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    import importlib

    for mod in ("yoloblocks_cli.loading.dialects_repo",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
