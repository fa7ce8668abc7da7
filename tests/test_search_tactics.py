"""Warm start from a store, PopDB's restricted space, coarse-to-fine skeletons, progress bar."""

from runtime.elastic import Dimension, SearchSpace
from runtime.search import TacticOptions, search, warm_start_configs
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


def test_popdb_keeps_frequent_values_and_the_maximum():
    space = SearchSpace([Dimension("d", "depth", (3, 2, 1)),
                         Dimension("w", "width", (8, 6, 4)),
                         Dimension("k", "kernel", (7, 5, 3), ("d", 3))])
    past = [{"d": 1, "w": 4, "k": 3}] * 12 + [{"d": 2, "w": 6, "k": 5}] * 12 + [{"d": 3, "w": 8, "k": 7}]
    restricted = popdb_space(space, past, TacticOptions(popdb_threshold=0.2, popdb_min_cluster_size=5))
    assert restricted["d"].choices == (2, 1)  # 3 was chosen once in 25
    assert restricted["w"].choices == (8, 6, 4)  # the maximum stays reachable
    assert restricted["k"].choices == (7,) and restricted["k"].active_when is None  # d=3 is gone
    assert restricted.size < space.size


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
