"""The environment a latency measurement ran in, recorded beside every `LatencyReport`.

Rules:
  1. CPU: model name, logical cores, cores usable by this process (affinity), physical cores,
     and the instruction-set extensions that decide INT8 speed (AVX2, AVX-512, VNNI, AMX).
  2. Library versions come from package metadata (nothing is imported to read them); a missing
     library is recorded as ``None``.
  3. The 1-minute load average is recorded: on a shared machine it explains noisy repeats.
  4. `environment_signature` keeps only what makes two measurements comparable (CPU, cores,
     versions, device) and keys cached latency measurements.

Unsupported:
  - CPU frequency governors and turbo state are not read.

Example:
    >>> env = capture_environment(device="cpu", threads=1)
    >>> env["threads"], env["device"]
    (1, 'cpu')
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["capture_environment", "environment_signature", "usable_cores", "cpu_isa"]

_LIBRARIES = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy")
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpuinfo() -> tuple[str, int | None, list[str]]:
    model, cores, flags = platform.processor() or platform.machine(), set(), set()
    try:
        with open("/proc/cpuinfo") as f:
            block: dict[str, str] = {}
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    block[k] = v
                elif block:
                    model = block.get("model name", model)
                    cores.add((block.get("physical id"), block.get("core id")))
                    flags |= set(block.get("flags", "").split())
                    block = {}
    except OSError:
        return model, None, []
    return model, len(cores) or None, [f for f in _ISA_FLAGS if f in flags]


def cpu_isa() -> list[str]:
    """The INT8-relevant x86 extensions this CPU reports (empty when unknown or not x86)."""
    return _cpuinfo()[2]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch
        return torch.cuda.get_device_name() if torch.cuda.is_available() else "unavailable"
    return "cpu"


def capture_environment(*, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """A JSON-serialisable description of the machine and libraries (Rules 1-3)."""
    model, physical, isa = _cpuinfo()
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "physical_cores": physical,
        "isa": isa,
        "threads": threads,
        "device": device,
        "device_name": _device_name(device),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in _LIBRARIES},
    }


def environment_signature(env: dict[str, Any]) -> dict[str, Any]:
    """What makes two measurements comparable (Rule 4)."""
    keep = ("cpu_model", "usable_cores", "isa", "device", "device_name", "versions")
    return {k: env[k] for k in keep}
