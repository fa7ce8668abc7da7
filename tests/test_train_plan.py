"""runtime.train.plan: timing steps on a copy, and the epochs a wall-time budget allows."""
import pytest
import torch

from runtime.train import digits_loaders, plan_epochs, step_seconds, take_batches
from runtime.train import step as step_module
from tests.train_helpers import supernet


def test_step_seconds_times_a_copy_and_leaves_the_network_and_rng_alone():
    net = supernet()
    batches = take_batches(digits_loaders(batch_size=32, seed=0)[0], 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = step_seconds(net, batches, strategy="sandwich", total_steps=100,
                           steps_per_epoch=50, steps=3, warmup=1)
    assert 0 < seconds < 10
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_step_seconds_spreads_its_steps_over_the_run(monkeypatch):
    """A strategy whose first steps are cheap (upper-attentive's largest-only warm-up) is timed
    over its whole mix: the timed steps sit at evenly spaced points of the run."""
    seen = []
    real = step_module.run_step

    def spy(net, tasks, *args, step=None, **kwargs):
        seen.append((step, len(tasks)))
        return real(net, tasks, *args, step=step, **kwargs)

    monkeypatch.setattr("runtime.train.strategies.run_step", spy)
    net = supernet()
    batches = take_batches(digits_loaders(batch_size=32, seed=0)[0], 1)
    step_seconds(net, batches, strategy="upper_attentive", strategy_options={"warmup_epochs": 1},
                 total_steps=400, steps_per_epoch=100, steps=4, warmup=1)
    assert [s for s, _ in seen] == [0, 50, 150, 250, 350]
    assert [n for _, n in seen] == [1, 1, 4, 4, 4]  # warm-up: the largest alone; then n=4


def test_plan_epochs_cuts_to_the_steps_that_fit_and_never_adds():
    assert plan_epochs(2.0, steps_per_epoch=100, budget_s=50, seconds_per_step=1.0) == 0.5
    assert plan_epochs(0.3, steps_per_epoch=100, budget_s=50, seconds_per_step=1.0) == 0.3
    assert plan_epochs(1.0, steps_per_epoch=100, budget_s=0.1, seconds_per_step=1.0) == 0.01
    with pytest.raises(ValueError, match="budget_s"):
        plan_epochs(1.0, steps_per_epoch=10, budget_s=0, seconds_per_step=1.0)
    with pytest.raises(ValueError, match="at least one batch"):
        step_seconds(supernet(), [], strategy="sandwich", total_steps=1, steps_per_epoch=1)
