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

Example:
    >>> import torch
    >>> loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    >>> r = evaluate_model(torch.nn.Linear(4, 2), loader)
    >>> r.samples, 0.0 <= r.top1 <= 100.0
    (8, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtime.train.calibrate import calibrate_batch_norm
from runtime.train.data import take_batches
from runtime.train.step import _resize

__all__ = ["EvalResult", "evaluate_subnet", "evaluate_model", "spanning_configs"]


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
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = _split(batch)
            x, y = transform(x.to(device)), y.to(device)
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


def evaluate_subnet(supernet: nn.Module, config: Mapping[str, int], val_loader: Iterable, *,
                    calibration_loader: Any = None, calibration_batches: int = 8,
                    max_batches: int | None = None, device: Any = None,
                    loss_fn: Callable | None = None) -> EvalResult:
    """Calibrate batch norm for ``config``, then top-1 and loss; restores everything (Rules 1-4)."""
    device = _device(supernet, device)
    config = supernet.space.validate(config)
    saved = _bn_buffers(supernet)
    was = supernet.training
    resize = lambda x: _resize(supernet, x, config)  # noqa: E731  Rule 4
    try:
        with supernet.activate(config):
            if calibration_batches > 0 and saved:
                source = val_loader if calibration_loader is None else calibration_loader
                batches = [resize(_split(b)[0].to(device))
                           for b in take_batches(source, calibration_batches)]
                calibrate_batch_norm(supernet, batches)
            supernet.eval()
            return _measure(supernet, val_loader, max_batches=max_batches, device=device,
                            transform=resize, loss_fn=loss_fn)
    finally:
        with torch.no_grad():
            for live, copy in saved:  # Rule 2
                live.copy_(copy)
        supernet.train(was)


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
