"""What every tactic shares: the validator, the running front and hypervolume, the options.

Rules:
  1. `TacticOptions` (frozen, keyword-only) holds every tactic's knobs; defaults suit a budget
     of a few hundred validations.
  2. `Context.after_batch` (called by the validator after every batch) keeps the feasible
     validated Pareto front incrementally and appends ``(validations, hypervolume)`` after
     *every* validation of the batch, in the order validated (a batch of 25 gives 25 points),
     so "validations needed to reach X" is exact, not rounded up to a batch or generation;
     the hypervolume bounds are fixed from the maximal and minimal configs' values when the
     first batch has both (else from the whole first batch; ``reference_point`` sets the
     nadir) and never move, so curves of different tactics on one problem compare.
  3. ``seeds`` are genomes the first population starts with: the maximal config (the original
     model, so the result can mark it), the minimal config, then warm-start seeds.
  4. `Context.plateaued` is True when the hypervolume gained less than ``min_improvement``
     (relative) over the last ``patience`` batches (``batch_hv``: the value at each batch's end).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from runtime.elastic.space import SearchSpace
from runtime.search.evaluator import Entry, Validator
from runtime.search.result import Bounds, hypervolume

__all__ = ["TacticOptions", "Context"]


@dataclass(frozen=True, kw_only=True)
class TacticOptions:
    """Rule 1."""

    predictor: str = "auto"  # runtime.search.predictors.make_predictor name (auto: CV per objective)
    initial: int | None = None  # concurrent: first validated sample (default 16, <= population)
    batch_size: int | None = None  # validations per concurrent iteration (default initial / 2)
    inner_generations: int = 100  # inner search generations on the predictors
    inner_population: int = 100  # (>= 10,000 predicted evaluations per iteration)
    explore: float = 0.2  # share of each batch spent on mutations of the front (exploration)
    patience: int = 4  # stop after this many batches without hypervolume gain ...
    min_improvement: float = 1e-4  # ... of at least this (relative); 0 disables plateau stops
    warm_initial: int | None = None  # warm start: first population (default population / 5, >= 10)
    warm_transfer: bool = True  # warm start: the old archive trains the predictors (transfer.py)
    predictor_samples: float = 0.5  # "predictor" tactic: share of the budget sampled first
    popdb_threshold: float = 0.1  # PopDB: keep values chosen at least this often in clusters
    popdb_min_cluster_size: int = 5
    grid_steps: int = 4  # coarse-to-fine: levels per global multiplier
    mutation_rate: float | None = None  # per-gene reset probability (default 1/n_var)


@dataclass
class Context:
    """State shared by the tactics (Rules 2-4)."""

    space: SearchSpace
    validator: Validator
    algorithm: str
    pop_size: int
    seed: int
    options: TacticOptions
    seeds: np.ndarray
    algorithm_options: Mapping[str, Any] = field(default_factory=dict)
    nadir: np.ndarray | None = None  # reference point in minimisation form
    bounds: Bounds | None = None
    hv: list[tuple[int, float]] = field(default_factory=list)  # after every validation
    batch_hv: list[float] = field(default_factory=list)  # at the end of every batch
    front: list[Entry] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    progress: Callable[["Context"], None] | None = None
    transfer: Any = None  # a `transfer.Transfer` from the warm-start source, or None
    _seen: int = 0
    _front_F: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # front, minimisation

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def n_obj(self) -> int:
        return len(self.validator.names)

    @property
    def n_constr(self) -> int:
        return len(self.validator.constraints) + 1

    def minimization(self, entries) -> np.ndarray:
        return self.validator.minimization(self.validator.entry_values(entries))

    def after_batch(self, validator: Validator) -> None:
        """Rule 2."""
        start, new = self._seen, validator.history[self._seen:]
        self._seen = len(validator.history)
        feasible = validator.feasible(new)
        if self.bounds is None:
            corners = (self.space.canonical(self.space.max_config()),
                       self.space.canonical(self.space.min_config()))
            extremes = [e for e in new if e.ok and e.config in corners]
            ok = extremes if len(extremes) == 2 else [e for e in new if e.ok]
            if ok:
                self.bounds = Bounds.from_values(self.minimization(ok), self.nadir)
        value = self.hv[-1][1] if self.hv else 0.0
        rows = dict(zip(map(id, feasible), self.minimization(feasible))) if feasible else {}
        for i, e in enumerate(new, start + 1):
            f = rows.get(id(e))
            if f is not None and self.bounds is not None and self._joins_front(e, f):
                value = hypervolume(self._front_F, self.bounds)
            self.hv.append((i, value))
        self.batch_hv.append(value)
        if self.progress is not None:
            self.progress(self)

    def _joins_front(self, entry: Entry, f: np.ndarray) -> bool:
        """Add ``entry`` (minimisation row ``f``) to the front unless a member is at least as
        good everywhere (dominated or a later copy: neither changes the front or its volume);
        drop the members it dominates. The same front as `pareto_mask` over front + entry, in
        one pass over the front instead of all pairs."""
        F = self._front_F if len(self._front_F) else np.zeros((0, len(f)))
        if (F <= f).all(axis=1).any():
            return False
        keep = ~(f <= F).all(axis=1)
        self.front = [m for m, k in zip(self.front, keep) if k] + [entry]
        self._front_F = np.vstack([F[keep], f[None]])
        return True

    def plateaued(self) -> bool:
        """Rule 4."""
        p, tol = self.options.patience, self.options.min_improvement
        if tol <= 0 or len(self.batch_hv) <= p:
            return False
        old, new = self.batch_hv[-p - 1], self.batch_hv[-1]
        return new - old <= tol * max(abs(old), 1e-12)
