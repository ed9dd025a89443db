"""The YOLOv5-repository and YOLOv9-repository YAML dialects.

Both repositories write YAMLs that look like ultralytics' but mean something else in a
few places: YOLOv5's ``Detect`` is the anchor head; YOLOv9's PGI models route through
``Silence``/``CBLinear``/``CBFuse`` and end in ``DDetect``/``DualDDetect``. Their
``parse_model`` also differs from ultralytics' in two small rules, kept here as facts:
the width multiple is skipped for ``c2 == na * (nc + 5)`` (not ``c2 == nc``) and no
``max_channels`` clamp exists. Detection is by content, never by file name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Iterable, Iterator

from yoloblocks_cli.loading.dialects import Dialect, register_dialect

# Modules only the YOLOv9 repository names (its Silence input and its decoupled heads).
YOLOV9_SIGNATURE = frozenset({
    "Silence", "DDetect", "DualDDetect", "TripleDDetect", "DualDetect", "TripleDetect",
})
# GELAN and PGI-routing modules: also in ultralytics' YOLOv9 port (its yolov9e.yaml routes
# through CBLinear/CBFuse into a plain Detect), so they mark the YOLOv9 repository only
# together with the top-level `anchors` key that the repository's YAMLs always carry.
GELAN_MODULES = frozenset({"RepNCSPELAN4", "ADown", "SPPELAN", "ELAN1", "AConv", "CBLinear", "CBFuse"})

# Modules only the YOLOv7 repository names (YOLOR heads, ELAN-era stems and CSP variants).
YOLOV7_SIGNATURE = frozenset({
    "IDetect", "IAuxDetect", "IKeypoint", "IBin", "DownC", "ReOrg", "Stem", "Shortcut", "SPPCSPC", "MP", "SP",
    "RepConv", "Res", "ResX", *(f"{b}CSP{x}" for b in ("Bottleneck", "Res", "ResX") for x in "ABC"),
})
# Heads that are anchor-free in the YOLOv9 repository: its rows give [nc, ...] without `anchors`.
_FREE_HEADS = frozenset({"Detect", "Segment", "Panoptic"})

YOLOV5_RENAME = {
    "Detect": "AnchorDetect", "Segment": "Segment_yolov5repo", "Bottleneck": "Bottleneck_yolov5repo",
    "SPP": "SPP_yolov5repo", "C3TR": "C3TR_yolov5repo",
}
YOLOV9_RENAME: dict[str, str] = {
    "SPPELAN": "SPPELAN_yolov9repo",  # pools wrapped in SP modules
    "Detect": "Detect_yolov9repo", "Segment": "Segment_yolov9repo",  # anchor-free, DDetect-sized
}
YOLOV7_RENAME = {
    "Conv": "Conv_yolov7repo", "RepConv": "RepConv_yolov7repo", "Bottleneck": "Bottleneck_yolov7repo",
    "SPP": "SPP_yolov7repo", "SPPCSPC": "SPPCSPC_yolov7repo", "Detect": "AnchorDetect",
}

# parse_model facts shared by both repositories (ultralytics/yolov5 v7.0, WongKinYiu/yolov9),
# in the keys of ``yoloblocks_cli.loading.dialects.ULTRALYTICS_FACTS``. Their width rule skips
# c2 == na * (nc + 5), not c2 == nc: :class:`RepoWidthConventions` rewrites the width
# conventions accordingly. They have no ``scales`` and no max_channels clamp.
REPO_FACTS: dict[str, Any] = {
    "arg_names": ("nc", "anchors"),  # `anchors` in Detect's args is the YAML's top-level list (or int)
    "stride_probe": 256,  # both build the strides from a 256x256 zero image
    "scale_from_file_name": False,  # yolov5s.yaml carries its own multiples; the name is not a scale
    "summary_layers": "modules",  # their model_info: len(list(model.modules()))
    "gflops_from_stride_image": True,  # their model_info: thop at stride x stride, scaled by area
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


def _anchor_free_head(d: dict) -> bool:
    """A Detect/Segment/Panoptic row whose args do not name ``anchors`` (the YOLOv9 repository's yolov7-af)."""
    for layer in (d.get("head") or []):
        if (isinstance(layer, (list, tuple)) and len(layer) >= 4 and layer[2] in _FREE_HEADS
                and isinstance(layer[3], list) and "anchors" not in layer[3]
                and not any(isinstance(a, list) for a in layer[3])):
            return True
    return False


def is_yolov9_repo(d: dict) -> bool:
    """A YOLOv9-repository YAML: a PGI/DDetect module, or GELAN modules (or an anchor-free head) next
    to an ``anchors`` key."""
    names = module_names(d)
    return _any(names, YOLOV9_SIGNATURE) or ("anchors" in d and (_any(names, GELAN_MODULES) or _anchor_free_head(d)))


def is_yolov7_repo(d: dict) -> bool:
    """A YOLOv7-repository YAML: YOLOv7-only modules next to an ``anchors`` key, and not YOLOv9's.

    Its baseline yolov3/yolov3-spp YAMLs use only modules YOLOv5 has too: the shipped copies
    name their dialect (``dialect: yolov7-repo``).
    """
    return "anchors" in d and _any(module_names(d), YOLOV7_SIGNATURE) and not is_yolov9_repo(d)


def is_yolov5_repo(d: dict) -> bool:
    """A YOLOv5-repository YAML: a top-level ``anchors`` key and nothing of the YOLOv9/YOLOv7 repositories."""
    return "anchors" in d and not is_yolov9_repo(d) and not is_yolov7_repo(d)


def no_width_skip(nc: int, anchors: Any) -> int:
    """The output width both repositories exempt from width scaling: ``na * (nc + 5)``."""
    na = len(anchors[0]) // 2 if isinstance(anchors, (list, tuple)) else int(anchors)
    return na * (nc + 5)


WIDTH_CONVENTIONS = ("c1_c2", "c1_c2_n")  # the rules that apply the width multiple to args[0]


def _repo_width(conv: Any) -> Any:
    """``conv`` with the repositories' exemption: c2 == na * (nc + 5) (an output conv) stays unscaled."""
    from blocks.conventions import Convention

    def resolve(ctx: Any) -> Any:
        d = ctx.extra.get("yaml") or {}
        exempt = no_width_skip(int(d.get("nc", 80)), d.get("anchors", 3))
        return conv.resolve(dataclasses.replace(ctx, nc=exempt))

    return Convention(f"{conv.name}", f"{conv.description} (c2 == na*(nc+5) left unscaled)", resolve, conv.standalone)


class RepoWidthConventions(Mapping):
    """Dialect convention overrides computed on demand, so plugin blocks are covered too.

    The builder asks ``conventions.get(name, block_convention)``; width conventions come
    back wrapped by :func:`_repo_width`, every other rule unchanged (``None``: not overridden).
    """

    def __init__(self) -> None:
        self._cache: dict[int, Any] = {}

    def get(self, name: str, default: Any = None) -> Any:
        if default is None or getattr(default, "name", None) not in WIDTH_CONVENTIONS:
            return default
        key = id(default)
        if key not in self._cache:
            self._cache[key] = _repo_width(default)
        return self._cache[key]

    def __getitem__(self, name: str) -> Any:
        raise KeyError(name)  # only get() with the block's own convention can answer

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


REPO_CONVENTIONS = RepoWidthConventions()

# sem_nc: Panoptic's stuff classes; `activation:` sets RepConvN's default too (gelan.yaml, yolov9.yaml)
YOLOV9_FACTS = {**REPO_FACTS, "arg_names": ("nc", "anchors", "sem_nc"), "activation_also": ("RepConvN",)}

YOLOV9_REPO = register_dialect(Dialect(
    "yolov9-repo", detect=is_yolov9_repo, rename=YOLOV9_RENAME, conventions=REPO_CONVENTIONS, facts=YOLOV9_FACTS, priority=20,
    description="WongKinYiu/yolov9 parse_model: Silence/CBLinear/CBFuse routing, DDetect/DualDDetect heads",
))
YOLOV7_REPO = register_dialect(Dialect(
    "yolov7-repo", detect=is_yolov7_repo, rename=YOLOV7_RENAME, conventions=REPO_CONVENTIONS, facts=REPO_FACTS, priority=15,
    description="WongKinYiu/yolov7 parse_model: ELAN/CSP modules, IDetect/IAuxDetect, Conv(c1, c2, k, s, p, g, act)",
))
YOLOV5_REPO = register_dialect(Dialect(
    "yolov5-repo", detect=is_yolov5_repo, rename=YOLOV5_RENAME, conventions=REPO_CONVENTIONS, facts=REPO_FACTS, priority=10,
    description="ultralytics/yolov5 (v6.0-v7.0) parse_model: anchor-based Detect, anchors from the YAML",
))
