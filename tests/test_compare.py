"""`yb compare`: exact Markdown for fake results, interleaved timing order, one real run."""

from __future__ import annotations

import json

import pytest

from yoloblocks_cli.checks.markdown import compare_markdown, compare_table, delta_pct, markdown_table
from yoloblocks_cli.measuring.measure import LatencyStats, Measurement, interleaved, summarize
from yoloblocks_cli.loading.targets import block_shape, is_model, model_shape

from test_check import yb_in


def _fake() -> list[Measurement]:
    a = Measurement("C2f", "block", "C2f(64, 64)", [1, 64, 40, 40], 29_056,
                    flops={"torch": 92_160_000, "ultralytics": 94_003_200, "fvcore": 93_900_800},
                    latency=LatencyStats(0.8, 0.05, 20), memory_peak=2 * 2**20, memory_method="m")
    b = Measurement("C3", "block", "C3(64, 64)", [1, 64, 40, 40], 18_816,
                    flops={"torch": 59_392_000, "ultralytics": None, "fvcore": 60_211_200},
                    latency=LatencyStats(1.2, 0.1, 20), memory_peak=None)
    c = Measurement("Big", "model", "big.yaml", [1, 3, 640, 640], 3_157_200,
                    flops={"torch": 8_745_000_000, "ultralytics": 8_900_000_000, "fvcore": 0},
                    latency=LatencyStats(150.0, 3.0, 20), memory_peak=300 * 2**20)
    return [a, b, c]


def test_markdown_table_is_exact():
    text = compare_markdown(_fake(), {"device": "cpu", "device_name": "cpu", "dtype": "fp32", "torch": "2.13.0"})
    assert text == (
        "| Target | Input | Params | GFLOPs (torch) | GFLOPs (ultralytics) | GFLOPs (fvcore) | Latency (ms) "
        "| Peak memory (MiB) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| C2f(64, 64) | 1x64x40x40 | 29,056 | 0.092 | 0.094 | 0.094 | 0.800 | 2.0 |\n"
        "| C3(64, 64) | 1x64x40x40 | 18,816 (-35.2%) | 0.059 (-35.6%) | n/a | 0.060 (-35.9%) | 1.20 (+50.0%) "
        "| n/a |\n"
        "| big.yaml | 1x3x640x640 | 3,157,200 (+10765.9%) | 8.74 (+9388.9%) | 8.90 (+9367.8%) "
        "| 0 (-100.0%) | 150.0 (+18650.0%) | 300.0 (+14900.0%) |\n"
        "\n"
        "FLOPs = 2 x MACs; latency: median of 20 interleaved runs; cpu, fp32, torch 2.13.0; "
        "deltas against C2f(64, 64).\n")


def test_columns_without_values_are_left_out():
    m = Measurement("a", "block", "A()", [1, 8, 4, 4], 10, flops={"torch": 100})
    headers, rows = compare_table([m, Measurement("b", "block", "B()", [1, 8, 4, 4], 0, flops={"torch": 0})])
    assert headers == ["Target", "Input", "Params", "GFLOPs (torch)"]
    assert rows == [["A()", "1x8x4x4", "10", "0.000000100"], ["B()", "1x8x4x4", "0 (-100.0%)", "0 (-100.0%)"]]


def test_delta_against_zero_or_missing_is_na():
    assert [delta_pct(1, 0), delta_pct(None, 1), delta_pct(1, None), delta_pct(3, 2)] == ["n/a", "n/a", "n/a",
                                                                                          "+50.0%"]


def test_markdown_escapes_pipes():
    assert markdown_table(["a", "b"], [["x|y", "1"]]) == "| a | b |\n| --- | --- |\n| x\\|y | 1 |"


def test_interleaving_rotates_the_starting_target():
    calls: list[str] = []

    def runner(name: str, ms: float):
        def run() -> float:
            calls.append(name)
            return ms
        return run

    samples = interleaved([runner("A", 1.0), runner("B", 2.0), runner("C", 3.0)], rounds=3, warmup=1)
    assert calls == ["A", "B", "C",  # warm-up
                     "A", "B", "C", "B", "C", "A", "C", "A", "B"]
    assert samples == [[1.0] * 3, [2.0] * 3, [3.0] * 3]


def test_summarize_median_and_iqr():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median_ms, s.iqr_ms, s.runs) == (3.0, 2.0, 5)


