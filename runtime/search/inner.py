"""The predictor side of the concurrent and predictor tactics: fit, inner search, batch choice.

Rules:
  1. `fit_models` fits one predictor per costly objective on every successful validated entry
     (`Validator.features`: masked encoding and descriptors -> value); cheap objectives are
     never predicted, they are computed.
  2. `inner_search` runs the tactic's algorithm on predicted values for ``inner_generations``
     generations of ``inner_population``: its first population is the validated archive's best
     (by non-dominated rank, true values, injected as already evaluated), topped up with random
     genomes; offspring that equal a validated config are rejected (`CanonicalDuplicates`).
     It returns the final population's genomes not yet validated, with predicted (F, G).
  3. `choose_batch` picks, greedily, the candidates whose predicted values add the most
     hypervolume to the validated front; when nothing adds any, the remaining picks spread
     along the predicted front by crowding distance.
  4. `explore` adds mutations (1-3 relevant genes reset) of validated front members that are
     neither validated nor already chosen.
"""
from __future__ import annotations

import numpy as np
from pymoo.core.termination import NoTermination
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from sklearn.base import clone

from runtime.search.context import Context
from runtime.search.fastga import fast_nsga2
from runtime.search.predictors import make_predictor
from runtime.search.problem import IndexProblem, RandomReset, UniqueSampling, genome_keys, \
    make_algorithm
from runtime.search.result import hypervolume, pareto_mask
from runtime.search.transfer import PriorResidual

__all__ = ["fit_models", "predict", "inner_search", "choose_batch", "explore"]


def fit_models(ctx: Context, entries) -> dict:
    """Rule 1 (and `transfer.py` Rules 2-3 when the search was warm-started)."""
    v, t = ctx.validator, ctx.transfer
    ok = [e for e in entries if e.ok]
    rows = ctx.space.indices([e.config for e in ok])
    full = v.features(rows)
    models = {}
    for o in v.costly:
        X = full[:, :v.n_features(o)]
        base = make_predictor(ctx.options.predictor, descriptors=v.n_descriptors(o))
        y = np.array([e.values[o.name] for e in ok], dtype=float)
        if t is not None and o.name in t.priors:
            models[o.name] = PriorResidual(base, t.priors[o.name]).fit(X, y)
        elif t is not None and o.name in t.rows:
            old, old_y = t.rows[o.name]
            fresh = ~v.is_known(ctx.space.indices(old))  # a new value replaces an old one
            Xo = v.features(ctx.space.indices(old)[fresh], v.n_descriptors(o) > 0)
            models[o.name] = clone(base).fit(np.vstack([Xo, X]), np.concatenate([old_y[fresh], y]))
        else:
            models[o.name] = clone(base).fit(X, y)
    return models


def predict(ctx: Context, models: dict, X: np.ndarray) -> np.ndarray:
    """(n, n_obj) natural values: predicted for costly objectives, computed for cheap ones."""
    v = ctx.validator
    X = np.asarray(X, dtype=np.int64)
    feats = v.features(X)
    cheap = v.cheap_values(X)
    cols = []
    for o in v.objectives:
        if o.validation:
            cols.append(models[o.name].predict(feats[:, :v.n_features(o)]))
        else:
            cols.append(cheap[:, v.cheap_objectives.index(o)])
    return np.stack(cols, axis=1)


def _ranked(ctx: Context, entries, n: int):
    F, G = ctx.validator.entries_FG(entries)
    cv = np.maximum(G, 0).sum(axis=1)
    order = []
    feasible = np.flatnonzero(cv <= 0)
    if len(feasible):
        fronts = NonDominatedSorting().do(F[feasible])
        order = [feasible[i] for front in fronts for i in front]
    order += sorted(np.flatnonzero(cv > 0), key=lambda i: cv[i])
    return [entries[i] for i in order[:n]]


def inner_search(ctx: Context, models: dict, seed: int):
    """Rule 2: (genomes, F, G) of the final inner population that are not validated."""
    v, o, space = ctx.validator, ctx.options, ctx.space
    archive = _ranked(ctx, v.history, o.inner_population)
    first = space.indices([e.config for e in archive]) if archive else None
    sampling = UniqueSampling(space, first)

    def evaluate(X):
        return v.pymoo_columns(predict(ctx, models, X))

    if ctx.algorithm in ("nsga2", "random"):  # the vectorised NSGA-II (see fastga.py)
        rng = np.random.default_rng(seed)
        X = sampling._do(None, o.inner_population, random_state=rng)
        F, G = evaluate(X)
        if archive:  # injected: true values for the validated archive
            F[:len(archive)], G[:len(archive)] = v.entries_FG(archive)
        X, F, G = fast_nsga2(space, evaluate, X, F, G, generations=o.inner_generations, rng=rng,
                             known=v.known, prob_var=o.mutation_rate)
    else:
        X, F, G = _pymoo_inner(ctx, evaluate, sampling, archive, first, seed)
    new = ~v.is_known(X)
    return X[new], F[new], G[new]


