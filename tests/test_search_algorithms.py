"""Algorithms and tactics by name: they run, respect the budget and are deterministic per seed."""
import numpy as np
import pytest
from pymoo.core.population import Population

from runtime.elastic import Dimension, SearchSpace
from runtime.search import ALGORITHMS, TACTICS, Objective, search
from runtime.search.problem import CanonicalDuplicates, RandomReset, genome_keys
from tests.search_helpers import SMALL, problem, summary

FAST_ALGORITHMS = [a for a in ALGORITHMS if a != "agemoea"]  # agemoea JIT-compiles (numba)


def _run(tactic="full", algorithm="nsga2", seed=0, budget=40, **kw):
    p = kw.pop("p", None) or problem()
    opts = {"ref_points": [[-80.0, 1e8]]} if algorithm == "rnsga2" else None
    return search(p.space, p.objectives(), tactic=tactic, algorithm=algorithm, budget=budget,
                  population=10, seed=seed, progress=False, options=SMALL, algorithm_options=opts,
                  **kw)


@pytest.mark.parametrize("algorithm", FAST_ALGORITHMS)
def test_every_algorithm_runs_by_name_and_is_deterministic(algorithm):
    a, b, c = _run(algorithm=algorithm), _run(algorithm=algorithm), _run(algorithm=algorithm, seed=1)
    assert a.validations == 40 and len({e.config for e in a.history}) == 40
    assert summary(a) == summary(b)
    assert summary(a)[0] != summary(c)[0]
    assert a.pareto and all(e.ok for e in a.pareto)


@pytest.mark.slow
def test_agemoea_runs():
    r = _run(algorithm="agemoea", budget=30)
    assert r.validations == 30 and r.pareto


@pytest.mark.parametrize("tactic", [t for t in TACTICS if t not in ("warm_start", "popdb")])
def test_every_tactic_runs_by_name_and_is_deterministic(tactic):
    a, b = _run(tactic=tactic), _run(tactic=tactic)
    assert a.validations == 40 and summary(a) == summary(b)
    hv = [h for _, h in a.hypervolume]  # one point per validation, never decreasing
    assert a.tactic == tactic and len(hv) == a.validations and hv == sorted(hv) and hv[-1] > 0


@pytest.mark.parametrize("tactic", ["warm_start", "popdb"])
def test_tactics_from_a_previous_search(tactic):
    past = _run(budget=60, seed=5)
    a, b = _run(tactic=tactic, warm_start=past), _run(tactic=tactic, warm_start=past)
    assert a.validations == 40 and summary(a) == summary(b)
    if tactic == "warm_start":  # the previous front seeds (and is re-validated in) the first batch
        seeded = {e.config for e in a.history[:10]}
        assert seeded & {e.config for e in past.pareto}


def test_unknown_names_list_the_valid_ones():
    p = problem()
    with pytest.raises(ValueError, match="unknown tactic 'fast'; valid: .*concurrent"):
        search(p.space, p.objectives(), tactic="fast")
    with pytest.raises(ValueError, match="unknown algorithm 'nsga9'; valid: .*nsga2"):
        search(p.space, p.objectives(), algorithm="nsga9")
    with pytest.raises(ValueError, match="unknown objective 'speed'; valid names: .*latency"):
        search(p.space, ["speed"])
    with pytest.raises(ValueError, match="warm_start="):
        search(p.space, p.objectives(), tactic="warm_start")


def test_objective_order_is_the_order_given():
    p = problem()
    acc, macs = p.objectives()
    for order in ([acc, macs], [macs, acc]):
        r = search(p.space, order, tactic="full", budget=20, population=10, progress=False)
        assert r.objectives == tuple(o.name for o in order)
        assert list(r.pareto[0].values) == [o.name for o in order]
        assert list(r.to_dict()["pareto"][0]["values"]) == [o.name for o in order]


def test_constraints_hold_on_the_front():
    p = problem()
    r = _run(tactic="concurrent", budget=50, constraints={"macs": ("<=", 1.2e8),
                                                          "accuracy": (">=", 70.0)})
    assert r.pareto and all(e.values["macs"] <= 1.2e8 and e.values["accuracy"] >= 70 for e in r.pareto)
    assert any(e.ok and e.values["macs"] > 1.2e8 for e in r.history)  # validated, not on the front


def test_random_reset_really_changes_categorical_genes():
    space = SearchSpace([Dimension("d", "depth", (2, 1))] +
                        [Dimension(f"k{i}", "kernel", (7, 5, 3), ("d", 2)) for i in range(5)])
    X = np.zeros((500, 6), dtype=np.int64)
    X[:, 0] = 1  # depth 1: the kernels are irrelevant, only d can change the sub-network
    Y = RandomReset(space)._do(None, X, random_state=np.random.default_rng(0))
    assert (Y[:, 0] != X[:, 0]).all()
    Z = RandomReset(space)._do(None, np.zeros((500, 6), dtype=np.int64),
                               random_state=np.random.default_rng(0))
    changed = Z != 0
    assert changed.any(axis=1).all() and set(np.unique(Z[:, 1:])) == {0, 1, 2}


def test_duplicates_are_eliminated_against_everything_validated():
    space = SearchSpace([Dimension("d", "depth", (2, 1)), Dimension("k", "kernel", (5, 3), ("d", 2))])
    known = {genome_keys(space, np.array([[1, 0]]))[0]: None}
    pop = Population.new(X=np.array([[1, 1], [0, 0], [0, 0], [0, 1]]))
    kept = CanonicalDuplicates(space, known).do(pop)
    assert kept.get("X").tolist() == [[0, 0], [0, 1]]  # [1, 1] is canonically [1, 0]: validated


def test_concurrent_beats_full_nsga2_at_equal_budget():
    """The predictor loop reaches a higher hypervolume with the same 120 validations, seed by seed."""
    p = problem()
    for seed in (0, 1):
        full = _run(tactic="full", budget=120, seed=seed, p=p)
        conc = _run(tactic="concurrent", budget=120, seed=seed, p=p)
        assert conc.best_hypervolume > full.best_hypervolume
        # the same bounds (the maximal and minimal configs): the two curves compare
        assert conc.hypervolume[0] == full.hypervolume[0] or conc.bounds == full.bounds


def test_budget_one_and_tiny_spaces():
    space = SearchSpace([Dimension("w", "width", (4, 2))])
    obj = Objective("w", lambda cs: [c["w"] for c in cs], minimize=False)
    assert search(space, [obj], budget=1, tactic="full", progress=False).validations == 1
    r = search(space, [obj], budget=10, tactic="concurrent", progress=False)
    assert r.validations == 2 and [dict(e.config) for e in r.pareto] == [{"w": 4}]
