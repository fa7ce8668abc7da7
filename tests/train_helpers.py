"""Tiny digits models and super-networks shared by the training tests (and their subprocesses)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from compiler.pipeline import compile_supernet
from runtime.train.data import digits_loaders


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    """Stem 16 -> 2 residual blocks -> strided 32 -> 2 residual blocks -> pool -> fc (digits)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.layer1 = nn.Sequential(Residual(16), Residual(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU())
        self.layer2 = nn.Sequential(Residual(32), Residual(32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.head(self.layer2(self.down(self.layer1(self.stem(x)))))


def mlp() -> nn.Module:
    """No batch norm: for the distributed equivalence test."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 10))


def train_plain(model: nn.Module, epochs: int, lr: float = 0.05, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    train, _ = digits_loaders(batch_size=64, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(train))
    model.train()
    for _ in range(epochs):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return model.eval()


@functools.lru_cache(maxsize=None)
def _trained_resnet_state() -> dict:
    torch.manual_seed(0)
    return train_plain(TinyResNet(), epochs=4).state_dict()


def trained_resnet() -> nn.Module:
    """TinyResNet trained on digits (cached state; a fresh module each call)."""
    model = TinyResNet()
    model.load_state_dict(_trained_resnet_state())
    return model.eval()


def supernet(model: nn.Module | None = None, **config):
    """A super-network of ``model`` (default: a seeded untrained TinyResNet) for 1x8x8 inputs."""
    if model is None:
        torch.manual_seed(0)
        model = TinyResNet().eval()
    return compile_supernet(model, torch.zeros(2, 1, 8, 8), config or None)
