"""`Plan`: bindings checked against the modules and the space, compiled for fast activation.

Rules:
  1. Every problem is collected and reported in one ValueError, each line naming the path or
     dimension and what to do.
  2. Op paths must name elastic ops; map groups must be width dimensions whose maximal choice is
     the segment size; a map's full size must equal the op's channel count on that axis (so the
     maximal config leaves every selection None, Invariant 1).
  3. Conv/linear maps drive ``in_sel``/``out_sel``; single-axis ops (norms, ElasticParameter)
     take ``out_map`` (or ``in_map``; both must then be equal) into ``sel``. A grouped,
     non-depthwise conv's ``in_map`` covers one group's input channels (weight dim 1).
  4. Identical maps share one Selector, so ``activate`` computes each selection once.
  4b. A `ChannelPermute` / `ChannelSplit` (``relayout.py``) takes its input's map (``in_map``)
     into ``sel`` through its own selector (its selection is a gather index or piece sizes).
  5. Kernel paths must be ElasticConvs whose ``kernel_choices`` include the dimension's choices,
     with the same maximum; depth blocks must be SkipBlocks, the depth maximum equal to the
     number of blocks; no conv or block is bound twice.
  6. Every dimension drives something, at most one resolution dimension exists and it is the one
     named by ``bindings.resolution``; ``out_spatial`` covers every conv/linear at every
     resolution choice (key None without a resolution dimension).

Example:
    >>> import torch, torch.fx as fx
    >>> from runtime.elastic import Bindings, Dimension, SearchSpace
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.ReLU()))
    >>> Plan(gm, SearchSpace([Dimension("w", "width", (4, 2))]), Bindings())
    Traceback (most recent call last):
    ...
    ValueError: invalid bindings:
      - dimension 'w' (width, choices (4, 2)) drives nothing: bind it or drop it from the space
"""
from __future__ import annotations

from typing import Any

import torch.fx as fx

from runtime.elastic.base import ElasticOp
from runtime.elastic.bindings import Bindings, OpBinding
from runtime.elastic.blocks import SkipBlock
from runtime.elastic.channels import ChannelMap, Selector, full_size
from runtime.elastic.conv import ElasticConv
from runtime.elastic.cost import is_mac_layer, walk
from runtime.elastic.ops import ElasticBatchNorm, ElasticGroupNorm, ElasticLayerNorm, ElasticLinear, \
    ElasticParameter
from runtime.elastic.relayout import ChannelPermute, ChannelSplit, relayout_selector
from runtime.elastic.space import SearchSpace

__all__ = ["Plan"]


def _resolve(gm: fx.GraphModule, path: str, cls: type, problems: list[str]) -> Any:
    try:
        module = gm.get_submodule(path)
    except AttributeError:
        problems.append(f"{path!r}: no such module in graph_module")
        return None
    if not isinstance(module, cls):
        problems.append(f"{path!r}: expected a {cls.__name__}, found {type(module).__name__}")
        return None
    return module


def _single_size(op: ElasticOp) -> int:
    m = getattr(op, "module", None)
    if isinstance(op, ChannelPermute):
        return op.index.numel()
    if isinstance(op, ChannelSplit):
        return sum(op.sizes)
    if isinstance(op, ElasticBatchNorm):
        return m.num_features
    if isinstance(op, ElasticLayerNorm):
        return m.normalized_shape[-1]
    if isinstance(op, ElasticGroupNorm):
        return m.num_channels
    assert isinstance(op, ElasticParameter)
    return op.param.shape[op.dim]


