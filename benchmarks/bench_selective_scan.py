"""Benchmark: chunked PyTorch selective scan vs a per-step loop, forward and backward.

Default size is Mamba-YOLO-T's largest stage at 640x640: the first VSSBlock after
SimpleStem works at 160x160 with 32 channels; SS2D expands to 64 and scans K=4
directions, so the scan sees u (1, 256, 25600), A (256, 16), B/C (1, 4, 16, 25600).

The per-step loop (the textbook recurrence, fp32, autograd through the loop) is too slow
to run in full on a 2-core CPU, so it runs the first ``--loop-steps`` steps and its time
is scaled by L / steps (a loop's cost is linear in steps; stated in the output).

    PYTHONPATH=. python benchmarks/bench_selective_scan.py [--length 25600] [--loop-steps 2048]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from blocks.mamba.scan import selective_scan


def loop_scan(u, delta, A, B, C, D, delta_bias):
    """Per-step reference loop (what a CPU fallback usually looks like), fp32, with autograd."""
    dt = F.softplus(delta + delta_bias[:, None])
    bsz, dim, length = u.shape
    rep = dim // B.shape[1]
    Bx = B.repeat_interleave(rep, 1)
    Cx = C.repeat_interleave(rep, 1)
    h = u.new_zeros(bsz, dim, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[:, :, None] * Bx[:, :, :, t]
        ys.append((h * Cx[:, :, :, t]).sum(-1))
    return torch.stack(ys, -1) + D[:, None] * u


def inputs(length: int, dim: int, nstate: int, groups: int, grad: bool):
    g = torch.Generator().manual_seed(0)
    t = lambda *s: torch.randn(*s, generator=g).requires_grad_(grad)  # noqa: E731
    A = (-torch.arange(1, nstate + 1, dtype=torch.float32).repeat(dim, 1)).requires_grad_(grad)
    return (t(1, dim, length), t(1, dim, length), A, t(1, groups, nstate, length),
            t(1, groups, nstate, length), t(dim), t(dim))


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` runs: on a shared machine the minimum is the least noisy figure."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=25600)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--nstate", type=int, default=16)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--loop-steps", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"u=(1,{a.dim},{a.length}) N={a.nstate} G={a.groups}")

    u, delta, A, B, C, D, bias = inputs(a.length, a.dim, a.nstate, a.groups, True)
    run = lambda: selective_scan(u, delta, A, B, C, D, None, bias, True)  # noqa: E731
    with torch.no_grad():
        fwd = timed(run, a.repeats)

    def fwd_bwd():
        for t in (u, delta, A, B, C, D, bias):
            t.grad = None
        run().sum().backward()

    fb = timed(fwd_bwd, a.repeats)

    steps = min(a.loop_steps, a.length)
    lu, ld, lA, lB, lC, lD, lb = inputs(steps, a.dim, a.nstate, a.groups, True)
    with torch.no_grad():
        loop_fwd = timed(lambda: loop_scan(lu, ld, lA, lB, lC, lD, lb), min(a.repeats, 2)) * a.length / steps

    def loop_fb():
        loop_scan(lu, ld, lA, lB, lC, lD, lb).sum().backward()

    loop_total = timed(loop_fb, min(a.repeats, 2)) * a.length / steps
    scale = "" if steps == a.length else f" (measured on {steps} steps, scaled x{a.length / steps:.1f})"
    # forward timed alone with no_grad; forward+backward timed separately (backward = difference)
    print(f"chunked scan : forward {fwd * 1e3:8.1f} ms   forward+backward {fb * 1e3:8.1f} ms")
    print(f"per-step loop: forward {loop_fwd * 1e3:8.1f} ms   forward+backward {loop_total * 1e3:8.1f} ms{scale}")
    print(f"speed-up     : forward {loop_fwd / fwd:6.1f}x     forward+backward {loop_total / fb:6.1f}x   "
          f"backward alone {(loop_total - loop_fwd) / max(fb - fwd, 1e-3):6.1f}x")


if __name__ == "__main__":
    main()
