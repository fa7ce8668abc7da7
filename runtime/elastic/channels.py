"""Channel maps: which channels of a tensor axis are active under given widths.

A `ChannelMap` is a tuple of `Segment`s; the axis is their concatenation.

Rules:
  1. ``Segment(group, size, inner)`` holds ``size`` channels of width group ``group``
     (``None`` = frozen: always full). Each channel is repeated ``inner`` consecutive times
     (a flatten of (C, H, W) into a linear layer has ``inner = H * W``: channel i occupies
     features ``[i * inner, (i + 1) * inner)``). Active width ``w`` keeps the first ``w``
     channels of the segment, i.e. its first ``w * inner`` features.
  1b. A *part* ``Segment(group, size, inner, start, total)`` holds channels
     ``[start, start + size)`` of a group of ``total`` channels (behind a channel shuffle or a
     split of concatenated channels, each segment is such a part). Width ``w`` keeps its
     channels below ``w``: ``clamp(w - start, 0, size)`` of them, possibly none.
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
    >>> part = (Segment("a", 2, start=0, total=4), Segment("b", 2), Segment("a", 2, start=2, total=4))
    >>> select(part, {"a": 3, "b": 2})  # 2 + 2 + 1 channels: a prefix
    5
    >>> select(part, {"a": 1, "b": 2}).tolist()  # 1 + 2 + 0
    [0, 2, 3]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np
import torch

__all__ = ["Segment", "ChannelMap", "Selection", "select", "active_size", "full_size",
           "map_groups", "take", "sel_size", "Selector", "map_to_list", "map_from_list"]


@dataclass(frozen=True)
class Segment:
    """``size`` channels of width group ``group`` (None = frozen), each repeated ``inner`` times;
    a part (Rule 1b) holds channels ``[start, start + size)`` of a group of ``total``."""

    group: str | None
    size: int
    inner: int = 1
    start: int = 0
    total: int | None = None  # the group's channels, for a part (None: the whole group)

    def __post_init__(self) -> None:
        if self.size < 1 or self.inner < 1 or self.start < 0:
            raise ValueError(f"Segment({self.group!r}, size={self.size}, inner={self.inner}): "
                             "size and inner must be >= 1, start >= 0")
        if self.total is not None and self.start + self.size > self.total:
            raise ValueError(f"Segment({self.group!r}): channels [{self.start}, "
                             f"{self.start + self.size}) exceed the group's {self.total}")

    @property
    def group_size(self) -> int:
        """The channels of the whole group (its maximal width)."""
        return self.size if self.total is None else self.total


ChannelMap = tuple[Segment, ...]
Selection = Union[None, int, torch.Tensor]


def map_groups(cmap: ChannelMap) -> tuple[str, ...]:
    """The distinct non-frozen groups of ``cmap``, in order of first appearance."""
    return tuple(dict.fromkeys(s.group for s in cmap if s.group is not None))


def full_size(cmap: ChannelMap) -> int:
    """Number of features of the axis at full width."""
    return sum(s.size * s.inner for s in cmap)


def _width(seg: Segment, widths: Mapping[str, int]) -> int:
    """Active channels of the segment (Rules 1, 1b)."""
    if seg.group is None:
        return seg.size
    try:
        w = int(widths[seg.group])
    except KeyError:
        raise ValueError(f"no width given for group {seg.group!r} "
                         f"(widths name {sorted(widths)})") from None
    if not 1 <= w <= seg.group_size:  # Rule 3
        raise ValueError(f"width {w} for group {seg.group!r} is outside [1, {seg.group_size}]")
    return min(max(w - seg.start, 0), seg.size)


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
    """A compiled `ChannelMap` with a cache of selections keyed by the widths tuple (Rule 4).

    A map of many segments or of parts (behind a channel shuffle: one segment per channel) is
    compiled into per-feature arrays once, and selected by one vectorised comparison."""

    __slots__ = ("cmap", "groups", "full", "_cache", "_features")

    def __init__(self, cmap: ChannelMap):
        self.cmap = tuple(cmap)
        self.groups = map_groups(self.cmap)
        self.full = full_size(self.cmap)
        self._cache: dict[tuple, Selection] = {}
        many = len(self.cmap) > 16 or any(s.total is not None for s in self.cmap)
        self._features = _features(self.cmap, self.groups) if many else None

    def select(self, widths: Mapping[str, int], device: torch.device | None = None) -> Selection:
        key = (tuple([widths[g] for g in self.groups]), device)
        try:
            return self._cache[key]
        except KeyError:
            if self._features is None:
                sel = _compute(self.cmap, widths, device)
            else:
                sel = _from_mask(self.active_mask(widths), device)
            self._cache[key] = sel
            return sel

    def active_mask(self, widths: Mapping[str, int]) -> np.ndarray:
        """A bool per feature of the full axis: whether it is active under ``widths``."""
        gid, chan, sizes = self._features or _features(self.cmap, self.groups)
        lim = np.empty(len(self.groups) + 1, dtype=np.int64)
        for i, g in enumerate(self.groups):
            w = int(widths[g])
            if not 1 <= w <= sizes[i]:  # Rule 3
                raise ValueError(f"width {w} for group {g!r} is outside [1, {sizes[i]}]")
            lim[i] = w
        lim[-1] = np.iinfo(np.int64).max  # frozen segments (slot -1): always active
        return chan < lim[gid]

    def size(self, widths: Mapping[str, int]) -> int:
        return active_size(self.cmap, widths)


def _features(cmap: ChannelMap, groups: tuple[str, ...]):
    """(group slot per feature (-1: frozen), channel index per feature, group sizes)."""
    slot = {g: i for i, g in enumerate(groups)}
    sizes = [0] * len(groups)
    gid, chan = [], []
    for s in cmap:
        gid.append(np.full(s.size * s.inner, slot.get(s.group, -1), dtype=np.int64))
        chan.append(np.repeat(np.arange(s.start, s.start + s.size, dtype=np.int64), s.inner))
        if s.group is not None:
            sizes[slot[s.group]] = s.group_size
    return np.concatenate(gid), np.concatenate(chan), sizes


def _from_mask(mask: np.ndarray, device) -> Selection:
    """Rule 2 from a feature mask: None (all), a prefix length, or an index."""
    n = int(mask.sum())
    if n == mask.size:
        return None
    if mask[:n].all():
        return n
    return torch.from_numpy(np.flatnonzero(mask)).to(device)


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
    """JSON form of a map: ``[[group, size, inner], ...]``, parts with ``start, total`` too."""
    if cmap is None:
        return None
    return [[s.group, s.size, s.inner] + ([s.start, s.total] if s.total is not None else [])
            for s in cmap]


def map_from_list(data: list | None) -> ChannelMap | None:
    if data is None:
        return None
    return tuple(Segment(item[0], *(None if v is None else int(v) for v in item[1:]))
                 for item in data)
