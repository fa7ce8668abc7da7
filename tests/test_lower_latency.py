"""measure_latency, compare_latency and request_latency: report contents, settings and errors.

Timings are never asserted here (they belong to bench/lowering.py): only that the statistics are
consistent and the settings reach the runtimes.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from runtime.lower import (DeviceUnavailableError, LatencyReport, LoweringCache,
                           compare_latency, measure_latency, quantize_int8, request_latency,
                           to_onnx, to_openvino)
from runtime.lower.latency import _cv, _interleaved_repeat
from runtime.lower.runners import Samples
from runtime.lower.runners import normalize_device

FAST = dict(warmup=2, iterations=5, repeats=2)
SHAPE = (1, 3, 16, 16)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERNET_CACHE_DIR", str(tmp_path / "cache"))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def _consistent(r: LatencyReport) -> None:
    assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
    assert r.mean_ms > 0 and r.std_ms >= 0 and r.throughput_ips > 0
    assert len(r.repeat_p50_ms) == r.repeats and r.cpu_p50_ms > 0
    assert r.cv_p50 is not None and r.cv_p50 >= 0
    env = r.environment
    assert env["cpu_model"] and env["usable_cores"] >= 1 and env["versions"]["torch"]
    assert env["threads"] == r.threads and env["device"] == r.device
    assert LatencyReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("backend,precision", [
    ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
    ("openvino", "fp32"), ("openvino", "int8")])
def test_every_backend_and_precision_reports(backend, precision):
    r = measure_latency(tiny_cnn(), backend=backend, precision=precision, input_shape=SHAPE,
                        batch_size=2, threads=1, **FAST)
    _consistent(r)
    assert (r.backend, r.precision, r.batch_size, r.threads) == (backend, precision, 2, 1)


def test_runtime_settings_follow_the_request():
    ov = measure_latency(tiny_cnn(), backend="openvino", input_shape=SHAPE, threads=1, **FAST)
    assert ov.runtime_config["PERFORMANCE_HINT"] == "LATENCY"
    assert ov.runtime_config["INFERENCE_NUM_THREADS"] == "1"
    assert ov.runtime_config["INFERENCE_PRECISION_HINT"] == "f32"
    tp = measure_latency(tiny_cnn(), backend="openvino", mode="throughput", input_shape=SHAPE,
                         **FAST)
    assert tp.runtime_config["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert tp.threads == tp.environment["usable_cores"]  # Rule 4: all cores for throughput
    _consistent(tp)
    ort = measure_latency(tiny_cnn(), backend="onnxruntime", input_shape=SHAPE, threads=2, **FAST)
    assert ort.runtime_config["intra_op_num_threads"] == 2
    assert ort.runtime_config["execution_mode"] == "ORT_SEQUENTIAL"


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    measure_latency(tiny_cnn(), input_shape=SHAPE, threads=1, **FAST)
    assert torch.get_num_threads() == before


def test_lowered_artifacts_are_measured_as_given():
    m, x = tiny_cnn(), torch.randn(SHAPE)
    onnx_path = to_onnx(m, x)
    assert measure_latency(onnx_path, backend="onnxruntime", **FAST).batch_size == 1
    q = quantize_int8(to_openvino(m, x), torch.randn(4, *SHAPE[1:]), subset_size=4)
    r = measure_latency(q, backend="openvino", precision="int8", batch_size=3, **FAST)
    assert r.batch_size == 3 and r.precision == "int8"


def test_compare_interleaves_configs_under_one_environment():
    reports = compare_latency(tiny_cnn(), [("torch", "fp32"), ("openvino", "int8")],
                              input_shape=SHAPE, **FAST)
    assert list(reports) == ["torch/fp32", "openvino/int8"]
    assert reports["torch/fp32"].environment == reports["openvino/int8"].environment
    own = to_onnx(tiny_cnn(), torch.randn(SHAPE))
    mixed = compare_latency(tiny_cnn(), [("onnxruntime", "fp32", own)], input_shape=SHAPE, **FAST)
    assert mixed["onnxruntime/fp32"].batch_size == 1


def test_request_is_served_from_cache_by_architecture(tmp_path):
    store = LoweringCache(tmp_path / "c")
    first = request_latency(tiny_cnn(), input_shape=SHAPE, iterations=5, cache=store)
    assert set(first) == {"fp32", "int8"} and not first["fp32"].from_cache
    other_weights = tiny_cnn()
    with torch.no_grad():
        other_weights[0].weight.mul_(2)
    again = request_latency(other_weights, input_shape=SHAPE, iterations=5, cache=store)
    assert again["int8"].from_cache and again["int8"].p50_ms == first["int8"].p50_ms
    from_disk = request_latency(tiny_cnn(), input_shape=SHAPE, iterations=5,
                                cache=LoweringCache(tmp_path / "c"))
    assert from_disk["fp32"].from_cache and from_disk["fp32"].p90_ms == first["fp32"].p90_ms
    wider = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())
    fresh = request_latency(wider, input_shape=SHAPE, iterations=5, cache=store)
    assert not fresh["fp32"].from_cache


class _Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def time_repeat(self, n):
        self.log.append((self.name, n))
        return Samples(np.ones(n), np.ones(n), 0.001 * n, n)


def test_interleaving_switches_configs_every_few_calls():
    log: list = []
    parts = _interleaved_repeat({"a": _Recorder("a", log), "b": _Recorder("b", log)}, 5, 2)
    assert [len(p.wall_ms) for p in parts.values()] == [5, 5]
    assert parts["a"].images == 5 and parts["a"].elapsed_s == pytest.approx(0.005)
    assert log == [("a", 1), ("a", 2), ("b", 1), ("b", 2)] * 2 + [("a", 1), ("a", 1),
                                                                  ("b", 1), ("b", 1)]
    r = compare_latency(tiny_cnn(), [("torch", "fp32"), ("onnxruntime", "fp32")],
                        input_shape=SHAPE, interleave=2, **FAST)["torch/fp32"]
    assert r.interleave == 2 and len(r.repeat_p50_ms) == 2


def test_cv_is_std_over_mean_of_repeat_medians():
    assert _cv([1.0]) is None
    assert _cv([1.0, 1.0, 1.0]) == 0.0
    assert _cv([9.0, 11.0]) == pytest.approx(np.std([9, 11], ddof=1) / 10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(backend="torch", precision="int8"), "fp32 only"),
    (dict(backend="tvm"), "backend must be"),
    (dict(precision="fp16"), "precision must be"),
    (dict(mode="offline"), "mode must be"),
    (dict(device="tpu"), "device must be"),
    (dict(iterations=0), ">= 1"),
])
def test_bad_requests_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_latency(tiny_cnn(), input_shape=SHAPE, **kwargs)


def test_module_needs_a_shape():
    with pytest.raises(ValueError, match="input_shape"):
        measure_latency(tiny_cnn())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_missing_gpu_is_reported_clearly(backend):
    with pytest.raises(DeviceUnavailableError) as info:
        measure_latency(tiny_cnn(), backend=backend, device="cuda", input_shape=SHAPE, **FAST)
    message = str(info.value)
    assert "'cuda' is not available" in message and "device='cpu'" in message
    assert backend in message and info.value.available


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_torch_cuda_latency_uses_the_gpu():
    r = measure_latency(tiny_cnn(), device="cuda", input_shape=SHAPE, **FAST)
    _consistent(r)
    assert r.environment["device_name"] != "unavailable"


def test_device_aliases():
    assert normalize_device("GPU") == normalize_device("cuda:0") == "cuda"
    assert normalize_device("CPU") == "cpu"
