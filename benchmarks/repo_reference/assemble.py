"""Merge the per-repository measurements into tests/fixtures/repo_yamls_reference.json.

usage: python benchmarks/repo_reference/assemble.py MEASURED.json [...] [--fused FUSED.json ...]
Keys become the shipped short names (``yolov7_repo/deploy/yolov7``); see the fixture's ``_about``.
``--fused``: JSONs of ``FUSED_ONLY=1 measure.py`` (the repository's own ``model.fuse()``), stored as ``fused``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "repo_yamls_reference.json"
PREFIXES = [  # (measured key prefix, shipped folder, repository and version)
    ("yolov7/cfg/training/", "yolov7_repo/", "WongKinYiu/yolov7 a207844 cfg/training/"),
    ("yolov7/cfg/deploy/", "yolov7_repo/deploy/", "WongKinYiu/yolov7 a207844 cfg/deploy/"),
    ("yolov7/cfg/baseline/", "yolov7_repo/baseline/", "WongKinYiu/yolov7 a207844 cfg/baseline/"),
    ("yolov5/models/hub/", "yolov5_repo/hub/", "ultralytics/yolov5 v7.0 models/hub/"),
    ("yolov5/models/segment/", "yolov5_repo/segment/", "ultralytics/yolov5 v7.0 models/segment/"),
    ("yolov5/models/", "yolov5_repo/", "ultralytics/yolov5 v7.0 models/"),
    ("yolov9/models/detect/", "yolov9_repo/", "WongKinYiu/yolov9 5b1ea9a models/detect/"),
    ("yolov9/models/segment/", "yolov9_repo/segment/", "WongKinYiu/yolov9 5b1ea9a models/segment/"),
    ("yolov9/models/panoptic/", "yolov9_repo/panoptic/", "WongKinYiu/yolov9 5b1ea9a models/panoptic/"),
]
ABOUT = (
    "Measured by building each YAML with the repository's own models/yolo.py (WongKinYiu/yolov7 a207844, "
    "ultralytics/yolov5 tag v7.0, WongKinYiu/yolov9 5b1ea9a) at the YAML's nc, one process per YAML "
    "(the repositories keep Conv.default_act as class state), torch 2.13.0+cpu, ultralytics-thop 2.2.3: "
    "params, gradients, modules = len(list(model.modules())) as their summary line prints it, per-layer "
    "params (m.np), strides, and GFLOPs the repositories' way (thop on a zero image of max(stride, 32) "
    "pixels, 2 x MACs, scaled to 640x640). gflops null: thop raised inside the repository's model_info, "
    "which then prints no GFLOPs (gflops_error says why). See benchmarks/repo_reference/README.md."
)


def shipped_name(key: str) -> tuple[str, str]:
    for prefix, folder, source in PREFIXES:
        if key.startswith(prefix) and "/" not in key[len(prefix):]:
            stem = key[len(prefix):].rsplit(".", 1)[0]
            return folder + stem, source + key[len(prefix):]
    raise KeyError(key)


def main(argv: list[str]) -> None:
    split = argv.index("--fused") if "--fused" in argv else len(argv)
    paths, fused_paths = argv[:split], argv[split + 1:]
    merged: dict[str, dict] = {}
    for p in paths:
        merged.update(json.loads(Path(p).read_text()))
    fused: dict[str, dict] = {}
    for p in fused_paths:
        fused.update({k: v for k, v in json.loads(Path(p).read_text()).items() if "error" not in v})
    models = {}
    for key, r in sorted(merged.items()):
        if "error" in r:
            continue
        name, source = shipped_name(key)
        models[name] = {"source": source, **{k: r[k] for k in ("params", "gradients", "modules", "gflops",
                                                              "gflops_error", "stride", "layer_params") if k in r}}
        if key in fused:
            models[name]["fused"] = {k: fused[key][k] for k in ("params", "gradients", "modules", "gflops",
                                                                "gflops_error") if k in fused[key]}
    FIXTURE.write_text(json.dumps({"_about": ABOUT, "models": dict(sorted(models.items()))}, indent=1) + "\n")
    print(f"{len(models)} models -> {FIXTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
