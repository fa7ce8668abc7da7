"""Fast paths of the elastic runtime keep behaviour (fastgraph, base Rule 4, supernet Rule 8).

No timings here (those are in bench/supernet_overhead.py): only that the accelerated code calls
the same modules, sees replaced modules and hooks, survives copies and saving, backs off, and
that residual adds written in place (fastgraph Rule 6) give bit-identical outputs unseen by hooks.
"""
from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from runtime.elastic import ElasticConv, SkipBlock, SuperNetwork, fastgraph

try:
    from test_elastic_models import build_cnn, cnn_input
except ImportError:  # tests/ became a package
    from tests.test_elastic_models import build_cnn, cnn_input


def _graph_modules(net: SuperNetwork) -> list[fx.GraphModule]:
    return [m for m in net.modules() if isinstance(m, fx.GraphModule)]


def test_every_graph_module_of_a_supernet_is_accelerated_and_computes_the_same():
    _, net = build_cnn()
    net.eval()
    gms = _graph_modules(net)
    assert len(gms) > 1 and all(fastgraph.is_accelerated(gm) for gm in gms)
    configs = [net.max_config(), net.min_config(), net.sample(1), net.sample(2)]
    fast = []
    with torch.no_grad():
        for c in configs:
            net.activate(c)
            fast.append(net(cnn_input(c["res"])))
        for gm in gms:
            gm.recompile()  # the stock torch.fx code
        assert not any(fastgraph.is_accelerated(gm) for gm in gms)
        for c, expected in zip(configs, fast):
            net.activate(c)
            assert torch.equal(net.graph_module(cnn_input(c["res"])), expected)


def test_hooks_on_ops_and_skip_blocks_still_fire():
    _, net = build_cnn()
    net.eval()
    calls = []
    for path, module in net.named_modules():
        if isinstance(module, (SkipBlock, ElasticConv)):
            module.register_forward_hook(lambda m, i, o, path=path: calls.append(path))
    with torch.no_grad():
        net(cnn_input(net.config["res"]))
    skips = [p for p, m in net.named_modules() if isinstance(m, SkipBlock)]
    convs = [p for p, m in net.named_modules() if isinstance(m, ElasticConv)]
    assert set(skips) <= set(calls) and set(convs) <= set(calls)


def test_a_submodule_replaced_after_acceleration_is_the_one_called():
    gm = fx.symbolic_trace(nn.Sequential(nn.Sequential(nn.ReLU(), nn.Identity())))
    assert fastgraph.accelerate(gm)
    x = torch.tensor([-1.0, 2.0])
    assert gm(x).tolist() == [0.0, 2.0]
    gm._modules["0"]._modules["1"] = nn.Hardtanh(-0.5, 0.5)  # Rule 2: lookups stay live
    assert gm(x).tolist() == [0.0, 0.5]


def test_copies_loaded_and_saved_networks_are_accelerated_again(tmp_path):
    _, net = build_cnn()
    net.eval()
    x = cnn_input(net.config["res"])
    with torch.no_grad():
        expected = net(x)
        twin = copy.deepcopy(net)
        assert not fastgraph.is_accelerated(twin.graph_module)  # torch.fx rebuilt it
        assert torch.equal(twin(x), expected)
        assert all(fastgraph.is_accelerated(gm) for gm in _graph_modules(twin))
        net.save(tmp_path / "net.pt")  # pickling recompiles: the stock forward is back
        assert torch.equal(net(x), expected)
        assert fastgraph.is_accelerated(net.graph_module)
        loaded = SuperNetwork.load(tmp_path / "net.pt").eval()
        assert all(fastgraph.is_accelerated(gm) for gm in _graph_modules(loaded))
        assert torch.equal(loaded(x), expected)


def test_an_unexpected_source_is_left_alone_and_not_retried(monkeypatch):
    gm = fx.symbolic_trace(nn.Sequential(nn.ReLU()))
    stock = type(gm).forward
    monkeypatch.setattr(fastgraph, "_fx_target", lambda base, target: "not in the source")
    assert not fastgraph.accelerate(gm)
    assert type(gm).forward is stock and fastgraph.is_handled(gm)
    assert not fastgraph.is_accelerated(gm)
    assert gm(torch.tensor([-1.0])).tolist() == [0.0]
    gm.recompile()
    assert not fastgraph.is_handled(gm)  # a new forward may be accelerated again


