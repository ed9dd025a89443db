"""Blocks as users bring them (issue 15): their own class wins, any input layout, causes that are
right. Every case runs a block of tests/fixtures/user_blocks.py (written for this suite) through
the CLI in-process and checks the exact cause, line, shape or count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES, run_yb

USER = FIXTURES / "user_blocks.py"
REL = "tests/fixtures/user_blocks.py"
REPO = FIXTURES / "userrepo"
YAML = "tests/fixtures/user-c2f.yaml"


def case_line(tag: str) -> int:
    hits = [i for i, line in enumerate(USER.read_text().splitlines(), 1) if line.rstrip().endswith(f"# CASE:{tag}")]
    assert len(hits) == 1, tag
    return hits[0]


def class_line(name: str) -> int:
    return next(i for i, line in enumerate(USER.read_text().splitlines(), 1) if line.startswith(f"class {name}("))


def yb(*args: str) -> tuple[int, dict]:
    from yoloblocks_cli.app import app

    result = CliRunner().invoke(app, [*args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout)


def trace(block: str, *args: str) -> tuple[int, dict]:
    return yb("trace", f"{REL}:{block}", *args)


def first_error(rep: dict) -> dict:
    return next(p["error"] for p in rep["points"] if p.get("error"))


pytestmark = pytest.mark.usefixtures("repo_cwd_one_thread")


# 1. the user's named file wins over the registry --------------------------------------------------


def test_yaml_name_resolves_to_the_plugin_class_first():
    from yoloblocks_cli.loading.yaml_model import build_model

    built = build_model(YAML, plugins=[REL])
    assert built.layers[1].params == 16 * 16 + 16  # the user's C2f (one 1x1 conv); the registered one has 1,888
    assert [u.as_json() for u in built.plugins] == [{
        "name": "C2f", "class": "C2f", "file": REL, "line": class_line("C2f"), "shadows_registered": True}]
    assert build_model(YAML).layers[1].params == 1888  # without the plugin: the registered C2f


def test_trace_of_a_yaml_reports_the_plugin_class_and_notes_the_shadow():
    code, rep = yb("trace", YAML, "--plugin", REL, "--sizes", "64", "--probes", "sweep")
    assert code == 0
    assert rep["plugins"] == [{"name": "C2f", "class": "C2f", "file": REL, "line": class_line("C2f"),
                               "shadows_registered": True}]
    r = run_yb("trace", YAML, "--plugin", REL, "--sizes", "64", "--probes", "sweep")
    assert (f"note: C2f: using your class from {REL}:{class_line('C2f')}, not the registered block C2f it "
            "shadows") in r.stderr


def test_bare_block_name_with_plugin_wins_in_trace_and_compare():
    code, rep = yb("trace", "C2f", "--plugin", REL, "--args", "[16]", "--sizes", "16x8x8", "--probes", "sweep")
    assert code == 0
    assert rep["block"]["file"] == REL and rep["block"]["shadows_registered"] is True
    from yoloblocks_cli.loading.targets import resolve_target

    t = resolve_target("C2f", "16x8x8", args=[16], plugins=[REL])
    assert sum(p.numel() for p in t.module.parameters()) == 272


# 2. layouts, H and W, extra inputs -----------------------------------------------------------------


def test_token_block_fed_nchw_gets_the_layout_hint_not_hard_coded_width():
    code, rep = trace("TokenMemoryAttention", "--sizes", "16x8x8", "--probes", "sweep")
    err = first_error(rep)
    assert code == 1 and err["cause"] == "input-layout"
    assert (err["layer"], err["line"]) == ("mk", case_line("token-linear"))
    assert "run with --layout nhwc (B, H, W, C) or --layout bnc (B, N, C)" in err["hint"]
    assert "hard-coded" not in err["hint"]


@pytest.mark.parametrize("layout, out", [("bnc", [1, 48, 16]), ("nhwc", [1, 8, 6, 16])])
def test_token_block_passes_every_probe_in_its_layout(layout, out):
    code, rep = trace("TokenMemoryAttention", "--sizes", "16x8x6,2x16x8x6", "--layout", layout)
    assert code == 0, rep
    assert rep["points"][0]["output_shape"] == out
    assert rep["inputs"]["layout"] == layout


def test_nhwc_block_in_nchw_gets_the_layout_hint_and_passes_with_nhwc():
    code, rep = trace("WindowMixNHWC", "--sizes", "16x8x6", "--probes", "sweep")
    assert code == 1 and first_error(rep)["cause"] == "input-layout"
    code, rep = trace("WindowMixNHWC", "--sizes", "16x8x6,2x16x6x8", "--layout", "nhwc")
    assert code == 0 and rep["points"][1]["output_shape"] == [2, 6, 8, 16]


def test_nchw_block_fed_nhwc_by_mistake_is_told_to_use_nchw():
    code, rep = trace("NCHWConv", "--sizes", "16x8x6", "--layout", "nhwc", "--probes", "sweep")
    err = first_error(rep)
    assert err["cause"] == "input-layout" and err["hint"].endswith("run with --layout nchw (B, C, H, W)")
    assert err["layer_input_shape"] == [1, 8, 6, 16]  # what the forward really received


def test_forward_x_h_w_gets_the_sizes_by_name():
    code, rep = trace("TokenConvFFN", "--size", "16x8x8", "--layout", "bnc", "--batch", "1,2")
    assert code == 0
    assert rep["inputs"] == {"layout": "bnc", "extras": {}, "sizes": ["H", "W"], "forward": "(x, H, W)"}
    assert {tuple(p["input_shape"]): p["output_shape"] for p in rep["points"]}[(1, 16, 8, 6)] == [1, 48, 16]


def test_forward_q_k_v_needs_inputs_and_gets_them():
    from yoloblocks_cli.app import app
    from yoloblocks_cli.errors import UsageError  # exit 2 through main

    result = CliRunner().invoke(app, ["trace", f"{REL}:QKVCore", "--sizes", "16x8x6", "--layout", "bnc"])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception).startswith("forward(q, k, v) also needs k, v: pass --inputs k=BxNxC,v=BxNxC")
    code, rep = trace("QKVCore", "--sizes", "16x8x6,2x16x8x6", "--layout", "bnc", "--inputs", "k=BxNxC,v=BxNxC")
    assert code == 0  # the batch probe passes: k and v of sample i alone are those of sample i in the batch
    assert rep["inputs"]["extras"] == {"k": "BxNxC", "v": "BxNxC"}


def test_inspect_counts_a_token_block_exactly():
    code, rep = yb("inspect", f"{REL}:TokenConvFFN", "--size", "16x8x6", "--layout", "bnc", "--no-latency",
                   "--no-memory")
    assert code == 0 and rep["output_shape"] == [1, 48, 16]
    # fc1 48*16*32 + depthwise 3x3 32*9*48 + fc2 48*32*16 = 62,976 MACs
    assert rep["flops"]["torch"] == rep["flops"]["ultralytics"] == rep["flops"]["fvcore"] == 2 * 62976
    assert rep["params"]["total"] == (16 * 32 + 32) + (32 * 9 + 32) + (32 * 16 + 16)


def test_input_spec_parsing_errors_are_one_line():
    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.loading.inputs import parse_input_spec

    with pytest.raises(UsageError, match="unknown --layout 'nwhc'"):
        parse_input_spec("nwhc")
    with pytest.raises(UsageError, match="malformed --inputs 'k=BxQ'"):
        parse_input_spec("bnc", ["k=BxQ"])


# 3. hints only when their evidence holds; new causes ------------------------------------------------


def test_linear_over_the_width_is_a_fixed_spatial_size():
    code, rep = trace("AxisMLP", "--kwargs", "h=8", "--kwargs", "w=8", "--sizes", "16x8x8,16x8x6", "--probes", "sweep")
    err = first_error(rep)
    assert (err["cause"], err["layer"], err["line"]) == ("fixed-spatial-size", "proj_w", case_line("axis-linear"))
    assert err["hint"].startswith("fixed spatial size: a linear layer over the width (Linear(8, ...) applied along a "
                                  "spatial axis) was built for a map 8 wide but this input has 6 there (8x6)")


def test_hard_coded_width_only_on_the_channel_axis():
    code, rep = trace("HardWidth", "--sizes", "32x8x6", "--probes", "sweep")
    err = first_error(rep)
    assert err["cause"] == "hard-coded-width"
    assert err["hint"].startswith("hard-coded width: a linear layer was built for 64 input channels but the tensor "
                                  "has 32")
    code, rep = trace("HardWidth", "--sizes", "64x8x6", "--probes", "sweep")
    assert code == 0  # the constant happens to be c1


def _ctx(message, feature, block_input=None, inp=None, layout="nchw", modules=(), line=None, exc="RuntimeError"):
    from yoloblocks_cli.tracing import hints

    return hints.HintContext(exc, message, input_shape=inp, x_shape=feature, modules=list(modules),
                             source_line=line, feature_shape=feature, block_input_shape=block_input, layout=layout)


def test_width_rules_from_the_evidence():
    from yoloblocks_cli.tracing import hints

    # a Linear over the H*W tokens (token mixing built for 8x8 = 64 tokens), map 8x6
    tok = _ctx("mat1 and mat2 shapes cannot be multiplied (16x48 and 64x64)", [1, 16, 8, 6], inp=[1, 16, 48])
    assert hints.recognise(tok)[0] == "fixed-token-count"
    assert "built for 64 = 8x8 tokens but this input has 48 (8x6)" in hints.recognise(tok)[1]
    # a conv built for c1 fed another width inside the block: not a constant
    conv = ("Given groups=1, weight of size [16, 16, 1, 1], expected input[1, 32, 8, 8] to have 16 channels, "
            "but got 32 channels instead")
    assert hints.recognise(_ctx(conv, [1, 16, 8, 8], inp=[1, 32, 8, 8]))[0] == "width-mismatch"
    # the same conv as a model layer's constant 512 with a 256-wide input: hard-coded
    conv512 = conv.replace("[16, 16", "[512, 512").replace("to have 16", "to have 512").replace("32", "256")
    assert hints.recognise(_ctx(conv512, [1, 256, 8, 8], inp=[1, 256, 8, 8], layout=None))[0] == "hard-coded-width"


def test_divisibility_from_a_reshape_into_blocks_and_from_einops():
    from yoloblocks_cli.tracing import hints

    msg = "shape '[1, 3, 16, 2, 4, 1, 4]' is invalid for input of size 2304"
    found = hints.recognise(_ctx(msg, [1, 16, 8, 6]))
    assert found[0] == "divisibility" and "multiples of 4, and W = 6 is not" in found[1]
    ein = "Shape mismatch, can't divide axis of length 6 in chunks of 4"
    assert hints.recognise(_ctx(ein, [1, 16, 8, 6]))[0] == "divisibility"


def test_divisibility_assertion_names_the_block_size():
    code, rep = trace("BlockLocalAttention", "--sizes", "16x8x8,16x8x6", "--probes", "sweep")
    err = first_error(rep)
    assert (err["type"], err["line"], err["cause"]) == ("AssertionError", case_line("divisible"), "divisibility")
    assert err["hint"].startswith("divisibility: an assertion on H % self.block_size needs H and W to be multiples "
                                  "of 4, and W = 6 is not")


def test_flattening_view_with_a_fixed_row_is_a_fixed_token_count():
    code, rep = trace("FlatFC", "--sizes", "64x20x20,64x20x15", "--probes", "sweep")
    assert [p["ok"] for p in rep["points"]] == [True, False]  # 25,600 values split into rows of 1024; 19,200 do not
    err = first_error(rep)
    assert (err["cause"], err["line"]) == ("fixed-token-count", case_line("flat-view"))
    assert ("rows of 1024 values (view(-1, 1024)) = 64 channels x 16 (4x4) positions" in err["hint"])


def test_broadcast_against_a_fixed_size_parameter():
    code, rep = trace("PositionBias", "--sizes", "16x20x20,16x20x15", "--probes", "sweep")
    err = first_error(rep)
    assert (err["cause"], err["line"]) == ("fixed-size-tensor", case_line("fixed-tensor"))
    assert "'bias' has shape 1x16x20x20 (built for 20) but the map is 20x15" in err["hint"]


def test_broadcast_after_an_unpadded_dilated_conv():
    code, rep = trace("DilatedGate", "--sizes", "16x8x8", "--probes", "sweep")
    err = first_error(rep)
    assert (err["cause"], err["line"]) == ("shrinking-map", case_line("broadcast"))
    assert err["hint"] == ("shrinking map: 'dilated' (kernel 3, dilation 2, padding 0) loses 4 pixels per axis, so "
                           "the branch comes out 4 wide and no longer broadcasts against the 8-wide input; use "
                           "padding = dilation * (kernel - 1) // 2 = 2")


# 4. batch mixing at the op; warnings with their line --------------------------------------------------


def test_softmax_without_dim_is_named_at_its_line_with_the_warning():
    code, rep = trace("GatherDistribute", "--sizes", "2x16x6x6", "--probes", "sweep,batch")
    err = rep["points"][0]["error"]
    line = case_line("softmax-no-dim")
    assert (err["type"], err["layer"], err["file"], err["line"]) == ("BatchDependence", "<root>", REL, line)
    assert err["hint"].startswith("batch mixing: softmax() without dim= picks dim 0 for a 0-, 1- or 3-D tensor, "
                                  "which here is the batch")
    (w,) = [w for w in rep["warnings"] if w["line"] == line]
    assert (w["file"], w["category"]) == (REL, "UserWarning")
    assert w["message"].startswith("Implicit dimension choice for softmax has been deprecated")


def test_top_k_over_ties_is_not_a_batch_leak():
    """A selection whose scores agree but whose order flips under batched rounding: the batched run is
    given the sample's own choice and nothing else differs, so the probe passes and says why."""
    code, rep = trace("QuerySelect", "--sizes", "2x8x6x6", "--probes", "sweep,batch")
    batch = rep["points"][0]["probes"]["batch"]
    assert code == 0 and batch["status"] == "pass"
    assert batch["detail"].startswith("samples independent: sample 0 equals its run alone once it makes the same "
                                      f"topk() choice at {REL}:{case_line('topk-ties')} (1 selection(s)")


