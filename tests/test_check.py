"""`yb check`: configuration errors, budget verdicts, baseline diffs and atomic updates, exit codes."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from yoloblocks_cli.checks.baseline import diff_baseline, load_baseline, write_atomic, write_baseline
from yoloblocks_cli.checks.budget import evaluate_budgets
from yoloblocks_cli.checks.config import (Budgets, ConfigError, Tolerance, find_config, load_config,
                                         parse_tolerance)
from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.measuring.measure import Measurement

from conftest import ROOT


def _write(tmp_path: Path, text: str, name: str = "yb.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def _error(tmp_path: Path, text: str, name: str = "yb.toml") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text, name))
    assert info.value.exit_code == 2
    return str(info.value)


GOOD = """
    device = "cpu"
    reference = "c2f"

    [budgets]
    max_gflops = 10

    [blocks.c2f]
    block = "C2f"
    size = "64x40x40"
    args = [64, 1]
    sweep = ["64x40x40", "64x48x32"]
    max_params = 20000

    [blocks.sppf]
    block = "SPPF"
    size = "64x20x20"
    max_gflops = 0.5
    max_latency_ratio = 1.5

    [models.yolov8n]
    size = 320
    max_params = 3200000

    [baseline]
    file = "base.json"
    params = 0
    gflops = "2%"
    latency_ratio = "10%"
