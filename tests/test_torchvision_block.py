"""TorchVision without torchvision: yb's ResNets equal torchvision's (parameters, leaves, state-dict
names), the block unwraps/truncates/splits as ultralytics', and torchvision is used when importable.

Reference figures: torchvision 0.29.1, ``get_model(name, weights=None)``.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocks.torchvision_models import RESNETS, BasicBlock, Bottleneck, TorchVision, build_without_torchvision

TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _leaves(m: nn.Module) -> int:
    return sum(1 for x in m.modules() if not list(x.children()))


def _expected_leaves(name: str) -> int:
    """stem (conv1 bn1 relu maxpool) + per block (2 or 3 conv/BN pairs, one ReLU) + 2 per downsample + avgpool, fc."""
    block, layers = RESNETS[name]
    per_block = 5 if block is BasicBlock else 7
    downsamples = 3 if block is BasicBlock else 4  # a bottleneck's layer1 widens 64 -> 256
    return 4 + per_block * sum(layers) + 2 * downsamples + 2


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_params_and_leaves_equal_torchvision(name):
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        m = build_without_torchvision(name)
    assert sum(p.numel() for p in m.parameters()) == TORCHVISION_PARAMS[name]
    assert _leaves(m) == _expected_leaves(name)
    assert [n for n, _ in m.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                  "layer4", "avgpool", "fc"]


def test_leaf_counts_by_hand():
    assert [_expected_leaves(n) for n in TORCHVISION_PARAMS] == [52, 92, 126, 245, 364]


def test_resnet18_truncated_state_dict_names():
    tv = TorchVision("resnet18", None)
    keys = ["0.weight", *(f"1.{k}" for k in BN_KEYS)]  # conv1, bn1; 2 relu and 3 maxpool hold nothing
    for stage in range(4):  # layer1..layer4 are children 4..7
        for b in range(2):
            p = f"{4 + stage}.{b}."
            keys += [p + "conv1.weight", *(f"{p}bn1.{k}" for k in BN_KEYS),
                     p + "conv2.weight", *(f"{p}bn2.{k}" for k in BN_KEYS)]
            if stage and not b:
                keys += [p + "downsample.0.weight", *(f"{p}downsample.1.{k}" for k in BN_KEYS)]
    sd = tv.m.state_dict()
    assert list(sd) == keys
    assert list(tv.state_dict()) == [f"m.{k}" for k in keys]
    assert sd["5.0.conv1.weight"].shape == (128, 64, 3, 3)  # the stride sits on the 3x3 conv
    assert sd["7.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    # the full model's keys are torchvision's: conv1 ... layer4.1.bn2 then fc
    full = list(build_without_torchvision("resnet18").state_dict())
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert full == [names[int(k.split(".")[0])] + k[k.index("."):] for k in keys] + ["fc.weight", "fc.bias"]


def test_resnet50_bottleneck_names_and_order():
    with torch.device("meta"):
        m = build_without_torchvision("resnet50")
    assert [n for n, _ in m.layer1[0].named_children()] == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu",
                                                             "downsample"]
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)  # v1.5
    assert m.layer1[1].downsample is None and m.fc.in_features == 2048


def test_truncate_unwrap_split_shapes():
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        tv = TorchVision("resnet18", None).eval()
        assert tv(x).shape == (1, 512, 7, 7) and len(tv.m) == 8
        assert sum(p.numel() for p in tv.parameters()) == 11_176_512 and _leaves(tv) == 50
        whole = TorchVision("resnet18", None, True, 0).eval()  # truncate 0 keeps avgpool and fc
        assert len(whole.m) == 10 and _leaves(whole) == 52
        assert whole.m[:-1](x).shape == (1, 512, 1, 1)  # unwrapped: the flatten of ResNet.forward is gone
        wrapped = TorchVision("resnet18", None, False).eval()  # head/heads become one Identity; fc stays
        assert wrapped(x).shape == (1, 1000) and not wrapped.split
        assert isinstance(wrapped.m.head, nn.Identity) and wrapped.m.head is wrapped.m.heads
        assert sum(p.numel() for p in wrapped.parameters()) == 11_689_512 and _leaves(wrapped) == 53
        split = TorchVision("resnet18", None, True, 2, True).eval()
        ys = split(torch.zeros(1, 3, 64, 64))
    assert [tuple(y.shape) for y in ys] == [(1, 3, 64, 64), (1, 64, 32, 32), (1, 64, 32, 32), (1, 64, 32, 32),
                                            (1, 64, 16, 16), (1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4),
                                            (1, 512, 2, 2)]


def test_weights_note_only_when_weights_were_asked_for():
    assert TorchVision("resnet18", None).yb_note is None and TorchVision("resnet18", False).yb_note is None
    note = TorchVision("resnet18", "DEFAULT").yb_note
    assert note.startswith("TorchVision(resnet18): weights 'DEFAULT' requested but not loaded")


def test_unknown_name_names_the_five_and_torchvision():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, resnet101, resnet152; pip install torchvision"):
        TorchVision("convnext_tiny")


def test_yaml_rule_keeps_the_width_as_written():
    from blocks.conventions import LayerContext
    from blocks.registry import get_block

    info = get_block("TorchVision")
    res = info.convention.resolve(LayerContext(ch_in=[3], args=[512, "resnet18", "DEFAULT", True, 2], width=0.25))
    assert res.args == ["resnet18", "DEFAULT", True, 2] and res.c_out == 512
    assert info.inspect_args(3, None) == ["resnet18", None, True, 2]
    assert info.source == "ultralytics nn/modules/block.py" and info.family == "utility"  # not probed standalone
    from yoloblocks_cli.catalog.entries import yaml_snippet

    assert yaml_snippet(info) == "- [-1, 1, TorchVision, [512, 'resnet18', None, True, 2]]"


def test_profile_yolo11_cls_resnet18(yb_in):
    code, out, err = yb_in("profile", "yolo11-cls-resnet18", "--size", "224", "--json", "--no-latency",
                           "--no-memory", "--threads", "1")
    assert code == 0, err
    r = json.loads(out)
    # TorchVision(resnet18, truncate 2) + Classify: Conv(512, 1280, 1) + BN + Linear(1280, 1000)
    assert r["summary"]["params"] == 11_176_512 + 512 * 1280 + 2 * 1280 + 1280 * 1000 + 1000 == 13_115_432
    assert r["summary"]["layers"] == 56  # 50 leaves of the backbone, 6 of Classify
    assert [layer["params"] for layer in r["layers"]] == [11_176_512, 1_938_920]
    assert r["layers"][0]["output_shape"] == [1, 512, 7, 7] and r["output_shape"] == [1, 1000]
    assert err.strip().splitlines() == ["note: TorchVision(resnet18): weights 'DEFAULT' requested but not loaded "
                                        "(torchvision is not installed; yb built the architecture with random weights)"]


def test_unknown_model_name_is_one_line_exit_2(yb_in, tmp_path):
    p = tmp_path / "cls.yaml"
    p.write_text("nc: 10\nbackbone:\n  - [-1, 1, TorchVision, [768, convnext_tiny, DEFAULT, True, 2]]\n"
                 "head:\n  - [-1, 1, Classify, [nc]]\n")
    code, _, err = yb_in("profile", str(p), "--no-latency", "--no-memory")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "layer 0 (TorchVision)" in lines[0] and "'convnext_tiny' needs torchvision" in lines[0]
    assert "resnet18, resnet34, resnet50, resnet101, resnet152" in lines[0] and "pip install torchvision" in lines[0]


def test_installed_torchvision_is_used(monkeypatch):
    calls = []

    def get_model(name, weights=None):
        calls.append((name, weights))
        features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())  # EfficientNet-like: a Sequential first child
        return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    fake = types.ModuleType("torchvision")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    fake.models = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    tv = TorchVision("efficientnet_b0", "DEFAULT")
    assert calls == [("efficientnet_b0", "DEFAULT")] and tv.yb_note is None  # no note: torchvision loads weights
    assert [type(m) for m in tv.m] == [nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d]  # features unwrapped, 2 cut
    assert TorchVision("resnet18", None, False).m.head is not None and calls[-1] == ("resnet18", None)


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
def test_block_forward_equals_functional(cls):
    """A stride-2 block with a downsample, random BN statistics, eval mode, against F.conv2d/F.batch_norm."""
    planes, c_out = 16, 16 * cls.expansion
    down = nn.Sequential(nn.Conv2d(8, c_out, 1, 2, bias=False), nn.BatchNorm2d(c_out))
    blk = cls(8, planes, 2, down).eval()
    with torch.no_grad():
        for bn in (m for m in blk.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
        x = torch.randn(2, 8, 12, 12)
        got = blk(x.clone())
        identity = _bn(F.conv2d(x, down[0].weight, stride=2), down[1])
        if cls is BasicBlock:
            y = F.relu(_bn(F.conv2d(x, blk.conv1.weight, stride=2, padding=1), blk.bn1))
            y = _bn(F.conv2d(y, blk.conv2.weight, padding=1), blk.bn2)
        else:
            y = F.relu(_bn(F.conv2d(x, blk.conv1.weight), blk.bn1))
            y = F.relu(_bn(F.conv2d(y, blk.conv2.weight, stride=2, padding=1), blk.bn2))
            y = _bn(F.conv2d(y, blk.conv3.weight), blk.bn3)
        want = F.relu(y + identity)
    assert got.shape == (2, c_out, 6, 6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
