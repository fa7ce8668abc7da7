"""Latency-only requests: what the search asks for thousands of times, cached by architecture.

Rules:
  1. A request lowers the module (ONNX, OpenVINO, INT8 on ``calibration_size`` random inputs)
     and times each precision at ``batch_size`` with `compare_latency`.
  2. Latency does not depend on weight values, so the result is keyed by the module's structure
     only (``fingerprint_module(weights=False)``), the request's settings and the environment
     signature (CPU, cores, library versions, device): two sub-networks with the same
     architecture share one measurement, and a repeated request is served from the cache
     (memory, then a JSON file under the cache directory) with ``from_cache=True``.
  3. No BN recalibration is needed: statistics change weight values, not latency.

Unsupported:
  - Invalidation when the machine's load changes: pass ``cache=False`` to re-measure.

Example:
    >>> import torch
    >>> from runtime.lower.cache import LoweringCache
    >>> store = LoweringCache(None)
    >>> m = torch.nn.Linear(8, 4)
    >>> first = request_latency(m, input_shape=(1, 8), backend="torch", precisions=("fp32",),
    ...                         iterations=5, cache=store)
    >>> request_latency(m, input_shape=(1, 8), backend="torch", precisions=("fp32",),
    ...                 iterations=5, cache=store)["fp32"].from_cache
    True
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from runtime.lower.cache import LoweringCache, fingerprint_module, hash_key, resolve_cache
from runtime.lower.environment import capture_environment, environment_signature
from runtime.lower.latency import LatencyReport, compare_latency

__all__ = ["request_latency"]


def _load(path: Path) -> dict[str, LatencyReport] | None:
    try:
        data = json.loads(path.read_text())
        return {p: LatencyReport.from_dict(d) for p, d in data.items()}
    except (OSError, ValueError, TypeError):
        return None


def request_latency(module: torch.nn.Module, example_inputs: Any = None, *,
                    input_shape: Sequence[int] | None = None, backend: str = "openvino",
                    precisions: Sequence[str] = ("fp32", "int8"), batch_size: int = 1,
                    threads: int | None = None, device: str = "cpu", warmup: int = 10,
                    iterations: int = 100, repeats: int = 1, calibration_size: int = 8,
                    cache: LoweringCache | bool = True) -> dict[str, LatencyReport]:
    """Reports keyed by precision for one architecture, cached by structure (Rules 1-3)."""
    store = resolve_cache(cache)
    if example_inputs is None and input_shape is None:
        raise ValueError("request_latency needs example_inputs or input_shape")
    shape_probe = example_inputs if example_inputs is not None else torch.empty(tuple(input_shape))
    settings = dict(backend=backend, precisions=list(precisions), batch_size=batch_size,
                    threads=threads, device=device, warmup=warmup, iterations=iterations,
                    repeats=repeats, calibration_size=calibration_size)
    env = environment_signature(capture_environment(device=device, threads=threads))
    key = hash_key("latency", fingerprint_module(module, shape_probe, weights=False), settings, env)
    if store is not None:
        if (hit := store.get(key)) is not None:
            return hit
        path = store.file_path(key, ".json")
        if path is not None and path.exists() and (loaded := _load(path)) is not None:
            return store.put(key, loaded)
    reports = compare_latency(
        module, [(backend, p) for p in precisions], batch_size=batch_size, threads=threads,
        device=device, warmup=warmup, iterations=iterations, repeats=repeats,
        example_inputs=example_inputs, input_shape=input_shape, calibration_size=calibration_size,
        cache=cache)
    fresh = {key_.split("/")[1]: r for key_, r in reports.items()}
    if store is not None:
        cached = {p: dataclasses.replace(r, from_cache=True) for p, r in fresh.items()}
        blob = json.dumps({p: r.to_dict() for p, r in cached.items()})
        if store.root is not None:
            store.file(key, ".json", lambda tmp: tmp.write_text(blob))
        store.put(key, cached)
    return fresh