def test_top_k_over_ties_is_not_a_layout_bug():
    code, rep = trace("QuerySelectLayout", "--sizes", "1x8x6x6", "--probes", "sweep,channels-last")
    probe = rep["points"][0]["probes"]["channels-last"]
    assert code == 0 and probe["status"] == "pass"
    assert probe["detail"] == ("same output once the channels_last run makes the same topk() choice at "
                               f"{REL}:{case_line('topk-layout')} (1 selection(s) over near-equal scores reorder "
                               "under the other kernels' rounding)")


def test_locating_stops_recording_at_its_memory_budget(monkeypatch):
    """Locating keeps every op's output of one run; past the budget there is no op-level answer (a model at
    640 would otherwise hold gigabytes), and the failure keeps its module-level location."""
    from yoloblocks_cli.tracing import mixing

    monkeypatch.setattr(mixing, "RECORD_BUDGET_BYTES", 0)
    code, rep = trace("GatherDistribute", "--sizes", "2x16x6x6", "--probes", "sweep,batch")
    err = first_error(rep)
    assert code == 1 and err["type"] == "BatchDependence" and err["line"] != case_line("softmax-no-dim")


def test_a_real_leak_after_a_replayed_choice_is_still_found():
    code, rep = trace("QuerySelectThenBatchMean", "--sizes", "2x8x6x6", "--probes", "sweep,batch")
    err = first_error(rep)
    assert code == 1 and (err["type"], err["file"], err["line"]) == ("BatchDependence", REL, case_line("batch-mean"))


