"""SuperNetwork on hand-wired graphs: invariants 1-4, extract, macs/params, activate (supernet.py)."""
from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.fx as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from runtime.elastic import Bindings, OpBinding, Segment, SkipBlock, SuperNetwork

try:
    from test_elastic_models import build_cnn, build_tokens, cnn_input, hook_macs, tokens_input
except ImportError:  # tests/ became a package
    from tests.test_elastic_models import build_cnn, build_tokens, cnn_input, hook_macs, tokens_input

CNN = build_cnn()
TOKENS = build_tokens()
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _input(net: SuperNetwork, config, batch: int = 2) -> torch.Tensor:
    return cnn_input(config["res"], batch) if "res" in config else tokens_input(batch)


@pytest.mark.parametrize("built", [CNN, TOKENS], ids=["cnn", "tokens"])
def test_max_config_reproduces_the_original_bit_for_bit(built):
    model, net = built
    net.activate(net.max_config())
    x = _input(net, net.max_config())
    with torch.no_grad():
        assert torch.equal(net(x), model(x))


@pytest.mark.parametrize("built", [CNN, TOKENS], ids=["cnn", "tokens"])
def test_extracted_max_config_has_the_original_keys_and_values(built):
    model, net = built
    extracted = net.extract(net.max_config())
    original = model.state_dict()
    assert set(extracted.state_dict()) == set(original)
    for key, value in extracted.state_dict().items():
        assert torch.equal(value, original[key]), key


@pytest.mark.parametrize("built", [CNN, TOKENS], ids=["cnn", "tokens"])
@SETTINGS
@given(data=st.data())
def test_extract_equals_supernet_macs_and_params_match(built, data):
    _, net = built
    config = net.space.decode([data.draw(st.integers(0, len(d.choices) - 1), label=d.name)
                               for d in net.space])
    x = _input(net, config)
    with torch.no_grad(), net.activate(config):
        expected = net(x)
    extracted = net.extract(config).eval()
    with torch.no_grad():
        assert_close(extracted(x), expected, rtol=1e-5, atol=1e-5)
    assert net.macs(config) == hook_macs(extracted, x[:1])
    assert net.params(config) == sum(p.numel() for p in extracted.parameters())


def test_min_config_macs_params_and_outputs():
    _, net = CNN
    config = net.min_config()
    x = cnn_input(12)
    extracted = net.extract(config)
    with torch.no_grad(), net.activate(config):
        assert_close(extracted(x), net(x), rtol=1e-5, atol=1e-5)
    assert net.macs(config) == hook_macs(extracted, x[:1]) < net.macs(net.max_config())
    assert not any(isinstance(m, SkipBlock) for m in extracted.modules())
    assert "block1" not in dict(extracted.named_children())


def test_max_macs_equal_hooks_on_the_original_model():
    model, net = CNN
    assert net.macs(net.max_config()) == hook_macs(model, cnn_input(16, batch=1))
    assert net.params(net.max_config()) == sum(p.numel() for p in model.parameters())


def test_activate_context_manager_restores_and_plain_call_sticks():
    _, net = CNN
    net.activate(net.max_config())
    small = net.min_config()
    with net.activate(small) as active:
        assert active is net and net.config == small
        assert net.graph_module.block1.active is False
        assert net.graph_module.stem.out_sel == 4
    assert net.config == net.max_config() and net.graph_module.block1.active is True
    assert net.graph_module.stem.out_sel is None and net.graph_module.conv2.kernel is None
    net.activate({**net.max_config(), "w_stem": 6, "k_conv2": 3})
    assert net.config["w_stem"] == 6 and net.graph_module.conv2.kernel == 3
    net.activate(net.max_config())


def test_activate_rejects_invalid_configs_naming_the_dimension():
    _, net = CNN
    with pytest.raises(ValueError, match=r"'w_stem' \(width, choices \(8, 6, 4\)\) got 5"):
        net.activate({**net.max_config(), "w_stem": 5})


