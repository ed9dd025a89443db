"""TorchVision: a torchvision classification model as one YAML layer, with or without torchvision.

ultralytics' ``yolo11-cls-resnet18.yaml`` writes ``[-1, 1, TorchVision, [512, resnet18, DEFAULT,
True, 2]]``: the output width 512 as written (never width-scaled) and the constructor call
``TorchVision("resnet18", "DEFAULT", True, 2)`` (model, weights, unwrap, truncate).

With torchvision installed, the block calls ``torchvision.models.get_model`` exactly as ultralytics
does. torchvision is not a dependency, though (there is no CPU wheel on every index), so without it
yb builds the ResNet family itself (resnet18/34/50/101/152) module for module as torchvision's
``models/resnet.py`` does: the same children in the same order (``conv1, bn1, relu, maxpool,
layer1..layer4, avgpool, fc``), the same block layout (one ReLU module reused inside a block, the
stride on the 3x3 convolution of a bottleneck, ``downsample`` = 1x1 conv + BN), so parameters, the
leaf-module count and a torchvision checkpoint's state-dict keys agree. Any other model name is a
ValueError naming the five and ``pip install torchvision``.

Worked example: resnet18 has 11,689,512 parameters, 52 leaf modules (stem 4; eight BasicBlocks of
5: conv1 bn1 relu conv2 bn2; three downsamples of 2; avgpool, fc). ``truncate=2`` drops avgpool and
fc: 11,176,512 parameters, 50 leaves, (1, 512, 7, 7) out of a 224x224 image; the state-dict keys
become ``0.weight, 1.weight, ..., 4.0.conv1.weight, ...`` (children numbered by nn.Sequential).

Pretrained weights are never fetched here (no network is assumed): any ``weights`` other than
None/False builds the architecture with random weights and sets ``yb_note``, one line the model
builder prints on stderr.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

import torch
from torch import nn

from blocks.conventions import Convention, LayerContext, Resolved, register_convention
from blocks.registry import register_block

_SOURCE = "ultralytics nn/modules/block.py"


# --- the ResNet family, as torchvision's models/resnet.py lays it out ------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (stride on the first) with BN, one ReLU module used twice, a residual."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1, 3x3 (the stride), 1x1 to 4*planes, BN after each, one ReLU module."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)  # registered after bn3, as torchvision's
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """7x7 stride-2 stem, 3x3 max-pool, four stages (strides 1, 2, 2, 2), global pool, a Linear."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation (numerics only; counts do not depend on it)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


RESNETS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


def build_without_torchvision(name: str) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None)`` for the names yb knows; ValueError otherwise."""
    if name not in RESNETS:
        raise ValueError(f"model {name!r} needs torchvision, which is not installed: without it yb builds "
                         f"{', '.join(RESNETS)}; pip install torchvision gives every other torchvision model")
    block, layers = RESNETS[name]
    return ResNet(block, layers)


def torchvision_get_model() -> Callable[..., nn.Module] | None:
    """torchvision's ``models.get_model`` when torchvision is importable, else None."""
    try:
        found = importlib.util.find_spec("torchvision") is not None
    except (ImportError, ValueError):  # a module in sys.modules without a __spec__
        found = False
    if not found:
        return None
    return importlib.import_module("torchvision").models.get_model


# --- the YAML layer ----------------------------------------------------------------------------


def _torchvision(ctx: LayerContext) -> Resolved:
    if not ctx.args or not isinstance(ctx.args[0], int) or isinstance(ctx.args[0], bool):
        raise ValueError("the first argument must be the output width (an integer, not scaled)")
    return Resolved(list(ctx.args[1:]), ctx.args[0], repeats=ctx.n)


TORCHVISION_RULE = register_convention(Convention(
    "torchvision",
    "args [c2, model, weights, unwrap, truncate, split] become (model, weights, unwrap, truncate, split); "
    "output width c2 as written, never scaled",
    _torchvision, lambda c1, rest: list(rest if rest is not None else ["resnet18", None, True, 2]),
))


# family "utility": an RGB image in, so it is not measured or probed standalone at a reference width
@register_block(TORCHVISION_RULE, family="utility", source=_SOURCE)
class TorchVision(nn.Module):
    """A torchvision model (its layers unwrapped, the last ``truncate`` dropped); the ResNets build without it.

    ``split``: return the input and every layer's output as a list. ``unwrap=False`` keeps the model
    whole and sets ``head``/``heads`` to Identity, as ultralytics does (a ResNet keeps its ``fc``).
    """

    def __init__(self, model: str, weights: str | None = "DEFAULT", unwrap: bool = True, truncate: int = 2,
                 split: bool = False):
        super().__init__()
        get_model = torchvision_get_model()
        self.yb_note: str | None = None
        if get_model is not None:
            self.m = get_model(model, weights=weights)
        else:
            self.m = build_without_torchvision(model)
            if weights not in (None, False):
                self.yb_note = (f"TorchVision({model}): weights {weights!r} requested but not loaded "
                                "(torchvision is not installed; yb built the architecture with random weights)")
        if unwrap:
            layers = list(self.m.children())
            if isinstance(layers[0], nn.Sequential):  # EfficientNet, Swin: the features' own children
                layers = [*layers[0].children(), *layers[1:]]
            self.m = nn.Sequential(*(layers[:-truncate] if truncate else layers))
            self.split = split
        else:
            self.split = False
            self.m.head = self.m.heads = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.split:
            y = [x]
            y.extend(m(y[-1]) for m in self.m)
            return y
        return self.m(x)
