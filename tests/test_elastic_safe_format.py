"""The code-free super-network format (supernet.py Rule 6, serialize.py Rules 1-5).

Every zoo super-network saves as data and tensors, reloads with weights_only and computes the
same under random configurations; a file crafted to run code on unpickling is refused without
running it; the pickled format-1 file needs an explicit trusted=True.
"""
from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.fx as fx

from bench.models import ZOO
from compiler.pipeline import compile_supernet
from runtime.elastic import SuperNetwork, SupernetFileError
from runtime.elastic.serialize import (NotSerializableError, module_from_data, module_to_data,
                                       register_safe)
from tests.conftest import zoo_input, zoo_model


@functools.lru_cache(maxsize=None)
def _net(name):
    return compile_supernet(zoo_model(name), zoo_input(name)).eval()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_round_trip_is_code_free_and_exact(name, tmp_path):
    net = _net(name)
    path = tmp_path / "net.pt"
    net.save(path)
    raw = torch.load(path, weights_only=True)  # plain data and tensors only
    assert raw["format_version"] == 2 and isinstance(raw["graph_module"], dict)
    loaded = SuperNetwork.load(path).eval()
    assert loaded.space == net.space and loaded.bindings == net.bindings
    x = zoo_input(name, seed=5)
    for config in (net.max_config(), net.min_config(), net.sample(3)):
        with torch.no_grad(), net.activate(config), loaded.activate(config):
            torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
        assert loaded.macs(config) == net.macs(config)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SUPERNET_TEST_MARKER']}",))


def test_crafted_file_is_refused_without_running_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SUPERNET_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"magic": "runtime.elastic.SuperNetwork", "format_version": 2, "x": _Boom()}, path)
    with pytest.raises(SupernetFileError, match="pickled code"):
        SuperNetwork.load(path)
    assert not marker.exists()


def test_crafted_data_naming_a_dangerous_function_is_refused(tmp_path):
    net = _net("resnet20_cifar")
    data = module_to_data(net.graph_module)
    node = next(e for e in data["graph"]["nodes"] if e["op"] == "call_function")
    node["target"] = {"fn": "os:system"}
    with pytest.raises(NotSerializableError, match="os:system"):
        module_from_data(data)
    data = module_to_data(net.graph_module)
    data["class"] = "subprocess:Popen"
    with pytest.raises(NotSerializableError, match="not on the allow-list"):
        module_from_data(data)


def test_format_one_needs_trusted(tmp_path):
    net = _net("resnet20_cifar")
    path = tmp_path / "old.pt"
    net.save(path, trusted_format=True)
    with pytest.raises(SupernetFileError, match="trusted=True"):
        SuperNetwork.load(path)
    loaded = SuperNetwork.load(path, trusted=True).eval()
    x = zoo_input("resnet20_cifar")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def _double(x):
    return x * 2


fx.wrap("_double")


class _Doubler(torch.nn.Module):
    def forward(self, x):
        return _double(x)


def test_unknown_function_is_named_and_register_safe_allows_it(monkeypatch):
    import runtime.elastic.serialize as serialize
    monkeypatch.setattr(serialize, "_extra", set())
    gm = fx.symbolic_trace(_Doubler())
    assert any(n.target is _double for n in gm.graph.nodes)
    with pytest.raises(NotSerializableError, match="_double.*register_safe"):
        module_to_data(gm)
    register_safe(_double)
    copy = module_from_data(module_to_data(gm))
    assert torch.equal(copy(torch.ones(2)), torch.full((2,), 2.0))


def test_shared_parameters_stay_shared():
    lin = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    copy = module_from_data(module_to_data(model))
    assert copy[0] is copy[2]
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.weight = a.weight
    copy = module_from_data(module_to_data(torch.nn.Sequential(a, b)))
    assert copy[0].weight is copy[1].weight
