"""Lowering and latency benchmark for the zoo's ImageNet CNNs.

    python -m bench.lowering [--models resnet50 ...] [--json bench/results/lowering.json]

For each model at 1x3x224x224 it prints and writes:
  1. lowering times from an empty cache: ONNX export (checked by onnxruntime), OpenVINO
     conversion (checked), NNCF INT8 and onnxruntime QDQ INT8 quantization (8 calibration
     images, what a latency request uses), and the FP32 max |diff| of ONNX and OpenVINO logits;
  2. batch-1 latency (p50/p90/p99, CV of p50 across repeats, CPU ms, images/s) for torch eager
     FP32, onnxruntime FP32/INT8 and OpenVINO FP32/INT8, all repeats interleaved in one process
     so the ratios are side by side; the Done-when ratios for ResNet-50 (OpenVINO INT8 p90 vs
     torch FP32 and vs OpenVINO FP32) are checked;
  3. throughput with batching (``--throughput-batch``, every core, each runtime's throughput
     settings);
  4. the latency-only request for MobileNetV2 in fresh processes: cold, then from the cache
     in the same process and in a new process;
  5. the per-layer lookup table's Kendall tau against full measurement over sampled MobileNetV2
     sub-networks (random width multiplier, random residual blocks skipped).
Latency uses one thread (see runtime/lower/latency.py, Rule 4). Numbers from a shared machine
are noisier than from an idle one: the load average is recorded before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import models as zoo
from runtime.lower import (LoweringCache, build_latency_table, capture_environment,
                           compare_latency, lut_agreement, quantize_int8, request_latency,
                           to_onnx, to_openvino)
from runtime.lower.onnx_export import check_onnx
from runtime.lower.openvino import check_openvino

MODELS = ("resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0")
SHAPE = (1, 3, 224, 224)
CONFIGS = (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
           ("openvino", "fp32"), ("openvino", "int8"))
TARGETS = {"int8_vs_torch_fp32": 2.5, "int8_vs_openvino_fp32": 1.8, "cv_p50": 0.05}


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def lower_model(model: torch.nn.Module, store: LoweringCache) -> tuple[dict, dict]:
    """Cold lowering of one model; returns (timings and checks, artifacts)."""
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    calib = torch.randn((8, *SHAPE[1:]), generator=torch.Generator().manual_seed(1))
    onnx_path, export_s = _timed(to_onnx, model, x, cache=store)
    ov_model, convert_s = _timed(to_openvino, model, x, cache=store)
    ov_int8, q_ov_s = _timed(quantize_int8, ov_model, calib, subset_size=8, cache=store)
    ort_int8, q_ort_s = _timed(quantize_int8, onnx_path, calib, subset_size=8, cache=store)
    info = {"export_s": export_s, "convert_s": convert_s, "quantize_openvino_s": q_ov_s,
            "quantize_onnxruntime_s": q_ort_s,
            "onnx_max_abs_diff": check_onnx(model, onnx_path, x, atol=1e-4, rtol=0),
            "openvino_max_abs_diff": check_openvino(model, ov_model, x, atol=1e-4, rtol=0)}
    artifacts = {("torch", "fp32"): model, ("onnxruntime", "fp32"): onnx_path,
                 ("onnxruntime", "int8"): ort_int8, ("openvino", "fp32"): ov_model,
                 ("openvino", "int8"): ov_int8}
    return info, artifacts


def latency(model: torch.nn.Module, artifacts: dict, **kw: Any) -> dict:
    configs = [(b, p, artifacts[(b, p)]) for b, p in CONFIGS]
    reports = compare_latency(model, configs, input_shape=SHAPE, calibration_size=8, **kw)
    return {k: r.to_dict() for k, r in reports.items()}


def ratios(lat: dict) -> dict:
    p90 = {k: v["p90_ms"] for k, v in lat.items()}
    out = {"int8_vs_torch_fp32": p90["torch/fp32"] / p90["openvino/int8"],
           "int8_vs_openvino_fp32": p90["openvino/fp32"] / p90["openvino/int8"],
           "max_cv_p50": max(v["cv_p50"] for v in lat.values())}
    out["passes"] = (out["int8_vs_torch_fp32"] >= TARGETS["int8_vs_torch_fp32"]
                     and out["int8_vs_openvino_fp32"] >= TARGETS["int8_vs_openvino_fp32"]
                     and out["max_cv_p50"] < TARGETS["cv_p50"])
    return out


def request_child(cache_dir: str) -> None:
    """Runs in a fresh process: one MobileNetV2 latency-only request, twice."""
    model, same = zoo.mobilenet_v2(), zoo.mobilenet_v2()
    t0 = time.perf_counter()
    first = request_latency(model, input_shape=SHAPE, cache=LoweringCache(cache_dir))
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = request_latency(same, input_shape=SHAPE, cache=LoweringCache(cache_dir))
    print(json.dumps({"request_s": cold_s, "same_process_repeat_s": time.perf_counter() - t0,
                      "from_cache": [first["int8"].from_cache, second["int8"].from_cache],
                      "p50_ms": {p: r.p50_ms for p, r in first.items()}}))


def request_timing() -> dict:
    with tempfile.TemporaryDirectory(prefix="supernet-request-") as cache_dir:
        runs = []
        for _ in range(2):  # the second process finds the first one's disk cache
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "bench.lowering", "--request-child",
                                  cache_dir], capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            run["process_wall_s"] = time.perf_counter() - t0
            runs.append(run)
    return {"cold": runs[0], "new_process_cached": runs[1]}


def sample_subnets(n: int, seed: int = 0) -> list[torch.nn.Module]:
    """MobileNetV2 sub-networks: random width multiplier, residual blocks skipped at random."""
    rng = random.Random(seed)
    nets = []
    for _ in range(n):
        net = zoo.mobilenet_v2(width_mult=rng.choice((0.5, 0.75, 1.0))).eval()
        for i, block in enumerate(net.features):
            if getattr(block, "use_res_connect", False) and rng.random() < 0.5:
                net.features[i] = torch.nn.Identity()  # skipping a block = identity
        nets.append(net)
    return nets


def lut_study(n: int, backend: str, shape: tuple[int, ...]) -> dict:
    nets = sample_subnets(n)
    x = torch.randn(shape)
    table, build_s = _timed(build_latency_table, nets, x, backend=backend, iterations=20)
    agreement, measure_s = _timed(lut_agreement, table, nets, x)
    return {"backend": backend, "input_shape": list(shape), "subnets": n,
            "entries": len(table.entries), "build_s": build_s, "full_measure_s": measure_s,
            **agreement.to_dict()}


def done_when(result: dict) -> dict:
    """The issue's measurable criteria, from this run."""
    done: dict[str, Any] = {}
    if "resnet50" in result["models"]:
        r = result["models"]["resnet50"]["ratios"]
        done["resnet50_int8_vs_torch_fp32_p90"] = f"x{r['int8_vs_torch_fp32']:.2f} (>= 2.5)"
        done["resnet50_int8_vs_openvino_fp32_p90"] = f"x{r['int8_vs_openvino_fp32']:.2f} (>= 1.8)"
        done["resnet50_max_cv_p50"] = f"{100 * r['max_cv_p50']:.1f}% (< 5%)"
        done["resnet50_passes"] = r["passes"]
    req = result["request_mobilenet_v2"]
    done["request_cold_s"] = f"{req['cold']['request_s']:.2f} (< 15)"
    cached = max(req["cold"]["same_process_repeat_s"], req["new_process_cached"]["request_s"])
    done["request_cached_s"] = f"{cached:.3f} (< 1)"
    done["request_passes"] = req["cold"]["request_s"] < 15 and cached < 1
    models = result["models"].values()
    done["fp32_max_abs_diff"] = max(max(m["onnx_max_abs_diff"], m["openvino_max_abs_diff"])
                                    for m in models) if models else None
    return done


