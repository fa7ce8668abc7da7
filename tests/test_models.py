"""Model zoo: output shapes, torch.fx traceability, torchvision structure and parameter counts."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from bench import models
from bench.models import ZOO, ZOO_INPUT_SHAPES

NUM_CLASSES = 10

# torchvision's published counts at 1000 classes; our factories' defaults are these models.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "efficientnet_b0": 5_288_548,
    "resnext": 25_028_904,  # resnext50_32x4d
    "densenet": 7_978_856,  # densenet121
    "shufflenet_v2": 2_278_604,  # shufflenet_v2_x1_0
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread_and_fresh_cache():
    """Tiny inputs run faster on one thread than fighting over shared cores; free cached models after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    _eval_model.cache_clear()


@functools.cache
def _eval_model(name: str) -> nn.Module:
    """One seeded eval-mode build per zoo model, shared by the tests (building dominates the time)."""
    torch.manual_seed(0)
    return ZOO[name](num_classes=NUM_CLASSES).eval()


def _input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_build(factory, **kwargs) -> nn.Module:
    """Build on the meta device: structure and parameter shapes without paying for the init."""
    with torch.device("meta"):
        return factory(**kwargs)


def test_zoo_and_input_shapes_name_the_same_models():
    assert set(ZOO) == set(ZOO_INPUT_SHAPES)
    assert set(ZOO) == {
        "resnet18", "resnet50", "resnet20_cifar", "mobilenet_v2", "mobilenet_v3_large",
        "mobilenet_v3_small", "efficientnet_b0", "resnext", "densenet", "shufflenet_v2",
        "inception", "vit", "convnext"}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_eval_forward_gives_batch_by_num_classes(name):
    x = _input(ZOO_INPUT_SHAPES[name])
    with torch.no_grad():
        out = _eval_model(name)(x)
    assert out.shape == (x.shape[0], NUM_CLASSES)
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


@pytest.mark.parametrize("name", sorted(ZOO))
def test_symbolic_trace_matches_eager(name):
    model = _eval_model(name)
    traced = torch.fx.symbolic_trace(model)
    x = _input(ZOO_INPUT_SHAPES[name])
    with torch.no_grad():
        expected = model(x)
        actual = traced(x)
    # Scale atol to the output: random-init SE nets (MobileNetV3, EfficientNet) output ~1e-5.
    atol = 1e-6 * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_symbolic_trace_in_train_mode_keeps_output_shape(name):
    model = _meta_build(ZOO[name], num_classes=NUM_CLASSES).train()
    traced = torch.fx.symbolic_trace(model)
    out = traced(torch.empty(ZOO_INPUT_SHAPES[name], device="meta"))
    assert out.shape == (ZOO_INPUT_SHAPES[name][0], NUM_CLASSES)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_runs_at_224(name):
    model = models.vit(num_classes=NUM_CLASSES).eval() if name == "vit" else _eval_model(name)
    with torch.no_grad():
        out = model(_input((1, 3, 224, 224)))
    assert out.shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_param_count_matches_torchvision(name):
    assert _num_params(_meta_build(ZOO[name])) == TORCHVISION_PARAMS[name]


def test_param_counts_of_the_models_without_a_torchvision_twin():
    assert _num_params(_meta_build(models.resnet20_cifar, num_classes=10)) == 272_474
    assert _num_params(_meta_build(models.resnet50, num_classes=10)) == 25_557_032 - 2049 * 990


@pytest.mark.parametrize("name", ["resnet20_cifar", "mobilenet_v3_small", "vit", "convnext"])
def test_construction_is_deterministic_under_a_seed(name):
    torch.manual_seed(123)
    first = ZOO[name]().state_dict()
    torch.manual_seed(123)
    second = ZOO[name]().state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_resnet50_has_torchvision_v1_5_layout():
    model = _meta_build(models.resnet50)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) == 53
    assert sorted(n for n in convs if "downsample" in n) == [
        "layer1.0.downsample.0", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert (model.fc.in_features, model.fc.out_features) == (2048, 1000)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    # v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
    assert model.layer2[0].conv1.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)


def test_resnext_uses_grouped_3x3_convs():
    model = _meta_build(models.resnext)
    blocks = [m for m in model.modules() if isinstance(m, models.Bottleneck)]
    assert len(blocks) == 16
    assert {b.conv2.groups for b in blocks} == {32}
    assert model.layer1[0].conv2.in_channels == 128  # 32 groups x 4 channels


def test_mobilenet_v2_has_torchvision_block_configuration():
    model = _meta_build(models.mobilenet_v2)
    blocks = [m for m in model.features if isinstance(m, models.InvertedResidual)]
    convs = [[c for c in b.modules() if isinstance(c, nn.Conv2d)] for b in blocks]
    config = [(cs[0].in_channels, b.out_channels, max(c.stride[0] for c in cs), b.use_res_connect)
              for b, cs in zip(blocks, convs)]
    assert config == [
        (32, 16, 1, False),
        (16, 24, 2, False), (24, 24, 1, True),
        (24, 32, 2, False), (32, 32, 1, True), (32, 32, 1, True),
        (32, 64, 2, False), (64, 64, 1, True), (64, 64, 1, True), (64, 64, 1, True),
        (64, 96, 1, False), (96, 96, 1, True), (96, 96, 1, True),
        (96, 160, 2, False), (160, 160, 1, True), (160, 160, 1, True),
        (160, 320, 1, False)]
    assert len(model.features) == 19
    assert model.classifier[1].in_features == 1280


def test_efficientnet_b0_has_depthwise_kernels_3_and_5():
    model = _meta_build(models.efficientnet_b0)
    depthwise = [m for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 16
    assert {m.kernel_size for m in depthwise} == {(3, 3), (5, 5)}


def test_vit_rejects_an_image_size_that_patches_do_not_tile():
    with pytest.raises(ValueError, match="patch_size"):
        models.vit(image_size=30, patch_size=4)
