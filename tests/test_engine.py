"""One engine under every command: the same figures whichever command asks, and the small
errors issue 14 listed, each fixed."""

from __future__ import annotations

import json


def test_engine_measures_c2f_as_the_pinned_figures():
    from yoloblocks_cli.loading.targets import resolve_target
    from yoloblocks_cli.measuring.engine import Plan, measure

    t = resolve_target("C2f", "64x80x80")
    m = measure(t, t.shape, Plan(latency=False))
    assert (m.params, m.trainable, m.buffers) == (29_056, 29_056, 388)
    assert (m.flops["torch"], m.flops["ultralytics"], m.flops["fvcore"]) == (367_001_600, 376_832_000, 371_916_800)
    assert m.output_shape == [1, 64, 80, 80] and m.memory_peak == 8_192_000 and m.latency is None


def test_inspect_compare_scale_and_catalog_print_the_same_flops(yb_in):
    """The same block at the same shape: one engine, one figure, whichever command asks."""
    from blocks.registry import get_block
    from yoloblocks_cli.catalog import entries

    code, out, _ = yb_in("inspect", "C2f", "--size", "16x20x20", "--no-latency", "--no-memory", "--json")
    inspect_flops = json.loads(out)["flops"]["torch"]
    code2, out2, _ = yb_in("compare", "C2f", "C3", "--size", "16x20x20", "--no-latency", "--json")
    compare_flops = json.loads(out2)["targets"][0]["flops"]["torch"]
    code3, out3, _ = yb_in("scale", "C2f", "--channels", "16", "--sizes", "20x20,40x40", "--metrics", "flops",
                           "--json")
    scale_flops = json.loads(out3)["targets"][0]["points"][0]["flops"]
    catalog_flops = entries.measure(get_block("C2f"), channels=16, hw=(20, 20), sweeps=False)["flops"]
    assert (code, code2, code3) == (0, 0, 0)
    # C2f(16, 16) at 20x20: cv1 1x1 16->16, one Bottleneck of two 3x3 8->8, cv2 1x1 24->16 (2 FLOPs per MAC)
    expected = 2 * 400 * (16 * 16 + 2 * 8 * 8 * 9 + 24 * 16)
    assert inspect_flops == compare_flops == scale_flops == catalog_flops == expected == 1_433_600


def test_inspect_several_widths_prints_each_widths_params(yb_in):
    code, out, _ = yb_in("inspect", "C2f", "--size", "64x20x20,32x20x20", "--no-latency", "--no-memory")
    assert code == 0
    assert "29,056" in out and "7,360" in out and "parameters  per input width" in out
    code, out, _ = yb_in("inspect", "C2f", "--size", "64x20x20,32x20x20", "--no-latency", "--json")
    assert [r["params"]["total"] for r in json.loads(out)["results"]] == [29_056, 7_360]


def test_help_texts_say_what_each_command_takes(yb_in):
    _, out, _ = yb_in("inspect", "--help")
    assert "for a model" not in out and "CxHxW or BxCxHxW" in out
    _, out, _ = yb_in("scale", "--help")
    assert "overrides the B in --size" not in out and "Batch size of every measured input" in out


def test_a_failing_block_names_its_line_through_the_engine(tmp_path, yb_in):
    f = tmp_path / "sq.py"
    f.write_text("import torch\n\nclass Sq(torch.nn.Module):\n    def forward(self, x):\n"
                 "        b, c, h, w = x.shape\n        return x.reshape(b, c, h * w // 7, 7)\n")
    code, _, err = yb_in("inspect", f"{f}:Sq", "--size", "4x5x5", "--no-latency")
    assert code == 1
    assert err.strip().startswith("error: Sq() forward on 1x4x5x5 raised RuntimeError: shape '[1, 4, 3, 7]' is invalid")
    assert err.strip().endswith("sq.py:6 in forward)")
