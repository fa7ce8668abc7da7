"""ONNX export, OpenVINO conversion, the lowering cache and lowering errors."""
from __future__ import annotations

import builtins
import importlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from runtime.lower import (LoweringCache, LoweringError, RuntimeMissingError, check_openvino,
                           fingerprint_module, to_onnx, to_openvino)
from runtime.lower import onnx_export, openvino as lower_ov


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERNET_CACHE_DIR", str(tmp_path / "cache"))


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Residual(8),
                      nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.Hardswish(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _ort(path, x: torch.Tensor) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]


def test_onnx_matches_torch_and_batch_is_dynamic():
    m, x = tiny_cnn(), torch.randn(1, 3, 16, 16)
    path = to_onnx(m, x)
    x3 = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = m(x3).numpy()
    np.testing.assert_allclose(_ort(path, x3), expected, atol=1e-4, rtol=0)


def test_static_batch_export_fixes_the_batch():
    path = to_onnx(tiny_cnn(), torch.randn(2, 3, 16, 16), dynamic_batch=False)
    with pytest.raises(Exception):
        _ort(path, torch.randn(3, 3, 16, 16))


def test_export_leaves_module_untouched():
    m = tiny_cnn().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    to_onnx(m, torch.randn(1, 3, 16, 16))
    assert m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_openvino_from_module_and_from_onnx_matches_torch():
    import openvino as ov

    m, x = tiny_cnn(), torch.randn(2, 3, 16, 16)
    for model in (to_openvino(m, x[:1]), to_openvino(to_onnx(m, x[:1]))):
        assert isinstance(model, ov.Model)
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        with torch.no_grad():
            np.testing.assert_allclose(compiled(x.numpy())[0], m(x).numpy(), atol=1e-4, rtol=0)
    assert check_openvino(m, to_openvino(m, x[:1]), x) <= 1e-4


def test_check_catches_a_wrong_export():
    m, x = tiny_cnn(), torch.randn(1, 3, 16, 16)
    path = to_onnx(m, x, cache=False)
    with pytest.raises(LoweringError, match="differs from PyTorch"):
        onnx_export.check_onnx(tiny_cnn(seed=1), path, x)


def test_cache_serves_repeated_lowering_without_exporting(monkeypatch):
    m, x = tiny_cnn(), torch.randn(1, 3, 16, 16)
    store = LoweringCache(None)
    first = to_onnx(m, x, cache=store)
    calls = []
    monkeypatch.setattr(onnx_export, "_export_any", lambda *a, **k: calls.append(a))
    assert to_onnx(m, x, cache=store) == first and calls == []
    assert to_onnx(tiny_cnn(), x, cache=store) == first  # same structure and weights, new object
    assert lower_ov.to_openvino(m, x, cache=store) is lower_ov.to_openvino(m, x, cache=store)


def test_disk_cache_is_shared_by_new_cache_objects(tmp_path, monkeypatch):
    m, x = tiny_cnn(), torch.randn(1, 3, 16, 16)
    path = to_onnx(m, x, cache=LoweringCache(tmp_path / "c"))
    monkeypatch.setattr(onnx_export, "_export_any", lambda *a, **k: pytest.fail("re-exported"))
    assert to_onnx(m, x, cache=LoweringCache(tmp_path / "c")) == path
    ov_model = to_openvino(m, x, cache=LoweringCache(tmp_path / "c"))
    assert lower_ov.ov_model_key(ov_model) is not None
    assert list((tmp_path / "c").rglob("*.xml")) and list((tmp_path / "c").rglob("*.bin"))


def test_export_to_explicit_path(tmp_path):
    out = to_onnx(tiny_cnn(), torch.randn(1, 3, 16, 16), tmp_path / "sub" / "m.onnx")
    assert out == tmp_path / "sub" / "m.onnx" and out.stat().st_size > 0


def test_fingerprint_tracks_structure_and_weights():
    a, b = tiny_cnn(0), tiny_cnn(1)
    x = torch.randn(1, 3, 16, 16)
    assert fingerprint_module(a, x) == fingerprint_module(tiny_cnn(0), x)
    assert fingerprint_module(a, x) != fingerprint_module(b, x)
    assert fingerprint_module(a, x, weights=False) == fingerprint_module(b, x, weights=False)
    assert fingerprint_module(a, x) != fingerprint_module(a, torch.randn(1, 3, 32, 32))
    wider = nn.Sequential(nn.Conv2d(3, 9, 3))
    assert fingerprint_module(nn.Sequential(nn.Conv2d(3, 8, 3)), weights=False) != \
        fingerprint_module(wider, weights=False)


class _Svd(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x)[1].sum(-1, keepdim=True).unsqueeze(-1) * x


def test_unexportable_module_names_the_op_and_where():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), _Svd()).eval()
    with pytest.raises(LoweringError) as info:
        to_onnx(net, torch.randn(1, 3, 4, 4), cache=False)
    assert info.value.op == "aten::linalg_svd"
    assert "'aten::linalg_svd' at 2 (_Svd)" in str(info.value)
    assert "Hint:" in str(info.value)


class _Fft(nn.Module):
    def forward(self, x):
        return torch.fft.rfft2(x).abs()


def test_dynamo_exporter_is_the_fallback():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(LoweringError, match="aten::fft_rfft2"):
        to_onnx(_Fft(), x, exporter="torchscript", cache=False)
    path = to_onnx(_Fft(), x, cache=False)  # auto: TorchScript fails, dynamo exports
    np.testing.assert_allclose(_ort(path, x), _Fft()(x).numpy(), atol=1e-4)


def test_missing_runtime_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "openvino":
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib, "import_module", lambda name: fake_import(name))
    with pytest.raises(RuntimeMissingError, match="pip install openvino"):
        to_openvino(tiny_cnn(), torch.randn(1, 3, 16, 16), cache=False)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="exporter"):
        to_onnx(tiny_cnn(), torch.randn(1, 3, 8, 8), exporter="tvm")
    with pytest.raises(TypeError, match="example_inputs"):
        to_onnx(tiny_cnn(), [1, 2])
    with pytest.raises(ValueError, match="example_inputs"):
        to_openvino(tiny_cnn())
