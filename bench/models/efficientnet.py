"""Zoo family: efficientnet."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.models._common import (ConvBNAct, SqueezeExcitation, StochasticDepth, _init_convs,
                                  _make_divisible)


class MBConv(nn.Module):
    """EfficientNet MBConv: 1x1 expand, depthwise kxk, SE (SiLU, sigmoid), 1x1 projection."""

    def __init__(self, inp: int, out: int, expand_ratio: int, kernel: int, stride: int,
                 stochastic_depth_prob: float) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inp == out
        expanded = _make_divisible(inp * expand_ratio)
        layers: list[nn.Module] = []
        if expanded != inp:
            layers.append(ConvBNAct(inp, expanded, 1, act=nn.SiLU))
        layers += [ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=nn.SiLU),
                   SqueezeExcitation(expanded, max(1, inp // 4), act=nn.SiLU, scale_act=nn.Sigmoid),
                   ConvBNAct(expanded, out, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)
        self.out_channels = out

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += x
        return result


# expand ratio, kernel, first stride, in, out, repeats (torchvision's B0 table)
_B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class EfficientNet(nn.Module):
    """EfficientNet-B0 with torchvision's module names (features.N.M.block...)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.SiLU)]
        total_blocks = sum(stage[-1] for stage in _B0_STAGES)
        block_id = 0
        for expand, kernel, stride, inp, out, repeats in _B0_STAGES:
            stage = []
            for i in range(repeats):
                sd_prob = stochastic_depth_prob * block_id / total_blocks
                stage.append(MBConv(inp if i == 0 else out, out, expand, kernel,
                                    stride if i == 0 else 1, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvBNAct(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(1280, num_classes))
        _init_convs(self)
        init_range = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(self.classifier[1].weight, -init_range, init_range)
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def efficientnet_b0(num_classes: int = 1000, stochastic_depth_prob: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 as torchvision (5,288,548 params); stochastic depth is the identity in eval."""
    return EfficientNet(num_classes, stochastic_depth_prob=stochastic_depth_prob)