def print_model(name: str, info: dict, lat: dict) -> None:
    print(f"\n== {name}: export {info['export_s']:.2f}s, convert {info['convert_s']:.2f}s, "
          f"INT8 OpenVINO {info['quantize_openvino_s']:.2f}s / onnxruntime "
          f"{info['quantize_onnxruntime_s']:.2f}s; FP32 max|diff| ONNX "
          f"{info['onnx_max_abs_diff']:.2e}, OpenVINO {info['openvino_max_abs_diff']:.2e}")
    print(f"{'backend/precision':<20}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'CV p50':>8}"
          f"{'CPU ms':>9}{'CV CPU':>8}{'img/s b1':>10}{'img/s tp':>10}")
    for k, r in lat["batch1"].items():
        tp = lat.get("throughput", {}).get(k, {}).get("throughput_ips", float("nan"))
        print(f"{k:<20}{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{100 * r['cv_p50']:>7.1f}%{r['cpu_p50_ms']:>9.2f}{100 * r['cv_cpu']:>7.1f}%"
              f"{r['throughput_ips']:>10.1f}{tp:>10.1f}")


def bench_model(name: str, args: argparse.Namespace) -> dict:
    """Lowering, batch-1 latency and throughput of one zoo model; prints its table."""
    torch.manual_seed(0)
    model = zoo.ZOO[name](num_classes=1000).eval()
    with tempfile.TemporaryDirectory(prefix="supernet-bench-") as tmp:
        info, artifacts = lower_model(model, LoweringCache(tmp))
        iterations = args.iterations or (30 if name == "resnet50" else 100)
        lat = {"batch1": latency(model, artifacts, threads=args.threads, warmup=10,
                                 iterations=iterations, repeats=args.repeats,
                                 interleave=args.interleave)}
        if args.throughput_batch:
            lat["throughput"] = latency(model, artifacts, mode="throughput",
                                        batch_size=args.throughput_batch, warmup=2,
                                        iterations=max(4, iterations // 10), repeats=3)
    entry = {**info, "latency": lat, "ratios": ratios(lat["batch1"])}
    print_model(name, info, lat)
    r = entry["ratios"]
    print(f"OpenVINO INT8 p90 speed-up: x{r['int8_vs_torch_fp32']:.2f} vs torch FP32, "
          f"x{r['int8_vs_openvino_fp32']:.2f} vs OpenVINO FP32; max CV of p50 "
          f"{100 * r['max_cv_p50']:.1f}% (targets for ResNet-50: 2.5, 1.8, < 5%)")
    return entry


def bench_request_and_lut(result: dict, lut_samples: int) -> None:
    """Sections 4 and 5 of the module docstring, printed and added to ``result``."""
    result["request_mobilenet_v2"] = req = request_timing()
    print(f"\nlatency-only request, MobileNetV2 (export, convert, INT8, FP32+INT8 x100 at "
          f"batch 1): cold {req['cold']['request_s']:.2f}s (process "
          f"{req['cold']['process_wall_s']:.2f}s), repeat "
          f"{req['cold']['same_process_repeat_s'] * 1e3:.1f} ms, new process from disk cache "
          f"{req['new_process_cached']['request_s'] * 1e3:.1f} ms")
    if not lut_samples:
        return
    result["lut"] = [lut_study(lut_samples, b, (1, 3, 160, 160)) for b in ("torch", "openvino")]
    for s in result["lut"]:
        print(f"lookup table ({s['backend']}, {s['entries']} layer configurations, built in "
              f"{s['build_s']:.1f}s) vs full measurement over {s['subnets']} MobileNetV2 "
              f"sub-networks: Kendall tau {s['kendall_tau']:.3f} (p={s['p_value']:.2g})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--json", default="bench/results/lowering.json")
    p.add_argument("--iterations", type=int, default=0, help="per repeat (0: by model size)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--interleave", type=int, default=5,
                   help="calls of one config before switching to the next (0: whole repeats)")
    p.add_argument("--throughput-batch", type=int, default=8, help="0 skips throughput")
    p.add_argument("--lut-samples", type=int, default=10, help="0 skips the lookup-table study")
    p.add_argument("--request-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.request_child:
        request_child(args.request_child)
        return 0
    result: dict[str, Any] = {"environment": capture_environment(threads=args.threads),
                              "targets": TARGETS, "settings": vars(args), "models": {}}
    for name in args.models:
        result["models"][name] = bench_model(name, args)
    bench_request_and_lut(result, args.lut_samples)
    result["done_when"] = done = done_when(result)
    print("\nDone-when: " + "; ".join(f"{k} {v}" for k, v in done.items()))
    result["load_avg_1m_after"] = os.getloadavg()[0]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.json} (load average before {result['environment']['load_avg_1m']}, "
          f"after {result['load_avg_1m_after']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
