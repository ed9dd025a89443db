"""The export probe: one ONNX export per target, onnxruntime at every configuration.

Each fixture block (tests/fixtures/export_blocks.py) runs in PyTorch at the sizes used here;
the probe must say whether its exported graph does too, and why not: the exporter's
message, the node and module that failed, the line that froze a size, the hint. Sizes are
tiny and few (the export dominates); the shipped-model sweeps are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import ROOT
from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing import export_probe
from yoloblocks_cli.tracing.probes import Target, default_probes, probe_names
from yoloblocks_cli.tracing.run import parse_probes, sweep
from yoloblocks_cli.tracing.tracer import ShapeTracer

needs_onnx = pytest.mark.skipif(bool(export_probe.missing_dependencies()),
                                reason="needs the [export] extra (onnx, onnxruntime)")


EXAMPLES = ROOT / "docs" / "examples" / "export_blocks.py"  # also the examples of docs/export.md


def _fixtures():
    spec = importlib.util.spec_from_file_location("export_blocks_tests", EXAMPLES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BLOCKS = _fixtures()


def run_export(module, sizes: list[tuple[int, int, int, int]]):
    """The export probe alone on ``module`` at ``sizes`` (the first one is the export size)."""
    tracer = ShapeTracer(module).attach()
    target = Target(module, tracer, type(module).__name__)
    points = sweep([target], [Shape(*s) for s in sizes], ["export"])
    return [p.results["export"] for p in points]


def test_export_is_opt_in_and_in_all():
    assert "export" in probe_names() and "export" not in default_probes()
    assert parse_probes("") == default_probes() == parse_probes("default")
    assert parse_probes("all") == probe_names() and parse_probes("all")[-1] == "export"
    assert parse_probes("export") == ["export"]


def test_node_names_map_back_to_modules():
    """TorchScript node names are scopes: '/model.2/cv2.0/cv2.0.0/conv/Conv'."""
    import torch.nn as nn

    inner = nn.Sequential(nn.Conv2d(1, 1, 1))
    layer = nn.Module()
    layer.cv2 = nn.ModuleList([nn.Sequential(inner)])
    root = nn.Module()
    root.model = nn.ModuleList([nn.Identity(), nn.Identity(), layer])
    assert export_probe.node_module(root, "/model.2/cv2.0/cv2.0.0/Conv") is inner
    assert export_probe.node_module(root, "/model.2/Reshape_3") is layer
    assert export_probe.node_module(root, "/Reshape_1") is root


def test_without_the_extra_the_probe_is_skipped_with_the_install_hint(monkeypatch, capsys):
    monkeypatch.setattr(export_probe, "missing_dependencies", lambda: ["onnxruntime"])
    monkeypatch.setattr(export_probe, "_HINT_SHOWN", [])
    results = run_export(BLOCKS.Exportable(8), [(1, 8, 6, 6), (1, 8, 6, 4)])
    assert [r.status for r in results] == ["skip", "skip"]
    assert results[0].detail == "not run: needs onnx and onnxruntime: pip install 'yoloblocks[export]'"
    assert capsys.readouterr().err.count("pip install 'yoloblocks[export]'") == 1  # one line, once


@needs_onnx
def test_a_clean_block_exports_and_matches_everywhere():
    results = run_export(BLOCKS.Exportable(8), [(1, 8, 12, 12), (1, 8, 12, 9), (1, 8, 7, 13), (2, 8, 12, 12)])
    assert [r.status for r in results] == ["pass"] * 4
    assert all(r.detail.startswith("onnxruntime = PyTorch (max abs diff ") for r in results)


@needs_onnx
def test_an_op_without_onnx_export_names_the_op_module_and_line():
    results = run_export(BLOCKS.FFTFilter(), [(1, 8, 12, 12), (1, 8, 12, 9)])
    assert [r.status for r in results] == ["fail", "fail"]
    f = results[0].failure
    assert f.type == "ExportError (UnsupportedOperatorError)"
    assert f.message == ("export failed: Exporting the operator 'aten::fft_rfft2' to ONNX opset version 17 "
                         "is not supported")
    assert (Path(f.file).name, f.line, f.layer, f.module) == ("export_blocks.py", 28, "<root>", "FFTFilter")
    assert f.hint.startswith("'aten::fft_rfft2' has no ONNX equivalent in opset 17")
    assert results[1].failure is f  # exported once, the verdict repeats


def test_adaptive_pooling_under_dynamic_sizes_is_named_with_its_cause():
    """YOLO-World v1's ImagePoolingAttn pools every level to 3 x 3: ONNX needs the input size for that, and a
    dynamic-H/W export does not have it (ultralytics exports at a fixed size by default)."""
    from torch import nn

    class PoolTo3(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(8, 8, 1)
            self.pool = nn.AdaptiveMaxPool2d((3, 3))

        def forward(self, x):
            return self.pool(self.proj(x))

    (result,) = run_export(PoolTo3(), [(1, 8, 12, 12)])
    f = result.failure
    assert result.status == "fail" and f.cause == "export-static-size"
    assert (f.layer, f.module) == ("pool", "AdaptiveMaxPool2d")
    assert f.hint.startswith("adaptive_max_pool2d() needs a static input size in ONNX and this export has "
                             "dynamic H and W")


@needs_onnx
def test_int_sqrt_freezes_h_and_w_at_the_export_size():
    # 20x20 is the export size, 21x21 and 6x6 are square too: PyTorch runs all three.
    results = run_export(BLOCKS.SqrtTokens(8), [(1, 8, 20, 20), (1, 8, 21, 21), (2, 8, 6, 6)])
    assert [r.status for r in results] == ["pass", "fail", "fail"]
    f = results[1].failure
    assert f.type == "OnnxRuntimeError"
    assert f.message == ("Reshape node '/Reshape_1' failed: The input tensor cannot be reshaped to the requested "
                         "shape. Input shape:{1,8,441}, requested shape:{1,8,20,20} | exported at 1x8x20x20; "
                         "Converting a tensor to a Python float might cause the trace to be incorrect: "
                         "s = int(math.sqrt(t.shape[-1]))")
    assert (f.layer, f.module, Path(f.file).name, f.line) == ("<root>", "SqrtTokens", "export_blocks.py", 43)
    assert f.cause == "export-frozen-size"
    assert f.hint == "`int(math.sqrt(N))` freezes H = W = 20 at export; keep H and W from x.shape"
    assert results[2].failure.line == 43
    doc = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")  # the page shows this failure (its first
    # failing configuration is 18x18 of the default sweep): the same graph, exported at the base size
    assert "requested shape:{1,8,20,20} | exported at 1x8x20x20; Converting a tensor to a Python float" in doc
    assert f"  hint: {f.hint}\n" in doc and "  docs/examples/export_blocks.py:43\n" in doc


@needs_onnx
def test_python_int_sizes_give_wrong_values_after_export():
    """reshape(-1, C, h, w) with frozen h, w does not fail: it silently returns 4 maps of 12x12."""
    results = run_export(BLOCKS.IntSizes(), [(1, 8, 12, 12), (1, 8, 24, 24), (1, 8, 12, 9)])
    assert [r.status for r in results] == ["pass", "fail", "fail"]
    wrong = results[1].failure
    assert wrong.type == "ExportMismatch"
    assert wrong.message.startswith("wrong values at this shape: output 0 has shape 4x8x12x12 in the graph but "
                                    "1x8x24x24 in PyTorch | exported at 1x8x12x12;")
    assert (Path(wrong.file).name, wrong.line) == ("export_blocks.py", 51)
    assert wrong.hint.startswith("turning a size into a Python number (int(), float(), .item()) freezes "
                                 "height = 12 and width = 12 at export")
    crash = results[2].failure
    assert crash.type == "OnnxRuntimeError" and (Path(crash.file).name, crash.line) == ("export_blocks.py", 51)
    assert "requested shape:{-1,8,12,12}" in crash.message


@needs_onnx
def test_a_loop_over_the_batch_freezes_the_batch():
    results = run_export(BLOCKS.PerSample(8), [(1, 8, 10, 10), (1, 8, 10, 7), (2, 8, 10, 10)])
    assert [r.status for r in results] == ["pass", "pass", "fail"]
    f = results[2].failure
    assert f.type == "ExportMismatch"
    assert f.message.startswith("wrong values at this shape: output 0 has shape 1x8x10x10 in the graph but "
                                "2x8x10x10 in PyTorch | exported at 1x8x10x10; torch.export guard Eq(")
    assert (Path(f.file).name, f.line, f.cause) == ("export_blocks.py", 64, "export-frozen-batch")
    assert (f.layer, f.module) == ("<root>", "PerSample")  # the module whose forward holds the line
    assert f.hint == ("a Python loop over a tensor size is unrolled at export (batch = 1); "
                      "replace the loop by one batched operation")


@needs_onnx
def test_cli_json_carries_the_export_verdicts(yb):
    r = yb("trace", f"{EXAMPLES}:PerSample", "--sizes", "8x10x10,2x8x10x10",
           "--probes", "export", "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["probes"] == ["export"]
    cells = [p["probes"]["export"] for p in report["points"]]
    assert [c["status"] for c in cells] == ["pass", "fail"]
    assert cells[1]["error"]["type"] == "ExportMismatch" and cells[1]["error"]["line"] == 64


def test_yb_check_accepts_the_export_probe_per_target(tmp_path):
    from yoloblocks_cli.checks.config import load_config

    cfg = tmp_path / "yb.toml"
    cfg.write_text("[blocks.sqrt]\nblock = 'C2f'\nsize = '16x8x8'\nprobes = ['export', 'batch']\n", encoding="utf-8")
    assert load_config(cfg).targets[0].probes == ["export", "batch"]


@needs_onnx
def test_check_helper_runs_the_export_probe():
    """`yb check` and assert_traces share run_probes: the export verdict reaches both."""
    from yoloblocks_cli.checks.testing import assert_traces

    with pytest.raises(AssertionError) as info:
        assert_traces(f"{EXAMPLES}:SqrtTokens", ["8x12x12", "8x13x13"], probes=["export"])
    text = str(info.value)
    assert "1 check(s) failed" in text and "export 1x8x13x13: OnnxRuntimeError: Reshape node '/Reshape_1'" in text


SHIPPED = ["yolov8n", "yolo11n", "yolov9t", "yolov5n", "yolov5_repo/yolov5n"]


@pytest.mark.slow
@needs_onnx
@pytest.mark.parametrize("model", SHIPPED)
def test_shipped_models_pass_the_export_probe_at_the_default_sweep(model, yb):
    """The head's anchors and strides follow the input: rectangular shapes give other anchor counts."""
    r = yb("trace", model, "--probes", "export", "--json", timeout=3600)
    report = json.loads(r.stdout)
    bad = {tuple(p["input_shape"]): p["probes"]["export"] for p in report["points"] if not p["ok"]}
    assert r.returncode == 0 and not bad, bad


