"""The fast paths of the elastic runtime keep behaviour: fastgraph.py, base.py Rule 4, supernet.py Rule 8.

No timings here (those are in bench/supernet_overhead.py): only that the accelerated code calls
the same modules, sees replaced modules and hooks, survives copies and saving, and backs off.
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
