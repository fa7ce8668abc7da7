"""What a previous search's validated archive tells a warm-started one about its predictors.

A warm start re-validates the old Pareto set on the new target (`search.py` Rule 5); on its own
that wastes the first population on a front chosen for another target. The old search also
validated a whole archive, and that archive is evidence for the new predictors:

Rules:
  1. `load_archive(source, space)` reads every successful validated config of a previous search
     (an `EvaluationStore` or its path, or a `SearchResult`) with its values by objective, the
     objective settings and the super-network fingerprint. A list of configs carries no values
     and gives no archive (None).
  2. Same objective (same name, same settings, same super-network fingerprint): the old values
     are measurements of the very quantity the new search validates (accuracy does not depend
     on the latency target). They become extra training rows of that objective's predictor.
     They are not validations of the new search: never in its history, front, hypervolume or
     budget; a config validated again in the new search trains on its new value only.
  3. Same name, other settings or another super-network (latency on another target): a prior.
     A predictor fitted on the old values predicts the old objective for any config; the new
     predictor is `PriorResidual`: ``a * prior(x) + b`` by least squares on the new
     validations, plus a model of what that line leaves: a ridge regression on the features
     while there are fewer than ``base_rows`` new validations (a few rows support a linear
     correction, not a kernel model), the base predictor from then on; nothing below
     ``min_residual_rows``. A prior from another target can mislead (a CPU's latency ranks a
     GPU's poorly), so the prior is kept only while it predicts the new validations better than
     the cold base predictor does, by ``folds``-fold cross-validation (mean absolute error).
  4. Objectives the archive does not hold get neither (a cold predictor).

Example:
    >>> import numpy as np
    >>> from runtime.search.predictors import cv_error, make_predictor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((200, 4)); old = X @ [4.0, 1.0, 0.5, 0.1]
    >>> prior = make_predictor("ridge").fit(X, old)
    >>> m = PriorResidual(make_predictor("svr"), prior).fit(X[:8], 2 * old[:8] + 1 + X[:8, 3])
    >>> m.use_prior_, bool(abs(m.a_ - 2) < 0.2)
    (True, True)
    >>> bool(np.abs(m.predict(X[8:]) - (2 * old[8:] + 1)).max() < 1.5)
    True
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from runtime.elastic.space import SearchSpace
from runtime.search.predictors import cv_error, make_predictor
from runtime.search.store import settings_key

__all__ = ["Archive", "load_archive", "PriorResidual", "Transfer", "make_transfer"]


@dataclass(frozen=True)
class Archive:
    """Rule 1: configs (canonical in the new space) and their old values (NaN where missing)."""

    configs: tuple
    values: Mapping[str, np.ndarray]
    settings: Mapping[str, str]
    fingerprint: str


def _from_rows(rows, settings: Mapping[str, str], fp: str, space: SearchSpace) -> Archive | None:
    from runtime.search.search import canonical_valid

    by_config: dict[str, dict[str, float]] = {}
    failed = set()
    for r in rows:
        if r.error or r.value is None:
            failed.add(r.config)
        else:
            by_config.setdefault(r.config, {})[r.objective] = r.value
    keys = [k for k in by_config if k not in failed]
    configs, values = [], {n: [] for n in settings}
    for k in keys:
        canon = canonical_valid(space, [json.loads(k)])
        if not canon:
            continue
        configs.append(canon[0])
        for n in settings:
            values[n].append(by_config[k].get(n, np.nan))
    if not configs:
        return None
    return Archive(tuple(configs), {n: np.asarray(v, dtype=float) for n, v in values.items()},
                   dict(settings), fp)


def load_archive(source: Any, space: SearchSpace) -> Archive | None:
    """Rule 1."""
    from runtime.search.result import SearchResult
    from runtime.search.store import EvaluationStore, Row

    if isinstance(source, SearchResult):
        rows = [Row(source.fingerprint, n, "", json.dumps(dict(e.config), sort_keys=True), v, 0.0)
                for e in source.history if e.ok for n, v in e.values.items()]
        return _from_rows(rows, dict(source.info.get("settings", {})), source.fingerprint, space)
    if isinstance(source, (EvaluationStore, str, os.PathLike)):
        store = source if isinstance(source, EvaluationStore) else EvaluationStore(Path(source))
        settings = {n: s for n, (s, _) in store.objectives().items()}
        return _from_rows(store.rows(kind="validated"), settings,
                          store.bound.get("fingerprint", ""), space)
    return None


class _PriorLine(BaseEstimator, RegressorMixin):
    """``a * prior(x) + b`` plus a model of the residuals (Rule 3)."""

    def __init__(self, base: BaseEstimator, prior: BaseEstimator, min_residual_rows: int = 4,
                 base_rows: int = 50):
        self.base, self.prior = base, prior
        self.min_residual_rows, self.base_rows = min_residual_rows, base_rows

    def fit(self, X, y):
        p = self.prior.predict(X)
        if len(y) >= 2 and np.ptp(p) > 1e-12:
            self.a_, self.b_ = (float(c) for c in np.polyfit(p, y, 1))
        else:  # one row (or a flat prior): a shift only
            self.a_, self.b_ = 1.0, float(np.mean(y - p)) if len(y) else 0.0
        self.residual_ = None
        if len(y) >= self.min_residual_rows:
            model = clone(self.base) if len(y) >= self.base_rows else make_predictor("ridge")
            self.residual_ = model.fit(X, y - (self.a_ * p + self.b_))
        return self

    def predict(self, X):
        out = self.a_ * self.prior.predict(X) + self.b_
        return out if self.residual_ is None else out + self.residual_.predict(X)


class PriorResidual(BaseEstimator, RegressorMixin):
    """Rule 3: a fitted ``prior`` calibrated on the new rows, or ``base`` when that predicts
    them better (``use_prior_``)."""

    def __init__(self, base: BaseEstimator, prior: BaseEstimator, min_residual_rows: int = 4,
                 base_rows: int = 50, folds: int = 5):
        self.base, self.prior = base, prior
        self.min_residual_rows, self.base_rows, self.folds = min_residual_rows, base_rows, folds

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).ravel()
        def line():
            return _PriorLine(self.base, self.prior, self.min_residual_rows, self.base_rows)

        def cold():
            return clone(self.base)

        self.use_prior_ = len(y) < max(self.folds, 2) or \
            cv_error(line, X, y, self.folds) <= cv_error(cold, X, y, self.folds)
        self.model_ = (line() if self.use_prior_ else cold()).fit(X, y)
        self.a_ = getattr(self.model_, "a_", None)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=float))


@dataclass(frozen=True)
class Transfer:
    """Per new objective: extra rows (Rule 2) or a fitted prior (Rule 3)."""

    rows: Mapping[str, tuple[tuple, np.ndarray]]  # name -> (configs, values)
    priors: Mapping[str, BaseEstimator]

    def describe(self) -> dict[str, str]:
        return {**{n: f"{len(v)} old rows" for n, (_, v) in self.rows.items()},
                **{n: "prior" for n in self.priors}}


def make_transfer(archive: Archive | None, space: SearchSpace, objectives: Sequence[Any],
                  fingerprint: str, predictor: str, validator: Any = None) -> Transfer | None:
    """Rules 2-4 for the costly objectives of the new search; ``validator`` gives each
    objective's predictor input (`Validator.features`; without one, the masked encoding)."""
    if archive is None:
        return None
    rows, priors = {}, {}
    for o in objectives:
        if not o.validation or o.name not in archive.values:
            continue  # Rule 4
        y = archive.values[o.name]
        keep = ~np.isnan(y)
        if keep.sum() < 2:
            continue
        configs = tuple(c for c, k in zip(archive.configs, keep) if k)
        same = (archive.settings.get(o.name) == settings_key(getattr(o, "settings", {}))
                and archive.fingerprint == fingerprint)
        if same:
            rows[o.name] = (configs, y[keep])
        else:
            k = validator.n_descriptors(o) if validator is not None else 0
            X = validator.features(space.indices(configs), True) if k else space.features(configs)
            priors[o.name] = make_predictor(predictor, descriptors=k).fit(X, y[keep])
    return Transfer(rows, priors) if rows or priors else None
