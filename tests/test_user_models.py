"""compile_supernet on structures users bring that our zoo does not have: an encoder-decoder
with skip concatenations and upsampling, two inputs and two outputs, a module called twice,
in-place residual adds, functional heads, and a model mixing elastic and frozen parts.
Each checks the invariants: maximal == original, extract(c) == supernet under c."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compiler.pipeline import compile_supernet
from tests.conftest import calibrate_bn


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1, self.enc2 = conv_bn(3, 16), conv_bn(16, 32, 2)
        self.mid = conv_bn(32, 32)
        self.dec = conv_bn(32 + 16, 16)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.mid(self.enc2(e1)) + self.enc2(e1) * 0.5  # enc2 called twice
        up = F.interpolate(e2, scale_factor=2.0, mode="nearest")
        return self.out(self.dec(torch.cat([up, e1], dim=1)))


class TwoTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(conv_bn(3, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.tab = nn.Sequential(nn.Linear(5, 24), nn.ReLU(), nn.Linear(24, 16))
        self.head_a = nn.Linear(16, 3)
        self.head_b = nn.Linear(32, 1)

    def forward(self, image, table):
        a, b = self.img(image), self.tab(table)
        return self.head_a(a * torch.sigmoid(b)), self.head_b(torch.cat([a, b], dim=1))


class InplaceResNet(nn.Module):
    """Residual stages written the terse way: in-place adds, x.mean for pooling, view head."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.ModuleList([nn.Sequential(conv_bn(16, 32), nn.Conv2d(32, 16, 1),
                                                   nn.BatchNorm2d(16)) for _ in range(3)])
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            y = block(x)
            y += x
            x = F.relu(y)
        return self.fc(x.mean((2, 3)).view(x.size(0), -1))


CASES = {
    "unet": (UNet, lambda: (torch.randn(2, 3, 16, 16),)),
    "two_tower": (TwoTower, lambda: (torch.randn(4, 3, 8, 8), torch.randn(4, 5))),
    "inplace_resnet": (InplaceResNet, lambda: (torch.randn(2, 3, 8, 8),)),
}


def _flat(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_model_invariants(case):
    factory, inputs = CASES[case]
    torch.manual_seed(0)
    x = inputs()
    model = factory()
    bn_free = not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model = model.eval() if bn_free else calibrate_bn(model, x[0]) if len(x) == 1 else model.eval()
    net = compile_supernet(model, x, {"min_width": 4, "width_divisor": 4}).eval()
    assert len(net.space.names) > 0
    with torch.no_grad():
        for got, ref in zip(_flat(net(*x)), _flat(model(*x))):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
        for seed in range(3):
            config = net.sample(seed)
            with net.activate(config):
                expected = _flat(net(*x))
            for got, ref in zip(_flat(net.extract(config)(*x)), expected):
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_inplace_resnet_blocks_are_skippable():
    torch.manual_seed(0)
    net = compile_supernet(InplaceResNet().eval(), torch.randn(2, 3, 8, 8))
    assert [net.space[n].choices for n in net.space.names if n.startswith("depth:")] == \
        [(3, 2, 1, 0)]


def test_two_tower_outputs_stay_full_width():
    net = compile_supernet(TwoTower().eval(), (torch.randn(4, 3, 8, 8), torch.randn(4, 5)))
    with net.activate(net.min_config()):
        a, b = net(torch.randn(4, 3, 8, 8), torch.randn(4, 5))
    assert a.shape == (4, 3) and b.shape == (4, 1)