def test_sizes_for_blocks_and_models():
    assert block_shape("40x40", channels=64).dims == (1, 64, 40, 40)
    assert block_shape("32", channels=16, batch=2).dims == (2, 16, 32, 32)
    assert model_shape(None).dims == (1, 3, 640, 640)
    assert model_shape("640x480", batch=4).dims == (4, 3, 640, 480)
    assert is_model("x/y.yaml") and not is_model("C2f") and not is_model("pkg.mod:Class")


def test_compare_json_cli(tmp_path, capsys):
    code, out, err = yb_in(tmp_path, capsys, "compare", "C2f", "C3", "--size", "16x8x8", "--rounds", "2",
                           "--warmup", "0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["schema"], report["command"]) == ("yoloblocks.report/1", "compare")
    assert [(t["target"], t["params"]["total"], t["input_shape"]) for t in report["targets"]] == [
        ("C2f(16, 16)", 1_888, [1, 16, 8, 8]), ("C3(16, 16)", 1_248, [1, 16, 8, 8])]
    first, second = report["targets"]
    assert first["latency_ratio"] == 1.0 and first["latency_ms"]["runs"] == 2
    assert first["flops"]["torch"] == 2 * (16 * 16 * 64 + 24 * 16 * 64 + 2 * 8 * 8 * 9 * 64)
    assert second["reference"] == "C2f"
    assert first["delta_pct"]["params"] == 0.0
    assert second["delta_pct"]["params"] == pytest.approx((1_248 - 1_888) / 1_888 * 100)
    assert second["delta_pct"]["flops_torch"] == pytest.approx(
        (second["flops"]["torch"] - first["flops"]["torch"]) / first["flops"]["torch"] * 100)


def test_compare_markdown_cli_has_every_column(tmp_path, capsys):
    code, out, _ = yb_in(tmp_path, capsys, "compare", "C2f", "C3", "--channels", "16", "--size", "8x8",
                         "--no-latency", "--markdown")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("| Target | Input | Params | GFLOPs (torch) | GFLOPs (ultralytics) | GFLOPs (fvcore) "
                        "| Peak memory (MiB) |")
    assert lines[2].startswith("| C2f(16, 16) | 1x16x8x8 | 1,888 | 0.000229 |")
    assert lines[3].startswith("| C3(16, 16) | 1x16x8x8 | 1,248 (-33.9%) |")
    assert lines[-1].startswith("FLOPs = 2 x MACs; ") and lines[-1].endswith("; deltas against C2f(16, 16).")


def test_compare_needs_two_targets_and_a_block_size(tmp_path, capsys):
    assert yb_in(tmp_path, capsys, "compare", "C2f", "--size", "16x8x8")[::2] == (
        2, "error: compare needs at least two targets, e.g. yb compare C2f C3 --size 64x40x40\n")
    assert yb_in(tmp_path, capsys, "compare", "C2f", "C3", "--no-latency")[::2] == (
        2, "error: a block needs an input size: pass --size CxHxW, e.g. --size 64x40x40\n")


def test_compare_in_a_subprocess_exits_2_on_a_malformed_size(yb):
    proc = yb("compare", "C2f", "C3", "--size", "64x40")
    assert (proc.returncode, proc.stderr.strip()) == (
        2, "error: malformed size '64x40': a block takes CxHxW or BxCxHxW, e.g. 64x160x160")


def test_json_and_markdown_are_exclusive(tmp_path, capsys):
    assert yb_in(tmp_path, capsys, "compare", "C2f", "C3", "--size", "16x8x8", "--json", "--markdown")[::2] == (
        2, "error: --json and --markdown both print to stdout: choose one (or --output FILE for the JSON)\n")


def test_cuda_targets_are_timed_with_cuda_events(monkeypatch):
    """The CUDA path (no GPU here): each interleaved run goes through the engine's CUDA-event timer."""
    import torch

    from yoloblocks_cli.measuring import bench
    from yoloblocks_cli.measuring import measure

    seen = []
    monkeypatch.setattr(bench, "_time_cuda", lambda step, device: seen.append(device) or 2.5)
    monkeypatch.setattr(bench, "_time_cpu", lambda step: pytest.fail("CPU timer used for a CUDA device"))
    run = measure._runner(torch.nn.Identity(), torch.zeros(1), torch.device("cuda", 0))
    assert run() == 2.5 and seen == [torch.device("cuda", 0)]
