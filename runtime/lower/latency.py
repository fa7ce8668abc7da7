"""Latency and throughput of a model on a backend, precision, batch size, thread count and device.

Rules:
  1. ``model`` is an `nn.Module` (lowered through the cache for onnxruntime and OpenVINO: ONNX
     export, conversion and, for ``int8``, quantization), an ONNX path, or an ``ov.Model``.
     A lowered model that is already INT8 is measured as is.
  2. Inputs come from ``example_inputs`` (tiled along dim 0 to ``batch_size``), else from
     ``input_shape`` (random normal; its first dimension is replaced by ``batch_size``), else
     from a lowered model's static input dimensions. Latency does not depend on input values.
  3. INT8 without ``calibration_data`` calibrates on ``calibration_size`` (default 8) random
     inputs, without bias correction: enough for latency (8 gave the same INT8 latency as 300),
     not for accuracy. Quantize with `quantize_int8` first to measure a deployable model.
  4. ``threads=None`` means 1 thread in latency mode and every usable core in throughput mode.
     One thread is the low-noise default for batch-1 latency on a shared machine: with
     threads = cores the p50 varied 26-38% between repeats, with one thread 3-4%.
  5. ``warmup`` untimed calls run once before the first repeat; ``repeats`` x ``iterations``
     calls are timed. `compare_latency` interleaves several backends and precisions within
     every repeat, ``interleave`` calls of one before switching to the next (default: the whole
     repeat), each switch followed by one untimed call, so their ratios are measured side by
     side under the same machine load. A small ``interleave`` spreads every repeat of every
     config over the same stretch of time: bursts of load from other processes then reach all
     configs alike instead of whichever happened to be running.
  6. Percentiles, mean and std pool every timed call; ``cv_p50`` is std/mean of the per-repeat
     p50s (None for one repeat); the per-call CPU time and its ``cv_cpu`` sit beside wall time;
     ``throughput_ips`` is images timed / seconds elapsed.
  7. torch supports fp32 only; an unknown backend, precision, mode or device raises
     ``ValueError`` before anything is lowered; a missing device raises
     `DeviceUnavailableError`, a missing runtime `RuntimeMissingError`.

Unsupported:
  - Dynamic input shapes during timing: every input is fixed at its measured shape.
  - torch INT8 (eager quantization is deprecated): use onnxruntime or openvino.

Example:
    >>> import torch
    >>> r = measure_latency(torch.nn.Linear(8, 4), input_shape=(1, 8), iterations=5, repeats=2)
    >>> r.p50_ms <= r.p99_ms and r.throughput_ips > 0
    True
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from runtime.lower.cache import LoweringCache
from runtime.lower.environment import capture_environment, usable_cores
from runtime.lower.errors import import_runtime
from runtime.lower.onnx_export import as_input_tuple, to_onnx
from runtime.lower.openvino import to_openvino
from runtime.lower.quantize import is_int8, quantize_int8
from runtime.lower.runners import (OnnxRuntimeRunner, OpenVinoRunner, Samples, TorchRunner,
                                   check_device, normalize_device)

__all__ = ["LatencyReport", "measure_latency", "compare_latency", "example_arrays",
           "BACKENDS", "PRECISIONS", "MODES", "compare_models"]

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")
MODES = ("latency", "throughput")


@dataclasses.dataclass(frozen=True)
class LatencyReport:
    """Timing statistics in milliseconds, throughput in images/s, and the settings and machine."""

    backend: str
    precision: str
    device: str
    mode: str
    batch_size: int
    threads: int
    warmup: int
    iterations: int
    repeats: int
    interleave: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    throughput_ips: float
    cv_p50: float | None
    repeat_p50_ms: tuple[float, ...]
    cpu_p50_ms: float
    cpu_mean_ms: float
    cv_cpu: float | None
    runtime_config: dict[str, Any]
    environment: dict[str, Any]
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["repeat_p50_ms"] = list(self.repeat_p50_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyReport":
        """Inverse of `to_dict`."""
        return cls(**{**d, "repeat_p50_ms": tuple(d["repeat_p50_ms"])})


def _cv(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = float(np.mean(values))
    return float(np.std(values, ddof=1) / mean) if mean > 0 else None


def _summarize(samples: list[Samples], **settings: Any) -> LatencyReport:
    """Rule 6."""
    wall = np.concatenate([s.wall_ms for s in samples])
    cpu = np.concatenate([s.cpu_ms for s in samples])
    p50, p90, p99 = (float(v) for v in np.percentile(wall, [50, 90, 99]))
    repeat_p50 = tuple(float(np.median(s.wall_ms)) for s in samples)
    elapsed = sum(s.elapsed_s for s in samples)
    return LatencyReport(
        **settings, p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(wall.mean()),
        std_ms=float(wall.std()), throughput_ips=sum(s.images for s in samples) / elapsed,
        cv_p50=_cv(repeat_p50), repeat_p50_ms=repeat_p50, cpu_p50_ms=float(np.median(cpu)),
        cpu_mean_ms=float(cpu.mean()), cv_cpu=_cv([float(np.median(s.cpu_ms)) for s in samples]))


def _merge(parts: list[Samples]) -> Samples:
    return Samples(np.concatenate([p.wall_ms for p in parts]),
                   np.concatenate([p.cpu_ms for p in parts]),
                   sum(p.elapsed_s for p in parts), sum(p.images for p in parts))


def _interleaved_repeat(runners: dict[Any, Any], iterations: int, chunk: int
                        ) -> dict[Any, Samples]:
    """One repeat of every runner, ``chunk`` calls at a time (Rule 5)."""
    parts: dict[Any, list[Samples]] = {k: [] for k in runners}
    done = 0
    while done < iterations:
        n = min(chunk, iterations - done)
        for k, runner in runners.items():
            if len(runners) > 1:
                runner.time_repeat(1)  # re-warm caches after the switch, untimed
            parts[k].append(runner.time_repeat(n))
        done += n
    return {k: _merge(v) for k, v in parts.items()}


def _tile(x: np.ndarray, batch_size: int) -> np.ndarray:
    reps = math.ceil(batch_size / x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size])


def _artifact_shapes(model: Any) -> list[list[Any]]:
    if hasattr(model, "inputs") and hasattr(model, "get_ops"):  # ov.Model
        return [[d.get_length() if d.is_static else None for d in i.get_partial_shape()]
                for i in model.inputs]
    onnx = import_runtime("onnx", purpose="reading ONNX models")
    proto = onnx.load(str(model), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    return [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input if i.name not in initializers]


def example_arrays(model: Any, batch_size: int, example_inputs: Any = None,
                   input_shape: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
    """Timing inputs with batch ``batch_size`` (Rule 2)."""
    if example_inputs is not None:
        return tuple(_tile(x.detach().cpu().numpy(), batch_size)
                     for x in as_input_tuple(example_inputs))
    rng = np.random.default_rng(0)
    if input_shape is not None:
        shapes = [[batch_size, *input_shape[1:]]]
    elif isinstance(model, torch.nn.Module):
        raise ValueError("measuring an nn.Module needs example_inputs or input_shape, "
                         "e.g. input_shape=(1, 3, 224, 224)")
    else:
        shapes = [[batch_size, *dims[1:]] for dims in _artifact_shapes(model)]
        if any(d is None for s in shapes for d in s):
            raise ValueError(f"the model's inputs have dynamic dimensions {shapes} beyond the "
                             f"batch; pass input_shape=(...) or example_inputs")
    return tuple(rng.standard_normal(s, dtype=np.float32) for s in shapes)


def _check_combination(backend: str, precision: str, mode: str) -> None:
    """Rule 7, before any lowering."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if backend == "torch" and precision == "int8":
        raise ValueError("backend='torch' measures fp32 only; for int8 use backend='onnxruntime' "
                         "or backend='openvino'")


