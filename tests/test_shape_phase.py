"""The shape phase (meta tensors): same verdicts as real tensors, and the real-tensor fallback."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from conftest import FIXTURES
from yoloblocks_cli.loading.spec import Shape
from yoloblocks_cli.tracing.probes import Target
from yoloblocks_cli.tracing.shape_phase import ShapeChecker
from yoloblocks_cli.tracing.tracer import ShapeTracer
from yoloblocks_cli.tracing.validation_shapes import block_shapes

REL = "tests/fixtures/meta_blocks.py"
BROKEN = ["SquareAttention", "FixedPosTable", "HardCodedWidth", "OddSizeConcat", "BatchLeak", "UnusedBranch",
          "NaNAtLargeSize", "OOMAtLargeSize"]


pytestmark = pytest.mark.usefixtures("repo_cwd_one_thread")


def marker_line(tag: str) -> int:
    lines = (FIXTURES / "meta_blocks.py").read_text().splitlines()
    hits = [i for i, line in enumerate(lines, 1) if f"# META:{tag}" in line]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("name", BROKEN)
def test_meta_fails_exactly_where_real_tensors_fail(name):
    sys.path.insert(0, str(FIXTURES))
    try:
        import broken_blocks
    finally:
        sys.path.remove(str(FIXTURES))
    m = getattr(broken_blocks, name)(8).eval()
    checker = ShapeChecker(Target(m, ShapeTracer(m), name))
    meta_fail, real_fail = set(), set()
    for s in block_shapes(Shape(1, 8, 20, 20), batches=(1,)):
        if not checker.run(s.shape).ok:
            meta_fail.add(str(s.shape))
        try:
            with torch.no_grad():
                m(torch.rand(s.shape.dims))
        except Exception:  # noqa: BLE001
            real_fail.add(str(s.shape))
    assert meta_fail == real_fail
    assert not checker.fallbacks
    assert len(real_fail) > 0 or name in {"BatchLeak", "UnusedBranch", "NaNAtLargeSize"}


def test_meta_forward_shares_the_module_and_leaves_it_real():
    from blocks.conv import Conv

    m = Conv(4, 8, 3, 2).eval()
    checker = ShapeChecker(Target(m, ShapeTracer(m), "Conv"))
    out = checker.run(Shape(1, 4, 9, 7))
    assert out.ok and tuple(out.output.shape) == (1, 8, 5, 4) and out.output.device.type == "meta"
    assert all(p.device.type == "cpu" for p in m.parameters())
    assert "forward" not in torch.nn.BatchNorm2d.__dict__  # the meta shortcuts are undone
    wrong = checker.run(Shape(1, 5, 9, 7))  # a conv built for 4 channels
    # The meta kernel's message is terser than the real one: reports come from the real rerun.
    assert not wrong.ok and str(wrong.error) == "Invalid channel dimensions"


def yb_json(*args: str) -> tuple[int, dict]:
    from yoloblocks_cli.app import app

    result = CliRunner().invoke(app, [*args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout)


def test_item_block_falls_back_to_real_tensors_and_passes():
    code, rep = yb_json("trace", f"{REL}:ItemScale", "--size", "4x6x6")
    assert code == 0, [p.get("error") for p in rep["points"] if not p["ok"]]
    assert rep["phases"]["shape"]["configurations"] == len(rep["points"]) - 2
    (fb,) = rep["fallbacks"]
    assert (fb["layer"], fb["module"]) == ("<root>", "ItemScale")
    assert (fb["file"], fb["line"]) == (REL, marker_line("item"))
    assert "meta" in fb["reason"]


def test_fallback_is_the_innermost_module_and_real_failures_still_fail():
    code, rep = yb_json("trace", f"{REL}:ItemThenSquare", "--size", "4x6x6", "--probes", "sweep")
    assert code == 1
    (fb,) = rep["fallbacks"]
    assert (fb["layer"], fb["module"]) == ("scale", "ItemScale")  # only the child runs for real
    bad = {tuple(p["input_shape"]) for p in rep["points"] if not p["ok"]}
    assert bad == {tuple(p["input_shape"]) for p in rep["points"] if p["input_shape"][2] != p["input_shape"][3]}
    err = next(p for p in rep["points"] if p["input_shape"] == [1, 4, 6, 5])["error"]
    assert (err["file"], err["line"], err["cause"]) == (REL, marker_line("square"), "square-assumption")
    (group,) = rep["failure_groups"]
    assert (group["pattern"], group["of"], len(group["configurations"])) == (
        "every shape with H != W", len(rep["points"]), len(bad))
