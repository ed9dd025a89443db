"""Wall time of `yb profile yolov8n` (CPU, 640) against ultralytics' own way to get the same numbers.

ultralytics side: ``YOLO("yolov8n.yaml").info()`` (build + summary line with get_flops) and a
10-run forward loop at 640, in a fresh interpreter of a separate environment that has
ultralytics (default ``/work/ulvenv``; set ``ULTRALYTICS_PYTHON``). yoloblocks side: the
``yb profile`` CLI in a fresh interpreter (it does more: three FLOP counters, per-layer
shapes/FLOPs/latency, 10 timed runs) with ``--no-memory``, with ``--no-memory --counter
torch,ultralytics`` (no fvcore JIT trace) and with its defaults (peak memory included);
and, separately, the builder + summary + 10 forwards in-process, the like-for-like part.
Both sides use the same thread count, and both run from bytecode caches as after a pip
install (ultralytics' site-packages has them; ours are written by an untimed first round,
with PYTHONDONTWRITEBYTECODE removed from the environment).

    PYTHONPATH=$PWD python benchmarks/bench_profile_vs_ultralytics.py [--model yolov8n] [--threads 2] [--repeat 3]

Skips cleanly (exit 0, a message) when the ultralytics environment does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the same 1 + 10-run loop for both sides, after each has built `net`
LOOP_SNIPPET = r"""
net.eval()
x = torch.zeros(1, 3, 640, 640)
with torch.inference_mode():
    net(x)
    t1 = time.perf_counter()
    for _ in range(10):
        net(x)
    loop = time.perf_counter() - t1
print("LOOP", loop, "TOTAL", time.perf_counter() - t0)
"""

ULTRALYTICS_SNIPPET = r"""
import os, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
try:
    from ultralytics import YOLO
    model = YOLO("{model}.yaml")
    model.info()
    net = model.model
except Exception:  # an environment without ultralytics' optional deps: the same numbers from tasks
    from ultralytics.nn.tasks import DetectionModel
    net = DetectionModel("{model}.yaml")
    net.info()
""" + "{loop}"

OURS_SNIPPET = r"""
import time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
from yoloblocks_cli.loading.yaml_model import build_model, summary_line, ultralytics_gflops
b = build_model("{model}")
print(summary_line(b, ultralytics_gflops(b)))
net = b.model
""" + "{loop}"


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd[:3])}...\n{proc.stderr[-2000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="yolov8n")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="fresh-interpreter runs per side (median reported)")
    a = ap.parse_args()
    ul_python = os.environ.get("ULTRALYTICS_PYTHON", "/work/ulvenv/bin/python")
    if not Path(ul_python).exists():
        print(f"skipped: no ultralytics environment at {ul_python} (set ULTRALYTICS_PYTHON)")
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT), YOLO_OFFLINE="1", NO_COLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    base = [sys.executable, "-m", "yoloblocks_cli", "profile", a.model, "--size", "640", "--threads", str(a.threads)]
    cli_variants = {  # name -> extra arguments of `yb profile`
        "yb_profile_cli": ["--runs", "10", "--no-memory"],
        "yb_profile_cli_torch_thop": ["--runs", "10", "--no-memory", "--counter", "torch,ultralytics"],
        "yb_profile_cli_default": [],
    }
    fill = dict(model=a.model, threads=a.threads, loop=LOOP_SNIPPET)
    results: dict[str, list[float]] = {"ultralytics": [], "yb_builder_in_process": [], **{k: [] for k in cli_variants}}
    for r in range(a.repeat + 1):  # interleaved, so machine load hits every side alike; round 0 untimed
        record = (lambda name, wall: results[name].append(wall)) if r else (lambda name, wall: None)
        wall, _out = _run([ul_python, "-c", ULTRALYTICS_SNIPPET.format(**fill)], dict(env, PYTHONPATH=""))
        record("ultralytics", wall)
        wall, out = _run([sys.executable, "-c", OURS_SNIPPET.format(**fill)], env)
        record("yb_builder_in_process", wall)
        for name, extra in cli_variants.items():
            record(name, _run(base + extra, env)[0])
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(json.dumps({"model": a.model, "threads": a.threads, "repeat": a.repeat,
                      "wall_s_median": {k: round(v, 2) for k, v in med.items()},
                      "wall_s_all": {k: [round(x, 2) for x in v] for k, v in results.items()}}, indent=2))
    print(f"summary line from the builder: {out.splitlines()[0] if out else ''}".rstrip())


if __name__ == "__main__":
    main()
