"""Every model YAML of the YOLOv7, YOLOv5 and YOLOv9 repositories, built as the repository builds it.

Reference numbers: ``fixtures/repo_yamls_reference.json`` (made by building each YAML with the
repository's own ``models/yolo.py``; see its ``_about`` and benchmarks/repo_reference/README.md).
The fast suite builds a representative subset; ``-m slow`` builds every YAML of the fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from yoloblocks_cli.errors import UsageError

CFG = Path(__file__).resolve().parents[1] / "blocks" / "cfg"
REF = json.loads((Path(__file__).parent / "fixtures" / "repo_yamls_reference.json").read_text())["models"]
DIALECT = {"yolov5_repo": "yolov5-repo", "yolov7_repo": "yolov7-repo", "yolov9_repo": "yolov9-repo"}


def _check(key: str, gflops: bool) -> None:
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    ref = REF[key]
    built = build_model(key)
    assert built.dialect == DIALECT[key.split("/")[0]]
    assert [layer.params for layer in built.layers] == ref["layer_params"]
    assert (built.params, built.gradients, built.n_layers) == (ref["params"], ref["gradients"], ref["modules"])
    if "stride" in ref:
        assert list(built.stride) == ref["stride"]
    if gflops and ref.get("gflops") is not None:
        # the reference is stored to 4 decimals: to 0.001, not by rounding twice (206.314496 vs 206.3145)
        assert abs(ultralytics_gflops(built) - ref["gflops"]) < 1e-3


FAST_ALL = {  # key: also compare GFLOPs (a second full pass: only for the small ones)
    "yolov7_repo/yolov7-tiny": True,
    "yolov7_repo/yolov7": False,
    "yolov7_repo/deploy/yolov7": False,
    "yolov5_repo/hub/yolov3": False,
    "yolov5_repo/hub/yolov5s-transformer": True,  # attention: the repositories' stride-image GFLOPs (16.622)
    "yolov5_repo/segment/yolov5n-seg": True,
    "yolov9_repo/segment/gelan-c-dseg": False,
}
FAST = {k: v for k, v in FAST_ALL.items() if k in REF}  # the fixture holds what was measured


@pytest.mark.parametrize("key", list(FAST))
def test_repository_yaml_is_built_exactly(key):
    _check(key, FAST[key])


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in REF])
def test_every_repository_yaml_is_built_exactly(key):
    _check(key, True)


def deploy_form(key: str) -> str:
    """The YAML whose fused build is ``key``'s deploy form: a YOLOv7 training YAML's twin under deploy/.

    The repository's own ``model.fuse()`` on a training YAML keeps the implicit layers (``ia``, ``im``) and
    the auxiliary convs (``m2``) it has already folded or no longer reads; the deploy YAML, fused, is what
    is deployed, and what ``yb profile --fuse`` gives for both."""
    folder, _, stem = key.partition("/")
    twin = f"{folder}/deploy/{stem}"
    return twin if folder == "yolov7_repo" and "/" not in stem and "fused" in REF.get(twin, {}) else key


def _check_fused(key: str) -> None:
    """``yb profile --fuse`` equals the repository's fused deploy form."""
    from yoloblocks_cli.loading.fuse import fuse_built
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    ref = REF[deploy_form(key)]["fused"]
    built = build_model(key)
    fuse_built(built)
    assert (built.params, built.gradients, built.n_layers) == (ref["params"], ref["gradients"], ref["modules"])
    if ref.get("gflops") is not None:
        assert abs(ultralytics_gflops(built) - ref["gflops"]) < 1e-3


@pytest.mark.parametrize("key", ["yolov7_repo/yolov7-tiny", "yolov7_repo/deploy/yolov7-tiny"])
def test_repository_deploy_form_is_built_exactly(key):
    _check_fused(key)


