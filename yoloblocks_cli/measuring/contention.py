"""Is the machine quiet enough to time on? Readings before and after the runs, and a verdict.

Why: on a shared machine a block timed at 1 ms can print 390 ms with a small IQR (its
threads waited for a CPU the whole time) and nothing says so. The figures themselves cannot
tell; the system can. Each rule below is one piece of evidence; any one makes the verdict
``noisy`` and the reason is printed next to the latency and kept in the JSON.

Evidence (Linux ``/proc``; elsewhere the readings that exist are used):

- **load**: the 1-minute load average against the machine's CPUs; noisy when it is at least
  one runnable task more than the CPUs (``load1 >= cpus + 1``).
- **others**: CPU seconds the rest of the machine used on this process's CPUs (its affinity)
  during the runs (``/proc/stat`` busy time minus this process's CPU time), per second of
  wall time = busy CPUs beside us.
- **oversubscription**: torch threads x busy processes (us + others, rounded) > CPUs.
- **steal**: share of CPU time the hypervisor gave to other guests (``/proc/stat`` steal);
  noisy above 5%.
- **cpu/wall**: this process's CPU time over wall time during the runs; on CPU timing the
  timed thread never sleeps, so below 0.9 it was waiting for a CPU.
- **run-queue wait**: time this process's threads were runnable but not running
  (``/proc/self/task/*/schedstat``); noisy above 5% of the wall time.
- **spread**: IQR / median of the runs above 25% (pyperf's "the result may be unstable").

The pure function :func:`assess` takes two :class:`Reading` objects (tests inject them);
:func:`read` takes them from the system. :func:`choose_threads` picks a thread count that
leaves the busy CPUs alone (``--threads`` still wins).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

QUIET, NOISY = "quiet", "noisy"


@dataclass(frozen=True)
class Thresholds:
    load_over_cpus: float = 1.0  # load1 >= cpus + this
    steal: float = 0.05
    cpu_per_wall: float = 0.9
    runqueue_wait: float = 0.05
    spread: float = 0.25


@dataclass(frozen=True)
class CpuTimes:
    """System-wide CPU seconds from the ``cpu`` line of ``/proc/stat``."""

    busy: float  # user + nice + system + irq + softirq
    idle: float  # idle + iowait
    steal: float

    @property
    def total(self) -> float:
        return self.busy + self.idle + self.steal


@dataclass(frozen=True)
class Reading:
    """One snapshot; ``None`` where the system does not expose a reading."""

    wall: float  # seconds, monotonic
    process_cpu: float  # seconds of CPU used by this process (all threads)
    cpu: CpuTimes | None = None
    load1: float | None = None
    runqueue_wait: float | None = None  # seconds this process's threads waited for a CPU


@dataclass(frozen=True)
class Contention:
    """The verdict and the evidence behind it (``as_json`` is the ``contention`` object)."""

    verdict: str
    reasons: tuple[str, ...]
    cpus: int
    threads: int
    load_avg_1m: float | None = None
    other_busy_cpus: float | None = None
    busy_processes: int | None = None
    oversubscribed: bool | None = None
    steal_pct: float | None = None
    cpu_per_wall: float | None = None
    runqueue_wait_pct: float | None = None
    spread_pct: float | None = None
    wall_s: float = 0.0
    affinity: tuple[int, ...] = field(default_factory=tuple)

    @property
    def noisy(self) -> bool:
        return self.verdict == NOISY

    def as_json(self) -> dict[str, Any]:
        def r(v: float | None, nd: int = 3) -> float | None:
            return None if v is None else round(v, nd)

        return {"verdict": self.verdict, "reasons": list(self.reasons), "cpus": self.cpus,
                "affinity": list(self.affinity), "threads": self.threads, "load_avg_1m": r(self.load_avg_1m, 2),
                "other_busy_cpus": r(self.other_busy_cpus, 2), "busy_processes": self.busy_processes,
                "oversubscribed": self.oversubscribed, "steal_pct": r(self.steal_pct, 2),
                "cpu_per_wall": r(self.cpu_per_wall), "runqueue_wait_pct": r(self.runqueue_wait_pct, 2),
                "spread_pct": r(self.spread_pct, 2), "wall_s": r(self.wall_s)}

    def summary(self) -> str:
        """One line for the terminal: the verdict and its evidence."""
        if not self.noisy:
            bits = [f"load {self.load_avg_1m:.2f}/{self.cpus} CPUs" if self.load_avg_1m is not None else
                    f"{self.cpus} CPUs"]
            if self.other_busy_cpus is not None:
                bits.append(f"{self.other_busy_cpus:.1f} CPUs busy elsewhere")
            return "quiet: " + ", ".join(bits)
        return "noisy: " + "; ".join(self.reasons)


# ----------------------------------------------------------------------------- pure parts


def assess(before: Reading, after: Reading, *, threads: int, cpus: int, cuda: bool = False,
           spread: float | None = None, affinity: tuple[int, ...] = (), online: int | None = None,
           limits: Thresholds = Thresholds()) -> Contention:
    """The verdict for runs between two readings, made with ``threads`` torch threads on ``cpus`` CPUs
    (this process's affinity; the CPU readings cover those CPUs). The load average counts the
    whole machine, so it is held against the ``online`` CPUs (default ``cpus``).

    ``spread`` is IQR / median of the runs (or None). On CUDA the host waits in
    ``synchronize``, so CPU time against wall time says nothing and is not judged.
    """
    cpus = max(1, cpus)
    wall = max(0.0, after.wall - before.wall)
    own = max(0.0, after.process_cpu - before.process_cpu)
    reasons: list[str] = []
    load1 = after.load1
    machine = max(cpus, online or cpus)
    if load1 is not None and load1 >= machine + limits.load_over_cpus:
        reasons.append(f"load average {load1:.2f} on {machine} CPUs")
    others = busy = steal = None
    oversub = None
    if before.cpu is not None and after.cpu is not None and wall > 0:
        d_busy = after.cpu.busy - before.cpu.busy
        d_total = after.cpu.total - before.cpu.total
        others = max(0.0, (d_busy - own) / wall)
        busy = 1 + int(round(others))
        oversub = threads * busy > cpus
        if oversub:
            reasons.append(f"{threads} torch thread{'s' if threads != 1 else ''} x {busy} busy processes "
                           f"> {cpus} CPUs ({others:.1f} CPUs busy elsewhere)")
        if d_total > 0:
            steal = (after.cpu.steal - before.cpu.steal) / d_total
            if steal > limits.steal:
                reasons.append(f"CPU steal {100 * steal:.1f}%")
    ratio = own / wall if wall > 0 else None
    if ratio is not None and not cuda and ratio < limits.cpu_per_wall:
        reasons.append(f"process CPU time only {ratio:.2f}x wall time")
    wait = None
    if before.runqueue_wait is not None and after.runqueue_wait is not None and wall > 0:
        wait = max(0.0, after.runqueue_wait - before.runqueue_wait) / wall
        if wait > limits.runqueue_wait:
            reasons.append(f"threads waited for a CPU {100 * wait:.0f}% of the time")
    if spread is not None and spread > limits.spread:
        reasons.append(f"runs spread {100 * spread:.0f}% (IQR/median)")
    return Contention(NOISY if reasons else QUIET, tuple(reasons), cpus, threads, load1, others, busy, oversub,
                      None if steal is None else 100 * steal, ratio, None if wait is None else 100 * wait,
                      None if spread is None else 100 * spread, wall, tuple(affinity))


@dataclass(frozen=True)
class ThreadChoice:
    """The torch thread count used for timing, and why."""

    threads: int
    reason: str  # "--threads", "torch default", "fewer than torch's N: ..."

    def as_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "reason": self.reason}


def choose_threads(requested: int | None, torch_default: int, cpus: int, other_busy: float | None) -> ThreadChoice:
    """``--threads`` wins; otherwise torch's default, lowered so that we and the busy CPUs fit."""
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    if other_busy is None:
        return ThreadChoice(torch_default, "torch default (no load reading)")
    free = max(1, cpus - int(round(other_busy)))
    if free < torch_default:
        return ThreadChoice(free, f"{other_busy:.1f} of {cpus} CPUs busy elsewhere: {free} instead of torch's "
                                  f"{torch_default}")
    return ThreadChoice(torch_default, "torch default")


# ----------------------------------------------------------------------------- system readings


def _times(fields: list[str], hz: float) -> tuple[float, float, float]:
    v = [float(x) for x in fields]
    v += [0.0] * (8 - len(v))
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) / hz, (idle + iowait) / hz, steal / hz