def test_modules_without_their_own_graph_module_class_are_not_touched():
    assert not fastgraph.accelerate(nn.Sequential())  # type: ignore[arg-type]


class _Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_sliced_weight_reads_follow_parametrizations():
    torch.manual_seed(0)
    op = ElasticConv(nn.Conv2d(6, 8, 3, padding=1))
    parametrize.register_parametrization(op.module, "weight", _Double())
    op.out_sel, op.in_sel = 5, 4
    x = torch.randn(1, 4, 5, 5)
    original = op.module.parametrizations.weight.original
    expected = F.conv2d(x, 2 * original[:5, :4], op.module.bias[:5], padding=1)
    torch.testing.assert_close(op(x), expected)


def test_gradients_still_reach_the_shared_weights_in_train_mode():
    _, net = build_cnn()
    net.train()
    config = net.min_config()
    net.activate(config)
    net(cnn_input(config["res"], batch=4)).sum().backward()
    convs = [m for m in net.modules() if isinstance(m, ElasticConv)]
    assert all(c.module.weight.grad is not None for c in convs if _runs(net, c))


def _runs(net: SuperNetwork, op: nn.Module) -> bool:
    """Whether ``op`` is outside every inactive SkipBlock."""
    return not any(op in list(s.modules()) for s in net.modules()
                   if isinstance(s, SkipBlock) and not s.active)


def _block_gm(net: SuperNetwork) -> fx.GraphModule:
    return net.graph_module.block1.block


def test_residual_add_of_a_batch_norm_output_is_routed_through_add_into():
    _, net = build_cnn()
    assert fastgraph._ADD in type(_block_gm(net)).forward.__code__.co_names  # x + bn3(...)


def test_add_into_writes_into_the_fresh_operand_only_when_nothing_can_tell():
    bn = nn.BatchNorm1d(3).eval()
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    expected = b + a
    with torch.no_grad():
        fresh = a.clone()
        out = fastgraph.add_into(b, fresh, 1, bn)
        assert out is fresh and torch.equal(out, expected)
        assert fastgraph.add_into(a.clone(), b[:1], 0, bn).shape == (2, 3)  # broadcast: a + b
        assert fastgraph.add_into(a.clone(), b.double(), 0, bn).dtype == torch.float64
    fresh = a.clone()
    assert fastgraph.add_into(fresh, b, 0, bn) is not fresh  # autograd on
    for handle in (bn.register_forward_hook(lambda m, i, o: None),
                   nn.modules.module.register_module_forward_hook(lambda m, i, o: None)):
        with torch.no_grad():
            fresh = a.clone()
            assert fastgraph.add_into(fresh, b, 0, bn) is not fresh and torch.equal(fresh, a)
        handle.remove()


def test_a_hook_keeping_a_residual_operand_sees_it_unchanged():
    _, net = build_cnn()
    net.eval()
    kept = []
    block = _block_gm(net)
    block.get_submodule("bn3").module.register_forward_hook(lambda m, i, o: kept.append(o))
    project_out = []
    block.get_submodule("project").register_forward_hook(lambda m, i, o: project_out.append(o))
    with torch.no_grad():
        net(cnn_input(net.config["res"]))
        expected = block.get_submodule("bn3")(project_out[0])
    assert torch.equal(kept[0], expected)  # not bn3 output + block input


def test_residual_adds_in_place_keep_zoo_outputs_bit_identical():
    from bench.models import resnet20_cifar
    from compiler.pipeline import compile_supernet

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    net = compile_supernet(resnet20_cifar(num_classes=10).eval(), x).eval()
    stock = copy.deepcopy(net.graph_module)  # torch.fx's own code, sharing nothing
    assert not fastgraph.is_accelerated(stock)
    with torch.no_grad():
        for seed in (None, 3, 4):
            config = net.max_config() if seed is None else net.sample(seed)
            net.activate(config)
            _copy_state(net, stock)
            assert torch.equal(net(x), stock(x))


def _copy_state(net: SuperNetwork, stock: fx.GraphModule) -> None:
    """Give the ops and blocks of ``stock`` (a deep copy of net's graph module) net's state."""
    for mine, theirs in zip(net.graph_module.modules(), stock.modules()):
        for attr in ("in_sel", "out_sel", "sel", "kernel", "active"):
            if attr in mine.__dict__:
                theirs.__dict__[attr] = mine.__dict__[attr]
