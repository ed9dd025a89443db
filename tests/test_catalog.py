"""The block catalog: `yb blocks` and the generated docs/blocks.md page."""

from __future__ import annotations

import json
from pathlib import Path


from blocks.registry import all_blocks, get_block
from yoloblocks_cli.catalog import entries as catalog

PAGE = Path(__file__).resolve().parents[1] / "docs" / "blocks.md"
REGENERATE = "regenerate it with: yb blocks --write-docs docs/blocks.md"


def test_committed_page_is_exactly_what_the_tool_generates():
    """Every row, parameter count, FLOPs figure, exponent and trace status (about 25 s)."""
    assert catalog.build_page() == PAGE.read_text(encoding="utf-8"), REGENERATE


def test_sweep_columns_can_be_blanked_for_a_quick_diff():
    fresh = catalog.build_page(sweeps=False)
    committed = PAGE.read_text(encoding="utf-8")
    assert catalog.without_sweep_columns(fresh) == catalog.without_sweep_columns(committed), REGENERATE


def test_every_registered_block_has_a_row():
    page = PAGE.read_text(encoding="utf-8")
    for info in all_blocks():
        assert f"| `{info.name}` | {info.family} | `{info.convention.name}` |" in page


def test_yaml_snippet_follows_the_convention():
    assert catalog.yaml_snippet(get_block("C2f")) == "- [-1, 3, C2f, [64]]"
    assert catalog.yaml_snippet(get_block("SPPF")) == "- [-1, 1, SPPF, [64]]"
    assert catalog.yaml_snippet(get_block("MLLAttention")) == "- [-1, 1, MLLAttention, []]"


def test_measure_reports_exact_params_flops_exponent_and_trace_status():
    m = catalog.measure(get_block("Conv"))
    # Conv(64, 64, 1): 64*64 weights + 2*64 BN; FLOPs 2 * 64 * 64 * 32 * 32
    assert m["params"] == 4_224 and m["flops"] == 8_388_608
    assert m["flops_exponent"] == 1.0 and m["passes_rectangular_sweep"] is True
    assert catalog.measure(get_block("Concat")) is None


def test_blocks_cli_filters_and_json(yb):
    proc = yb("blocks", "--family", "ssm", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == "yoloblocks.report/1" and report["command"] == "blocks"
    names = {b["name"] for b in report["blocks"]}
    assert names == {b.name for b in all_blocks() if b.family == "ssm"} and "SS2D" in names


def test_blocks_cli_one_block_and_errors(yb):
    proc = yb("blocks", "C2f")
    assert proc.returncode == 0, proc.stderr
    assert "- [-1, 3, C2f, [64]]" in proc.stdout and "29,056" in proc.stdout and "passes" in proc.stdout
    bad = yb("blocks", "C2ff")
    assert bad.returncode == 2 and "unknown block 'C2ff' (did you mean: C2f" in bad.stderr
    assert "Traceback" not in bad.stderr
    fam = yb("blocks", "--family", "transformers")
    assert fam.returncode == 2 and "unknown family 'transformers'" in fam.stderr
