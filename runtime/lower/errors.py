"""Errors of the lowering layer, each saying what failed and what to do next.

Rules:
  1. A module the exporters cannot lower raises `LoweringError` naming the failing operator
     (``aten::linalg_svd``) and the exporters that were tried.
  2. A runtime library that is not importable raises `RuntimeMissingError` naming the package
     and the ``pip install`` line that provides it, and the backends that remain usable.
  3. A device that is not present raises `DeviceUnavailableError` naming the devices that are.

Unsupported:
  - Nothing here retries or degrades silently: every error is raised to the caller.

Example:
    >>> try:
    ...     import_runtime("no_such_runtime_pkg")
    ... except RuntimeMissingError as e:
    ...     print(e.package)
    no_such_runtime_pkg
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["LoweringError", "RuntimeMissingError", "DeviceUnavailableError", "import_runtime"]

# Rule 2: the pip distribution that provides each importable runtime.
_PIP_NAMES = {
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "nncf": "nncf",
    "onnxscript": "onnxscript",
}


class LoweringError(RuntimeError):
    """A module could not be exported, converted or checked; `op` names the failing operator."""

    def __init__(self, message: str, *, op: str | None = None):
        super().__init__(message)
        self.op = op


class RuntimeMissingError(ImportError):
    """A runtime library is not installed; the message says how to install it."""

    def __init__(self, package: str, *, purpose: str = ""):
        pip_name = _PIP_NAMES.get(package, package)
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"Python package '{package}' is not installed{what}. Install it with "
            f"`pip install {pip_name}`, or select another backend: backend='torch' needs only "
            f"torch; 'onnxruntime' needs onnx and onnxruntime; 'openvino' needs openvino "
            f"(and nncf for int8).",
            name=package,
        )
        self.package = package


class DeviceUnavailableError(RuntimeError):
    """The requested device is not present on this machine."""

    def __init__(self, device: str, backend: str, available: list[str], hint: str = ""):
        listed = ", ".join(available) if available else "none"
        super().__init__(
            f"Device '{device}' is not available for backend '{backend}' on this machine "
            f"(available: {listed}). Select device='cpu' or run on a machine with that device."
            + (f" {hint}" if hint else "")
        )
        self.device = device
        self.backend = backend
        self.available = tuple(available)


def import_runtime(package: str, *, purpose: str = "") -> ModuleType:
    """Import ``package`` or raise `RuntimeMissingError` with the install line (Rule 2)."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != package.split(".")[0]:
            raise  # the package is present but one of its own dependencies is broken
        raise RuntimeMissingError(package, purpose=purpose) from e
