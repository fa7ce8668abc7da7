"""Tactics: how validations are spent. Each is ``run(ctx) -> None`` filling ``ctx.validator``.

Rules:
  1. ``full``: the algorithm (ask/tell) validates every individual it evaluates; duplicates of
     anything validated are rejected before they are asked for; the last generation is cut to
     the budget.
  2. ``predictor``: validate ``predictor_samples`` x budget configs (the seeds, then uniform
     random), fit predictors, run the inner search once, validate the chosen front with what is
     left; iterated on the remaining budget when the chosen front was smaller than it.
  3. ``concurrent``: validate a first sample (``initial``, default 16 or the population if
     smaller); then repeat: refit the predictors on everything validated, run the inner search
     (archive injected, `inner.py`), validate a batch (``batch_size``, default half the first
     sample, at least 4) chosen by predicted hypervolume gain plus ``explore`` mutations, all
     deduplicated against the archive; stop on budget, on a hypervolume plateau, or when no
     new config is found. Every result is validated: nothing predicted is ever returned. Small
     first samples and batches pay: predictors fitted on 16 configs already steer the next 8
     better than 34 more random ones would (`bench/search_efficiency.py`: 95% of the reference
     hypervolume in 34 validations instead of 64 with 50 and 25 on the synthetic problem, 38
     instead of 59 with real Fashion-MNIST validations).
  4. ``warm_start`` is ``concurrent`` whose first population starts from a previous search's
     Pareto set (``search(..., warm_start=...)``, re-validated on the new target): the
     corners, then old-front seeds spread evenly from one end of that front to the other,
     ``warm_initial`` configs in all (default population / 5, at least 10). The old front was
     chosen for another target, so re-validating all of it is not worth a full population;
     what the old search knew enters through its predictors instead (`transfer.py`: its
     archive trains the predictor of an objective it measured identically, and is a prior for
     one it measured on another target). ``popdb`` and ``coarse_to_fine`` live in
     `tactics_more.py`.
  5. All randomness comes from ``ctx.seed`` (pymoo's seeded generators, ``ctx.rng``).
"""
from __future__ import annotations

import math
import time

import numpy as np
from pymoo.core.termination import NoTermination

from runtime.search.context import Context
from runtime.search.inner import choose_batch, explore, fit_models, inner_search, predict
from runtime.search.names import TACTICS
from runtime.search.problem import IndexProblem, UniqueSampling, genome_keys, make_algorithm

__all__ = ["TACTICS", "run_tactic", "run_full", "run_predictor", "run_concurrent"]



def run_full(ctx: Context) -> None:
    """Rule 1."""
    v, space = ctx.validator, ctx.space
    problem = IndexProblem(space, ctx.n_obj, ctx.n_constr)
    algo = make_algorithm(ctx.algorithm, space, n_obj=ctx.n_obj, pop_size=ctx.pop_size,
                          sampling=UniqueSampling(space, ctx.seeds), known=v.known,
                          prob_var=ctx.options.mutation_rate, options=ctx.algorithm_options)
    algo.setup(problem, seed=ctx.seed, termination=NoTermination())
    stall = 0
    while v.remaining > 0 and stall < 5:
        pop = algo.ask()
        if pop is None or len(pop) == 0:
            stall += 1
            continue
        X = np.asarray(pop.get("X"), dtype=np.int64)
        stall = 0 if v.validate(X) else stall + 1
        keys = genome_keys(ctx.space, X)
        keep = [i for i, k in enumerate(keys) if k in v.known]
        if not keep:
            continue
        pop = pop[keep]
        F, G = v.entries_FG([v.known[keys[i]] for i in keep])
        pop.set("F", F, "G", G)
        algo.tell(infills=pop)


def _first_population(ctx: Context, n: int) -> np.ndarray:
    return UniqueSampling(ctx.space, ctx.seeds)._do(None, n, random_state=ctx.rng)


