"""`search`: the one entry point that puts objectives, store, tactic and algorithm together.

Rules:
  1. ``supernet_or_space`` is a `SuperNetwork` (built-in objectives by name, fingerprint from
     its weights) or a `SearchSpace` (objectives must be objects). Names of tactics, algorithms
     and objectives are checked before anything runs; unknown ones list the valid ones.
  2. The objective order of the result, the store and the plots is exactly the order given.
  3. ``store`` is an `EvaluationStore`, a path, or None (in memory). It is bound to the
     super-network's fingerprint and the latency target; another one is refused.
     A search restarted on the same store with the same arguments re-reads every stored value
     instead of validating it again and ends with the same result.
  4. ``budget`` counts validations (distinct canonical configs whose costly objectives were
     measured or read from the store); ``population`` is the algorithm's population and the
     concurrent tactic's first sample (default: budget / 4, between 10 and 50).
  5. ``warm_start``: a `SearchResult`, an `EvaluationStore` or path (its Pareto set over the
     objectives it recorded), or a list of configs; these seed the first population (after the
     maximal and minimal configs; spread evenly along the front when there are more than fit)
     and are validated again on this search's objectives. ``tactic="warm_start"`` requires it.
     A store or a result also hands its validated archive to the predictors (`transfer.py`;
     ``options={"warm_transfer": False}`` turns that off); the old values never count as
     validations of this search.
  6. ``executor``: None (validations in this process), ``"processes"`` (a local process pool,
     shut down at the end), or any object with ``submit`` (concurrent.futures, Dask Client).
  7. ``progress=True`` shows a tqdm bar: validations, best hypervolume, ETA.
  8. ``bounds`` fixes the hypervolume normalisation (e.g. to compare a PopDB search, whose
     restricted space has other extremes, with a full-space one).
  9. A search in which every validation failed warns (RuntimeWarning, with the first error):
     its empty front is a broken objective, not a result.
 10. ``descriptors``: cheap numbers of a config that are not objectives but tell the predictors
     of hardware costs (latency) what drives them (`objectives.py` Rule 5, `predictors.py`
     Rule 6). None (default): the blocks the depth dimensions keep and, for a super-network,
     its analytic MACs and parameters; a list of cheap objective-likes replaces them; ``[]``
     turns them off. The search's cheap objectives are descriptors too.

Example:
    >>> from runtime.elastic import Dimension, SearchSpace
    >>> from runtime.search.objectives import Objective
    >>> space = SearchSpace([Dimension(f"w{i}", "width", (8, 6, 4)) for i in range(4)])
    >>> acc = Objective("acc", lambda cs: [sum(c.values()) for c in cs], minimize=False)
    >>> size = Objective("size", lambda cs: [sum(v * v for v in c.values()) for c in cs],
    ...                  validation=False)
    >>> r = search(space, [acc, size], tactic="full", budget=30, population=10, progress=False)
    >>> r.validations, r.pareto[0].values["acc"], r.pareto[-1].values["acc"]
    (30, 32.0, 16.0)
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.elastic.space import SearchSpace
from runtime.search.context import Context, TacticOptions
from runtime.search.evaluator import Validator
from runtime.search.objectives import resolve_descriptors, resolve_objectives
from runtime.search.problem import ALGORITHMS, genome_keys
from runtime.search.result import Bounds, SearchResult, pareto_mask
from runtime.search.store import EvaluationStore, fingerprint as fingerprint_of, settings_key
from runtime.search.tactics import TACTICS, run_tactic
from runtime.search.transfer import load_archive, make_transfer

__all__ = ["search", "warm_start_configs"]


def _space(obj: Any) -> tuple[SearchSpace, Any]:
    if isinstance(obj, SearchSpace):
        return obj, None
    space = getattr(obj, "space", None)
    if not isinstance(space, SearchSpace):
        raise TypeError(f"search needs a SuperNetwork or a SearchSpace, got {type(obj).__name__}")
    return space, obj


def _store(store: Any) -> EvaluationStore:
    if store is None:
        return EvaluationStore()
    if isinstance(store, EvaluationStore):
        return store
    return EvaluationStore(Path(store))


def _store_front(store: EvaluationStore) -> list[dict]:
    """Configs on the Pareto front of every objective a store recorded (Rule 5)."""
    known = store.objectives()
    values: dict[str, dict[str, float]] = {}
    failed = set()
    for row in store.rows(kind="validated"):
        if row.error or row.value is None:
            failed.add(row.config)
        else:
            values.setdefault(row.config, {})[row.objective] = row.value
    import json

    names = sorted(known)
    complete = [(c, v) for c, v in values.items() if c not in failed and all(n in v for n in names)]
    if not complete:
        return []
    F = np.array([[v[n] * (1 if known[n][1] else -1) for n in names] for _, v in complete])
    front = [(F[i, 0], json.loads(c)) for i, ((c, _), keep) in enumerate(zip(complete, pareto_mask(F)))
             if keep]
    return [c for _, c in sorted(front, key=lambda t: t[0])]  # along the first objective


def warm_start_configs(source: Any, space: SearchSpace) -> list:
    """Seed configs from a previous search (Rule 5), those valid in ``space``."""
    if source is None:
        return []
    if isinstance(source, SearchResult):
        configs = [e.config for e in source.pareto]
    elif isinstance(source, (EvaluationStore, str, os.PathLike)):
        store = source if isinstance(source, EvaluationStore) else EvaluationStore(Path(source))
        configs = _store_front(store)
    else:
        configs = list(source)
    return canonical_valid(space, configs)


def canonical_valid(space: SearchSpace, configs) -> list:
    """The canonical form of each config that is valid in ``space`` (others are dropped)."""
    out = []
    for c in configs:
        try:
            out.append(space.canonical(c))
        except ValueError:
            continue
    return out


def _check_names(tactic: str, algorithm: str, warm_start: Any) -> None:
    if tactic not in TACTICS:
        raise ValueError(f"unknown tactic {tactic!r}; valid: {list(TACTICS)}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {list(ALGORITHMS)}")
    if tactic == "warm_start" and warm_start is None:
        raise ValueError("tactic 'warm_start' needs warm_start= (a SearchResult, a store or its "
                         "path, or a list of configs)")


def _seeds(space: SearchSpace, warm: Sequence, population: int) -> np.ndarray:
    """The maximal and minimal configs, then warm seeds spread evenly along their front."""
    warm = list(warm)
    if len(warm) > population - 2:
        warm = [warm[int(i)] for i in np.unique(np.linspace(0, len(warm) - 1,
                                                            max(population - 2, 1)).round())]
    rows = [space.encode(space.max_config()), space.encode(space.min_config())] + \
        [space.encode(c) for c in warm]
    return np.array(rows, dtype=np.int64)


def _executor(executor: Any):
    if executor == "processes":
        from concurrent.futures import ProcessPoolExecutor
        return ProcessPoolExecutor(max_workers=os.cpu_count() or 1), True
    if executor is not None and not hasattr(executor, "submit"):
        raise TypeError(f"executor must have submit(fn, *args) or be 'processes', got "
                        f"{type(executor).__name__}")
    return executor, False


def _progress_bar(enabled: bool, budget: int):
    if not enabled:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=budget, desc="search", unit="val")

    def update(ctx: Context) -> None:
        bar.n = len(ctx.validator.history)
        bar.set_postfix(hv=f"{ctx.hv[-1][1]:.4f}" if ctx.hv else "-", refresh=False)
        bar.refresh()
    return bar, update


def search(supernet_or_space: Any, objectives: Sequence[Any], *, tactic: str = "concurrent",
           algorithm: str = "nsga2", budget: int = 200, population: int | None = None,
           seed: int = 0, store: Any = None, warm_start: Any = None, executor: Any = None,
           constraints: Mapping[str, Any] | None = None, progress: bool = True,
           reference_point: Sequence[float] | None = None,
           options: TacticOptions | Mapping[str, Any] | None = None,
           algorithm_options: Mapping[str, Any] | None = None, chunk_size: int | None = None,
           on_error: str = "record", fingerprint: str | None = None, bounds: Bounds | None = None,
           descriptors: Sequence[Any] | None = None, **context: Any) -> SearchResult:
    """Search sub-networks; returns the validated Pareto front and the history (Rules 1-10)."""
    _check_names(tactic, algorithm, warm_start)
    space, supernet = _space(supernet_or_space)
    objectives = resolve_objectives(objectives, supernet, **context)  # Rule 2
    options = options if isinstance(options, TacticOptions) else TacticOptions(**dict(options or {}))
    info = {}
    if tactic == "popdb":
        from runtime.search.tactics_more import popdb_space
        full_size, space = space.size, popdb_space(space, warm_start, options)
        info["space_size"] = {"restricted": float(space.size), "full": float(full_size)}
        warm_start = None
    descriptors = resolve_descriptors(descriptors, space, supernet)  # Rule 10, on the searched space
    if int(budget) < 1:
        raise ValueError(f"budget must be >= 1 validation, got {budget}")
    population = int(population or max(10, min(50, int(budget) // 4)))
    store = _store(store)
    fp = fingerprint or fingerprint_of(supernet if supernet is not None else space)
    targets = sorted({o.target.key for o in objectives if getattr(o, "target", None) is not None})
    store.bind(fp, target=",".join(targets) or None,
               objectives={o.name: getattr(o, "settings", {}) for o in objectives},
               minimize={o.name: o.minimize for o in objectives})
    params = {"tactic": tactic, "algorithm": algorithm, "budget": budget, "population": population,
              "seed": seed, "objectives": [o.name for o in objectives],
              "constraints": dict(constraints or {}), "options": options.__dict__}
    sid = store.begin_search(params)
    pool, own_pool = _executor(executor)
    validator = Validator(space, objectives, fingerprint=fp, store=store, budget=budget,
                          executor=pool, chunk_size=chunk_size, on_error=on_error,
                          constraints=constraints, search_id=sid, descriptors=descriptors)
    nadir = None if reference_point is None else validator.minimization(
        np.asarray(reference_point, dtype=float)[None])[0]
    warm = warm_start_configs(warm_start, space)
    info["warm_seeds"] = len(warm)
    transfer = make_transfer(load_archive(warm_start, space), space, objectives, fp,
                             options.predictor, validator) if warm_start is not None and options.warm_transfer else None
    if transfer is not None:
        info["transfer"] = transfer.describe()
    ctx = Context(space, validator, algorithm, population, int(seed), options,
                  _seeds(space, warm, population),
                  dict(algorithm_options or {}), nadir=nadir, bounds=bounds, info=info,
                  transfer=transfer)
    validator.on_batch = ctx.after_batch
    bar, ctx.progress = _progress_bar(progress, budget)
    try:
        run_tactic(tactic, ctx)
    finally:
        if bar is not None:
            bar.close()
        if own_pool:
            pool.shutdown()
    result = _result(ctx, tactic, algorithm, fp)
    if result.history and result.info["failed"] == len(result.history):  # Rule 9
        warnings.warn(f"every one of the {len(result.history)} validations failed, so the front is "
                      f"empty; the first error: {result.history[0].error}", RuntimeWarning,
                      stacklevel=2)
    store.finish_search(sid, {"validations": result.validations, "pareto": len(result.pareto),
                              "hypervolume": result.best_hypervolume})
    return result


def _result(ctx: Context, tactic: str, algorithm: str, fp: str) -> SearchResult:
    v = ctx.validator
    front = sorted(ctx.front, key=lambda e: tuple(ctx.minimization([e])[0]))
    ref_key = genome_keys(ctx.space, np.array([ctx.space.encode(ctx.space.max_config())]))[0]
    info = dict(ctx.info)
    info["reference"] = v.known.get(ref_key)
    info["failed"] = sum(not e.ok for e in v.history)
    info["cached"] = sum(e.cached for e in v.history)
    info["settings"] = {o.name: settings_key(getattr(o, "settings", {})) for o in v.objectives}
    return SearchResult(tuple(v.names), tuple(o.minimize for o in v.objectives), front,
                        list(v.history), list(ctx.hv), ctx.bounds, tactic, algorithm, ctx.seed,
                        fp, info)