def _axes(op: ElasticOp, ob: OpBinding, problems: list[str]) -> list[tuple[str, ChannelMap, int]]:
    """(attr, map, full channel count) per bound axis of ``op`` (Rule 3)."""
    if isinstance(op, (ElasticConv, ElasticLinear)):
        m = op.module
        if isinstance(op, ElasticConv):
            sizes = (m.in_channels // (1 if op.depthwise else m.groups), m.out_channels)
            if op.depthwise and None not in (ob.in_map, ob.out_map) and ob.in_map != ob.out_map:
                problems.append(f"{ob.path!r}: a depthwise conv has one channel axis; "
                                "in_map and out_map differ")
                return []
        else:
            sizes = (m.in_features, m.out_features)
        return [(a, c, n) for a, c, n in zip(("in_sel", "out_sel"), (ob.in_map, ob.out_map), sizes)
                if c is not None]
    if ob.in_map is not None and ob.out_map is not None and ob.in_map != ob.out_map:
        problems.append(f"{ob.path!r}: a {type(op).__name__} has one channel axis; "
                        "in_map and out_map differ")
        return []
    cmap = ob.out_map if ob.out_map is not None else ob.in_map
    if isinstance(op, ElasticLayerNorm) and cmap is not None and len(op.module.normalized_shape) != 1:
        problems.append(f"{ob.path!r}: only a LayerNorm over one (channel) dim is elastic")
        return []
    return [] if cmap is None else [("sel", cmap, _single_size(op))]


def _check_map(where: str, cmap: ChannelMap, full: int, space: SearchSpace, problems: list[str]):
    if full_size(cmap) != full:
        problems.append(f"{where}: map covers {full_size(cmap)} features, the op has {full}")
    for seg in cmap:
        if seg.group is None:
            continue
        if seg.group not in space or space[seg.group].kind not in ("width", "heads"):
            problems.append(f"{where}: group {seg.group!r} is not a width or heads dimension "
                            "of the space")
        elif space[seg.group].max != seg.group_size:
            problems.append(f"{where}: segment of a group of {seg.group_size} channels but "
                            f"dimension {space[seg.group].describe()} has maximum "
                            f"{space[seg.group].max}")


class Plan:
    """Rules 1-6; attributes are what `SuperNetwork.activate` and the cost model iterate."""

    def __init__(self, gm: fx.GraphModule, space: SearchSpace, bindings: Bindings):
        problems: list[str] = []
        self.selectors_by_path: dict[str, dict[str, Selector]] = {}
        self.assignments: list[tuple[Selector, list[tuple[ElasticOp, str]]]] = []
        self._bind_ops(gm, space, bindings, problems)
        self.kernels: list[tuple[ElasticConv, str, int]] = []
        self.kernel_dims: dict[str, str] = {}
        self._bind_kernels(gm, space, bindings, problems)
        self.depths: list[tuple[str, list[SkipBlock]]] = []
        self.depth_paths: list[tuple[str, tuple[str, ...]]] = []
        self._bind_depths(gm, space, bindings, problems)
        self.items = walk(gm)
        self._check_dimensions(space, bindings, problems)
        if problems:  # Rule 1
            raise ValueError("invalid bindings:\n  - " + "\n  - ".join(problems))

    def _bind_ops(self, gm, space, bindings, problems) -> None:
        by_map: dict[ChannelMap, tuple[Selector, list]] = {}
        for ob in bindings.ops:
            op = _resolve(gm, ob.path, ElasticOp, problems)
            if op is None:
                continue
            for attr, cmap, full in _axes(op, ob, problems):
                _check_map(f"{ob.path!r}.{attr}", cmap, full, space, problems)  # Rule 2
                relayout = isinstance(op, (ChannelPermute, ChannelSplit))  # Rule 4b
                key = (cmap, type(op).__name__, tuple(op.index.tolist()) if
                       isinstance(op, ChannelPermute) else getattr(op, "sizes", None))
                selector, targets = by_map.setdefault(key, (
                    relayout_selector(op, cmap) if relayout else Selector(cmap), []))  # Rule 4
                targets.append((op, attr))
                self.selectors_by_path.setdefault(ob.path, {})[attr] = selector
        self.assignments = list(by_map.values())

    def _bind_kernels(self, gm, space, bindings, problems) -> None:
        for kb in bindings.kernels:
            if kb.dimension not in space or space[kb.dimension].kind != "kernel":
                problems.append(f"kernel binding: {kb.dimension!r} is not a kernel dimension")
                continue
            dim = space[kb.dimension]
            for path in kb.paths:
                op = _resolve(gm, path, ElasticConv, problems)
                if op is None:
                    continue
                if path in self.kernel_dims:
                    problems.append(f"{path!r}: bound to kernel dimensions {self.kernel_dims[path]!r} "
                                    f"and {dim.name!r}")
                elif dim.max != op.max_kernel or not set(dim.choices) <= set(op.kernel_choices):
                    problems.append(f"{path!r}: kernel choices {op.kernel_choices} do not cover "
                                    f"{dim.describe()}. Hint: ElasticConv(conv, kernel_choices=...)")
                else:
                    self.kernels.append((op, dim.name, op.max_kernel))
                    self.kernel_dims[path] = dim.name

    def _bind_depths(self, gm, space, bindings, problems) -> None:
        seen: set[str] = set()
        for db in bindings.depths:
            if db.dimension not in space or space[db.dimension].kind != "depth":
                problems.append(f"depth binding: {db.dimension!r} is not a depth dimension")
                continue
            dim = space[db.dimension]
            blocks = [_resolve(gm, p, SkipBlock, problems) for p in db.blocks]
            if dim.max != len(db.blocks):
                problems.append(f"{dim.describe()}: maximum must equal its {len(db.blocks)} blocks")
            if seen & set(db.blocks):
                problems.append(f"{dim.describe()}: blocks {sorted(seen & set(db.blocks))} are "
                                "already bound to another depth dimension")
            seen |= set(db.blocks)
            if all(b is not None for b in blocks):
                self.depths.append((dim.name, blocks))
                self.depth_paths.append((dim.name, db.blocks))

    def _check_dimensions(self, space: SearchSpace, bindings: Bindings, problems: list[str]) -> None:
        used = {g for sel, _ in self.assignments for g in sel.groups}
        used |= set(self.kernel_dims.values()) | {d for d, _ in self.depth_paths}
        resolutions = space.of_kind("resolution")
        if bindings.resolution is not None:
            used.add(bindings.resolution)
            if bindings.resolution not in space or space[bindings.resolution].kind != "resolution":
                problems.append(f"bindings.resolution {bindings.resolution!r} is not a resolution "
                                "dimension of the space")
        if len(resolutions) > 1:
            problems.append(f"at most one resolution dimension, got {[d.name for d in resolutions]}")
        for d in space:
            if d.name not in used:  # Rule 6
                problems.append(f"dimension {d.describe()} drives nothing: bind it or drop it from "
                                "the space")
        keys = set(space[bindings.resolution].choices) if bindings.resolution in space else {None}
        spatial = bindings.spatial_map()
        for item in self.items:
            if is_mac_layer(item) and not keys <= set(spatial.get(item.path, {})):
                problems.append(f"{item.path!r}: out_spatial lacks resolutions "
                                f"{sorted(keys - set(spatial.get(item.path, {})), key=str)}. "
                                "Hint: runtime.elastic.cost.measure_out_spatial")
