"""One runner per backend: a prepared model plus inputs that `time_repeat` times, call by call.

Rules:
  1. Latency mode times every call with ``time.perf_counter_ns`` and, beside it, the process CPU
     time (``time.process_time_ns``, all threads) spent in that call. On a shared machine CPU
     time stays steady when wall time does not.
  2. torch: ``torch.inference_mode``; ``torch.set_num_threads(threads)`` only while timing, the
     previous value restored. On CUDA every call is timed with CUDA events and synchronised.
  3. onnxruntime: ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``, sequential
     execution, all graph optimisations; CUDAExecutionProvider for ``cuda``.
  4. OpenVINO: the model is cloned and reshaped to the static input shape. Latency mode compiles
     with ``PERFORMANCE_HINT=LATENCY`` and times synchronous ``infer`` calls; throughput mode
     compiles with ``PERFORMANCE_HINT=THROUGHPUT`` (the plugin picks streams) and keeps
     ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` requests in flight with ``AsyncInferQueue``, each
     request's latency read from the runtime. ``INFERENCE_NUM_THREADS=threads`` and
     ``INFERENCE_PRECISION_HINT=f32`` (so FP32 is not silently bf16 on AMX/bf16 CPUs).
  5. A device that is not present raises `DeviceUnavailableError` listing the ones that are.

Unsupported:
  - Multi-GPU selection (``cuda:1``) beyond passing the device string through to torch.
  - onnxruntime I/O binding: CUDA timings include the host/device copies of inputs and outputs.

Example:
    >>> import torch, numpy as np
    >>> r = TorchRunner(torch.nn.Linear(4, 2), (np.zeros((1, 4), np.float32),), threads=1)
    >>> r.time_repeat(3).wall_ms.shape
    (3,)
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from runtime.lower.errors import DeviceUnavailableError, import_runtime
from runtime.lower.openvino import ov_core

__all__ = ["Samples", "TorchRunner", "OnnxRuntimeRunner", "OpenVinoRunner", "normalize_device",
           "check_device"]


@dataclass(frozen=True)
class Samples:
    """One repeat: per-call wall and CPU milliseconds and the repeat's elapsed time."""

    wall_ms: np.ndarray
    cpu_ms: np.ndarray
    elapsed_s: float
    images: int


def normalize_device(device: str) -> str:
    """'cpu' or 'cuda' (``gpu`` and ``cuda:N`` are accepted spellings of 'cuda')."""
    d = device.lower()
    if d == "cpu":
        return "cpu"
    if d in ("gpu", "cuda") or d.startswith("cuda:"):
        return "cuda"
    raise ValueError(f"device must be 'cpu' or 'cuda' (alias 'gpu'), got {device!r}")


def check_device(backend: str, device: str) -> None:
    """Rule 5, before any lowering: `DeviceUnavailableError` unless ``backend`` has ``device``."""
    if device != "cuda":
        return
    if backend == "torch" and not torch.cuda.is_available():
        raise DeviceUnavailableError("cuda", "torch", ["cpu"],
                                     "This torch build or machine has no CUDA device.")
    if backend == "onnxruntime":
        available = import_runtime("onnxruntime", purpose="the onnxruntime backend"
                                   ).get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeviceUnavailableError("cuda", "onnxruntime", available,
                                         "Install `pip install onnxruntime-gpu`.")
    if backend == "openvino" and "GPU" not in ov_core().available_devices:
        raise DeviceUnavailableError(device, "openvino", list(ov_core().available_devices),
                                     "OpenVINO needs an Intel GPU and its OpenCL driver.")


def _time_calls(call: Callable[[], Any], iterations: int, images: int) -> Samples:
    """Rule 1: per-call wall and process-CPU time."""
    wall = np.empty(iterations)
    cpu = np.empty(iterations)
    start = time.perf_counter_ns()
    for i in range(iterations):
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        call()
        t1 = time.perf_counter_ns()
        cpu[i] = time.process_time_ns() - c0
        wall[i] = t1 - t0
    elapsed = (time.perf_counter_ns() - start) / 1e9
    return Samples(wall / 1e6, cpu / 1e6, elapsed, images * iterations)


