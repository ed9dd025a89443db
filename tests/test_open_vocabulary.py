"""YOLO-World and YOLOE: text-conditioned layers built without CLIP, on placeholder class embeddings.

Reference figures: ``tests/fixtures/ultralytics84_reference.json`` (ultralytics 8.4.190's WorldModel,
YOLOEModel and YOLOESegModel; see tests/test_ultralytics84_models.py). The layer formulas are checked
against direct einsum transcriptions of the same equations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blocks.open_vocabulary import (BNContrastiveHead, C2fAttn, ContrastiveHead, ImagePoolingAttn,
                                    MaxSigmoidAttnBlock, WorldDetect)
from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops
from yoloblocks_cli.tracing.probes import _used_outside_forward

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "ultralytics84_reference.json").read_text())["models"]


@pytest.mark.parametrize("key", ["yolov8-world:n", "yoloe-11-seg:n"])
def test_open_vocabulary_models_exact(key: str):
    stem, scale = key.split(":")
    built = build_model(stem, scale=scale)
    ref = REFERENCE[key]
    assert (built.params, built.gradients, built.n_layers) == (ref["params"], ref["gradients"], ref["layers"])
    assert ultralytics_gflops(built) == pytest.approx(ref["gflops"], abs=1e-3)


def test_world_rows_follow_ultralytics_rules():
    built = build_model("yolov8n-world")
    rows = {info.index: info for info in built.layers}
    # [512, 256, 8] at width 0.25: c2 128, heads round(min(8, 1024 // 64)) * 0.25 = 2, embedding = hidden = 64
    assert rows[12].args[:5] == [384, 128, 1, 64, 2] and rows[12].module == "C2fAttn"
    assert rows[16].module == "ImagePoolingAttn" and rows[16].args[:2] == [256, [64, 128, 256]]
    assert rows[23].args[:3] == [80, 512, False]


def test_placeholder_embeddings_are_a_buffer_not_a_parameter(capsys):
    built = build_model("yoloe-11n")
    err = capsys.readouterr().err
    assert "note: YOLOe-11n: 1 layer read class embeddings: placeholder 80 x 512 (zeros), no CLIP model" in err
    model = built.model
    assert tuple(model.class_embeddings.shape) == (1, 80, 512) and not model.class_embeddings.any()
    assert "class_embeddings" not in model.state_dict()
    keys = set(model.state_dict())
    # ultralytics' state-dict names, so that trained YOLOE weights load
    for name in ("model.23.reprta.m.w12.weight", "model.23.savpe.cv6.1.weight", "model.23.cv4.0.norm.weight",
                 "model.23.cv4.2.logit_scale", "model.23.cv3.0.2.weight"):
        assert name in keys
    world = build_model("yolov8n-worldv2").model.class_embeddings
    assert world.std() == pytest.approx(1.0, abs=0.05)  # seeded N(0, 1), as ultralytics' randn placeholder


def test_outputs_per_part():
    x = torch.zeros(2, 3, 256, 192)
    cells = 32 * 24 + 16 * 12 + 8 * 6
    with torch.no_grad():
        seg = build_model("yoloe-11n-seg").model(x)
        det = build_model("yolov8n-worldv2").model(x)
    preds, protos = seg
    assert list(preds.shape) == [2, 4 + 80 + 32, cells] and list(protos.shape) == [2, 32, 64, 48]
    assert list(det.shape) == [2, 84, cells]


def test_max_sigmoid_attention_formula():
    torch.manual_seed(0)
    m = MaxSigmoidAttnBlock(16, 16, nh=2, ec=16, gc=24).eval()
    x, guide = torch.randn(2, 16, 5, 7), torch.randn(2, 10, 24)
    with torch.no_grad():
        got = m(x, guide)
        g = m.gl(guide).view(2, 10, 2, 8)
        e = x.view(2, 2, 8, 5, 7)
        aw = torch.einsum("bmchw,bkmc->bmhwk", e, g).max(-1).values / math.sqrt(8) + m.bias.view(1, 2, 1, 1)
        want = (m.proj_conv(x).view(2, 2, 8, 5, 7) * aw.sigmoid().unsqueeze(2)).view(2, 16, 5, 7)
    assert torch.allclose(got, want, atol=1e-5)


def test_image_pooling_attention_formula():
    torch.manual_seed(0)
    m = ImagePoolingAttn(ec=32, ch=(8, 16), ct=24, nh=4, k=3).eval()
    x = [torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5)]
    text = torch.randn(2, 7, 24)
    with torch.no_grad():
        got = m(x, text)
        patches = torch.cat([F.adaptive_max_pool2d(p(t), 3).view(2, 32, 9) for p, t in zip(m.projections, x)], -1)
        patches = patches.transpose(1, 2)
        q = m.query(text).view(2, 7, 4, 8)
        k = m.key(patches).view(2, 18, 4, 8)
        v = m.value(patches).view(2, 18, 4, 8)
        aw = torch.einsum("bnmc,bkmc->bmnk", q, k).div(math.sqrt(8)).softmax(-1)
        want = m.proj(torch.einsum("bmnk,bkmc->bnmc", aw, v).reshape(2, 7, 32)) + text
    assert torch.allclose(got, want, atol=1e-5)


def test_contrastive_heads_are_scaled_cosine_and_bn_similarity():
    torch.manual_seed(0)
    x, w = torch.randn(2, 16, 4, 5), torch.randn(2, 3, 16)
    head = ContrastiveHead()
    with torch.no_grad():
        cos = torch.einsum("bkc,bchw->bkhw", F.normalize(w, dim=-1), F.normalize(x, dim=1))
        assert torch.allclose(head(x, w), cos / 0.07 - 10.0, atol=1e-4)
        bn = BNContrastiveHead(16).eval()
        sim = torch.einsum("bkc,bchw->bkhw", F.normalize(w, dim=-1), bn.norm(x))
        assert torch.allclose(bn(x, w), sim * math.exp(-1.0) - 10.0, atol=1e-4)


def test_text_head_without_embeddings_says_what_it_needs():
    head = WorldDetect(80, 512, True, ch=(16, 32)).eval()
    with pytest.raises(ValueError, match=r"WorldDetect needs class embeddings: forward\(x, text\) with text "
                                         r"\(B, K, 512\)"):
        head([torch.zeros(1, 16, 8, 8), torch.zeros(1, 32, 4, 4)])


def test_c2fattn_refuses_widths_its_heads_do_not_divide():
    from blocks.conventions import LayerContext
    from blocks.open_vocabulary import C2FATTN_RULE

    with pytest.raises(ValueError, match="hidden width 36 .* not divisible by 5 heads"):
        C2FATTN_RULE.resolve(LayerContext(ch_in=[64], args=[72, 32, 5], width=1.0, max_channels=1024))
    ok = C2FATTN_RULE.resolve(LayerContext(ch_in=[64], args=[64, 32, 4], n=2, width=1.0, max_channels=1024))
    assert ok.args == [64, 64, 2, 32, 4] and C2fAttn(*ok.args).attn.ec is None


def test_grads_probe_accepts_declared_prompt_encoders():
    built = build_model("yoloe-11n")
    missing = ["model.23.reprta.m.w12.weight", "model.23.savpe.cv3.weight", "model.22.cv1.conv.weight"]
    rest, elsewhere = _used_outside_forward(built.model, missing)
    assert rest == ["model.22.cv1.conv.weight"]
    assert set(elsewhere) == {"model.23.reprta", "model.23.savpe"}
