"""Dimension dependencies: declared (active_when), derived from bindings, canonical form, features."""
import json

import numpy as np
import pytest
import torch

from runtime.elastic import Dimension, SearchSpace
from runtime.elastic.bindings import Bindings, DepthBinding, KernelBinding, OpBinding
from runtime.elastic.channels import Segment
from runtime.elastic.dependencies import derive_dependencies


def space():
    return SearchSpace([
        Dimension("d", "depth", (3, 2, 1)),
        Dimension("w0", "width", (8, 4)),
        Dimension("w2", "width", (8, 6, 4), active_when=("d", 2)),
        Dimension("k3", "kernel", (5, 3), active_when=("d", 3)),
    ])


def test_canonical_sets_irrelevant_dimensions_to_their_maximum():
    s = space()
    assert dict(s.canonical({"d": 1, "w0": 4, "w2": 4, "k3": 3})) == {"d": 1, "w0": 4, "w2": 8, "k3": 5}
    assert dict(s.canonical({"d": 2, "w0": 4, "w2": 4, "k3": 3})) == {"d": 2, "w0": 4, "w2": 4, "k3": 5}
    assert s.canonical({"d": 3, "w0": 4, "w2": 6, "k3": 3}) == {"d": 3, "w0": 4, "w2": 6, "k3": 3}
    assert s.relevant({"d": 2, "w0": 4, "w2": 4, "k3": 3}) == {"d": True, "w0": True, "w2": True,
                                                               "k3": False}


def test_features_are_masked_where_irrelevant():
    s = space()
    f = s.features([{"d": 1, "w0": 4, "w2": 4, "k3": 3}, s.max_config()])
    np.testing.assert_allclose(f, [[1 / 3, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    X = s.indices([{"d": 1, "w0": 8, "w2": 6, "k3": 3}])
    np.testing.assert_array_equal(s.canonical_indices(X), [[2, 0, 0, 0]])


def test_round_trip_and_backward_compatible_dict():
    s = space()
    again = SearchSpace.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and again["k3"].active_when == ("d", 3)
    plain = SearchSpace([Dimension("w", "width", (8, 4))])
    assert plain.to_dict() == {"dimensions": [{"name": "w", "kind": "width", "choices": [8, 4]}]}


@pytest.mark.parametrize("bad, message", [
    (("nope", 2), "not a depth dimension"),
    (("w0", 2), "not a depth dimension"),
    (("d", 4), "must be in"),
])
def test_validate_checks_referenced_depth_dimensions(bad, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace([Dimension("d", "depth", (3, 2, 1)), Dimension("w0", "width", (8, 4)),
                     Dimension("x", "width", (4, 2), active_when=bad)])


def test_derived_from_bindings_first_block_decides():
    s = SearchSpace([Dimension("d", "depth", (3, 2, 1)), Dimension("w_in", "width", (8, 4)),
                     Dimension("w_b1", "width", (8, 4)), Dimension("w_b12", "width", (8, 4)),
                     Dimension("k_b2", "kernel", (5, 3)), Dimension("w_out", "width", (8, 4))])
    blocks = ("stage.0", "stage.1", "stage.2")
    b = Bindings(ops=[OpBinding("stem", out_map=[Segment("w_in", 8)]),
                      OpBinding("stage.1.block.conv", in_map=[Segment("w_in", 8)],
                                out_map=[Segment("w_b1", 8)]),
                      OpBinding("stage.1.block.conv2", out_map=[Segment("w_b12", 8)]),
                      OpBinding("stage.2.block.conv2", out_map=[Segment("w_b12", 8)]),
                      OpBinding("stage.2.block.dw", out_map=[Segment("w_out", 8)]),
                      OpBinding("head", in_map=[Segment("w_out", 8)])],
                 kernels=[KernelBinding("k_b2", ("stage.2.block.dw",))],
                 depths=[DepthBinding("d", blocks)])
    derived = derive_dependencies(s, b)
    assert {d.name: d.active_when for d in derived} == {
        "d": None, "w_in": None, "w_b1": ("d", 2), "w_b12": ("d", 2), "k_b2": ("d", 3), "w_out": None}


def test_compiled_supernet_gets_dependencies_and_they_match_the_network():
    """A dimension marked irrelevant really changes nothing: same output, same MACs."""
    from bench.models import resnet20_cifar
    from compiler.pipeline import compile_supernet

    torch.manual_seed(0)
    net = compile_supernet(resnet20_cifar(num_classes=10).eval(), torch.zeros(1, 3, 32, 32)).eval()
    dep = {d.name: d.active_when for d in net.space if d.active_when}
    assert dep["width:layer1.2.conv1"] == ("depth:layer1", 3)
    assert "width:conv1" not in dep
    c = net.max_config().with_({"depth:layer1": 1})
    other = c.with_({"width:layer1.2.conv1": 8})
    assert not net.space.relevant(c)["width:layer1.2.conv1"]
    assert net.space.canonical(other) == net.space.canonical(c)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.activate(c) and net(x), net.activate(other) and net(x))
    assert net.macs(c) == net.macs(other)