def _check_counts(*counts: int) -> None:
    """Rule 7: batch_size, iterations, repeats, interleave >= 1 and warmup >= 0."""
    if min(counts[:-1]) < 1 or counts[-1] < 0:
        raise ValueError("batch_size, iterations, repeats and interleave must be >= 1 and "
                         "warmup >= 0")


def _lower(model: Any, backend: str, precision: str, inputs: tuple[np.ndarray, ...],
           calibration_data: Any, calibration_size: int, cache: LoweringCache | bool) -> Any:
    """Rules 1 and 3: the artifact the backend runs."""
    if backend == "torch":
        if not isinstance(model, torch.nn.Module):
            raise TypeError("backend='torch' needs an nn.Module")
        return model
    if isinstance(model, torch.nn.Module):
        example = tuple(torch.from_numpy(x[:1]) for x in inputs)
        model = (to_openvino(model, example, cache=cache) if backend == "openvino"
                 else to_onnx(model, example, cache=cache))
    elif backend == "openvino":
        model = to_openvino(model, cache=cache)
    elif not isinstance(model, (str, Path)):
        raise TypeError(f"backend='onnxruntime' needs an nn.Module or an ONNX path, "
                        f"got {type(model).__name__}")
    if precision == "fp32" or is_int8(model):
        return model
    if calibration_data is None:  # Rule 3
        rng = np.random.default_rng(0)
        calibration_data = [tuple(rng.standard_normal((1, *x.shape[1:]), dtype=np.float32)
                                  for x in inputs) for _ in range(calibration_size)]
    return quantize_int8(model, calibration_data, backend=backend, subset_size=calibration_size,
                         bias_correction="none", cache=cache)  # values do not change latency


