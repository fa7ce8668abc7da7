"""Predictor quality vs training samples: MAPE and Kendall tau on held-out real sub-networks.

    python -m bench.predictors [--models mobilenet_v2,resnet50] [--input-shape 1,3,224,224]
                               [--precisions fp32,int8] [--train-sizes 50,100,200,500]
                               [--test 100] [--iterations 150] [--repeats 1] [--passes 3]
                               [--interleave 10] [--protocol interleaved|separate] [--chunk 0]
                               [--predictors auto,ridge,ridge1h,ridge2,svr,gbr,ensemble]
                               [--supernet NET.pt --data REF] [-o bench/results/predictors.json]
                               [--samples-from EARLIER.json]

For each zoo model, its super-network (``compile_supernet``) is sampled uniformly; every sampled
sub-network is extracted, lowered to OpenVINO (FP32, and INT8 with NNCF) and timed at batch 1 on
one thread. ``--protocol interleaved`` (default) times them in chunks of ``--chunk`` models (0:
all of them at once) with `compare_models`, ``--interleave`` calls of one model before the next,
``--repeats`` rounds: slow drifts of the machine then shift every model of a chunk alike instead
of reordering them (measured here: two separate ``latency_objective`` passes of 30 calls rank 100
MobileNetV2 sub-networks alike at Kendall tau 0.79 only, two interleaved passes of 150 calls at
0.87-0.89). The whole measurement is done ``--passes`` times, each with freshly compiled models
(a compiled model's memory layout shifts its latency by a few percent), and a config's value
is the mean of its passes' p50; the JSON records the tau of one pass against the others.
Both are the search's `latency_objective` (``protocol=``); ``separate`` takes the p50 of
``--iterations`` calls per model, one after the other, cached by architecture. The first
``--test`` sub-networks are held out; predictors are fitted on the first n of the rest for each
n in ``--train-sizes`` on the masked encoding (`SearchSpace.features`), and each latency
predictor once more (named ``NAME+d``) with the search's default descriptors appended (blocks
kept, analytic MACs and parameters, each divided by its value at the maximal config: what a
latency objective's predictor gets in `search`). ``--supernet`` and ``--data`` add the accuracy
of a trained super-network (``runtime.train.evaluate_subnet``). The JSON keeps every measured
sample (config and per-pass values): ``--samples-from`` scores predictors on the samples of an
earlier run instead of measuring again. Writes JSON and prints one line per (model, objective,
predictor, n).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from runtime.search import (EvaluationStore, Objective, latency_objective, make_predictor,
                            predictor_report)
from runtime.search.evaluator import Validator
from runtime.search.objectives import default_descriptors


def _sample(net, n: int, seed: int):
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    while len(out) < n:
        c = net.space.canonical(net.space.sample(rng))
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _descriptor_features(net, configs) -> tuple[np.ndarray, int]:
    """What a latency objective's predictor gets in `search`: `Validator.features` with the
    default descriptors, and how many columns they are."""
    latency = Objective("latency_ms", len, descriptors=True)  # never called: its input only
    v = Validator(net.space, [latency], fingerprint="", store=EvaluationStore(), budget=0,
                  descriptors=default_descriptors(net.space, net))
    return v.features(net.space.indices(configs)), v.n_descriptors(latency)


def _scores(net, configs, values, args, descriptors: bool = False) -> list[dict]:
    variants = [("", net.space.features(configs), 0)]
    if descriptors:
        X, k = _descriptor_features(net, configs)
        variants.append(("+d", X, k))
    y = np.asarray(values, dtype=float)
    test = args.test
    rows = []
    for suffix, X, k in variants:
        for name in args.predictors.split(","):
            for n in map(int, args.train_sizes.split(",")):
                if test + n > len(y):
                    continue
                r = predictor_report(make_predictor(name, descriptors=k), X[test:test + n],
                                     y[test:test + n], X[:test], y[:test])
                rows.append({"predictor": name + suffix, **r.to_dict()})
    return rows


def _measure(net, configs, precision: str, shape, args):
    """(mean over passes, per-pass values) of the p50 ms per config (see the module docstring)."""
    n = args.passes if args.protocol == "interleaved" else 1  # separate values are cached
    passes = [_measure_once(net, configs, precision, shape, args, k) for k in range(n)]
    return np.mean(passes, axis=0).tolist(), passes


def _measure_once(net, configs, precision: str, shape, args, k: int) -> list[float]:
    """One pass: p50 ms per config by ``args.protocol``, with progress."""
    obj = latency_objective(net, f"openvino:{precision}:1:1", input_shape=shape,
                            iterations=args.iterations, warmup=3, repeats=args.repeats,
                            protocol=args.protocol, interleave=args.interleave)
    size = 1 if args.protocol == "separate" else args.chunk or len(configs)
    chunks = [configs[i:i + size] for i in range(0, len(configs), size)]
    label = f"{precision} {args.protocol}, {size} at once, pass {k + 1}"
    return [v for chunk in _progress(chunks, label) for v in obj.evaluate(chunk)]


def _consistency(passes, test: int) -> dict:
    """How alike the passes rank the held-out configs: the noise ceiling of any predictor."""
    from scipy.stats import kendalltau

    if len(passes) < 2:
        return {}
    P = np.asarray(passes)[:, :test]
    one_vs_rest = kendalltau(P[0], P[1:].mean(axis=0)).statistic
    spread = P.mean(axis=0)
    return {"passes": len(passes), "tau_pass1_vs_rest": round(float(one_vs_rest), 4),
            "rel_noise_median": round(float(np.median(P.std(axis=0) / spread)), 4),
            "rel_spread": round(float(spread.std() / spread.mean()), 4)}


def _progress(items, label: str):
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="chunk")


def latency_rows(model_name: str, args, samples: dict) -> list[dict]:
    """Rows for one zoo model; ``samples`` gains (or, with ``--samples-from``, gives) what was
    measured, keyed by "model/precision"."""
    from bench.models import ZOO
    from compiler.pipeline import compile_supernet

    shape = tuple(int(s) for s in args.input_shape.split(","))
    torch.manual_seed(0)
    net = compile_supernet(ZOO[model_name](num_classes=10).eval(), torch.zeros(shape)).eval()
    sizes = [int(s) for s in args.train_sizes.split(",")]
    configs = _sample(net, args.test + max(sizes), seed=0)
    out = []
    for precision in args.precisions.split(","):
        key = f"{model_name}/{precision}"
        t = time.perf_counter()
        if key in samples:  # --samples-from: the configs and values of an earlier run
            configs = [net.space.canonical(c) for c in samples[key]["configs"]]
            passes = samples[key]["passes"]
            values = np.mean(passes, axis=0).tolist()
        else:
            values, passes = _measure(net, configs, precision, shape, args)
            samples[key] = {"configs": [dict(c) for c in configs],
                            "passes": np.asarray(passes).tolist()}
        seconds = time.perf_counter() - t
        consistency = _consistency(passes, args.test)
        print(json.dumps({"model": model_name, "precision": precision, **consistency}))
        for row in _scores(net, configs, values, args, descriptors=True):
            row.update(model=model_name, objective=f"openvino_{precision}_ms",
                       measure_s=round(seconds, 1), samples=len(configs), **consistency)
            out.append(row)
            print(json.dumps(row))
    return out


def accuracy_rows(args) -> list[dict]:
    from runtime.elastic import SuperNetwork
    from runtime.search import accuracy_objective
    from runtime.train.data import load_data

    net = SuperNetwork.load(args.supernet).eval()
    train, val = load_data(args.data)
    sizes = [int(s) for s in args.train_sizes.split(",")]
    configs = _sample(net, args.test + max(sizes), seed=0)
    values = accuracy_objective(net, val, calibration_loader=train).evaluate(configs)
    rows = []
    for row in _scores(net, configs, values, args):
        row.update(model=args.supernet, objective="top1")
        rows.append(row)
        print(json.dumps(row))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mobilenet_v2,resnet50")
    ap.add_argument("--input-shape", default="1,3,224,224")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--train-sizes", default="50,100,200,500")
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=150, help="timed calls per model and repeat")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds per pass")
    ap.add_argument("--passes", type=int, default=3,
                    help="whole measurements with freshly compiled models, averaged")
    ap.add_argument("--interleave", type=int, default=10,
                    help="interleaved protocol: calls of one model before the next")
    ap.add_argument("--protocol", choices=("interleaved", "separate"), default="interleaved")
    ap.add_argument("--chunk", type=int, default=0,
                    help="interleaved protocol: models at once (0: all)")
    ap.add_argument("--predictors", default="auto,ridge,ridge1h,ridge2,svr,gbr,ensemble")
    ap.add_argument("--supernet")
    ap.add_argument("--data")
    ap.add_argument("-o", "--output", default="bench/results/predictors.json")
    ap.add_argument("--samples-from", help="an earlier run's JSON: score its samples, measure nothing")
    args = ap.parse_args(argv)
    samples = {}
    if args.samples_from:
        samples = json.loads(Path(args.samples_from).read_text()).get("samples") or {}
        if not samples:
            raise SystemExit(f"{args.samples_from} holds no samples (written before they were kept?)")
    rows = []
    for model in filter(None, args.models.split(",")):
        rows += latency_rows(model, args, samples)
    if args.supernet and args.data:
        rows += accuracy_rows(args)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "samples": samples}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
