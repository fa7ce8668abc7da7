"""Zoo family: inception."""
from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from bench.models._common import ConvBNAct, _init_convs


_BN_INCEPTION: NormFactory = functools.partial(nn.BatchNorm2d, eps=0.001)


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1."""

    def __init__(self, in_ch: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        conv = functools.partial(ConvBNAct, norm=_BN_INCEPTION)
        self.branch1 = conv(in_ch, ch1x1, 1)
        self.branch2 = nn.Sequential(conv(in_ch, ch3x3red, 1), conv(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(conv(in_ch, ch5x5red, 1), conv(ch5x5red, ch5x5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(in_ch, pool_proj, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionNet(nn.Module):
    """GoogLeNet topology at half width, with 4 fewer blocks and no auxiliary heads."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        conv = functools.partial(ConvBNAct, norm=_BN_INCEPTION)
        self.conv1 = conv(3, 32, 7, stride=2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = conv(32, 32, 1)
        self.conv3 = conv(32, 96, 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception3a = InceptionBlock(96, 32, 48, 64, 8, 16, 16)
        self.inception3b = InceptionBlock(128, 64, 64, 96, 16, 48, 32)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception4a = InceptionBlock(240, 96, 48, 104, 8, 24, 32)
        self.inception4b = InceptionBlock(256, 80, 56, 112, 12, 32, 32)
        self.maxpool4 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception5a = InceptionBlock(256, 128, 80, 160, 16, 64, 64)
        self.inception5b = InceptionBlock(416, 192, 96, 192, 24, 64, 64)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512, num_classes)
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.maxpool4(self.inception4b(self.inception4a(x)))
        x = self.inception5b(self.inception5a(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def inception(num_classes: int = 1000) -> InceptionNet:
    """GoogLeNet-like Inception net (half width, 6 Inception blocks, true 5x5 branches)."""
    return InceptionNet(num_classes)
