"""Channel maps: which channels of a tensor axis are active under given widths.

A `ChannelMap` is a tuple of `Segment`s; the axis is their concatenation.

Rules:
  1. ``Segment(group, size, inner)`` holds ``size`` channels of width group ``group``
     (``None`` = frozen: always full). Each channel is repeated ``inner`` consecutive times
     (a flatten of (C, H, W) into a linear layer has ``inner = H * W``: channel i occupies
     features ``[i * inner, (i + 1) * inner)``). Active width ``w`` keeps the first ``w``
     channels of the segment, i.e. its first ``w * inner`` features.
  2. `select` returns ``None`` when every segment is full (no slicing at all), an ``int``
     prefix length when every segment before the last is full (slicing is then a view),
     and otherwise a LongTensor index (the concatenation of ``offset + arange(w * inner)``).
  3. Widths must name every non-frozen group of the map; a width outside ``[1, size]`` raises.
  4. `Selector` compiles one map for repeated use: selections are cached per tuple of widths
     (and per device), so the same index tensor object is returned each time.
  5. `take(t, dim, sel)` slices ``t``: ``None`` returns ``t`` itself, a prefix ``narrow``s
     (a view sharing storage), an index ``index_select``s (a copy).

Example:
    >>> m = (Segment("a", 4), Segment("b", 2))
    >>> select(m, {"a": 4, "b": 2}) is None
    True
    >>> select(m, {"a": 4, "b": 1})
    5
    >>> select(m, {"a": 2, "b": 2}).tolist()
    [0, 1, 4, 5]
    >>> active_size((Segment("c", 3, inner=4),), {"c": 2})
    8
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import torch

__all__ = ["Segment", "ChannelMap", "Selection", "select", "active_size", "full_size",
           "map_groups", "take", "sel_size", "Selector", "map_to_list", "map_from_list"]


@dataclass(frozen=True)
class Segment:
    """``size`` channels of width group ``group`` (None = frozen), each repeated ``inner`` times."""

    group: str | None
    size: int
    inner: int = 1

    def __post_init__(self) -> None:
        if self.size < 1 or self.inner < 1:
            raise ValueError(f"Segment({self.group!r}, size={self.size}, inner={self.inner}): "
                             "size and inner must be >= 1")


ChannelMap = tuple[Segment, ...]
Selection = Union[None, int, torch.Tensor]


def map_groups(cmap: ChannelMap) -> tuple[str, ...]:
    """The distinct non-frozen groups of ``cmap``, in order of first appearance."""
    return tuple(dict.fromkeys(s.group for s in cmap if s.group is not None))


def full_size(cmap: ChannelMap) -> int:
    """Number of features of the axis at full width."""
    return sum(s.size * s.inner for s in cmap)


def _width(seg: Segment, widths: Mapping[str, int]) -> int:
    if seg.group is None:
        return seg.size
    try:
        w = int(widths[seg.group])
    except KeyError:
        raise ValueError(f"no width given for group {seg.group!r} "
                         f"(widths name {sorted(widths)})") from None
    if not 1 <= w <= seg.size:  # Rule 3
        raise ValueError(f"width {w} for group {seg.group!r} is outside [1, {seg.size}]")
    return w


def active_size(cmap: ChannelMap, widths: Mapping[str, int]) -> int:
    """Number of active features of the axis under ``widths`` (Rule 1)."""
    return sum(_width(s, widths) * s.inner for s in cmap)


def _index(cmap: ChannelMap, ws: list[int], device: torch.device | None) -> torch.Tensor:
    parts, offset = [], 0
    for seg, w in zip(cmap, ws):
        parts.append(torch.arange(offset, offset + w * seg.inner, device=device))
        offset += seg.size * seg.inner
    return torch.cat(parts)


def _compute(cmap: ChannelMap, widths: Mapping[str, int], device=None) -> Selection:
    ws = [_width(s, widths) for s in cmap]
    if all(w == s.size for s, w in zip(cmap, ws)):  # Rule 2: full
        return None
    if all(w == s.size for s, w in zip(cmap[:-1], ws[:-1])):  # Rule 2: prefix
        return sum(s.size * s.inner for s in cmap[:-1]) + ws[-1] * cmap[-1].inner
    return _index(cmap, ws, device)


def select(cmap: ChannelMap, widths: Mapping[str, int]) -> Selection:
    """The active selection of ``cmap`` under ``widths``: None, a prefix length or an index."""
    return _compute(cmap, widths)


class Selector:
    """A compiled `ChannelMap` with a cache of selections keyed by the widths tuple (Rule 4)."""

    __slots__ = ("cmap", "groups", "full", "_cache")

    def __init__(self, cmap: ChannelMap):
        self.cmap = tuple(cmap)
        self.groups = map_groups(self.cmap)
        self.full = full_size(self.cmap)
        self._cache: dict[tuple, Selection] = {}

    def select(self, widths: Mapping[str, int], device: torch.device | None = None) -> Selection:
        key = (tuple([widths[g] for g in self.groups]), device)
        try:
            return self._cache[key]
        except KeyError:
            sel = self._cache[key] = _compute(self.cmap, widths, device)
            return sel

    def size(self, widths: Mapping[str, int]) -> int:
        return active_size(self.cmap, widths)


def take(t: torch.Tensor, dim: int, sel: Selection) -> torch.Tensor:
    """Slice ``t`` along ``dim`` by ``sel`` (Rule 5)."""
    if sel is None:
        return t
    if isinstance(sel, int):
        return t.narrow(dim, 0, sel)
    if sel.device != t.device:
        sel = sel.to(t.device)
    return t.index_select(dim, sel)


def sel_size(sel: Selection, full: int) -> int:
    """Number of channels kept by ``sel`` out of ``full``."""
    if sel is None:
        return full
    return sel if isinstance(sel, int) else int(sel.numel())


def map_to_list(cmap: ChannelMap | None) -> list | None:
    """JSON form of a map: ``[[group, size, inner], ...]``."""
    return None if cmap is None else [[s.group, s.size, s.inner] for s in cmap]


def map_from_list(data: list | None) -> ChannelMap | None:
    return None if data is None else tuple(Segment(g, int(n), int(i)) for g, n, i in data)
