"""Predictors follow scikit-learn's conventions and rank held-out sub-networks well."""
import numpy as np
import pytest
from sklearn.base import clone

from runtime.search import PREDICTORS, make_predictor, predictor_report
from tests.search_helpers import problem


def _data(n, seed=0):
    p = problem(noise=0.0)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, size=(n, len(p.space)))
    X[:, [p.space.names.index(f"depth:s{s}") for s in range(3)]] %= 2  # depth has 2 choices here
    return p.space.features(X), p.accuracy_of(X), p.macs_of(X)


@pytest.mark.parametrize("name", PREDICTORS)
def test_sklearn_conventions(name):
    est = make_predictor(name)
    params = est.get_params()
    assert clone(est).get_params().keys() == params.keys()
    assert not [k for k in vars(est) if k.endswith("_")]  # __init__ only stores arguments
    F, acc, _ = _data(60)
    assert est.fit(F, acc) is est
    assert [k for k in vars(est) if k.endswith("_")]
    assert est.predict(F).shape == (60,)


@pytest.mark.parametrize("name", ["auto", "ridge2", "svr", "gbr", "ensemble"])
def test_rank_held_out_accuracy(name):
    F, acc, _ = _data(400)
    r = predictor_report(make_predictor(name), F[:300], acc[:300], F[300:], acc[300:])
    assert r.n_train == 300 and r.n_test == 100
    assert r.kendall_tau > 0.6 and r.mape < 3.0


def test_auto_picks_per_objective_by_cross_validation_and_predicts_with_its_choice():
    F, acc, macs = _data(200)
    additive = make_predictor("auto").fit(F, F @ np.linspace(1.0, 2.0, F.shape[1]))
    assert additive.chosen_ in ("ridge", "ridge1h")  # both linear; svr is not
    assert additive.cv_error_[additive.chosen_] < additive.cv_error_["svr"]
    saturating = make_predictor("auto").fit(F, acc)
    assert saturating.chosen_ == min(saturating.cv_error_, key=saturating.cv_error_.get)
    alone = make_predictor(saturating.chosen_).fit(F, acc)
    np.testing.assert_allclose(saturating.predict(F[:20]), alone.predict(F[:20]))
    few = make_predictor("auto").fit(F[:3], acc[:3])  # fewer rows than folds: no CV
    assert few.chosen_ == "ridge" and few.cv_error_ == {}


def test_ridge2_quadratic_form_equals_the_kernel_ridge_it_folds():
    F, acc, _ = _data(100)
    est = make_predictor("ridge2").fit(F, acc)
    kernel = est.estimator_.predict(F[:30]) * est.y_scale_ + est.y_mean_
    np.testing.assert_allclose(est.predict(F[:30]), kernel, rtol=1e-8, atol=1e-8)


def test_unknown_predictor_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: .*ridge"):
        make_predictor("mlp")


def test_ridge1h_fits_per_choice_jumps_a_straight_line_cannot():
    # a latency that jumps at the middle choice of each dimension (a SIMD-unfriendly width)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 3, (240, 8))
    X = (3 - idx) / 3.0  # the masked encoding of 3-choice dimensions, all relevant
    y = 1.0 + 0.1 * idx.sum(1) + 0.3 * (idx == 1).sum(1) + rng.normal(0, 0.01, len(idx))
    line = predictor_report(make_predictor("ridge"), X[:200], y[:200], X[200:], y[200:])
    onehot = predictor_report(make_predictor("ridge1h"), X[:200], y[:200], X[200:], y[200:])
    assert onehot.mape < line.mape / 5 and onehot.kendall_tau > line.kendall_tau + 0.2
    model = make_predictor("ridge1h").fit(X[:200], y[:200])
    assert [len(lv) for lv in model.levels_] == [3] * 8
    unseen = X[200:].copy()
    unseen[:, 0] = 0.5  # a value fitting never saw: no indicator, no error
    assert np.isfinite(model.predict(unseen)).all()
    with pytest.raises(ValueError, match="degree=1"):
        type(model)(onehot=True, degree=2).fit(X, y)
