"""Objective predictors on the masked encoding, following scikit-learn's conventions.

Rules:
  1. ``__init__`` only stores its arguments; ``fit(X, y)`` returns self; learned attributes end
     in ``_``; ``predict(X)`` is vectorised over rows. X is `SearchSpace.features` (one column
     per dimension, 0 where the dimension is irrelevant), y one objective.
  2. Targets are standardised before fitting and restored after predicting, so one set of
     hyper-parameters serves accuracies (~70) and latencies (~1 ms) alike.
  3. Ridge (``degree=2``: kernel ridge on all pairwise products; ``onehot=True``: one indicator
     per value of each column besides the column itself), RBF SVR and gradient boosting wrap
     sklearn estimators; `EnsemblePredictor` averages several. The masked encoding is
     invertible (a column's distinct values are its dimension's choices, 0 = irrelevant), so
     the one-hot columns are learned from the training rows: a value never seen in fitting
     gets no indicator. One-hot ridge is per-choice additive: it fits latencies whose cost
     jumps between choices (channel counts that fill a SIMD vector or not), which a straight
     line through a dimension's choices cannot (MobileNetV2 OpenVINO INT8: Kendall tau 0.79
     -> 0.85 against a second measurement, `bench/predictors.py`). Each fits 1,000 samples of a
     45-dimension space in well under a second (`bench/search_efficiency.py` times it).
  4. `predictor_report` fits on the training rows and reports MAPE (percent) and Kendall's tau
     on held-out rows; `make_predictor(name)` builds one by name (unknown names list the valid).
  5. `AutoPredictor` (``"auto"``) picks, at every fit, the candidate with the lowest
     ``folds``-fold cross-validated mean absolute error on the rows it is given, so each
     objective gets its own model: an additive latency is a ridge regression's from a few
     dozen rows (``ridge1h``'s once per-choice jumps show), while a saturating accuracy is
     better served by an RBF SVR. Ties go to the first candidate. The choice is
     cross-validated on at most ``max_cv_rows`` rows (a seeded subset), so a refit on 1,000
     rows stays a fraction of a second.
  6. Descriptors: the search may append ``descriptors`` columns to the features, cheap numbers
     every config has without a validation (MACs, parameters, blocks kept: `search.py` Rule
     10). `StagedPredictor` fits a straight line on those columns first (a handful of
     coefficients, so a few rows pin it) and its base predictor on what the line leaves, over
     every column, from ``min_residual_rows`` rows on. `AutoPredictor(descriptors=k)` adds the
     staged form of each candidate to the cross-validated choice, so a latency that is mostly
     "so many ms per MAC plus so much per block" is learned from a dozen validations, and
     keeps the plain model where that cross-validates better. (Accuracy never gets descriptors
     in a search: `objectives.py` Rule 5 says why.)

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((80, 5)); y = 3 * X[:, 0] + X[:, 1] ** 2 + 10
    >>> r = predictor_report(make_predictor("ridge"), X[:60], y[:60], X[60:], y[60:])
    >>> r.kendall_tau > 0.8 and r.mape < 5
    True
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

__all__ = ["RidgePredictor", "SVRPredictor", "GBPredictor", "EnsemblePredictor", "AutoPredictor",
           "StagedPredictor", "make_predictor", "cv_error", "predictor_report", "PredictorReport", "PREDICTORS"]

PREDICTORS = ("auto", "ridge", "ridge1h", "ridge2", "svr", "gbr", "ensemble")


class _Standardised(BaseEstimator, RegressorMixin):
    """Shared fit/predict around ``_estimator()`` with standardised targets (Rule 2)."""

    def _estimator(self):
        raise NotImplementedError

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return X

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).ravel()
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        self.estimator_ = self._estimator().fit(self._transform(X), (y - self.y_mean_) / self.y_scale_)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return self.estimator_.predict(self._transform(X)) * self.y_scale_ + self.y_mean_


class RidgePredictor(_Standardised):
    """Ridge regression on the features; ``degree=2`` is kernel ridge with the polynomial kernel
    (1 + x.y)^2 (every product of two features), fitted in the dual (an n x n solve, cheap for
    45 features) and folded back into one quadratic form, so predicting 10,000 rows is a
    (10,000 x 45) x (45 x 45) product."""

    def __init__(self, alpha: float = 1.0, degree: int = 1, onehot: bool = False):
        self.alpha, self.degree, self.onehot = alpha, degree, onehot

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if not self.onehot:
            return X
        return np.hstack([X] + [(X[:, [j]] == lv[None, :]).astype(float)
                                for j, lv in enumerate(self.levels_)])

    def _estimator(self):
        if self.degree == 1:
            from sklearn.linear_model import Ridge
            return Ridge(alpha=self.alpha)
        from sklearn.kernel_ridge import KernelRidge
        return KernelRidge(alpha=self.alpha, kernel="poly", degree=2, gamma=1.0, coef0=1.0)

    def fit(self, X, y):
        if self.degree not in (1, 2):
            raise ValueError(f"degree must be 1 or 2, got {self.degree!r}")
        if self.onehot and self.degree != 1:
            raise ValueError("onehot=True needs degree=1")
        if self.onehot:  # Rule 3: the values each column takes, learned from the rows
            self.levels_ = [np.unique(col) for col in np.asarray(X, dtype=float).T]
        super().fit(X, y)
        if self.degree == 2:  # (1 + x.y)^2 summed over the dual: x'Qx + b.x + c
            Xf, a = np.asarray(self.estimator_.X_fit_, dtype=float), self.estimator_.dual_coef_.ravel()
            self.quadratic_ = Xf.T @ (a[:, None] * Xf)
            self.linear_ = 2.0 * Xf.T @ a
            self.intercept_ = float(a.sum())
        return self

    def predict(self, X):
        if self.degree == 1:
            return super().predict(X)
        X = np.asarray(X, dtype=float)
        raw = ((X @ self.quadratic_) * X).sum(axis=1) + X @ self.linear_ + self.intercept_
        return raw * self.y_scale_ + self.y_mean_


class SVRPredictor(_Standardised):
    """RBF support-vector regression."""

    def __init__(self, C: float = 3.0, epsilon: float = 0.05, gamma: str | float = "scale"):
        self.C, self.epsilon, self.gamma = C, epsilon, gamma

    def _estimator(self):
        from sklearn.svm import SVR
        return SVR(C=self.C, epsilon=self.epsilon, gamma=self.gamma)


class GBPredictor(_Standardised):
    """Gradient-boosted trees (single-threaded sklearn, deterministic for ``random_state``)."""

    def __init__(self, n_estimators: int = 100, max_depth: int = 3, learning_rate: float = 0.1,
                 subsample: float = 0.8, random_state: int = 0):
        self.n_estimators, self.max_depth = n_estimators, max_depth
        self.learning_rate, self.subsample, self.random_state = learning_rate, subsample, random_state

    def _estimator(self):
        from sklearn.ensemble import GradientBoostingRegressor
        return GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                         learning_rate=self.learning_rate, subsample=self.subsample,
                                         random_state=self.random_state)


class EnsemblePredictor(BaseEstimator, RegressorMixin):
    """Mean of several predictors' outputs."""

    def __init__(self, members: Sequence[BaseEstimator] | None = None):
        self.members = members

    def fit(self, X, y):
        members = self.members if self.members is not None else [RidgePredictor(degree=2),
                                                                  SVRPredictor()]
        self.members_ = [clone(m).fit(X, y) for m in members]
        return self

    def predict(self, X):
        return np.mean([m.predict(X) for m in self.members_], axis=0)


