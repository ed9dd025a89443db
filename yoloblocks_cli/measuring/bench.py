"""Latency and peak memory of one block or model, measured like a benchmark.

Latency: eval mode under ``torch.inference_mode()``, warm-up until consecutive passes agree,
then repeated runs until the median's confidence interval is within +-5% (or a time cap),
or exactly ``runs`` runs; median, IQR and interval in ms, and the machine's contention
verdict during the runs (docs/latency.md). CUDA runs are timed with CUDA events
after ``torch.cuda.synchronize()``, CPU runs with ``time.perf_counter``. ``train=True``
times forward + backward (of the sum of all outputs) in train mode, on a copy, so that
batch-norm statistics and gradients of the user's module are left alone.

Peak memory is measured, never estimated: the CUDA caching allocator's peak on CUDA, and on
CPU the peak of live tensor storage created during the pass, tracked at dispatch.
"""

from __future__ import annotations

import copy
import gc
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

CUDA_MEMORY_METHOD = "cuda-allocator-peak (torch.cuda.max_memory_allocated minus memory allocated before the pass)"
CPU_MEMORY_METHOD = "cpu-tensor-allocations (peak bytes of tensor storage alive during the pass, tracked at dispatch)"


@dataclass
class Latency:
    """Timing of repeated passes; ``images_per_s`` = batch / median.

    ``ci`` is the median's distribution-free interval (:mod:`yoloblocks_cli.measuring.stats`),
    ``stopped`` why timing ended ("converged", "time budget", "max runs", "runs" for an
    exact ``--runs``), ``contention`` the machine's verdict during the runs
    (:mod:`yoloblocks_cli.measuring.contention`).
    """

    median_ms: float
    iqr_ms: float
    runs: int
    images_per_s: float
    method: str = "perf_counter"
    train: bool = False
    ci: Any = None  # stats.Interval
    stopped: str = ""
    target_rel: float | None = None
    warmup_runs: int = 0
    warmup_settled: bool | None = None
    threads: int | None = None
    contention: Any = None  # contention.Contention

    @property
    def noisy(self) -> bool:
        return bool(self.contention is not None and self.contention.noisy)

    def as_json(self) -> dict[str, Any]:
        out = {"median": round(self.median_ms, 6), "iqr": round(self.iqr_ms, 6), "runs": self.runs,
               "images_per_s": round(self.images_per_s, 3), "method": self.method,
               "mode": "train forward+backward" if self.train else "eval forward (inference_mode)"}
        if self.ci is not None:
            out["ci"] = self.ci.as_json()
            out["ci_rel"] = round(self.ci.rel_halfwidth(self.median_ms), 4) if self.median_ms > 0 else None
        out["stopped"] = self.stopped
        out["target_rel"] = self.target_rel
        out["warmup"] = {"runs": self.warmup_runs, "settled": self.warmup_settled}
        out["threads"] = self.threads
        if self.contention is not None:
            out["contention"] = self.contention.as_json()
            out["noisy"] = self.contention.noisy
        return out


@dataclass
class Memory:
    """Peak bytes allocated during one pass, and how they were measured."""

    peak_bytes: int
    method: str

    def as_json(self) -> dict[str, Any]:
        return {"peak": int(self.peak_bytes), "method": self.method}


def _is_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device)).startswith("cuda")


def _flat_tensors(out: Any) -> list:
    import torch
    from torch.utils._pytree import tree_flatten

    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _batch(x: Any) -> int:
    first = x[0] if isinstance(x, (tuple, list)) else x
    return int(first.shape[0]) if getattr(first, "ndim", 0) else 1


def _call(module: Any, x: Any) -> Any:
    return module(*x) if isinstance(x, tuple) else module(x)


