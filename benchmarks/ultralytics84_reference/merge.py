"""Write tests/fixtures/ultralytics84_reference.json from the JSON files measure.py wrote (figures only).

usage: python benchmarks/ultralytics84_reference/merge.py REFERENCE.json [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ultralytics84_reference.json"
FIELDS = ("yaml", "stem", "scale", "task", "model_class", "params", "gradients", "layers", "gflops", "stride", "fused",
          "output", "export_output")
SOURCE = ("ultralytics 8.4.190 (pip --no-deps), torch 2.14.1 CPU; <Model>(yaml, scale), eval; get_num_params, "
          "get_num_gradients, leaf modules (model_info), get_flops(model, 640); fused: after model.fuse()")


def main(paths: list[str]) -> None:
    merged: dict[str, dict] = {}
    for path in paths:
        for key, entry in json.loads(Path(path).read_text()).items():
            if entry.get("params") is None:
                continue  # a case ultralytics itself could not build
            kept = merged.setdefault(key, {})
            for field in FIELDS:
                if field in entry and field not in kept:
                    kept[field] = entry[field]
    FIXTURE.write_text(json.dumps({"source": SOURCE, "models": dict(sorted(merged.items()))}, indent=1) + "\n")
    print(f"{len(merged)} cases -> {FIXTURE}")


if __name__ == "__main__":
    main(sys.argv[1:])
