"""Batch-norm calibration: reset running statistics and re-estimate them from data.

A sub-network of a weight-sharing super-network (or a freshly initialised model) needs batch
statistics of its own before it is evaluated: the shared running statistics were accumulated
under other widths and depths.

Rules:
  1. Every batch norm's running mean and variance are reset, then re-estimated as the
     cumulative average over the given batches (``momentum=None`` while calibrating).
  2. Each module's momentum and the model's train/eval flag are restored afterwards; the model
     is left in eval mode if it was in eval mode.
  3. No gradient is computed; only batch-norm buffers change.

Example:
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    >>> _ = calibrate_batch_norm(m, [torch.randn(8, 3, 4, 4) * 5 + 2 for _ in range(2)])
    >>> bool(m[1].running_var.mean() > 1.5), m.training
    (True, False)
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["calibrate_batch_norm"]


def calibrate_batch_norm(model: nn.Module, batches: Iterable) -> nn.Module:
    """Re-estimate every batch norm's running statistics from `batches` (Rules 1-3).

    Each batch is a tensor or a tuple of positional inputs. Returns `model`.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                model(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
                seen += 1
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    if bns and not seen:
        raise ValueError("calibrate_batch_norm got no batches; pass at least one batch")
    return model
