"""ultralytics 8.4's own model YAMLs (YOLO26, YOLO12, RT-DETR, every task head) built without ultralytics.

Reference figures: ``tests/fixtures/ultralytics84_reference.json``, measured with ultralytics 8.4.190
itself in a separate environment (the model class of the YAML's task, at each scale; parameters,
gradients, leaf-module "layers", ``get_flops`` at 640, and the same after ``model.fuse()``). The
default suite builds a representative subset; ``-m slow`` builds every case in the fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from yoloblocks_cli.loading.fuse import fuse_built
from yoloblocks_cli.loading.yaml_model import build_model, summary_line, ultralytics_gflops

FIXTURE = Path(__file__).parent / "fixtures" / "ultralytics84_reference.json"
REFERENCE: dict = json.loads(FIXTURE.read_text())["models"]


def _build(key: str):
    stem, scale = key.split(":")
    return build_model(stem, scale=None if scale == "-" else scale)


def _check(key: str, gflops: bool = True) -> None:
    ref = REFERENCE[key]
    built = _build(key)
    assert (built.params, built.gradients, built.n_layers) == (ref["params"], ref["gradients"], ref["layers"]), key
    assert list(built.stride) == ref["stride"], key
    if gflops:
        assert ultralytics_gflops(built) == pytest.approx(ref["gflops"], abs=1e-3), key


@pytest.mark.parametrize("key", ["yolo11-seg:n", "yolo11-pose:n", "yolo11-obb:n", "yolo11-cls:n", "yolo12:n",
                                 "rtdetr-l:l"])
def test_task_models_exact_params_gradients_layers(key: str):
    _check(key, gflops=False)


@pytest.mark.parametrize("key, name, stride", [("yolo26-sem:n", "yolo26n-sem", [32.0]),
                                               ("yolo11-cls:n", "yolo11n-cls", [1.0]),
                                               ("yolo26-depth:n", "yolo26n-depth", [32.0])])
def test_model_stride_is_ultralytics(key: str, name: str, stride: list):
    """A semantic model's stride is its backbone's deepest (the FPN concats need it), not its head's P3/P4;
    a classifier has none (1). The trace lays rectangles on max(stride, 32), as ultralytics' loaders do
    (yolo26n-sem failed at 656x448 while its stride was taken from the head: 16)."""
    from yoloblocks_cli.tracing.run import TraceRequest, model_targets

    assert REFERENCE[key]["stride"] == stride and list(build_model(name).stride) == stride
    _, grid = model_targets(TraceRequest(target=name))
    assert grid == 32


def test_yolo26n_exact_with_gflops_summary_and_fused_line():
    _check("yolo26:n")
    built = build_model("yolo26n")
    assert summary_line(built, ultralytics_gflops(built)) == \
        "YOLO26n summary: 260 layers, 2,572,280 parameters, 2,572,280 gradients, 6.2 GFLOPs"
    x = torch.zeros(1, 3, 320, 256)
    with torch.no_grad():
        before = built.model(x)
    fuse_built(built)
    fused = REFERENCE["yolo26:n"]["fused"]
    assert (built.params, built.gradients, built.n_layers) == (fused["params"], fused["gradients"], fused["layers"])
    assert ultralytics_gflops(built) == pytest.approx(fused["gflops"], abs=1e-3)
    assert summary_line(built, ultralytics_gflops(built)).startswith("YOLO26n summary (fused): 120 layers, 2,408,932")
    with torch.no_grad():
        after = built.model(x)
    # a fresh end-to-end head decodes its one-to-many branch (as ultralytics'), boxes + 80 scores per anchor
    assert before.shape == after.shape == (1, 84, 40 * 32 + 20 * 16 + 10 * 8)
    assert torch.allclose(before, after, atol=1e-3)


@pytest.mark.parametrize("name, shape", [
    ("yolo11n-seg", [[1, 116, 1344], [1, 32, 64, 64]]),  # boxes+80 scores+32 mask coefficients; protos at P3 x 2
    ("yolo11n-pose", [1, 135, 1344]),  # 4 + 80 classes (the YAML's nc) + 17 x 3 keypoints
    ("yolo11n-obb", [1, 85, 1344]),  # 4 + 80 classes + 1 angle
    ("yolo11n-cls", [1, 1000]),
    ("yolo26n-pose", [1, 135, 1344]),
])
def test_task_outputs_per_part(name: str, shape: list):
    built = build_model(name)
    with torch.no_grad():
        y = built.model(torch.zeros(1, 3, 256, 256))

    def dims(v):
        return [dims(t) for t in v] if isinstance(v, (list, tuple)) else list(v.shape)

    assert dims(y) == shape


def test_fuse_drops_training_only_parts_and_keeps_outputs():
    built = build_model("yolo26n-seg")
    x = torch.zeros(1, 3, 128, 160)
    with torch.no_grad():
        y0 = built.model(x)
    head = built.model.model[-1]
    assert head.proto.semseg is not None and head.one2one_cv4 is not None
    fuse_built(built)
    with torch.no_grad():
        y1 = built.model(x)
    assert head.proto.semseg is None and head.one2one_cv4 is None and head.cv4 is not None
    assert torch.allclose(y0[0], y1[0], atol=1e-3) and torch.allclose(y0[1], y1[1], atol=1e-3)


def test_sppf_rows_old_and_new():
    from blocks.csp import SPPF

    yolo26 = build_model("yolo26n").model.model[9]
    yolov8 = build_model("yolov8n").model.model[9]
    assert isinstance(yolo26, SPPF) and isinstance(yolov8, SPPF)
    assert isinstance(yolo26.cv1.act, torch.nn.Identity) and yolo26.add and yolo26.n == 3
    assert isinstance(yolov8.cv1.act, torch.nn.SiLU) and not yolov8.add


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_every_reference_case(key: str):
    _check(key)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(k for k, v in REFERENCE.items() if "fused" in v))
def test_every_fused_reference_case(key: str):
    ref = REFERENCE[key]["fused"]
    built = _build(key)
    fuse_built(built)
    assert (built.params, built.gradients, built.n_layers) == (ref["params"], ref["gradients"], ref["layers"])
    assert ultralytics_gflops(built) == pytest.approx(ref["gflops"], abs=1e-3)


def _dims(v):
    return [_dims(t) for t in v] if isinstance(v, (list, tuple)) else list(v.shape)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(k for k, v in REFERENCE.items() if "export_output" in v))
def test_every_output_structure(key: str):
    """Eval output at 1 x C x 640 x 640 equals ultralytics' eval output where that is one tensor (classify, depth
    and semantic maps at their own resolution; export mode would upsample those), else its export-mode output:
    the first element of ultralytics' (predictions, raw dict) pair."""
    ref = REFERENCE[key]
    want = ref["output"] if all(isinstance(v, int) for v in ref["output"]) else ref["export_output"]
    built = _build(key)
    with torch.no_grad():
        y = built.model(torch.zeros(1, built.channels, 640, 640))
    assert _dims(y) == want