# 5. parameter-free blocks -----------------------------------------------------------------------------


def test_parameter_free_block_is_judged_by_the_gradient_at_its_input():
    code, rep = trace("EnergyGate", "--sizes", "16x6x6", "--probes", "train,grads")
    probes = rep["points"][0]["probes"]
    assert code == 0
    assert (probes["train"]["status"], probes["grads"]["detail"]) == (
        "pass", "no parameters; the gradient reaches the input")
    code, rep = trace("SignMap", "--sizes", "16x6x6", "--probes", "train,grads")
    assert code == 1
    assert rep["points"][0]["probes"]["train"]["detail"] == (
        "RuntimeError: train-mode output has no tensor that requires grad")


# 6. repository root, width by keyword -----------------------------------------------------------------


def test_repository_root_is_found_from_the_file_imports():
    from yoloblocks_cli.loading.roots import find_root

    block = REPO / "model" / "attention" / "gated_pair.py"
    assert find_root(block.resolve()) == REPO.resolve()
    before = list(sys.path)
    code, rep = yb("trace", f"{block.relative_to(FIXTURES.parent.parent)}:GatedPair", "--kwargs", "channel=16",
                   "--sizes", "16x6x6", "--probes", "sweep")
    assert code == 0 and rep["built"] == ["GatedPair(channel=16)"]
    assert sys.path == before  # the folders are searched by the sibling finder, never put on sys.path