def test_identical_maps_share_one_cached_index():
    _, net = CNN
    config = net.max_config().with_(w_a=4)
    with net.activate(config):
        index = net.graph_module.fuse.in_sel
        assert index.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    with net.activate(config):
        assert net.graph_module.fuse.in_sel is index


def test_skipped_block_and_inactive_channels_get_no_gradient():
    model, net = build_cnn(seed=3)
    net.train()
    config = net.max_config().with_(depth=1, w_mid=8, w_stem=4)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with net.activate(config):
        net(cnn_input(16, batch=4)).sum().backward()
    assert all(p.grad is None for p in model.block2.parameters())
    assert model.block1.expand.weight.grad is not None
    assert model.conv2.weight.grad[8:].abs().sum() == 0 and model.conv2.weight.grad[:8].abs().sum() > 0
    assert model.stem.weight.grad[4:].abs().sum() == 0
    state = net.state_dict()
    for key in ("graph_module.bn2.module.running_mean", "graph_module.block1.block.bn3.module.running_var"):
        assert torch.equal(state[key][8:], before[key][8:]) and not torch.equal(state[key][:8], before[key][:8])
    assert torch.equal(state["graph_module.block2.block.bn1.module.running_mean"],
                       before["graph_module.block2.block.bn1.module.running_mean"])


def test_extract_shares_no_storage_and_keeps_the_mode():
    _, net = TOKENS
    config = net.sample(5)
    extracted = net.extract(config)
    ours = {t.untyped_storage().data_ptr() for t in net.state_dict().values()}
    theirs = {t.untyped_storage().data_ptr() for t in extracted.state_dict().values()}
    assert not ours & theirs
    assert extracted.training is False and net.config == net.max_config()


def test_extract_is_traceable_and_onnx_exportable():
    _, net = CNN
    config = net.sample(11).with_(w_a=4, depth=1, k_dw1=3, res=12)
    extracted = net.extract(config)
    x = cnn_input(12, batch=1)
    retraced = fx.symbolic_trace(extracted)
    with torch.no_grad():
        assert_close(retraced(x), extracted(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(extracted, (x,), buffer, dynamo=False)
    assert len(buffer.getvalue()) > 1000


def test_macs_and_params_use_no_forward_pass():
    _, net = CNN
    calls = []
    hook = net.graph_module.stem.register_forward_hook(lambda *a: calls.append(1))
    try:
        net.macs(net.min_config()), net.params(net.sample(0))
    finally:
        hook.remove()
    assert calls == []


def _linear_net():
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 8), nn.Conv1d(8, 8, 1, groups=2)))
    from runtime.elastic import Dimension, SearchSpace, wrap
    gm._modules["0"] = wrap(gm._modules["0"])
    gm._modules["1"] = wrap(gm._modules["1"])
    return gm, SearchSpace([Dimension("h", "width", (8, 4)), Dimension("k", "kernel", (3, 1))])