def _runner(artifact: Any, backend: str, inputs: tuple[np.ndarray, ...], threads: int,
            device: str, mode: str) -> Any:
    if backend == "torch":
        return TorchRunner(artifact, inputs, threads=threads, device=device)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(artifact, inputs, threads=threads, device=device)
    return OpenVinoRunner(artifact, inputs, threads=threads, device=device, mode=mode)


def compare_latency(model: Any, configs: Sequence[tuple[Any, ...]], *, batch_size: int = 1,
                    threads: int | None = None, device: str = "cpu", mode: str = "latency",
                    warmup: int = 10, iterations: int = 100, repeats: int = 5,
                    interleave: int | None = None, example_inputs: Any = None,
                    input_shape: Sequence[int] | None = None, calibration_data: Any = None,
                    calibration_size: int = 8,
                    cache: LoweringCache | bool = True) -> dict[str, LatencyReport]:
    """Reports keyed ``'backend/precision'``, one per config, repeats interleaved (Rule 5).

    A config may name its own model as a third item, ``(backend, precision, artifact)``, to time
    artifacts lowered beforehand (an INT8 model quantized with real calibration data).
    """
    own = {f"{c[0]}/{c[1]}": c[2] for c in configs if len(c) > 2}
    reports = compare_models({"model": {**own, "module": model}}, [c[:2] for c in configs],
                             batch_size=batch_size, threads=threads, device=device, mode=mode,
                             warmup=warmup, iterations=iterations, repeats=repeats,
                             interleave=interleave, example_inputs=example_inputs,
                             input_shape=input_shape, calibration_data=calibration_data,
                             calibration_size=calibration_size, cache=cache)
    return reports["model"]


def compare_models(models: dict[str, Any], configs: Sequence[tuple[str, str]], *,
                   batch_size: int = 1, threads: int | None = None, device: str = "cpu",
                   mode: str = "latency", warmup: int = 10, iterations: int = 100,
                   repeats: int = 5, interleave: int | None = None, example_inputs: Any = None,
                   input_shape: Sequence[int] | None = None, calibration_data: Any = None,
                   calibration_size: int = 8, cache: LoweringCache | bool = True
                   ) -> dict[str, dict[str, LatencyReport]]:
    """``{model name: {'backend/precision': report}}``: every model x config interleaved (Rule 5).

    A value of ``models`` is a module (or artifact), or a dict ``{'backend/precision': artifact,
    'module': module}`` naming artifacts lowered beforehand; the module serves the other configs.
    """
    device = normalize_device(device)
    for backend, precision in configs:
        _check_combination(backend, precision, mode)
        check_device(backend, device)
    _check_counts(batch_size, iterations, repeats, interleave or 1, warmup)
    threads = threads or (1 if mode == "latency" else usable_cores())  # Rule 4
    runners = {}
    for name, entry in models.items():
        own = entry if isinstance(entry, dict) else {"module": entry}
        inputs = example_arrays(own.get("module"), batch_size, example_inputs, input_shape)
        for backend, precision in configs:
            source = own.get(f"{backend}/{precision}", own.get("module"))
            artifact = _lower(source, backend, precision, inputs, calibration_data,
                              calibration_size, cache)
            runner = _runner(artifact, backend, inputs, threads, device, mode)
            runners[(name, backend, precision)] = runner
            if warmup:
                runner.time_repeat(warmup)
    environment = capture_environment(device=device, threads=threads)
    samples: dict[tuple[str, str, str], list[Samples]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, part in _interleaved_repeat(runners, iterations, interleave or iterations).items():
            samples[k].append(part)
    settings = dict(device=device, mode=mode, batch_size=batch_size, threads=threads,
                    warmup=warmup, iterations=iterations, repeats=repeats,
                    interleave=interleave or iterations, environment=environment)
    out: dict[str, dict[str, LatencyReport]] = {name: {} for name in models}
    for (name, b, p), runner in runners.items():
        out[name][f"{b}/{p}"] = _summarize(samples[(name, b, p)], backend=b, precision=p,
                                           runtime_config=runner.config, **settings)
    return out


def measure_latency(model: Any, *, backend: str = "torch", precision: str = "fp32",
                    batch_size: int = 1, threads: int | None = None, device: str = "cpu",
                    mode: str = "latency", warmup: int = 10, iterations: int = 100,
                    repeats: int = 5, example_inputs: Any = None,
                    input_shape: Sequence[int] | None = None, calibration_data: Any = None,
                    calibration_size: int = 8, cache: LoweringCache | bool = True) -> LatencyReport:
    """Measure one backend and precision (Rules 1-7); always times, never reads a cached report."""
    reports = compare_latency(
        model, [(backend, precision)], batch_size=batch_size, threads=threads, device=device,
        mode=mode, warmup=warmup, iterations=iterations, repeats=repeats,
        example_inputs=example_inputs, input_shape=input_shape, calibration_data=calibration_data,
        calibration_size=calibration_size, cache=cache)
    return reports[f"{backend}/{precision}"]
