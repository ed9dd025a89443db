"""The YAML builder: exact ultralytics parameter counts, scale rules, safety and located errors.

Reference numbers come from ultralytics 8.4 (``DetectionModel(name + ".yaml")``, ``get_flops``)
run in a separate environment; the default suite builds a representative subset.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading.yaml_model import (build_model, guess_model_scale, parse_activation, resolve_model_path,
                                       ultralytics_gflops)

# name: (parameters, gradients, len(list(model.modules())), ultralytics get_flops GFLOPs at 640)
REFERENCE = {
    "yolov8n": (3157200, 3157184, 225, 8.855), "yolov8s": (11166560, 11166544, 225, 28.812),
    "yolov8m": (25902640, 25902624, 295, 79.314), "yolov8l": (43691520, 43691504, 365, 165.735),
    "yolov8x": (68229648, 68229632, 365, 258.537),
    "yolo11n": (2624080, 2624064, 319, 6.673), "yolo11s": (9458752, 9458736, 319, 21.836),
    "yolo11m": (20114688, 20114672, 409, 68.643), "yolo11l": (25372160, 25372144, 631, 87.851),
    "yolo11x": (56966176, 56966160, 631, 196.315),
    "yolov9t": (2128720, 2128704, 917, 8.481), "yolov9s": (7318368, 7318352, 917, 27.552),
    "yolov9m": (20216160, 20216144, 603, 77.860), "yolov9c": (25590912, 25590896, 618, 104.014),
    "yolov9e": (58206592, 58206576, 1225, 193.007),
    "yolov10n": (2775520, 2775504, 385, 8.799), "yolov10s": (8128272, 8128256, 402, 25.228),
    "yolov10m": (16576768, 16576752, 498, 64.609), "yolov10b": (20574384, 20574368, 518, 99.468),
    "yolov10l": (25888688, 25888672, 628, 127.989), "yolov10x": (31808960, 31808944, 688, 171.990),
    "yolov5n": (2654816, 2654800, 262, 7.839), "yolov5s": (9153152, 9153136, 262, 24.210),
    "yolov5m": (25111456, 25111440, 339, 64.603), "yolov5l": (53225024, 53225008, 416, 135.620),
    "yolov5x": (97276448, 97276432, 493, 247.313),
    "yolov8n-p2": (3354144, 3354128, 277, 17.429),
    "yolov8s-p2": (10884336, 10884320, 277, 39.670),
    "yolov8m-p2": (25082496, 25082480, 361, 98.981),
    "yolov8l-p2": (42888080, 42888064, 445, 206.266),
    "yolov8x-p2": (66637536, 66637520, 445, 317.981),
    "yolov8n-p6": (4984352, 4984336, 295, 8.845),
    "yolov8s-p6": (17911792, 17911776, 295, 28.726),
    "yolov8m-p6": (44887488, 44887472, 386, 83.460),
    "yolov8l-p6": (62384016, 62384000, 477, 167.849),
    "yolov8x-p6": (97423072, 97423056, 477, 261.836),
    "yolov8n-ghost": (1865316, 1865300, 403, 5.803),
    "yolov8s-ghost": (5960072, 5960056, 403, 16.416),
    "yolov8m-ghost": (10336312, 10336296, 603, 32.718),
    "yolov8l-ghost": (14277872, 14277856, 803, 53.721),
    "yolov8x-ghost": (22229308, 22229292, 803, 83.278),
    "yolov8n-ghost-p2": (2033944, 2033928, 491, 13.832),
    "yolov8s-ghost-p2": (5562080, 5562064, 491, 25.045),
    "yolov8m-ghost-p2": (9031728, 9031712, 731, 42.792),
    "yolov8l-ghost-p2": (12214448, 12214432, 971, 69.040),
    "yolov8x-ghost-p2": (18664776, 18664760, 971, 103.243),
    "yolov8n-ghost-p6": (2901100, 2901084, 529, 5.814),
    "yolov8s-ghost-p6": (9520008, 9519992, 529, 16.410),
    "yolov8m-ghost-p6": (18002904, 18002888, 789, 34.413),
    "yolov8l-ghost-p6": (21227584, 21227568, 1049, 55.264),
    "yolov8x-ghost-p6": (33057852, 33057836, 1049, 85.678),
    "yolov5n-p6": (4334896, 4334880, 344, 7.952),
    "yolov5s-p6": (15309328, 15309312, 344, 24.617),
    "yolov5m-p6": (41222064, 41222048, 442, 65.726),
    "yolov5l-p6": (86099920, 86099904, 540, 138.002),
    "yolov5x-p6": (155544432, 155544416, 638, 251.647),
}


# ultralytics 8.4.190's summary-line "layers" (leaf modules), read from DetectionModel(name.yaml)
# built in a separate environment; n_modules above is len(list(model.modules())) of the same builds
SUMMARY_LAYERS = {
    "yolov8n": 129, "yolov8s": 129, "yolov8m": 169, "yolov8l": 209, "yolov8x": 209, "yolo11n": 181,
    "yolo11s": 181, "yolo11m": 231, "yolo11l": 357, "yolo11x": 357, "yolov9t": 544, "yolov9s": 544,
    "yolov9m": 348, "yolov9c": 358, "yolov9e": 721, "yolov10n": 223, "yolov10s": 234, "yolov10m": 288,
    "yolov10b": 300, "yolov10l": 364, "yolov10x": 400, "yolov5n": 153, "yolov5s": 153, "yolov5m": 197,
    "yolov5l": 241, "yolov5x": 285, "yolov8n-p2": 160, "yolov8s-p2": 160, "yolov8m-p2": 208, "yolov8l-p2": 256,
    "yolov8x-p2": 256, "yolov8n-p6": 170, "yolov8s-p6": 170, "yolov8m-p6": 222, "yolov8l-p6": 274,
    "yolov8x-p6": 274, "yolov8n-ghost": 237, "yolov8s-ghost": 237, "yolov8m-ghost": 357, "yolov8l-ghost": 477,
    "yolov8x-ghost": 477, "yolov8n-ghost-p2": 290, "yolov8s-ghost-p2": 290, "yolov8m-ghost-p2": 434,
    "yolov8l-ghost-p2": 578, "yolov8x-ghost-p2": 578, "yolov8n-ghost-p6": 312, "yolov8s-ghost-p6": 312,
    "yolov8m-ghost-p6": 468, "yolov8l-ghost-p6": 624, "yolov8x-ghost-p6": 624, "yolov5n-p6": 202,
    "yolov5s-p6": 202, "yolov5m-p6": 258, "yolov5l-p6": 314, "yolov5x-p6": 370,
}


# shipped YAMLs of ultralytics 8.4.190 with no reference figures pinned (none left: every YAML x scale is
# in tests/fixtures/ultralytics84_reference.json)
UNPINNED: frozenset[str] = frozenset()


def test_reference_covers_every_shipped_ultralytics_yaml():
    import json
    from pathlib import Path

    from yoloblocks_cli.loading.yaml_model import resolve_model_path

    shipped = {p.name for p in resolve_model_path("yolov8n").parent.glob("*.yaml")}
    fixture = json.loads((Path(__file__).parent / "fixtures" / "ultralytics84_reference.json").read_text())["models"]
    pinned = {resolve_model_path(name).name for name in REFERENCE}
    pinned |= {resolve_model_path(key.split(":")[0]).name for key in fixture}
    assert pinned | UNPINNED == shipped and not pinned & UNPINNED


def _check(name: str, gflops: bool = True) -> None:
    built = build_model(name)
    params, grads, n_modules, ref_gflops = REFERENCE[name]
    assert (built.params, built.gradients, built.n_modules) == (params, grads, n_modules)
    assert built.n_layers == built.n_leaf_modules == SUMMARY_LAYERS[name]
    if gflops:
        assert ultralytics_gflops(built) == pytest.approx(ref_gflops, abs=5e-4)


def test_yolov8n_exact_params_layers_gflops_and_summary():
    from yoloblocks_cli.loading.yaml_model import summary_line

    built = build_model("yolov8n")
    _check("yolov8n")
    assert built.scale == "n" and built.name == "YOLOv8n" and built.dialect == "ultralytics"
    assert built.stride == (8.0, 16.0, 32.0)
    assert built.yaml_path.name == "yolov8.yaml"
    assert summary_line(built, ultralytics_gflops(built)) == \
        "YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs"
    # per-layer bookkeeping as ultralytics keeps it (the trace helper hooks these)
    layers = list(built.model.model)
    assert [m.i for m in layers] == list(range(23))
    assert layers[11].f == [-1, 6] and layers[22].f == [15, 18, 21]
    assert layers[2].type == "blocks.csp.C2f" and layers[2].np == 7360
    assert [info.params for info in built.layers][:5] == [464, 4672, 7360, 18560, 49664]
    assert built.layers[22].args[:3] == [80, 16, None] and built.layers[22].args[3] == [64, 128, 256]
    assert built.layers[0].line == 14  # the YAML line of the first backbone row


@pytest.mark.parametrize("name", ["yolo11n", "yolov10n", "yolov5n"])
def test_exact_params_other_families(name):
    _check(name, gflops=name == "yolo11n")


def test_ghost_p6_and_v9_port_exact_params():
    assert build_model("yolov8n-ghost").params == 1865316
    p6 = build_model("yolov8n-p6")  # C2 in the P6 stage, four Detect levels
    assert (p6.params, p6.n_modules, p6.stride) == (4984352, 295, (8.0, 16.0, 32.0, 64.0))
    assert build_model("yolov9t").params == 2128720


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_every_shipped_model_and_scale(name):
    _check(name)


def test_eval_forward_shapes_and_train_mode_maps():
    built = build_model("yolov8n")
    with torch.no_grad():
        y = built.model(torch.zeros(1, 3, 64, 96))
    assert list(y.shape) == [1, 84, 8 * 12 + 4 * 6 + 2 * 3]
    built.model.train()
    preds = built.model(torch.zeros(2, 3, 64, 64))  # ultralytics 8.4's training output: a dict, not the raw maps
    assert {k: list(v.shape) for k, v in preds.items() if k != "feats"} == {"boxes": [2, 64, 84], "scores": [2, 80, 84]}
    assert [list(m.shape) for m in preds["feats"]] == [[2, 64, 8, 8], [2, 128, 4, 4], [2, 256, 2, 2]]


def test_nc_override_matches_ultralytics():
    built = build_model("yolov8n", nc=20)
    assert built.params == 3_014_748  # DetectionModel("yolov8n.yaml", nc=20); c3 = max(64, nc) shrinks too
    assert built.layers[22].args[0] == 20


def test_c3k2_rule_forces_c3k_on_m_l_x_and_switches_the_head():
    from blocks.c3k2 import C3K2_RULE
    from blocks.conventions import LayerContext

    for scale, c3k in (("n", False), ("s", False), ("m", True), ("l", True), ("x", True)):
        ctx = LayerContext(ch_in=[64], args=[256, False, 0.25], n=1, width=1.0, scale=scale, extra={"state": {}})
        res = C3K2_RULE.resolve(ctx)
        assert res.args == [64, 256, 1, c3k, 0.25]
        assert ctx.extra["state"]["legacy_head"] is False


def test_scale_from_file_name_and_short_names():
    assert guess_model_scale("yolov8n.yaml") == "n"
    assert guess_model_scale("path/yolo11x-p2.yaml") == "x"
    assert guess_model_scale("yolov9c.yaml") == ""
    assert resolve_model_path("yolov8n").name == "yolov8.yaml"
    assert resolve_model_path("yolov8s-p2.yaml").name == "yolov8-p2.yaml"
    assert resolve_model_path("yolov8n6").name == "yolov8-p6.yaml"
    assert resolve_model_path("yolo11s").name == "yolo11.yaml"
    assert resolve_model_path("yolov10b").name == "yolov10b.yaml"
    # a bare name is ultralytics' model; another dialect's shipped YAML is named by its folder
    assert resolve_model_path("yolov5n").parent.name == "ultralytics"
    assert resolve_model_path("yolov5_repo/yolov5n").parent.name == "yolov5_repo"
    with pytest.raises(UsageError, match=r"no such model YAML: yolov8q \(did you mean: yolov8"):
        resolve_model_path("yolov8q")


def _write(tmp_path, text: str, name: str = "m.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


SMALL = """
nc: 4
scales:
  n: [0.5, 0.25, 1024]
  s: [0.5, 0.5, 1024]