def test_fuse_removes_the_layers_only_a_dropped_head_input_needed():
    """A head that reads fewer inputs once folded (IAuxDetect without m2) leaves its feeders dead: they go, the
    rest is renumbered (f, i, save, the layer table), and the output does not change."""
    from types import SimpleNamespace

    from yoloblocks_cli.loading.fuse import prune_unread_layers
    from yoloblocks_cli.loading.yaml_model import LayerInfo, YoloModel

    class Head(nn.Module):
        reads_inputs = 1

        def forward(self, x):
            return x[0] * 2

    def layer(m, i, f):
        m.i, m.f, m.type = i, f, type(m).__name__
        return m

    layers = [layer(nn.Conv2d(3, 4, 1), 0, -1), layer(nn.Conv2d(4, 4, 1), 1, -1), layer(nn.Conv2d(4, 4, 1), 2, 0),
              layer(Head(), 3, [1, 2])]
    model = YoloModel(layers, [0, 1, 2], torch.tensor([1.0]), {})
    infos = [LayerInfo(i, m.f, 1, m.type, m.type, [], {}, 0, 0, 4) for i, m in enumerate(layers)]
    built = SimpleNamespace(model=model, layers=infos)
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        before = model(x)
        assert prune_unread_layers(built) == [2]
        after = model(x)
    assert [(m.i, m.f) for m in model.model] == [(0, -1), (1, -1), (2, [1])]
    assert model.save == [1] and [(i.index, i.from_) for i in built.layers] == [(0, -1), (1, -1), (2, [1])]
    assert torch.equal(before, after)
    assert prune_unread_layers(built) == []  # nothing more to drop


def test_repository_fuse_of_a_training_yaml_keeps_what_the_deploy_form_drops():
    """YOLOv7-tiny's own fuse() keeps IDetect's 1,661 implicit parameters (ia, im: 8 modules); the deploy form
    has none, and neither has ``yb profile --fuse``."""
    training, deploy = REF["yolov7_repo/yolov7-tiny"]["fused"], REF["yolov7_repo/deploy/yolov7-tiny"]["fused"]
    assert training["params"] - deploy["params"] == 1_661 and training["modules"] - deploy["modules"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k, v in REF.items() if "fused" in v])
def test_every_measured_deploy_form(key):
    _check_fused(key)


def test_fixture_covers_every_shipped_repository_yaml():
    shipped = {p.relative_to(CFG).with_suffix("").as_posix() for folder in DIALECT
               for p in (CFG / folder).rglob("*.yaml")}
    assert set(REF) == shipped  # every shipped YAML has the repository's own figures
    assert len([k for k in shipped if k.startswith("yolov7_repo/")]) == 26
    assert len([k for k in shipped if k.startswith("yolov5_repo/")]) == 28
    assert len([k for k in shipped if k.startswith("yolov9_repo/")]) == 20


def test_yolov5_hub_yolov3_uses_the_repository_bottleneck():
    """A bare Bottleneck in the YOLOv5 repository is 1x1 + 3x3 (ultralytics': 3x3 + 3x3, 97,092,829 params)."""
    from yoloblocks_cli.loading import dialects_repo as dr

    assert REF["yolov5_repo/hub/yolov3"]["params"] == 61_949_149
    assert dr.YOLOV5_RENAME["Bottleneck"] == "Bottleneck_yolov5repo"
    from blocks.yolov5_repo import BottleneckRepo

    b = BottleneckRepo(64, 64)
    assert b.cv1.conv.kernel_size == (1, 1) and b.cv2.conv.kernel_size == (3, 3)
    assert sum(p.numel() for p in b.parameters()) == 64 * 32 + 2 * 32 + 32 * 64 * 9 + 2 * 64


# --- dialect detection ---------------------------------------------------------------------------


@pytest.mark.parametrize("rel, dialect", [
    ("yolov7_repo/yolov7-tiny", "yolov7-repo"), ("yolov7_repo/deploy/yolov7-e6e", "yolov7-repo"),
    ("yolov7_repo/baseline/yolor-csp", "yolov7-repo"), ("yolov7_repo/baseline/yolov3", "yolov7-repo"),
    ("yolov9_repo/yolov7-af", "yolov9-repo"), ("yolov9_repo/panoptic/gelan-c-pan", "yolov9-repo"),
    ("yolov5_repo/hub/yolov3", "yolov5-repo"), ("yolov5_repo/segment/yolov5s-seg", "yolov5-repo"),
])
def test_dialect_is_detected_by_content(rel, dialect):
    from yoloblocks_cli.loading.dialects import detect_dialect

    assert detect_dialect(yaml.safe_load((CFG / f"{rel}.yaml").read_text())).name == dialect


