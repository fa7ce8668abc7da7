"""Shared parts of the zoo models (conv-BN-activation, squeeze-excitation, stochastic depth, inits)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn


NormFactory = Callable[[int], nn.Module]


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never dropping more than 10% (torchvision)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Bias-free 'same' Conv2d + norm + optional activation (torchvision's Conv2dNormActivation)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, act: Callable[..., nn.Module] | None = nn.ReLU,
                 norm: NormFactory = nn.BatchNorm2d) -> None:
        padding = (kernel_size - 1) // 2
        layers = [nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
                  norm(out_ch)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: ``scale = fc2(act(fc1(avgpool(x))))``, then ``scale_act(scale) * x``."""

    def __init__(self, channels: int, squeeze_channels: int, act: Callable[[], nn.Module] = nn.ReLU,
                 scale_act: Callable[[], nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = act()
        self.scale_activation = scale_act()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        scale = self.scale_activation(scale)
        return scale * x


class StochasticDepth(nn.Module):
    """Row-mode stochastic depth on a 4-D residual branch; the identity in eval or when p == 0."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        keep = torch.empty_like(x[:, :1, :1, :1]).bernoulli_(survival)
        return x * keep / survival


def _init_convs(model: nn.Module, mode: str = "fan_out") -> None:
    """He-normal conv weights (ReLU gain) and zero conv biases, counting fans per group.

    torchvision calls ``kaiming_normal_``, whose fan_out ignores ``groups``: a depthwise conv
    then starts sqrt(channels) times too small, and a random-init MobileNet/EfficientNet in
    eval mode outputs ~1e-10, which would make every numerical-equivalence test vacuous.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kernel_area = m.weight[0, 0].numel()
            fan_in = m.in_channels // m.groups * kernel_area
            fan_out = m.out_channels // m.groups * kernel_area
            std = math.sqrt(2.0 / (fan_out if mode == "fan_out" else fan_in))
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _init_trunc_normal(model: nn.Module, std: float, types: tuple[type, ...]) -> None:
    """Truncated-normal weights and zero biases for every module of ``types`` (ViT, ConvNeXt)."""
    for m in model.modules():
        if isinstance(m, types):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _init_linears_normal(model: nn.Module, std: float) -> None:
    """Normal(0, std) Linear weights and zero biases (MobileNet classifiers)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
