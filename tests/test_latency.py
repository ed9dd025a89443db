"""Latency you can trust: statistics, the quiet/noisy verdict and inconclusive budgets, all with an
injected clock and injected load readings (deterministic on any machine, busy or not)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from yoloblocks_cli.checks.budget import evaluate_budgets, latency_ratio_finding
from yoloblocks_cli.checks.config import Budgets
from yoloblocks_cli.measuring import contention, stats
from yoloblocks_cli.measuring.bench import time_forward
from yoloblocks_cli.measuring.contention import CpuTimes, Reading, assess, choose_threads
from yoloblocks_cli.measuring.measure import LatencyStats, Measurement

# ----------------------------------------------------------------------------- statistics


def test_median_ci_uses_binomial_order_statistics():
    xs = [float(v) for v in range(1, 21)]  # 20 runs: ranks 6 and 15, coverage 1 - 2 P(B(20, .5) <= 5)
    ci = stats.median_ci(list(reversed(xs)))
    assert (ci.low, ci.high) == (6.0, 15.0)
    assert ci.level == pytest.approx(1 - 2 * sum(math.comb(20, k) for k in range(6)) / 2 ** 20)
    assert round(ci.level, 4) == 0.9586
    ci100 = stats.median_ci([float(v) for v in range(1, 101)])
    assert (ci100.low, ci100.high) == (40.0, 61.0)  # the textbook ranks for n = 100


def test_median_ci_below_six_runs_is_min_max_with_its_true_coverage():
    ci = stats.median_ci([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (ci.low, ci.high, ci.level) == (1.0, 5.0, 1 - 2 / 32)  # 93.75%: no 95% interval exists at n = 5
    ci6 = stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert (ci6.low, ci6.high, ci6.level) == (1.0, 6.0, 1 - 2 / 64)


def test_summary_median_iqr_and_relative_halfwidth():
    s = stats.summarize([10.0, 10.0, 10.0, 11.0, 9.0, 10.0, 10.0, 40.0])
    assert (s.median, s.runs) == (10.0, 8)
    assert s.iqr == pytest.approx(0.25)  # inclusive quartiles 10 - 9.75
    assert (s.ci.low, s.ci.high, s.ci.level) == (9.0, 40.0, 1 - 2 / 256)  # n = 8: ranks 1 and 8 (rank 2: 93%)
    assert s.rel_ci == pytest.approx(3.0)  # one slow run out of 8 and the median is known only to +300%


def test_converged_needs_a_full_level_interval_within_target():
    assert not stats.converged([5.0] * 5, 0.05)  # interval [5, 5] but only 93.75% coverage
    assert stats.converged([5.0] * 6, 0.05)
    assert not stats.converged([5.0, 5.0, 5.0, 5.0, 5.0, 6.0], 0.05)  # +20% side
    assert stats.converged([5.0, 5.0, 5.0, 5.0, 5.0, 5.2], 0.05)


def test_warmup_settles_when_three_passes_agree_after_the_cold_one():
    assert not stats.warmup_settled([50.0, 10.0, 10.0])
    assert stats.warmup_settled([50.0, 10.0, 10.5, 10.9])
    assert not stats.warmup_settled([50.0, 10.0, 10.0, 12.0])


def test_ratio_ci_is_paired_seeded_and_judged_against_a_limit():
    drift = [1.0, 1.0, 3.0, 3.0, 1.0, 5.0, 1.0, 2.0, 1.0, 1.0, 4.0, 1.0]  # machine speed per round
    a = [2.0 * d for d in drift]
    b = list(drift)
    ci = stats.ratio_ci(a, b)
    assert (ci.low, ci.high) == (2.0, 2.0)  # drift common to a round cancels: exactly 2x in every resample
    wobble = [2.0 * d * (1.1 if i % 3 == 0 else 0.95) for i, d in enumerate(drift)]
    ci2 = stats.ratio_ci(wobble, b)
    assert ci2 == stats.ratio_ci(wobble, b)  # seeded
    assert ci2.low < 2.0 < ci2.high and (ci2.low, ci2.high) == pytest.approx((1.9, 2.2))
    assert stats.judge(ci2, 2.5) == "pass" and stats.judge(ci2, 1.5) == "fail"
    assert stats.judge(ci2, 2.0) == "inconclusive"
    assert stats.ratio_ci([1.0, 2.0], [1.0, 2.0]) == stats.Interval(1.0, 1.0, 0.95, stats.BOOTSTRAP_METHOD)


# ----------------------------------------------------------------------------- contention

CPU0 = CpuTimes(busy=1000.0, idle=5000.0, steal=0.0)


def _readings(*, wall=2.0, own=2.0, others=0.0, steal=0.0, load=0.5, wait=0.0) -> tuple[Reading, Reading]:
    """Two readings ``wall`` seconds apart: this process used ``own`` CPU seconds, the rest ``others`` CPUs."""
    busy = own + others * wall
    idle = max(0.0, 2 * wall - busy)
    after = CpuTimes(CPU0.busy + busy, CPU0.idle + idle, CPU0.steal + steal)
    return (Reading(100.0, 10.0, CPU0, load, 1.0),
            Reading(100.0 + wall, 10.0 + own, after, load, 1.0 + wait))


def test_quiet_machine_is_quiet():
    c = assess(*_readings(), threads=2, cpus=2, spread=0.03, affinity=(0, 1))
    assert (c.verdict, c.reasons) == ("quiet", ())
    assert c.other_busy_cpus == 0.0 and c.busy_processes == 1 and c.oversubscribed is False
    assert c.cpu_per_wall == 1.0 and c.runqueue_wait_pct == 0.0
    j = c.as_json()
    assert (j["verdict"], j["affinity"], j["threads"], j["cpus"]) == ("quiet", [0, 1], 2, 2)


def test_two_busy_processes_beside_two_threads_is_noisy_with_evidence():
    c = assess(*_readings(own=1.2, others=1.8, load=4.1, wait=0.8), threads=2, cpus=2, spread=0.4)
    assert c.verdict == "noisy"
    assert c.reasons == (
        "load average 4.10 on 2 CPUs",
        "2 torch threads x 3 busy processes > 2 CPUs (1.8 CPUs busy elsewhere)",
        "process CPU time only 0.60x wall time",
        "threads waited for a CPU 40% of the time",
        "runs spread 40% (IQR/median)",
    )
    assert c.oversubscribed and c.busy_processes == 3 and c.other_busy_cpus == pytest.approx(1.8)


def test_one_thread_beside_one_busy_process_fits_two_cpus():
    c = assess(*_readings(own=2.0, others=1.0, load=2.0), threads=1, cpus=2)
    assert c.verdict == "quiet" and c.busy_processes == 2 and not c.oversubscribed


def test_steal_and_cuda():
    c = assess(*_readings(steal=0.4), threads=1, cpus=2)
    assert c.reasons == ("CPU steal 9.1%",) and c.steal_pct == pytest.approx(100 * 0.4 / 4.4)
    # on CUDA the host sleeps in synchronize: low CPU/wall is not evidence
    assert assess(*_readings(own=0.2), threads=1, cpus=2, cuda=True).verdict == "quiet"
    assert assess(*_readings(own=0.2), threads=1, cpus=2).reasons == ("process CPU time only 0.10x wall time",)


def test_missing_readings_are_not_evidence():
    c = assess(Reading(0.0, 0.0), Reading(1.0, 1.0), threads=4, cpus=4)
    assert c.verdict == "quiet" and c.other_busy_cpus is None and c.load_avg_1m is None


def test_thread_choice_leaves_busy_cpus_alone_and_threads_wins():
    assert choose_threads(3, 2, 2, 1.8) == contention.ThreadChoice(3, "--threads")
    assert choose_threads(None, 2, 2, 1.7).threads == 1
    assert choose_threads(None, 2, 2, 0.2) == contention.ThreadChoice(2, "torch default")
    assert choose_threads(None, 8, 8, 20.0).threads == 1
    assert choose_threads(None, 2, 2, None).threads == 2


def test_proc_stat_parsing():
    text = "cpu  100 20 30 400 50 6 4 10 0 0\ncpu0 1 2 3 4\n"
    assert contention._cpu_times(text, 100.0) == CpuTimes(busy=1.6, idle=4.5, steal=0.1)


# ----------------------------------------------------------------------------- the timer


class FakeClock:
    """Time advances only when the block runs, by the next scripted duration (ms)."""

    def __init__(self, durations_ms):
        self.now = 0.0
        self.durations = list(durations_ms)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def run(self) -> None:
        d = self.durations[self.calls] if self.calls < len(self.durations) else self.durations[-1]
        self.calls += 1
        self.now += d / 1000.0


class Scripted(nn.Module):
    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock

    def forward(self, x):
        self.clock.run()
        return x


def _quiet_reader():
    return Reading(0.0, 0.0, None, 0.1, None)


def test_adaptive_timing_warms_up_until_settled_then_stops_at_the_target():
    clock = FakeClock([50.0, 12.0, 10.0, 10.0, 10.0] + [10.0] * 200)
    lat = time_forward(Scripted(clock), torch.zeros(2, 3), torch.device("cpu"), clock=clock,
                       reader=_quiet_reader, cpus=2)
    assert (lat.warmup_runs, lat.warmup_settled) == (5, True)  # 50 (cold), 12, then 10, 10, 10 agree
    # adaptive: checked from 10 runs once 0.25 s have passed (25 runs of 10 ms); the interval is [10, 10]
    assert (lat.runs, lat.stopped) == (25, "converged")
    assert (lat.median_ms, lat.ci.low, lat.ci.high) == pytest.approx((10.0, 10.0, 10.0)) and lat.ci.level >= 0.95
    j = lat.as_json()
    assert (j["median"], j["iqr"], j["runs"]) == (10.0, 0.0, 25)  # today's fields stay
    assert j["ci"]["low"] == 10.0 and j["stopped"] == "converged" and j["target_rel"] == 0.05
    assert j["contention"]["verdict"] == "quiet" and j["noisy"] is False


def test_runs_n_is_exactly_n_even_past_the_time_budget():
    """`yb profile yolov8n` printed 4 runs with --runs 10: the 3 s cap cut min_runs = max_runs = 10 short."""
    clock = FakeClock([1100.0])
    lat = time_forward(Scripted(clock), torch.zeros(1, 3), torch.device("cpu"), warmup=0, runs=10,
                       max_seconds=3.0, clock=clock, reader=_quiet_reader, cpus=2)
    assert (lat.runs, lat.stopped, clock.calls, lat.target_rel) == (10, "runs", 10, None)


def test_a_noisy_series_stops_at_the_time_budget_with_a_wide_interval():
    clock = FakeClock([10.0, 10.0, 10.0, 10.0] + [10.0, 30.0, 10.0, 50.0, 12.0] * 100)
    lat = time_forward(Scripted(clock), torch.zeros(1, 3), torch.device("cpu"), max_seconds=1.0, clock=clock,
                       reader=_quiet_reader, cpus=2)
    assert lat.stopped == "time budget" and lat.runs == 45  # 9 rounds of 112 ms: >= 1 s after 45 runs
    assert lat.ci.rel_halfwidth(lat.median_ms) > 0.05
    assert lat.contention.reasons == ("runs spread 167% (IQR/median)",)


def test_timer_reports_the_injected_load():
    before, after = _readings(own=0.5, others=1.9, load=5.0)
    seq = iter([before, after])
    clock = FakeClock([1.0])
    lat = time_forward(Scripted(clock), torch.zeros(1, 3), torch.device("cpu"), warmup=0, runs=6, clock=clock,
                       reader=lambda: next(seq), cpus=2)
    assert lat.noisy and lat.contention.load_avg_1m == 5.0
    assert lat.as_json()["contention"]["reasons"][0] == "load average 5.00 on 2 CPUs"


# ----------------------------------------------------------------------------- CUDA paths (mocked)


def _mock_cuda(monkeypatch, log: list, ms=(9.0, 2.5, 2.5, 2.5, 2.5)):
    times = iter(list(ms) + [2.5] * 1000)

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self, stream=None):
            log.append("record")

        def elapsed_time(self, other):
            log.append("elapsed_time")
            return next(times)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("synchronize"))


def test_cuda_adaptive_warmup_and_runs_are_event_timed_after_synchronize(monkeypatch):
    log: list[str] = []
    _mock_cuda(monkeypatch, log)

    class Fwd(nn.Module):
        def forward(self, x):
            log.append("forward")
            return x

    lat = time_forward(Fwd(), torch.zeros(2, 2), torch.device("cuda"), min_runs=2, min_seconds=0.0,
                       reader=_quiet_reader, cpus=2)
    one = ["record", "forward", "record", "synchronize", "elapsed_time"]
    assert (lat.warmup_runs, lat.runs, lat.stopped, lat.method) == (4, 6, "converged", "cuda-events")
    assert log == one * 4 + ["synchronize"] + one * 6  # every pass waits for its queued work
    assert lat.median_ms == 2.5 and lat.contention.cpu_per_wall is None  # wall = 0 with the injected reader


def test_cuda_exact_runs(monkeypatch):
    log: list[str] = []
    _mock_cuda(monkeypatch, log)
    lat = time_forward(nn.Identity(), torch.zeros(2, 2), torch.device("cuda"), warmup=1, runs=3,
                       reader=_quiet_reader, cpus=2)
    assert lat.runs == 3 and log.count("elapsed_time") == 3 and log[0] == "synchronize"


# ----------------------------------------------------------------------------- yb check


def _m(ratio, ci=None, noisy=False) -> Measurement:
    noise = assess(*_readings(own=0.4, others=1.9, load=6.0), threads=2, cpus=2) if noisy else \
        assess(*_readings(), threads=2, cpus=2)
    lat = LatencyStats(1.0, 0.1, 15, contention=noise, seconds=0.25)
    return Measurement("att", "block", "Att(64)", [1, 64, 8, 8], 10, latency=lat, latency_ratio=ratio,
                       reference="c2f", latency_ratio_ci=ci)


def _ci(low, high):
    return stats.Interval(low, high, 0.95, stats.BOOTSTRAP_METHOD)


def test_latency_budget_pass_fail_and_inconclusive():
    ok = latency_ratio_finding(_m(1.2, _ci(1.1, 1.3)), 1.5)
    assert (ok.status, ok.message) == ("pass", "latency 1.20x c2f <= 1.5x (95% CI 1.10-1.30)")
    assert ok.seconds == 0.25  # the JUnit time: this target's timed runs
    bad = latency_ratio_finding(_m(1.8, _ci(1.6, 2.0)), 1.5)
    assert (bad.ok, bad.status) == (False, "FAIL")
    straddle = latency_ratio_finding(_m(1.45, _ci(1.3, 1.6)), 1.5)
    assert (straddle.ok, straddle.inconclusive, straddle.status) == (True, True, "inconclusive")
    assert straddle.message == ("latency 1.45x c2f vs max_latency_ratio 1.5x (95% CI 1.30-1.60): inconclusive, "
                                "the interval straddles the limit (more rounds narrow it)")


def test_latency_budget_on_a_noisy_machine_is_inconclusive_unless_the_user_opts_into_failing():
    (f,) = evaluate_budgets(_m(0.02, _ci(0.01, 0.03), noisy=True), Budgets(max_latency_ratio=2.0))
    assert (f.ok, f.status) == (True, "inconclusive")
    assert "inconclusive, measured on a noisy machine (load average 6.00 on 2 CPUs; 2 torch threads x 3 " in f.message
    (g,) = evaluate_budgets(_m(0.02, _ci(0.01, 0.03), noisy=True), Budgets(max_latency_ratio=2.0),
                            fail_inconclusive=True)
    assert (g.ok, g.status, g.as_json()["status"]) == (False, "FAIL", "fail")


CONFIG = """
reference = "c2f"
rounds = 8
warmup = 1