def test_root_option_names_the_repository():
    code, rep = yb("inspect", "model/attention/gated_pair.py:GatedPair".join(["tests/fixtures/userrepo/", ""]),
                   "--root", "tests/fixtures/userrepo", "--kwargs", "channel=16", "--size", "16x6x6",
                   "--no-latency", "--no-memory")
    assert code == 0 and rep["block"]["call"] == "GatedPair(channel=16)"
    assert rep["params"]["total"] == 2 * ((16 * 4 + 4) + (4 * 16 + 16))


def test_width_by_keyword_is_not_prepended_again():
    from yoloblocks_cli.loading.load import build_block, resolve_spec

    spec = resolve_spec(f"{REL}:AxisMLP")
    loaded = build_block(spec, 16, None, {"channels": 16})
    assert (loaded.args, loaded.call) == ([], "AxisMLP(channels=16)")


# 7. a skipped configuration is not a pass ---------------------------------------------------------------


def test_too_small_configuration_is_ok_null_and_counted_as_skipped():
    code, rep = yb("trace", "ADown", "--sizes", "16x1x20,16x8x8", "--probes", "sweep")
    assert code == 0
    skipped, ran = rep["points"]
    assert (skipped["ok"], skipped["status"], skipped["output_shape"]) == (None, "skip", None)
    assert (ran["ok"], ran["status"]) == (True, "pass")
    assert (rep["passed"], rep["failed"], rep["skipped"]) == (1, 0, 1)


