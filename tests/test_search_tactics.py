"""Warm start from a store, PopDB's restricted space, coarse-to-fine skeletons, progress bar."""

import numpy as np

from runtime.elastic import Dimension, SearchSpace
from runtime.search import EvaluationStore, TacticOptions, search, warm_start_configs
from runtime.search.context import Context
from runtime.search.evaluator import Validator
from runtime.search.inner import fit_models, predict
from runtime.search.predictors import make_predictor
from runtime.search.store import fingerprint as fingerprint_of
from runtime.search.transfer import PriorResidual, load_archive, make_transfer
from runtime.search.tactics_more import grid_skeletons, popdb_space
from tests.search_helpers import SMALL, problem


def test_warm_start_from_a_store_seeds_its_front_first(tmp_path):
    p = problem()
    past = search(p.space, p.objectives(), tactic="full", budget=40, population=10, seed=4,
                  store=tmp_path / "past.db", progress=False)
    seeds = warm_start_configs(tmp_path / "past.db", p.space)
    assert {dict(c)["depth:s0"] for c in seeds} and \
        sorted(map(str, seeds)) == sorted(str(e.config) for e in past.pareto)
    r = search(p.space, p.objectives(), tactic="warm_start", warm_start=tmp_path / "past.db",
               budget=30, population=10, progress=False, options=SMALL)
    first = [e.config for e in r.history[:10]]
    assert first[:2] == [p.space.max_config(), p.space.canonical(p.space.min_config())]
    # seeds spread along the old front fill the rest (two may be the corners themselves)
    assert len(set(first[2:]) & set(seeds)) >= min(8, len(seeds)) - 2 > 0


def test_popdb_keeps_frequent_values_and_the_extremes():
    space = SearchSpace([Dimension("d", "depth", (4, 3, 2, 1)),
                         Dimension("w", "width", (8, 6, 4)),
                         Dimension("k", "kernel", (7, 5, 3), ("d", 3))])
    past = [{"d": 1, "w": 8, "k": 3}] * 12 + [{"d": 3, "w": 8, "k": 7}] * 12 + \
        [{"d": 2, "w": 6, "k": 5}]
    restricted = popdb_space(space, past, TacticOptions(popdb_threshold=0.2, popdb_min_cluster_size=5))
    assert restricted["d"].choices == (4, 3, 1)  # 2 was chosen once in 25; 4 and 1 are the ends
    assert restricted["w"].choices == (8, 4)  # 6 was rare; the minimum stays reachable
    # k matters for d >= 3 only: in 12 configs, all with k=7; 3 is the minimum
    assert restricted["k"].choices == (7, 3) and restricted["k"].active_when == ("d", 3)
    assert restricted.size == 3 * 2 * 2 < space.size


def test_coarse_to_fine_grid_moves_every_kind_together():
    space = SearchSpace([Dimension("d", "depth", (2, 1)), Dimension("w1", "width", (8, 6, 4)),
                         Dimension("w2", "width", (16, 8)), Dimension("k", "kernel", (5, 3))])
    grid = grid_skeletons(space, 3)
    assert len(grid) == 27 and [0, 0, 0, 0] in grid.tolist() and [1, 2, 1, 1] in grid.tolist()
    assert all(len({row[1] / 2, row[2] / 1}) == 1 or row[1] == 1 for row in grid)


def test_progress_bar_runs(capsys):
    p = problem()
    r = search(p.space, p.objectives(), tactic="full", budget=20, population=10, progress=True)
    assert r.validations == 20
    assert "search" in capsys.readouterr().err


def _cpu_then_gpu(tmp_path, budget=40):
    """A past search on the synthetic "cpu" target, stored; the objectives of the "gpu" one."""
    p = problem()
    search(p.space, p.latency_objectives("cpu"), tactic="full", budget=budget, population=10,
           seed=3, store=tmp_path / "cpu.db", progress=False)
    return p, tmp_path / "cpu.db", p.latency_objectives("gpu")


