"""`Validator`: runs validations (costly objectives) once per canonical config, through the store.

Rules:
  1. Configs are compared in canonical form (`SearchSpace.canonical_indices`): a config equal
     to one validated before in this search is never validated again; within a batch the first
     copy wins. A batch is cut to the budget left.
  2. Before computing, every objective value is looked up in the `EvaluationStore`: a value (or
     error) stored by an earlier run, killed or not, is reused and marked ``cached``. It still
     counts as a validation of this search, which is what makes a resumed search end where an
     uninterrupted one does.
  3. Validation objectives that allow it (``concurrent``, default True) run in chunks on the
     executor (any object with ``submit(fn, *args).result()``: a `concurrent.futures` executor
     or a Dask ``Client``); the others (latency) run here one config at a time, after the
     parallel work finished, so no two measurements overlap. Each finished chunk is written to
     the store at once.
  4. A config whose objective raises is retried alone; its error text is stored and the search
     goes on (``on_error="raise"`` raises `ObjectiveError` instead). A NaN value is rejected
     the same way, with a warning naming the config and objective.
  5. Cheap objectives (``validation=False``) are computed here for any candidate and cached by
     canonical config; an objective with ``evaluate_indices(X)`` whose ``space`` is the
     searched space is called on the index matrix (any other gets configs: indices of a
     restricted space, PopDB's, mean other choices).
     For validated configs their values are stored too, so a store holds whole fronts.
     ``descriptors`` (cheap objective-likes that are not objectives) are computed and cached
     the same way, when a costly objective uses them (`objectives.uses_descriptors`). The
     input of such an objective's predictor is `features(X)`: the masked encoding, then every
     cheap objective and descriptor divided by its value at the maximal config
     (`predictors.py` Rule 6); the others get ``features(X, descriptors=False)``, the
     masked encoding alone.
  6. Objective values enter pymoo as minimisation columns (maximised ones negated), in the
     order given; ``constraints`` ``{name: ("<=" | ">=", bound)}`` become G <= 0 columns plus a
     last column that is 1 for a failed config.
"""
from __future__ import annotations

import math
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.elastic.space import SearchSpace, SubnetConfig
from runtime.search.objectives import uses_descriptors
from runtime.search.store import EvaluationStore, Row, config_key, settings_key

__all__ = ["Entry", "Validator", "ObjectiveError", "parse_constraints"]


class ObjectiveError(RuntimeError):
    """An objective failed or returned NaN for a config (with ``on_error="raise"``)."""


@dataclass(frozen=True)
class Entry:
    """One validated config: its canonical form, values by objective (empty when it failed)."""

    config: SubnetConfig
    values: Mapping[str, float]
    error: str | None = None
    cost_s: float = 0.0
    cached: bool = False
    index: int = -1
    predicted: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out = {"config": dict(self.config), "values": dict(self.values), "index": self.index,
               "cost_s": round(self.cost_s, 6), "cached": self.cached}
        if self.error:
            out["error"] = self.error
        if self.predicted:
            out["predicted"] = dict(self.predicted)
        return out


def parse_constraints(constraints: Mapping[str, Any] | None, names: Sequence[str]
                      ) -> list[tuple[str, str, float]]:
    """``{name: (op, bound)}`` as a list, checked against the objective names (Rule 6)."""
    out = []
    for name, spec in (constraints or {}).items():
        if name not in names:
            raise ValueError(f"constraint on unknown objective {name!r}; objectives: {list(names)}")
        op, bound = spec
        if op not in ("<=", ">="):
            raise ValueError(f"constraint {name!r}: operator must be '<=' or '>=', got {op!r}")
        out.append((name, op, float(bound)))
    return out


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_chunk(objective: Any, configs: list) -> tuple[list[tuple[float | None, str | None]], float]:
    """Evaluate ``configs``; on failure evaluate them one by one to isolate the bad ones (Rule 4).

    Module level so process pools and Dask can pickle it."""
    t0 = time.perf_counter()
    try:
        values = [(float(v), None) for v in objective.evaluate(configs)]
        if len(values) != len(configs):
            raise ValueError(f"objective {objective.name!r} returned {len(values)} values for "
                             f"{len(configs)} configs")
    except Exception:
        values = []
        for c in configs:
            try:
                values.append((float(objective.evaluate([c])[0]), None))
            except Exception as exc:
                values.append((None, _error_text(exc)))
    return values, time.perf_counter() - t0


