"""What each strategy trains, the step mechanism's rules, and bad options."""
import math

import pytest
import torch
import torch.nn.functional as F

from runtime.train import (DelayedEpsilonShrinking, NonFiniteLossError, ProgressiveShrinking,
                           RandomSubnets, Sandwich, Task, UpperAttentive, digits_loaders,
                           epsilon_ramp, get_strategy, run_step, strategy_names)
import numpy as np

from runtime.train.samplers import (CompoundSampler, MacsSampler, UniformSampler, make_sampler,
                                    stage_couplings)
from runtime.train.step import StepOptions
from tests.train_helpers import supernet


@pytest.fixture(scope="module")
def net():
    return supernet()


@pytest.fixture(scope="module")
def batch():
    x, y = next(iter(digits_loaders(batch_size=16)[0]))
    return x, y


def plans(strategy, net, steps, *, total=None, spe=None):
    strategy.bind(net, seed=0, total_steps=total, steps_per_epoch=spe)
    out = []
    for step in range(steps):
        strategy._step = step
        out.append(strategy.plan(strategy.context()))
    return out


def test_every_strategy_constructs_with_no_arguments():
    for name in strategy_names():
        assert get_strategy(name).name in name.replace("delayed_epsilon_shrinking", "deps")


def test_sandwich_trains_largest_smallest_and_random_with_labels_only_on_largest(net):
    for plan in plans(Sandwich(n=5), net, 3):
        assert [t.role for t in plan] == ["largest", "smallest", "random", "random", "random"]
        assert plan[0].config == net.max_config() and plan[1].config == net.min_config()
        assert [t.loss for t in plan] == ["labels"] + ["kd"] * 4
        assert all(t.weight == 1.0 for t in plan)
    assert [t.loss for t in plans(Sandwich(distill=False), net, 1)[0]] == ["labels"] * 4


def test_upper_attentive_warms_up_on_the_largest_then_adds_random_never_smallest(net):
    got = plans(UpperAttentive(n=4, warmup_epochs=2), net, 30, spe=10)
    for step, plan in enumerate(got):
        if step < 20:
            assert [t.role for t in plan] == ["largest"]
        else:
            assert [t.role for t in plan] == ["largest", "random", "random", "random"]
            assert [t.loss for t in plan] == ["labels", "kd", "kd", "kd"]
    remove = plans(UpperAttentive(n=4, warmup_epochs=0, variant="remove"), net, 1)[0]
    assert [t.role for t in remove] == ["largest", "random", "random"]


def test_deps_trains_only_largest_until_p_warmup_then_follows_the_epsilon_ramp(net):
    s = DelayedEpsilonShrinking(n=3, p_warmup=0.5, ramp_fraction=0.25)
    for step, plan in enumerate(plans(s, net, 100, total=100, spe=10)):
        if step < 50:
            assert [t.role for t in plan] == ["largest"]
            continue
        eps = 1e-4 + (1 - 1e-4) * min((step / 100 - 0.5) / 0.25, 1.0)
        assert [t.role for t in plan] == ["largest", "smallest", "random"]
        assert plan[0].weight == 1.0 and plan[0].loss == "labels"
        assert all(t.weight == pytest.approx(eps, rel=1e-12, abs=0) for t in plan[1:])
        assert all(t.loss == "kd" for t in plan[1:])
    assert epsilon_ramp(0.5, 0.5, 0.25) == 1e-4 and epsilon_ramp(1.0, 0.5, 0.25) == 1.0


def grads(net):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in net.named_parameters()}


def step_grads(net, tasks, batch, **options):
    net.zero_grad(set_to_none=True)
    run_step(net, tasks, *batch, options=StepOptions(**options))
    return grads(net)


def test_subnetwork_gradient_scale_is_exactly_the_task_weight(net, batch):
    net.eval()  # no batch-norm state changes between the runs (train mode would update them)
    big, small = net.max_config(), net.min_config()
    g1 = step_grads(net, [Task(small, "smallest", "labels", 1.0)], batch)
    g_eps = step_grads(net, [Task(small, "smallest", "labels", 0.25)], batch)
    for name in g1:
        assert torch.allclose(g_eps[name], 0.25 * g1[name], rtol=1e-6, atol=1e-9), name
    both = step_grads(net, [Task(big, "largest"), Task(small, "smallest", "labels", 0.25)], batch)
    alone = step_grads(net, [Task(big, "largest")], batch)
    for name in both:  # summed, not zeroed between sub-networks
        assert torch.allclose(both[name], alone[name] + g_eps[name], rtol=1e-5, atol=1e-7), name
    net.train()


