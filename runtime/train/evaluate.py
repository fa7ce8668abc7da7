"""Accuracy of a sub-network (the search's accuracy objective) or of a plain model.

Rules:
  1. ``evaluate_subnet(supernet, config, val_loader, ...)`` activates ``config``, re-estimates
     the batch-norm statistics of that sub-network on ``calibration_batches`` batches of
     ``calibration_loader`` (default: ``val_loader``; pass training data, or a list of batches
     made once with `take_batches` when calling it many times), then measures top-1 (%) and the
     mean loss on ``val_loader`` (at most ``max_batches`` batches) in eval mode under no_grad.
  2. Afterwards everything is as before: the shared batch-norm buffers (running mean, variance,
     batch count) are restored bit for bit, the previous config is active again and the
     train/eval flag is restored. Calibration batches of our loaders are always the same ones
     (see `runtime.train.data.take_batches`), so the same config gets the same accuracy.
  3. ``calibration_batches=0`` skips calibration (evaluates with the shared statistics).
  4. Inputs move to ``device`` (default: the device of the network's parameters); the input is
     resized to the config's resolution when the space has a resolution dimension.
  5. ``spanning_configs(supernet, n, seed)`` is a fixed set of ``n`` configs spanning the MACs
     range: the minimal and maximal configs plus sampled ones at evenly spaced MACs quantiles.
  6. `SubnetEvaluator(supernet, val_loader, ...)` takes the calibration and validation batches
     once (moved to the device) and evaluates configs with them: ``evaluator(config)`` equals
     ``evaluate_subnet`` with the same arguments, without re-reading the data (the search's
     accuracy objective).
  7. ``extract_calibrated(supernet, config, calibration_loader)`` is ``extract(config)`` with
     batch-norm statistics re-estimated for that sub-network (what to deploy); the super-network
     is left as it was (Rule 2).

Example:
    >>> import torch
    >>> loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    >>> r = evaluate_model(torch.nn.Linear(4, 2), loader)
    >>> r.samples, 0.0 <= r.top1 <= 100.0
    (8, True)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtime.train.calibrate import calibrate_batch_norm
from runtime.train.data import take_batches
from runtime.train.layout import as_layout, uses_channels_last
from runtime.train.step import _resize

__all__ = ["EvalResult", "evaluate_subnet", "evaluate_model", "spanning_configs",
           "SubnetEvaluator", "extract_calibrated"]


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy in percent, mean loss per sample, number of samples."""

    top1: float
    loss: float
    samples: int