def test_repository_names_with_a_scale_like_digit_resolve_literally():
    from yoloblocks_cli.loading.yaml_model import resolve_model_path

    assert resolve_model_path("yolov5_repo/hub/yolov5n6") == CFG / "yolov5_repo" / "hub" / "yolov5n6.yaml"
    assert resolve_model_path("yolov7_repo/deploy/yolov7") == CFG / "yolov7_repo" / "deploy" / "yolov7.yaml"
    assert resolve_model_path("yolov5n6").parent.name == "ultralytics"  # bare: ultralytics' yolov5-p6, as before


# --- activation arguments: parsed by a grammar, never evaluated ----------------------------------

TINY_V7 = """
nc: 80
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10, 13, 16, 30, 33, 23]
backbone:
  - [-1, 1, Conv, [32, 3, 2, None, 1, {act}]]
  - [-1, 1, Conv, [32, 3, 1, None, 1, {act}]]
  - [-1, 1, MP, []]
head:
  - [[2], 1, IDetect, [nc, anchors]]
"""


def test_yolov7_tiny_activation_argument_is_a_module_per_row(tmp_path):
    from yoloblocks_cli.loading.yaml_model import build_model

    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_V7.format(act="nn.LeakyReLU(0.1)"))
    built = build_model(p)
    a0, a1 = built.model.model[0].act, built.model.model[1].act
    assert isinstance(a0, nn.LeakyReLU) and a0.negative_slope == 0.1 and a0 is not a1
    assert built.dialect == "yolov7-repo"


@pytest.mark.parametrize("act, message", [
    ("nn.Foo(0.1)", r"tiny\.yaml:8: layer 0 \(Conv\): activation 'nn.Foo\(0.1\)' is not allowed"),
    ("\"nn.LeakyReLU(__import__('os'))\"", r"layer 0 \(Conv\): activation .* arguments must be literals"),
])
def test_activation_argument_outside_the_grammar_is_exit_2(tmp_path, act, message):
    from yoloblocks_cli.loading.yaml_model import build_model

    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_V7.format(act=act))
    with pytest.raises(UsageError, match=message):
        build_model(p)


# --- every unknown module at once ---------------------------------------------------------------

UNKNOWN = """nc: 2
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, C2F, [16]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, MyBlock, [32]]
head:
  - [-1, 1, SPPFF, [32]]
"""


def test_every_unknown_module_is_listed_with_line_layer_and_suggestion(tmp_path):
    from yoloblocks_cli.loading.yaml_model import build_model

    p = tmp_path / "bad.yaml"
    p.write_text(UNKNOWN)
    with pytest.raises(UsageError) as info:
        build_model(p)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{p}: 3 unknown modules (a block of your own: pass its file with --plugin FILE.py):"
    assert lines[1] == f"  {p}:4: layer 1 (C2F): unknown module 'C2F' (did you mean: C2f?)"
    assert lines[2].startswith(f"  {p}:6: layer 3 (MyBlock): unknown module 'MyBlock'")
    assert lines[3].startswith(f"  {p}:8: layer 4 (SPPFF): unknown module 'SPPFF' (did you mean: ") and "SPPF" in lines[3]
    assert len(lines) == 4


def test_unknown_modules_cli_is_one_message_exit_2(yb, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(UNKNOWN)
    proc = yb("profile", str(p))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("error: ") and "3 unknown modules" in err[0] and "--plugin" in err[0]
    assert len(err) == 4 and "Traceback" not in proc.stderr


# --- deployment folds ---------------------------------------------------------------------------


def _randomise_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("c1, c2, s, g", [(16, 16, 1, 1), (16, 32, 1, 1), (16, 16, 2, 1), (16, 16, 1, 4)])
def test_repconv_fuse_deploy_keeps_the_output_and_has_the_deploy_count(c1, c2, s, g):
    from blocks.yolov7_repo import RepConvV7

    torch.manual_seed(0)
    m = RepConvV7(c1, c2, 3, s, g=g).eval()
    _randomise_bn(m)
    x = torch.randn(2, c1, 12, 10)
    before = m(x)
    m.fuse_deploy()
    assert torch.allclose(m(x), before, atol=1e-5)
    deploy = RepConvV7(c1, c2, 3, s, g=g, deploy=True)  # the repository's deploy=True form
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in deploy.parameters()) \
        == c2 * c1 // g * 9 + c2
    assert len(list(m.modules())) == len(list(deploy.modules())) == 3


