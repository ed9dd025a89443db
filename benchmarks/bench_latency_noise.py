"""Does yb notice a busy machine? The same block timed as the machine is, then with busy processes beside it.

Usage:  PYTHONPATH=. python benchmarks/bench_latency_noise.py [--block C2f] [--size 64x80x80] [--busy 2]

For each condition ("as is", then "+N busy": N pure-Python spin loops started by this script
and stopped by their process ids afterwards) it runs, as a user would:

- ``yb inspect BLOCK --size SIZE --json`` (latency only: no memory pass, one FLOP counter) and
  prints median, the 95% interval, runs, why timing stopped, threads, and the verdict with
  its reasons;
- ``yb check`` on a two-target configuration with a latency budget (``max_latency_ratio``)
  and prints its exit code (0 pass, 1 fail, 3 inconclusive) and the verdict's message.

On a quiet machine the first condition should say ``quiet`` and the second ``noisy``: the
verdict flips. On a machine that is already shared, both may say ``noisy``; the load
average printed with each condition says why. Timing figures taken here are only as good
as the machine: read the verdict first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
reference = "c2f"
rounds = 20
warmup = 2

[blocks.c2f]
block = "C2f"
size = "64x40x40"

[blocks.sppf]
block = "SPPF"
size = "64x40x40"
max_latency_ratio = 5.0
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _yb(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yoloblocks_cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=_env(), timeout=900)


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "n/a"


def _inspect(block: str, size: str) -> dict:
    r = _yb("inspect", block, "--size", size, "--json", "--no-memory", "--counter", "torch")
    if r.returncode != 0:
        raise SystemExit(f"yb inspect failed ({r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout)["latency_ms"]


def _check(workdir: Path) -> tuple[int, str]:
    (workdir / "yb.toml").write_text(CHECK)
    r = _yb("check", "--json", cwd=workdir)
    try:
        report = json.loads(r.stdout)
    except json.JSONDecodeError:
        return r.returncode, r.stderr.strip()
    msg = next((c["message"] for c in report["checks"] if c["check"] == "max_latency_ratio"), "")
    return r.returncode, msg


def _row(name: str, load: str, lat: dict, check: tuple[int, str]) -> None:
    c = lat.get("contention") or {}
    ci = lat.get("ci") or {}
    print(f"\n== {name} (load average before: {load}; after: {_load()})")
    print(f"yb inspect: {lat['median']:.3f} ms median, 95% CI [{ci.get('low', float('nan')):.3f}, "
          f"{ci.get('high', float('nan')):.3f}], IQR {lat['iqr']:.3f} ms, {lat['runs']} runs ({lat.get('stopped')}), "
          f"{lat.get('threads')} threads")
    print(f"  verdict: {c.get('verdict')}" + (f": {'; '.join(c.get('reasons', []))}" if c.get("reasons") else ""))
    print(f"  evidence: load {c.get('load_avg_1m')} on {c.get('cpus')} CPUs, {c.get('other_busy_cpus')} CPUs busy "
          f"elsewhere, CPU/wall {c.get('cpu_per_wall')}, run-queue wait {c.get('runqueue_wait_pct')}%, "
          f"steal {c.get('steal_pct')}%")
    print(f"yb check: exit {check[0]}: {check[1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", default="C2f")
    ap.add_argument("--size", default="64x80x80")
    ap.add_argument("--busy", type=int, default=2, help="busy processes started beside the second run")
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; {a.block} at {a.size}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        load = _load()
        _row("as is", load, _inspect(a.block, a.size), _check(work))
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
        try:
            time.sleep(2.0)  # let them show up in the CPU counters
            load = _load()
            _row(f"+{a.busy} busy processes", load, _inspect(a.block, a.size), _check(work))
        finally:
            for p in spinners:  # only the processes this script started, by their ids
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
