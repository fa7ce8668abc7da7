"""Descriptors: cheap numbers (blocks kept, MACs, params) that the predictors of hardware costs
get besides the masked encoding (objectives.py Rule 5, predictors.py Rule 6, search.py Rule 10)."""

import numpy as np
import pytest

from runtime.elastic import Dimension, SearchSpace
from runtime.search import EvaluationStore, TacticOptions, search
from runtime.search.context import Context
from runtime.search.evaluator import Validator
from runtime.search.inner import fit_models
from runtime.search.objectives import (Objective, blocks_descriptor, default_descriptors,
                                       resolve_descriptors, uses_descriptors)
from runtime.search.predictors import AutoPredictor, StagedPredictor
from tests.search_helpers import SMALL, problem, tiny_supernet


def _space():
    return SearchSpace([Dimension("d", "depth", (3, 2, 1)),
                        Dimension("w", "width", (8, 4)),
                        Dimension("e", "depth", (1, 0)),
                        Dimension("k", "kernel", (5, 3), ("e", 1))])


def test_blocks_descriptor_sums_the_relevant_depth_values():
    space = _space()
    blocks = blocks_descriptor(space)
    X = np.array([[0, 0, 0, 0], [2, 1, 1, 1], [1, 0, 0, 1]])
    assert blocks.evaluate_indices(X).tolist() == [4.0, 1.0, 3.0]
    assert blocks.evaluate([{"d": 2, "w": 8, "e": 0, "k": 5}]) == [2.0]
    assert blocks_descriptor(SearchSpace([Dimension("w", "width", (8, 4))])) is None


def test_which_objectives_use_descriptors():
    assert not uses_descriptors(Objective("accuracy", len, minimize=False))
    assert uses_descriptors(Objective("latency", len, descriptors=True))
    assert not uses_descriptors(Objective("latency", len, descriptors=False))
    assert not uses_descriptors(object())  # no attribute, no hardware target


def test_default_descriptors_of_a_supernet_and_of_a_space():
    net = tiny_supernet()
    assert [d.name for d in default_descriptors(net.space, net)] == ["macs", "params"]
    assert [d.name for d in default_descriptors(_space())] == ["blocks"]
    assert resolve_descriptors([], _space()) == []


def test_bad_descriptors_say_what_to_pass():
    with pytest.raises(TypeError, match="list of cheap objective-likes"):
        resolve_descriptors("macs", _space())
    with pytest.raises(TypeError, match="validation=False"):
        resolve_descriptors([42], _space())
    with pytest.raises(ValueError, match="must be cheap"):
        resolve_descriptors([Objective("acc", len)], _space())


def test_features_append_descriptors_scaled_by_the_maximal_config():
    space = _space()
    lat = Objective("latency_ms", lambda cs: [1.0] * len(cs), descriptors=True)
    v = Validator(space, [lat], fingerprint="f", store=EvaluationStore(), budget=5,
                  descriptors=[blocks_descriptor(space)])
    X = np.array([[0, 0, 0, 0], [2, 1, 1, 1]])
    f = v.features(X)
    assert f.shape == (2, len(space) + 1) and v.n_descriptors(lat) == 1
    assert np.allclose(f[:, :len(space)], space.features(X))
    assert np.allclose(f[:, -1], [1.0, 0.25])  # 4 blocks at the maximal config, 1 here
    assert np.allclose(v.features(X, descriptors=False), space.features(X))


def test_staged_predictor_learns_a_descriptor_line_from_a_few_rows():
    rng = np.random.default_rng(0)
    X = rng.random((300, 30))
    y = 5.0 * X[:, -2] + 2.0 * X[:, -1] + 0.05 * X[:, 0]  # "ms per MAC and per block"
    staged = StagedPredictor("ridge", descriptors=2).fit(X[:10], y[:10])
    auto = AutoPredictor(descriptors=2).fit(X[:10], y[:10])
    plain = AutoPredictor().fit(X[:10], y[:10])
    err = {name: np.abs(m.predict(X[10:]) - y[10:]).mean()
           for name, m in (("staged", staged), ("auto", auto), ("plain", plain))}
    assert auto.chosen_.startswith("staged:"), auto.cv_error_
    assert err["staged"] < 0.1 * err["plain"] and err["auto"] < 0.1 * err["plain"], err
    with pytest.raises(ValueError, match="descriptors must be between"):
        StagedPredictor(descriptors=0).fit(X, y)


def test_only_hardware_costs_get_descriptor_columns_in_the_search(tmp_path):
    p = problem()
    objs = p.latency_objectives("gpu")  # accuracy, and a latency marked descriptors=True
    v = Validator(p.space, objs, fingerprint="f", store=EvaluationStore(), budget=20,
                  descriptors=p.descriptors())
    rng, sizes = np.random.default_rng(0), [len(d.choices) for d in p.space]
    v.validate(rng.integers(0, sizes, size=(20, len(sizes))))
    ctx = Context(p.space, v, "nsga2", 10, 0, TacticOptions(**SMALL),
                  np.zeros((0, len(p.space)), dtype=np.int64))
    models = fit_models(ctx, v.history)
    assert models["accuracy"].n_features_in_ == len(p.space)
    assert models["latency_ms"].n_features_in_ == len(p.space) + 2  # blocks and MACs
    r = search(p.space, objs, budget=24, population=10, progress=False, options=SMALL,
               descriptors=p.descriptors(), seed=3)
    again = search(p.space, objs, budget=24, population=10, progress=False, options=SMALL,
                   descriptors=p.descriptors(), seed=3)
    assert r.validations == 24 and [e.config for e in r.history] == [e.config for e in again.history]


def test_popdb_computes_index_objectives_of_the_full_space_from_configs():
    p = problem()
    past = search(p.space, p.objectives(), tactic="full", budget=40, population=10, seed=1,
                  progress=False)
    r = search(p.space, p.objectives(), tactic="popdb", warm_start=past, budget=20,
               population=10, progress=False, options=SMALL)
    assert r.info["space_size"]["restricted"] < r.info["space_size"]["full"]
    configs = [e.config for e in r.history]
    truth = p.macs_of(p.space.indices(configs))  # MACs in the full space's own indices
    assert np.allclose([e.values["macs"] for e in r.history], truth)
