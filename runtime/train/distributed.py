"""Distributed training under ``torchrun``: process group, gradient averaging, rank-0 writes.

Rules:
  1. ``setup_distributed()`` joins the process group when ``torchrun`` started this process
     (``WORLD_SIZE`` > 1 in the environment) and none exists yet: backend ``nccl`` when CUDA is
     available, ``gloo`` otherwise (or the given backend). Without torchrun it returns a
     single-process context and touches nothing.
  2. Every rank trains the same sub-networks each step: strategies draw from a sampler seeded
     with the run's seed, identically on every rank, and nothing rank-dependent enters a draw.
  3. ``average_gradients(params, world)`` all-reduces every parameter's gradient in one flat
     buffer and divides by the world size. A parameter without a gradient (inside a skipped
     block, or an inactive head) contributes zeros; one that has no gradient on any rank keeps
     ``grad = None`` afterwards, as in one process, so momentum and weight decay treat it as
     unused there too. With mean-reduced losses this equals one process on the concatenated
     batch.
  4. ``broadcast_state(module)`` copies rank 0's parameters and buffers to every rank, so ranks
     start (and resume) from identical weights.
  5. Only rank 0 writes checkpoints and metrics and shows progress (`DistContext.is_main`).
  6. ``sync_batch_norm(module, ctx)`` makes every batch norm of the network (elastic or plain)
     normalise in train mode with the statistics of the global batch, for the active channels
     only, and update the running statistics with them (unbiased variance, as nn.BatchNorm);
     without a process group it does nothing. On CPU too (torch's SyncBatchNorm is CUDA-only).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "setup_distributed", "average_gradients", "broadcast_state",
           "sync_batch_norm"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(backend: str | None = None) -> DistContext:
    """Rule 1."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistContext()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", 0)), backend)


def average_gradients(params: Iterable[nn.Parameter], world: int) -> None:
    """Rule 3: one flat all-reduce of gradients plus a has-gradient flag per parameter."""
    params = list(params)
    if world <= 1 or not params:
        return
    ref = params[0]
    flags = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params] + [flags])
    dist.all_reduce(flat)
    flat[:-len(params)].div_(world)
    offset = 0
    for p, used in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        if used > 0:
            p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_state(module: nn.Module, ctx: DistContext) -> None:
    """Rule 4."""
    if not ctx.active:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


class _SyncForward:
    """An instance-level forward for one batch norm: global-batch statistics (Rule 6).

    Sums and counts go through the differentiable all-reduce of ``torch.distributed.nn``, so
    the backward is that of normalising the concatenated batch (on CPU and GPU alike)."""

    def __init__(self, owner: nn.Module, bn: nn.Module):
        self.owner, self.bn = owner, bn
        self.plain = owner.forward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        from runtime.elastic.channels import take

        bn, sel = self.bn, getattr(self.owner, "sel", None)
        if not bn.training:
            return self.plain(x)
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        local = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), local]))
        n = total[-1]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean * mean
        shape = (1, c) + (1,) * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
        if bn.weight is not None:
            out = out * take(bn.weight, 0, sel).view(shape) + take(bn.bias, 0, sel).view(shape)
        if bn.track_running_stats and bn.running_mean is not None:
            self._update(bn, sel, mean.detach(), (var * n / (n - 1)).detach())
        return out

    @staticmethod
    def _update(bn: nn.Module, sel, mean: torch.Tensor, var: torch.Tensor) -> None:
        from runtime.elastic.channels import take

        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            rm, rv = take(bn.running_mean, 0, sel), take(bn.running_var, 0, sel)
            rm.mul_(1 - factor).add_(mean, alpha=factor)
            rv.mul_(1 - factor).add_(var, alpha=factor)
            if isinstance(sel, torch.Tensor):  # a gathered copy: scatter it back
                bn.running_mean.index_copy_(0, sel.to(rm.device), rm)
                bn.running_var.index_copy_(0, sel.to(rv.device), rv)


def sync_batch_norm(module: nn.Module, ctx: DistContext) -> int:
    """Rule 6; returns how many batch norms now synchronise."""
    if not ctx.active:
        return 0
    from runtime.elastic.ops import ElasticBatchNorm

    count = 0
    inner = {id(m.module) for m in module.modules() if isinstance(m, ElasticBatchNorm)}
    for m in module.modules():
        if isinstance(m, ElasticBatchNorm):
            m.forward = _SyncForward(m, m.module)
            count += 1
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in inner:
            m.forward = _SyncForward(m, m)
            count += 1
    return count
