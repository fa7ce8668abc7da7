"""Dimension dependencies derived from the bindings: which dimensions a skipped block makes moot.

Rules:
  1. A width dimension is used by the ops whose ``in_map`` or ``out_map`` has a segment of its
     group; a kernel dimension by the paths of its `KernelBinding`.
  2. When every op a dimension uses lives inside SkipBlocks of one depth dimension D (a path
     under ``<block path>.``), and the first of those blocks is number i (0-based) of D's chain,
     the dimension gets ``active_when=(D, i + 1)``: it matters only when D keeps block i.
  3. Any use outside those blocks, or in blocks of two depth dimensions, leaves it independent.
  4. Dependencies declared in the space win: a space that has any is returned unchanged.

Example:
    >>> from runtime.elastic.bindings import Bindings, DepthBinding, OpBinding
    >>> from runtime.elastic.channels import Segment
    >>> from runtime.elastic.space import Dimension, SearchSpace
    >>> space = SearchSpace([Dimension("w", "width", (8, 4)), Dimension("d", "depth", (2, 1))])
    >>> b = Bindings(ops=[OpBinding("blocks.1.block.conv", out_map=[Segment("w", 8)])],
    ...              depths=[DepthBinding("d", ("blocks.0", "blocks.1"))])
    >>> derive_dependencies(space, b)["w"].active_when
    ('d', 2)
"""
from __future__ import annotations

import dataclasses

from runtime.elastic.bindings import Bindings
from runtime.elastic.space import SearchSpace

__all__ = ["derive_dependencies"]


def _uses(bindings: Bindings) -> dict[str, set[str]]:
    """Dimension name -> op paths it drives (Rule 1)."""
    uses: dict[str, set[str]] = {}
    for ob in bindings.ops:
        for cmap in (ob.in_map, ob.out_map):
            for seg in cmap or ():
                if seg.group is not None:
                    uses.setdefault(seg.group, set()).add(ob.path)
    for kb in bindings.kernels:
        uses.setdefault(kb.dimension, set()).update(kb.paths)
    return uses


def _home(path: str, blocks: dict[str, tuple[str, int]]) -> tuple[str, int] | None:
    for block, where in blocks.items():
        if path.startswith(block + "."):
            return where
    return None


def derive_dependencies(space: SearchSpace, bindings: Bindings) -> SearchSpace:
    """``space`` with ``active_when`` set from where each dimension's ops live (Rules 1-4)."""
    if space.has_dependencies:  # Rule 4
        return space
    blocks = {b: (db.dimension, i) for db in bindings.depths for i, b in enumerate(db.blocks)}
    uses = _uses(bindings)
    dims, changed = [], False
    for d in space:
        homes = {_home(p, blocks) for p in uses.get(d.name, ())} if d.kind in ("width", "kernel") \
            else set()
        depth_dims = {h[0] for h in homes if h is not None}
        if homes and None not in homes and len(depth_dims) == 1:  # Rules 2-3
            dim = depth_dims.pop()
            d = dataclasses.replace(d, active_when=(dim, min(i for _, i in homes) + 1))
            changed = True
        dims.append(d)
    return SearchSpace(dims) if changed else space