def run_predictor(ctx: Context) -> None:
    """Rule 2."""
    v, o = ctx.validator, ctx.options
    n0 = max(2, min(v.remaining, math.ceil(o.predictor_samples * v.budget)))
    v.validate(_first_population(ctx, n0))
    stall = 0
    while v.remaining > 0 and stall < 3:
        models = fit_models(ctx, v.history)
        X, F, G = inner_search(ctx, models, seed=int(ctx.rng.integers(2**31)))
        batch = choose_batch(ctx, X, F, G, v.remaining)
        stall = 0 if v.validate(batch) else stall + 1


FIRST_SAMPLE = 16  # the concurrent tactic's default first sample (Rule 3)


def _initial(ctx: Context) -> int:
    return ctx.options.initial or min(ctx.pop_size, FIRST_SAMPLE)


def _batch_size(ctx: Context) -> int:
    return ctx.options.batch_size or max(4, _initial(ctx) // 2)


def _warm_population(ctx: Context) -> np.ndarray:
    """Rule 4: the corners, then the old front's seeds spread evenly over what is left."""
    o = ctx.options
    n0 = o.initial or o.warm_initial or max(10, ctx.pop_size // 5)
    corners, warm = ctx.seeds[:2], ctx.seeds[2:]
    taken = set(genome_keys(ctx.space, corners))  # an old front often ends in a corner
    warm = warm[[k not in taken for k in genome_keys(ctx.space, warm)]]
    if len(warm) > n0 - 2:
        warm = warm[np.unique(np.linspace(0, len(warm) - 1, max(n0 - 2, 1)).round().astype(int))]
    return UniqueSampling(ctx.space, np.vstack([corners, warm]))._do(None, n0, random_state=ctx.rng)


def run_concurrent(ctx: Context) -> None:
    """Rule 3."""
    v, o = ctx.validator, ctx.options
    if ctx.info.get("warm_seeds"):
        v.validate(_warm_population(ctx))
    else:
        v.validate(_first_population(ctx, _initial(ctx)))
    stall = 0
    iterations = 0
    while v.remaining > 0 and stall < 3 and not ctx.plateaued():
        n = min(_batch_size(ctx), v.remaining)
        t0 = time.perf_counter()
        models = fit_models(ctx, v.history)
        t1 = time.perf_counter()
        X, F, G = inner_search(ctx, models, seed=int(ctx.rng.integers(2**31)))
        n_explore = min(n - 1, int(round(o.explore * n))) if n > 1 else 0
        batch = choose_batch(ctx, X, F, G, n - n_explore)
        batch = np.vstack([batch, explore(ctx, n - len(batch), batch)])
        ctx.info.setdefault("fit_s", []).append(t1 - t0)  # time outside validations
        ctx.info.setdefault("iteration_s", []).append(time.perf_counter() - t0)
        entries = v.validate(batch)
        if entries:
            names = [ob.name for ob in v.costly]
            pred = predict(ctx, models, ctx.space.indices([e.config for e in entries]))
            v.record_predictions(entries, pred[:, [v.names.index(n) for n in names]], names)
        stall = 0 if entries else stall + 1
        iterations += 1
    ctx.info["iterations"] = iterations
    ctx.info["stopped"] = ("budget" if v.remaining <= 0 else "plateau" if ctx.plateaued()
                           else "no new configs")


def run_tactic(name: str, ctx: Context) -> None:
    """Dispatch by name; unknown names list the valid ones."""
    from runtime.search import tactics_more

    table = {"full": run_full, "predictor": run_predictor, "concurrent": run_concurrent,
             "warm_start": run_concurrent, "popdb": tactics_more.run_popdb,
             "coarse_to_fine": tactics_more.run_coarse_to_fine}
    if name not in table:
        raise ValueError(f"unknown tactic {name!r}; valid: {list(TACTICS)}")
    table[name](ctx)