def _cpu_times(text: str, hz: float, cpus: frozenset[int] | None = None) -> CpuTimes | None:
    """The CPUs in ``cpus`` (this process's affinity: in a container the other lines are other
    tenants' cores), else the whole machine (the aggregate ``cpu`` line)."""
    total, per = None, [0.0, 0.0, 0.0]
    seen = False
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("cpu"):
            continue
        if parts[0] == "cpu":
            total = _times(parts[1:], hz)
        elif cpus is not None and parts[0][3:].isdigit() and int(parts[0][3:]) in cpus:
            seen = True
            for k, v in enumerate(_times(parts[1:], hz)):
                per[k] += v
    if seen:
        return CpuTimes(*per)
    return CpuTimes(*total) if total is not None else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return None


def _runqueue_wait() -> float | None:
    """Seconds all threads of this process spent runnable but not running (schedstat field 2, ns)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    total, seen = 0, False
    for tid in tasks:
        text = _read(f"/proc/self/task/{tid}/schedstat")
        if text:
            parts = text.split()
            if len(parts) >= 2:
                total += int(parts[1])
                seen = True
    return total / 1e9 if seen else None


def read(clock: Callable[[], float] = time.perf_counter) -> Reading:
    """A snapshot of this machine now (fields the system does not expose are None)."""
    stat = _read("/proc/stat")
    try:
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        hz = 100.0
    try:
        load1 = os.getloadavg()[0]
    except (OSError, AttributeError):
        load1 = None
    cpus = frozenset(affinity())
    return Reading(clock(), time.process_time(), _cpu_times(stat, hz, cpus) if stat else None, load1,
                   _runqueue_wait())


def affinity() -> tuple[int, ...]:
    """The CPUs this process may run on."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    return max(1, len(affinity()))


