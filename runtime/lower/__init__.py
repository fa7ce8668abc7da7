"""Lowering and latency: ONNX export, OpenVINO conversion, INT8 quantization, measurement.

    to_onnx(module, example_inputs, path=None, dynamic_batch=True)     -> Path (ORT-checked)
    to_openvino(module_or_onnx, example_inputs=None)                   -> ov.Model (checked)
    quantize_int8(model, calibration_data, backend=..., subset_size=)  -> ov.Model | ONNX Path
    measure_latency(model, backend=, precision=, batch_size=, threads=, device=,
                    warmup=, iterations=, repeats=)                    -> LatencyReport
    compare_latency(model, [(backend, precision), ...])                -> {name: LatencyReport}
    request_latency(module, input_shape=...)                           -> {precision: LatencyReport}
    build_latency_table(models, example_inputs) / lut_agreement(...)   -> LatencyTable, LutAgreement

Runtimes (onnxruntime, openvino, nncf) are imported only when used; a missing one raises
`RuntimeMissingError` with its install line. Lowered artifacts are cached by content hash under
``$SUPERNET_CACHE_DIR`` (default ``~/.cache/supernet/lower``). This package imports torch and the
runtimes only, never ``compiler``, ``passes`` or ``bench``.
"""
from runtime.lower.cache import (LoweringCache, default_cache, fingerprint_arrays,
                                 fingerprint_module)
from runtime.lower.environment import capture_environment
from runtime.lower.errors import (DeviceUnavailableError, LoweringError, RuntimeMissingError,
                                  import_runtime)
from runtime.lower.latency import (BACKENDS, MODES, PRECISIONS, LatencyReport, compare_latency,
                                   compare_models, measure_latency)
from runtime.lower.lut import LatencyTable, LutAgreement, build_latency_table, lut_agreement
from runtime.lower.onnx_export import check_onnx, to_onnx
from runtime.lower.openvino import check_openvino, to_openvino
from runtime.lower.quantize import calibration_samples, is_int8, quantize_int8
from runtime.lower.request import request_latency

__all__ = [
    "BACKENDS", "MODES", "PRECISIONS",
    "DeviceUnavailableError", "LatencyReport", "LatencyTable", "LoweringCache", "LoweringError",
    "LutAgreement", "RuntimeMissingError",
    "build_latency_table", "calibration_samples", "capture_environment", "check_onnx",
    "check_openvino", "compare_latency", "compare_models", "default_cache", "fingerprint_arrays",
    "fingerprint_module", "import_runtime", "is_int8", "lut_agreement", "measure_latency",
    "quantize_int8", "request_latency", "to_onnx", "to_openvino",
]