def _bound(head: nn.Module, strides=(8.0, 16.0, 32.0)) -> nn.Module:
    head.stride = torch.tensor(strides)
    return head.eval()


def test_idetect_fuse_deploy_folds_implicit_layers_into_a_plain_detect():
    from blocks.yolov5_repo import AnchorDetect
    from blocks.yolov7_repo import IDetect

    torch.manual_seed(0)
    anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    ch = (32, 64, 128)
    head = _bound(IDetect(80, anchors, ch))
    xs = [torch.randn(1, c, 32 // 2 ** i, 24 // 2 ** i) for i, c in enumerate(ch)]
    before = head([x.clone() for x in xs])[0]
    head.fuse_deploy()
    assert torch.allclose(head([x.clone() for x in xs])[0], before, atol=1e-4)
    detect = AnchorDetect(80, anchors, ch)  # the deploy YAMLs' head
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in detect.parameters())


def test_iauxdetect_fuse_deploy_drops_the_auxiliary_convs():
    from blocks.yolov5_repo import AnchorDetect
    from blocks.yolov7_repo import IAuxDetect

    torch.manual_seed(0)
    anchors = [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137],
               [140, 301, 303, 264, 238, 542], [436, 615, 739, 380, 925, 792]]
    ch = (32, 48, 64, 80, 32, 48, 64, 80)
    head = _bound(IAuxDetect(80, anchors, ch), (8.0, 16.0, 32.0, 64.0))
    xs = [torch.randn(1, c, 64 // 2 ** (i % 4), 64 // 2 ** (i % 4)) for i, c in enumerate(ch)]
    head.train()
    assert len(head([x.clone() for x in xs])) == 8  # training: main and auxiliary maps, as the repository
    head.eval()
    before = head([x.clone() for x in xs])[0]
    head.fuse_deploy()
    assert not hasattr(head, "m2")
    assert torch.allclose(head([x.clone() for x in xs])[0], before, atol=1e-4)
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in AnchorDetect(80, anchors, ch[:4]).parameters())


# --- the thop / summary difference names its cause -------------------------------------------


def test_thop_note_names_the_module_rule_not_an_extrapolation():
    from yoloblocks_cli.commands.profile import thop_difference_note

    note = thop_difference_note(19.591e9, 16.265e9, ["SS2D"])
    assert "SS2D" in note and "get_flops" in note and "+3.326" in note and "not an extrapolation" in note
    assert "extrapolates" in thop_difference_note(9.0e9, 8.9e9, [])


def test_yolov9_activation_key_sets_repconvn_too_for_one_build():
    """gelan.yaml / yolov9.yaml: `activation: nn.ReLU()` sets Conv's and RepConvN's default, as the repository."""
    from blocks.conv import Conv
    from blocks.gelan import RepConvN
    from yoloblocks_cli.loading.yaml_model import default_activation

    with default_activation(nn.ReLU(), ("RepConvN",)):
        assert isinstance(Conv.default_act, nn.ReLU) and isinstance(RepConvN.default_act, nn.ReLU)
        assert Conv.default_act is not RepConvN.default_act  # two instances, as two evals make
    assert isinstance(Conv.default_act, nn.SiLU) and isinstance(RepConvN.default_act, nn.SiLU)


def test_reorg_model_summary_has_no_gflops_when_thop_raises_as_the_repository(yb, tmp_path):
    """ultralytics-thop 2.2.3 raises in get_flops' pass on YOLOv7's ReOrg (P6) models; the repository's
    model_info then prints no GFLOPs, and so does yb's summary line (its own thop counter still counts)."""
    p = tmp_path / "reorg.yaml"
    p.write_text("nc: 80\nanchors:\n  - [10, 13, 16, 30, 33, 23]\nbackbone:\n  - [-1, 1, ReOrg, []]\n"
                 "  - [-1, 1, Conv, [32, 3, 1]]\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, Conv, [64, 3, 2]]\n"
                 "head:\n  - [[3], 1, IDetect, [nc, anchors]]\n")
    proc = yb("profile", str(p), "--no-latency", "--no-memory", "--layer-runs", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["line"] == "reorg summary: 22 layers, 75,966 parameters, 75,966 gradients"
    assert report["summary"]["gflops"] is None and report["flops"]["ultralytics"] == 2_374_860_800
