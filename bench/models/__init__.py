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
from typing import Callable

from torch import nn

from bench.models._common import ConvBNAct, SqueezeExcitation, StochasticDepth
from bench.models.convnext import ConvNeXt, ConvNeXtBlock, LayerNorm2d, convnext
from bench.models.densenet import DenseBlock, DenseLayer, DenseNet, Transition, densenet
from bench.models.efficientnet import EfficientNet, MBConv, efficientnet_b0
from bench.models.hf import HF_INPUT, hf_bert, hf_example_kwargs, hf_gpt2, hf_vit
from bench.models.inception import InceptionBlock, InceptionNet, inception
from bench.models.mobilenet import (InvertedResidual, InvertedResidualV3, MobileNetV2, MobileNetV3,
                                    V3Block, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small)
from bench.models.resnet import (BasicBlock, Bottleneck, CifarResNet, ResNet, resnet18,
                                 resnet20_cifar, resnet50, resnext)
from bench.models.shufflenet import ShuffleNetV2, ShuffleUnit, channel_shuffle, shufflenet_v2
from bench.models.vit import Attention, EncoderBlock, Mlp, PatchEmbed, VisionTransformer, vit

__all__ = [
    "ZOO", "ZOO_INPUT_SHAPES", "convnext", "densenet", "efficientnet_b0", "inception",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet20_cifar",
    "resnet50", "resnext", "shufflenet_v2", "vit", "HF_ZOO", "hf_example_kwargs",
]


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

# Hugging Face transformers (optional extra): keyword inputs from `hf_example_kwargs(name)`.
HF_ZOO: dict[str, Callable[..., nn.Module]] = {"hf_bert": hf_bert, "hf_gpt2": hf_gpt2,
                                             "hf_vit": hf_vit}
