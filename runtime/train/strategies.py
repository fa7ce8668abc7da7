"""Training strategies: which sub-networks a step trains, with which loss and weight.

A strategy is a dataclass of options (the papers' defaults, so every one constructs with no
arguments) plus one decision, ``plan(ctx) -> list[Task]``; `runtime.train.step.run_step` executes
any plan. ``training_step(supernet, inputs, targets, loss_fn, optimizer)`` plans and runs one step,
for users who keep their own loop (NNCF BootstrapNAS's Listing 1 shape).

Rules:
  1. `Sandwich` (BigNAS): the largest (labels) + the smallest + ``n - 2`` random sub-networks;
     with ``distill`` (default) all but the largest learn only from the largest's detached
     logits (in-place distillation). Weight decay (``1e-5``) and dropout on the largest only.
  2. `UpperAttentive` (fOFA): ``warmup_epochs`` of the largest alone, then the largest + ``n - 1``
     random sub-networks (``variant="replace"``: the sandwich's smallest is replaced by one more
     random sub-network) or + ``n - 2`` (``"remove"``: the smallest is removed); never the
     smallest on purpose. Others distil from the largest.
  3. `DelayedEpsilonShrinking` (DepS): the largest alone while ``progress < p_warmup``; then the
     largest (weight 1) + the smallest + ``n - 2`` random sub-networks, each distilling from the
     partially trained largest with weight ``epsilon = epsilon_ramp(progress, p_warmup,
     ramp_fraction, epsilon_start, epsilon_end)``: their gradients (so their effective learning
     rate under SGD) are scaled by epsilon, rising linearly from 1e-4 to 1. ``progress`` is
     ``step / total_steps``, so DepS needs the run length (``bind(..., total_steps=...)``).
  4. `RandomSubnets` (OFA-style): ``n`` sub-networks drawn from the sampler, labels (or labels
     + distillation with ``distill``).
  5. `ProgressiveShrinking` (OFA / BootstrapNAS) lives in `runtime.train.progressive`.
  6. Common options: ``sampler`` ("uniform"; "compound": CompOFA's coupling; "macs":
     AttentiveNAS's uniform-MACs draws, see `runtime.train.samplers`), ``macs_range`` (with
     "macs": the fractions of the largest's MACs drawn, e.g. ``[0.25, 1]``), ``temperature``,
     ``weight_decay`` and ``decay_scope``,
     ``dropout_largest_only``, ``clip_grad_norm``. Out-of-range values raise ValueError saying
     what is allowed; ``get_strategy(name, **options)`` lists valid names and options.
  7. State (``state_dict``): the step count and the sampler's generator, JSON-able, so a
     resumed run draws the same sub-networks.

Example:
    >>> s = get_strategy("sandwich", n=3)
    >>> s.n, s.distill, s.weight_decay
    (3, True, 1e-05)
    >>> get_strategy("sandwich", m=3)
    Traceback (most recent call last):
    ...
    ValueError: unknown option(s) ['m'] for strategy 'sandwich'; valid options: ['clip_grad_norm', 'decay_scope', 'distill', 'dropout_largest_only', 'macs_range', 'n', 'sampler', 'temperature', 'weight_decay']
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from runtime.elastic.space import SubnetConfig
from runtime.train.samplers import Sampler, check_macs_range, make_sampler
from runtime.train.schedules import Schedule, epsilon_ramp
from runtime.train.step import StepOptions, StepResult, Task, run_step

__all__ = ["Strategy", "StepContext", "Sandwich", "UpperAttentive", "DelayedEpsilonShrinking",
           "RandomSubnets", "get_strategy", "strategy_names"]


@dataclass(frozen=True)
class StepContext:
    """Where a step is in the run: global step index, steps per epoch, total steps (or None)."""

    step: int
    steps_per_epoch: int | None = None
    total_steps: int | None = None

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0

    @property
    def progress(self) -> float | None:
        return self.step / self.total_steps if self.total_steps else None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(kw_only=True)
class Strategy:
    """Base: common options, binding to a super-network, state, the per-step API (Rule 6, 7)."""

    name: ClassVar[str] = "strategy"
    sampler: str = "uniform"
    macs_range: tuple[float, float] | None = None
    temperature: float = 1.0
    weight_decay: float = 0.0
    decay_scope: str = "step"
    dropout_largest_only: bool = False
    clip_grad_norm: float | None = None
    _sampler: Sampler | None = field(default=None, init=False, repr=False, compare=False)
    _supernet: Any = field(default=None, init=False, repr=False, compare=False)
    _step: int = field(default=0, init=False, repr=False, compare=False)
    _steps_per_epoch: int | None = field(default=None, init=False, repr=False, compare=False)
    _total_steps: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(self.sampler in ("uniform", "compound", "macs"),
               f"{self.name}: sampler must be 'uniform', 'compound' or 'macs', got "
               f"{self.sampler!r}")
        if self.macs_range is not None:
            _check(self.sampler == "macs", f"{self.name}: macs_range needs sampler='macs'")
            try:
                self.macs_range = check_macs_range(self.macs_range)
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from None
        self.step_options()  # validates temperature, weight decay, scope
        _check(self.clip_grad_norm is None or self.clip_grad_norm > 0,
               f"{self.name}: clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}")
        self.validate()

    def validate(self) -> None:
        """Subclasses check their own options here."""

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def step_options(self) -> StepOptions:
        return StepOptions(temperature=self.temperature, weight_decay=self.weight_decay,
                           decay_scope=self.decay_scope, clip_grad_norm=self.clip_grad_norm,
                           dropout_largest_only=self.dropout_largest_only)

    @property
    def default_epochs(self) -> float:
        return 1.0

    def bind(self, supernet: nn.Module, *, seed: int = 0, total_steps: int | None = None,
             steps_per_epoch: int | None = None) -> "Strategy":
        """Attach to a super-network and a run length; builds the seeded sampler."""
        self._supernet = supernet
        cost = getattr(supernet, "macs", None) if self.sampler == "macs" else None
        extra = {"macs_range": self.macs_range} if self.macs_range is not None else {}
        self._sampler = make_sampler(self.sampler, supernet.space, supernet.bindings, seed=seed,
                                     cost=cost, **extra)
        self._total_steps, self._steps_per_epoch = total_steps, steps_per_epoch
        self._step = 0
        self.on_bind(supernet)
        return self

    def on_bind(self, supernet: nn.Module) -> None:
        """Subclasses check the space or the run length here."""

    def context(self) -> StepContext:
        return StepContext(self._step, self._steps_per_epoch, self._total_steps)

    def plan(self, ctx: StepContext) -> list[Task]:
        raise NotImplementedError

    def step_metrics(self, ctx: StepContext) -> dict[str, float]:
        return {}

    def lr_schedule(self, *, total_steps: int, steps_per_epoch: int,
                    base_lr: float) -> Schedule | None:
        """A schedule of the strategy's own (per-stage LRs), or None for the run's."""
        return None

    def after_step(self, supernet: nn.Module, ctx: StepContext,
                   batches: Callable[[], list]) -> None:
        """Called after each step (progressive shrinking's BN adaptation at stage ends)."""

    def training_step(self, supernet: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      loss_fn: Callable | None = None,
                      optimizer: torch.optim.Optimizer | None = None, *,
                      teacher: nn.Module | None = None,
                      grad_hook: Callable | None = None) -> StepResult:
        """Plan and run one step; binds to ``supernet`` (seed 0) on first use."""
        if self._supernet is not supernet:
            self.bind(supernet)
        ctx = self.context()
        result = run_step(supernet, self.plan(ctx), inputs, targets, loss_fn=loss_fn,
                          optimizer=optimizer, teacher=teacher, options=self.step_options(),
                          grad_hook=grad_hook, step=ctx.step)
        self._step += 1
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": json.dumps(self.options(), sort_keys=True,
                                                         default=str),
                "step": self._step, "sampler": self._sampler.state_dict() if self._sampler else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = json.dumps(self.options(), sort_keys=True, default=str)
        if state.get("name") != self.name or state.get("options") != mine:
            raise ValueError(f"checkpoint was written by strategy {state.get('name')!r} with "
                             f"options {state.get('options')}; this run uses {self.name!r} with "
                             f"{mine}")
        self._step = int(state["step"])
        if self._sampler is not None and state.get("sampler"):
            self._sampler.load_state_dict(state["sampler"])

    # helpers for plans
    def _largest(self) -> SubnetConfig:
        return self._sampler.largest()

    def _random(self, k: int, loss: str, weight: float = 1.0) -> list[Task]:
        return [Task(self._sampler.sample(), "random", loss, weight) for _ in range(k)]


