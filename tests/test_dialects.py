"""The YOLOv5-repository and YOLOv9-repository dialects: detection, renames, exact model sizes.

Reference numbers come from building the repositories' own code
(``fixtures/repo_reference.json``, see its ``_about``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from yoloblocks_cli.loading import dialects_repo as dr

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


def test_ultralytics_yolov9e_with_cblinear_and_cbfuse_stays_ultralytics():
    """ultralytics' port routes yolov9e through CBLinear/CBFuse into its own Detect."""
    from yoloblocks_cli.loading.yaml_model import resolve_model_path

    d = yaml.safe_load(resolve_model_path("yolov9e").read_text())
    assert {"CBLinear", "CBFuse"} <= dr.module_names(d) and "anchors" not in d
    assert not dr.is_yolov9_repo(d) and not dr.is_yolov5_repo(d)


def test_one_pgi_module_is_enough_for_yolov9():
    d = dict(ULTRALYTICS_LIKE, head=[[[0, 2], 1, "DualDDetect", ["nc"]]])
    assert dr.is_yolov9_repo(d)


def test_renames_and_facts():
    assert dr.YOLOV5_RENAME["Detect"] == "AnchorDetect"
    assert dr.YOLOV9_RENAME["SPPELAN"] == "SPPELAN_yolov9repo"
    assert dr.no_width_skip(80, [[10, 13, 16, 30, 33, 23]] * 3) == 255
    assert dr.no_width_skip(80, 3) == 255


# --- whole models through the builder: exact to the unit, layer by layer --------------------

FAST = ["yolov5_repo/yolov5s", "yolov9_repo/yolov9-c"]  # gelan-c and the rest: -m slow (DDetect: test_repo_blocks)
SLOW = [k for k in REF if k not in FAST]


def _check_model(key: str) -> None:
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    ref = REF[key]
    built = build_model(CFG / f"{key}.yaml")
    assert built.dialect == ("yolov5-repo" if key.startswith("yolov5") else "yolov9-repo")
    assert [layer.params for layer in built.layers] == ref["layer_params"]
    assert (built.params, built.gradients) == (ref["params"], ref["gradients"])
    assert built.n_layers == built.n_modules == ref["modules"]  # the repositories count len(list(modules()))
    assert built.stride == (8.0, 16.0, 32.0)  # a dual head's strides are its first branch's, as the repository sets them
    assert round(ultralytics_gflops(built), 1) == round(ref["gflops"], 1)


@pytest.mark.parametrize("key", FAST)
def test_repository_model_is_built_exactly(key):
    _check_model(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", SLOW)
def test_repository_model_is_built_exactly_full_sweep(key):
    _check_model(key)


def test_yolov5_repo_resolves_detect_to_the_anchor_head_with_yaml_anchors():
    from blocks.yolov5_repo import AnchorDetect
    from yoloblocks_cli.loading.yaml_model import build_model

    built = build_model(CFG / "yolov5_repo/yolov5n.yaml", nc=3)
    head = built.model.model[-1] if hasattr(built.model, "model") else list(built.model.children())[-1]
    assert isinstance(head, AnchorDetect)
    assert built.layers[-1].params == 3 * ((64 + 1) + (128 + 1) + (256 + 1)) * (3 + 5)
    # anchors are in grid units after the stride pass: P3 [10, 13] / 8
    assert head.anchors[0, 0].tolist() == [1.25, 1.625]
    assert built.stride == (8.0, 16.0, 32.0)


# Seed 002's table (yolov9-c-MMQARepNCSPELAN4 built by the YOLOv9 repository, nc=1), params per layer.
SEED_002_PARAMS = [0, 1856, 73984, 249472, 164352, 773376, 656384, 2119168, 656384, 2119168, 656896, 0, 0,
                   3119616, 0, 0, 912640, 164352, 0, 2988544, 656384, 0, 3119616, 131328, 393984, 656640, 1856,
                   73984, 212864, 164352, 0, 847616, 656384, 0, 2857472, 656384, 0, 2857472, 21542822]
SEED_002_MODIFIED = {3, 5, 7, 9}  # the MMQARepNCSPELAN4 layers


def test_yolov9_c_plain_layers_equal_the_seed_002_table():
    """Every layer the article did not modify equals yolov9-c's as the repository builds it (which
    test_repository_model_is_built_exactly pins for our build); the head differs only by nc (1 vs 80)
    and is checked at nc=1 in test_repo_blocks."""
    assert sum(SEED_002_PARAMS) == 49_485_350  # the article's summary line
    ref = REF["yolov9_repo/yolov9-c"]["layer_params"]
    for i, params in enumerate(SEED_002_PARAMS[:-1]):
        if i not in SEED_002_MODIFIED:
            assert ref[i] == params, i


def test_shipped_repository_yamls_are_named_with_their_folder():
    from yoloblocks_cli.loading.yaml_model import resolve_model_path

    assert resolve_model_path("yolov5_repo/yolov5s") == CFG / "yolov5_repo" / "yolov5s.yaml"
    assert resolve_model_path("yolov9_repo/yolov9-c") == CFG / "yolov9_repo" / "yolov9-c.yaml"
    assert resolve_model_path("yolov5s").parent.name == "ultralytics"  # a bare name is ultralytics' v5u


TINY_V5 = """
nc: 80
depth_multiple: 0.33
width_multiple: 0.5
anchors:
  - [10, 13, 16, 30, 33, 23]
backbone:
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [255, 1, 1]]
  - [-1, 1, Conv, [64, 3, 2]]
head:
  - [[2], 1, Detect, [nc, anchors]]
"""


def test_repository_width_rule_leaves_na_times_nc_plus_5_unscaled(tmp_path):
    """Both repositories skip the width multiple for c2 == na * (nc + 5) (255 here), not c2 == nc."""
    from yoloblocks_cli.loading.yaml_model import build_model

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_V5)
    built = build_model(path)
    assert built.dialect == "yolov5-repo"
    assert [layer.args[1] for layer in built.layers[:3]] == [16, 255, 32]
    assert built.layers[-1].params == 3 * 85 * (32 + 1)
