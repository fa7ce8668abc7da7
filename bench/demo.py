"""The demo's "user's model": a CIFAR-style ResNet for 1-channel 28x28 images (Fashion-MNIST).

Wide enough that Fashion-MNIST does not need all of it, which is the situation the compiler is
for: a trained model with room to shrink. ``widths`` and ``blocks`` set the three stages.

Example:
    >>> import torch
    >>> fmnist_resnet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["fmnist_resnet"]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class FmnistResNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128),
                 blocks: Sequence[int] = (2, 2, 2), in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(_Block(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def fmnist_resnet(num_classes: int = 10, widths: Sequence[int] = (32, 64, 128),
                  blocks: Sequence[int] = (2, 2, 2), in_channels: int = 1) -> FmnistResNet:
    return FmnistResNet(num_classes, widths, blocks, in_channels)
