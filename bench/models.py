"""Model zoo: download-free definitions of common vision architectures.

Every factory takes ``num_classes`` (default 1000), returns a randomly initialised
``nn.Module``, and builds deterministically under ``torch.manual_seed``. Every model
traces with plain ``torch.fx.symbolic_trace``: no Python control flow on tensor
values, shapes only through ``x.shape`` / ``x.size()``.

Structures follow torchvision (ResNet v1.5, ResNeXt, MobileNetV2/V3, EfficientNet-B0,
DenseNet-121, ShuffleNetV2 x1.0), so parameter counts match torchvision's. ``inception``
is a GoogLeNet-like net with halved widths, ``vit`` a small ViT and ``convnext`` a small
ConvNeXt written after the reference implementations.

``ZOO`` maps a name to a factory that builds a model working at ``ZOO_INPUT_SHAPES[name]``
(small shapes keep tests fast; every CNN also runs at 224x224).

Example:
    >>> import torch
    >>> from bench.models import ZOO, ZOO_INPUT_SHAPES
    >>> model = ZOO["resnet20_cifar"](num_classes=10).eval()
    >>> model(torch.zeros(ZOO_INPUT_SHAPES["resnet20_cifar"])).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ZOO", "ZOO_INPUT_SHAPES", "convnext", "densenet", "efficientnet_b0", "inception",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet20_cifar",
    "resnet50", "resnext", "shufflenet_v2", "vit",
]

NormFactory = Callable[[int], nn.Module]


# ----------------------------------------------------------------------------- shared parts


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


# ----------------------------------------------------------------------------- ResNet family


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual add (torchvision BasicBlock)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, grouped) -> 1x1 x4 with a residual add (torchvision v1.5 Bottleneck)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def _make_res_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                    blocks: int, stride: int = 1, groups: int = 1, base_width: int = 64) -> nn.Sequential:
    """A ResNet stage; the first block gets a 1x1 conv + BN projection when the shape changes."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(_conv1x1(inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample, groups, base_width)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, groups=groups, base_width=base_width))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ImageNet ResNet/ResNeXt with torchvision's module names."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 num_classes: int = 1000, groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            stage = _make_res_layer(block, inplanes, planes, layers[i], 1 if i == 0 else 2,
                                    groups, width_per_group)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class CifarResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016, sec. 4.2) with projection shortcuts: 3x3 stem, three stages."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_res_layer(BasicBlock, 16, 16, blocks_per_stage)
        self.layer2 = _make_res_layer(BasicBlock, 16, 32, blocks_per_stage, stride=2)
        self.layer3 = _make_res_layer(BasicBlock, 32, 64, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 exactly as torchvision (11,689,512 params at 1000 classes)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 v1.5 exactly as torchvision (53 convs, 25,557,032 params at 1000 classes)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)


def resnet20_cifar(num_classes: int = 1000) -> CifarResNet:
    """CIFAR ResNet-20: 3 stages x 3 BasicBlocks at 16/32/64 channels, 1x1 conv + BN shortcuts."""
    return CifarResNet(3, num_classes)


def resnext(num_classes: int = 1000, groups: int = 32, width_per_group: int = 4,
            layers: Sequence[int] = (3, 4, 6, 3)) -> ResNet:
    """ResNeXt with grouped 3x3 convs; the defaults are torchvision's resnext50_32x4d (25,028,904 params)."""
    return ResNet(Bottleneck, layers, num_classes, groups, width_per_group)


# ----------------------------------------------------------------------------- MobileNetV2


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


# ----------------------------------------------------------------------------- MobileNetV3


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


# ----------------------------------------------------------------------------- EfficientNet-B0


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


# ----------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv on the concat of all earlier features."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, prev_features: list[Tensor]) -> Tensor:
        concated = torch.cat(prev_features, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concated)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class DenseBlock(nn.ModuleDict):
    """Dense block: every layer sees ``torch.cat`` of the block input and all earlier outputs."""

    def __init__(self, num_layers: int, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv that halves channels, then 2x2 average pooling."""

    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC with torchvision's module names (features.denseblockN, features.transitionN)."""

    def __init__(self, growth_rate: int, block_config: Sequence[int], num_init_features: int,
                 bn_size: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, num_features, growth_rate, bn_size)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)
        _init_convs(self, mode="fan_in")
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


