"""compile_supernet over the zoo: the invariants of ../shared/DESIGN.md.

1. the maximal configuration reproduces the original model (before and after reordering);
2. extract(c)(x) equals the super-network under c (random configs drawn with hypothesis);
3. skipping a block equals replacing it by identity in the original model;
4. macs(c) equals a hook count on extract(c); params(c) equals extract(c)'s parameter count;
5. frozen and unsupported parts stay at full width and are never skipped.
"""
import copy
import functools
import operator
import re

import pytest
import torch
import torch.fx as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.models import ZOO
from compiler.capture import capture
from compiler.config import SupernetConfig
from compiler.pipeline import analyze, compile_supernet
from runtime.elastic import SkipBlock
from tests.conftest import zoo_input, zoo_model

TOL = dict(rtol=1e-5, atol=1e-5)
NAMES = sorted(ZOO)


@functools.lru_cache(maxsize=None)
def supernet(name: str, reorder: bool = True):
    net = compile_supernet(zoo_model(name), zoo_input(name), {"reorder": reorder})
    return net.eval()


@pytest.mark.parametrize("name", NAMES)
def test_max_config_reproduces_original(name):
    """Without reordering the maximal configuration calls the original modules: bit-exact."""
    net, x = supernet(name, reorder=False), zoo_input(name, seed=3)
    with torch.no_grad():
        ref = zoo_model(name)(x)
        with net.activate(net.max_config()):
            out = net(x)
    assert ref.abs().max() > 1e-2  # calibrated: the comparison is not vacuous
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_max_config_reproduces_original_after_reordering(name):
    """Reordering changes summation order only, so float32 differs by rounding (up to 1e-3
    relative on DenseNet's and EfficientNet's large calibrated logits); float64 shows the
    permutation itself is exact."""
    x = zoo_input(name, seed=3)
    model64 = copy.deepcopy(zoo_model(name)).double()
    net64 = compile_supernet(model64, x.double()).eval()
    with torch.no_grad():
        torch.testing.assert_close(net64(x.double()), model64(x.double()), rtol=1e-10, atol=1e-10)


def mac_count(module: torch.nn.Module, x: torch.Tensor) -> int:
    """MACs of every conv and linear at batch 1, counted with forward hooks."""
    total = 0

    def hook(m, args, out):
        nonlocal total
        per_sample = out.numel() // out.shape[0]
        if isinstance(m, torch.nn.Linear):
            total += per_sample * m.in_features
        else:
            total += per_sample * (m.in_channels // m.groups) * m.weight[0, 0].numel()

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        module(x[:1])
    for h in handles:
        h.remove()
    return total


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_extract_matches_supernet_and_costs(name, seed):
    net, x = supernet(name), zoo_input(name, seed=1)
    config = net.sample(seed)
    with torch.no_grad():
        with net.activate(config):
            expected = net(x)
        sub = net.extract(config)
        torch.testing.assert_close(sub(x), expected, **TOL)
    assert net.macs(config) == mac_count(sub, x)
    assert net.params(config) == sum(p.numel() for p in sub.parameters())
    fx.symbolic_trace(sub)  # a plain module fx can trace


def _identity_at(gm: fx.GraphModule, entry: str, exit_: str) -> fx.GraphModule:
    gm = fx.GraphModule(gm, gm.graph.__deepcopy__())
    nodes = {n.name: n for n in gm.graph.nodes}
    nodes[exit_].replace_all_uses_with(nodes[entry])
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "convnext", "vit"])
def test_skipping_a_block_equals_identity(name):
    net, x = supernet(name, reorder=False), zoo_input(name, seed=2)
    model = zoo_model(name)
    ir = capture(model, x)
    analysis = analyze(model, x)
    bad = {u.node for u in analysis.unsupported}
    blocks = [b for b in analysis.blocks.blocks if not bad & set(b.nodes)]
    paths = [p for d in net.bindings.depths for p in d.blocks]
    assert paths == ["_blocks." + re.sub(r"\W", "_", b.name) for b in blocks] and paths
    for block, path in zip(blocks, paths):
        skip = net.graph_module.get_submodule(path)
        assert isinstance(skip, SkipBlock)
        skip.active = False
        try:
            with torch.no_grad():
                got = net(x)
                ref = _identity_at(ir.gm, block.entry, block.exit)(x)
        finally:
            skip.active = True
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_resnet50_search_space():
    net = supernet("resnet50")
    kinds = [net.space[n].kind for n in net.space.names]
    assert kinds.count("width") == 37 and kinds.count("depth") == 4
    assert net.space.size == functools.reduce(
        operator.mul, (len(net.space[n].choices) for n in net.space.names))
    depth = {n: net.space[n].choices for n in net.space.names if n.startswith("depth:")}
    assert depth == {"depth:layer1": (2, 1, 0), "depth:layer2": (3, 2, 1, 0),
                     "depth:layer3": (5, 4, 3, 2, 1, 0), "depth:layer4": (2, 1, 0)}


