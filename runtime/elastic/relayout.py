"""Channel re-layouts with index maps: a fixed channel permutation and a channel split.

A channel shuffle (ShuffleNet's view / transpose / view) moves every channel to a fixed new
position, and a split of concatenated channels cuts them at fixed positions. Once the groups
behind them shrink, neither can run as traced (a view into equal groups, a chunk into equal
halves): the active channels are no longer where, or as many as, the traced code assumes. These
ops replace them and compute, at activation, where the active channels go.

Rules:
  1. `ChannelPermute(index, dim)`: at full width, output channel ``p`` is input channel
     ``index[p]`` (``index_select``: the same values as the traced shuffle, bit for bit).
     Bound through its input's channel map (``in_map``), a selection is the gather of the
     active input channels, in output order, from the compact active input.
  2. `ChannelSplit(sizes, dim)`: at full width, ``torch.split(x, sizes, dim)``. Bound through its
     input's channel map, a selection is the tuple of the pieces' active sizes (each piece is
     a contiguous run of the compact input, since the active channels keep their order).
  3. Both have no parameters; ``extract()`` returns `IndexSelect` / `SplitSizes`, plain modules
     with the active index / sizes fixed (ONNX: Gather / Split).
  4. `relayout_selector(op, cmap)` is the selector `Plan` binds to them: it caches a selection
     per tuple of widths, as `channels.Selector` does.

Example:
    >>> import torch
    >>> from runtime.elastic.channels import Segment
    >>> shuffle = ChannelPermute([0, 2, 1, 3])           # (a0, a1, b0, b1) -> (a0, b0, a1, b1)
    >>> cmap = (Segment("a", 2), Segment("b", 2))
    >>> shuffle.sel = relayout_selector(shuffle, cmap).select({"a": 1, "b": 2})
    >>> shuffle(torch.tensor([[10., 20., 21.]])).tolist()  # active input: a0, b0, b1
    [[10.0, 20.0, 21.0]]
    >>> split = ChannelSplit([3, 1])                     # pieces: (a0, b0, a1), (b1)
    >>> halves = tuple(Segment(g, 1, start=i, total=2) for i in (0, 1) for g in "ab")
    >>> relayout_selector(split, halves).select({"a": 1, "b": 2})
    (2, 1)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from runtime.elastic.base import ElasticOp
from runtime.elastic.channels import ChannelMap, Selector

__all__ = ["ChannelPermute", "ChannelSplit", "IndexSelect", "SplitSizes", "relayout_selector"]


class IndexSelect(nn.Module):
    """``x.index_select(dim, index)`` with a fixed index (the extracted `ChannelPermute`)."""

    def __init__(self, index: Sequence[int] | torch.Tensor, dim: int = 1):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(self.dim, self.index)


class SplitSizes(nn.Module):
    """``torch.split(x, sizes, dim)`` with fixed sizes (the extracted `ChannelSplit`)."""

    def __init__(self, sizes: Sequence[int], dim: int = 1):
        super().__init__()
        self.sizes, self.dim = tuple(int(s) for s in sizes), dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes, self.dim)


class ChannelPermute(ElasticOp):
    """Rule 1: state ``sel`` (None: the full permutation; else the active gather index)."""

    axes = ("sel",)

    def __init__(self, index: Sequence[int], dim: int = 1):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long).clone())
        self.sel = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sel = self.sel
        if sel is None:
            sel = self._buffers["index"]
        elif sel.device != x.device:
            sel = sel.to(x.device)
        return x.index_select(self.dim, sel)

    def extract(self) -> IndexSelect:
        return IndexSelect(self.index if self.sel is None else self.sel, self.dim)


class ChannelSplit(ElasticOp):
    """Rule 2: state ``sel`` (None: the traced sizes; else the pieces' active sizes)."""

    axes = ("sel",)

    def __init__(self, sizes: Sequence[int], dim: int = 1):
        super().__init__()
        self.sizes, self.dim = tuple(int(s) for s in sizes), dim
        self.sel = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes if self.sel is None else self.sel, self.dim)

    def extract(self) -> SplitSizes:
        return SplitSizes(self.sizes if self.sel is None else self.sel, self.dim)


class _RelayoutSelector(Selector):
    """Rule 4: a `Selector` whose selection is a relayout op's state rather than a slice."""

    __slots__ = ("op_kind", "layout")

    def __init__(self, cmap: ChannelMap, op_kind: str, layout: tuple[int, ...]):
        super().__init__(cmap)
        self.op_kind, self.layout = op_kind, np.asarray(layout, dtype=np.int64)

    def select(self, widths: Mapping[str, int], device: torch.device | None = None):
        key = (tuple([widths[g] for g in self.groups]), device)
        try:
            return self._cache[key]
        except KeyError:
            sel = self._cache[key] = self._compute(widths, device)
            return sel

    def _compute(self, widths, device):
        active = self.active_mask(widths)
        if active.all():
            return None
        counts = np.concatenate(([0], np.cumsum(active)))
        if self.op_kind == "split":
            ends = counts[np.concatenate(([0], np.cumsum(self.layout)))]
            return tuple(int(b - a) for a, b in zip(ends, ends[1:]))
        kept = self.layout[active[self.layout]]  # active inputs, in output order
        return torch.from_numpy(counts[kept]).to(device)  # their compact positions


def relayout_selector(op: ElasticOp, cmap: ChannelMap) -> Selector:
    """Rule 4: the selector of a `ChannelPermute` or `ChannelSplit` bound through ``cmap``."""
    if isinstance(op, ChannelPermute):
        return _RelayoutSelector(cmap, "permute", tuple(op.index.tolist()))
    return _RelayoutSelector(cmap, "split", op.sizes)