def test_distillation_targets_carry_no_gradient(net, batch):
    """With the largest's labels loss weighted 0, channels only the largest uses get no gradient:
    the smallest's KD loss reaches them only if the teacher logits were not detached."""
    net.eval()
    g = step_grads(net, [Task(net.max_config(), "largest", "labels", 0.0),
                         Task(net.min_config(), "smallest", "kd", 1.0)], batch)
    stem = g["graph_module.stem.0.module.weight"]
    assert stem[:8].abs().sum() > 0 and torch.equal(stem[8:], torch.zeros_like(stem[8:]))
    net.train()


def test_weight_decay_reaches_only_the_largest_pass(net, batch):
    net.eval()
    big, small = net.max_config(), net.min_config()
    tasks = [Task(big, "largest"), Task(small, "smallest", "kd")]
    off = step_grads(net, tasks, batch)
    on = step_grads(net, tasks, batch, weight_decay=0.1, decay_scope="largest")
    for name, p in net.named_parameters():
        expected = off[name] + (0.1 * p.detach() if p.dim() > 1 else 0)
        assert torch.allclose(on[name], expected, rtol=1e-5, atol=1e-7), name
    no_largest = [Task(small, "smallest", "labels"), Task(small, "random", "labels")]
    assert all(torch.equal(a, b) for a, b in zip(
        step_grads(net, no_largest, batch).values(),
        step_grads(net, no_largest, batch, weight_decay=0.1, decay_scope="largest").values()))
    net.train()


def test_progressive_shrinking_enables_dimensions_and_limits_stage_by_stage(net):
    ps = ProgressiveShrinking(n=3, stages=[
        {"train_dims": ["depth"], "epochs": 1, "depth_indicator": 2},
        {"train_dims": ["depth"], "epochs": 1},
        {"train_dims": ["depth", "width"], "epochs": 2, "width_indicator": 2}])
    space = net.space
    for step, plan in enumerate(plans(ps, net, 40, total=40, spe=10)):
        stage = 0 if step < 10 else 1 if step < 20 else 2
        assert len(plan) == 3 and all(t.loss == "labels+kd" for t in plan)
        for t in plan:
            for d in space:
                allowed = d.choices[:1]
                if d.kind == "depth":
                    allowed = d.choices[:2] if stage == 0 else d.choices
                if d.kind == "width" and stage == 2:
                    allowed = d.choices[:2]
                assert t.config[d.name] in allowed, (step, d.name)
    seen = {t.config["depth:layer1"] for plan in plans(ps, net, 40, total=40)[10:20] for t in plan}
    assert seen == {0, 1, 2}


def test_progressive_shrinking_default_stages_and_per_stage_lr(net):
    ps = ProgressiveShrinking(stages=[{"train_dims": ["depth"], "init_lr": 0.05},
                                      {"train_dims": ["width"], "init_lr": 0.01, "epochs_lr": 0.5}])
    ps.bind(net, total_steps=20, steps_per_epoch=10)
    sched = ps.lr_schedule(total_steps=20, steps_per_epoch=10, base_lr=0.1)
    assert sched.factor(0) == pytest.approx(0.5) and sched.factor(10) == pytest.approx(0.1)
    assert sched.factor(15) == pytest.approx(0.0, abs=1e-12)
    default = ProgressiveShrinking().bind(net, total_steps=10)
    assert [s.train_dims for s in default.stage_list] == [("depth",), ("depth",),
                                                          ("depth", "width"), ("depth", "width")]
    assert [(s.depth_indicator, s.width_indicator) for s in default.stage_list] == [
        (2, None), (None, None), (None, 2), (None, None)]