@dataclass(kw_only=True)
class Sandwich(Strategy):
    """Rule 1 (BigNAS)."""

    name: ClassVar[str] = "sandwich"
    n: int = 4
    distill: bool = True
    weight_decay: float = 1e-5
    decay_scope: str = "largest"
    dropout_largest_only: bool = True

    def validate(self) -> None:
        _check(isinstance(self.n, int) and self.n >= 2,
               f"sandwich: n (sub-networks per step) must be an integer >= 2, got {self.n!r}")

    def plan(self, ctx: StepContext) -> list[Task]:
        loss = "kd" if self.distill else "labels"
        return [Task(self._largest(), "largest", "labels"),
                Task(self._sampler.smallest(), "smallest", loss),
                *self._random(self.n - 2, loss)]


@dataclass(kw_only=True)
class UpperAttentive(Strategy):
    """Rule 2 (fOFA)."""

    name: ClassVar[str] = "upper_attentive"
    n: int = 4
    warmup_epochs: float = 1.0
    variant: str = "replace"
    distill: bool = True

    def validate(self) -> None:
        _check(self.variant in ("replace", "remove"),
               f"upper_attentive: variant must be 'replace' or 'remove', got {self.variant!r}")
        low = 2 if self.variant == "replace" else 3
        _check(isinstance(self.n, int) and self.n >= low,
               f"upper_attentive: n must be an integer >= {low} with variant={self.variant!r}, "
               f"got {self.n!r}")
        _check(self.warmup_epochs >= 0,
               f"upper_attentive: warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def on_bind(self, supernet: nn.Module) -> None:
        if self._total_steps and self._steps_per_epoch:
            epochs = self._total_steps / self._steps_per_epoch
            _check(self.warmup_epochs < epochs,
                   f"upper_attentive: warmup_epochs={self.warmup_epochs} covers the whole run of "
                   f"{epochs:g} epochs, so only the largest would train; set warmup_epochs below "
                   f"the number of epochs (e.g. {epochs / 4:g})")

    def plan(self, ctx: StepContext) -> list[Task]:
        largest = [Task(self._largest(), "largest", "labels")]
        if ctx.epoch < self.warmup_epochs:
            return largest
        k = self.n - 1 if self.variant == "replace" else self.n - 2
        return largest + self._random(k, "kd" if self.distill else "labels")


@dataclass(kw_only=True)
class DelayedEpsilonShrinking(Strategy):
    """Rule 3 (DepS)."""

    name: ClassVar[str] = "deps"
    n: int = 4
    p_warmup: float = 0.5
    ramp_fraction: float = 0.25
    epsilon_start: float = 1e-4
    epsilon_end: float = 1.0
    distill: bool = True

    def validate(self) -> None:
        _check(0.0 < self.p_warmup < 1.0,
               f"deps: p_warmup (fraction of training with the largest alone) must be in (0, 1), "
               f"got {self.p_warmup}")
        _check(isinstance(self.n, int) and self.n >= 2,
               f"deps: n must be an integer >= 2, got {self.n!r}")
        _check(0.0 <= self.ramp_fraction <= 1.0,
               f"deps: ramp_fraction must be in [0, 1], got {self.ramp_fraction}")
        _check(0.0 < self.epsilon_start <= self.epsilon_end <= 1.0,
               f"deps: need 0 < epsilon_start <= epsilon_end <= 1, got {self.epsilon_start}, "
               f"{self.epsilon_end}")

    def epsilon(self, ctx: StepContext) -> float:
        if ctx.progress is None:
            raise ValueError("deps needs the run length to know when to start shrinking: call "
                             "strategy.bind(supernet, total_steps=...) before training_step, or "
                             "use train_supernet")
        return epsilon_ramp(ctx.progress, self.p_warmup, self.ramp_fraction, self.epsilon_start,
                            self.epsilon_end)

    def plan(self, ctx: StepContext) -> list[Task]:
        eps = self.epsilon(ctx)
        largest = [Task(self._largest(), "largest", "labels")]
        if eps == 0.0:
            return largest
        loss = "kd" if self.distill else "labels"
        return largest + [Task(self._sampler.smallest(), "smallest", loss, eps),
                          *self._random(self.n - 2, loss, eps)]

    def step_metrics(self, ctx: StepContext) -> dict[str, float]:
        return {"epsilon": self.epsilon(ctx)} if ctx.progress is not None else {}


@dataclass(kw_only=True)
class RandomSubnets(Strategy):
    """Rule 4 (OFA-style n uniform sub-networks)."""

    name: ClassVar[str] = "random"
    n: int = 2
    distill: bool = False

    def validate(self) -> None:
        _check(isinstance(self.n, int) and self.n >= 1,
               f"random: n must be an integer >= 1, got {self.n!r}")

    def plan(self, ctx: StepContext) -> list[Task]:
        return self._random(self.n, "labels+kd" if self.distill else "labels")


def _registry() -> dict[str, type[Strategy]]:
    from runtime.train.progressive import ProgressiveShrinking

    return {"sandwich": Sandwich, "upper_attentive": UpperAttentive,
            "deps": DelayedEpsilonShrinking, "delayed_epsilon_shrinking": DelayedEpsilonShrinking,
            "random": RandomSubnets, "progressive_shrinking": ProgressiveShrinking}


def strategy_names() -> list[str]:
    return sorted(_registry())


def get_strategy(name: str | Strategy, **options: Any) -> Strategy:
    """A strategy by name (hyphens or underscores) with options; lists what is valid (Rule 6)."""
    if isinstance(name, Strategy):
        if options:
            raise ValueError("options are given with the strategy's name, not with an instance")
        return name
    registry = _registry()
    key = str(name).lower().replace("-", "_")
    if key not in registry:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {strategy_names()}")
    cls = registry[key]
    valid = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for strategy {key!r}; valid options: {valid}")
    return cls(**options)
