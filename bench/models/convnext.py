"""Zoo family: convnext."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models._common import StochasticDepth, _init_trunc_normal


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor: permute to NHWC, F.layer_norm, permute back."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dw 7x7 -> NHWC LayerNorm -> Linear 4x -> GELU -> Linear -> gamma * x -> NCHW, residual add."""

    def __init__(self, dim: int, layer_scale_init: float, drop_path: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = StochasticDepth(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class ConvNeXt(nn.Module):
    """ConvNeXt: 4x4/4 stem + LayerNorm2d, stages of blocks, LayerNorm2d + 2x2/2 downsampling."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int], num_classes: int = 1000,
                 layer_scale_init: float = 1e-6, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))])
        for i in range(1, len(dims)):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)))
        total = sum(depths)
        rates = iter([drop_path_rate * i / max(1, total - 1) for i in range(total)])
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim, layer_scale_init, next(rates)) for _ in range(depth)])
            for depth, dim in zip(depths, dims))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        _init_trunc_normal(self, 0.02, (nn.Conv2d, nn.Linear))

    def forward(self, x: Tensor) -> Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)


def convnext(num_classes: int = 1000, depths: Sequence[int] = (2, 2, 4, 2),
             dims: Sequence[int] = (48, 96, 192, 384), layer_scale_init: float = 1e-6,
             drop_path_rate: float = 0.0) -> ConvNeXt:
    """Small ConvNeXt (reference block design; layer scale ``gamma`` starts at ``layer_scale_init``)."""
    return ConvNeXt(depths, dims, num_classes, layer_scale_init, drop_path_rate)
