"""Planning a run in wall time: how many training steps fit a budget on this machine.

Rules:
  1. `step_seconds` times real training steps of a strategy on a deep copy of the super-network
     (its own optimizer, the caller's batches, layout and teacher), so the network, its BN
     statistics and the caller's RNG states are left as they were: planning changes nothing a
     run does except its length. A fresh strategy of the same name and options is bound to a run
     of ``total_steps`` and each timed step is placed at an evenly spaced point of that run, so
     strategies that change what a step trains (warm-ups of the largest alone, progressive
     stages, DepS) are timed over their whole mix, not only their cheap first steps. ``warmup``
     untimed steps come first; the mean of the timed ones is returned, in seconds.
  2. `plan_epochs(epochs, steps_per_epoch, budget_s, seconds_per_step)`: ``epochs`` when the run
     fits the budget, else the whole steps that fit (at least one) as a fraction of an epoch.

Example:
    >>> plan_epochs(2.0, steps_per_epoch=100, budget_s=50.0, seconds_per_step=1.0)
    0.5
    >>> plan_epochs(0.2, steps_per_epoch=100, budget_s=50.0, seconds_per_step=1.0)
    0.2
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from runtime.train.layout import as_layout, to_channels_last
from runtime.train.strategies import Strategy, get_strategy

__all__ = ["step_seconds", "plan_epochs"]


def step_seconds(supernet: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                 strategy: str | Strategy, strategy_options: dict | None = None,
                 total_steps: int, steps_per_epoch: int, lr: float = 0.01,
                 teacher: nn.Module | None = None, loss_fn: Callable | None = None,
                 channels_last: bool = True, device: Any = None, warmup: int = 2,
                 steps: int = 8, seed: int = 0) -> float:
    """Mean seconds of one training step of ``strategy`` on this machine (Rule 1)."""
    if not batches:
        raise ValueError("step_seconds needs at least one batch")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    name = strategy if isinstance(strategy, str) else strategy.name
    options = dict(strategy_options or {}) if isinstance(strategy, str) else strategy.options()
    probe = get_strategy(name, **options)
    rng = torch.get_rng_state()
    net = copy.deepcopy(supernet)
    teacher = None if teacher is None else copy.deepcopy(teacher)
    device = torch.device(device) if device is not None else next(supernet.parameters()).device
    net.to(device).train()
    if channels_last:
        to_channels_last(net)
        if teacher is not None:
            to_channels_last(teacher.to(device))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          nesterov=True)
    probe.bind(net, seed=seed, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    times = []
    try:
        for i in range(warmup + steps):
            x, y = batches[i % len(batches)][:2]
            x, y = as_layout(x.to(device), channels_last), y.to(device)
            probe._step = (2 * (i - warmup) + 1) * total_steps // (2 * steps) if i >= warmup else 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            probe.training_step(net, x, y, loss_fn, opt, teacher=teacher)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    finally:
        torch.set_rng_state(rng)
    return sum(times) / len(times)


def plan_epochs(epochs: float, *, steps_per_epoch: int, budget_s: float,
                seconds_per_step: float) -> float:
    """Rule 2."""
    if budget_s <= 0 or seconds_per_step <= 0:
        raise ValueError(f"budget_s and seconds_per_step must be > 0, got {budget_s} and "
                         f"{seconds_per_step}")
    wanted = max(1, math.ceil(epochs * steps_per_epoch))
    fits = max(1, int(budget_s / seconds_per_step))
    return epochs if fits >= wanted else fits / steps_per_epoch