def test_bindings_problems_are_reported_together():
    gm, space = _linear_net()
    bad = Bindings(ops=[OpBinding("0", out_map=[Segment("h", 6)]), OpBinding("nope", None, None),
                        OpBinding("1", in_map=[Segment("h", 8)])],
                   out_spatial={"0": {None: 1}})
    with pytest.raises(ValueError) as info:
        SuperNetwork(gm, space, bad)
    message = str(info.value)
    assert "'0'.out_sel: map covers 6 features, the op has 8" in message
    assert "'nope': no such module" in message
    assert "'1'.in_sel: map covers 8 features, the op has 4" in message  # one group's inputs
    assert "dimension 'k' (kernel, choices (3, 1)) drives nothing" in message
    assert "'1': out_spatial lacks resolutions [None]" in message


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def _nested_net():
    """A SkipBlock whose fx block holds another SkipBlock around a plain (non-fx) Sequential."""
    from runtime.elastic import DepthBinding, Dimension, SearchSpace, wrap
    torch.manual_seed(0)
    inner = SkipBlock(_Residual(nn.Sequential(wrap(nn.Linear(8, 16)), nn.ReLU(), wrap(nn.Linear(16, 8)))))
    outer_body = fx.symbolic_trace(nn.Sequential(nn.Linear(8, 8), nn.Tanh()))
    outer_body.add_module("inner", inner)
    out = outer_body.graph.output_node()
    with outer_body.graph.inserting_before(out):
        call = outer_body.graph.call_module("inner", (out.args[0],))
    out.args = (call,)
    outer_body.recompile()
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    gm.add_module("outer", SkipBlock(outer_body))
    first = next(n for n in gm.graph.nodes if n.op == "call_module")
    with gm.graph.inserting_after(first):
        skip = gm.graph.call_module("outer", (first,))
    first.replace_all_uses_with(skip)
    skip.args = (first,)
    gm.recompile()
    space = SearchSpace([Dimension("d_outer", "depth", (1, 0)), Dimension("d_inner", "depth", (1, 0)),
                         Dimension("h", "width", (16, 8))])
    h = (Segment("h", 16),)
    body = "outer.block.inner.block.body"
    bindings = Bindings(ops=[OpBinding(f"{body}.0", None, h), OpBinding(f"{body}.2", h, None)],
                        depths=[DepthBinding("d_outer", ("outer",)),
                                DepthBinding("d_inner", ("outer.block.inner",))],
                        out_spatial={p: {None: 1} for p in ("0", "1", "outer.block.0", f"{body}.0", f"{body}.2")})
    return SuperNetwork(gm, space, bindings)


@pytest.mark.parametrize("vector", [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1], [1, 1, 1]])
def test_nested_skip_blocks_and_plain_module_blocks(vector):
    net = _nested_net()
    config = net.space.decode(vector)
    x = torch.randn(3, 4)
    extracted = net.extract(config)
    with torch.no_grad(), net.activate(config):
        assert_close(extracted(x), net(x), rtol=1e-6, atol=1e-6)
    assert net.macs(config) == hook_macs(extracted, x[:1])
    assert net.params(config) == sum(p.numel() for p in extracted.parameters())
    assert not any(isinstance(m, SkipBlock) for m in extracted.modules())


def test_measure_out_spatial_runs_the_maximal_network_and_restores_state():
    from runtime.elastic import measure_out_spatial
    _, net = CNN
    config = net.min_config()
    with net.activate(config):
        spatial = measure_out_spatial(net.graph_module, {16: (cnn_input(16, batch=1),)})
        assert net.graph_module.block2.active is False and net.graph_module.stem.out_sel == 4
    assert spatial["block2.block.dw"] == {16: 64} and spatial["conv2"] == {16: 64}


def test_deepcopy_is_independent():
    import copy
    _, net = CNN
    clone = copy.deepcopy(net)
    clone.activate(clone.min_config())
    assert net.config == net.max_config() and net.graph_module.block1.active
    x = cnn_input(12)
    with torch.no_grad(), net.activate(net.min_config()):
        assert torch.equal(clone(x), net(x))


def test_depthwise_maps_must_agree():
    from runtime.elastic import Dimension, SearchSpace, wrap
    gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)))
    gm._modules["0"] = wrap(gm._modules["0"])
    space = SearchSpace([Dimension("a", "width", (4, 2)), Dimension("b", "width", (4, 2))])
    bindings = Bindings(ops=[OpBinding("0", [Segment("a", 4)], [Segment("b", 4)])],
                        out_spatial={"0": {None: 1}})
    with pytest.raises(ValueError, match="depthwise conv has one channel axis"):
        SuperNetwork(gm, space, bindings)


def test_moving_the_network_keeps_the_active_config():
    model, net = build_tokens(seed=2)
    config = net.space.decode([1, 2, 0])
    net.activate(config)
    net.to(torch.float64)
    assert net.config == config and net.graph_module.mlp.block.fc1.out_sel == 8
    assert net(tokens_input().double()).dtype == torch.float64
