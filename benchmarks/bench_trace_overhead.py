"""Cost of `yb trace`'s hooks: traced forward vs plain forward at the same size.

Usage:  PYTHONPATH=. python benchmarks/bench_trace_overhead.py [--runs 30] [--threads N]

Timing uses process CPU time with one torch thread by default, so that other processes on a
shared machine do not swamp a 25% threshold (``--wall`` for wall clock).

Cases: a yolov8n-like backbone (Conv/C2f/SPPF at the n widths), the full yolov8n built by
``yaml_model`` (when present), an attention block (plain multi-head self-attention over H*W
tokens) at P5/P4 sizes, and every registered attention-family block at 64x20x20. Plain and traced runs are interleaved so machine load
hits both alike; the figure is the ratio of medians. "traced" = what every passing
configuration pays (``traced_call``: no hooks unless the call fails, when it is run again
hooked to name the layer); "traced+layers" = pre/post hooks on every module recording
shapes, the layer log of ``--layers``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from blocks.conv import Conv
from blocks.csp import C2f, SPPF
from yoloblocks_cli.tracing.tracer import ShapeTracer, traced_call


def v8n_backbone() -> nn.Module:
    """Layers 0-9 of yolov8n (width 0.25, depth 0.33): 16-32-64-128-256 channels."""
    return nn.Sequential(
        Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32, 1, True), Conv(32, 64, 3, 2), C2f(64, 64, 2, True),
        Conv(64, 128, 3, 2), C2f(128, 128, 2, True), Conv(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256, 256, 5),
    )


class TokenAttention(nn.Module):
    """Multi-head self-attention over the H*W tokens of a map (reference attention cost)."""

    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x.flatten(2).transpose(1, 2))
        q, k, v = self.qkv(t).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        y = self.proj(y.transpose(1, 2).reshape(b, h * w, c))
        return x + y.transpose(1, 2).reshape(b, c, h, w)


CLOCK = time.process_time  # CPU time of this process: robust to other processes loading the machine


def _time(fn, runs: int) -> float:
    start = CLOCK()
    for _ in range(runs):
        fn()
    return (CLOCK() - start) / runs


def measure(name: str, module: nn.Module, shape: tuple[int, ...], runs: int) -> dict:
    module.eval()
    x = torch.rand(shape)
    tracer = ShapeTracer(module)

    def plain() -> None:
        with torch.no_grad():
            module(x)

    def traced(record: bool) -> None:
        def fwd():
            with torch.no_grad():
                return module(x)
        r = traced_call(tracer, fwd, record_layers=record)
        assert r.ok, r.failure

    for _ in range(3):
        plain()
    n_modules = sum(1 for _ in module.modules())
    inner = max(1, int(0.05 / max(_time(plain, 1), 1e-6)))  # ~50 ms per sample
    p_ms, t_ms, l_ms = [], [], []
    for _ in range(runs):
        p_ms.append(_time(plain, inner) * 1e3)
        tracer.attach()  # what every configuration pays: no hooks until a call fails
        t_ms.append(_time(lambda: traced(False), inner) * 1e3)
        tracer.attach(persistent=True)  # --layers: hooks on for the whole sweep
        l_ms.append(_time(lambda: traced(True), inner) * 1e3)
        tracer.detach()
    p, t, lay = statistics.median(p_ms), statistics.median(t_ms), statistics.median(l_ms)
    return {"case": name, "shape": "x".join(map(str, shape)), "modules": n_modules, "plain_ms": p,
            "traced_ms": t, "layers_ms": lay, "overhead": t / p - 1, "overhead_layers": lay / p - 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time equals compute time)")
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of process CPU time")
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    a = ap.parse_args()
    global CLOCK
    if a.wall:
        CLOCK = time.perf_counter
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cases = [
        ("yolov8n backbone", v8n_backbone(), (1, 3, 640, 640)),
        ("yolov8n backbone", v8n_backbone(), (1, 3, 640, 480)),
        ("yolov8n backbone", v8n_backbone(), (1, 3, 320, 320)),
        ("C2f(64,64,n=1)", C2f(64, 64, 1, True), (1, 64, 20, 20)),
        ("TokenAttention(256)", TokenAttention(256), (1, 256, 20, 20)),
        ("TokenAttention(128)", TokenAttention(128), (1, 128, 40, 40)),
    ]
    try:
        from yoloblocks_cli.loading.yaml_model import build_model

        for size in ((1, 3, 640, 640), (1, 3, 640, 480)):
            cases.append(("yolov8n (full model)", build_model("yolov8n").model, size))
    except Exception as exc:  # noqa: BLE001 - the model builder may be absent
        print(f"(yolov8n skipped: {exc})")
    try:
        from blocks.registry import all_blocks

        for info in all_blocks():
            if info.family == "attention":
                mod = info.cls(*info.inspect_args(64, None), **info.default_kwargs)
                cases.append((info.name, mod, (1, 64, 20, 20)))
    except Exception as exc:  # noqa: BLE001 - the benchmark still reports the built-in cases
        print(f"(registry attention blocks skipped: {exc})")
    if a.quick:
        cases = [c for c in cases if c[2][-1] <= 320]
    clock = "wall clock" if a.wall else "process CPU time"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {clock}, "
          f"median of {a.runs} interleaved samples")
    print(f"{'case':24} {'input':>14} {'modules':>7} {'plain ms':>9} {'traced ms':>9} {'overhead':>9} "
          f"{'+layers ms':>10} {'overhead':>9}")
    for name, mod, shape in cases:
        r = measure(name, mod, shape, a.runs)
        print(f"{r['case']:24} {r['shape']:>14} {r['modules']:>7} {r['plain_ms']:9.2f} {r['traced_ms']:9.2f} "
              f"{r['overhead']:+9.1%} {r['layers_ms']:10.2f} {r['overhead_layers']:+9.1%}")


if __name__ == "__main__":
    main()
