"""Zoo family: mobilenet."""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models._common import (ConvBNAct, NormFactory, SqueezeExcitation, _init_convs,
                                  _init_linears_normal, _make_divisible)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (if t != 1) -> 3x3 depthwise -> linear 1x1 projection."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden_dim, 1, act=nn.ReLU6))
        layers += [ConvBNAct(hidden_dim, hidden_dim, 3, stride, groups=hidden_dim, act=nn.ReLU6),
                   nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# expand ratio t, output channels c, repeats n, first stride s (torchvision / the paper's Table 2)
_MNV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2 with torchvision's block configuration and module names."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        input_channel = _make_divisible(32 * width_mult)
        last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(3, input_channel, stride=2, act=nn.ReLU6)]
        for t, c, n, s in _MNV2_SETTING:
            output_channel = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNAct(input_channel, last_channel, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))
        _init_convs(self)
        _init_linears_normal(self, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 as torchvision (3,504,872 params at 1000 classes, width 1.0)."""
    return MobileNetV2(num_classes, width_mult)


class V3Block(NamedTuple):
    """One MobileNetV3 bneck row; input channels come from the previous row."""

    kernel: int
    expanded: int
    out: int
    use_se: bool
    use_hs: bool
    stride: int


_BN_V3: NormFactory = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class InvertedResidualV3(nn.Module):
    """MobileNetV3 bneck: optional 1x1 expand, depthwise kxk, optional SE, linear 1x1 projection."""

    def __init__(self, inp: int, cfg: V3Block) -> None:
        super().__init__()
        self.use_res_connect = cfg.stride == 1 and inp == cfg.out
        act = nn.Hardswish if cfg.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cfg.expanded != inp:
            layers.append(ConvBNAct(inp, cfg.expanded, 1, act=act, norm=_BN_V3))
        layers.append(ConvBNAct(cfg.expanded, cfg.expanded, cfg.kernel, cfg.stride,
                                groups=cfg.expanded, act=act, norm=_BN_V3))
        if cfg.use_se:
            layers.append(SqueezeExcitation(cfg.expanded, _make_divisible(cfg.expanded // 4)))
        layers.append(ConvBNAct(cfg.expanded, cfg.out, 1, act=None, norm=_BN_V3))
        self.block = nn.Sequential(*layers)
        self.out_channels = cfg.out

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


_V3_LARGE = tuple(V3Block(*row) for row in (
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1)))

_V3_SMALL = tuple(V3Block(*row) for row in (
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)))


class MobileNetV3(nn.Module):
    """MobileNetV3 with torchvision's structure: hardswish stem, bnecks, 6x 1x1 conv, MLP head."""

    def __init__(self, setting: Sequence[V3Block], last_channel: int, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        super().__init__()
        inp = 16
        layers: list[nn.Module] = [ConvBNAct(3, inp, 3, 2, act=nn.Hardswish, norm=_BN_V3)]
        for cfg in setting:
            layers.append(InvertedResidualV3(inp, cfg))
            inp = cfg.out
        layers.append(ConvBNAct(inp, 6 * inp, 1, act=nn.Hardswish, norm=_BN_V3))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * inp, last_channel), nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        _init_convs(self)
        _init_linears_normal(self, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Large as torchvision (5,483,032 params at 1000 classes)."""
    return MobileNetV3(_V3_LARGE, 1280, num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Small as torchvision (2,542,856 params at 1000 classes)."""
    return MobileNetV3(_V3_SMALL, 1024, num_classes)