def _pymoo_inner(ctx: Context, evaluate, sampling, archive, first, seed: int):
    """The inner search with a pymoo algorithm by name, archive injected by ask/tell."""
    v, o, space = ctx.validator, ctx.options, ctx.space
    problem = IndexProblem(space, ctx.n_obj, ctx.n_constr, evaluate)
    algo = make_algorithm(ctx.algorithm, space, n_obj=ctx.n_obj, pop_size=o.inner_population,
                          sampling=sampling, known={}, prob_var=o.mutation_rate,
                          options=ctx.algorithm_options)
    algo.setup(problem, seed=seed, termination=NoTermination())
    dups = algo.eliminate_duplicates if hasattr(algo, "eliminate_duplicates") else None
    for gen in range(o.inner_generations):
        pop = algo.ask()
        X = np.asarray(pop.get("X"), dtype=np.int64)
        F, G = evaluate(X)
        if gen == 0 and archive:  # injected: true values for the validated archive
            truth = dict(zip(genome_keys(space, first), archive))
            keys = genome_keys(space, X)
            rows = [i for i, k in enumerate(keys) if k in truth]
            if rows:
                tF, tG = v.entries_FG([truth[keys[i]] for i in rows])
                F[rows], G[rows] = tF, tG
            if dups is not None:
                dups.known = v.known  # from now on offspring never repeat a validated config
        pop.set("F", F, "G", G)
        algo.tell(infills=pop)
    return (np.asarray(algo.pop.get("X"), dtype=np.int64), np.asarray(algo.pop.get("F")),
            np.asarray(algo.pop.get("G")))


def _crowding(F: np.ndarray) -> np.ndarray:
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    return calc_crowding_distance(F) if len(F) > 2 else np.full(len(F), np.inf)


def choose_batch(ctx: Context, X: np.ndarray, F: np.ndarray, G: np.ndarray, n: int) -> np.ndarray:
    """Rule 3: at most ``n`` rows of X."""
    if n <= 0 or len(X) == 0:
        return X[:0]
    feasible = np.flatnonzero((G <= 0).all(axis=1))
    base = ctx.minimization(ctx.front) if ctx.front else np.zeros((0, F.shape[1]))
    bounds = ctx.bounds
    chosen: list[int] = []
    current = hypervolume(base, bounds) if bounds is not None and len(base) else 0.0
    pool = list(feasible)
    while pool and len(chosen) < n and bounds is not None:
        gains = [hypervolume(np.vstack([base, F[i][None]]), bounds) - current for i in pool]
        best = int(np.argmax(gains))
        if gains[best] <= 1e-12:
            break
        i = pool.pop(best)
        chosen.append(i)
        base = np.vstack([base, F[i][None]])
        current += gains[best]
    rest = [i for i in (list(feasible) + list(np.flatnonzero(~(G <= 0).all(axis=1))))
            if i not in chosen]
    if rest and len(chosen) < n:
        nd = [i for i, keep in zip(rest, pareto_mask(F[rest])) if keep]
        crowd = _crowding(F[nd]) if nd else np.zeros(0)
        order = [nd[j] for j in np.argsort(-crowd, kind="stable")]
        order += [i for i in rest if i not in set(order)]
        chosen += order[:n - len(chosen)]
    return X[chosen]


def explore(ctx: Context, n: int, avoid: np.ndarray) -> np.ndarray:
    """Rule 4."""
    if n <= 0:
        return np.zeros((0, len(ctx.space)), dtype=np.int64)
    v, space = ctx.validator, ctx.space
    parents = ctx.front or [e for e in v.history if e.ok]
    if not parents:
        return UniqueSampling(space)._do(None, n, random_state=ctx.rng)
    P = space.indices([parents[i].config for i in ctx.rng.integers(0, len(parents), 4 * n)])
    mutation = RandomReset(space, prob_var=ctx.rng.integers(1, 4) / len(space))
    X = mutation._do(None, P, random_state=ctx.rng)
    taken = set(genome_keys(space, avoid)) if len(avoid) else set()
    out = []
    for row, key in zip(X, genome_keys(space, X)):
        if key not in v.known and key not in taken and len(out) < n:
            taken.add(key)
            out.append(row)
    return np.array(out, dtype=np.int64).reshape(-1, len(space))
