"""Mamba-YOLO-T next to YOLOv8n, same run: forward latency (CPU by default) and FLOPs.

    PYTHONPATH=. python benchmarks/bench_mamba_vs_v8.py [--size 640x640] [--runs 3] [--threads N]

Models come from ``yoloblocks_cli.loading.yaml_model.build_model`` (``mamba-yolo.yaml`` scale T,
``yolov8.yaml`` scale n), Detect head included. FLOPs come from torch's dispatch counter (FlopCounterMode),
which sees the selective scan as the op ``yoloblocks::selective_scan`` (9*b*D*L*N).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def build(name: str, scale: str) -> nn.Module:
    from yoloblocks_cli.loading.yaml_model import build_model

    return build_model(name, scale=scale).model


# --- measurement ---------------------------------------------------------------------------


def latency_ms(model: nn.Module, x: torch.Tensor, runs: int) -> float:
    with torch.no_grad():
        model(x)  # warm-up
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    return best * 1e3


def flops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), by_op.get("yoloblocks.selective_scan", 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="640x640", help="HxW")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    h, w = (int(v) for v in a.size.lower().split("x"))
    x = torch.randn(1, 3, h, w)
    torch.manual_seed(0)
    rows = []
    for label, name, scale in (("Mamba-YOLO-T", "mamba-yolo.yaml", "T"), ("YOLOv8n", "yolov8.yaml", "n")):
        model = build(name, scale)
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        total, scan = flops(model, x)
        rows.append((label, params, total, scan, latency_ms(model, x, a.runs)))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, input 1x3x{h}x{w}, models via yoloblocks_cli.loading.yaml_model.build_model")
    print(f"{'model':14s} {'params':>11s} {'GFLOPs':>8s} {'scan GFLOPs':>12s} {'forward ms (best of ' + str(a.runs) + ')':>26s}")
    for label, params, total, scan, ms in rows:
        print(f"{label:14s} {params:11,d} {total / 1e9:8.2f} {scan / 1e9:12.2f} {ms:26.1f}")
    (_, _, f_m, _, t_m), (_, _, f_v, _, t_v) = rows
    print(f"ratio Mamba-YOLO-T / YOLOv8n: FLOPs {f_m / f_v:.2f}x, forward latency {t_m / t_v:.2f}x")


if __name__ == "__main__":
    main()