class StagedPredictor(BaseEstimator, RegressorMixin):
    """Rule 6: a line on the last ``descriptors`` columns, then ``base`` (a predictor name) on
    the residual over all columns.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((12, 20)); y = 3 * X[:, -1] + 0.5 * X[:, -2]
    >>> m = StagedPredictor("ridge", descriptors=2).fit(X[:8], y[:8])
    >>> bool(np.abs(m.predict(X[8:]) - y[8:]).max() < 0.2)
    True
    """

    def __init__(self, base: str = "ridge", descriptors: int = 1, min_residual_rows: int = 6):
        self.base, self.descriptors, self.min_residual_rows = base, descriptors, min_residual_rows

    def fit(self, X, y):
        from sklearn.linear_model import Ridge

        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).ravel()
        if not 0 < self.descriptors <= X.shape[1]:
            raise ValueError(f"descriptors must be between 1 and {X.shape[1]} columns, "
                             f"got {self.descriptors!r}")
        D = X[:, -self.descriptors:]
        self.line_ = Ridge(alpha=1e-3).fit(D, y)
        residual = y - self.line_.predict(D)
        self.residual_ = make_predictor(self.base).fit(X, residual) \
            if len(y) >= self.min_residual_rows else None
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        out = self.line_.predict(X[:, -self.descriptors:])
        return out if self.residual_ is None else out + self.residual_.predict(X)


