"""The seed articles' model YAMLs shipped under blocks/cfg/seeds/, checked against the articles.

Seed 002 prints the full per-layer table of yolov9-c-MMQARepNCSPELAN4 (YOLOv9 repository):
its `from` indices, arguments (with c1 prepended) and parameters are checked row by row.
Whole-model totals need the YAML model builder; those tests skip until it exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blocks.registry import get_block

CFG = Path(__file__).resolve().parents[1] / "blocks" / "cfg" / "seeds"

# Seed 002's table: index -> (from, module, args as printed (c1 first where the module takes one), params)
YOLOV9_MMQA_TABLE = [
    (-1, "Silence", [], 0),
    (-1, "Conv", [3, 64, 3, 2], 1856),
    (-1, "Conv", [64, 128, 3, 2], 73984),
    (-1, "MMQARepNCSPELAN4", [128, 256, 128, 64, 1], 249472),
    (-1, "ADown", [256, 256], 164352),
    (-1, "MMQARepNCSPELAN4", [256, 512, 256, 128, 1], 773376),
    (-1, "ADown", [512, 512], 656384),
    (-1, "MMQARepNCSPELAN4", [512, 512, 512, 256, 1], 2119168),
    (-1, "ADown", [512, 512], 656384),
    (-1, "MMQARepNCSPELAN4", [512, 512, 512, 256, 1], 2119168),
    (-1, "SPPELAN", [512, 512, 256], 656896),
    (-1, "nn.Upsample", [None, 2, "nearest"], 0),
    ([-1, 7], "Concat", [1], 0),
    (-1, "RepNCSPELAN4", [1024, 512, 512, 256, 1], 3119616),
    (-1, "nn.Upsample", [None, 2, "nearest"], 0),
    ([-1, 5], "Concat", [1], 0),
    (-1, "RepNCSPELAN4", [1024, 256, 256, 128, 1], 912640),
    (-1, "ADown", [256, 256], 164352),
    ([-1, 13], "Concat", [1], 0),
    (-1, "RepNCSPELAN4", [768, 512, 512, 256, 1], 2988544),
    (-1, "ADown", [512, 512], 656384),
    ([-1, 10], "Concat", [1], 0),
    (-1, "RepNCSPELAN4", [1024, 512, 512, 256, 1], 3119616),
    (5, "CBLinear", [512, [256]], 131328),
    (7, "CBLinear", [512, [256, 512]], 393984),
    (9, "CBLinear", [512, [256, 512, 512]], 656640),
    (0, "Conv", [3, 64, 3, 2], 1856),
    (-1, "Conv", [64, 128, 3, 2], 73984),
    (-1, "RepNCSPELAN4", [128, 256, 128, 64, 1], 212864),
    (-1, "ADown", [256, 256], 164352),
    ([23, 24, 25, -1], "CBFuse", [[0, 0, 0]], 0),
    (-1, "RepNCSPELAN4", [256, 512, 256, 128, 1], 847616),
    (-1, "ADown", [512, 512], 656384),
    ([24, 25, -1], "CBFuse", [[1, 1]], 0),
    (-1, "RepNCSPELAN4", [512, 512, 512, 256, 1], 2857472),
    (-1, "ADown", [512, 512], 656384),
    ([25, -1], "CBFuse", [[2]], 0),
    (-1, "RepNCSPELAN4", [512, 512, 512, 256, 1], 2857472),
    ([31, 34, 37, 16, 19, 22], "DualDDetect", [1, [512, 512, 512, 256, 512, 512]], 21542822),
]
WITH_C1 = {"Conv", "MMQARepNCSPELAN4", "ADown", "SPPELAN", "RepNCSPELAN4", "CBLinear"}


def _layers(name: str) -> list:
    cfg = yaml.safe_load((CFG / name).read_text())
    return cfg["backbone"] + cfg["head"]


def _out_widths(layers: list, c_in: int = 3) -> list:
    """Output width per layer of a width-1.0 YOLOv9 graph (CBLinear: its list of widths)."""
    ch: list = []
    for f, _, m, args in layers:
        prev = (lambda i: ch[i] if i != -1 else (ch[-1] if ch else c_in))
        if m in ("Silence", "nn.Upsample"):
            ch.append(prev(f))
        elif m == "Concat":
            ch.append(sum(prev(i) for i in f))
        elif m == "CBLinear":
            ch.append(list(args[0]))
        elif m == "CBFuse":
            ch.append(prev(f[-1]))
        elif m == "DualDDetect":
            ch.append([prev(i) for i in f])
        else:
            ch.append(args[0])
    return ch


def test_table_total_is_the_articles_summary_line():
    assert sum(row[3] for row in YOLOV9_MMQA_TABLE) == 49_485_350


def test_yolov9_mmqa_yaml_matches_the_article_table_row_by_row():
    layers = _layers("yolov9-c-MMQARepNCSPELAN4.yaml")
    assert len(layers) == len(YOLOV9_MMQA_TABLE) == 39
    widths = _out_widths(layers)
    for i, ((f, n, m, args), (tf, tm, targs, _)) in enumerate(zip(layers, YOLOV9_MMQA_TABLE)):
        assert (f, n, m) == (tf, 1, tm), i
        if m in WITH_C1:
            c1 = widths[f] if f != -1 else (widths[i - 1] if i else 3)
            assert [c1, *args] == targs, i  # the table's c1 is the width of the layer named by `from`
        elif m == "DualDDetect":
            assert args == ["nc"] and widths[i] == targs[1], i
        else:  # YAML spells Python's None as the string "None", as ultralytics' YAMLs do
            assert [None if a == "None" else a for a in args] == targs, i


@pytest.mark.parametrize("row", [i for i, r in enumerate(YOLOV9_MMQA_TABLE)
                                 if r[1] in {"MMQARepNCSPELAN4", "RepNCSPELAN4", "ADown", "SPPELAN", "Conv"}])
def test_yolov9_mmqa_layer_parameters_equal_the_article_table(row):
    _, m, args, params = YOLOV9_MMQA_TABLE[row]
    module = get_block(m).cls(*args)
    assert sum(p.numel() for p in module.parameters()) == params


@pytest.mark.parametrize("name,block,index,froms_of_head", [
    ("yolov8-mlla.yaml", "MLLAttention", 22, [15, 18, 22]),
    ("yolov8-fla.yaml", "FocusedLinearAttention", 10, [16, 19, 22]),
    ("yolov5s-s2attention.yaml", "S2Attention", 24, [17, 20, 24]),
])
def test_seed_yaml_places_the_block_and_feeds_the_detect_head(name, block, index, froms_of_head):
    layers = _layers(name)
    assert layers[index][2] == block
    assert layers[-1][0] == froms_of_head
    for i, (f, *_rest) in enumerate(layers):  # every `from` names an earlier layer
        for j in (f if isinstance(f, list) else [f]):
            assert j == -1 or 0 <= j < i, (name, i, f)


def test_yolov8_fla_concats_name_the_shifted_indices():
    layers = _layers("yolov8-fla.yaml")
    assert [layers[i][0] for i in (12, 15, 18, 21)] == [[-1, 6], [-1, 4], [-1, 13], [-1, 10]]


# --- whole-model totals: need the YAML builder (yoloblocks_cli.loading.yaml_model) ---------------

EXPECTED_TOTALS = [
    # yolov8n (nc=80) 3,157,200 + MLLAttention(256): 131,584 (qk) + 2,560 (LePE)
    ("yolov8-mlla.yaml", "n", 3_157_200 + 134_144),
    # yolov8n at nc=1 3,011,043 + FocusedLinearAttention(256): 366,656
    ("yolov8-fla.yaml", "n", 3_011_043 + 366_656),
    # yolov5s v6.0 (nc=80) 7,235,389 + S2Attention(512): 8*512^2 + 4*512
    ("yolov5s-s2attention.yaml", None, 7_235_389 + 2_099_200),
]


@pytest.mark.parametrize("name,scale,total", EXPECTED_TOTALS)
def test_seed_model_totals(name, scale, total):
    yaml_model = pytest.importorskip("yoloblocks_cli.loading.yaml_model")
    built = yaml_model.build_model(CFG / name, scale=scale)
    assert sum(p.numel() for p in built.model.parameters()) == total


def test_yolov9_mmqa_total_and_the_articles_gflops():
    """49,485,350 parameters, and the article's 236.8 GFLOPs explained: the YOLOv9 repository
    profiles a 32 x 32 image with a thop that sees no matmul and multiplies by (640/32)^2.
    Leaving out the attention products reproduces it; the block's quadratic attention makes
    the real count at 640 x 640 about ten times larger."""
    yaml_model = pytest.importorskip("yoloblocks_cli.loading.yaml_model")
    import thop
    import torch

    from blocks.attention.mobile_mqa import MultiQueryAttentionLayerWithDownSampling, _mqa_macs

    built = yaml_model.build_model(CFG / "yolov9-c-MMQARepNCSPELAN4.yaml")
    assert sum(p.numel() for p in built.model.parameters()) == 49_485_350
    model = built.model.eval()
    attention = []
    hooks = [m.register_forward_hook(lambda m, i, o: attention.append(_mqa_macs(m, i, o)))
             for m in model.modules() if isinstance(m, MultiQueryAttentionLayerWithDownSampling)]
    try:
        macs = thop.profile(model, inputs=(torch.zeros(1, 3, 32, 32),), verbose=False)[0]
    finally:
        for h in hooks:
            h.remove()
    assert len(attention) == 8  # two Mobile MQA layers in each of the four backbone blocks
    assert round((macs - sum(attention)) * 2 * 400 / 1e9, 1) == 236.8
