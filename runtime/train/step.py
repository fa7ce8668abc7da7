"""The one step mechanism every strategy shares: run the planned sub-networks, step once.

A strategy plans a step as a list of `Task`s (which config, which role, which loss, which
weight); `run_step` executes any plan.

Rules:
  1. If an optimizer is given, gradients are zeroed once before the first task and never between
     tasks: the tasks' gradients are summed.
  2. For each task in order: activate its config, resize the inputs to the config's resolution
     if the space has one (the same patch for every resolution, BigNAS), forward, loss, multiply
     by ``task.weight``, backward.
  3. Losses: ``"labels"`` = ``loss_fn(logits, targets)``; ``"kd"`` = soft cross-entropy against
     the teacher's probabilities at temperature T, times T^2; ``"labels+kd"`` = labels +
     ``kd_ratio`` * kd (OFA). The teacher logits carry no gradient: an external ``teacher``
     module (run once per step, in eval mode, under no_grad) or, in-place, the detached logits
     of the step's first ``"largest"`` task; with neither, the maximal config is run once under
     no_grad, with batch statistics but without dropout and without updating any running
     statistics.
  4. A non-finite loss raises `NonFiniteLossError` naming the step, the role and the config,
     before its backward.
  5. Weight decay (``weight_decay > 0``) is an exact L2 gradient term ``wd * p`` added to every
     parameter with more than one dimension (conv and linear weights; not norms, not biases):
     with ``decay_scope="largest"`` right after the backward of each task whose role is
     ``"largest"`` (BigNAS: weight decay on the largest sub-network only), with ``"step"`` once
     per step after all tasks. The optimizer's own weight decay should then be 0.
  6. With ``dropout_largest_only``, dropout modules are put in eval mode for every task whose
     role is not ``"largest"`` (BigNAS) and restored afterwards.
  7. After the tasks: ``grad_hook(parameters)`` (distributed all-reduce), clipping of the total
     gradient norm to ``clip_grad_norm`` if set, ``optimizer.step()``. The previous config is
     active again on return.
  8. ``zero_init_residual_bn(supernet)`` (BigNAS, for training from scratch only: it silences
     every residual branch of a trained model) sets the scale of the last batch norm inside
     each SkipBlock to zero, so every block starts as the identity it becomes when skipped.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    >>> soft_cross_entropy(model(x), model(x).detach(), 1.0).item() > 0
    True
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from runtime.elastic.space import SubnetConfig

__all__ = ["Task", "StepResult", "StepOptions", "run_step", "soft_cross_entropy",
           "NonFiniteLossError", "decay_parameters", "zero_init_residual_bn"]

LOSSES = ("labels", "kd", "labels+kd")


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss (Rule 4)."""


@dataclass(frozen=True)
class Task:
    """One sub-network's part of a step."""

    config: SubnetConfig
    role: Literal["largest", "smallest", "random"]
    loss: Literal["labels", "kd", "labels+kd"] = "labels"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"task loss must be one of {LOSSES}, got {self.loss!r}")


@dataclass(frozen=True, kw_only=True)
class StepOptions:
    """How a step runs its tasks (Rules 3, 5, 6, 7)."""

    temperature: float = 1.0
    kd_ratio: float = 1.0
    weight_decay: float = 0.0
    decay_scope: Literal["largest", "step"] = "largest"
    dropout_largest_only: bool = False
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.decay_scope not in ("largest", "step"):
            raise ValueError(f"decay_scope must be 'largest' or 'step', got {self.decay_scope!r}")


@dataclass(frozen=True)
class StepResult:
    """What a step did: per task (role, config, unweighted loss), the weighted total, images."""

    tasks: tuple[Task, ...]
    losses: tuple[float, ...]
    total_loss: float
    images: int
    extra: dict = field(default_factory=dict)

    def losses_by_role(self) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for task, loss in zip(self.tasks, self.losses):
            out.setdefault(task.role, []).append(loss)
        return {role: sum(v) / len(v) for role, v in out.items()}


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Rule 3: ``-sum(softmax(t/T) * log_softmax(s/T)) * T^2``, batch mean."""
    target = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    log_p = F.log_softmax(logits / temperature, dim=-1)
    return -(target * log_p).sum(-1).mean() * temperature ** 2


def decay_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Rule 5: the parameters weight decay applies to (more than one dimension)."""
    return [p for p in module.parameters() if p.requires_grad and p.dim() > 1]


