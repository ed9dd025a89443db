"""Reference figures of every model YAML ultralytics 8.4.190 ships, at every scale, built by ultralytics.

Run in a separate environment with ultralytics (see README.md). Writes JSON: one entry per (yaml, scale) with
params, gradients, summary layers, GFLOPs at 640 (get_flops), the fused line after model.fuse(),
and the eval-mode output structure at 1x3x640x640 (ch from the YAML).
"""

from __future__ import annotations

import copy
import os
import json
import logging
import sys
import time
import traceback
from pathlib import Path

import torch

import ultralytics
from ultralytics.nn import tasks
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import get_flops, get_num_gradients, get_num_params

LOGGER.setLevel(logging.ERROR)
ROOT = Path(ultralytics.__file__).parent / "cfg" / "models"

import torchvision  # noqa: E402  (reference environment only)

_get_model = torchvision.models.get_model


def _get_model_without_download(name, weights=None, **kw):
    """No network here: the architecture (and so every count) does not depend on the weights."""
    return _get_model(name, weights=None, **kw)


torchvision.models.get_model = _get_model_without_download


def model_class(d: dict) -> type:
    head = d["head"][-1][2]
    table = {
        "RTDETRDecoder": tasks.RTDETRDetectionModel, "WorldDetect": tasks.WorldModel,
        "YOLOEDetect": tasks.YOLOEModel, "YOLOESegment": tasks.YOLOESegModel, "YOLOESegment26": tasks.YOLOESegModel,
    }
    if head in table:
        return table[head]
    task = tasks.guess_model_task(d)
    return {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
            "obb": tasks.OBBModel, "classify": tasks.ClassificationModel,
            "semantic": tasks.SemanticSegmentationModel, "depth": tasks.DepthModel}[task]


def structure(x):
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (list, tuple)):
        return [structure(v) for v in x]
    if isinstance(x, dict):
        return {k: structure(v) for k, v in x.items()}
    return repr(type(x).__name__)


def layers(model) -> int:
    return sum(1 for _, m in model.named_modules() if len(m._modules) == 0)


def build(path: Path, scale: str | None):
    d = tasks.yaml_model_load(path)
    if scale:
        d["scale"] = scale
    cls = model_class(d)
    torch.manual_seed(0)
    model = cls(copy.deepcopy(d), verbose=False)
    model.eval()
    return d, cls, model


def base(path: Path, scale: str | None) -> dict:
    d, cls, model = build(path, scale)
    return {
        "yaml": str(path.relative_to(ROOT)), "stem": path.stem, "scale": scale, "model_class": cls.__name__,
        "task": tasks.guess_model_task(d) or "detect",
        "params": get_num_params(model), "gradients": get_num_gradients(model), "layers": layers(model),
        "gflops": get_flops(model, 640),
        "stride": [float(s) for s in model.stride] if hasattr(model, "stride") else None,
    }


def outputs(path: Path, scale: str | None) -> dict:
    d, cls, model = build(path, scale)
    ch = d.get("channels", 3)
    out = {}
    with torch.no_grad():
        out["output"] = structure(model(torch.zeros(1, ch, 640, 640)))
    for m in model.modules():
        if hasattr(m, "export"):
            m.export = True
    with torch.no_grad():
        out["export_output"] = structure(model(torch.zeros(1, ch, 640, 640)))
    return out


def fused(path: Path, scale: str | None) -> dict:
    d, cls, model = build(path, scale)
    model.fuse(verbose=False)
    return {"fused": {"params": get_num_params(model), "gradients": get_num_gradients(model), "layers": layers(model),
                      "gflops": get_flops(model, 640)}}


PRIORITY = ["yolo26", "yolo11-seg", "yolo11-pose", "yolo11-obb", "yolo11-cls", "yolo12", "yolo26-seg", "yolo26-pose",
            "yolo26-obb", "yolo26-cls", "yolov8-seg", "yolov8-pose", "yolov8-obb", "yolov8-cls", "yolo12-seg",
            "yolo12-pose", "yolo12-obb", "yolo12-cls", "rtdetr-l", "yolov3-spp", "yolov6", "yolo11", "yolov8"]


def main() -> None:
    dest = Path(sys.argv[1])
    mode = sys.argv[2]
    only = sys.argv[3:]
    fn = {"base": base, "outputs": outputs, "fused": fused}[mode]
    results = json.loads(dest.read_text()) if dest.exists() else {}
    paths = sorted(ROOT.rglob("*.yaml"), key=lambda p: (PRIORITY.index(p.stem) if p.stem in PRIORITY else 99, p.stem))
    for path in paths:
        if only == ["REST"]:
            if path.stem in PRIORITY:
                continue
        elif only and path.stem not in only:
            continue
        d = tasks.YAML.load(path)
        scales = list(d.get("scales") or {}) or [None]
        if mode == "outputs" or os.environ.get("FIRST_SCALE"):
            scales = scales[:1]
        for s in scales:
            key = f"{path.stem}:{s or '-'}"
            entry = results.setdefault(key, {})
            field = {"base": "params", "outputs": "output", "fused": "fused"}[mode]
            if field in entry:
                continue
            t0 = time.time()
            try:
                entry.update(fn(path, s))
                entry.pop(f"error_{mode}", None)
            except Exception as exc:  # noqa: BLE001
                entry[f"error_{mode}"] = f"{type(exc).__name__}: {exc}"
            entry[f"seconds_{mode}"] = round(time.time() - t0, 2)
            print(mode, key, {k: entry.get(k) for k in ("params", "layers", "gflops", f"error_{mode}")}, flush=True)
            dest.write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