@pytest.mark.slow
@needs_onnx
def test_yolov10_fresh_head_exports_without_topk(yb):
    """A fresh end-to-end head decodes its one-to-many branch (as ultralytics' does until ``end2end`` is
    switched on), so yolov10n's graph has no TopK over tied untrained scores and matches onnxruntime."""
    r = yb("trace", "yolov10n", "--sizes", "640,640x480", "--probes", "export", "--json", timeout=3600)
    results = [p["probes"]["export"] for p in json.loads(r.stdout)["points"]]
    assert [e["status"] for e in results] == ["pass", "pass"]
    assert all(e["detail"].startswith("onnxruntime = PyTorch") for e in results)


def test_default_sweep_runs_the_exported_graph_at_every_configuration(yb_in):
    """The two-phase sweep computes numeric probes at two configurations only; the export
    probe still runs at every one, since a baked size shows only at the other sizes."""
    import json

    code, out, _ = yb_in("trace", "docs/examples/export_blocks.py:IntSizes", "--size", "8x20x20", "--probes",
                         "export", "--json")
    points = json.loads(out)["points"]
    statuses = [p["probes"]["export"]["status"] for p in points if p["ok"] is not None or p["probes"].get("export")]
    assert code == 1 and len(points) == 36
    assert "skip" not in {p["probes"]["export"]["status"] for p in points if p.get("phase") == "shape"}
    assert statuses.count("fail") >= 1 and any(p["phase"] == "shape" and p["probes"]["export"]["status"] == "fail"
                                               for p in points)
