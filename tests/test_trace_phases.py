"""`yb trace` as a CI smoke check: default two-phase sweep, grouped failures, CI lines,
interrupts (SIGTERM -> partial report, exit 130), JUnit times; `yb check --shard`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import run_yb
from yoloblocks_cli.checks.config import load_config
from yoloblocks_cli.checks.shard import Shard, parse_shard, select
from yoloblocks_cli.errors import UsageError

REL = "tests/fixtures/broken_blocks.py"


pytestmark = pytest.mark.usefixtures("repo_cwd_one_thread")


def test_default_block_sweep_groups_the_square_failure(tmp_path):
    out = tmp_path / "trace.json"
    junit = tmp_path / "trace.xml"
    proc = run_yb("trace", f"{REL}:SquareAttention", "--size", "8x6x6", "--output", str(out), "--junit", str(junit))
    assert proc.returncode == 1, proc.stderr
    rep = json.loads(out.read_text())
    pts = rep["points"]
    # 4..8 x 4..8, 1x6, 6x1, 12x12 at batch 1; 6x6, 6x4, 4x6, 1x6, 6x1, 12x12 at batch 2
    assert len(pts) == rep["configurations"] == 28 + 6
    assert [p["input_shape"] for p in pts if p["phase"] == "numeric"] == [[1, 8, 6, 6], [2, 8, 6, 4]]  # plan order
    assert rep["phases"]["numeric"]["configurations"] == [[2, 8, 6, 4], [1, 8, 6, 6]]
    bad = [p for p in pts if not p["ok"]]
    assert {tuple(p["input_shape"]) for p in bad} == {tuple(p["input_shape"]) for p in pts
                                                     if p["input_shape"][2] != p["input_shape"][3]}
    (group,) = rep["failure_groups"]
    assert (group["pattern"], group["of"], len(group["configurations"])) == ("every shape with H != W", 34, 26)
    assert (group["layer"], group["cause"]) == ("<root>", "square-assumption")
    # every failure is reported from real tensors, with the block's own line
    err = next(p for p in bad if p["input_shape"] == [2, 8, 4, 6])["error"]
    assert err["message"] == "shape '[2, 8, 4, 4]' is invalid for input of size 384"
    assert err["file"] == REL and err["layer_input_shape"] == [2, 8, 4, 6]
    shape_only = next(p for p in pts if p["input_shape"] == [1, 8, 5, 5])
    assert shape_only["phase"] == "shape" and shape_only["output_shape"] == [1, 8, 5, 5]
    assert shape_only["probes"]["train"]["detail"] == "train-mode forward: checked at batch >= 2"
    assert next(p for p in pts if p["input_shape"] == [2, 8, 12, 12])["probes"]["train"]["status"] == "pass"
    assert shape_only["probes"]["batch"]["status"] == "skip"
    assert shape_only["probes"]["batch"]["detail"] == "numeric probe: runs at 2x8x6x4, 1x8x6x6"
    base = next(p for p in pts if p["input_shape"] == [1, 8, 6, 6])  # eval-mode value probes only
    assert {k: v["status"] for k, v in base["probes"].items()} == {
        "sweep": "pass", "finite": "pass", "batch": "skip", "channels-last": "pass", "train": "skip", "grads": "skip"}
    assert base["probes"]["train"]["detail"] == "numeric probe: runs at 2x8x6x4"
    # text: one CI line per configuration (stdout is a pipe), then the grouped paragraph
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 34 and lines[-1].startswith("[34/34] 1x8x6x6")
    assert "fails at 26 of 34 configurations: every shape with H != W" in proc.stdout
    # JUnit: the cells that ran or were skipped because their configuration failed; not the
    # value probes of shape-only configurations nor batch-1 train cells (checked elsewhere)
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    expected = sum(1 for p in pts for r in p["probes"].values()
                   if not (p["phase"] == "shape" and r["status"] == "skip" and not r["detail"].startswith("not run:")))
    assert len(cases) == expected and len([c for c in cases if c.get("name").endswith("::sweep")]) == 34
    assert all(float(c.get("time")) > 0 for c in cases if c.get("name").endswith("::sweep"))


def test_sigterm_prints_and_writes_the_finished_configurations(tmp_path):
    out = tmp_path / "trace.json"
    junit = tmp_path / "trace.xml"
    proc = run_yb("trace", "tests/fixtures/meta_blocks.py:SigtermAt7", "--sizes", "4x5x5,4x6x6,4x7x7,4x8x8",
                  "--probes", "sweep", "--output", str(out), "--junit", str(junit))
    assert proc.returncode == 130, proc.stderr
    assert "interrupted: 2 of 4 configurations finished" in proc.stderr
    assert "Traceback" not in proc.stderr
    rep = json.loads(out.read_text())
    assert (rep["partial"], rep["interrupted"], rep["configurations"]) == (True, True, 4)
    assert [p["input_shape"] for p in rep["points"]] == [[1, 4, 5, 5], [1, 4, 6, 6]]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "2" and "partial" in suite.get("name")
    assert [(p.get("name"), p.get("value")) for p in suite.iter("property")] == [("partial", "true")]
    assert "1x4x6x6" in proc.stdout and "interrupted:" in proc.stdout


@pytest.mark.parametrize("text, shard", [("1/4", Shard(1, 4)), (" 4 / 4 ", Shard(4, 4))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1-2", "a/b"])
def test_parse_shard_rejects(text):
    with pytest.raises(UsageError, match="malformed --shard"):
        parse_shard(text)


def test_shards_keep_a_target_with_its_latency_reference(tmp_path):
    cfg_file = tmp_path / "yb.toml"
    cfg_file.write_text(
        '[blocks.a]\nblock = "Conv"\nsize = "8x8x8"\n'
        '[blocks.b]\nblock = "C2f"\nsize = "8x8x8"\nreference = "a"\nmax_latency_ratio = 9.0\n'
        '[blocks.c]\nblock = "Conv"\nsize = "8x8x8"\n'
        '[blocks.d]\nblock = "Conv"\nsize = "8x8x8"\n'
        '[blocks.e]\nblock = "Conv"\nsize = "8x8x8"\n')
    cfg = load_config(cfg_file)
    slices = [[t.name for t in select(cfg, Shard(k, 3)).targets] for k in (1, 2, 3)]
    assert slices == [["a", "b", "e"], ["c"], ["d"]]  # units (a, b), c, d, e round-robin
    assert sorted(n for s in slices for n in s) == ["a", "b", "c", "d", "e"]


def test_check_shard_cli(tmp_path):
    (tmp_path / "yb.toml").write_text('[blocks.a]\nblock = "Conv"\nsize = "8x8x8"\n'
                                      '[blocks.b]\nblock = "Conv"\nsize = "8x6x6"\n')
    proc = run_yb("check", "--config", str(tmp_path / "yb.toml"), "--shard", "2/2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [t["name"] for t in json.loads(proc.stdout)["targets"]] == ["b"]
    bad = run_yb("check", "--config", str(tmp_path / "yb.toml"), "--shard", "3/2")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: malformed --shard '3/2': K must be between 1 and N (N >= 1)")


def test_check_junit_cases_carry_times(tmp_path):
    (tmp_path / "yb.toml").write_text('[blocks.a]\nblock = "Conv"\nsize = "8x8x8"\nmax_params = 1000\n'
                                      'sweep = ["8x8x8", "8x6x5"]\nprobes = ["batch"]\n')
    junit = tmp_path / "check.xml"
    proc = run_yb("check", "--config", str(tmp_path / "yb.toml"), "--junit", str(junit))
    assert proc.returncode == 0, proc.stderr
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == ["max_params", "sweep 1x8x8x8", "batch 1x8x8x8", "sweep 1x8x6x5",
                                              "batch 1x8x6x5"]
    assert all(float(c.get("time")) > 0 for c in cases if c.find("skipped") is None)


def test_documented_sharded_workflow_is_the_shipped_file_and_valid_yaml():
    import yaml

    root = Path(__file__).resolve().parents[1]
    shipped = (root / "docs" / "examples" / "yb-check-sharded.yml").read_text(encoding="utf-8")
    assert "```yaml\n" + shipped.rstrip() + "\n```" in (root / "docs" / "check.md").read_text(encoding="utf-8")
    job = yaml.safe_load(shipped)["jobs"]["yb-check"]
    assert job["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    run = next(s for s in job["steps"] if s.get("name", "").startswith("yb check, shard"))
    assert run["run"].startswith("yb check --shard ${{ matrix.shard }}/4 --junit")