def make_step(module: Any, x: Any, train: bool = False) -> Callable[[], Any]:
    """One pass: an eval forward under inference_mode, or a train forward + backward."""
    import torch

    if not train:
        module.eval()

        def infer() -> Any:
            with torch.inference_mode():
                return _call(module, x)

        return infer

    module.train()

    def train_step() -> None:
        module.zero_grad(set_to_none=True)
        with torch.enable_grad():
            outs = [t for t in _flat_tensors(_call(module, x)) if t.is_floating_point() and t.requires_grad]
            if not outs:
                raise RuntimeError("no output requires grad: the block has nothing to back-propagate")
            torch.stack([t.float().sum() for t in outs]).sum().backward()

    return train_step


def time_forward(module: Any, x: Any, device: Any, *, train: bool = False, warmup: int | None = None,
                 min_runs: int = 10, min_seconds: float = 0.25, max_seconds: float = 3.0,
                 max_runs: int = 10_000, rel_iqr: float | None = None, runs: int | None = None,
                 target_rel: float = 0.05, level: float = 0.95, clock: Callable[[], float] = time.perf_counter,
                 reader: Callable[[], Any] | None = None, cpus: int | None = None) -> Latency:
    """Median, IQR and the median's interval of repeated passes.

    ``runs=N``: exactly N timed runs, whatever the time. Otherwise adaptive: after
    ``min_runs`` runs and ``min_seconds``, stop once the median's ``level`` interval is
    within +-``target_rel`` (or IQR/median <= ``rel_iqr`` when given); stop anyway at
    ``max_seconds`` (with at least 3 runs) or ``max_runs``. ``warmup=None`` warms up until
    three consecutive passes agree within 10% (at most a third of ``max_seconds``, 50
    passes); an integer is an exact count. ``reader`` takes the contention readings (default:
    this machine's ``/proc``); ``clock`` times CPU passes (tests inject both).
    """
    import torch

    from yoloblocks_cli.measuring import contention as cont
    from yoloblocks_cli.measuring import stats

    if train:
        module = copy.deepcopy(module)
    step = make_step(module, x, train)
    cuda = _is_cuda(device)
    read = reader or cont.read
    timed: Callable[[], float] = (lambda: _time_cuda(step, device)) if cuda else (lambda: _time_cpu(step, clock))
    warm_start = clock()
    warm: list[float] = []
    settled: bool | None = None
    if warmup is None:
        budget = max_seconds / 3.0
        while True:
            warm.append(timed())
            settled = stats.warmup_settled(warm)
            if settled or clock() - warm_start >= budget or len(warm) >= 50:
                break
    else:
        for _ in range(max(0, warmup)):
            step()
            warm.append(0.0)
            if clock() - warm_start > max_seconds:
                break  # one slow pass already warmed up: do not spend the whole budget warming
    if cuda:
        torch.cuda.synchronize(device)
    before = read()
    times: list[float] = []
    started = clock()
    next_check = max(2, min_runs)
    stopped = "runs"
    while True:
        times.append(timed())
        n = len(times)
        if runs is not None:
            if n >= runs:
                break
            continue
        elapsed = clock() - started
        if n >= max_runs:
            stopped = "max runs"
            break
        if elapsed >= max_seconds and n >= min(3, max_runs):
            stopped = "time budget"
            break
        if n >= min_runs and elapsed >= min_seconds and n >= next_check:
            next_check = max(n + 1, int(n * 1.1))
            med, iqr = stats.median_iqr(times)
            if stats.converged(times, target_rel, level) or (
                    rel_iqr is not None and (med <= 0 or iqr / med <= rel_iqr)):
                stopped = "converged"
                break
    after = read()
    summary = stats.summarize(times, level)
    med, iqr = summary.median, summary.iqr
    threads = int(torch.get_num_threads())
    verdict = cont.assess(before, after, threads=threads, cpus=cpus or cont.usable_cpus(), cuda=cuda,
                          spread=iqr / med if med > 0 else None, affinity=cont.affinity(),
                          online=cont.online_cpus())
    return Latency(med, iqr, len(times), _batch(x) * 1000.0 / med if med > 0 else float("inf"),
                   "cuda-events" if cuda else "perf_counter", train, summary.ci, stopped,
                   None if runs is not None else target_rel, len(warm), settled, threads, verdict)


