"""`train_supernet`: the training loop around a strategy; exact resume; torchrun; metrics.

Rules:
  1. ``strategy`` is a `Strategy` or its name (its options via ``strategy_options``);
     ``optimizer`` an optimizer, a factory ``params -> optimizer``, or None for SGD with Nesterov
     momentum 0.9 at ``lr`` and no weight decay (the strategy adds its own, see
     `runtime.train.step`). ``epochs`` None means the strategy's ``default_epochs``; fractions
     are allowed. ``max_steps`` stops the run early without changing its schedule.
  2. The learning rate follows the strategy's own schedule if it has one (progressive
     shrinking's per-stage LRs), else ``schedule`` ("cosine", "exponential", "constant" or a
     `Schedule`), after ``warmup_epochs`` of linear warm-up; it is set before every step as a
     pure function of the global step.
  3. Seeds: torch, numpy and python generators are seeded with ``seed`` at the start; the
     strategy's sampler too (every rank alike). Our loaders (`EpochBatchSampler`) are positioned
     at (epoch, batch) exactly; any other loader is re-created from the torch generator state
     saved at its epoch's start and the consumed batches are skipped.
  4. Checkpoints (``checkpoint_dir``): every ``checkpoint_every`` steps and at every epoch end and
     at the end, atomically, last two kept (`runtime.train.checkpoint`). ``resume=True`` loads the
     newest one (if any) and continues exactly: a seeded CPU run killed at any point and resumed
     ends with the same weights bit for bit as one that was never interrupted.
  5. Metrics: one JSON line per epoch in ``metrics_path`` (default
     ``<checkpoint_dir>/metrics.jsonl``): epoch, step, lr, strategy metrics (epsilon, stage),
     mean loss per role, images/s, wall time (strategy metrics are those of the epoch's last
     step), and with a ``val_loader`` the top-1 of the largest,
     the smallest and the mean over ``eval_configs`` (each calibrated on ``calibration_batches``
     training batches). A tqdm bar per epoch shows the loss and images/s (``progress=False``
     hides it). Nothing else prints.
  6. Under torchrun the loader of ours is sharded per rank, parameters are broadcast from rank 0,
     gradients averaged (`runtime.train.distributed`), only rank 0 writes; ``sync_bn=True``
     synchronises batch statistics across ranks.
  7. A non-finite loss stops the run with `NonFiniteLossError` naming the step and sub-network.
  8. ``teacher="initial"`` distils from a frozen copy of the super-network's maximal config as it
     is when the run starts (the user's original model, Invariant 1): OFA's teacher without the
     original model at hand. Its weights go into every checkpoint, so a resumed run distils
     from the same teacher whatever network it resumes into.
  9. ``channels_last`` (default True): the super-network (and teacher) are stored channels-last
     and every 4-D batch is made so (`runtime.train.layout`): 1.48x faster sandwich steps on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from runtime.train import checkpoint as ckpt
from runtime.train.data import take_batches
from runtime.train.distributed import (DistContext, average_gradients, broadcast_state,
                                       setup_distributed, sync_batch_norm)
from runtime.train.evaluate import _split, evaluate_subnet
from runtime.train.layout import as_layout, to_channels_last
from runtime.train.runsetup import (batches_from, make_optimizer, metrics_file, place,
                                    run_schedule, seed_all, steps_per_epoch)
from runtime.train.schedules import Schedule, apply_lr
from runtime.train.strategies import StepContext, Strategy, get_strategy

__all__ = ["train_supernet", "TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """What a run did; ``history`` holds the per-epoch metrics lines."""

    steps: int
    epochs: float
    final_loss: float | None
    history: tuple[dict, ...]
    checkpoint: str | None
    metrics_path: str | None
    wall_s: float
    images_per_s: float
    resumed_from: str | None = None
    evaluation: dict = field(default_factory=dict)


@dataclass
class _Run:
    """The mutable state of a run that checkpoints carry besides model/optimizer/strategy."""

    step: int = 0
    history: list = field(default_factory=list)
    epoch_stats: dict = field(default_factory=dict)
    epoch_rng: torch.Tensor | None = None
    wall_s: float = 0.0
    images: int = 0
    last_loss: float | None = None


@dataclass(kw_only=True)
class _Trainer:
    """One run of `train_supernet` (kept as an object so each piece stays small)."""

    net: nn.Module
    loader: Any
    strategy: Strategy
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    total: int
    spe: int
    epochs: float
    dist_ctx: DistContext
    device: torch.device
    teacher: nn.Module | None
    loss_fn: Callable | None
    val_loader: Any
    eval_configs: list | None
    calibration_batches: int
    eval_max_batches: int | None
    checkpoint_dir: str | Path | None
    checkpoint_every: int | None
    metrics_path: Path | None
    progress: bool
    callback: Callable | None
    max_steps: int | None
    save_teacher: bool = False
    channels_last: bool = False
    run: _Run = field(default_factory=_Run)

    @property
    def hook(self) -> Callable | None:
        world = self.dist_ctx.world
        return (lambda ps: average_gradients(ps, world)) if self.dist_ctx.active else None

    # ---------------------------------------------------------------- checkpoints
    def payload(self) -> dict[str, Any]:
        run = self.run
        return {"step": run.step, "fingerprint": ckpt.fingerprint(self.net),
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "strategy": self.strategy.state_dict(), "rng": ckpt.rng_state(),
                "data": {"epoch": run.step // self.spe, "batch": run.step % self.spe,
                         "epoch_rng": run.epoch_rng},
                "run": {"total_steps": self.total, "steps_per_epoch": self.spe,
                        "wall_s": run.wall_s, "images": run.images, "last_loss": run.last_loss,
                        "epoch_stats": json.dumps(run.epoch_stats)},
                "history": json.dumps(run.history),
                **({"teacher": self.teacher.state_dict()} if self.save_teacher else {})}

    def save(self) -> str | None:
        if self.checkpoint_dir is None or not self.dist_ctx.is_main:
            return None
        return str(ckpt.save_checkpoint(self.checkpoint_dir, self.payload()))

    def restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        ckpt.check_fingerprint(state, self.net, path)
        meta = state["run"]
        if (meta["total_steps"], meta["steps_per_epoch"]) != (self.total, self.spe):
            raise ckpt.CheckpointError(
                f"checkpoint {path} is from a run of {meta['total_steps']} steps of "
                f"{meta['steps_per_epoch']} per epoch; this run has {self.total} of {self.spe}. "
                f"Resume with the same epochs, data and batch size, or use resume=False.")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        try:
            self.strategy.load_state_dict(state["strategy"])
        except ValueError as exc:
            raise ckpt.CheckpointError(f"checkpoint {path}: {exc}. Resume with the same strategy "
                                       f"and options, or use resume=False.") from exc
        ckpt.set_rng_state(state["rng"])
        if self.save_teacher:
            if "teacher" not in state:
                raise ckpt.CheckpointError(f"checkpoint {path} has no teacher weights; it was not "
                                           f"written by a run with teacher='initial'")
            self.teacher.load_state_dict(state["teacher"])  # Rule 8
        run = self.run
        run.step, run.epoch_rng = int(state["step"]), state["data"]["epoch_rng"]
        run.wall_s, run.images, run.last_loss = meta["wall_s"], meta["images"], meta["last_loss"]
        run.epoch_stats = json.loads(meta["epoch_stats"])
        run.history = json.loads(state["history"])
        if self.metrics_path is not None and self.dist_ctx.is_main:
            self.metrics_path.write_text("".join(json.dumps(h) + "\n" for h in run.history))

    # ---------------------------------------------------------------- metrics
    def evaluate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        cal = take_batches(self.loader, self.calibration_batches)
        space = self.net.space
        kw = dict(calibration_loader=cal, calibration_batches=len(cal),
                  max_batches=self.eval_max_batches, device=self.device)
        out = {"largest_top1": evaluate_subnet(self.net, space.max_config(), self.val_loader,
                                               **kw).top1,
               "smallest_top1": evaluate_subnet(self.net, space.min_config(), self.val_loader,
                                                **kw).top1}
        if self.eval_configs:
            accs = [evaluate_subnet(self.net, c, self.val_loader, **kw).top1
                    for c in self.eval_configs]
            out["fixed_mean_top1"] = float(np.mean(accs))
        return out

    def end_epoch(self, epoch: int, lr: float) -> None:
        run, stats = self.run, self.run.epoch_stats
        line = {"epoch": epoch + 1, "step": run.step, "lr": lr,
                "loss": {r: s / max(stats.get("count", {}).get(r, 1), 1)
                         for r, s in stats.get("loss", {}).items()},
                "images_per_s": stats.get("images", 0) / max(stats.get("seconds", 0.0), 1e-9),
                "wall_s": run.wall_s,
                **self.strategy.step_metrics(StepContext(run.step - 1, self.spe, self.total)),
                **self.evaluate()}
        run.history.append(line)
        run.epoch_stats = {}
        if self.metrics_path is not None and self.dist_ctx.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(line) + "\n")

    def _account(self, result, seconds: float) -> None:
        stats = self.run.epoch_stats
        for role, value in result.losses_by_role().items():
            stats.setdefault("loss", {})[role] = stats.get("loss", {}).get(role, 0.0) + value
            stats.setdefault("count", {})[role] = stats.get("count", {}).get(role, 0) + 1
        stats["images"] = stats.get("images", 0) + result.images
        stats["seconds"] = stats.get("seconds", 0.0) + seconds
        self.run.images += result.images
        self.run.wall_s += seconds
        self.run.last_loss = result.total_loss

    # ---------------------------------------------------------------- the loop
    def _limit(self) -> int:
        return self.total if self.max_steps is None else min(self.total, self.max_steps)

    def train_epoch(self) -> None:
        from tqdm.auto import tqdm

        run, limit = self.run, self._limit()
        epoch, start = divmod(run.step, self.spe)
        bar = tqdm(total=self.spe, initial=start, desc=f"epoch {epoch + 1}/{math.ceil(self.epochs)}",
                   disable=not self.progress or not self.dist_ctx.is_main, leave=False)
        lr = self.optimizer.param_groups[0]["lr"]
        def cal() -> list:
            return [(x.to(self.device), y) for x, y in map(_split, take_batches(
                self.loader, self.calibration_batches))]

        for batch in batches_from(self.loader, epoch, start, run):
            if run.step >= limit:
                break
            t = time.perf_counter()
            x, y = _split(batch)
            x, y = as_layout(x.to(self.device), self.channels_last), y.to(self.device)
            lr = apply_lr(self.optimizer, self.schedule.factor(run.step))
            ctx = self.strategy.context()
            result = self.strategy.training_step(self.net, x, y, self.loss_fn, self.optimizer,
                                                 teacher=self.teacher, grad_hook=self.hook)
            self.strategy.after_step(self.net, ctx, cal)
            run.step += 1
            self._account(result, time.perf_counter() - t)
            bar.update(1)
            bar.set_postfix(loss=f"{result.total_loss:.3f}",
                            img_s=f"{run.images / max(run.wall_s, 1e-9):.0f}", refresh=False)
            if self.callback is not None:
                self.callback(run.step, result)
            end = run.step % self.spe == 0 or run.step == self.total
            if end:
                self.end_epoch(epoch, lr)
            if end or (self.checkpoint_every and run.step % self.checkpoint_every == 0):
                self.save()
            if end:
                break
        bar.close()

    def fit(self) -> TrainResult:
        while self.run.step < self._limit():
            self.train_epoch()
        last = ckpt.latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        if self.checkpoint_dir is not None and (last is None or not last.name.endswith(
                f"{self.run.step:09d}.pt")):
            last = self.save()
        run = self.run
        final_eval = run.history[-1] if run.history else {}
        return TrainResult(run.step, run.step / self.spe, run.last_loss, tuple(run.history),
                           None if last is None else str(last),
                           None if self.metrics_path is None else str(self.metrics_path),
                           run.wall_s, run.images / max(run.wall_s, 1e-9),
                           evaluation={k: v for k, v in final_eval.items() if k.endswith("top1")})


def initial_teacher(supernet: nn.Module, name: str = "initial") -> nn.Module:
    """Rule 8: a frozen, extracted copy of the maximal config."""
    if name != "initial":
        raise ValueError(f"teacher must be a module, 'initial' or None, got {name!r}")
    teacher = supernet.extract(supernet.space.max_config()).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def train_supernet(supernet: nn.Module, train_loader: Any, *, strategy: str | Strategy = "sandwich",
                   strategy_options: dict | None = None, epochs: float | None = None,
                   optimizer: Any = None, lr: float = 0.01, momentum: float = 0.9,
                   schedule: str | Schedule = "cosine", warmup_epochs: float = 0.0,
                   loss_fn: Callable | None = None, teacher: nn.Module | str | None = None,
                   val_loader: Any = None, eval_configs: Iterable | None = None,
                   calibration_batches: int = 8, eval_max_batches: int | None = None,
                   checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
                   resume: bool = False, seed: int = 0, max_steps: int | None = None,
                   progress: bool = True, metrics_path: str | Path | None = None,
                   device: Any = None, sync_bn: bool = False, channels_last: bool = True,
                   callback: Callable | None = None) -> TrainResult:
    """Train ``supernet`` with a strategy (Rules 1-8); returns a `TrainResult`.

    ``callback(step, step_result)`` runs after every step (``step`` counts finished steps)."""
    dist_ctx = setup_distributed()
    seed_all(seed)
    strategy = get_strategy(strategy, **(strategy_options or {}))
    initial = isinstance(teacher, str)
    if initial:
        teacher = initial_teacher(supernet, teacher)
    device = place(supernet, teacher, device, dist_ctx)
    if channels_last:  # Rule 9
        to_channels_last(supernet)
        if teacher is not None:
            to_channels_last(teacher)
    spe = steps_per_epoch(train_loader, dist_ctx)
    epochs = strategy.default_epochs if epochs is None else float(epochs)
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    total = max(1, math.ceil(round(epochs * spe, 6)))  # k / spe epochs are k steps exactly
    strategy.bind(supernet, seed=seed, total_steps=total, steps_per_epoch=spe)
    opt = make_optimizer(optimizer, [p for p in supernet.parameters() if p.requires_grad], lr, momentum)
    sched = run_schedule(strategy, schedule, total, spe, round(warmup_epochs * spe),
                      opt.param_groups[0]["lr"])
    if sync_bn:
        sync_batch_norm(supernet, dist_ctx)
    broadcast_state(supernet, dist_ctx)
    metrics_path = metrics_file(metrics_path, checkpoint_dir)
    trainer = _Trainer(net=supernet, loader=train_loader, strategy=strategy, optimizer=opt,
                       schedule=sched, total=total, spe=spe, epochs=epochs, dist_ctx=dist_ctx,
                       device=device, teacher=teacher, loss_fn=loss_fn, val_loader=val_loader,
                       eval_configs=None if eval_configs is None else list(eval_configs),
                       calibration_batches=calibration_batches, eval_max_batches=eval_max_batches,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                       metrics_path=metrics_path, progress=progress, callback=callback,
                       max_steps=max_steps, save_teacher=initial, channels_last=channels_last)
    resumed = ckpt.latest_checkpoint(checkpoint_dir) if resume and checkpoint_dir else None
    if resumed is not None:
        trainer.restore(resumed)
        broadcast_state(supernet, dist_ctx)
    elif metrics_path is not None and dist_ctx.is_main:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")
    was = supernet.training
    supernet.train()
    try:
        result = trainer.fit()
    finally:
        supernet.train(was)
    return dataclasses.replace(result, resumed_from=None if resumed is None else str(resumed))