def test_compound_sampler_couples_each_stage_depth_with_its_widths(net):
    couplings = stage_couplings(net.space, net.bindings)
    assert couplings["depth:layer1"] == ("depth:layer1", "width:layer1.0.conv1",
                                         "width:layer1.1.conv1")
    sampler = CompoundSampler(net.space, net.bindings, seed=0)
    levels = set()
    for _ in range(40):
        c = sampler.sample()
        depth_index = net.space["depth:layer1"].choices.index(c["depth:layer1"])
        width = {0: 16, 1: 16, 2: 8}[depth_index]  # 3 levels over 2 width choices: round(i/2)
        assert c["width:layer1.0.conv1"] == c["width:layer1.1.conv1"] == width
        levels.add(depth_index)
    assert levels == {0, 1, 2}
    assert sampler.smallest() == net.min_config()
    s = get_strategy("sandwich", sampler="compound").bind(net)
    assert isinstance(s._sampler, CompoundSampler)


def test_macs_sampler_spreads_draws_evenly_over_the_macs_range(net):
    top, low = net.macs(net.max_config()), net.macs(net.min_config())

    def share_above_half(draws):
        fractions = np.array([(net.macs(c) - low) / (top - low) for c in draws])
        return (fractions > 0.5).mean(), np.histogram(fractions, bins=4, range=(0, 1))[0]

    uniform = UniformSampler(net.space, seed=0)
    macs = MacsSampler(net.space, net.macs, seed=0)
    u_share, _ = share_above_half([uniform.sample() for _ in range(400)])
    m_share, m_hist = share_above_half([macs.sample() for _ in range(400)])
    assert m_share > u_share + 0.15, (m_share, u_share)  # uniform draws pile up at the low end
    assert m_hist.min() >= 40, m_hist  # every quarter of the range is drawn (100 each if ideal)
    a, b = MacsSampler(net.space, net.macs, seed=7), MacsSampler(net.space, net.macs, seed=8)
    a.sample()
    b.load_state_dict(a.state_dict())  # a resumed run draws the same sub-networks
    assert [a.sample() for _ in range(5)] == [b.sample() for _ in range(5)]
    s = get_strategy("sandwich", sampler="macs").bind(net, seed=3)
    assert isinstance(s._sampler, MacsSampler) and s._sampler.smallest() == net.min_config()
    with pytest.raises(ValueError, match="needs cost="):
        make_sampler("macs", net.space)


def test_macs_range_draws_only_inside_its_fractions_of_the_largest(net):
    top = net.macs(net.max_config())
    s = get_strategy("random", sampler="macs", macs_range=[0.4, 0.7]).bind(net, seed=0)
    fractions = np.array([net.macs(s._sampler.sample()) / top for _ in range(200)])
    # the closest of 16 candidates to each target: near the range, never far outside it
    assert 0.35 < fractions.min() and fractions.max() < 0.75, (fractions.min(), fractions.max())
    assert ((fractions >= 0.4) & (fractions <= 0.7)).mean() > 0.9
    assert np.histogram(fractions, bins=3, range=(0.4, 0.7))[0].min() >= 40  # spread over it
    assert s._sampler.smallest() == net.min_config()
    assert s.macs_range == (0.4, 0.7)
    with pytest.raises(ValueError, match="lies under the smallest sub-network"):
        MacsSampler(net.space, net.macs, macs_range=(0.0, 1e-6))


def test_sampler_state_round_trips(net):
    a = UniformSampler(net.space, seed=5)
    a.sample()
    state = a.state_dict()
    first = [a.sample() for _ in range(3)]
    b = UniformSampler(net.space, seed=99)
    b.load_state_dict(state)
    assert [b.sample() for _ in range(3)] == first


