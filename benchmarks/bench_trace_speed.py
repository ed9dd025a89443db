"""`yb trace` against `yb profile` / `yb inspect`: wall time, CPU time and peak RSS, interleaved.

The bars of docs/trace.md: `yb trace yolov8n` (defaults) at most 2.5x the wall time of
`yb profile yolov8n` in the same run, peak RSS under 1 GB; `yb trace MLLAttention --size
64x20x20` at most 2x `yb inspect MLLAttention --size 64x20x20 --no-latency`; `yb trace
yolov8x` under a minute.

Each command runs as its own process, as a user runs it (interpreter start, torch import
and model build included). Pairs are interleaved (trace, reference, trace, reference...)
so that a change in the machine's load hits both sides alike; the figures are medians.
Peak RSS is the child's own ``ru_maxrss`` (``os.wait4``), CPU time its user + system time.
The load average is printed before and after: on a shared machine, read the ratios, and
re-run on a quiet one for absolute times.

    PYTHONPATH=. python benchmarks/bench_trace_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

PAIRS = {
    "yolov8n": (["trace", "yolov8n"], ["profile", "yolov8n"]),
    "MLLAttention": (["trace", "MLLAttention", "--size", "64x20x20"],
                     ["inspect", "MLLAttention", "--size", "64x20x20", "--no-latency"]),
}
SINGLE = {"yolov8x": ["trace", "yolov8x"]}


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    rss_mb: float
    rc: int


def run(args: list[str], log: bool = True) -> Run:
    env = dict(os.environ, NO_COLOR="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "yoloblocks_cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    r = Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)
    if log:  # as it happens: a long run on a busy machine shows where it is
        print(f"  yb {' '.join(args)}: {r.wall:.2f} s wall, {r.cpu:.2f} s cpu, {r.rss_mb:.0f} MB, "
              f"exit {r.rc}, load {os.getloadavg()[0]:.1f}", flush=True)
    return r


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], help="names to leave out (yolov8n, MLLAttention, yolov8x)")
    opts = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs",
          flush=True)
    pairs = {k: v for k, v in PAIRS.items() if k not in opts.skip}
    results: dict[str, tuple[list[Run], list[Run]]] = {k: ([], []) for k in pairs}
    singles: dict[str, list[Run]] = {k: [] for k in SINGLE if k not in opts.skip}
    warm = next(iter(pairs.values()), None)
    if warm is not None:  # untimed: bytecode caches and the file cache, for both sides
        run(warm[1], log=False)
    for _ in range(opts.rounds):
        for name, (trace, ref) in pairs.items():
            results[name][0].append(run(trace))
            results[name][1].append(run(ref))
    for _ in range(opts.rounds):  # after the pairs: the longest run must not split them
        for name, args in SINGLE.items():
            if name in singles:
                singles[name].append(run(args))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"medians of {opts.rounds} interleaved rounds")
    print(f"{'case':<14} {'command':<58} {'wall s':>7} {'cpu s':>7} {'peak MB':>8} {'rc':>3}")
    for name, (tr, rf) in results.items():
        for label, runs in ((" ".join(PAIRS[name][0]), tr), (" ".join(PAIRS[name][1]), rf)):
            print(f"{name:<14} yb {label:<55} {median([r.wall for r in runs]):7.2f} "
                  f"{median([r.cpu for r in runs]):7.2f} {max(r.rss_mb for r in runs):8.0f} {runs[0].rc:3d}")
        ratio_wall = median([a.wall / b.wall for a, b in zip(tr, rf)])
        ratio_cpu = median([a.cpu / b.cpu for a, b in zip(tr, rf)])
        print(f"{name:<14} trace / reference: wall {ratio_wall:.2f}x, cpu {ratio_cpu:.2f}x (median of pair ratios)")
    for name, runs in singles.items():
        print(f"{name:<14} yb {' '.join(SINGLE[name]):<55} {median([r.wall for r in runs]):7.2f} "
              f"{median([r.cpu for r in runs]):7.2f} {max(r.rss_mb for r in runs):8.0f} {runs[0].rc:3d}")


if __name__ == "__main__":
    main()