def _device(module: nn.Module, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        return batch["inputs"] if "inputs" in batch else batch["image"], batch["label"]
    return batch[0], batch[1]


def _measure(model: nn.Module, loader: Iterable, *, max_batches: int | None,
             device: torch.device, transform: Callable = lambda x: x,
             loss_fn: Callable | None = None) -> EvalResult:
    loss_fn = loss_fn or F.cross_entropy
    cl = uses_channels_last(model)  # the batch in the model's own layout
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = _split(batch)
            x, y = transform(as_layout(x.to(device), cl)), y.to(device)
            logits = model(x)
            loss_sum += float(loss_fn(logits, y)) * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            total += len(y)
    if total == 0:
        raise ValueError("the validation loader yielded no samples")
    return EvalResult(100.0 * correct / total, loss_sum / total, total)


def evaluate_model(model: nn.Module, val_loader: Iterable, *, max_batches: int | None = None,
                   device: Any = None, loss_fn: Callable | None = None) -> EvalResult:
    """Top-1 and loss of a plain module in eval mode (its train flag is restored)."""
    was = model.training
    model.eval()
    try:
        return _measure(model, val_loader, max_batches=max_batches,
                        device=_device(model, device), loss_fn=loss_fn)
    finally:
        model.train(was)


def _bn_buffers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                t = getattr(m, name, None)
                if t is not None:
                    out.append((t, t.clone()))
    return out


@contextlib.contextmanager
def _calibrated(supernet: nn.Module, config, batches: list[torch.Tensor]):
    """``config`` active with its own batch-norm statistics; everything restored on exit."""
    saved = _bn_buffers(supernet)
    was = supernet.training
    try:
        with supernet.activate(config):
            if batches and saved:
                calibrate_batch_norm(supernet, batches)
            yield supernet
    finally:
        with torch.no_grad():
            for live, copy in saved:  # Rule 2
                live.copy_(copy)
        supernet.train(was)


def _inputs(supernet, config, loader, count: int, device) -> list[torch.Tensor]:
    if count <= 0 or loader is None:
        return []
    cl = uses_channels_last(supernet)
    return [_resize(supernet, as_layout(_split(b)[0].to(device), cl), config)
            for b in take_batches(loader, count)]


def evaluate_subnet(supernet: nn.Module, config: Mapping[str, int], val_loader: Iterable, *,
                    calibration_loader: Any = None, calibration_batches: int = 8,
                    max_batches: int | None = None, device: Any = None,
                    loss_fn: Callable | None = None) -> EvalResult:
    """Calibrate batch norm for ``config``, then top-1 and loss; restores everything (Rules 1-4)."""
    device = _device(supernet, device)
    config = supernet.space.validate(config)
    source = val_loader if calibration_loader is None else calibration_loader
    batches = _inputs(supernet, config, source, calibration_batches, device)
    with _calibrated(supernet, config, batches):
        supernet.eval()
        return _measure(supernet, val_loader, max_batches=max_batches, device=device,
                        transform=lambda x: _resize(supernet, x, config), loss_fn=loss_fn)


class SubnetEvaluator:
    """Rule 6: ``evaluate_subnet`` with the data read once."""

    def __init__(self, supernet: nn.Module, val_loader: Iterable, *, calibration_loader: Any = None,
                 calibration_batches: int = 8, max_batches: int | None = None,
                 device: Any = None, loss_fn: Callable | None = None):
        self.supernet, self.loss_fn = supernet, loss_fn
        self.device = _device(supernet, device)
        source = val_loader if calibration_loader is None else calibration_loader
        cl = uses_channels_last(supernet)
        self.calibration = [as_layout(_split(b)[0].to(self.device), cl)
                            for b in take_batches(source, calibration_batches)]
        val = list(val_loader) if max_batches is None else take_batches(val_loader, max_batches)
        self.val = [tuple(as_layout(t.to(self.device), cl) for t in _split(b)) for b in val]

    def __call__(self, config: Mapping[str, int]) -> EvalResult:
        net = self.supernet
        config = net.space.validate(config)
        batches = [_resize(net, x, config) for x in self.calibration]
        with _calibrated(net, config, batches):
            net.eval()
            return _measure(net, self.val, max_batches=None, device=self.device,
                            transform=lambda x: _resize(net, x, config), loss_fn=self.loss_fn)


def extract_calibrated(supernet: nn.Module, config: Mapping[str, int], calibration_loader: Any,
                       *, calibration_batches: int = 8, device: Any = None) -> nn.Module:
    """Rule 7: the extracted sub-network with its own batch-norm statistics, in eval mode."""
    device = _device(supernet, device)
    config = supernet.space.validate(config)
    batches = _inputs(supernet, config, calibration_loader, calibration_batches, device)
    with _calibrated(supernet, config, batches):
        return supernet.extract(config).eval()


def spanning_configs(supernet: nn.Module, n: int = 20, *, seed: int = 0,
                     pool: int | None = None) -> list:
    """A fixed set of ``n`` configs from minimal to maximal MACs (Rule 5)."""
    space = supernet.space
    rng = np.random.default_rng(seed)
    candidates = [space.sample(rng) for _ in range(pool or max(20 * n, 200))]
    candidates.sort(key=supernet.macs)
    out = [space.min_config()]
    for q in np.linspace(0, len(candidates) - 1, max(n - 2, 0) + 2)[1:-1]:
        out.append(candidates[int(round(q))])
    out.append(space.max_config())
    unique = list(dict.fromkeys(out))
    return unique[:n]