"""


# ----------------------------------------------------------------------------- configuration


def test_good_config_parses_into_targets_budgets_and_baseline(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert [(t.name, t.kind, t.spec) for t in cfg.targets] == [
        ("c2f", "block", "C2f"), ("sppf", "block", "SPPF"), ("yolov8n", "model", "yolov8n")]
    c2f, sppf, v8 = cfg.targets
    assert c2f.args == [64, 1] and c2f.sweep == ["64x40x40", "64x48x32"] and c2f.size == "64x40x40"
    assert c2f.budgets == Budgets(max_params=20000, max_gflops=10, max_latency_ratio=None)
    assert sppf.budgets == Budgets(max_params=None, max_gflops=0.5, max_latency_ratio=1.5)
    assert v8.size == "320" and v8.reference == "c2f"
    assert cfg.baseline.file == tmp_path / "base.json"
    assert cfg.baseline.tolerances == {"params": Tolerance(0, False), "gflops": Tolerance(2, True),
                                       "latency_ratio": Tolerance(10, True)}
    assert cfg.needs_latency


def test_latency_is_not_timed_when_nothing_uses_it(tmp_path):
    cfg = load_config(_write(tmp_path, '[blocks.C2f]\nsize = "64x8x8"\nmax_params = 1\n'))
    assert not cfg.needs_latency and cfg.targets[0].spec == "C2f"


def test_wrong_type_names_file_table_and_key(tmp_path):
    msg = _error(tmp_path, '[budgets]\nmax_gflops = "ten"\n[blocks.C2f]\nsize = "64x8x8"\n')
    assert msg == "yb.toml: [budgets] max_gflops must be a number, got 'ten'"


def test_params_budget_must_be_an_integer(tmp_path):
    msg = _error(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "64x8x8"\nmax_params = 1.5\n')
    assert msg == "yb.toml: [blocks.c2f] max_params must be an integer, got 1.5"


def test_unknown_key_gets_did_you_mean(tmp_path):
    msg = _error(tmp_path, '[budgets]\nmax_gflop = 3\n[blocks.C2f]\nsize = "64x8x8"\n')
    assert msg == "yb.toml: [budgets] unknown key 'max_gflop' (did you mean 'max_gflops'?)"


def test_unknown_top_level_table_gets_did_you_mean(tmp_path):
    msg = _error(tmp_path, '[bloks.C2f]\nsize = "64x8x8"\n')
    assert msg == "yb.toml: unknown key 'bloks' (did you mean 'blocks'?)"


def test_unknown_key_in_pyproject_names_the_tool_table(tmp_path):
    msg = _error(tmp_path, '[project]\nname = "x"\n[tool.yoloblocks.blocks.c2f]\nblock = "C2f"\n'
                           'size = "64x8x8"\nsweeps = ["64x8x8"]\n', name="pyproject.toml")
    assert msg == "pyproject.toml: [tool.yoloblocks.blocks.c2f] unknown key 'sweeps' (did you mean 'sweep'?)"


def test_pyproject_config_is_found_and_parsed(tmp_path):
    _write(tmp_path, '[project]\nname = "x"\n[tool.yoloblocks]\ncounter = "fvcore"\n'
                     '[tool.yoloblocks.blocks.c2f]\nblock = "C2f"\nsize = "64x8x8"\n', name="pyproject.toml")
    path = find_config(tmp_path)
    assert path.name == "pyproject.toml"
    cfg = load_config(path)
    assert cfg.counter == "fvcore" and cfg.targets[0].spec == "C2f"


def test_yb_toml_wins_over_pyproject(tmp_path):
    _write(tmp_path, '[tool.yoloblocks.blocks.a]\nsize = "1x1x1"\n', name="pyproject.toml")
    _write(tmp_path, '[blocks.b]\nsize = "1x1x1"\n')
    assert find_config(tmp_path).name == "yb.toml"


def test_no_configuration_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path)
    assert str(info.value).startswith(f"no configuration in {tmp_path}: create yb.toml or add [tool.yoloblocks]")


def test_block_without_size(tmp_path):
    msg = _error(tmp_path, '[blocks.c2f]\nblock = "C2f"\n')
    assert msg == 'yb.toml: [blocks.c2f] size is required for a block, e.g. size = "64x40x40"'


def test_no_targets(tmp_path):
    assert _error(tmp_path, 'device = "cpu"\n') == (
        "yb.toml: no targets: add a [blocks.NAME] or [models.NAME] table")


def test_bad_choice_and_bad_device(tmp_path):
    assert _error(tmp_path, 'counter = "thop"\n[blocks.C2f]\nsize = "64x8x8"\n') == (
        "yb.toml: counter must be one of torch, ultralytics, fvcore, got 'thop'")
    assert _error(tmp_path, 'device = "gpu"\n[blocks.C2f]\nsize = "64x8x8"\n') == (
        "yb.toml: device must be cpu, cuda or cuda:N, got 'gpu'")


def test_reference_must_be_a_target(tmp_path):
    msg = _error(tmp_path, 'reference = "c2g"\n[blocks.c2f]\nblock = "C2f"\nsize = "64x8x8"\n')
    assert msg == "yb.toml: reference 'c2g' is not a target (did you mean 'c2f'?)"


def test_latency_budget_needs_a_reference(tmp_path):
    msg = _error(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "64x8x8"\nmax_latency_ratio = 2\n')
    assert msg == ('yb.toml: c2f: max_latency_ratio needs a reference target: set reference = "NAME" '
                   "at the top level or in the target's table")


def test_bad_tolerance(tmp_path):
    msg = _error(tmp_path, '[blocks.C2f]\nsize = "64x8x8"\n[baseline]\nfile = "b.json"\ngflops = "2 percent"\n')
    assert msg == ('yb.toml: [baseline] gflops must be a tolerated increase: a number >= 0 or a percentage '
                   "such as \"2%\", got '2 percent'")


def test_sweep_must_be_a_list(tmp_path):
    msg = _error(tmp_path, '[blocks.C2f]\nsize = "64x8x8"\nsweep = "64x8x8"\n')
    assert msg == ('yb.toml: [blocks.C2f] sweep must be a list of sizes such as ["64x40x40", "64x48x32"], '
                   "got '64x8x8'")


def test_invalid_toml(tmp_path):
    assert _error(tmp_path, "[blocks.C2f\n").startswith("yb.toml: invalid TOML: ")


def test_parse_tolerance():
    assert parse_tolerance(0) == Tolerance(0.0, False)
    assert parse_tolerance("2.5%") == Tolerance(2.5, True)
    assert parse_tolerance(0.25).limit(1.0) == 1.25
    assert parse_tolerance("10%").limit(2.0) == pytest.approx(2.2)
    for bad in (-1, True, "2", "x%"):
        with pytest.raises(ValueError):
            parse_tolerance(bad)


# ----------------------------------------------------------------------------- budgets


def _m(name="c2f", params=18_560, flops=59_392_000, ratio=None, ref=None) -> Measurement:
    return Measurement(name, "block", "C2f(64, 64, 1)", [1, 64, 40, 40], params,
                       flops={"torch": flops, "ultralytics": None, "fvcore": None},
                       latency_ratio=ratio, reference=ref)


def test_budget_verdicts_are_exact():
    at_limit = evaluate_budgets(_m(), Budgets(max_params=18_560, max_gflops=0.059392))
    assert [(f.check, f.ok, f.message) for f in at_limit] == [
        ("max_params", True, "params 18,560 <= 18,560"),
        ("max_gflops", True, "GFLOPs (torch) 0.059 <= 0.059392"),
    ]
    over = evaluate_budgets(_m(params=18_561, flops=59_392_001), Budgets(max_params=18_560, max_gflops=0.059392))
    assert [(f.check, f.ok, f.message) for f in over] == [
        ("max_params", False, "params 18,561 > max_params 18,560 (+1, 0.0% over)"),
        ("max_gflops", False, "GFLOPs (torch) 0.059 > max_gflops 0.059392 (0.0% over)"),
    ]


def test_latency_ratio_budget():
    ok, bad = (evaluate_budgets(_m(ratio=r, ref="sppf"), Budgets(max_latency_ratio=1.5))[0] for r in (1.5, 1.51))
    assert (ok.ok, ok.message) == (True, "latency 1.50x sppf <= 1.5x")
    assert (bad.ok, bad.message) == (False, "latency 1.51x sppf > max_latency_ratio 1.5x")


def test_missing_counter_fails_the_gflops_budget():
    (f,) = evaluate_budgets(_m(), Budgets(max_gflops=1), counter="fvcore")
    assert (f.ok, f.message) == (False, "GFLOPs (fvcore) unavailable: the fvcore counter did not produce a number")


# ----------------------------------------------------------------------------- baseline


def _baseline_entries():
    return {"c2f": {"name": "c2f", "params": {"total": 18_560},
                    "flops": {"torch": 59_392_000, "fvcore": None}, "latency_ratio": 1.0},
            "gone": {"name": "gone", "params": {"total": 1}}}


TOL = {"params": Tolerance(0, False), "gflops": Tolerance(2, True), "latency_ratio": Tolerance(10, True)}


def test_baseline_within_tolerance():
    findings = diff_baseline([_m(flops=60_579_840, ratio=1.1, ref="c2f")], _baseline_entries(), TOL)
    assert [(f.check, f.ok, f.message) for f in findings] == [
        ("baseline params", True, "params 18,560 -> 18,560 (+0, +0.00%) within tolerance 0"),
        ("baseline gflops", True, "gflops 0.059 -> 0.061 (+0.00119, +2.00%) within tolerance 2%"),
        ("baseline latency_ratio", True, "latency_ratio 1.00x -> 1.10x (+0.10x, +10.00%) within tolerance 10%"),
    ]


def test_baseline_regressions_fail_and_improvements_pass():
    findings = diff_baseline([_m(params=18_561, flops=60_579_841, ratio=0.5)], _baseline_entries(), TOL)
    assert [(f.check, f.ok) for f in findings] == [
        ("baseline params", False), ("baseline gflops", False), ("baseline latency_ratio", True)]
    assert findings[0].message == "params 18,560 -> 18,561 (+1, +0.01%) exceeds tolerance 0"
    assert findings[2].message == "latency_ratio 1.00x -> 0.50x (-0.50x, -50.00%) within tolerance 10%"


def test_new_target_is_noted_not_failed():
    (f,) = diff_baseline([_m(name="new")], _baseline_entries(), TOL)
    assert (f.target, f.check, f.ok, f.message) == ("new", "baseline", True, "not in the baseline (new target)")


def test_load_baseline_errors(tmp_path):
    p = tmp_path / "b.json"
    with pytest.raises(UsageError, match="not found: create it with `yb check --update-baseline`"):
        load_baseline(p)
    p.write_text("{", encoding="utf-8")
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_baseline(p)
    p.write_text('{"schema": "other"}', encoding="utf-8")
    with pytest.raises(UsageError, match="is not a yb report"):
        load_baseline(p)
    write_baseline(p, {"schema": "yoloblocks.report/1", "targets": [{"name": "a", "params": {"total": 3}}]})
    assert load_baseline(p) == {"a": {"name": "a", "params": {"total": 3}}}


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "base.json"
    p.write_text("OLD", encoding="utf-8")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(p, "NEW" * 1000)
    assert p.read_text(encoding="utf-8") == "OLD"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["base.json"]  # no temporary file left
    monkeypatch.undo()
    write_atomic(p, "NEW")
    assert p.read_text(encoding="utf-8") == "NEW" and sorted(x.name for x in tmp_path.iterdir()) == ["base.json"]


def test_atomic_write_failure_while_writing_leaves_nothing_partial(tmp_path):
    p = tmp_path / "base.json"
    with pytest.raises(TypeError):
        write_atomic(p, 123)  # fails inside the write: nothing may be left behind
    assert list(tmp_path.iterdir()) == []


def test_unknown_probe_gets_did_you_mean(tmp_path):
    msg = _error(tmp_path, '[blocks.C2f]\nsize = "64x8x8"\nprobes = ["batc"]\n')
    assert msg == "yb.toml: [blocks.C2f] probes has unknown probe 'batc' (did you mean 'batch'?)"


# ----------------------------------------------------------------------------- the command, in process

SQUARE = (ROOT / "tests" / "fixtures" / "check_square_only.py").as_posix()


def yb_in(tmp_path: Path, capsys, *args: str) -> tuple[int, str, str]:
    """Run `yb ARGS` in this process from ``tmp_path`` (torch is already imported: fast)."""
    from yoloblocks_cli.app import main

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as info:
            main(list(args))
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return info.value.code, out, err


PASSING = f"""
    reference = "c2f"
    rounds = 2
    warmup = 0

    [blocks.c2f]
    block = "C2f"
    size = "16x8x8"
    sweep = ["16x8x8", "16x8x6"]
    max_params = 2_000
    max_latency_ratio = 1

    [blocks.square]
    block = "{SQUARE}:SquareOnly"
    size = "8x4x4"
    max_params = 72

    [baseline]
    file = "base.json"
    params = 0
    gflops = "2%"
