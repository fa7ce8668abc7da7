"""Deployable artifacts of one sub-network, written to a folder and verified after writing.

Rules:
  1. Formats: ``pytorch`` (``model.pt2``, a `torch.export` program with a dynamic batch: loads
     with ``torch.export.load`` and unpickles no code), ``onnx`` (``model.onnx``, dynamic batch,
     checked against PyTorch by the exporter), ``openvino_fp32`` (``model_fp32.xml``/``.bin``)
     and ``openvino_int8`` (``model_int8.xml``/``.bin``, NNCF post-training quantization
     calibrated on the real images given as ``calibration_data``, with NNCF's full bias
     correction by default: a deployed model is made once, and on the demo's sub-networks
     "full" kept INT8 within 0.1 pt of FP32 where "fast" lost 1 pt).
  2. Each artifact is read back from disk and evaluated on the validation data
     (`evaluate_artifact`): top-1 in percent, beside the PyTorch module's, so a broken export is
     caught where it is made.
  3. `write_artifacts` returns ``{format: path}``; the caller decides what agreement to demand
     (the pipeline: FP32 within 0.1 pt, INT8 within 1 pt).

Example:
    >>> import torch, tempfile
    >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    >>> paths = write_artifacts(m, torch.zeros(1, 1, 2, 2), tempfile.mkdtemp(),
    ...                         formats=("pytorch", "onnx"))
    >>> sorted(paths), paths["pytorch"].name
    (['onnx', 'pytorch'], 'model.pt2')
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from runtime.lower.errors import import_runtime
from runtime.lower.onnx_export import to_onnx
from runtime.lower.openvino import ov_core, to_openvino
from runtime.lower.quantize import quantize_int8

__all__ = ["FORMATS", "write_artifacts", "evaluate_artifact", "load_artifact"]

FORMATS = ("pytorch", "onnx", "openvino_fp32", "openvino_int8")
_FILES = {"pytorch": "model.pt2", "onnx": "model.onnx", "openvino_fp32": "model_fp32.xml",
          "openvino_int8": "model_int8.xml"}


def write_artifacts(module: torch.nn.Module, example_input: torch.Tensor, out_dir: str | Path, *,
                    formats: Sequence[str] = FORMATS, calibration_data: Any = None,
                    calibration_samples: int = 300, bias_correction: str = "full") -> dict[str, Path]:
    """Write ``formats`` of ``module`` under ``out_dir`` (Rule 1)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; valid: {list(FORMATS)}")
    if "openvino_int8" in formats and calibration_data is None:
        raise ValueError("openvino_int8 needs calibration_data (real training images)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    paths: dict[str, Path] = {}
    if "pytorch" in formats:
        if any(not t.is_contiguous() for t in (*module.parameters(), *module.buffers())):
            # a channels-last model (trained so): torch.export.save warns about, and packs,
            # strided weights; a contiguous copy saves cleanly and computes the same
            module = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
        batch = torch.export.Dim("batch", min=1, max=4096)
        example2 = torch.cat([example_input, example_input])  # batch 2: not specialised to 1
        program = torch.export.export(module, (example2,), dynamic_shapes=({0: batch},),
                                      strict=False)
        torch.export.save(program, out / _FILES["pytorch"])
        paths["pytorch"] = out / _FILES["pytorch"]
    onnx_path = None
    if any(f != "pytorch" for f in formats):
        onnx_path = to_onnx(module, (example_input,), path=out / _FILES["onnx"], dynamic_batch=True)
        if "onnx" in formats:
            paths["onnx"] = Path(onnx_path)
    ov = import_runtime("openvino", purpose="OpenVINO export") if onnx_path and any(
        f.startswith("openvino") for f in formats) else None
    if ov is not None:
        fp32 = to_openvino(onnx_path, cache=False)
        if "openvino_fp32" in formats:
            ov.save_model(fp32, out / _FILES["openvino_fp32"], compress_to_fp16=False)
            paths["openvino_fp32"] = out / _FILES["openvino_fp32"]
        if "openvino_int8" in formats:
            int8 = quantize_int8(fp32, calibration_data, backend="openvino",
                                 subset_size=calibration_samples, cache=False,
                                 bias_correction=bias_correction)
            ov.save_model(int8, out / _FILES["openvino_int8"], compress_to_fp16=False)
            paths["openvino_int8"] = out / _FILES["openvino_int8"]
    if onnx_path is not None and "onnx" not in formats:
        Path(onnx_path).unlink(missing_ok=True)
    return paths


def load_artifact(kind: str, path: str | Path) -> Any:
    """A callable ``f(np.ndarray) -> np.ndarray`` (logits) for a written artifact."""
    path = Path(path)
    if kind == "pytorch":
        module = torch.export.load(path).module()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()
        return run
    if kind == "onnx":
        ort = import_runtime("onnxruntime", purpose="ONNX evaluation")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if kind.startswith("openvino"):
        compiled = ov_core().compile_model(str(path), "CPU")
        return lambda x: compiled(x)[0]
    raise ValueError(f"unknown artifact kind {kind!r}; valid: {list(FORMATS)}")


def evaluate_artifact(kind: str, path: str | Path, batches: Iterable) -> float:
    """Top-1 (percent) of the artifact over ``(images, labels)`` batches (Rule 2)."""
    run = load_artifact(kind, path)
    correct = total = 0
    for images, labels in batches:
        logits = np.asarray(run(np.ascontiguousarray(images.numpy(), dtype=np.float32)))
        correct += int((logits.argmax(1) == labels.numpy()).sum())
        total += len(labels)
    if not total:
        raise ValueError("evaluate_artifact got no batches")
    return 100.0 * correct / total
