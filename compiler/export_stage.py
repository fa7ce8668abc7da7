"""The export stage of `supernet run`: select, extract, write, verify and time sub-networks.

Rules:
  1. Candidates are the search's validated front plus the maximal configuration. Those whose
     search accuracy (a validation subset) is within ``tolerance_pt + 1`` of the best (the
     ``2k + 2`` cheapest, for ``k = num_subnets``), and ``k`` spread over the rest, are
     re-evaluated on the whole validation set: the selection never rests on the subset's
     noise alone.
  2. Selection ``within_tolerance`` (BootstrapNAS's rule): first the sub-network with the fewest
     MACs whose whole-set accuracy is within ``tolerance_pt`` of the original model's; then
     further sub-networks of the re-evaluated front spread over MACs. ``pareto_spread`` skips
     the first pick.
  3. Each chosen sub-network gets its BN statistics re-calibrated for it (the same batches as
     the whole-set evaluation of Rule 1, so the accuracy the selection judged is the exported
     module's, not a neighbour's with other statistics), is extracted, and is
     written in every format (`runtime.lower.artifacts`); every artifact's accuracy is measured
     on the whole validation set and checked against the whole-set accuracy already measured
     (the selection's, or the original stage's; not measured a second time): FP32 formats must
     agree with PyTorch within 0.1 pt and INT8
     within 1 pt (or one image, on a set too small to resolve that), and the result of that
     check is recorded (and printed when it fails).
  4. The original model is lowered the same way, and every model x target is timed in one
     `compare_models` call per (batch, threads, device), so ratios are side by side.
  5. Each sub-network's folder is complete once its ``done.json`` exists (resume skips it).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from compiler.stages import RunContext, read_json, write_json

__all__ = ["stage_export"]

_AGREEMENT_PT = {"pytorch": 0.1, "onnx": 0.1, "openvino_fp32": 0.1, "openvino_int8": 1.0}


def _candidates(ctx: RunContext, net) -> list[dict]:
    """Rule 1: front entries worth a whole-set evaluation."""
    result = read_json(ctx.path("search", "result.json"))
    acc_name = "accuracy" if "accuracy" in [o["name"] for o in result["objectives"]] else None
    entries = [{"config": e["config"], "search_accuracy": e["values"].get(acc_name)}
               for e in result["pareto"]]
    entries.append({"config": dict(net.max_config()), "search_accuracy": None})
    for e in entries:
        e["macs"] = net.macs(e["config"])
    if acc_name is None:
        return entries
    best = max((e["search_accuracy"] for e in entries if e["search_accuracy"] is not None), default=0)
    margin = ctx.cfg.export.tolerance_pt + 1.0
    near = sorted((e for e in entries if e["search_accuracy"] is not None
                   and e["search_accuracy"] >= best - margin), key=lambda e: e["macs"])
    rest = sorted((e for e in entries if e not in near), key=lambda e: e["macs"])
    k = ctx.cfg.export.num_subnets
    step = max(1, len(rest) // max(1, k))
    return near[:2 * k + 2] + rest[::step][:k]


def _calibration(ctx: RunContext) -> list:
    """Rules 1 and 3: the batches that re-calibrate BN for every whole-set evaluation and export."""
    return ctx.calibration_batches(2 * ctx.cfg.data.calibration_batches)


def _evaluate_full(ctx: RunContext, net, candidates: list[dict]) -> list[dict]:
    from runtime.train.evaluate import evaluate_subnet
    calib = _calibration(ctx)
    for e in candidates:
        e["accuracy"] = evaluate_subnet(net, e["config"], ctx.loaders()[1], calibration_loader=calib,
                                        calibration_batches=len(calib)).top1
    return candidates


def _select(ctx: RunContext, pool: list[dict], original_acc: float) -> list[dict]:
    """Rule 2."""
    k, tol = ctx.cfg.export.num_subnets, ctx.cfg.export.tolerance_pt
    front = [e for e in pool if not any(
        o["accuracy"] >= e["accuracy"] and o["macs"] <= e["macs"] and
        (o["accuracy"] > e["accuracy"] or o["macs"] < e["macs"]) for o in pool)]
    front.sort(key=lambda e: e["macs"])
    chosen = []
    if ctx.cfg.export.selection == "within_tolerance":
        ok = [e for e in pool if e["accuracy"] >= original_acc - tol]
        if ok:
            first = min(ok, key=lambda e: (e["macs"], -e["accuracy"]))
            chosen.append({**first, "role": f"fewest MACs within {tol:g} pt of the original"})
    rest = [e for e in front if all(e["config"] != c["config"] for c in chosen)]
    while rest and len(chosen) < k:
        i = round((len(rest) - 1) * (len(chosen) % 2))  # alternate: cheapest, most accurate, ...
        chosen.append({**rest.pop(i), "role": "front spread"})
    return chosen


def _write_and_verify(ctx: RunContext, name: str, module: torch.nn.Module,
                      accuracy: float | None = None) -> dict:
    """Rule 3 for one model; Rule 5 marker. ``accuracy``: its whole-set top-1 when already
    measured (the original's stage, the selection's evaluation), so it is not measured twice."""
    from runtime.lower.artifacts import evaluate_artifact, write_artifacts
    from runtime.train.evaluate import evaluate_model
    folder = ctx.path("export", name)
    if (folder / "done.json").exists():
        return read_json(folder / "done.json")
    e = ctx.cfg.export
    images = torch.cat([b[0] for b in ctx.calibration_batches(
        -(-e.calibration_samples // ctx.cfg.data.batch_size))])[:e.calibration_samples]
    paths = write_artifacts(module, ctx.example_input(), folder, formats=e.formats,
                            calibration_data=images, calibration_samples=e.calibration_samples,
                            bias_correction=e.bias_correction)
    val = ctx.loaders()[1]
    samples = len(val.dataset) if hasattr(val, "dataset") else None
    if accuracy is None or samples is None:
        result = evaluate_model(module, val)
        accuracy, samples = result.top1, result.samples
    torch_acc, one_image = accuracy, 100.0 / max(1, samples)
    checks = {}
    for kind, path in paths.items():
        acc = evaluate_artifact(kind, path, val)
        allowed = max(_AGREEMENT_PT[kind], one_image)  # a small set cannot resolve 0.1 pt
        checks[kind] = {"path": str(path.relative_to(ctx.out)), "accuracy": acc,
                        "agrees": abs(acc - torch_acc) <= allowed + 1e-9}
        if not checks[kind]["agrees"]:
            ctx.log(f"  WARNING {name} {kind}: top-1 {acc:.2f}% vs PyTorch {torch_acc:.2f}% "
                    f"(allowed {allowed:.2f} pt)")
    info = {"name": name, "accuracy": torch_acc, "artifacts": checks,
            "params": sum(p.numel() for p in module.parameters())}
    write_json(folder / "done.json", info)
    return info


def _targets_by_setting(ctx: RunContext) -> dict[tuple, list[tuple[str, str]]]:
    groups: dict[tuple, list[tuple[str, str]]] = {}
    for t in ctx.cfg.search.targets:
        groups.setdefault((t.batch_size, t.threads, t.device), []).append((t.backend, t.precision))
    return groups


def _measure(ctx: RunContext, modules: dict[str, torch.nn.Module], infos: dict[str, dict]) -> dict:
    """Rule 4."""
    from runtime.lower import compare_models
    from runtime.lower.openvino import ov_core
    lat = ctx.cfg.export.latency
    calib = torch.cat([b[0] for b in ctx.calibration_batches(2)])[:64]
    out: dict[str, dict] = {name: {} for name in modules}
    for (batch, threads, device), configs in _targets_by_setting(ctx).items():
        models: dict[str, Any] = {}
        for name, module in modules.items():
            entry: dict[str, Any] = {"module": module}
            int8 = infos[name]["artifacts"].get("openvino_int8")
            if int8 is not None:
                entry["openvino/int8"] = ov_core().read_model(str(ctx.out / int8["path"]))
            models[name] = entry
        reports = compare_models(models, configs, batch_size=batch, threads=threads, device=device,
                                 warmup=lat.warmup, iterations=lat.iterations, repeats=lat.repeats,
                                 interleave=max(1, lat.iterations // 10),
                                 example_inputs=ctx.example_input(), calibration_data=calib)
        for name, per in reports.items():
            for key, r in per.items():
                backend, precision = key.split("/")
                tname = f"{backend}-{precision}-b{batch}-t{threads}-{device}"
                out[name][tname] = {"p50_ms": r.p50_ms, "p90_ms": r.p90_ms,
                                    "throughput_ips": r.throughput_ips, "cv_p50": r.cv_p50,
                                    "backend": backend, "precision": precision,
                                    "batch_size": batch, "threads": threads, "device": device}
                environment = r.environment
    return {"latency": out, "environment": environment}


def stage_export(ctx: RunContext) -> dict:
    from runtime.train.evaluate import extract_calibrated
    t0 = time.perf_counter()
    net = ctx.supernet("train").eval()
    original_acc = ctx.cfg.search.ref_acc
    if original_acc is None:
        original_acc = read_json(ctx.path("original", "done.json"))["accuracy"]
    selection_path = ctx.path("export", "selection.json")
    if selection_path.exists():
        chosen = read_json(selection_path)
    else:
        pool = _evaluate_full(ctx, net, _candidates(ctx, net))
        chosen = _select(ctx, pool, original_acc)
        if not chosen:
            raise RuntimeError("no sub-network could be selected: the search front is empty")
        write_json(selection_path, chosen)
    modules = {"original": ctx.model()}
    infos = {"original": _write_and_verify(ctx, "original", ctx.model(), read_json(
        ctx.path("original", "done.json"))["accuracy"])}
    for i, c in enumerate(chosen):
        name = f"subnet_{i}"
        calib = _calibration(ctx)
        modules[name] = extract_calibrated(net, c["config"], calib, calibration_batches=len(calib))
        ctx.path("export", name).mkdir(parents=True, exist_ok=True)
        infos[name] = _write_and_verify(ctx, name, modules[name], c["accuracy"])
        infos[name].update(config=c["config"], role=c["role"], macs=c["macs"],
                           search_accuracy=c.get("search_accuracy"))
        ctx.log(f"  {name}: top-1 {infos[name]['accuracy']:.2f}%, {c['macs'] / 1e6:.2f}M MACs "
                f"({c['role']})")
    infos["original"]["macs"] = net.macs(net.max_config())
    timing = _measure(ctx, modules, infos)
    return {"models": infos, **timing, "wall_s": time.perf_counter() - t0}
