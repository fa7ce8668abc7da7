"""Bad objective values: an error is recorded and the search goes on; NaN is rejected by name."""
import math

import pytest

from runtime.search import EvaluationStore, Objective, ObjectiveError, search
from tests.search_helpers import SMALL, problem


def _flaky(p, bad):
    """Accuracy that raises (or returns NaN) for configs whose first kernel is 3."""
    acc, macs = p.objectives()

    def fn(configs):
        out = acc.evaluate(configs)
        for i, c in enumerate(configs):
            if c["kernel:s0b0"] == 3:
                if bad == "raise":
                    raise RuntimeError(f"calibration diverged for {c['kernel:s0b0']}")
                out[i] = math.nan
        return out
    return [Objective("accuracy", fn, minimize=False), macs]


def test_an_objective_that_raises_is_recorded_and_the_search_goes_on():
    p, store = problem(), EvaluationStore()
    r = search(p.space, _flaky(p, "raise"), tactic="concurrent", budget=40, population=10,
               store=store, progress=False, options=SMALL)
    failed = [e for e in r.history if not e.ok]
    assert r.validations == 40 and failed and len(failed) < 40
    assert all("RuntimeError: calibration diverged" in e.error for e in failed)
    assert all(e.config["kernel:s0b0"] != 3 for e in r.pareto)
    rows = [row for row in store.rows(objective="accuracy") if row.error]
    assert len(rows) == len(failed) and all(row.value is None for row in rows)


def test_nan_is_rejected_with_the_config_named():
    p = problem()
    with pytest.warns(RuntimeWarning, match=r"objective 'accuracy' returned NaN for config \{"):
        r = search(p.space, _flaky(p, "nan"), tactic="full", budget=30, population=10,
                   progress=False)
    failed = [e for e in r.history if not e.ok]
    assert failed and all("NaN" in e.error and "kernel:s0b0" in e.error for e in failed)
    assert all(not math.isnan(v) for e in r.pareto for v in e.values.values())


def test_on_error_raise_stops_with_the_config():
    p = problem()
    with pytest.raises(ObjectiveError, match="failed for config .*kernel:s0b0"):
        search(p.space, _flaky(p, "raise"), tactic="full", budget=30, population=10,
               progress=False, on_error="raise")


def test_a_failing_batch_is_retried_one_config_at_a_time():
    """Only the configs that fail alone are errors: a batch-level failure loses nothing."""
    p = problem()
    bad = Objective("accuracy", lambda cs: [float(len(cs))], minimize=False)  # 1 value per call
    r = search(p.space, [bad, p.objectives()[1]], tactic="full", budget=12, population=10,
               progress=False)
    assert all(e.ok and e.values["accuracy"] == 1.0 for e in r.history)


def test_a_search_where_every_validation_fails_warns_with_the_first_error():
    p = problem()
    def broken(configs):
        raise KeyError("top1")
    objs = [Objective("accuracy", broken, minimize=False), p.objectives()[1]]
    with pytest.warns(RuntimeWarning, match=r"every one of the 12 validations failed.*KeyError"):
        r = search(p.space, objs, tactic="full", budget=12, population=10, progress=False)
    assert not r.pareto and r.history and all(not e.ok for e in r.history)
