"""`yb profile`: the JSON contract, ultralytics' summary line, measured (not extrapolated) sizes, errors."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def v8n_json():
    from tests.conftest import run_yb

    proc = run_yb("profile", "yolov8n", "--size", "320x256", "--json", "--no-memory", "--runs", "1",
                  "--layer-runs", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_contract_and_summary(v8n_json):
    r = v8n_json
    assert r["schema"] == "yoloblocks.report/1" and r["command"] == "profile" and r["target"] == "yolov8n"
    assert r["summary"]["layers"] == 129 and r["summary"]["params"] == 3157200
    assert r["summary"]["gradients"] == 3157184 and r["summary"]["gflops"] == 8.9
    assert r["summary"]["line"] == "YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs"
    assert r["params"]["total"] == 3157200 and r["params"]["trainable"] == 3157184
    assert r["model"]["stride"] == [8.0, 16.0, 32.0] and r["model"]["scale"] == "n"
    assert set(r["flops"]) >= {"torch", "ultralytics", "fvcore", "uncounted"}
    assert r["latency_ms"]["runs"] >= 1 and r["memory_bytes"] is None


def test_layers_are_measured_at_the_requested_rectangle(v8n_json):
    layers = v8n_json["layers"]
    assert len(layers) == 23
    assert set(layers[0]) >= {"index", "from", "n", "module", "args", "params", "output_shape", "flops"}
    assert layers[0]["output_shape"] == [1, 16, 160, 128]
    assert layers[11] | {"flops": 0, "latency_ms": 0, "latency_share": 0} == {
        "index": 11, "from": [-1, 6], "n": 1, "module": "Concat", "args": [1], "params": 0,
        "output_shape": [1, 384, 20, 16], "flops": 0, "latency_ms": 0, "latency_share": 0, "line": 27}
    assert layers[22]["module"] == "Detect" and layers[22]["args"] == [80, 16, None, [64, 128, 256]]
    assert v8n_json["output_shape"] == [1, 84, 40 * 32 + 20 * 16 + 10 * 8]
    assert v8n_json["input_shape"] == [1, 3, 320, 256]
    # thop per layer at 320x256 adds up to the model's thop count at that size
    assert sum(layer["flops"] for layer in layers) == v8n_json["flops"]["ultralytics"]
    assert abs(sum(layer["latency_share"] for layer in layers) - 1.0) < 1e-4  # shares are rounded to 6 digits


def test_text_output_has_the_table_and_summary_line(yb):
    proc = yb("profile", "yolov5n", "--size", "128", "--no-latency", "--no-memory", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "YOLOv5n summary: 153 layers, 2,654,816 parameters, 2,654,800 gradients, 7.8 GFLOPs" in out
    assert "[32, 32, 1]" in out and "1x84x336" in out


def test_unknown_module_is_one_line_exit_2(yb, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("nc: 2\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, C2F, [16]]\n")
    proc = yb("profile", str(p))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "bad.yaml:4: layer 1 (C2F): unknown module 'C2F'" in lines[0]
    assert "C2f" in lines[0]


def test_unknown_model_name_exit_2(yb):
    proc = yb("profile", "yolov8q")
    assert proc.returncode == 2 and "no such model YAML: yolov8q (did you mean: yolov8" in proc.stderr


def test_layer_timer_synchronises_around_every_layer_when_asked(tmp_path):
    """The CUDA path: a sync before and after each YAML layer, per pass (mocked sync on CPU)."""
    import torch

    from yoloblocks_cli.measuring.layer_profile import layer_latency, layer_shapes_and_flops, table_rows
    from yoloblocks_cli.loading.yaml_model import build_model

    p = tmp_path / "tiny.yaml"
    p.write_text("nc: 2\nbackbone:\n  - [-1, 1, Conv, [8, 3, 2]]\n  - [-1, 2, Conv, [8, 3, 1]]\n")
    built = build_model(p)
    calls = []
    times = layer_latency(built.model, torch.zeros(1, 3, 32, 32), runs=3, sync=lambda: calls.append(1))
    assert len(times) == 2 and all(t > 0 for t in times)
    assert len(calls) == 2 * 2 * 3  # (pre + post) x layers x passes
    shapes, flops, out = layer_shapes_and_flops(built.model, torch.zeros(1, 3, 32, 24))
    assert shapes == [[1, 8, 16, 12], [1, 8, 16, 12]] and out == [1, 8, 16, 12]
    # thop: conv MACs + BatchNorm (thop charges 2 per element, doubled when affine)
    assert flops[0] == 2 * (8 * 3 * 9 * 16 * 12 + 4 * 8 * 16 * 12)
    rows = table_rows(built, shapes, flops, [1.0, 3.0])
    assert [r.latency_share for r in rows] == [0.25, 0.75] and rows[1].n == 2 and rows[1].params == 2 * (8 * 8 * 9 + 16)


def test_one_shared_counting_pass_gives_what_separate_passes_give():
    """`yb profile` counts in place, torch and thop in one forward: same totals, per-layer FLOPs
    and shapes as separate passes on copies."""
    import torch

    from yoloblocks_cli.measuring.runs import ProfileOptions, profile_report
    from yoloblocks_cli.measuring.flops import count_flops
    from yoloblocks_cli.measuring.layer_profile import layer_shapes_and_flops
    from yoloblocks_cli.loading.yaml_model import build_model

    report = profile_report(ProfileOptions(model="yolov8n", size="96x64", latency=False, memory=False))
    built = build_model("yolov8n")
    x = torch.randn(1, 3, 96, 64)
    shapes, layer_flops, out = layer_shapes_and_flops(built.model, x)
    separate = count_flops(built.model, (x,))
    assert [r["flops"] for r in report["layers"]] == layer_flops
    assert [r["output_shape"] for r in report["layers"]] == shapes and report["output_shape"] == out == [1, 84, 126]
    assert (report["flops"]["torch"], report["flops"]["ultralytics"], report["flops"]["fvcore"]) == \
        (separate.torch, separate.ultralytics, separate.fvcore)
    assert report["flops"]["ultralytics"] == sum(layer_flops)


def test_counter_option_limits_the_counters_and_the_layer_column(yb):
    import json

    proc = yb("profile", "yolov8n", "--size", "64", "--counter", "torch", "--no-latency", "--no-memory", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["flops"]["ultralytics"] is None and r["flops"]["fvcore"] is None
    assert r["flops"]["torch"] == 87_439_872  # yolov8n at 64x64: 8,743,987,200 x (64/640)^2, every layer scales
    assert all(row["flops"] is None for row in r["layers"])  # the column is thop's, which did not run
    bad = yb("profile", "yolov8n", "--counter", "flops")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: unknown FLOP counter 'flops': expected torch, ultralytics (thop) or fvcore"


@pytest.mark.parametrize("model, separate_pass, peak", [
    ("yolov8n", False, 2_359_296),  # no state kept by the first forward: its peak is every pass's peak
    ("yolov5_repo/yolov5n.yaml", True, 3_848_448),  # the first forward caches anchor grids: measured again
], ids=["yolov8n", "yolov5-repo-grid-cache"])
def test_cpu_memory_from_the_counting_pass_equals_a_warm_pass(monkeypatch, model, separate_pass, peak):
    import torch

    import blocks
    from yoloblocks_cli.measuring import bench
    from yoloblocks_cli.measuring.runs import ProfileOptions, profile_report
    from yoloblocks_cli.loading.yaml_model import build_model

    if model.endswith(".yaml"):
        from pathlib import Path

        model = str(Path(blocks.__file__).parent / "cfg" / model)
    calls = []
    real = bench.peak_memory
    monkeypatch.setattr(bench, "peak_memory", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = profile_report(ProfileOptions(model=model, size="256x192", latency=False))
    assert bool(calls) == separate_pass
    net, x = build_model(model).model.eval(), torch.randn(1, 3, 256, 192)
    with torch.inference_mode():
        net(x)  # warm: caches built
    assert report["memory_bytes"]["peak"] == real(net, x, torch.device("cpu")).peak_bytes == peak