def _time_cpu(step: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    step()
    return (clock() - t0) * 1000.0


def _time_cuda(step: Callable[[], Any], device: Any) -> float:
    """Milliseconds of one pass between two CUDA events (queued work is waited for)."""
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    step()
    end.record()
    torch.cuda.synchronize(device)
    return float(start.elapsed_time(end))


def _median_iqr(values: list[float]) -> tuple[float, float]:
    from yoloblocks_cli.measuring.stats import median_iqr

    return median_iqr(values)


def peak_memory(module: Any, x: Any, device: Any, train: bool = False) -> Memory:
    """Peak bytes allocated during one pass beyond what was allocated before it."""
    if train:
        module = copy.deepcopy(module)
    step = make_step(module, x, train)
    gc.collect()
    if _is_cuda(device):
        return _peak_cuda(step, device)
    return _peak_cpu(step, (x, *module.parameters(), *module.buffers()))


def _peak_cuda(step: Callable[[], Any], device: Any) -> Memory:
    import torch

    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - baseline
    del out
    return Memory(max(0, int(peak)), CUDA_MEMORY_METHOD)


class StorageTracker:
    """A dispatch mode that adds the bytes of every new tensor storage an op returns and
    subtracts them when the storage is freed; ``peak`` is the high-water mark.

    Storage the pass did not create (inputs, parameters) is not counted. Scratch memory a
    kernel allocates internally without returning it as a tensor is not seen.

    :meth:`armed_within` narrows counting to one module's forward, so the tracker can ride
    along a pass that does other work around that forward (``yb profile``'s counting pass).
    """

    def __init__(self) -> None:
        from yoloblocks_cli.measuring.dispatch_count import PlainDispatchMode

        tracker = self

        class _Mode(PlainDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._see(out, (args, kwargs))
                return out

        self.mode = _Mode()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.armed = True
        self.passes = 0  # armed forwards that ran to the end
        self._known: set[int] = set()

    def remember_existing(self, *objs: Any) -> None:
        """Storages that exist before the pass (never counted)."""
        for t in _flat_tensors(objs):
            self._known.add(t.untyped_storage().data_ptr())

    def _release(self, key: int, nbytes: int) -> None:
        if self.live.pop(key, None) is not None:
            self.current -= nbytes

    def _see(self, out: Any, inputs: Any = ()) -> None:
        outs = _flat_tensors(out)
        if not outs:
            return
        # a view or in-place result shares an input's storage: nothing new, whatever that input
        # is (a tensor attribute that is neither parameter nor buffer, e.g. a head's strides)
        given = {t.untyped_storage().data_ptr() for t in _flat_tensors(inputs)}
        for t in outs:
            storage = t.untyped_storage()
            key = id(storage)
            ptr = storage.data_ptr()
            if key in self.live or ptr in self._known or (ptr in given and ptr != 0) \
                    or storage.device.type == "meta":
                continue
            if not self.armed:  # made outside the measured forward: never counted, even when used inside it
                self._known.add(ptr)
                weakref.finalize(storage, self._known.discard, ptr)  # its address may be reused later
                continue
            nbytes = int(storage.nbytes())
            self.live[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._release, key, nbytes)

    @contextmanager
    def armed_within(self, module: Any) -> Iterator["StorageTracker"]:
        """Track while the mode is on, but count only during ``module``'s forward."""
        def arm(mod: Any, args: Any) -> None:
            self.armed = True

        def disarm(mod: Any, args: Any, out: Any) -> None:
            self.armed = False
            self.passes += 1

        self.armed = False
        handles = [module.register_forward_pre_hook(arm, prepend=True), module.register_forward_hook(disarm)]
        try:
            with self:
                yield self
        finally:
            for h in handles:
                h.remove()
            self.armed = True

    def __enter__(self) -> "StorageTracker":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _peak_cpu(step: Callable[[], Any], existing: tuple = ()) -> Memory:
    tracker = StorageTracker()
    tracker.remember_existing(*existing)
    with tracker:
        out = step()
    del out
    return Memory(tracker.peak, CPU_MEMORY_METHOD)
