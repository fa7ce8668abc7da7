"""One tiny module per rule of passes/find_elastic_kernels.py, kernels written out literally."""
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compiler.capture import capture
from passes.find_elastic_kernels import ElasticKernel, KernelConfig, find_elastic_kernels
from passes.unsupported import UnsupportedError


def kernels_of(model, *shape, **cfg):
    ir = capture(model.eval(), (torch.randn(*shape),))
    return find_elastic_kernels(ir, cfg=KernelConfig(**cfg))


def summary(found):
    return [(k.module_path, k.kernel_size, k.choices, k.padding, k.paddings, k.depthwise)
            for k in found.kernels]


def records(found):
    return [(u.node, u.rule) for u in found.unsupported]


def test_rules_1_2_8_7x7_conv_and_5x5_depthwise():
    net = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(),
                        nn.Conv2d(8, 8, 5, padding=2, groups=8))
    found = kernels_of(net, 1, 3, 16, 16)
    assert found.kernels == (
        ElasticKernel("_0", "0", 7, (7, 5, 3), 3, (3, 2, 1), False),
        ElasticKernel("_2", "2", 5, (5, 3), 2, (2, 1), True))
    assert found.unsupported == ()


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 4, 3, padding=1),       # already the smallest choice
    nn.Conv2d(4, 4, 4, padding=2),       # even
    nn.Conv2d(4, 4, (1, 7), padding=(0, 3)),  # not square
    nn.ConvTranspose2d(4, 4, 5, padding=2),   # transposed: not a candidate
])
def test_rule_1_non_candidates_are_neither_elastic_nor_recorded(conv):
    found = kernels_of(nn.Sequential(conv), 1, 4, 9, 9)
    assert found.kernels == () and found.unsupported == ()


def test_rule_2_choices_stop_where_padding_would_go_negative():
    found = kernels_of(nn.Sequential(nn.Conv2d(4, 4, 9, padding=2)), 1, 4, 12, 12)
    assert summary(found) == [("0", 9, (9, 7, 5), 2, (2, 1, 0), False)]  # 3x3 would need -1


def test_rule_2_dilation_scales_the_padding_and_min_kernel_bounds_the_choices():
    net = nn.Sequential(nn.Conv2d(4, 4, 5, padding=4, dilation=2), nn.Conv2d(4, 4, 7, padding=3))
    assert summary(kernels_of(net, 1, 4, 12, 12)) == [("0", 5, (5, 3), 4, (4, 2), False),
                                                      ("1", 7, (7, 5, 3), 3, (3, 2, 1), False)]
    assert summary(kernels_of(net, 1, 4, 12, 12, min_kernel=5)) == [
        ("1", 7, (7, 5), 3, (3, 2), False)]
    assert summary(kernels_of(net, 1, 4, 12, 12, min_kernel=1)) == [
        ("0", 5, (5, 3, 1), 4, (4, 2, 0), False), ("1", 7, (7, 5, 3, 1), 3, (3, 2, 1, 0), False)]


def test_rule_3_same_padding_and_1d_3d_convs():
    net = nn.Sequential(nn.Conv1d(4, 4, 5, padding="same"))
    assert summary(kernels_of(net, 1, 4, 10)) == [("0", 5, (5, 3), 2, (2, 1), False)]
    net = nn.Sequential(nn.Conv3d(4, 4, 5, padding=2, groups=4))
    assert summary(kernels_of(net, 1, 4, 6, 6, 6)) == [("0", 5, (5, 3), 2, (2, 1), True)]


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 5), nn.Conv2d(4, 4, 5, padding="valid"),
                                  nn.Conv2d(4, 4, 5, padding=(2, 1))])
def test_unsupported_rule_4_kernel_that_cannot_shrink(conv):
    found = kernels_of(nn.Sequential(conv), 1, 4, 9, 9)
    assert found.kernels == () and records(found) == [("_0", "Rule 4")]
    assert "no smaller kernel keeps the output shape" in found.unsupported[0].reason


def test_unsupported_rule_5_padding_mode():
    found = kernels_of(nn.Sequential(nn.Conv2d(4, 4, 5, padding=2, padding_mode="reflect")),
                       1, 4, 9, 9)
    assert found.kernels == () and records(found) == [("_0", "Rule 5")]


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 5, padding=2)

    def forward(self, x):
        return self.conv(self.conv(x))


def test_unsupported_rule_6_shared_conv_module():
    found = kernels_of(Shared(), 1, 4, 9, 9)
    assert found.kernels == () and records(found) == [("conv", "Rule 6"), ("conv_1", "Rule 6")]


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w5 = nn.Parameter(torch.randn(4, 4, 5, 5))
        self.w3 = nn.Parameter(torch.randn(4, 4, 3, 3))

    def forward(self, x):
        return F.conv2d(F.conv2d(x, self.w5, padding=2), weight=self.w3, padding=1)


def test_unsupported_rule_7_functional_conv():
    found = kernels_of(Functional(), 1, 4, 9, 9)
    assert found.kernels == () and records(found) == [("conv2d", "Rule 7")]  # 3x3: no record


def test_rule_9_disabled_and_strict():
    net = nn.Sequential(nn.Conv2d(4, 4, 7, padding=3), nn.Conv2d(4, 4, 5))
    disabled = kernels_of(net, 1, 4, 12, 12, enabled=False)
    assert disabled.kernels == () and disabled.unsupported == ()
    with pytest.raises(UnsupportedError, match="1 unsupported"):
        kernels_of(net, 1, 4, 12, 12, strict=True)
    with pytest.raises(ValueError, match="odd"):
        KernelConfig(min_kernel=2)


def snapshot(ir):
    return (list(ir.graph.nodes(data="info")), sorted(ir.graph.edges), ir.gm.code)


def test_deterministic_input_unchanged_and_json_round_trip():
    net = nn.Sequential(nn.Conv2d(3, 8, 7, padding=3), nn.Conv2d(8, 8, 5, groups=8, padding=2),
                        nn.Conv2d(8, 8, 5))
    ir = capture(net.eval(), (torch.randn(1, 3, 12, 12),))
    before = snapshot(ir)
    first, second = find_elastic_kernels(ir), find_elastic_kernels(ir)
    assert first == second and snapshot(ir) == before
    data = first.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["kernels"][0] == {"node": "_0", "module_path": "0", "kernel_size": 7,
                                  "choices": [7, 5, 3], "padding": 3, "paddings": [3, 2, 1],
                                  "depthwise": False}
    assert [u["node"] for u in data["unsupported"]] == ["_2"]