def test_check_config_plugins_win_for_yaml_models(tmp_path):
    from yoloblocks_cli.checks.config import load_config
    from yoloblocks_cli.checks.run import run_check

    cfg_file = tmp_path / "yb.toml"
    cfg_file.write_text(f'plugins = ["{USER.as_posix()}"]\n[models.mine]\nmodel = "{(FIXTURES / "user-c2f.yaml").as_posix()}"\n'
                        'size = 64\nmax_params = 1000\n')
    result = run_check(load_config(cfg_file))
    assert result.ok  # 464 + 272 = 736 parameters with the user's C2f (2,352 with the registered one)
    assert result.report["targets"][0]["params"]["total"] == 736
    assert result.report["plugins"][0]["shadows_registered"] is True


def test_docs_page_shows_the_figures_these_tests_check():
    """docs/user-blocks.md is generated by docs/examples/user-blocks/make_doc.py; its deterministic
    lines must match what the tool says now."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "user-blocks.md").read_text(encoding="utf-8")
    for line in (
        f"note: C2f: using your class from {REL}:{class_line('C2f')}, not the registered block C2f it shadows",
        " 1     -1   1      272   C2f           [16, 16]        1x16x32x32",
        " torch (dispatch)      0.000   125,952   62,976",
        "  hint: fixed spatial size: a linear layer over the width (Linear(8, ...) applied along a spatial axis) "
        "was built for a map 8 wide but this input has 6 there (8x6)",
        f"  {REL}:{case_line('softmax-no-dim')}",
        "2 configurations x 1 probes: 1 passed, 0 failed, 1 skipped (too small for the block)",
        "error: forward(q, k, v) also needs k, v: pass --inputs k=BxNxC,v=BxNxC",
    ):
        assert line in page, line
