"""The YOLOv5-repository and YOLOv9-repository YAML dialects.

Both repositories write YAMLs that look like ultralytics' but mean something else in a
few places: YOLOv5's ``Detect`` is the anchor head; YOLOv9's PGI models route through
``Silence``/``CBLinear``/``CBFuse`` and end in ``DDetect``/``DualDDetect``. Their
``parse_model`` also differs from ultralytics' in two small rules, kept here as facts:
the width multiple is skipped for ``c2 == na * (nc + 5)`` (not ``c2 == nc``) and no
``max_channels`` clamp exists. Detection is by content, never by file name.
"""

from __future__ import annotations

from typing import Any, Iterable

# Modules only the YOLOv9 repository names (its PGI routing and its decoupled heads).
YOLOV9_SIGNATURE = frozenset({
    "Silence", "CBLinear", "CBFuse", "DDetect", "DualDDetect", "TripleDDetect", "DualDetect", "TripleDetect",
})
# GELAN modules: also in ultralytics' YOLOv9 port, so they mark the YOLOv9 repository only
# together with the top-level `anchors` key that the repository's YAMLs always carry.
GELAN_MODULES = frozenset({"RepNCSPELAN4", "ADown", "SPPELAN", "ELAN1", "AConv"})

YOLOV5_RENAME = {"Detect": "AnchorDetect"}
YOLOV9_RENAME: dict[str, str] = {}

# parse_model rules shared by both repositories (ultralytics/yolov5 v7.0, WongKinYiu/yolov9).
REPO_FACTS: dict[str, Any] = {
    "width_skip": "no",  # c2 equal to na * (nc + 5) is not width-scaled (ultralytics: c2 == nc)
    "max_channels": None,  # no clamp before the width multiple
    "yaml_names": ("nc", "anchors"),  # names an arg may use, looked up in the YAML's top level
    "stride_probe": 256,  # input side used to measure the head strides
}


def module_names(d: dict) -> set[str]:
    """Every module name the YAML's backbone and head use."""
    names: set[str] = set()
    for part in ("backbone", "head"):
        for layer in d.get(part) or []:
            if isinstance(layer, (list, tuple)) and len(layer) >= 3 and isinstance(layer[2], str):
                names.add(layer[2])
    return names


def _any(names: set[str], wanted: Iterable[str]) -> bool:
    return not names.isdisjoint(wanted)


def is_yolov9_repo(d: dict) -> bool:
    """A YOLOv9-repository YAML: a PGI/DDetect module, or GELAN modules next to an ``anchors`` key."""
    names = module_names(d)
    return _any(names, YOLOV9_SIGNATURE) or ("anchors" in d and _any(names, GELAN_MODULES))


def is_yolov5_repo(d: dict) -> bool:
    """A YOLOv5-repository YAML: a top-level ``anchors`` key and nothing of the YOLOv9 repository."""
    return "anchors" in d and not is_yolov9_repo(d)


def no_width_skip(nc: int, anchors: Any) -> int:
    """The output width both repositories exempt from width scaling: ``na * (nc + 5)``."""
    na = len(anchors[0]) // 2 if isinstance(anchors, (list, tuple)) else int(anchors)
    return na * (nc + 5)