def online_cpus() -> int:
    return max(1, os.cpu_count() or 1)


def noise_ignored() -> bool:
    """``YB_IGNORE_NOISE=1`` (or ``yb check --ignore-noise``): latency budgets are judged by their
    intervals even on a noisy machine; the verdict and the warning are still reported."""
    return os.environ.get("YB_IGNORE_NOISE", "").strip().lower() in ("1", "true", "yes")


def other_busy_now(seconds: float = 0.2, sleep: Callable[[float], None] = time.sleep) -> float | None:
    """CPUs busy elsewhere, from a short ``/proc/stat`` sample while this process sleeps."""
    a = read()
    sleep(seconds)
    b = read()
    if a.cpu is None or b.cpu is None or b.wall <= a.wall:
        return None
    return max(0.0, (b.cpu.busy - a.cpu.busy - (b.process_cpu - a.process_cpu)) / (b.wall - a.wall))


_CHOSEN: ThreadChoice | None = None


def apply_threads(requested: int | None = None) -> ThreadChoice:
    """Set torch's thread count for this process once (``--threads`` or the policy) and remember why."""
    global _CHOSEN
    import torch

    if requested is not None:
        _CHOSEN = choose_threads(requested, torch.get_num_threads(), usable_cpus(), None)
    elif _CHOSEN is None:
        _CHOSEN = choose_threads(None, torch.get_num_threads(), usable_cpus(), other_busy_now())
    torch.set_num_threads(_CHOSEN.threads)
    return _CHOSEN


def chosen() -> ThreadChoice | None:
    """The choice :func:`apply_threads` made in this process, if any."""
    return _CHOSEN