@pytest.mark.parametrize("name", ["shufflenet_v2", "resnext", "vit"])
def test_frozen_and_unsupported_parts_stay_full_and_are_never_skipped(name):
    model, x = zoo_model(name), zoo_input(name)
    analysis = analyze(model, x)
    net = supernet(name)
    sub = net.extract(net.min_config())
    frozen_producers = {u.node for g in analysis.width_groups.groups if g.frozen
                        for u in analysis.width_groups.uses
                        if u.role == "out" and u.segments[0].group == g.name}
    original = dict(model.named_modules())
    extracted = {path.split(".block.")[-1]: m for path, m in sub.named_modules()}
    checked = 0
    for node in frozen_producers:
        path = analysis.ir.info(node).module_path
        m = extracted.get(path)
        if m is not None:
            size = getattr(m, "out_channels", getattr(m, "out_features", None))
            assert size == getattr(original[path], "out_channels",
                                   getattr(original[path], "out_features", None)), path
            checked += 1
    assert checked > 0
    bad = {u.node for u in analysis.unsupported}
    skippable = {p for d in net.bindings.depths for p in d.blocks}
    for block in analysis.blocks.blocks:
        if bad & set(block.nodes):
            assert "_blocks." + re.sub(r"\W", "_", block.name) not in skippable


def test_frozen_modules_and_manual_depth():
    model, x = zoo_model("resnet50"), zoo_input("resnet50")
    net = compile_supernet(model, x, {"frozen_modules": ["layer4"], "depth": ["layer1.1"],
                                      "kernels": False, "max_num_widths": 2})
    assert [d.dimension for d in net.bindings.depths] == ["depth:layer1"]
    assert not any(n.startswith("kernel:") for n in net.space.names)
    assert not any("layer4" in n for n in net.space.names)
    assert all(len(net.space[n].choices) <= 2 for n in net.space.names if n.startswith("width:"))


def test_bad_configuration_errors_name_the_problem():
    net = supernet("resnet20_cifar")
    config = dict(net.max_config())
    dim = next(n for n in net.space.names if n.startswith("width:"))
    with pytest.raises(ValueError, match=dim.replace(".", r"\.")):
        net.activate({**config, dim: 3})
    with pytest.raises(ValueError, match="bogus"):
        net.activate({**config, "bogus": 1})
    with pytest.raises(ValueError, match="valid keys"):
        SupernetConfig.from_dict({"widths": 3})
    with pytest.raises(ValueError, match="depth lists unknown block"):
        compile_supernet(zoo_model("resnet20_cifar"), zoo_input("resnet20_cifar"),
                         {"depth": ["nope"]})


def test_input_model_is_not_modified():
    model, x = zoo_model("mobilenet_v2"), zoo_input("mobilenet_v2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = compile_supernet(model, x)
    net.train()
    with net.activate(net.min_config()):
        net(x).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_multiple_resolutions_scale_macs():
    model, x = zoo_model("resnet20_cifar"), zoo_input("resnet20_cifar")
    net = compile_supernet(model, x, {"resolutions": [32, 16]})
    assert net.space["resolution"].choices == (32, 16)
    big = net.macs(net.max_config())
    small = net.macs(net.max_config().with_(resolution=16)) if hasattr(
        net.max_config(), "with_") else net.macs({**net.max_config(), "resolution": 16})
    assert big > 3 * small
    sub = net.extract({**net.max_config(), "resolution": 16})
    assert mac_count(sub, torch.zeros(1, 3, 16, 16)) == small


def test_save_load_round_trip(tmp_path):
    net, x = supernet("mobilenet_v3_small"), zoo_input("mobilenet_v3_small")
    path = tmp_path / "net.pt"
    net.save(path)
    from runtime.elastic import SuperNetwork, SupernetFileError
    loaded = SuperNetwork.load(path).eval()
    config = net.sample(7)
    with torch.no_grad(), net.activate(config), loaded.activate(config):
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert loaded.macs(config) == net.macs(config)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SupernetFileError):
        SuperNetwork.load(path)
