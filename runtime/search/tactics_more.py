"""Tactics built on past searches and on structure: PopDB space reduction and coarse-to-fine.

Rules:
  1. `popdb_space(space, source, options)`: the configs a past search validated (a store or its
     path, a `SearchResult`'s history, or a list of configs) are encoded with the masked
     features and clustered with scikit-learn's HDBSCAN (``min_cluster_size``); over the
     members of non-noise clusters (every config when all are noise), each dimension keeps the
     values chosen at least ``popdb_threshold`` of the time where it is relevant (always its
     most frequent one). Both extreme choices of every dimension are kept too: the maximal
     one so that the original model stays reachable, the minimal one because the past
     searches may have run on another target, where the cheap end of the front differs (a
     target that pays per block needs the shallowest depths a MACs-bound one rarely chose);
     what goes are rarely chosen intermediate values. Dependencies whose depth value is gone
     are dropped together with the dependent dimension's choices (it keeps its maximal
     choice only).
     ``tactic="popdb"`` then runs the concurrent tactic in the restricted space.
  2. `run_coarse_to_fine` (BigNAS): validate a grid of global multipliers, one level per kind
     of dimension (level l of s sets every dimension of that kind to the choice at fraction
     l/(s-1) of its range), then spend the rest of the budget on mutations around the best
     feasible skeletons (the constraint-satisfying front of what is validated).
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Any

import numpy as np

from runtime.elastic.space import Dimension, SearchSpace
from runtime.search.context import Context, TacticOptions
from runtime.search.inner import explore

__all__ = ["popdb_space", "run_popdb", "run_coarse_to_fine", "grid_skeletons"]


def _past_configs(source: Any, space: SearchSpace) -> list:
    from runtime.search.result import SearchResult
    from runtime.search.store import EvaluationStore

    if source is None:
        raise ValueError("tactic 'popdb' needs warm_start= past searches (a store, its path, a "
                         "SearchResult or a list of configs) to learn the restricted space from")
    if isinstance(source, SearchResult):
        configs = [e.config for e in source.history if e.ok]
    elif isinstance(source, (EvaluationStore, str, os.PathLike)):
        store = source if isinstance(source, EvaluationStore) else EvaluationStore(source)
        configs = [json.loads(c) for c in dict.fromkeys(r.config for r in store.rows())]
    else:
        configs = list(source)
    from runtime.search.search import canonical_valid
    out = canonical_valid(space, configs)
    if len(out) < 2:
        raise ValueError(f"popdb needs at least 2 past configs valid in this space, got {len(out)}")
    return out


def popdb_space(space: SearchSpace, source: Any, options: TacticOptions) -> SearchSpace:
    """Rule 1."""
    from sklearn.cluster import HDBSCAN

    X = space.indices(_past_configs(source, space))
    feats = space.features(X)
    labels = HDBSCAN(min_cluster_size=max(2, min(options.popdb_min_cluster_size, len(X))),
                     copy=True).fit_predict(feats)
    members = X[labels >= 0] if (labels >= 0).any() else X
    relevant = space.relevance(members)
    keep: dict[str, tuple[int, ...]] = {}
    for j, d in enumerate(space):
        col = members[relevant[:, j], j]
        if len(col) == 0:
            keep[d.name] = d.choices
            continue
        freq = np.bincount(col, minlength=len(d.choices)) / len(col)
        chosen = {int(np.argmax(freq)), 0, len(d.choices) - 1}  # the extremes stay
        chosen |= {i for i, f in enumerate(freq) if f >= options.popdb_threshold}
        keep[d.name] = tuple(d.choices[i] for i in sorted(chosen))
    dims = []
    for d in space:
        active = d.active_when
        if active is not None and max(keep[active[0]]) < active[1]:
            dims.append(Dimension(d.name, d.kind, (d.max,), None))  # never relevant any more
        else:
            dims.append(Dimension(d.name, d.kind, keep[d.name], active))
    return SearchSpace(dims)


def run_popdb(ctx: Context) -> None:
    """The concurrent tactic in the space `popdb_space` restricted (done by `search`)."""
    from runtime.search.tactics import run_concurrent

    run_concurrent(ctx)


def grid_skeletons(space: SearchSpace, steps: int) -> np.ndarray:
    """Rule 2: one genome per combination of levels of the elastic kinds."""
    kinds = sorted({d.kind for d in space if len(d.choices) > 1})
    rows = []
    for levels in itertools.product(range(steps), repeat=len(kinds)):
        level = dict(zip(kinds, levels))
        rows.append([int(round(level.get(d.kind, 0) / max(steps - 1, 1) * (len(d.choices) - 1)))
                     if d.kind in level else 0 for d in space])
    return np.array(rows, dtype=np.int64).reshape(-1, len(space))


def run_coarse_to_fine(ctx: Context) -> None:
    """Rule 2."""
    v = ctx.validator
    grid = grid_skeletons(ctx.space, ctx.options.grid_steps)
    if len(grid) > v.remaining // 2:  # keep half of the budget for the fine phase
        grid = grid[np.sort(ctx.rng.choice(len(grid), max(1, v.remaining // 2), replace=False))]
    v.validate(grid)
    stall = 0
    batch = max(4, ctx.pop_size // 2)
    while v.remaining > 0 and stall < 3:
        new = v.validate(explore(ctx, min(batch, v.remaining), np.zeros((0, len(ctx.space)))))
        stall = 0 if new else stall + 1
