"""`yb trace` through the CLI on the BROKEN ON PURPOSE fixtures: each published bug pattern
must be found at the right configurations, layer, file:line and with the right hint."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import FIXTURES, run_yb

BROKEN = FIXTURES / "broken_blocks.py"
REL = "tests/fixtures/broken_blocks.py"


def marker_line(tag: str) -> int:
    """Line of the fixture carrying ``# BROKEN:<tag>`` (never hard-coded)."""
    hits = [i for i, line in enumerate(BROKEN.read_text().splitlines(), 1) if f"# BROKEN:{tag}" in line.replace(f"# BROKEN:{tag}-", "")]
    assert len(hits) == 1, tag
    return hits[0]


def yb_json(*args: str) -> tuple[int, dict]:
    """Run `yb ... --json` in-process (no torch re-import per test) and parse the report."""
    from yoloblocks_cli.app import app

    result = CliRunner().invoke(app, [*args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout)


def by_shape(report: dict) -> dict[str, dict]:
    return {"x".join(map(str, p["input_shape"])): p for p in report["points"]}


def failing(report: dict) -> set[str]:
    return {k for k, p in by_shape(report).items() if not p["ok"]}


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # file paths are shown relative to it
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: thread synchronisation would dominate on a shared machine
    yield
    torch.set_num_threads(before)


def test_square_assumption_block():
    code, rep = yb_json("trace", f"{REL}:SquareAttention", "--size", "16x20x20", "--quick")
    assert code == 1
    assert rep["schema"] == "yoloblocks.report/1" and rep["command"] == "trace"
    assert rep["target"] == f"{REL}:SquareAttention"
    assert {"torch", "device", "dtype"} <= set(rep["env"])
    # Passes the square smoke test (and any square size), fails every non-square one.
    assert failing(rep) == {"1x16x20x15", "1x16x15x20", "1x16x21x14", "1x16x1x20"}
    assert (rep["passed"], rep["failed"]) == (4, 4)
    ok = by_shape(rep)["1x16x20x20"]
    assert ok["output_shape"] == [1, 16, 20, 20] and ok["ok"] is True
    err = by_shape(rep)["1x16x20x15"]["error"]
    assert err["type"] == "RuntimeError"
    assert err["message"] == "shape '[1, 16, 17, 17]' is invalid for input of size 4800"
    assert (err["layer"], err["module"]) == ("<root>", "SquareAttention")
    assert err["layer_input_shape"] == [1, 16, 20, 15]
    assert (err["file"], err["line"]) == (REL, marker_line("square"))
    assert err["cause"] == "square-assumption"
    assert "reshapes 300 (20x15) tokens to 17x17" in err["hint"]


def test_fixed_token_table_block():
    code, rep = yb_json("trace", f"{REL}:FixedPosTable", "--size", "16x20x20", "--probes", "sweep", "--quick")
    assert code == 1
    assert failing(rep) == set(by_shape(rep)) - {"1x16x20x20", "2x16x20x20"}
    err = by_shape(rep)["1x16x40x40"]["error"]
    assert err["message"] == ("The size of tensor a (1600) must match the size of tensor b (400) "
                              "at non-singleton dimension 1")
    assert (err["layer"], err["module"], err["line"]) == ("<root>", "FixedPosTable", marker_line("fixed-tokens"))
    assert err["cause"] == "fixed-token-count"
    assert "parameter 'pos' holds 400 = 20x20 tokens but the input has 1600 (40x40)" in err["hint"]


def test_hard_coded_width_block_fails_at_other_widths_only():
    code, rep = yb_json("trace", f"{REL}:HardCodedWidth", "--size", "16x20x20", "--probes", "sweep")
    assert code == 1 and rep["passed"] == 0
    err = by_shape(rep)["1x16x20x20"]["error"]
    assert (err["layer"], err["module"]) == ("inner.0", "Conv2d")  # the innermost module, by path
    assert err["layer_input_shape"] == [1, 16, 20, 20]
    assert (err["file"], err["line"]) == (REL, marker_line("width"))  # the block's line, not torch's
    assert err["cause"] == "hard-coded-width"
    assert err["hint"].startswith("hard-coded width: a convolution was built for 512 input channels but the tensor has 16")
    code, rep = yb_json("trace", f"{REL}:HardCodedWidth", "--sizes", "512x4x3", "--probes", "sweep")
    assert code == 0 and rep["points"][0]["output_shape"] == [1, 512, 4, 3]


def test_odd_size_concat_block():
    code, rep = yb_json("trace", f"{REL}:OddSizeConcat", "--size", "8x20x20", "--probes", "sweep,train", "--quick")
    assert code == 1
    assert failing(rep) == {"1x8x20x15", "1x8x15x20", "1x8x21x14", "1x8x21x21", "1x8x1x20"}
    err = by_shape(rep)["1x8x21x14"]["error"]
    assert err["message"].startswith("Sizes of tensors must match except in dimension 1. Expected size 21 but got size 22")
    assert (err["layer"], err["line"], err["cause"]) == ("<root>", marker_line("odd"), "odd-size")
    assert "(21 vs 22)" in err["hint"]


def test_batch_mixing_is_caught_by_the_batch_probe_not_an_exception():
    code, rep = yb_json("trace", f"{REL}:BatchLeak", "--size", "8x6x6", "--quick")
    assert code == 1
    assert failing(rep) == {"2x8x6x6"}
    point = by_shape(rep)["2x8x6x6"]
    statuses = {k: v["status"] for k, v in point["probes"].items()}
    assert statuses == {"sweep": "pass", "finite": "pass", "batch": "fail", "channels-last": "pass",
                        "train": "pass", "grads": "pass"}
    err = point["error"]
    assert err["type"] == "BatchDependence"
    # Localised to the first op whose sample-0 output differs (its line), in the mixer, not its parent.
    assert (err["layer"], err["module"], err["layer_input_shape"]) == ("mix", "BatchMixer", [2, 8, 6, 6])
    assert (err["file"], err["line"]) == (REL, marker_line("batch-op"))
    assert err["cause"] == "batch-mixing"
    assert err["hint"].startswith("batch mixing: softmax() is the first operation whose output for a sample depends "
                                  "on the other samples: a reshape or reduction folds the batch axis into tokens")


def test_unused_parameters_are_listed():
    code, rep = yb_json("trace", f"{REL}:UnusedBranch", "--sizes", "8x4x4", "--probes", "train,grads")
    assert code == 1
    p = rep["points"][0]
    assert p["probes"]["train"]["status"] == "pass"
    err = p["probes"]["grads"]["error"]
    assert err["message"] == "2 parameter(s) received no gradient: spare.weight, spare.bias"
    assert (err["layer"], err["module"]) == ("spare", "Conv2d")
    assert (err["file"], err["line"]) == (REL, marker_line("unused"))


def test_standard_block_passes_everything_and_exits_0():
    code, rep = yb_json("trace", "C2f", "--size", "16x8x8", "--args", "[16, 1, True]", "--quick")
    assert code == 0, [p.get("error") for p in rep["points"]]
    assert rep["failed"] == 0 and rep["passed"] == len(rep["points"]) == 8
    assert rep["probes"] == ["sweep", "finite", "batch", "channels-last", "train", "grads"]
    assert [p["input_shape"] for p in rep["points"]] == [
        [1, 16, 8, 8], [1, 16, 8, 6], [1, 16, 6, 8], [1, 16, 9, 6], [1, 16, 9, 9], [1, 16, 1, 8],
        [1, 16, 16, 16], [2, 16, 8, 8]]


def test_explicit_sizes_batches_and_probe_switches():
    code, rep = yb_json("trace", "Conv", "--sizes", "8x5x7,8x3x3", "--batch", "1,3", "--probes", "sweep,batch",
                        "--no-probe", "batch")
    assert code == 0
    assert rep["probes"] == ["sweep"]
    assert [p["input_shape"] for p in rep["points"]] == [[1, 8, 5, 7], [3, 8, 5, 7], [1, 8, 3, 3], [3, 8, 3, 3]]


def test_layers_trace_in_json():
    code, rep = yb_json("trace", f"{REL}:HardCodedWidth", "--sizes", "512x2x2", "--probes", "sweep", "--layers")
    assert code == 0
    layers = rep["points"][0]["layers"]
    # completion order: children first
    assert [(r["layer"], r["module"], r["input_shape"], r["output_shape"]) for r in layers] == [
        ("inner.0", "Conv2d", [1, 512, 2, 2], [1, 512, 2, 2]),
        ("inner.1", "SiLU", [1, 512, 2, 2], [1, 512, 2, 2]),
        ("inner", "Sequential", [1, 512, 2, 2], [1, 512, 2, 2]),
        ("out", "Identity", [1, 512, 2, 2], [1, 512, 2, 2]),
        ("<root>", "HardCodedWidth", [1, 512, 2, 2], [1, 512, 2, 2]),
    ]


def test_junit_one_case_per_configuration_and_probe(tmp_path):
    out = tmp_path / "trace.xml"
    code, rep = yb_json("trace", f"{REL}:OddSizeConcat", "--sizes", "4x6x6,4x5x5", "--probes", "sweep,finite",
                        "--junit", str(out))
    assert code == 1
    suite = ET.parse(out).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names == ["1x4x6x6::sweep", "1x4x6x6::finite", "1x4x5x5::sweep", "1x4x5x5::finite"]
    failure = suite.findall("testcase")[2].find("failure")
    assert failure.get("type") == "RuntimeError"
    assert f"at: {REL}:{marker_line('odd')}" in failure.text and "hint: odd size" in failure.text


def test_text_output_names_layer_line_and_hint():
    proc = run_yb("trace", f"{REL}:SquareAttention", "--sizes", "8x4x4,8x4x3", "--probes", "sweep", "--layers")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "FAIL sweep at 1x8x4x3\n  RuntimeError at layer <root> (SquareAttention) input 1x8x4x3" in out
    assert f"{REL}:{marker_line('square')}" in out
    assert "hint: assumes a square input: reshapes 12 (4x3) tokens to 3x3" in out
    assert "layers at 1x8x4x4" in out  # the first configuration's per-layer trace
    assert "layers at 1x8x4x3" in out  # and the failing one's, ending at the call that raised
    assert out.split("layers at 1x8x4x3")[1].split("FAIL sweep")[0].splitlines()[3].split() == [
        "<root>", "│", "SquareAttention", "│", "1x8x4x3", "│", "FAILED"]
    assert "2 configurations x 1 probes: 1 passed, 1 failed" in out
    assert "Traceback" not in out + proc.stderr


@pytest.mark.parametrize("args, message", [
    (("C2f", "--size", "16x8"), "malformed size '16x8'"),
    (("C2f", "--probes", "sweep,speed"), "unknown probe 'speed'"),
    (("C2f", "--batch", "0"), "batch sizes must be positive"),
    (("NoSuchBlock",), "unknown block 'NoSuchBlock'"),
    (("C2f", "--scales", "n"), "--scales applies to model YAMLs only"),
    (("C2f", "--dtype", "fp8"), "unknown dtype 'fp8'"),
    (("C2f", "--timeout", "0"), "--timeout must be a positive number of seconds"),
] + ([] if torch.cuda.is_available() else [(("C2f", "--device", "cuda"), "CUDA")]))
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    from yoloblocks_cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(["trace", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_input_message_subprocess():
    proc = run_yb("trace", "C2f", "--probes", "sweep,speed")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: unknown probe 'speed': choose from sweep, finite, batch, "
                                   "channels-last, train, grads, export")


def test_bare_block_name_from_a_plugin_file():
    code, rep = yb_json("trace", "OddSizeConcat", "--plugin", REL, "--sizes", "4x6x6,4x5x5", "--probes", "sweep")
    assert code == 1
    assert rep["built"] == ["OddSizeConcat(4)"]
    assert failing(rep) == {"1x4x5x5"}


def test_einops_square_reshape_points_at_the_users_line_not_einops(tmp_path):
    """The Focused Linear Attention seed's pattern: num = int(sqrt(N)); rearrange(..., w=num, h=num)."""
    src = tmp_path / "fla_like.py"
    src.write_text(
        "import torch\nfrom torch import nn\nfrom einops import rearrange\n\n\n"
        "class FLALike(nn.Module):\n"
        "    def __init__(self, dim):\n"
        "        super().__init__()\n"
        "        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)\n\n"
        "    def forward(self, x):\n"
        "        v = x.flatten(2).transpose(1, 2)\n"
        "        num = int(v.shape[1] ** 0.5)\n"
        "        fm = rearrange(v, 'b (w h) c -> b c w h', w=num, h=num)\n"
        "        return self.dwc(fm)\n")
    code, rep = yb_json("trace", f"{src}:FLALike", "--sizes", "8x20x20,8x20x15", "--probes", "sweep")
    assert code == 1 and failing(rep) == {"1x8x20x15"}
    err = by_shape(rep)["1x8x20x15"]["error"]
    assert (err["type"], err["file"], err["line"]) == ("EinopsError", str(src), 14)
    assert err["message"].endswith("Shape mismatch, 300 != 289")
    assert err["cause"] == "square-assumption"


# --- model level: a YAML built by yoloblocks_cli.loading.yaml_model -------------------------------------------

SQUARE_YAML = "tests/fixtures/yolov8-square-attn.yaml"
WIDTH_YAML = "tests/fixtures/yolov8-width512.yaml"


def test_model_square_block_passes_640_and_fails_640x480_at_its_yaml_index():
    pytest.importorskip("yoloblocks_cli.loading.yaml_model")
    code, rep = yb_json("trace", SQUARE_YAML, "--plugin", REL, "--scales", "n", "--sizes", "640,640x480",
                        "--probes", "sweep")
    assert code == 1
    assert rep["kind"] == "model"
    square, rect = rep["points"]
    assert square["input_shape"] == [1, 3, 640, 640] and square["ok"] is True
    assert rect["input_shape"] == [1, 3, 640, 480] and rect["ok"] is False
    err = rect["error"]
    assert (err["layer"], err["module"]) == (10, "SquareAttention")  # the YAML index of the block
    assert err["layer_input_shape"] == [1, 256, 20, 15]  # P5 of 640x480 at yolov8n width
    assert (err["file"], err["line"]) == (REL, marker_line("square"))
    assert err["cause"] == "square-assumption"
    assert "reshapes 300 (20x15) tokens to 17x17" in err["hint"]


def test_model_hard_coded_width_fails_only_at_scales_where_the_width_differs():
    pytest.importorskip("yoloblocks_cli.loading.yaml_model")
    code, rep = yb_json("trace", WIDTH_YAML, "--plugin", REL, "--scales", "n,l", "--sizes", "64",
                        "--probes", "sweep")
    assert code == 1
    by_scale = {p["scale"]: p for p in rep["points"]}
    assert by_scale["l"]["ok"] is True  # P5 is 512 wide at l: the hard-coded 512 happens to fit
    err = by_scale["n"]["error"]
    # At n the builder's own dry run of layer 10 raises: reported as this scale failing, not as bad input.
    assert (err["layer"], err["module"]) == (10, "HardCodedWidth")
    assert err["message"].startswith(f"while building the model: {WIDTH_YAML}:23: layer 10 (HardCodedWidth)")
    assert err["cause"] == "hard-coded-width"
    assert "built for 512 input channels but the tensor has 256" in err["hint"]
    assert err["line"] == marker_line("width")


@pytest.mark.slow
def test_model_default_sweep_yolov8n_square_block():
    pytest.importorskip("yoloblocks_cli.loading.yaml_model")
    code, rep = yb_json("trace", SQUARE_YAML, "--plugin", REL, "--scales", "n", "--quick")
    assert code == 1
    assert {k for k, p in by_shape(rep).items() if p["ok"]} == {"1x3x640x640", "1x3x320x320", "1x3x1280x1280",
                                                               "2x3x640x640"}
    assert failing(rep) == {"1x3x640x480", "1x3x480x640", "1x3x672x448", "1x3x448x672", "2x3x640x480"}
    assert {p["error"]["layer"] for p in rep["points"] if not p["ok"]} == {10}


def test_no_hooks_left_behind_on_shared_modules():
    from blocks.conv import Conv

    code, _ = yb_json("trace", "C2f", "--sizes", "8x4x4", "--probes", "sweep")
    assert code == 0
    assert not Conv.default_act._forward_pre_hooks and not Conv.default_act._forward_hooks


def test_output_file_holds_the_same_report(tmp_path):
    out = tmp_path / "deep" / "trace.json"
    code, rep = yb_json("trace", "Conv", "--sizes", "8x5x7", "--probes", "sweep", "--output", str(out))
    assert code == 0
    saved = json.loads(out.read_text())
    assert saved["points"] == rep["points"] and saved["schema"] == "yoloblocks.report/1"
