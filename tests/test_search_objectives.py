"""Built-in objectives on a real (tiny) super-network, targets, and selection of sub-networks."""
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.search import (HardwareTarget, Objective, accuracy_objective, latency_objective,
                            macs_objective, mean_pareto_accuracy, params_objective, search,
                            select_subnets)
from runtime.search.result import Bounds, hypervolume, pareto_mask
from tests.search_helpers import tiny_supernet, width_score


def test_analytic_objectives_are_cheap_and_exact():
    net = tiny_supernet()
    configs = [net.space.decode([i, j]) for i in range(4) for j in range(2)]
    assert macs_objective(net).evaluate(configs) == [float(net.macs(c)) for c in configs]
    assert params_objective(net).evaluate(configs) == [float(net.params(c)) for c in configs]
    assert not macs_objective(net).validation and macs_objective(net).minimize


def test_accuracy_objective_calls_the_injected_evaluator():
    net, calls = tiny_supernet(), []

    class Result:
        def __init__(self, top1):
            self.top1 = top1

    def evaluate(supernet, config, val_loader, *, calibration_loader, calibration_batches):
        calls.append((supernet, dict(config), val_loader, calibration_loader, calibration_batches))
        return Result(50.0 + config["h1"])

    obj = accuracy_objective(net, "VAL", calibration_loader="CAL", calibration_batches=3,
                             evaluate=evaluate)
    assert obj.evaluate([net.max_config()]) == [58.0] and not obj.minimize and obj.validation
    assert calls == [(net, dict(net.max_config()), "VAL", "CAL", 3)]
    assert obj.settings["calibration_batches"] == 3


def test_latency_objective_measures_extracted_subnets_serially():
    net = tiny_supernet()
    obj = latency_objective(net, "torch:fp32:1:1", iterations=3, warmup=1, cache=False)
    values = obj.evaluate([net.max_config(), net.min_config()])
    assert len(values) == 2 and all(v > 0 for v in values)
    assert obj.concurrent is False and obj.settings["target"]["backend"] == "torch"
    assert obj.target.key == "torch:fp32:b1:t1:cpu"


def test_interleaved_latency_times_a_batch_together_and_keeps_its_settings_apart(monkeypatch):
    import runtime.lower.latency as latency

    net = tiny_supernet()
    batch = [net.max_config(), net.min_config(), net.max_config()]
    obj = latency_objective(net, "torch:fp32:1:1", iterations=20, warmup=2, repeats=3,
                            protocol="interleaved", interleave=2, cache=False)
    assert all(v > 0 for v in obj.evaluate(batch))  # really timed once
    assert len(obj.evaluate([net.min_config()])) == 1  # a batch of one is timed alone
    calls = []

    def fake(models, configs, **kw):  # p50 = the model's parameter count: order is checkable
        calls.append((len(models), configs, kw["interleave"], kw["repeats"]))
        return {k: {"torch/fp32": SimpleNamespace(p50_ms=float(sum(p.numel() for p in
                                                                  m.parameters())))}
                for k, m in models.items()}

    monkeypatch.setattr(latency, "compare_models", fake)
    big, small, again = obj.evaluate(batch)
    assert calls == [(3, [("torch", "fp32")], 2, 3)]  # one interleaved measurement of the batch
    assert (big, small, again) == (net.params(batch[0]), net.params(batch[1]), net.params(batch[0]))
    assert obj.settings["protocol"] == "interleaved" and obj.settings["interleave"] == 2
    assert "protocol" not in latency_objective(net, "torch:fp32:1:1").settings  # old stores match
    with pytest.raises(ValueError, match=r"unknown latency protocol 'paired'.*interleaved"):
        latency_objective(net, "torch:fp32:1:1", protocol="paired")


@pytest.mark.parametrize("text, message", [("tvm", "unknown backend"), ("openvino:int4", "precision"),
                                           ("torch:int8", "fp32 only"), ("openvino:fp32:0", ">= 1")])
def test_bad_targets(text, message):
    with pytest.raises(ValueError, match=message):
        HardwareTarget.parse(text)


def test_search_a_supernet_by_objective_names_and_select():
    net = tiny_supernet()
    r = search(net, [width_score(net), "macs", "params"], tactic="full", budget=8, population=8,
               progress=False)
    assert r.objectives == ("score", "macs", "params") and r.validations == 8
    assert r.reference is not None and r.reference.config == net.max_config()
    best = select_subnets(r, 1, tolerance=2.0)[0]  # within 2 points of the original, fewest MACs
    assert best.values["score"] >= r.reference.values["score"] - 2.0
    assert best.values["macs"] == min(e.values["macs"] for e in r.pareto
                                      if e.values["score"] >= r.reference.values["score"] - 2)
    under = select_subnets(r, 2, "most_accurate_under", efficiency="macs", limit=60)
    assert under and all(e.values["macs"] <= 60 for e in under)
    assert under[0].values["score"] == max(e.values["score"] for e in r.pareto if e.values["macs"] <= 60)
    assert mean_pareto_accuracy(r) == pytest.approx(np.mean([e.values["score"] for e in r.pareto]))
    with pytest.raises(ValueError, match="valid: .*within_tolerance"):
        select_subnets(r, 1, "best")
    with pytest.raises(ValueError, match="needs limit="):
        select_subnets(r, 1, "most_accurate_under")


def test_hypervolume_and_pareto_mask():
    F = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.6, 0.6], [0.5, 0.5]])
    assert pareto_mask(F).tolist() == [True, True, True, False, False]
    b = Bounds((0.0, 0.0), (1.0, 1.0))
    # three boxes up to the reference point (1.1, 1.1), computed by hand
    assert hypervolume(F, b, ref=1.1) == pytest.approx(1.1 * 0.1 + 0.6 * 0.5 + 0.1 * 0.5)
    assert hypervolume(F, b) == pytest.approx(0.25)  # at the nadir only (0.5, 0.5) counts
    from pymoo.indicators.hv import HV
    assert hypervolume(F, b, ref=1.1) == pytest.approx(HV(ref_point=np.array([1.1, 1.1])).do(F[:3]))
    F3 = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]])
    b3 = Bounds((0.0,) * 3, (1.0,) * 3)
    assert hypervolume(F3, b3) == pytest.approx(HV(ref_point=np.full(3, 1.0)).do(F3))


def test_user_objective_length_is_checked():
    with pytest.raises(ValueError, match="returned 1 values for 2 configs"):
        Objective("x", lambda cs: [1.0]).evaluate([{}, {}])