def densenet(num_classes: int = 1000, growth_rate: int = 32,
             block_config: Sequence[int] = (6, 12, 24, 16), num_init_features: int = 64,
             bn_size: int = 4) -> DenseNet:
    """DenseNet-BC; the defaults are torchvision's densenet121 (7,978,856 params at 1000 classes)."""
    return DenseNet(growth_rate, block_config, num_init_features, bn_size, num_classes)


# ----------------------------------------------------------------------------- ShuffleNetV2


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave channels across ``groups`` (view / transpose / contiguous / view, as torchvision)."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


def _depthwise_conv(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split + one branch (stride 1) or two branches (stride 2), concat, shuffle."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise_conv(inp, stride), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True),
            _depthwise_conv(branch_features, stride), nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with torchvision's module names (conv1, maxpool, stage2-4, conv5, fc)."""

    def __init__(self, stages_repeats: Sequence[int], stages_out_channels: Sequence[int],
                 num_classes: int = 1000) -> None:
        super().__init__()
        inp = stages_out_channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(3, inp, 3, 2, 1, bias=False), nn.BatchNorm2d(inp),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (repeats, oup) in enumerate(zip(stages_repeats, stages_out_channels[1:4])):
            units = [ShuffleUnit(inp, oup, 2)] + [ShuffleUnit(oup, oup, 1) for _ in range(repeats - 1)]
            self.add_module(f"stage{i + 2}", nn.Sequential(*units))
            inp = oup
        last = stages_out_channels[-1]
        self.conv5 = nn.Sequential(nn.Conv2d(inp, last, 1, bias=False), nn.BatchNorm2d(last),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x).mean([2, 3])
        return self.fc(x)


def shufflenet_v2(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNetV2 x1.0 as torchvision (2,278,604 params at 1000 classes)."""
    return ShuffleNetV2((4, 8, 4), (24, 116, 232, 464, 1024), num_classes)


# ----------------------------------------------------------------------------- Inception


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


# ----------------------------------------------------------------------------- ViT


class Attention(nn.Module):
    """Multi-head self-attention written out: qkv Linear, per-head softmax(q k^T * scale) v, proj."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size conv, then (B, C, H, W) -> (B, H*W, C)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViT: patch embedding, class token, learned position embedding, encoder, head on the class token."""

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, num_classes: int = 1000) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        _init_trunc_normal(self, 0.02, (nn.Linear,))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls_token, x), dim=1)
        x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(num_classes: int = 1000, image_size: int = 224, patch_size: int = 16, dim: int = 192,
        depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0) -> VisionTransformer:
    """Small ViT (ViT-Ti width, 4 blocks); only inputs of exactly ``image_size`` are accepted."""
    return VisionTransformer(image_size, patch_size, dim, depth, heads, mlp_ratio, num_classes)


# ----------------------------------------------------------------------------- ConvNeXt


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


# ----------------------------------------------------------------------------- registry


ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet20_cifar": resnet20_cifar,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "efficientnet_b0": efficientnet_b0,
    "resnext": resnext,
    "densenet": densenet,
    "shufflenet_v2": shufflenet_v2,
    "inception": inception,
    # ViT's position embedding fixes the input size, so the zoo entry is built for 32x32.
    "vit": functools.partial(vit, image_size=32, patch_size=4),
    "convnext": convnext,
}

_SMALL_IMAGE = (2, 3, 32, 32)

# Batch 2, not 1: BatchNorm in train mode needs more than one value per channel, and the
# ImageNet CNNs reach 1x1 maps at 32x32. Batch 2 also catches reshapes that mix up the batch.
ZOO_INPUT_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "resnet18": _SMALL_IMAGE,
    "resnet50": _SMALL_IMAGE,
    "resnet20_cifar": _SMALL_IMAGE,
    "mobilenet_v2": _SMALL_IMAGE,
    "mobilenet_v3_large": _SMALL_IMAGE,
    "mobilenet_v3_small": _SMALL_IMAGE,
    "efficientnet_b0": _SMALL_IMAGE,
    "resnext": _SMALL_IMAGE,
    "densenet": _SMALL_IMAGE,
    "shufflenet_v2": _SMALL_IMAGE,
    "inception": _SMALL_IMAGE,
    "vit": _SMALL_IMAGE,
    "convnext": _SMALL_IMAGE,
}
