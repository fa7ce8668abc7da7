"""Plain training and evaluation of an ordinary model (the "user's model" of the demo and benchmarks).

Rules:
  1. `fit_model` trains with SGD (Nesterov, momentum 0.9), a cosine learning rate over all
     steps, cross-entropy; ``epochs`` may be fractional (a prefix of the last epoch). Seeded:
     the same seed, data and model give the same weights on CPU.
  2. ``channels_last`` (default): the model is stored channels-last and 4-D batches made so
     (`runtime.train.layout`; 1.39x faster on CPU for the demo's ResNet).
  3. Progress is a tqdm bar (``progress=False`` silences it); nothing else prints.

Example:
    >>> import torch
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    >>> m = fit_model(torch.nn.Linear(4, 2), loader, epochs=2, lr=0.1, progress=False)
    >>> m.training
    False
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from runtime.train.layout import as_layout, to_channels_last

__all__ = ["fit_model"]


def fit_model(model: nn.Module, train_loader: Iterable, *, epochs: float = 1.0, lr: float = 0.05,
              weight_decay: float = 5e-4, seed: int = 0, progress: bool = True,
              channels_last: bool = True) -> nn.Module:
    """Train ``model`` in place with labels (Rule 1) and return it in eval mode."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    per_epoch = len(train_loader)
    total = max(1, math.ceil(epochs * per_epoch))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    if channels_last:
        to_channels_last(model)
    model.train()
    bar = tqdm(total=total, desc="train model", disable=not progress, leave=False)
    step = 0
    while step < total:
        for images, labels in train_loader:
            loss = nn.functional.cross_entropy(model(as_layout(images, channels_last)), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fit_model: the loss became {loss.item()} at step {step}; "
                                         "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if step >= total:
                break
    bar.close()
    return model.eval()
