"""Shared fixtures: zoo models with calibrated batch norm, so outputs have a useful scale."""
import functools

import pytest
import torch

from bench.models import ZOO, ZOO_INPUT_SHAPES


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor, steps: int = 2) -> torch.nn.Module:
    """Set every batch norm's running statistics to those of random data like `x`.

    A randomly initialised deep network shrinks its signal block after block (squeeze-excitation,
    layer scale), so its logits are ~1e-5 and closeness checks would pass vacuously. With
    calibrated statistics the logits are O(1)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn((16, *x.shape[1:]), generator=gen))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


@functools.lru_cache(maxsize=None)
def zoo_model(name: str) -> torch.nn.Module:
    """A calibrated zoo model with 10 classes (cached: do not modify it in tests)."""
    torch.manual_seed(0)
    model = ZOO[name](num_classes=10)
    x = torch.randn(ZOO_INPUT_SHAPES[name])
    return calibrate_bn(model, x)


def zoo_input(name: str, seed: int = 0) -> torch.Tensor:
    return torch.randn(ZOO_INPUT_SHAPES[name], generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests share 2 cores with each other's processes; one thread is faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