backbone:
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 3, C2f, [64, True]]
head:
  - [-1, 1, Conv, [64, 3, 2]]
"""


def test_scale_option_and_depth_width_rules(tmp_path):
    p = _write(tmp_path, SMALL)
    built = build_model(p, scale="s")
    assert built.scale == "s"
    # width: make_divisible(min(c2, max) * 0.5, 8); depth: max(round(3 * 0.5), 1) = 2
    assert built.layers[0].args == [3, 16, 3, 2]
    assert built.layers[1].args == [16, 32, 2, True] and built.layers[1].n == 2
    assert build_model(p).scale == "n"  # no scale in the name: the first one, as ultralytics
    assert build_model(p, scale="S").scale == "s"  # case-insensitive when unambiguous (Mamba-YOLO spells T/B/L)
    with pytest.raises(UsageError, match=r"m\.yaml:\d+: scale 'q' is not defined; this YAML has: n, s"):
        build_model(p, scale="q")


def test_activation_is_parsed_from_an_allow_list_and_restored(tmp_path):
    from torch import nn

    from blocks.conv import Conv

    assert isinstance(parse_activation("nn.LeakyReLU(0.1)"), nn.LeakyReLU)
    assert parse_activation("nn.LeakyReLU(0.1)").negative_slope == 0.1
    assert isinstance(parse_activation("torch.nn.ReLU()"), nn.ReLU)
    for bad in ("__import__('os').system('true')", "nn.Linear(3, 3)", "os.ReLU()", "nn.ReLU(x)"):
        with pytest.raises(ValueError):
            parse_activation(bad)
    p = _write(tmp_path, "activation: nn.ReLU()\n" + SMALL)
    built = build_model(p)
    assert isinstance(built.model.model[0].act, nn.ReLU)
    assert isinstance(Conv.default_act, nn.SiLU)
    p2 = _write(tmp_path, "activation: __import__('os').getcwd()\n" + SMALL, "evil.yaml")
    with pytest.raises(UsageError, match=r"evil\.yaml:1: activation .* is not allowed"):
        build_model(p2)


@pytest.mark.parametrize("rows, message", [
    ("  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, Cnov, [64]]\n",
     r"m\.yaml:5: layer 1 \(Cnov\): unknown module 'Cnov' \(did you mean: .*Conv"),
    ("  - [-1, 1, Conv, [64, 3, 2]]\n  - [2, 1, Conv, [64]]\n",
     r"m\.yaml:5: layer 1 \(Conv\): 'from' 2 points forward: layer 1 can only use layers 0\.\.0 or -1"),
    ("  - [-1, 1, Conv, [64, 3, 2]]\n  - [[-1, -3], 1, Concat, [1]]\n",
     r"m\.yaml:5: layer 1 \(Concat\): 'from' -3 out of range: layer 1 has only 1 earlier layers"),
    ("  - [-1, 1, Conv, [64, 3, 2, 1, 1, 1, True, 9]]\n",
     r"m\.yaml:4: layer 0 \(Conv\): wrong arguments for Conv\(3, 64, 3, 2, 1, 1, 1, True, 9\): too many"),
    ("  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, nn.Conv2d, [32, 8, 1]]\n",
     r"m\.yaml:5: layer 1 \(nn\.Conv2d\): fails on its input 1x64x128x128: RuntimeError: .*32"),
    ("  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, PSA, [128]]\n",
     r"m\.yaml:5: layer 1 \(PSA\): PSA\(64, 128\) raised ValueError: PSA keeps its width"),
])
def test_errors_name_file_line_and_layer(tmp_path, rows, message):
    p = _write(tmp_path, "nc: 2\n\nbackbone:\n" + rows)
    with pytest.raises(UsageError, match=message):
        build_model(p)


def test_malformed_yaml_has_a_line(tmp_path):
    p = _write(tmp_path, "nc: 2\nbackbone:\n  - [-1, 1, Conv, [64, 3, 2]\n  - [-1, 1, Conv]\n")
    with pytest.raises(UsageError, match=r"m\.yaml:4: malformed YAML: "):
        build_model(p)


def test_bracket_left_open_at_end_of_file_points_at_its_line(tmp_path):
    p = _write(tmp_path, "nc: 2\nbackbone:\n  - [-1, 1, Conv, [64, 3, 2]\n")
    with pytest.raises(UsageError, match=r"m\.yaml:3: malformed YAML: "):
        build_model(p)


def test_unregistered_plugin_blocks_learn_their_width(tmp_path):
    from pathlib import Path

    plugin = Path(__file__).parent / "fixtures" / "yaml_plugin.py"
    p = _write(tmp_path, """
        nc: 2
        backbone:
          - [-1, 1, Conv, [16, 3, 2]]
          - [-1, 1, WidthBlock, [24]]
          - [-1, 1, Doubler, []]
          - [-1, 1, Conv, [8, 1, 1]]
        """)
    built = build_model(p, plugins=[plugin])
    assert [info.args for info in built.layers] == [[3, 16, 3, 2], [16, 24], [], [48, 8, 1, 1]]
    assert [info.c_out for info in built.layers] == [16, 24, 48, 8]
    assert built.layers[1].params == 16 * 24 + 24
    with pytest.raises(UsageError, match=r"unknown module 'WidthBlock'"):
        build_model(p)


def test_dialect_registry_detects_and_renames(tmp_path):
    from yoloblocks_cli.loading.dialects import Dialect, all_dialects, detect_dialect, register_dialect

    register_dialect(Dialect("test-anchors", detect=lambda d: "test_anchors" in d, rename={"MyConv": "Conv"},
                             priority=5))
    try:
        assert detect_dialect({"backbone": []}).name == "ultralytics"
        assert detect_dialect({"test_anchors": 1}).name == "test-anchors"
        p = _write(tmp_path, "test_anchors: 1\nbackbone:\n  - [-1, 1, MyConv, [8, 3, 2]]\n")
        built = build_model(p)
        assert built.dialect == "test-anchors" and built.params == 3 * 8 * 9 + 16
    finally:
        from yoloblocks_cli.loading import dialects

        dialects._DIALECTS.pop("test-anchors", None)
    assert "test-anchors" not in [d.name for d in all_dialects()]


def test_resolving_a_shipped_name_does_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from yoloblocks_cli.loading.yaml_model import resolve_model_path; "
            "print(resolve_model_path('yolo11s').name, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["yolo11.yaml", "False"], out.stderr
