"""Shared fixtures: zoo models with calibrated batch norm, so outputs have a useful scale."""
import functools

import pytest
import torch

from bench.models import ZOO, ZOO_INPUT_SHAPES
from runtime.train.calibrate import calibrate_batch_norm


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor, steps: int = 2) -> torch.nn.Module:
    """Batch-norm statistics of random data like `x` (batches of 16), then eval mode.

    A randomly initialised deep network shrinks its signal block after block (squeeze-excitation,
    layer scale), so its logits are ~1e-5 and closeness checks would pass vacuously. With
    calibrated statistics the logits are O(1)."""
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn((16, *x.shape[1:]), generator=gen) for _ in range(steps)]
    return calibrate_batch_norm(model, batches).eval()


def assert_sampled_subnets_extract(net, x: torch.Tensor, seeds: int, **tol) -> None:
    """For ``seeds`` sampled configs: the extracted module computes what the super-network computes
    under that config (``torch.testing.assert_close`` with ``tol``) and has the params it reports."""
    with torch.no_grad():
        for seed in range(seeds):
            config = net.sample(seed)
            with net.activate(config):
                expected = net(x)
            sub = net.extract(config)
            torch.testing.assert_close(sub(x), expected, **tol)
            assert net.params(config) == sum(p.numel() for p in sub.parameters())


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
