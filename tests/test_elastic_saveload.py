"""SuperNetwork.save / load round trip and clear errors for bad files (supernet.py Rule 6)."""
from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from runtime.elastic import Bindings, SuperNetwork, SupernetFileError
from runtime.elastic.supernet import FORMAT_VERSION, MAGIC

try:
    from test_elastic_models import build_cnn, build_tokens, cnn_input, tokens_input
except ImportError:  # tests/ became a package
    from tests.test_elastic_models import build_cnn, build_tokens, cnn_input, tokens_input


@pytest.fixture(scope="module")
def saved_cnn(tmp_path_factory):
    _, net = build_cnn(seed=7)
    with torch.no_grad():  # make the kernel transform non-trivial so it must be saved
        net.graph_module.conv2.kernel_transforms["5to3"].mul_(1.5)
    path = tmp_path_factory.mktemp("supernet") / "cnn.pt"
    net.activate(net.sample(1))
    net.save(path)
    return net, path


def test_round_trip_reproduces_outputs_config_and_meta(saved_cnn):
    net, path = saved_cnn
    loaded = SuperNetwork.load(path).eval()
    assert loaded.config == net.config and loaded.meta == {"model": "TinyCNN"}
    assert loaded.space == net.space and loaded.bindings == net.bindings
    for seed in (2, 3):
        config = net.sample(seed).with_(k_conv2=3)
        x = cnn_input(config["res"])
        with torch.no_grad(), net.activate(config), loaded.activate(config):
            assert_close(loaded(x), net(x), rtol=0, atol=0)
        assert loaded.macs(config) == net.macs(config) and loaded.params(config) == net.params(config)


def test_loaded_network_is_independent_and_trainable(saved_cnn):
    net, path = saved_cnn
    loaded = SuperNetwork.load(path)
    shared = {p.data_ptr() for p in net.parameters()} & {p.data_ptr() for p in loaded.parameters()}
    assert not shared
    loaded.train()
    with loaded.activate(loaded.min_config()):
        loaded(cnn_input(12)).sum().backward()
    assert loaded.graph_module.stem.module.weight.grad is not None


def test_tokens_round_trip(tmp_path):
    _, net = build_tokens()
    net.save(tmp_path / "tokens.pt")
    loaded = SuperNetwork.load(tmp_path / "tokens.pt").eval()
    config = net.min_config()
    with torch.no_grad(), net.activate(config), loaded.activate(config):
        assert_close(loaded(tokens_input()), net(tokens_input()), rtol=0, atol=0)


def test_truncated_file_raises_a_clear_error(saved_cnn, tmp_path):
    _, path = saved_cnn
    data = path.read_bytes()
    for cut in (len(data) // 2, 100):
        broken = tmp_path / f"cut{cut}.pt"
        broken.write_bytes(data[:cut])
        with pytest.raises(SupernetFileError, match="truncated or corrupt"):
            SuperNetwork.load(broken)


@pytest.mark.parametrize("payload", [{"weight": torch.zeros(2)}, [1, 2, 3], {"magic": "something else"}])
def test_foreign_file_raises_not_a_supernet(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(SupernetFileError, match="not a supernet file.*expected a dict with keys"):
        SuperNetwork.load(path)


def test_unsupported_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"magic": MAGIC, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(SupernetFileError, match=f"unsupported supernet format version {FORMAT_VERSION + 1}"):
        SuperNetwork.load(path)


def test_missing_file_is_a_plain_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        SuperNetwork.load(tmp_path / "absent.pt")


def test_supernet_file_error_is_a_value_error():
    assert issubclass(SupernetFileError, ValueError)


def test_bindings_round_trip_through_json(saved_cnn):
    net, _ = saved_cnn
    data = json.loads(json.dumps(net.bindings.to_dict()))
    assert Bindings.from_dict(data) == net.bindings
    assert Bindings.from_dict(data).spatial("conv2") == {12: 36, 16: 64}


def test_save_of_an_unpicklable_network_is_clear_and_leaves_no_file(tmp_path):
    _, net = build_tokens()
    net.meta["callback"] = lambda: None
    with pytest.raises(ValueError, match="cannot save the super-network"):
        net.save(tmp_path / "bad.pt")
    assert list(tmp_path.iterdir()) == []


def test_save_to_a_file_object(tmp_path):
    import io
    _, net = build_tokens()
    buffer = io.BytesIO()
    net.save(buffer)
    (tmp_path / "copy.pt").write_bytes(buffer.getvalue())
    assert SuperNetwork.load(tmp_path / "copy.pt").config == net.config
