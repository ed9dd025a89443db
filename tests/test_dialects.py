"""The YOLOv5-repository and YOLOv9-repository dialects: detection, renames, exact model sizes.

Reference numbers come from building the repositories' own code
(``fixtures/repo_reference.json``, see its ``_about``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from yoloblocks_cli import dialects_repo as dr

CFG = Path(__file__).resolve().parents[1] / "blocks" / "cfg"
REF = json.loads((Path(__file__).parent / "fixtures" / "repo_reference.json").read_text())["models"]


def load(rel: str) -> dict:
    return yaml.safe_load((CFG / f"{rel}.yaml").read_text())


ULTRALYTICS_LIKE = {
    "nc": 80,
    "scales": {"n": [0.5, 0.25, 1024]},
    "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "RepNCSPELAN4", [128, 64, 32, 1]], [-1, 1, "ADown", [128]]],
    "head": [[[0, 2], 1, "Detect", ["nc"]]],
}


@pytest.mark.parametrize("rel", [f"yolov5_repo/yolov5{s}" for s in "nsmlx"])
def test_yolov5_repo_yamls_are_detected_as_yolov5(rel):
    d = load(rel)
    assert dr.is_yolov5_repo(d) and not dr.is_yolov9_repo(d)


@pytest.mark.parametrize("rel", [f"yolov9_repo/{m}-{s}" for m in ("yolov9", "gelan") for s in "tsmce"])
def test_yolov9_repo_yamls_are_detected_as_yolov9_despite_their_anchors_key(rel):
    d = load(rel)
    assert "anchors" in d  # the repository keeps `anchors: 3` in every YAML
    assert dr.is_yolov9_repo(d) and not dr.is_yolov5_repo(d)


def test_ultralytics_yaml_is_neither_repository_dialect():
    assert not dr.is_yolov9_repo(ULTRALYTICS_LIKE)
    assert not dr.is_yolov5_repo(ULTRALYTICS_LIKE)


def test_one_pgi_module_is_enough_for_yolov9():
    d = dict(ULTRALYTICS_LIKE, head=[[[0, 2], 1, "DualDDetect", ["nc"]]])
    assert dr.is_yolov9_repo(d)


def test_renames_and_facts():
    assert dr.YOLOV5_RENAME == {"Detect": "AnchorDetect"}
    assert dr.no_width_skip(80, [[10, 13, 16, 30, 33, 23]] * 3) == 255
    assert dr.no_width_skip(80, 3) == 255