class AutoPredictor(BaseEstimator, RegressorMixin):
    """Rules 5-6: the candidate with the lowest cross-validated error, refitted on every row.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 3, (40, 12)).astype(float); y = X @ rng.random(12)
    >>> AutoPredictor().fit(X, y).chosen_
    'ridge'
    """

    def __init__(self, candidates: Sequence[str] = ("ridge", "ridge1h", "svr"), folds: int = 5,
                 max_cv_rows: int = 300, descriptors: int = 0):
        self.candidates, self.folds, self.max_cv_rows = candidates, folds, max_cv_rows
        self.descriptors = descriptors

    def _make(self, name: str) -> BaseEstimator:
        if name.startswith("staged:"):
            return StagedPredictor(name.split(":", 1)[1], descriptors=self.descriptors)
        return make_predictor(name)

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float).ravel()
        names = list(self.candidates)
        if self.descriptors:  # Rule 6
            names += [f"staged:{n}" for n in self.candidates]
        errors = {}
        if len(names) > 1 and len(y) >= max(self.folds, 2):
            rows = np.arange(len(y))
            if len(y) > self.max_cv_rows:
                rows = np.random.default_rng(0).choice(len(y), self.max_cv_rows, replace=False)
            errors = {name: cv_error(lambda name=name: self._make(name), X[rows], y[rows],
                                     self.folds) for name in names}
        self.cv_error_ = errors
        if errors:
            self.chosen_ = min(errors, key=errors.get)
        else:  # too few rows to cross-validate: the line on the descriptors, when there are any
            self.chosen_ = names[len(self.candidates) if self.descriptors else 0]
        self.model_ = self._make(self.chosen_).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return self.model_.predict(X)


def cv_error(make, X: np.ndarray, y: np.ndarray, folds: int) -> float:
    """Mean absolute error of ``make()`` (a fresh estimator per fold; `clone` would unfit a
    fitted prior inside it) by seeded ``folds``-fold cross-validation."""
    from sklearn.model_selection import KFold

    err = []
    for train, test in KFold(min(folds, len(y)), shuffle=True, random_state=0).split(X):
        err.append(np.abs(make().fit(X[train], y[train]).predict(X[test]) - y[test]))
    return float(np.concatenate(err).mean())


def make_predictor(name: str = "ensemble", *, descriptors: int = 0) -> BaseEstimator:
    """A fresh predictor by name (Rule 4); ``descriptors`` trailing columns are descriptors
    (Rule 6: ``auto`` also tries the staged form of its candidates; the others use them as
    plain columns)."""
    table = {"auto": lambda: AutoPredictor(descriptors=descriptors), "ridge": lambda: RidgePredictor(),
             "ridge1h": lambda: RidgePredictor(onehot=True),
             "ridge2": lambda: RidgePredictor(alpha=10.0, degree=2),
             "svr": lambda: SVRPredictor(), "gbr": lambda: GBPredictor(),
             "ensemble": lambda: EnsemblePredictor()}
    if name not in table:
        raise ValueError(f"unknown predictor {name!r}; valid: {list(PREDICTORS)}")
    return table[name]()


@dataclass(frozen=True)
class PredictorReport:
    """Held-out quality of one predictor (Rule 4)."""

    n_train: int
    n_test: int
    mape: float
    kendall_tau: float
    fit_s: float

    def to_dict(self) -> dict:
        return {"n_train": self.n_train, "n_test": self.n_test, "mape": round(self.mape, 4),
                "kendall_tau": round(self.kendall_tau, 4), "fit_s": round(self.fit_s, 4)}


def predictor_report(predictor: BaseEstimator, X_train, y_train, X_test, y_test) -> PredictorReport:
    """Fit a clone on the training rows, score on the held-out rows (Rule 4)."""
    from scipy.stats import kendalltau

    t0 = time.perf_counter()
    model = clone(predictor).fit(X_train, y_train)
    fit_s = time.perf_counter() - t0
    y_test = np.asarray(y_test, dtype=float)
    pred = model.predict(X_test)
    mape = float(np.mean(np.abs(pred - y_test) / np.maximum(np.abs(y_test), 1e-12)) * 100)
    tau = float(kendalltau(pred, y_test).statistic)
    return PredictorReport(len(X_train), len(y_test), mape, tau, fit_s)