def test_transfer_reuses_the_same_objective_and_priors_the_other_target(tmp_path):
    p, src, gpu = _cpu_then_gpu(tmp_path)
    archive = load_archive(src, p.space)
    assert len(archive.configs) == 40 and not np.isnan(archive.values["accuracy"]).any()
    t = make_transfer(archive, p.space, gpu, fingerprint_of(p.space), "svr")
    # accuracy has the same settings: old values are rows; latency is another target: a prior
    assert set(t.rows) == {"accuracy"} and set(t.priors) == {"latency_ms"}
    assert make_transfer(archive, p.space, gpu, "another-net", "svr").rows == {}
    assert make_transfer(load_archive([p.space.max_config()], p.space), p.space, gpu,
                         fingerprint_of(p.space), "svr") is None


def test_prior_residual_learns_a_scaled_target_from_few_rows():
    rng = np.random.default_rng(0)
    X = rng.random((300, 6))
    old = X @ np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    new = 0.1 * old + 2.0  # another target: same ranking, other scale
    prior = make_predictor("ridge").fit(X[:200], old[:200])
    few = slice(200, 205)
    warm = PriorResidual(make_predictor("svr"), prior).fit(X[few], new[few])
    cold = make_predictor("svr").fit(X[few], new[few])
    err = lambda m: np.abs(m.predict(X[210:]) - new[210:]).mean()  # noqa: E731
    assert abs(warm.a_ - 0.1) < 0.01
    assert err(warm) < 0.2 * err(cold)


def test_warm_start_first_population_is_small_and_spans_the_old_front(tmp_path):
    p, src, gpu = _cpu_then_gpu(tmp_path, budget=60)
    seeds = warm_start_configs(src, p.space)
    assert len(seeds) >= 6
    r = search(p.space, gpu, tactic="warm_start", warm_start=src, budget=30, population=20,
               progress=False, options=dict(SMALL, warm_initial=6))
    first = [e.config for e in r.history[:6]]
    assert first[:2] == [p.space.max_config(), p.space.canonical(p.space.min_config())]
    assert {seeds[0], seeds[-1]} <= set(first)  # both ends of the old front (or a corner)
    assert set(first[2:]) <= set(seeds)  # no random config while old seeds are left
    assert r.validations == 30 and r.info["transfer"] == {"accuracy": "60 old rows",
                                                        "latency_ms": "prior"}
    assert len({e.config for e in r.history}) == 30  # old rows never count as validations


def test_warm_predictors_beat_cold_ones_after_a_few_validations(tmp_path):
    p, src, gpu = _cpu_then_gpu(tmp_path, budget=60)
    fp = fingerprint_of(p.space)
    v = Validator(p.space, gpu, fingerprint=fp, store=EvaluationStore(), budget=12)
    rng, sizes = np.random.default_rng(1), [len(d.choices) for d in p.space]
    v.validate(rng.integers(0, sizes, size=(12, len(sizes))))
    X = rng.integers(0, sizes, size=(300, len(sizes)))
    truth = np.stack([p.accuracy_of(X), p.latency_of(X, "gpu")], axis=1)

    def error(transfer):
        ctx = Context(p.space, v, "nsga2", 20, 0, TacticOptions(),
                      np.zeros((0, len(p.space)), dtype=np.int64), transfer=transfer)
        return np.abs(predict(ctx, fit_models(ctx, v.history), X) - truth).mean(axis=0)

    warm = error(make_transfer(load_archive(src, p.space), p.space, gpu, fp, "svr"))
    cold = error(None)
    # the old accuracies are extra rows: better; the cpu-latency prior is kept only where it
    # cross-validates better than the cold predictor (auto picks a ridge for this additive
    # gpu latency, which the prior does not beat): never worse
    assert warm[0] < cold[0] and warm[1] <= cold[1] + 1e-9, (warm, cold)
