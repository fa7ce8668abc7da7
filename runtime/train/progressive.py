"""`ProgressiveShrinking` (Once-for-All, NNCF BootstrapNAS): elastic dimensions stage by stage.

Rules:
  1. ``stages`` is a sequence of `Stage`s or dicts with BootstrapNAS's
     ``list_stage_descriptions`` keys: ``train_dims`` (dimension kinds made elastic: "kernel",
     "depth", "width", "resolution"), ``epochs``, ``depth_indicator``, ``width_indicator``
     (how many of a kind's largest choices are enabled; None or -1 = all), plus
     ``kernel_indicator``/``resolution_indicator``, ``reorg_weights``, ``bn_adapt``,
     ``init_lr`` and ``epochs_lr``. Unknown keys and kinds raise ValueError listing the valid
     ones; binding to a space that has no dimension of a listed kind raises ValueError naming
     the kinds the space has.
  2. Stage lengths are proportions of the run: stage i covers the steps from
     ``total * sum(epochs[:i]) / sum(epochs)`` on. ``default_epochs`` (what `train_supernet`
     runs when given no epochs) is ``sum(epochs)``, so by default a stage lasts its epochs.
  3. Within a stage each step trains ``n`` sub-networks drawn by a `LimitedSampler` (uniform
     within the limits; with ``sampler="compound"`` a compound draw clamped into the limits),
     with labels plus distillation (``kd_ratio``) from the teacher: the external teacher given
     to the step, else the maximal config (OFA's full network).
  4. Per-stage learning rates: the stage starts at ``init_lr`` (None = the run's lr) and decays
     by a cosine over ``epochs_lr`` epochs (None = the stage's length), then stays at 0 until
     the stage ends (`StagedSchedule`).
  5. ``bn_adapt``: at the end of the stage, the shared batch-norm statistics are re-estimated
     on training batches in the maximal config. ``reorg_weights`` is accepted for compatibility
     and does nothing here: `compile_supernet` already orders channels by importance
     (``reorder=True``) and the order does not change during training.
  6. The default stages follow OFA's order (kernel; depth 2 then all; width 2 then all), keeping
     only the kinds the space has; "resolution", when the space has it, is elastic in every stage.

Example:
    >>> ps = ProgressiveShrinking(stages=[{"train_dims": ["depth"], "epochs": 1, "depth_indicator": 2},
    ...                                   {"train_dims": ["depth", "width"], "epochs": 3}])
    >>> [s.train_dims for s in ps.stage_list], ps.default_epochs
    ([('depth',), ('depth', 'width')], 4.0)
    >>> ProgressiveShrinking(stages=[{"train_dims": ["depht"]}])
    Traceback (most recent call last):
    ...
    ValueError: progressive_shrinking: stage 0 train_dims has unknown kind(s) ['depht']; valid kinds: ['width', 'depth', 'kernel', 'resolution', 'heads']
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

from torch import nn

from runtime.elastic.space import KINDS
from runtime.train.calibrate import calibrate_batch_norm
from runtime.train.samplers import LimitedSampler
from runtime.train.schedules import Schedule, StagedSchedule
from runtime.train.strategies import StepContext, Strategy, _check
from runtime.train.step import StepOptions, Task

__all__ = ["ProgressiveShrinking", "Stage", "DEFAULT_STAGES"]


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage of progressive shrinking (Rule 1)."""

    train_dims: tuple[str, ...]
    epochs: float = 1.0
    depth_indicator: int | None = None
    width_indicator: int | None = None
    kernel_indicator: int | None = None
    resolution_indicator: int | None = None
    reorg_weights: bool = False
    bn_adapt: bool = False
    init_lr: float | None = None
    epochs_lr: float | None = None

    def limits(self) -> dict[str, int | None]:
        raw = {"depth": self.depth_indicator, "width": self.width_indicator,
               "kernel": self.kernel_indicator, "resolution": self.resolution_indicator}
        return {k: (None if v is None or v == -1 else v) for k, v in raw.items()}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


DEFAULT_STAGES = (
    Stage(train_dims=("kernel",)),
    Stage(train_dims=("kernel", "depth"), depth_indicator=2),
    Stage(train_dims=("kernel", "depth")),
    Stage(train_dims=("kernel", "depth", "width"), width_indicator=2),
    Stage(train_dims=("kernel", "depth", "width")),
)


def _as_stage(i: int, s: Stage | Mapping[str, Any]) -> Stage:
    if isinstance(s, Stage):
        stage = s
    else:
        valid = sorted(f.name for f in dataclasses.fields(Stage))
        unknown = sorted(set(s) - set(valid))
        _check(not unknown, f"progressive_shrinking: stage {i} has unknown key(s) {unknown}; "
                            f"valid keys: {valid}")
        _check("train_dims" in s, f"progressive_shrinking: stage {i} needs 'train_dims'")
        stage = Stage(**{**s, "train_dims": tuple(s["train_dims"])})
    bad = sorted(set(stage.train_dims) - set(KINDS))
    _check(not bad, f"progressive_shrinking: stage {i} train_dims has unknown kind(s) {bad}; "
                    f"valid kinds: {list(KINDS)}")
    _check(stage.epochs > 0, f"progressive_shrinking: stage {i} epochs must be > 0, "
                             f"got {stage.epochs}")
    for kind, k in stage.limits().items():
        _check(k is None or k >= 1, f"progressive_shrinking: stage {i} {kind}_indicator must be "
                                    f">= 1 or -1 (all choices), got {k}")
    return stage


