"""Setting up a run of `train_supernet`: optimizer, schedule, seeds, devices, data position.

Split from `runtime.train.loop` (whose docstring holds the rules these helpers implement).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from runtime.train.data import EpochBatchSampler
from runtime.train.distributed import DistContext
from runtime.train.schedules import Schedule, Warmup, make_schedule
from runtime.train.strategies import Strategy

__all__ = ["make_optimizer", "run_schedule", "seed_all", "batches_from", "place",
           "steps_per_epoch", "metrics_file"]


def make_optimizer(optimizer, params, lr: float, momentum: float) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=0.0)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(params)
    raise TypeError(f"optimizer must be an Optimizer, a factory params -> Optimizer or None, "
                    f"got {type(optimizer).__name__}")


def run_schedule(strategy: Strategy, schedule: Any, total: int, spe: int, warmup_steps: int,
                 base_lr: float) -> Schedule:
    own = strategy.lr_schedule(total_steps=total, steps_per_epoch=spe, base_lr=base_lr)
    if own is None and not isinstance(schedule, str):
        own = schedule
    if own is None:
        return make_schedule(schedule, total_steps=total, steps_per_epoch=spe,
                             warmup_steps=warmup_steps)
    return Warmup(inner=own, warmup_steps=warmup_steps) if warmup_steps > 0 else own


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def batches_from(loader: Any, epoch: int, start: int, run: Any) -> Iterable:
    """The loader's batches of ``epoch`` from batch ``start`` on (loop Rule 3)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochBatchSampler):
        sampler.set_epoch(epoch, start)
        return iter(loader)
    if start == 0:
        run.epoch_rng = torch.get_rng_state()
        return iter(loader)
    now = torch.get_rng_state()
    torch.set_rng_state(run.epoch_rng)
    it = iter(loader)
    for _ in range(start):
        next(it)
    torch.set_rng_state(now)
    return it


def place(supernet: nn.Module, teacher: nn.Module | None, device: Any,
          dist_ctx: DistContext) -> torch.device:
    if device is None and dist_ctx.active and torch.cuda.is_available():
        device = f"cuda:{dist_ctx.local_rank}"
    if device is not None:
        supernet.to(device)
        if teacher is not None:
            teacher.to(device)
    if teacher is not None:
        teacher.eval()
    return next(supernet.parameters()).device


def steps_per_epoch(loader: Any, dist_ctx: DistContext) -> int:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochBatchSampler) and dist_ctx.active:
        sampler.shard(dist_ctx.rank, dist_ctx.world)  # Rule 6
    try:
        spe = len(loader)
    except TypeError:
        raise TypeError(f"the training loader ({type(loader).__name__}) has no len(): "
                        f"train_supernet needs the number of batches per epoch (use a map-style "
                        f"dataset, or wrap the iterable in a loader that defines __len__)") from None
    if spe < 1:
        raise ValueError("the training loader has no batches (dataset smaller than one batch?)")
    return spe


def metrics_file(metrics_path: Any, checkpoint_dir: Any) -> Path | None:
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        if metrics_path is None:
            return Path(checkpoint_dir) / "metrics.jsonl"
    return None if metrics_path is None else Path(metrics_path)
