"""Mamba-YOLO-T next to YOLOv8n, same run: forward latency (CPU by default) and FLOPs.

    PYTHONPATH=. python benchmarks/bench_mamba_vs_v8.py [--size 640x640] [--runs 3] [--threads N]

Models come from ``yoloblocks_cli.yaml_model.build_model`` (``mamba-yolo.yaml`` scale T,
``yolov8.yaml`` scale n) when that builder is present. Without it, a STAND-IN graph
runner below builds the same layers from the block registry, with a stand-in Detect
head holding ultralytics Detect's convolutions (box and class towers; DFL decoding,
which is cheap, omitted). FLOPs come from torch's dispatch counter (FlopCounterMode),
which sees the selective scan as the op ``yoloblocks::selective_scan`` (9*b*D*L*N).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import yaml
from torch.utils.flop_counter import FlopCounterMode

import blocks
from blocks.conv import Conv
from blocks.conventions import LayerContext
from blocks.registry import get_block

CFG = Path(blocks.__file__).parent / "cfg"

# --- STAND-IN (used only when yoloblocks_cli.yaml_model is missing) -------------------------

YOLOV8_STANDIN = """
nc: 80
scales: {n: [0.33, 0.25, 1024]}
backbone:
  [[-1, 1, Conv, [64, 3, 2]], [-1, 1, Conv, [128, 3, 2]], [-1, 3, C2f, [128, True]],
   [-1, 1, Conv, [256, 3, 2]], [-1, 6, C2f, [256, True]], [-1, 1, Conv, [512, 3, 2]],
   [-1, 6, C2f, [512, True]], [-1, 1, Conv, [1024, 3, 2]], [-1, 3, C2f, [1024, True]],
   [-1, 1, SPPF, [1024, 5]]]
head:
  [[-1, 1, nn.Upsample, [None, 2, nearest]], [[-1, 6], 1, Concat, [1]], [-1, 3, C2f, [512]],
   [-1, 1, nn.Upsample, [None, 2, nearest]], [[-1, 4], 1, Concat, [1]], [-1, 3, C2f, [256]],
   [-1, 1, Conv, [256, 3, 2]], [[-1, 12], 1, Concat, [1]], [-1, 3, C2f, [512]],
   [-1, 1, Conv, [512, 3, 2]], [[-1, 9], 1, Concat, [1]], [-1, 3, C2f, [1024]],
   [[15, 18, 21], 1, Detect, [nc]]]
"""


class DetectStandIn(nn.Module):
    """ultralytics Detect's convolutions (reg_max 16): per level a box and a class tower."""

    def __init__(self, nc: int, ch: list[int], reg_max: int = 16) -> None:
        super().__init__()
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat([b(x), c(x)], 1) for x, b, c in zip(xs, self.cv2, self.cv3)]


class GraphStandIn(nn.Module):
    def __init__(self, d: dict, scale: str) -> None:
        super().__init__()
        depth, width, max_ch = d["scales"][scale]
        nc, ch, self.froms = d["nc"], [3], []
        layers = []
        for f, n, m, args in d["backbone"] + d["head"]:
            args = [nc if a == "nc" else (None if a == "None" else a) for a in args]
            fs = [f] if isinstance(f, int) else list(f)
            cin = [ch[i] if i < 0 else ch[i + 1] for i in fs]
            if m == "Detect":
                layers.append(DetectStandIn(nc, cin))
            else:
                info = get_block(m)
                r = info.convention.resolve(LayerContext(
                    ch_in=cin, args=list(args), n=max(round(n * depth), 1) if n > 1 else n, nc=nc,
                    width=width, max_channels=max_ch))
                mods = [info.cls(*r.args, **r.kwargs) for _ in range(r.repeats)]
                layers.append(mods[0] if len(mods) == 1 else nn.Sequential(*mods))
                ch.append(r.c_out if r.c_out is not None else cin[0])
            self.froms.append(fs)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor):
        outs: list[torch.Tensor] = []
        for i, (layer, fs) in enumerate(zip(self.layers, self.froms)):
            src = [x if i == 0 else outs[i + j] if j < 0 else outs[j] for j in fs]
            arg = src[0] if len(fs) == 1 else src
            outs.append(layer(arg))
        return outs[-1]


def build(name: str, scale: str) -> tuple[nn.Module, str]:
    try:
        from yoloblocks_cli.yaml_model import build_model
    except ImportError:
        text = YOLOV8_STANDIN if name == "yolov8.yaml" else (CFG / name).read_text()
        return GraphStandIn(yaml.safe_load(text), scale), "stand-in graph runner"
    return build_model(name, scale=scale).model, "yoloblocks_cli.yaml_model.build_model"


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
        model, how = build(name, scale)
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        total, scan = flops(model, x)
        rows.append((label, params, total, scan, latency_ms(model, x, a.runs)))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, input 1x3x{h}x{w}, models via {how}")
    print(f"{'model':14s} {'params':>11s} {'GFLOPs':>8s} {'scan GFLOPs':>12s} {'forward ms (best of ' + str(a.runs) + ')':>26s}")
    for label, params, total, scan, ms in rows:
        print(f"{label:14s} {params:11,d} {total / 1e9:8.2f} {scan / 1e9:12.2f} {ms:26.1f}")
    (_, _, f_m, _, t_m), (_, _, f_v, _, t_v) = rows
    print(f"ratio Mamba-YOLO-T / YOLOv8n: FLOPs {f_m / f_v:.2f}x, forward latency {t_m / t_v:.2f}x")


if __name__ == "__main__":
    main()
