"""Learning-rate schedules and the epsilon ramp, as pure functions of the global step.

A schedule is a frozen dataclass whose ``factor(step)`` multiplies each optimizer param group's
initial learning rate (``group["initial_lr"]``, recorded on first use), so the same schedule
drives any optimizer and its whole state is the step index (checkpointed with the run).

Rules:
  1. `ConstantSchedule`: factor 1.
  2. `CosineSchedule(total_steps, final_factor=0)`: ``final + (1 - final) * (1 + cos(pi * t)) / 2``
     with ``t = step / total_steps`` clipped to [0, 1].
  3. `ExponentialSchedule(steps_per_epoch, decay_rate=0.97, decay_epochs=2.4, end_factor=0.05)`:
     BigNAS's exponential decay with a constant ending: ``max(decay_rate ** (epoch /
     decay_epochs), end_factor)`` with ``epoch = step / steps_per_epoch``.
  4. `StagedSchedule(stages)`: per-stage LRs (progressive shrinking): each stage
     ``(start_step, factor, period_steps)`` runs a cosine from ``factor`` down to 0 over
     ``period_steps`` starting at ``start_step`` (and stays at 0 after, as BootstrapNAS's
     ``epochs_lr`` shorter than the stage does).
  5. `Warmup(inner, warmup_steps, start_factor=0)`: linear from ``start_factor`` to the inner
     schedule's value over the first ``warmup_steps`` steps, then the inner schedule.
  6. ``epsilon_ramp(progress, start, length, low=1e-4, high=1)``: 0 before ``start`` (the
     sub-networks do not train), then linear from ``low`` to ``high`` over ``length`` (fractions
     of the run), ``high`` afterwards (DepS).
  7. ``make_schedule(name, ...)`` builds "constant", "cosine" or "exponential" and lists them
     otherwise; ``apply_lr(optimizer, factor)`` sets every group's lr.

Example:
    >>> s = CosineSchedule(total_steps=10)
    >>> s.factor(0), round(s.factor(5), 6), s.factor(10)
    (1.0, 0.5, 0.0)
    >>> ExponentialSchedule(steps_per_epoch=1, decay_rate=0.5, decay_epochs=1).factor(10)
    0.05
    >>> round(Warmup(inner=ConstantSchedule(), warmup_steps=4).factor(1), 3)
    0.25
    >>> epsilon_ramp(0.4, 0.5, 0.2), round(epsilon_ramp(0.6, 0.5, 0.2), 6), epsilon_ramp(0.9, 0.5, 0.2)
    (0.0, 0.50005, 1.0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["Schedule", "ConstantSchedule", "CosineSchedule", "ExponentialSchedule",
           "StagedSchedule", "Warmup", "epsilon_ramp", "make_schedule", "apply_lr", "SCHEDULES"]


class Schedule(Protocol):
    def factor(self, step: int) -> float: ...


@dataclass(frozen=True, kw_only=True)
class ConstantSchedule:
    """Rule 1."""

    def factor(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True, kw_only=True)
class CosineSchedule:
    """Rule 2."""

    total_steps: int
    final_factor: float = 0.0

    def factor(self, step: int) -> float:
        t = min(max(step / max(self.total_steps, 1), 0.0), 1.0)
        return self.final_factor + (1.0 - self.final_factor) * (1.0 + math.cos(math.pi * t)) / 2


@dataclass(frozen=True, kw_only=True)
class ExponentialSchedule:
    """Rule 3 (BigNAS)."""

    steps_per_epoch: int
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    end_factor: float = 0.05

    def factor(self, step: int) -> float:
        epoch = step / max(self.steps_per_epoch, 1)
        return max(self.decay_rate ** (epoch / self.decay_epochs), self.end_factor)


@dataclass(frozen=True, kw_only=True)
class StagedSchedule:
    """Rule 4: ``stages`` is a tuple of (start_step, factor, period_steps), sorted by start."""

    stages: tuple[tuple[int, float, int], ...]

    def factor(self, step: int) -> float:
        start, factor, period = self.stages[0]
        for s in self.stages:
            if s[0] <= step:
                start, factor, period = s
        t = min((step - start) / max(period, 1), 1.0)
        return factor * (1.0 + math.cos(math.pi * t)) / 2


@dataclass(frozen=True, kw_only=True)
class Warmup:
    """Rule 5."""

    inner: Schedule
    warmup_steps: int
    start_factor: float = 0.0

    def factor(self, step: int) -> float:
        target = self.inner.factor(step)
        if step >= self.warmup_steps:
            return target
        t = step / self.warmup_steps
        return self.start_factor + (target - self.start_factor) * t


def epsilon_ramp(progress: float, start: float, length: float, low: float = 1e-4,
                 high: float = 1.0) -> float:
    """Rule 6."""
    if progress < start:
        return 0.0
    if length <= 0:
        return high
    t = min((progress - start) / length, 1.0)
    return low + (high - low) * t


SCHEDULES = ("constant", "cosine", "exponential")


def make_schedule(name: str, *, total_steps: int, steps_per_epoch: int,
                  warmup_steps: int = 0) -> Schedule:
    """Rule 7."""
    if name == "constant":
        inner: Schedule = ConstantSchedule()
    elif name == "cosine":
        inner = CosineSchedule(total_steps=total_steps)
    elif name == "exponential":
        inner = ExponentialSchedule(steps_per_epoch=steps_per_epoch)
    else:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {list(SCHEDULES)}")
    return Warmup(inner=inner, warmup_steps=warmup_steps) if warmup_steps > 0 else inner


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to its initial lr times ``factor``; returns the first group's lr."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]