@dataclass(kw_only=True)
class ProgressiveShrinking(Strategy):
    """Rules 1-6."""

    name: ClassVar[str] = "progressive_shrinking"
    stages: Sequence[Any] | None = None
    n: int = 2
    kd_ratio: float = 1.0
    stage_list: tuple[Stage, ...] = field(default=(), init=False, repr=False)
    _bounds: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)
    _samplers: tuple = field(default=(), init=False, repr=False, compare=False)

    def validate(self) -> None:
        _check(isinstance(self.n, int) and self.n >= 1,
               f"progressive_shrinking: n must be an integer >= 1, got {self.n!r}")
        _check(self.kd_ratio >= 0, f"progressive_shrinking: kd_ratio must be >= 0, "
                                   f"got {self.kd_ratio}")
        given = DEFAULT_STAGES if self.stages is None else self.stages
        _check(len(given) > 0, "progressive_shrinking: stages must not be empty")
        self.stage_list = tuple(_as_stage(i, s) for i, s in enumerate(given))

    def options(self) -> dict[str, Any]:
        out = super().options()
        out["stages"] = None if self.stages is None else [s.to_dict() for s in self.stage_list]
        return out

    def step_options(self) -> StepOptions:
        return dataclasses.replace(super().step_options(), kd_ratio=self.kd_ratio)

    @property
    def default_epochs(self) -> float:
        return float(sum(s.epochs for s in self.stage_list))

    def on_bind(self, supernet: nn.Module) -> None:
        space = supernet.space
        have = sorted({d.kind for d in space if len(d.choices) > 1})
        if self.stages is None:  # Rule 6
            extra = ("resolution",) if "resolution" in have else ()
            kept = [(s, tuple(k for k in s.train_dims if k in have)) for s in DEFAULT_STAGES]
            stages = [dataclasses.replace(s, train_dims=dims + extra) for s, dims in kept if dims]
            stages = stages or [Stage(train_dims=tuple(have))]
            self.stage_list = tuple(dict.fromkeys(stages))  # drop stages made equal by filtering
        for i, s in enumerate(self.stage_list):
            missing = sorted(set(s.train_dims) - set(have))
            _check(not missing, f"progressive_shrinking: stage {i} trains {missing} but the space "
                                f"has no elastic dimension of that kind; kinds in this space: {have}")
        base = self._sampler
        self._samplers = tuple(LimitedSampler(space, kinds=s.train_dims, limits=s.limits(),
                                              base=None if self.sampler == "uniform" else base)
                               for s in self.stage_list)
        for sampler in self._samplers:
            sampler.rng = base.rng  # Rule 3: one generator, one state to checkpoint
        self._bounds = ()

    def _stage_bounds(self, total: int | None) -> tuple[int, ...]:
        if total is None:
            total = int(self.default_epochs * (self._steps_per_epoch or 1))
        if len(self._bounds) != len(self.stage_list) + 1 or self._bounds[-1] != total:
            cum, out = 0.0, [0]
            for s in self.stage_list:
                cum += s.epochs
                out.append(round(total * cum / self.default_epochs))
            self._bounds = tuple(out)
        return self._bounds

    def stage_index(self, ctx: StepContext) -> int:
        bounds = self._stage_bounds(ctx.total_steps)
        for i in range(len(self.stage_list)):
            if ctx.step < bounds[i + 1]:
                return i
        return len(self.stage_list) - 1

    def plan(self, ctx: StepContext) -> list[Task]:
        sampler = self._samplers[self.stage_index(ctx)]
        return [Task(sampler.sample(), "random", "labels+kd" if self.kd_ratio > 0 else "labels")
                for _ in range(self.n)]

    def step_metrics(self, ctx: StepContext) -> dict[str, float]:
        return {"stage": float(self.stage_index(ctx))}

    def lr_schedule(self, *, total_steps: int, steps_per_epoch: int,
                    base_lr: float) -> Schedule | None:
        bounds = self._stage_bounds(total_steps)
        stages = []
        for i, s in enumerate(self.stage_list):
            length = bounds[i + 1] - bounds[i]
            period = length if s.epochs_lr is None else round(s.epochs_lr * steps_per_epoch)
            factor = 1.0 if s.init_lr is None else s.init_lr / base_lr
            stages.append((bounds[i], factor, max(period, 1)))
        return StagedSchedule(stages=tuple(stages))  # Rule 4

    def after_step(self, supernet: nn.Module, ctx: StepContext,
                   batches: Callable[[], list]) -> None:
        i = self.stage_index(ctx)
        if self.stage_list[i].bn_adapt and ctx.step + 1 == self._stage_bounds(ctx.total_steps)[i + 1]:
            with supernet.activate(supernet.space.max_config()):  # Rule 5
                calibrate_batch_norm(supernet, [b[0] for b in batches()])
