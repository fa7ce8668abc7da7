"""`SkipBlock`: an outlined skippable block that can be replaced by identity.

Rules:
  1. ``SkipBlock(block)`` holds the block as ``self.block`` (state_dict keys
     ``<path>.block.<...>``) and a plain bool ``self.active`` (True at construction).
  2. ``forward(x, *context)`` is ``self.block(x, *context)`` when active and ``x`` itself
     otherwise: a skipped block is not executed at all, so it costs nothing and its parameters
     receive no gradient. ``context`` are read-only side inputs (an attention mask).
  3. The block takes one data input (plus its context) and returns one output of the same shape
     as ``x`` (that is what makes it skippable; the analysis guarantees it, nothing here checks it).

Example:
    >>> import torch
    >>> skip = SkipBlock(torch.nn.Linear(3, 3))
    >>> skip.active = False
    >>> x = torch.randn(2, 3)
    >>> skip(x) is x
    True
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SkipBlock"]


class SkipBlock(nn.Module):
    """A block that is run when ``active`` and replaced by identity otherwise."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.active = True

    def forward(self, x: torch.Tensor, *context) -> torch.Tensor:
        if self.active:  # self.block without nn.Module.__getattr__ (hot path)
            return self._modules["block"](x, *context)
        return x  # Rule 2

    def extra_repr(self) -> str:
        return f"active={self.active}"