class TorchRunner:
    """Eager PyTorch in inference mode (Rule 2)."""

    def __init__(self, module: torch.nn.Module, inputs: Sequence[np.ndarray], *, threads: int,
                 device: str = "cpu"):
        check_device("torch", device)
        # Rule 2: a CUDA copy, so the caller's module stays where it was
        self.module = copy.deepcopy(module).to(device) if device == "cuda" else module
        self.threads, self.device = threads, device
        self.inputs = tuple(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs)
        self.batch = int(inputs[0].shape[0])
        self.config = {"threads": threads, "device": device}

    def _call(self) -> None:
        self.module(*self.inputs)

    def time_repeat(self, iterations: int) -> Samples:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                if self.device == "cuda":
                    return self._time_cuda(iterations)
                return _time_calls(self._call, iterations, self.batch)
        finally:
            torch.set_num_threads(previous)
            self.module.train(was_training)

    def _time_cuda(self, iterations: int) -> Samples:
        wall, cpu = np.empty(iterations), np.empty(iterations)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iterations)]
        torch.cuda.synchronize()
        start = time.perf_counter_ns()
        for i, (begin, end) in enumerate(events):
            c0 = time.process_time_ns()
            begin.record()
            self._call()
            end.record()
            end.synchronize()
            cpu[i] = (time.process_time_ns() - c0) / 1e6
            wall[i] = begin.elapsed_time(end)
        return Samples(wall, cpu, (time.perf_counter_ns() - start) / 1e9, self.batch * iterations)


class OnnxRuntimeRunner:
    """onnxruntime InferenceSession with the recommended CPU thread settings (Rule 3)."""

    def __init__(self, onnx_path: Any, inputs: Sequence[np.ndarray], *, threads: int,
                 device: str = "cpu"):
        ort = import_runtime("onnxruntime", purpose="the onnxruntime backend")
        check_device("onnxruntime", device)
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), so, providers=providers)
        self.feed = {i.name: x for i, x in zip(self.session.get_inputs(), inputs)}
        self.batch = int(inputs[0].shape[0])
        self.config = {"intra_op_num_threads": threads, "inter_op_num_threads": 1,
                       "execution_mode": "ORT_SEQUENTIAL",
                       "graph_optimization_level": "ORT_ENABLE_ALL",
                       "providers": self.session.get_providers()}

    def time_repeat(self, iterations: int) -> Samples:
        return _time_calls(lambda: self.session.run(None, self.feed), iterations, self.batch)


class OpenVinoRunner:
    """OpenVINO compiled model with the latency or throughput performance hint (Rule 4)."""

    def __init__(self, ov_model: Any, inputs: Sequence[np.ndarray], *, threads: int | None,
                 device: str = "cpu", mode: str = "latency"):
        check_device("openvino", device)
        core = ov_core()
        target = "GPU" if device == "cuda" else "CPU"
        model = ov_model.clone()
        model.reshape({i: list(x.shape) for i, x in enumerate(inputs)})
        hint = "LATENCY" if mode == "latency" else "THROUGHPUT"
        props: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if target == "CPU":
            props["INFERENCE_PRECISION_HINT"] = "f32"
            if threads:
                props["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, target, props)
        self.inputs = {i: x for i, x in enumerate(inputs)}
        self.batch = int(inputs[0].shape[0])
        self.mode = mode
        self.n_requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.config = {"device": target, "PERFORMANCE_HINT": hint,
                       "OPTIMAL_NUMBER_OF_INFER_REQUESTS": self.n_requests}
        for k in ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT"):
            if target == "CPU":
                value = self.compiled.get_property(k)
                named = hasattr(value, "get_type_name")
                self.config[k] = value.get_type_name() if named else str(value)
        self.request = self.compiled.create_infer_request()
        self.queue = None

    def time_repeat(self, iterations: int) -> Samples:
        if self.mode == "latency":
            return _time_calls(lambda: self.request.infer(self.inputs), iterations, self.batch)
        ov = import_runtime("openvino", purpose="the OpenVINO backend")
        if self.queue is None:
            self.queue = ov.AsyncInferQueue(self.compiled, self.n_requests)
        latencies: list[float] = []
        self.queue.set_callback(lambda request, _: latencies.append(request.latency))
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        for _ in range(iterations):
            self.queue.start_async(self.inputs)
        self.queue.wait_all()
        elapsed = (time.perf_counter_ns() - t0) / 1e9
        cpu = np.full(iterations, (time.process_time_ns() - c0) / 1e6 / iterations)
        return Samples(np.asarray(latencies), cpu, elapsed, self.batch * iterations)