"""


def test_check_passes_writes_baseline_junit_and_json(tmp_path, capsys, quiet_machine):
    _write(tmp_path, PASSING)
    code, out, err = yb_in(tmp_path, capsys, "check", "--update-baseline", "--junit", "junit.xml")
    assert code == 0, out + err
    assert "\x1b[" not in out  # not a terminal: plain text
    assert "params 1,888 <= 2,000" in out and "latency 1.00x c2f <= 1x" in out
    assert "baseline written: " in out and out.rstrip().endswith("5 passed, 0 failed")
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["schema"] == "yoloblocks.report/1" and base["command"] == "check"
    assert [(t["name"], t["params"]["total"]) for t in base["targets"]] == [("c2f", 1888), ("square", 72)]
    assert base["targets"][0]["latency_ratio"] == 1.0
    junit = (tmp_path / "junit.xml").read_text()
    assert '<testsuite name="yb check" tests="5" failures="0"' in junit
    assert '<testcase classname="yb.check.c2f" name="sweep 1x16x8x6"' in junit

    code, out, _ = yb_in(tmp_path, capsys, "check", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["failed"] == 0
    assert {c["check"] for c in report["checks"] if c["target"] == "square"} == {
        "max_params", "baseline params", "baseline gflops"}


def test_check_fails_with_exit_1_and_keeps_the_baseline(tmp_path, capsys, quiet_machine):
    _write(tmp_path, PASSING)
    assert yb_in(tmp_path, capsys, "check", "--update-baseline")[0] == 0
    before = (tmp_path / "base.json").read_bytes()
    _write(tmp_path, PASSING.replace("max_params = 72", 'max_params = 71\n    sweep = ["8x4x4", "8x4x6"]')
           .replace("max_latency_ratio = 1", "max_latency_ratio = 0.5")
           .replace('size = "16x8x8"', 'size = "16x8x8"\n    args = [16, 2]'))
    code, out, err = yb_in(tmp_path, capsys, "check", "--update-baseline", "--junit", "junit.xml")
    assert code == 1
    assert "baseline NOT updated: fix the failed checks first" in err
    assert (tmp_path / "base.json").read_bytes() == before
    assert "params 72 > max_params 71 (+1, 1.4% over)" in out
    assert "latency 1.00x c2f > max_latency_ratio 0.5x" in out
    junit = (tmp_path / "junit.xml").read_text()
    assert 'failures="4"' in junit
    code, out, _ = yb_in(tmp_path, capsys, "check", "--json")
    report = json.loads(out)
    failed = {(c["target"], c["check"]): c["message"] for c in report["checks"] if not c["ok"]}
    assert set(failed) == {("c2f", "max_params"), ("c2f", "max_latency_ratio"), ("c2f", "baseline params"),
                           ("c2f", "baseline gflops"), ("square", "max_params"), ("square", "sweep 1x8x4x6")}
    assert failed[("c2f", "baseline params")] == "params 1,888 -> 3,200 (+1,312, +69.49%) exceeds tolerance 0"
    assert failed[("square", "sweep 1x8x4x6")] == (
        "RuntimeError: shape '[1, 8, 4, 4]' is invalid for input of size 192 [layer <root> (SquareOnly), at "
        "check_square_only.py:18]; hint: assumes a square input: reshapes 24 (4x6) tokens to 4x4 with "
        "s = int(sqrt(N)); pass H and W from the input instead (x.shape[-2:])")


def test_check_malformed_config_exits_2_with_one_line(tmp_path, capsys):
    _write(tmp_path, '[budgets]\nmax_gflops = "ten"\n[blocks.C2f]\nsize = "16x8x8"\n')
    code, out, err = yb_in(tmp_path, capsys, "check")
    assert code == 2 and out == ""
    assert err == "error: yb.toml: [budgets] max_gflops must be a number, got 'ten'\n"


def test_check_bad_size_and_unknown_block_exit_2(tmp_path, capsys):
    _write(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "16x8x8"\nsweep = ["16x8"]\n')
    code, _, err = yb_in(tmp_path, capsys, "check")
    assert code == 2
    assert err == ("error: yb.toml: [blocks.c2f] sweep has malformed size '16x8': a block takes CxHxW or "
                   "BxCxHxW, e.g. 64x160x160\n")
    _write(tmp_path, '[blocks.c2f]\nblock = "C2F_"\nsize = "16x8x8"\n')
    code, _, err = yb_in(tmp_path, capsys, "check")
    assert code == 2
    assert err.splitlines()[-1].startswith("error: yb.toml: [blocks.c2f] unknown block 'C2F_' (did you mean")


def test_check_markdown_summary(tmp_path, capsys):
    _write(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "16x8x8"\nmax_params = 1888\n')
    code, out, _ = yb_in(tmp_path, capsys, "check", "--markdown")
    assert code == 0
    assert out == ("| Target | Check | Result | Detail |\n| --- | --- | --- | --- |\n"
                   "| c2f | max_params | pass | params 1,888 <= 1,888 |\n")


def test_check_cli_exit_code_in_a_subprocess(tmp_path):
    import subprocess
    import sys

    from conftest import _env

    p = _write(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "16x8x8"\nmax_params = 1887\n')
    proc = subprocess.run([sys.executable, "-m", "yoloblocks_cli", "check", "--config", str(p)],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "params 1,888 > max_params 1,887 (+1, 0.1% over)" in proc.stdout


def test_tiny_latency_ratio_keeps_significant_digits():
    (f,) = evaluate_budgets(_m(ratio=0.004213, ref="c2f"), Budgets(max_latency_ratio=2))
    assert f.message == "latency 0.00421x c2f <= 2x"


# ----------------------------------------------------------------------------- CI files


def test_documented_workflow_is_the_shipped_file_and_valid_yaml():
    import yaml

    shipped = (ROOT / "docs" / "examples" / "yb-check.yml").read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "check.md").read_text(encoding="utf-8")
    assert "```yaml\n" + shipped.rstrip() + "\n```" in doc
    flow = yaml.safe_load(shipped)
    steps = flow["jobs"]["yb-check"]["steps"]
    run = next(s for s in steps if s.get("name") == "yb check")
    assert run["shell"] == "bash" and run["run"].startswith("yb check --junit yb-check.xml --markdown")


def test_pre_commit_hook_definition():
    import yaml

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert (hook["id"], hook["entry"], hook["language"], hook["pass_filenames"]) == (
        "yb-check", "yb check", "system", False)


# ----------------------------------------------------------------------------- models


@pytest.fixture
def fake_models(monkeypatch):
    """A stand-in for yoloblocks_cli.loading.yaml_model: records calls, builds a tiny two-layer 'model'."""
    import sys
    import types

    import torch.nn as nn

    calls = []
    fake = types.ModuleType("yoloblocks_cli.loading.yaml_model")

    def resolve_model_path(name):
        if name != "tiny":
            raise FileNotFoundError(name)
        return Path("tiny.yaml")

    def build_model(name, scale=None, plugins=(), nc=None):
        calls.append((name, scale, tuple(plugins), nc))
        layers = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 4, 1))  # 224 + 36 params
        return types.SimpleNamespace(model=nn.Sequential(layers), layers=[], stride=[2])

    fake.resolve_model_path, fake.build_model = resolve_model_path, build_model
    monkeypatch.setitem(sys.modules, "yoloblocks_cli.loading.yaml_model", fake)
    return calls


def test_models_are_built_by_the_yaml_helper_and_checked(tmp_path, capsys, fake_models):
    _write(tmp_path, '[models.tiny]\nscale = "n"\nnc = 3\nsize = 32\nsweep = [32, "32x24"]\nmax_params = 260\n'
                     '[models.other]\nmodel = "nets/other.yaml"\nsize = "2x3x16x16"\nmax_params = 259\n')
    code, out, _ = yb_in(tmp_path, capsys, "check", "--json")
    report = json.loads(out)
    assert code == 1
    assert fake_models == [("tiny", "n", (), 3), ("nets/other.yaml", None, (), None)]
    assert [(t["name"], t["kind"], t["target"], t["input_shape"], t["params"]["total"])
            for t in report["targets"]] == [("tiny", "model", "tiny (scale n)", [1, 3, 32, 32], 260),
                                            ("other", "model", "nets/other.yaml", [2, 3, 16, 16], 260)]
    verdicts = {(c["target"], c["check"]): c["ok"] for c in report["checks"]}
    assert verdicts == {("tiny", "max_params"): True, ("tiny", "sweep 1x3x32x32"): True,
                        ("tiny", "sweep 1x3x32x24"): True, ("other", "max_params"): False}


def test_missing_baseline_and_update_without_baseline_table_exit_2(tmp_path, capsys):
    _write(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "16x8x8"\n[baseline]\nfile = "nope.json"\nparams = 0\n')
    code, out, err = yb_in(tmp_path, capsys, "check")
    assert (code, out) == (2, "")
    assert err == (f"error: baseline file {tmp_path / 'nope.json'} not found: create it with "
                   "`yb check --update-baseline`\n")
    _write(tmp_path, '[blocks.c2f]\nblock = "C2f"\nsize = "16x8x8"\n')
    assert yb_in(tmp_path, capsys, "check", "--update-baseline")[::2] == (
        2, 'error: yb.toml: --update-baseline needs a [baseline] table with file = "..."\n')