def test_per_step_api_in_a_user_loop(net, batch):
    model = supernet()
    strategy = get_strategy("sandwich", n=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    result = strategy.training_step(model, *batch, F.cross_entropy, optimizer)
    assert [t.role for t in result.tasks] == ["largest", "smallest", "random"]
    assert set(result.losses_by_role()) == {"largest", "smallest", "random"}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.config == model.max_config()  # the previous config is active again


def test_non_finite_loss_names_step_and_subnetwork(net, batch):
    def nan_loss(logits, targets):
        return F.cross_entropy(logits, targets) * math.nan

    with pytest.raises(NonFiniteLossError, match=r"at step 0 in the largest sub-network \{"):
        Sandwich().training_step(supernet(), *batch, nan_loss)


@pytest.mark.parametrize("name,options,message", [
    ("sandwhich", {}, r"unknown strategy 'sandwhich'; valid strategies: "
                      r"\['delayed_epsilon_shrinking', 'deps'"),
    ("deps", {"pwarmup": 0.5}, r"unknown option\(s\) \['pwarmup'\].*'p_warmup'"),
    ("deps", {"p_warmup": 1.0}, r"p_warmup .* must be in \(0, 1\), got 1.0"),
    ("deps", {"p_warmup": 0.0}, r"must be in \(0, 1\)"),
    ("sandwich", {"n": 1}, r"n \(sub-networks per step\) must be an integer >= 2, got 1"),
    ("upper_attentive", {"variant": "swap"}, r"variant must be 'replace' or 'remove'"),
    ("random", {"sampler": "sobol"}, r"sampler must be 'uniform', 'compound' or 'macs'"),
    ("random", {"macs_range": [0.2, 1]}, r"random: macs_range needs sampler='macs'"),
    ("random", {"sampler": "macs", "macs_range": [0.8, 0.3]}, r"0 <= lo < hi <= 1, got \[0.8, 0.3\]"),
    ("random", {"sampler": "macs", "macs_range": 0.5}, r"two fractions \[lo, hi\]"),
    ("progressive_shrinking", {"stages": [{"train_dims": ["depth"], "epoch": 1}]},
     r"unknown key\(s\) \['epoch'\]; valid keys"),
])
def test_bad_strategy_input_says_what_is_allowed(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_strategy(name, **options)


def test_stage_dims_not_in_the_space_are_rejected_with_the_kinds_it_has(net):
    ps = ProgressiveShrinking(stages=[{"train_dims": ["kernel"]}])
    with pytest.raises(ValueError, match=r"stage 0 trains \['kernel'\].*kinds in this space: "
                                         r"\['depth', 'width'\]"):
        ps.bind(net)


def test_deps_per_step_api_needs_the_run_length(batch):
    with pytest.raises(ValueError, match="total_steps"):
        DelayedEpsilonShrinking().training_step(supernet(), *batch)


def test_random_subnets_draws_n_uniform_configs(net):
    plan = plans(RandomSubnets(n=3), net, 1)[0]
    assert [t.role for t in plan] == ["random"] * 3 and all(t.loss == "labels" for t in plan)


def test_external_teacher_is_the_distillation_target(net, batch):
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.arange(10.0).expand(x.shape[0], 10)

    small = net.min_config()
    result = run_step(net, [Task(small, "smallest", "kd")], *batch, teacher=Fixed(),
                      options=StepOptions(temperature=2.0))
    with torch.no_grad(), net.activate(small):
        logits = net(batch[0])
    target = F.softmax(torch.arange(10.0) / 2.0, -1)
    expected = -(target * F.log_softmax(logits / 2.0, -1)).sum(-1).mean() * 4.0
    assert result.losses[0] == pytest.approx(float(expected), rel=1e-5)


def test_every_resolution_sees_the_same_batch_resized(batch):
    net = supernet(resolutions=[8, 6])
    seen = []
    stem = net.graph_module.get_submodule("stem.0")
    handle = stem.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    small, big = net.min_config(), net.max_config()
    run_step(net, [Task(big, "largest"), Task(small, "smallest", "kd")], *batch)
    handle.remove()
    assert seen == [(16, 1, 8, 8), (16, 1, 6, 6)]
    assert ProgressiveShrinking().bind(net).stage_list[0].train_dims == ("depth", "resolution")


def test_fallback_teacher_pass_changes_no_batch_norm_state(batch):
    """A KD task with no largest and no teacher runs the maximal config as teacher; only the
    student's own forward may move the batch-norm statistics."""
    small = supernet().min_config()
    ref, net = supernet().train(), supernet().train()
    with ref.activate(small):
        ref(batch[0])
    run_step(net, [Task(small, "random", "kd")], *batch)
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        if "running" in k or "num_batches" in k:
            assert torch.equal(a, b), k


def test_upper_attentive_warmup_longer_than_the_run_is_an_error(net):
    with pytest.raises(ValueError, match=r"warmup_epochs=1.0 covers the whole run of 1 epochs"):
        UpperAttentive().bind(net, total_steps=10, steps_per_epoch=10)