def _add_decay(params: Iterable[nn.Parameter], wd: float) -> None:
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                p.grad = wd * p.detach().clone()
            else:
                p.grad.add_(p.detach(), alpha=wd)


def _resize(supernet: Any, inputs: torch.Tensor, config: SubnetConfig) -> torch.Tensor:
    res_dim = getattr(getattr(supernet, "bindings", None), "resolution", None)
    if res_dim is None or not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        return inputs
    r = config[res_dim]
    if tuple(inputs.shape[-2:]) == (r, r):
        return inputs
    return F.interpolate(inputs, size=(r, r), mode="bilinear", align_corners=False)  # Rule 2


@contextlib.contextmanager
def _dropout_off(module: nn.Module, on: bool):
    drops = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
             and m.training] if on else []
    for m in drops:
        m.train(False)
    try:
        yield
    finally:
        for m in drops:
            m.train(True)


def _teacher_logits(supernet, inputs, teacher, state) -> torch.Tensor:
    if "teacher" not in state:
        with torch.no_grad():
            if teacher is not None:
                was = teacher.training
                teacher.eval()
                state["teacher"] = teacher(inputs).detach()
                teacher.train(was)
            else:
                with supernet.activate(supernet.space.max_config()), _quiet(supernet):
                    state["teacher"] = supernet(inputs).detach()
    return state["teacher"]


@contextlib.contextmanager
def _quiet(module: nn.Module):
    """Rule 3: a teacher pass in train mode that changes no state (no dropout, no BN update)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, None if m.num_batches_tracked is None else
              m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = 1 * running + 0 * batch
    try:
        with _dropout_off(module, True):
            yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _loss(task, logits, targets, loss_fn, opts, teacher_fn) -> torch.Tensor:
    if task.loss == "labels":
        return loss_fn(logits, targets)
    kd = soft_cross_entropy(logits, teacher_fn(), opts.temperature)
    if task.loss == "kd":
        return kd
    return loss_fn(logits, targets) + opts.kd_ratio * kd


def run_step(supernet: nn.Module, tasks: Iterable[Task], inputs: torch.Tensor,
             targets: torch.Tensor, *, loss_fn: Callable | None = None,
             optimizer: torch.optim.Optimizer | None = None, teacher: nn.Module | None = None,
             options: StepOptions = StepOptions(), grad_hook: Callable | None = None,
             step: int = 0) -> StepResult:
    """Execute a planned step (Rules 1-7)."""
    tasks, loss_fn = tuple(tasks), loss_fn or F.cross_entropy
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)  # Rule 1: once, before the first task
    decay = decay_parameters(supernet) if options.weight_decay > 0 else []
    state: dict[str, torch.Tensor] = {}
    losses = []
    with supernet.activate(supernet.config):
        for task in tasks:
            x = _resize(supernet, inputs, task.config)
            supernet.activate(task.config)
            with _dropout_off(supernet, options.dropout_largest_only and task.role != "largest"):
                logits = supernet(x)
            teacher_fn = (lambda: _teacher_logits(supernet, x if teacher is None else inputs,
                                                  teacher, state))
            loss = _loss(task, logits, targets, loss_fn, options, teacher_fn)
            value = float(loss.detach())
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLossError(f"non-finite loss {value} at step {step} in the {task.role} "
                                         f"sub-network {dict(task.config)}")  # Rule 4
            if task.role == "largest" and "teacher" not in state and teacher is None:
                state["teacher"] = logits.detach()  # Rule 3: in-place distillation target
            (loss * task.weight).backward()
            if decay and options.decay_scope == "largest" and task.role == "largest":
                _add_decay(decay, options.weight_decay)  # Rule 5
            losses.append(value)
    if decay and options.decay_scope == "step":
        _add_decay(decay, options.weight_decay)
    params = [p for p in supernet.parameters() if p.requires_grad]
    if grad_hook is not None:
        grad_hook(params)  # Rule 7
    if options.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, options.clip_grad_norm)
    if optimizer is not None:
        optimizer.step()
    total = sum(t.weight * v for t, v in zip(tasks, losses))
    return StepResult(tasks, tuple(losses), total, int(inputs.shape[0]))


def zero_init_residual_bn(supernet: nn.Module) -> int:
    """Rule 8: zero the last batch-norm scale of every SkipBlock; returns how many."""
    from runtime.elastic.blocks import SkipBlock

    count = 0
    for block in (m for m in supernet.modules() if isinstance(m, SkipBlock)):
        norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms and norms[-1].weight is not None:
            with torch.no_grad():
                norms[-1].weight.zero_()
            count += 1
    return count