class Validator:
    """Validations and cheap evaluations for one search (Rules 1-6)."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Any], *, fingerprint: str,
                 store: EvaluationStore, budget: int, executor: Any = None,
                 chunk_size: int | None = None, on_error: str = "record",
                 constraints: Mapping[str, Any] | None = None, search_id: str | None = None,
                 on_batch: Callable[["Validator"], None] | None = None,
                 descriptors: Sequence[Any] = ()):
        if on_error not in ("record", "raise"):
            raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
        self.space, self.objectives = space, list(objectives)
        self.names = [o.name for o in self.objectives]
        self.sign = np.array([1.0 if o.minimize else -1.0 for o in self.objectives])
        self.costly = [o for o in self.objectives if o.validation]
        self.cheap_objectives = [o for o in self.objectives if not o.validation]
        self._uses_descriptors = {o.name for o in self.costly if uses_descriptors(o)}
        # Rule 5: descriptors are computed only when some costly objective uses them
        self.descriptors = [d for d in descriptors
                            if self._uses_descriptors and d.name not in self.names]
        self._computed = self.cheap_objectives + self.descriptors
        self._descriptor_scale: np.ndarray | None = None
        self.fingerprint, self.store, self.budget = fingerprint, store, int(budget)
        self.executor, self.chunk_size, self.on_error = executor, chunk_size, on_error
        self.constraints = parse_constraints(constraints, self.names)
        self.search_id, self.on_batch = search_id, on_batch
        self.history: list[Entry] = []
        self.known: dict[bytes, Entry] = {}
        self._cheap_cache: dict[bytes, np.ndarray] = {}

    @property
    def remaining(self) -> int:
        return self.budget - len(self.history)

    def keys(self, indices: np.ndarray) -> list[bytes]:
        from runtime.search.problem import genome_keys  # one definition of a canonical key

        return genome_keys(self.space, indices)

    def is_known(self, indices: np.ndarray) -> np.ndarray:
        return np.array([k in self.known for k in self.keys(indices)], dtype=bool)

    # -- validations -----------------------------------------------------------------------
    def validate(self, indices: np.ndarray) -> list[Entry]:
        """Validate new canonical configs among ``indices`` (Rules 1-4); returns the new entries."""
        indices = self.space.canonical_indices(np.asarray(indices, dtype=np.int64).reshape(
            -1, len(self.space)))
        fresh, seen = [], set()
        for row, key in zip(indices, self.keys(indices)):
            if key not in self.known and key not in seen:
                seen.add(key)
                fresh.append(row)
        fresh = fresh[:max(self.remaining, 0)]
        if not fresh:
            return []
        configs = [self.space.decode(row.tolist()) for row in fresh]
        values, errors, cost, cached = self._costly_values(configs)
        cheap = self.cheap_values(np.array(fresh))
        self.store.put([Row(self.fingerprint, o.name, settings_key(getattr(o, "settings", {})),
                            config_key(c), float(cheap[i][j]), 0.0, "validated",
                            search=self.search_id)
                        for j, o in enumerate(self.cheap_objectives) for i, c in enumerate(configs)])
        entries = []
        for i, c in enumerate(configs):
            vals = {}
            for o in self.objectives:
                vals[o.name] = values[i].get(o.name) if o.validation else float(cheap[i][
                    self.cheap_objectives.index(o)])
            error = errors[i] or self._nan_error(c, vals)
            entry = Entry(c, {} if error else vals, error, cost[i], cached[i], len(self.history))
            self.history.append(entry)
            self.known[self.keys(fresh[i][None])[0]] = entry
            entries.append(entry)
        if self.on_batch is not None:
            self.on_batch(self)
        return entries

    def _nan_error(self, config: SubnetConfig, values: Mapping[str, float | None]) -> str | None:
        bad = [n for n, v in values.items() if v is None or math.isnan(v)]
        if not bad:
            return None
        text = f"objective {bad[0]!r} returned NaN for config {dict(config)}: value rejected"
        if self.on_error == "raise":
            raise ObjectiveError(text)
        warnings.warn(text, RuntimeWarning, stacklevel=3)
        return text

    def _costly_values(self, configs: list[SubnetConfig]):
        n = len(configs)
        values: list[dict[str, float]] = [{} for _ in range(n)]
        errors: list[str | None] = [None] * n
        cost, cached = [0.0] * n, [True] * n
        keys = [config_key(c) for c in configs]
        todo: dict[str, list[int]] = {}
        for o in self.costly:  # Rule 2
            stored = self.store.get(self.fingerprint, o.name, settings_key(getattr(o, "settings", {})),
                                    keys)
            for i, k in enumerate(keys):
                row = stored.get(k)
                if row is None:
                    todo.setdefault(o.name, []).append(i)
                    cached[i] = False
                elif row.error:
                    errors[i] = errors[i] or row.error
                else:
                    values[i][o.name] = row.value
        parallel = [o for o in self.costly if getattr(o, "concurrent", True) and o.name in todo]
        serial = [o for o in self.costly if not getattr(o, "concurrent", True) and o.name in todo]
        self._run(parallel, todo, configs, keys, values, errors, cost, executor=self.executor)
        self._run(serial, todo, configs, keys, values, errors, cost, executor=None)  # Rule 3
        return values, errors, cost, cached

    def _chunks(self, idx: list[int], executor: Any) -> list[list[int]]:
        size = self.chunk_size or (len(idx) if executor is None else
                                   max(1, math.ceil(len(idx) / _workers(executor))))
        return [idx[i:i + size] for i in range(0, len(idx), size)]

    def _run(self, objectives, todo, configs, keys, values, errors, cost, *, executor) -> None:
        for o in objectives:
            chunks = self._chunks(todo[o.name], executor)
            if executor is None:
                results = ((chunk, run_chunk(o, [configs[i] for i in chunk])) for chunk in chunks)
            else:
                futures = [(chunk, executor.submit(run_chunk, o, [configs[i] for i in chunk]))
                           for chunk in chunks]
                results = ((chunk, f.result()) for chunk, f in futures)
            skey = settings_key(getattr(o, "settings", {}))
            for chunk, (pairs, seconds) in results:
                rows = []
                for i, (value, error) in zip(chunk, pairs):
                    if value is not None and math.isnan(value):  # Rule 4
                        value, error = None, (f"objective {o.name!r} returned NaN for config "
                                              f"{dict(configs[i])}: value rejected")
                        if self.on_error != "raise":
                            warnings.warn(error, RuntimeWarning, stacklevel=2)
                    if error is not None and self.on_error == "raise":
                        raise ObjectiveError(f"objective {o.name!r} failed for config "
                                             f"{dict(configs[i])}: {error}")
                    cost[i] += seconds / len(chunk)
                    if error is not None:
                        errors[i] = errors[i] or error
                    else:
                        values[i][o.name] = value
                    rows.append(Row(self.fingerprint, o.name, skey, keys[i], value,
                                    seconds / len(chunk), "validated", error, search=self.search_id))
                self.store.put(rows)  # Rule 3: as each chunk finishes

    def record_predictions(self, entries: Sequence[Entry], predicted: np.ndarray,
                           names: Sequence[str]) -> None:
        """Store what the predictors said for configs that were then validated."""
        rows = [Row(self.fingerprint, n, settings_key(getattr(self.objectives[self.names.index(n)],
                                                              "settings", {})),
                    config_key(e.config), float(predicted[i, j]), 0.0, "predicted",
                    search=self.search_id)
                for i, e in enumerate(entries) for j, n in enumerate(names)]
        self.store.put(rows)

    # -- cheap objectives and pymoo columns ------------------------------------------------
    def cheap_values(self, indices: np.ndarray) -> np.ndarray:
        """(n, n_cheap) values of the cheap objectives, cached by canonical config (Rule 5)."""
        return self._computed_values(indices)[:, :len(self.cheap_objectives)]

    def n_descriptors(self, objective: Any) -> int:
        """Descriptor columns `features` appends for ``objective`` (Rule 5)."""
        return len(self._computed) if objective.name in self._uses_descriptors else 0

    def n_features(self, objective: Any) -> int:
        """Columns of ``objective``'s predictor input: the first ones of `features` (Rule 5)."""
        return len(self.space) + self.n_descriptors(objective)

    def features(self, indices: np.ndarray, descriptors: bool | None = None) -> np.ndarray:
        """A predictor's input (Rule 5): the masked encoding, then (``descriptors``; None: when
        some costly objective uses them) the scaled descriptor columns."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1, len(self.space))
        encoded = self.space.features(indices)
        if descriptors is None:
            descriptors = bool(self._uses_descriptors)
        if not self._computed or not descriptors:
            return encoded
        if self._descriptor_scale is None:
            top = self._computed_values(np.array([self.space.encode(self.space.max_config())]))[0]
            self._descriptor_scale = np.where(np.abs(top) > 1e-12, np.abs(top), 1.0)
        return np.hstack([encoded, self._computed_values(indices) / self._descriptor_scale])

    def _computed_values(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1, len(self.space))
        out = np.zeros((len(indices), len(self._computed)))
        if not self._computed:
            return out
        keys = self.keys(indices)
        missing = [i for i, k in enumerate(keys) if k not in self._cheap_cache]
        if missing:
            canon = self.space.canonical_indices(indices[missing])
            cols = []
            for o in self._computed:
                if hasattr(o, "evaluate_indices") and getattr(o, "space", None) is self.space:
                    cols.append(np.asarray(o.evaluate_indices(canon), dtype=float))
                else:
                    cols.append(np.array(o.evaluate([self.space.decode(r.tolist()) for r in canon]),
                                         dtype=float))
            block = np.stack(cols, axis=1)
            for i, row in zip(missing, block):
                self._cheap_cache[keys[i]] = row
        return np.stack([self._cheap_cache[k] for k in keys])

    def minimization(self, values: np.ndarray) -> np.ndarray:
        """Columns in objective order, maximised ones negated (Rule 6)."""
        return np.asarray(values, dtype=float) * self.sign

    def entry_values(self, entries: Sequence[Entry]) -> np.ndarray:
        """(n, n_obj) natural values of successful entries."""
        return np.array([[e.values[n] for n in self.names] for e in entries], dtype=float
                        ).reshape(len(entries), len(self.names))

    def pymoo_columns(self, values: np.ndarray, failed: np.ndarray | None = None):
        """(F, G) for pymoo from natural values; failed rows get F=0 and G_fail=1 (Rule 6)."""
        values = np.asarray(values, dtype=float).reshape(-1, len(self.names))
        failed = np.zeros(len(values), dtype=bool) if failed is None else np.asarray(failed)
        F = np.where(failed[:, None], 0.0, self.minimization(values))
        G = [np.where(failed, 0.0, (values[:, self.names.index(n)] - b) if op == "<=" else
                      (b - values[:, self.names.index(n)])) for n, op, b in self.constraints]
        G.append(failed.astype(float))
        return F, np.stack(G, axis=1)

    def entries_FG(self, entries: Sequence[Entry]):
        vals = np.array([[e.values.get(n, 0.0) for n in self.names] for e in entries],
                        dtype=float).reshape(len(entries), len(self.names))
        return self.pymoo_columns(vals, np.array([not e.ok for e in entries], dtype=bool))

    def feasible(self, entries: Sequence[Entry]) -> list[Entry]:
        """Successful entries meeting every constraint."""
        ok = [e for e in entries if e.ok]
        if not ok:
            return []
        _, G = self.entries_FG(ok)
        return [e for e, g in zip(ok, G) if np.all(g <= 0)]


def _workers(executor: Any) -> int:
    n = getattr(executor, "_max_workers", None)
    if n:
        return int(n)
    ncores = getattr(executor, "ncores", None)  # dask Client
    if callable(ncores):
        try:
            return max(1, sum(ncores().values()))
        except Exception:
            return 1
    return 1
