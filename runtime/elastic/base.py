"""Common base of elastic ops: the original module plus mutable active state.

Rules:
  1. An elastic op holds the ORIGINAL module as ``self.module`` (parameters are shared, so
     state_dict keys read ``<path>.module.weight``); `ElasticParameter` holds the original
     tensor as ``self.param``.
  2. Its active state lives in the attributes named by ``axes`` (each None, an int prefix
     or a LongTensor index, see `channels.select`), plus ``kernel`` for convs. All None is the
     maximal configuration, in which ``forward`` calls exactly ``self.module(x)``.
  3. ``extract()`` returns a plain torch module (or tensor) with CLONED weights for the
     current state; it shares no storage with the op.
  4. Forward paths run once per op per call, hundreds of times per network forward, so they
     read the wrapped module as ``self._modules["module"]`` and its tensors with `tensor_attr`:
     the same objects as ``self.module`` / ``getattr``, without a Python-level
     ``nn.Module.__getattr__`` call each (about a microsecond on a slow CPU).

Example:
    >>> import torch
    >>> from runtime.elastic.ops import ElasticLinear
    >>> op = ElasticLinear(torch.nn.Linear(4, 3))
    >>> op.axes
    ('in_sel', 'out_sel')
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ElasticOp", "clone_param", "clone_tensor", "tensor_attr"]


class ElasticOp(nn.Module):
    """Base class of elastic ops; subclasses set ``axes`` and implement forward/extract."""

    axes: tuple[str, ...] = ()

    def reset(self) -> None:
        """Return to the maximal configuration (Rule 2)."""
        for name in self.axes:
            setattr(self, name, None)
        if hasattr(self, "kernel"):
            self.kernel = None

    def is_full(self) -> bool:
        return all(getattr(self, a) is None for a in self.axes) and getattr(self, "kernel", None) is None

    def extract(self) -> nn.Module | torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        state = {a: getattr(self, a) for a in self.axes}
        if hasattr(self, "kernel"):
            state["kernel"] = self.kernel
        return ", ".join(f"{k}={_short(v)}" for k, v in state.items())


def tensor_attr(module: nn.Module, name: str) -> torch.Tensor | None:
    """``getattr(module, name)`` for a registered parameter or buffer, read from its dict (Rule 4).

    Anything else (a weight recomputed by a parametrization or a hook) falls back to getattr.
    """
    params = module._parameters
    if name in params:
        return params[name]
    buffers = module._buffers
    if name in buffers:
        return buffers[name]
    return getattr(module, name)


def _short(sel) -> str:
    if isinstance(sel, torch.Tensor):
        return f"index[{sel.numel()}]"
    return repr(sel)


def clone_tensor(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached copy with its own contiguous storage (Rule 3)."""
    return None if t is None else t.detach().clone(memory_format=torch.contiguous_format)


def clone_param(t: torch.Tensor | None, requires_grad: bool = True) -> nn.Parameter | None:
    if t is None:
        return None
    return nn.Parameter(clone_tensor(t), requires_grad=requires_grad)
