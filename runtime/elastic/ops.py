"""Elastic ops: linear, norms, direct parameters (and `ElasticConv` from `conv.py`).

Each op wraps the ORIGINAL module as ``self.module`` (shared parameters; state_dict keys
``<path>.module.weight``) and holds mutable active state set by the SuperNetwork.

Rules:
  1. All state None: ``forward`` is exactly ``self.module(x)`` (bit-exact, no overhead).
  2. `ElasticLinear`: state ``in_sel``/``out_sel``; weight ``[out_sel][:, in_sel]``, bias
     ``[out_sel]``. The channel axis of its input and output is the last dim.
  3. `ElasticBatchNorm` (1d/2d/3d): state ``sel``. Train mode normalises with the batch statistics
     of the active channels and updates ONLY their running statistics: a prefix slice of the
     running buffers is a view updated in place; an index selection is gathered, run and
     scattered back. ``num_batches_tracked`` and ``momentum=None`` (cumulative average) behave as
     in nn.BatchNorm. Eval mode uses the sliced running statistics.
  4. `ElasticLayerNorm`: state ``sel`` on the last dim; ``normalized_shape`` must be 1-D.
  5. `ElasticGroupNorm`: state ``sel`` on dim 1; the active channel count must be a multiple of
     channels-per-group, and runs with ``active // channels_per_group`` groups. An index
     selection keeps the original grouping only if every segment is a multiple of it.
  6. `ElasticParameter(tensor, dim)`: replaces an fx ``get_attr`` of a direct parameter (class
     token, position embedding, layer scale): ``forward()`` takes no input and returns the SAME
     tensor object (state None) or its slice along ``dim`` by ``sel``. Buffers work too.
  7. ``extract()`` returns a plain nn.Linear / nn.BatchNormNd / nn.LayerNorm / nn.GroupNorm with
     cloned active weights and running statistics (eps, momentum, affine, track_running_stats and
     num_batches_tracked preserved); `ElasticParameter.extract()` returns an nn.Parameter (or a
     tensor for a buffer) to be set as an attribute.
  8. `wrap(module, kernel_choices=None)` picks the elastic op for a torch module.

Unsupported (TypeError at construction): SyncBatchNorm, LazyLinear, and subclasses that
override ``forward``; leave those frozen.

Example:
    >>> import torch
    >>> bn = ElasticBatchNorm(torch.nn.BatchNorm2d(8))
    >>> bn.sel = 4
    >>> _ = bn(torch.randn(2, 4, 3, 3))
    >>> bn.module.running_mean[4:].abs().sum().item()
    0.0
    >>> bn.extract()
    BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from runtime.elastic.base import ElasticOp, clone_param, clone_tensor, tensor_attr
from runtime.elastic.channels import sel_size, take
from runtime.elastic.conv import ElasticConv
from runtime.elastic.optable import OPS, Op

__all__ = ["ElasticOp", "ElasticConv", "ElasticLinear", "ElasticBatchNorm", "ElasticLayerNorm",
           "ElasticGroupNorm", "ElasticParameter", "wrap"]


def _check_type(module: nn.Module, bases: tuple[type, ...], op: str) -> None:
    if not any(isinstance(module, b) and type(module).forward is b.forward for b in bases) \
            or isinstance(module, (nn.SyncBatchNorm, nn.modules.lazy.LazyModuleMixin)):
        raise TypeError(f"{op} cannot wrap {type(module).__name__}: expected one of "
                        f"{[b.__name__ for b in bases]} with the stock forward. "
                        "Hint: keep this layer frozen (leave it unwrapped).")


class ElasticLinear(ElasticOp):
    """Rule 2."""

    axes = ("in_sel", "out_sel")
    _bases = (nn.Linear,)

    def __init__(self, module: nn.Linear):
        super().__init__()
        _check_type(module, (nn.Linear,), "ElasticLinear")
        self.module = module
        self.in_sel = self.out_sel = None

    def _active(self):
        m = self._modules["module"]
        weight, bias = tensor_attr(m, "weight"), tensor_attr(m, "bias")
        weight = take(take(weight, 0, self.out_sel), 1, self.in_sel)
        return weight, take(bias, 0, self.out_sel) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_sel is None and self.out_sel is None:
            return self._modules["module"](x)  # Rule 1 (base Rule 4: hot path)
        return F.linear(x, *self._active())

    def extract(self) -> nn.Linear:
        m = self.module
        weight, bias = self._active()
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                        device="meta", dtype=weight.dtype)
        new.weight = clone_param(weight, m.weight.requires_grad)
        if bias is not None:
            new.bias = clone_param(bias, m.bias.requires_grad)
        return new.train(m.training)


class _ElasticNorm(ElasticOp):
    axes = ("sel",)
    _bases: tuple[type, ...] = ()

    def __init__(self, module: nn.Module):
        super().__init__()
        _check_type(module, self._bases, type(self).__name__)
        self.module = module
        self.sel = None

    def _affine(self):
        m, sel = self._modules["module"], self.sel
        weight, bias = tensor_attr(m, "weight"), tensor_attr(m, "bias")
        return (take(weight, 0, sel) if weight is not None else None,
                take(bias, 0, sel) if bias is not None else None)

    def _set_affine(self, new: nn.Module) -> nn.Module:
        weight, bias = self._affine()
        if weight is not None:
            new.weight = clone_param(weight, self.module.weight.requires_grad)
        if bias is not None:
            new.bias = clone_param(bias, self.module.bias.requires_grad)
        return new.train(self.module.training)


def _no_bias(norm: nn.Module) -> dict:
    """``bias=False`` for an affine norm without bias (a keyword only recent torch has)."""
    return {"bias": False} if norm.affine and norm.bias is None else {}


class ElasticBatchNorm(_ElasticNorm):
    """Rule 3."""

    _bases = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sel, bn = self.sel, self._modules["module"]  # base Rule 4: hot path
        if sel is None:
            return bn(x)  # Rule 1
        bn._check_input_dim(x)
        training = bn.training
        factor = self._momentum_factor(bn) if training else bn.momentum or 0.0
        running_mean, running_var = tensor_attr(bn, "running_mean"), tensor_attr(bn, "running_var")
        use_running = not training or bn.track_running_stats
        mean = take(running_mean, 0, sel) if use_running and running_mean is not None else None
        var = take(running_var, 0, sel) if use_running and running_var is not None else None
        batch_stats = training or (running_mean is None and running_var is None)
        out = F.batch_norm(x, mean, var, *self._affine(), batch_stats, factor, bn.eps)
        if training and mean is not None and isinstance(sel, torch.Tensor):
            with torch.no_grad():  # Rule 3: scatter the gathered statistics back
                idx = sel.to(mean.device)
                running_mean.index_copy_(0, idx, mean)
                running_var.index_copy_(0, idx, var)
        return out

    @staticmethod
    def _momentum_factor(bn: nn.Module) -> float:
        """Count the batch and return the running-average factor, as nn.BatchNorm (train mode)."""
        factor = 0.0 if bn.momentum is None else bn.momentum
        tracked = tensor_attr(bn, "num_batches_tracked")
        if bn.track_running_stats and tracked is not None:
            tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average
                factor = 1.0 / float(tracked)
        return factor

    def extract(self) -> nn.Module:
        bn = self.module
        n = sel_size(self.sel, bn.num_features)
        dtype = bn.weight.dtype if bn.weight is not None else torch.get_default_dtype()
        new = type(bn)(n, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                       track_running_stats=bn.track_running_stats, device="meta", dtype=dtype,
                       **_no_bias(bn))
        if bn.running_mean is not None:
            new.running_mean = clone_tensor(take(bn.running_mean, 0, self.sel))
            new.running_var = clone_tensor(take(bn.running_var, 0, self.sel))
        if bn.num_batches_tracked is not None:
            new.num_batches_tracked = clone_tensor(bn.num_batches_tracked)
        return self._set_affine(new)


class ElasticLayerNorm(_ElasticNorm):
    """Rule 4."""

    _bases = (nn.LayerNorm,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ln = self._modules["module"]
        if self.sel is None:
            return ln(x)  # Rule 1
        if len(ln.normalized_shape) != 1:
            raise ValueError(f"{ln}: only a 1-D normalized_shape (the channel axis) is elastic")
        return F.layer_norm(x, (x.shape[-1],), *self._affine(), ln.eps)

    def extract(self) -> nn.Module:
        ln = self.module
        n = sel_size(self.sel, ln.normalized_shape[-1])
        shape = ln.normalized_shape if self.sel is None else (n,)
        dtype = ln.weight.dtype if ln.weight is not None else torch.get_default_dtype()
        new = nn.LayerNorm(shape, eps=ln.eps, elementwise_affine=ln.elementwise_affine,
                           bias=ln.bias is not None, device="meta", dtype=dtype)
        return self._set_affine(new)


class ElasticGroupNorm(_ElasticNorm):
    """Rule 5."""

    _bases = (nn.GroupNorm,)

    def _groups(self, n: int) -> int:
        gn = self.module
        per_group = gn.num_channels // gn.num_groups
        if n % per_group:
            raise ValueError(f"{gn}: {n} active channels is not a multiple of {per_group} channels "
                             "per group. Hint: use width choices that are multiples of it.")
        return n // per_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gn = self._modules["module"]
        if self.sel is None:
            return gn(x)  # Rule 1
        return F.group_norm(x, self._groups(x.shape[1]), *self._affine(), gn.eps)

    def extract(self) -> nn.Module:
        gn = self.module
        n = sel_size(self.sel, gn.num_channels)
        dtype = gn.weight.dtype if gn.weight is not None else torch.get_default_dtype()
        new = nn.GroupNorm(self._groups(n), n, eps=gn.eps, affine=gn.affine, device="meta",
                           dtype=dtype, **_no_bias(gn))
        return self._set_affine(new)


class ElasticParameter(ElasticOp):
    """Rule 6: a direct parameter (or buffer) sliced along ``dim``."""

    axes = ("sel",)

    def __init__(self, param: torch.Tensor, dim: int):
        super().__init__()
        if isinstance(param, nn.Parameter):
            self.param = param  # the same Parameter object: shared with the original model
        elif isinstance(param, torch.Tensor):
            self.register_buffer("param", param)
        else:
            raise TypeError(f"ElasticParameter needs a tensor, got {type(param).__name__}")
        self.dim = dim if dim >= 0 else param.dim() + dim
        self.sel = None

    def forward(self) -> torch.Tensor:
        param = tensor_attr(self, "param")
        return param if self.sel is None else take(param, self.dim, self.sel)

    def extract(self) -> torch.Tensor:
        sliced = take(self.param, self.dim, self.sel)
        if isinstance(self.param, nn.Parameter):
            return clone_param(sliced, self.param.requires_grad)
        return clone_tensor(sliced)


def wrap(module: nn.Module, kernel_choices: Sequence[int] | None = None) -> ElasticOp:
    """The elastic op for ``module`` (Rule 8); ``kernel_choices`` only for convs."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return ElasticConv(module, kernel_choices)
    if kernel_choices is not None:
        raise ValueError(f"kernel_choices given for {type(module).__name__}, which is not a conv")
    for cls in (ElasticLinear, ElasticBatchNorm, ElasticLayerNorm, ElasticGroupNorm):
        if isinstance(module, cls._bases):
            return cls(module)
    raise TypeError(f"no elastic op for {type(module).__name__}; keep it frozen")


for _fresh in (ElasticConv, ElasticLinear, ElasticBatchNorm):  # new outputs: the fast path may add into them
    OPS.add(_fresh, Op("elastic", fresh=True))