[blocks.c2f]
block = "C2f"
size = "16x8x8"
sweep = ["16x8x8"]
max_params = 2_000

[blocks.c3]
block = "C3"
size = "16x8x8"
max_latency_ratio = 50
"""


@pytest.fixture
def machine(monkeypatch):
    """Inject the load readings of the interleaved rounds: machine("quiet") or machine("noisy")."""
    def set_to(kind: str) -> None:
        before, after = _readings() if kind == "quiet" else _readings(own=0.4, others=1.9, load=6.0)
        seq = iter([before, after])
        monkeypatch.setattr(contention, "read", lambda clock=None: next(seq))
        monkeypatch.setattr(contention, "other_busy_now", lambda seconds=0.2: 0.0)
        monkeypatch.setattr("yoloblocks_cli.measuring.rounds.verdict_of",
                            lambda b, a, samples, cuda: assess(b, a, threads=2, cpus=2))

    return set_to


def _check(tmp_path: Path, capsys, *args: str):
    from tests.test_check import yb_in

    (tmp_path / "yb.toml").write_text(CONFIG)
    return yb_in(tmp_path, capsys, "check", *args)


def test_check_exit_3_when_noisy_1_with_fail_inconclusive_0_when_quiet(tmp_path, capsys, machine, monkeypatch):
    monkeypatch.delenv("YB_IGNORE_NOISE", raising=False)
    machine("noisy")
    code, out, _ = _check(tmp_path, capsys, "--junit", "j.xml")
    assert code == 3, out
    assert "c3     │ max_latency_ratio │ inconclusive" in out or "inconclusive" in out.split("max_latency_ratio")[1]
    assert "2 passed, 0 failed, 1 inconclusive" in out
    assert "warning: latency timed on a noisy machine: load average 6.00 on 2 CPUs" in out
    junit = (tmp_path / "j.xml").read_text()
    assert 'tests="3" failures="0" errors="0" skipped="1"' in junit
    import xml.etree.ElementTree as ET

    times = {tc.get("name"): float(tc.get("time")) for tc in ET.parse(tmp_path / "j.xml").iter("testcase")}
    assert set(times) == {"max_params", "sweep 1x16x8x8", "max_latency_ratio"}
    assert all(t > 0 for t in times.values()), times  # real times, not 0.0000

    machine("noisy")
    code, out, _ = _check(tmp_path, capsys, "--fail-inconclusive", "--json")
    report = json.loads(out)
    assert code == 1 and report["failed"] == 1 and report["inconclusive"] == 0
    c3 = next(t for t in report["targets"] if t["name"] == "c3")
    assert c3["latency_ms"]["noisy"] is True and c3["latency_ms"]["contention"]["verdict"] == "noisy"
    assert set(c3["latency_ratio_ci"]) == {"low", "high", "level", "method"}

    machine("quiet")
    code, out, _ = _check(tmp_path, capsys, "--json")
    report = json.loads(out)
    c3 = next(t for t in report["targets"] if t["name"] == "c3")
    lo, hi = c3["latency_ratio_ci"]["low"], c3["latency_ratio_ci"]["high"]
    assert lo <= c3["latency_ratio"] <= hi
    verdict = next(c for c in report["checks"] if c["check"] == "max_latency_ratio")["status"]
    assert verdict == ("pass" if hi <= 50 else "fail" if lo > 50 else "inconclusive")
    assert code == {"pass": 0, "fail": 1, "inconclusive": 3}[verdict]


# ----------------------------------------------------------------------------- interleaved rounds


def test_rounds_adaptive_until_medians_and_ratios_settle_else_exact():
    from yoloblocks_cli.measuring import rounds

    order: list[str] = []

    def runner(name: str, values: list[float]):
        it = iter(values)
        return lambda: (order.append(name), next(it))[1]

    steady = [runner("a", [2.0] * 100), runner("b", [1.0] * 100)]
    pairs = rounds.ref_pairs(["a", "b"], lambda n: "b")
    assert pairs == [(0, 1)]
    s = rounds.timed_rounds(steady, None, 0, pairs, clock=lambda: 0.0)
    assert [len(x) for x in s] == [10, 10]  # settled at the first check (min_rounds)
    assert order[:4] == ["a", "b", "b", "a"]  # the start rotates every round

    wobbly = [runner("a", [2.0, 3.0, 2.0, 5.0] * 50), runner("b", [1.0] * 200)]
    clock = iter(float(t) for t in range(1000))  # one "second" per clock reading
    s = rounds.timed_rounds(wobbly, None, 0, pairs, max_seconds=20.0, clock=lambda: next(clock))
    assert len(s[0]) == 20  # never within +-5%: stopped by the time budget

    exact = [runner("a", [2.0] * 10), runner("b", [1.0] * 10)]
    assert [len(x) for x in rounds.timed_rounds(exact, 3, 0, pairs)] == [3, 3]


def test_cpu_readings_cover_this_process_cpus_only():
    text = ("cpu  400 0 0 400 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 100 0 0 100 0 0 0 0\n"
            "cpu2 200 0 0 0 0 0 0 0\ncpu3 0 0 0 200 0 0 0 0\n")
    assert contention._cpu_times(text, 100.0, frozenset({0, 3})) == CpuTimes(busy=1.0, idle=3.0, steal=0.0)
    assert contention._cpu_times(text, 100.0, frozenset({7})) == CpuTimes(busy=4.0, idle=4.0, steal=0.0)
    assert contention._cpu_times(text, 100.0) == CpuTimes(busy=4.0, idle=4.0, steal=0.0)


def test_load_average_is_held_against_the_whole_machine():
    before, after = _readings(load=5.0)
    assert assess(before, after, threads=2, cpus=2).reasons == ("load average 5.00 on 2 CPUs",)
    assert assess(before, after, threads=2, cpus=2, online=16).verdict == "quiet"  # 2 of 16 CPUs are ours


def test_ignore_noise_judges_by_the_interval(monkeypatch):
    monkeypatch.setenv("YB_IGNORE_NOISE", "1")
    (f,) = evaluate_budgets(_m(0.02, _ci(0.01, 0.03), noisy=True), Budgets(max_latency_ratio=2.0))
    assert (f.ok, f.status) == (True, "pass")
    monkeypatch.setenv("YB_IGNORE_NOISE", "0")
    (g,) = evaluate_budgets(_m(0.02, _ci(0.01, 0.03), noisy=True), Budgets(max_latency_ratio=2.0))
    assert g.status == "inconclusive"
