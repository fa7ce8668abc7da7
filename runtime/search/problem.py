"""pymoo pieces over `SearchSpace` choice indices: problem, operators, duplicates, algorithms.

Rules:
  1. A genome is the vector of choice indices of `SearchSpace.encode` (ints, 0 = maximal).
  2. `RandomReset` mutation replaces each gene with probability ``prob_var`` (default 1/n_var)
     by a different value of the same dimension, and always changes at least one gene that is
     relevant for the individual (a change of an irrelevant gene builds the same sub-network).
     Crossover is uniform (pymoo ``UX``). pymoo's PM with rounding almost never changes a
     3-valued gene, which is why neither PM nor SBX is used.
  3. `CanonicalDuplicates` compares canonical genomes and also rejects anything in ``known``
     (a live mapping of canonical keys: everything validated so far), not just the population.
  4. `make_algorithm(name, ...)`: nsga2 (default), rnsga2 (``ref_points`` in minimisation
     space), agemoea (needs numba: extra ``agemoea``), nsga3 and unsga3 (Das-Dennis reference
     directions sized to the population), random (uniform unique genomes, for baselines). All
     take the seed through ``setup(problem, seed=...)``; an unknown name lists the valid ones.
  5. `IndexProblem` evaluates a genome matrix with a vectorised ``fn(X) -> (F, G)``; tactics
     that validate drive the algorithms by ask/tell and never call it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.ux import UX

from runtime.elastic.space import SearchSpace
from runtime.search.names import ALGORITHMS

__all__ = ["ALGORITHMS", "IndexProblem", "RandomReset", "UniqueSampling", "CanonicalDuplicates",
           "RandomSearch", "make_algorithm", "genome_keys"]



def genome_keys(space: SearchSpace, X: np.ndarray) -> list[bytes]:
    """Hashable canonical keys of genomes (Rule 3)."""
    canon = space.canonical_indices(np.asarray(X, dtype=np.int64).reshape(-1, len(space)))
    return [row.tobytes() for row in canon.astype(np.int8 if canon.max(initial=0) < 127 else np.int64)]


class IndexProblem(Problem):
    """Rule 5."""

    def __init__(self, space: SearchSpace, n_obj: int, n_constr: int,
                 fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None):
        sizes = np.array([len(d.choices) for d in space])
        super().__init__(n_var=len(space), n_obj=n_obj, n_ieq_constr=n_constr, xl=np.zeros(len(sizes)),
                         xu=sizes - 1, vtype=int)
        self.space, self.fn, self.sizes = space, fn, sizes

    def _evaluate(self, X, out, *args, **kwargs):
        if self.fn is None:
            raise RuntimeError("this problem is driven by ask/tell; evaluations come from the tactic")
        F, G = self.fn(np.asarray(X, dtype=np.int64))
        out["F"], out["G"] = F, G


class UniqueSampling(Sampling):
    """Given rows first (e.g. the maximal config, warm-start seeds), then uniform random genomes."""

    def __init__(self, space: SearchSpace, first: np.ndarray | None = None):
        super().__init__()
        self.space = space
        self.first = np.zeros((0, len(space)), dtype=np.int64) if first is None else \
            np.asarray(first, dtype=np.int64).reshape(-1, len(space))

    def _do(self, problem, n_samples, random_state=None, **kwargs):
        rows, seen = [], set()
        for row, key in zip(self.first, genome_keys(self.space, self.first)):
            if key not in seen and len(rows) < n_samples:
                seen.add(key)
                rows.append(row)
        sizes = np.array([len(d.choices) for d in self.space])
        for _ in range(100):
            if len(rows) >= n_samples:
                break
            cand = random_state.integers(0, sizes, size=(2 * (n_samples - len(rows)) + 4, len(sizes)))
            for row, key in zip(cand, genome_keys(self.space, cand)):
                if key not in seen and len(rows) < n_samples:
                    seen.add(key)
                    rows.append(row)
        return np.array(rows, dtype=np.int64).reshape(-1, len(sizes))


class RandomReset(Mutation):
    """Rule 2."""

    def __init__(self, space: SearchSpace, prob_var: float | None = None):
        super().__init__(prob=1.0)
        self.space, self.rate = space, prob_var

    def _do(self, problem, X, random_state=None, **kwargs):
        X = np.asarray(X, dtype=np.int64).copy()
        n, d = X.shape
        sizes = np.array([len(dim.choices) for dim in self.space])
        rate = self.rate if self.rate is not None else 1.0 / d
        mask = random_state.random((n, d)) < rate
        relevant = self.space.relevance(X) & (sizes > 1)
        for i in np.flatnonzero(~(mask & relevant).any(axis=1)):  # force one relevant change
            options = np.flatnonzero(relevant[i])
            if len(options):
                mask[i, random_state.choice(options)] = True
        mask &= sizes > 1
        shift = random_state.integers(1, np.maximum(sizes, 2), size=(n, d))
        return np.where(mask, (X + shift) % sizes, X)


class CanonicalDuplicates(DuplicateElimination):
    """Rule 3."""

    def __init__(self, space: SearchSpace, known: Mapping[bytes, Any] | None = None):
        super().__init__()
        self.space, self.known = space, known if known is not None else {}

    def _do(self, pop, other, is_duplicate):
        keys = genome_keys(self.space, pop.get("X"))
        if other is None:
            seen: set[bytes] = set()
            for i, k in enumerate(keys):
                is_duplicate[i] = k in seen or k in self.known
                seen.add(k)
        else:
            others = set(genome_keys(self.space, other.get("X")))
            for i, k in enumerate(keys):
                is_duplicate[i] = is_duplicate[i] or k in others
        return is_duplicate


class RandomSearch:
    """Uniform random unique genomes through the ask/tell interface (Rule 4)."""

    def __init__(self, space: SearchSpace, pop_size: int, sampling: UniqueSampling,
                 eliminate_duplicates: CanonicalDuplicates):
        self.space, self.pop_size = space, pop_size
        self.sampling, self.dups = sampling, eliminate_duplicates
        self.pop = Population.empty()
        self._first = True

    def setup(self, problem, seed=None, **kwargs) -> "RandomSearch":
        self.problem, self.random_state = problem, np.random.default_rng(seed)
        return self

    def ask(self) -> Population:
        sizes = np.array([len(d.choices) for d in self.space])
        if self._first:
            self._first = False
            X = self.sampling._do(self.problem, self.pop_size, random_state=self.random_state)
        else:
            X = self.random_state.integers(0, sizes, size=(3 * self.pop_size, len(sizes)))
        pop = self.dups.do(Population.new(X=X))
        return pop[:self.pop_size]

    def tell(self, infills: Population | None = None, **kwargs) -> None:
        if infills is not None and len(infills):
            self.pop = Population.merge(self.pop, infills)


def _ref_dirs(n_obj: int, pop_size: int) -> np.ndarray:
    from pymoo.util.ref_dirs import get_reference_directions

    partitions = 1
    while True:  # the most Das-Dennis directions that fit the population
        from math import comb
        if comb(partitions + 1 + n_obj - 1, n_obj - 1) > pop_size:
            break
        partitions += 1
    return get_reference_directions("das-dennis", n_obj, n_partitions=partitions)


def make_algorithm(name: str, space: SearchSpace, *, n_obj: int, pop_size: int,
                   sampling: UniqueSampling, known: Mapping[bytes, Any] | None = None,
                   prob_var: float | None = None, options: Mapping[str, Any] | None = None):
    """A pymoo algorithm (or `RandomSearch`) with categorical operators (Rule 4)."""
    options = dict(options or {})
    dups = CanonicalDuplicates(space, known)
    if name == "random":
        return RandomSearch(space, pop_size, sampling, dups)
    common = dict(sampling=sampling, crossover=UX(), mutation=RandomReset(space, prob_var),
                  eliminate_duplicates=dups)
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2
        return NSGA2(pop_size=pop_size, **common, **options)
    if name == "rnsga2":
        from pymoo.algorithms.moo.rnsga2 import RNSGA2
        ref = options.pop("ref_points", None)
        if ref is None:
            raise ValueError("rnsga2 needs reference points: algorithm_options={'ref_points': "
                             "[[f1, f2, ...]]} in minimisation form (maximised objectives negated)")
        return RNSGA2(ref_points=np.atleast_2d(np.asarray(ref, dtype=float)), pop_size=pop_size,
                      **{"epsilon": 0.01, **options}, **common)
    if name == "agemoea":
        from pymoo.algorithms.moo.age import AGEMOEA
        return AGEMOEA(pop_size=pop_size, **common, **options)
    if name in ("nsga3", "unsga3"):
        from pymoo.algorithms.moo.nsga3 import NSGA3
        from pymoo.algorithms.moo.unsga3 import UNSGA3
        ref_dirs = options.pop("ref_dirs", None)
        ref_dirs = _ref_dirs(n_obj, pop_size) if ref_dirs is None else np.asarray(ref_dirs)
        cls = NSGA3 if name == "nsga3" else UNSGA3
        return cls(ref_dirs=ref_dirs, pop_size=max(pop_size, len(ref_dirs)), **common, **options)
    raise ValueError(f"unknown algorithm {name!r}; valid: {list(ALGORITHMS)}")
