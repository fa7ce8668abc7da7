"""passes/reorder_channels.py: importance order, consistent permutation, outputs unchanged."""
import pytest
import torch
import torch.nn as nn

from bench.models import ZOO, ZOO_INPUT_SHAPES
from compiler.capture import capture
from passes.find_width_groups import GroupingConfig, find_width_groups
from passes.reorder_channels import channel_importance, reorder_channels


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 16, 1)
        self.bn = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24 * 4, 5)

    def forward(self, x):
        y = self.bn(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(torch.flatten(torch.relu(y), 1))


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)


def test_sorted_by_importance_and_outputs_unchanged():
    torch.manual_seed(0)
    m = ConcatNet().eval()
    _randomise_bn(m)
    x = torch.randn(2, 3, 2, 2)
    ir = capture(m, x)
    wg = find_width_groups(ir, cfg=GroupingConfig(min_width=2, width_divisor=2))
    assert len(wg.group("a").choices) > 1 and len(wg.group("b").choices) > 1
    r = reorder_channels(ir.gm, wg)
    torch.testing.assert_close(r(x), m(x), rtol=1e-5, atol=1e-6)
    for name in ("a", "b"):
        score = r.get_submodule(name).weight.abs().flatten(1).sum(1)
        assert torch.all(score[:-1] >= score[1:]), name
    # the BN's statistics moved with their channels: channel 0 of "b" sits at offset 8
    perm_b = torch.sort(-channel_importance(ir.gm, wg)["b"], stable=True).indices
    torch.testing.assert_close(r.get_submodule("bn").running_mean[8:],
                               m.bn.running_mean[8:][perm_b])
    # the flatten consumer moved whole blocks of H*W features
    w_old, w_new = m.fc.weight.view(5, 24, 4), r.get_submodule("fc").weight.view(5, 24, 4)
    torch.testing.assert_close(w_new[:, 8:], w_old[:, 8:][:, perm_b])


def test_input_module_untouched():
    torch.manual_seed(0)
    m = ConcatNet().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ir = capture(m, torch.zeros(1, 3, 2, 2))
    reorder_channels(ir.gm, find_width_groups(ir))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_outputs_unchanged(name):
    torch.manual_seed(0)
    m = ZOO[name](num_classes=10).eval()
    _randomise_bn(m)
    x = torch.randn(ZOO_INPUT_SHAPES[name])
    ir = capture(m, x)
    ref = m(x)
    out = reorder_channels(ir.gm, find_width_groups(ir))(x)
    scale = ref.abs().max().item()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * max(scale, 1e-3))
