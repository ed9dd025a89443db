"""Latency and peak memory: known allocation patterns on CPU, call order on CUDA (mocked), real CUDA if present."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import requires_cuda
from yoloblocks_cli.measuring import bench
from yoloblocks_cli.measuring.bench import CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, peak_memory, time_forward

MIB = 1 << 20


class AllocatesOneMiB(nn.Module):
    """Allocates a 1 MiB scratch tensor, then returns something tiny."""

    def forward(self, x):
        scratch = torch.ones(MIB // 4)  # float32: exactly 1 MiB
        return x * scratch[0]


def test_cpu_peak_sees_a_1mib_allocation():
    x = torch.randn(1, 4, 8, 8)  # 1 KiB input, not counted (it existed before the pass)
    mem = peak_memory(AllocatesOneMiB(), x, torch.device("cpu"))
    assert mem.method == CPU_MEMORY_METHOD
    assert MIB <= mem.peak_bytes <= MIB + 4096  # the scratch, the 1 KiB output, a scalar


def test_cpu_peak_does_not_count_parameters_or_the_input():
    lin = nn.Linear(512, 512)  # 1 MiB of weights, seen through a view (aten.t) inside F.linear
    mem = peak_memory(lin, torch.randn(2, 512), torch.device("cpu"))
    assert mem.peak_bytes == 2 * 512 * 4  # only the output


def test_cpu_peak_in_train_mode_counts_gradients():
    lin = nn.Linear(256, 256)
    mem = peak_memory(lin, torch.randn(4, 256), torch.device("cpu"), train=True)
    param_bytes = (256 * 256 + 256) * 4
    assert mem.peak_bytes >= param_bytes  # weight and bias gradients
    assert lin.weight.grad is None  # measured on a copy


class ViewsAPlainTensorAttribute(nn.Module):
    """Holds a tensor that is neither parameter nor buffer (like a head's strides) and reads
    it through a view: that tensor existed before the pass and is not the pass's memory."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.ones(MIB // 4)

    def forward(self, x):
        return x + self.table[:1]


def test_cpu_peak_ignores_views_of_tensors_the_pass_did_not_make():
    x = torch.randn(16)
    mem = peak_memory(ViewsAPlainTensorAttribute(), x, torch.device("cpu"))
    assert mem.peak_bytes == 16 * 4  # the output only; the 1 MiB table was counted before (a view of it)


def test_armed_tracker_counts_only_the_module_forward():
    """Work around the forward (set-up before it, a result kept after it) is not counted."""
    m = AllocatesOneMiB()
    x = torch.randn(1, 4, 8, 8)
    tracker = bench.StorageTracker()
    tracker.remember_existing(x)

    def around():
        before = torch.zeros(4 * MIB // 4)  # 4 MiB of set-up, alive through the forward
        out = m(x)
        after = torch.zeros(8 * MIB // 4)  # 8 MiB made after it
        return before, out, after

    with torch.no_grad(), tracker.armed_within(m):
        kept = around()
    assert tracker.passes == 1
    assert tracker.peak == peak_memory(m, x, torch.device("cpu")).peak_bytes
    assert MIB <= tracker.peak <= MIB + 4096
    assert list(tracker.live.values()) == [1024]  # the output, while the caller holds it
    del kept
    assert not tracker.live  # the forward left nothing else behind


def test_armed_tracker_sees_what_a_first_forward_leaves_behind():
    class CachesOnFirstCall(nn.Module):
        def forward(self, x):
            if not hasattr(self, "grid"):
                self.grid = torch.arange(1000.0)
            return x + self.grid[0]

    m, x = CachesOnFirstCall(), torch.randn(8)
    tracker = bench.StorageTracker()
    with torch.no_grad(), tracker.armed_within(m):
        m(x)
    assert list(tracker.live.values()) == [4000]  # yb profile then measures a pass of its own


def test_time_forward_cpu_statistics():
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(torch.is_inference_mode_enabled())
            return x + 1

    lat = time_forward(Counting(), torch.randn(3, 2), torch.device("cpu"), warmup=2, runs=5)
    assert lat.runs == 5 and len(calls) == 5 + 2
    assert all(calls)  # eval passes run under inference_mode
    assert lat.method == "perf_counter"
    assert lat.images_per_s == pytest.approx(3 * 1000.0 / lat.median_ms)


def test_train_timing_runs_backward_in_train_mode():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            seen.append(self.training)
            return self.lin(x), self.lin(x) * 2  # a tuple output: both summed

    m = Probe().eval()
    lat = time_forward(m, torch.randn(2, 4), torch.device("cpu"), train=True, warmup=1, runs=2)
    assert lat.train and all(seen) and not m.training  # copy in train mode, the user's stays eval
    assert m.lin.weight.grad is None


class _Log:
    def __init__(self):
        self.events: list[str] = []


def _mock_cuda(monkeypatch, log: _Log, allocated=(1000, 5000)):
    class Event:
        count = 0

        def __init__(self, enable_timing=False):
            assert enable_timing
            Event.count += 1
            self.name = "start" if Event.count % 2 else "end"

        def record(self, stream=None):
            log.events.append(f"record:{self.name}")

        def elapsed_time(self, other):
            log.events.append("elapsed_time")
            return 2.5

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.events.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: (log.events.append("memory_allocated"),
                                                                           allocated[0])[1])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: log.events.append("reset_peak_memory_stats"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device=None: (log.events.append("max_memory_allocated"), allocated[1])[1])


class _Logged(nn.Module):
    def __init__(self, log: _Log):
        super().__init__()
        self.log = log

    def forward(self, x):
        self.log.events.append("forward")
        return x * 2


def test_cuda_timing_uses_events_after_synchronize(monkeypatch):
    log = _Log()
    _mock_cuda(monkeypatch, log)
    lat = time_forward(_Logged(log), torch.randn(4, 3), torch.device("cuda"), warmup=1, min_runs=2,
                       min_seconds=0.0, max_seconds=10.0)
    assert lat.method == "cuda-events" and lat.median_ms == 2.5 and lat.iqr_ms == 0.0
    # adaptive: the first n with a full 95% interval of the median is 6 (here [2.5, 2.5], within +-5%)
    assert lat.runs == 6 and lat.stopped == "converged" and lat.images_per_s == pytest.approx(4 * 1000 / 2.5)
    one_run = ["record:start", "forward", "record:end", "synchronize", "elapsed_time"]
    assert log.events == ["forward", "synchronize"] + one_run * 6  # warm-up, sync, then timed runs


def test_cuda_peak_memory_is_allocator_peak_minus_baseline(monkeypatch):
    log = _Log()
    _mock_cuda(monkeypatch, log, allocated=(1000, 5096))
    mem = peak_memory(_Logged(log), torch.randn(4, 3), torch.device("cuda"))
    assert mem.peak_bytes == 4096 and mem.method == CUDA_MEMORY_METHOD
    assert log.events == ["synchronize", "memory_allocated", "reset_peak_memory_stats", "forward",
                          "synchronize", "max_memory_allocated"]


def test_median_iqr():
    assert bench._median_iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 2.0)


@pytest.mark.cuda
@requires_cuda
def test_real_cuda_latency_and_memory():
    dev = torch.device("cuda")
    m = nn.Conv2d(16, 16, 3, padding=1).to(dev)
    x = torch.randn(2, 16, 64, 64, device=dev)
    lat = time_forward(m, x, dev, min_runs=5, max_seconds=2.0)
    assert lat.method == "cuda-events" and lat.median_ms > 0
    mem = peak_memory(m, x, dev)
    assert mem.peak_bytes >= 2 * 16 * 64 * 64 * 4  # at least the output
