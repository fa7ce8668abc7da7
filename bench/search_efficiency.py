"""Validations needed by NSGA-II full search, random search and the concurrent search.

    python -m bench.search_efficiency [--seeds 5] [--full-budget 5000] [--concurrent-budget 600]
                                      [--reference-budget 20000] [--skip-transfer]
                                      [--parts a,b,c] [--jobs 1]
                                      [--supernet NET.pt --data REF] [-o bench/results/search.json]

(a) The synthetic OFA-MobileNetV3-like problem of `bench/search_synthetic.py` (45 dimensions,
    accuracy validated, MACs computed). A reference hypervolume comes from one long NSGA-II
    search (``--reference-budget`` validations; the best of every run if that is higher).
    Reported per method: validations to reach 90% and 95% of it (median and range over the
    seeds; None when never reached), the hypervolume at fixed budgets, the final fraction, and
    for the concurrent search the wall time per iteration outside validations.
(b) One concurrent iteration with 1,000 validated points (predictor refit + inner search of
    100 x 100 = 10,000 predicted evaluations + batch choice), timed.
(c) Transfer between two synthetic targets (accuracy and latency both validated): warm start on
    target "gpu" from a concurrent search on "cpu" vs a cold start, and PopDB's space
    (learned from the "cpu" search's population) vs the full space; then the same on "cpu"
    itself (a second search of the target the first one searched).
(d) ``--supernet NET.pt --data REF``: the same comparison with real validations (accuracy after
    BN re-calibration on ``--real-val-batches`` batches of REF's validation split, MACs
    analytic) on a trained super-network, e.g. the demo's ``runs/fmnist-demo/train/supernet.pt``
    with ``--data fashion-mnist``. A config measured once is remembered across runs (its
    validation still counts in every run that asks for it).
All of it writes JSON (``-o``) and prints a table. Nothing here is a unit test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.search_synthetic import SyntheticProblem
from runtime.search import EvaluationStore, search
from runtime.search.context import Context, TacticOptions
from runtime.search.evaluator import Validator
from runtime.search.inner import choose_batch, fit_models, inner_search

BUDGET_MARKS = (100, 200, 300, 500, 1000, 2000, 5000)


def reach(curve, target: float):
    """First validation count whose hypervolume is >= target (None if never)."""
    return next((v for v, h in curve if h >= target), None)


def hv_at(curve, budget: int) -> float:
    best = 0.0
    for v, h in curve:
        if v <= budget:
            best = h
    return best


def summary(values):
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "reached": f"0/{len(values)}"}
    return {"median": statistics.median(got) if len(got) == len(values) else None,
            "min": min(got), "max": max(got), "reached": f"{len(got)}/{len(values)}"}


def run_method(problem, objectives, method: str, budget: int, seed: int, **kw):
    tactic, algorithm = {"nsga2": ("full", "nsga2"), "random": ("full", "random"),
                         "concurrent": ("concurrent", "nsga2")}[method]
    t = time.perf_counter()
    r = search(problem.space, objectives, tactic=tactic, algorithm=algorithm, budget=budget,
               population=50, seed=seed, progress=False, **kw)
    return r, time.perf_counter() - t


def synthetic(args) -> dict:
    p = SyntheticProblem()
    objs = p.objectives()
    t = time.perf_counter()
    ref_run, _ = run_method(p, objs, "nsga2", args.reference_budget, seed=1000)
    out = {"reference": {"validations": args.reference_budget,
                         "hypervolume": ref_run.best_hypervolume,
                         "seconds": round(time.perf_counter() - t, 1)}, "methods": {}}
    runs = {}
    budgets = {"nsga2": args.full_budget, "random": args.full_budget,
               "concurrent": args.concurrent_budget}
    for method, budget in budgets.items():
        for seed in range(args.seeds):
            r, seconds = run_method(p, objs, method, budget, seed,
                                    options={"min_improvement": 0.0} if method == "concurrent" else None)
            assert r.bounds == ref_run.bounds, "runs must share the hypervolume bounds"
            runs.setdefault(method, []).append((r, seconds))
    ref = max([ref_run.best_hypervolume] + [r.best_hypervolume for rs in runs.values() for r, _ in rs])
    out["reference"]["hypervolume_used"] = ref
    for method, rs in runs.items():
        row = {"budget": budgets[method],
               "to_90": summary([reach(r.hypervolume, 0.90 * ref) for r, _ in rs]),
               "to_95": summary([reach(r.hypervolume, 0.95 * ref) for r, _ in rs]),
               "final_fraction": [round(r.best_hypervolume / ref, 4) for r, _ in rs],
               "hv_at": {b: round(statistics.median(hv_at(r.hypervolume, b) / ref for r, _ in rs), 4)
                         for b in BUDGET_MARKS if b <= budgets[method]},
               "seconds": [round(s, 1) for _, s in rs]}
        if method == "concurrent":
            its = [t for r, _ in rs for t in r.info.get("iteration_s", [])]
            row["iteration_s"] = {"median": round(statistics.median(its), 3), "max": round(max(its), 3)}
        out["methods"][method] = row
    return out


def iteration_timing(n_points: int = 1000, seed: int = 0) -> dict:
    """(b): one concurrent iteration on a validator holding ``n_points`` validated configs."""
    p = SyntheticProblem()
    objs = p.objectives()
    v = Validator(p.space, objs, fingerprint="timing", store=EvaluationStore(), budget=n_points + 100)
    ctx = Context(p.space, v, "nsga2", 50, seed, TacticOptions(),
                  np.array([p.space.encode(p.space.max_config()), p.space.encode(p.space.min_config())]))
    v.on_batch = ctx.after_batch
    rng = np.random.default_rng(seed)
    sizes = np.array([len(d.choices) for d in p.space])
    v.validate(ctx.seeds)
    v.validate(rng.integers(0, sizes, size=(n_points - 2, len(sizes))))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        models = fit_models(ctx, v.history)
        t1 = time.perf_counter()
        X, F, G = inner_search(ctx, models, seed=int(rng.integers(2**31)))
        t2 = time.perf_counter()
        choose_batch(ctx, X, F, G, 25)
        t3 = time.perf_counter()
        times.append({"fit_s": t1 - t0, "inner_s": t2 - t1, "choose_s": t3 - t2, "total_s": t3 - t0})
    best = min(times, key=lambda d: d["total_s"])
    return {"validated": len(v.history), "predicted_evaluations": TacticOptions().inner_generations *
            TacticOptions().inner_population,
            "best": {k: round(x, 3) for k, x in best.items()},
            "all_total_s": [round(d["total_s"], 3) for d in times]}


def _transfer_run(tactic: str, seed: int, budget: int, src: str | None, store: str | None = None,
                  bounds=None, population: int = 50, target: str = "gpu", options=None):
    """One search of (c); module level so that ``--jobs`` can run it in another process."""
    p = SyntheticProblem()
    r = search(p.space, p.latency_objectives(target), tactic=tactic, budget=budget,
               population=population, seed=seed, progress=False, store=store, warm_start=src,
               bounds=bounds, options=options, descriptors=p.descriptors())
    return SimpleNamespace(hypervolume=r.hypervolume, best_hypervolume=r.best_hypervolume,
                           bounds=r.bounds, info={k: r.info.get(k) for k in ("space_size", "transfer")})


def transfer(args, tmp: Path) -> dict:
    """(c): warm start and PopDB from a concurrent search on "cpu", run on the other target
    ("gpu": ``cross_target``) and on the same one (``same_target``, e.g. a new search with
    another budget or constraint), each against cold concurrent starts on that target."""
    src = tmp / "cpu.db"
    if src.exists():
        src.unlink()
    out = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        first = pool.submit(_transfer_run, "concurrent", 99, args.concurrent_budget, None,
                            store=str(src), target="cpu")
        refs = {target: pool.submit(_transfer_run, "full", 1000, args.reference_budget, None,
                                    population=100, target=target) for target in ("gpu", "cpu")}
        refs = {target: f.result() for target, f in refs.items()}
        first.result()
        for label, target in (("cross_target", "gpu"), ("same_target", "cpu")):
            out[label] = _transfer_compare(args, pool, str(src), refs[target], target)
    return out


def _transfer_compare(args, pool, src: str, ref_run, target: str) -> dict:
    common = dict(options={"min_improvement": 0.0}, bounds=ref_run.bounds, target=target)
    jobs = {(name, seed): pool.submit(_transfer_run, tactic, seed, args.concurrent_budget,
                                      None if name == "cold" else src, **common)
            for seed in range(args.seeds)
            for name, tactic in (("cold", "concurrent"), ("warm", "warm_start"),
                                 ("popdb", "popdb"))}
    runs = {name: [jobs[name, seed].result() for seed in range(args.seeds)]
            for name in ("cold", "warm", "popdb")}
    ref = max([ref_run.best_hypervolume] + [r.best_hypervolume for rs in runs.values() for r in rs])
    out = {"target": target, "reference_hypervolume": ref,
           "reference_validations": args.reference_budget}
    for name, rs in runs.items():
        row = {}
        for level in (90, 95):
            got = [reach(r.hypervolume, level / 100 * ref) for r in rs]
            row[f"to_{level}"] = {**summary(got), "per_seed": got}
        row["final_fraction"] = [round(r.best_hypervolume / ref, 4) for r in rs]
        row["hv_at"] = {b: [round(hv_at(r.hypervolume, b) / ref, 4) for r in rs]
                        for b in (25, 50, 75, 100, 150, 200, 300) if b <= args.concurrent_budget}
        out[name] = row
    out["popdb_space_size"] = runs["popdb"][0].info.get("space_size")
    out["warm_transfer"] = runs["warm"][0].info.get("transfer")
    return out


def _real_problem(args):
    """(d): the trained super-network, a memoised accuracy (a fixed validation subset after BN
    re-calibration, as the pipeline's search measures it) and analytic MACs."""
    import torch

    from runtime.elastic import SuperNetwork
    from runtime.search.objectives import Objective, macs_objective
    from runtime.train import SubnetEvaluator
    from runtime.train.data import load_data

    torch.set_num_threads(args.threads)
    net = SuperNetwork.load(args.supernet).eval()
    train, val = load_data(args.data)
    ev = SubnetEvaluator(net, val, calibration_loader=train, calibration_batches=4,
                         max_batches=args.real_val_batches)
    memo: dict[str, float] = {}

    def accuracy(configs):  # a config met again in another run costs no second measurement
        keys = [json.dumps(dict(net.space.canonical(c)), sort_keys=True) for c in configs]
        for k, c in zip(keys, configs):
            if k not in memo:
                memo[k] = ev(c).top1
        return [memo[k] for k in keys]

    acc = Objective("accuracy", accuracy, minimize=False,
                    settings={"data": args.data, "val_batches": args.real_val_batches})
    return net, [acc, macs_objective(net)], memo


def real_supernet(args) -> dict:
    """(d): NSGA-II full search vs the concurrent search with real validations, measured like (a)
    against a reference from one longer NSGA-II search (``--real-reference-budget``)."""
    net, objs, memo = _real_problem(args)
    t = time.perf_counter()
    ref_run = search(net, objs, tactic="full", budget=args.real_reference_budget, population=50,
                     seed=1000, progress=False)
    out = {"reference": {"validations": args.real_reference_budget,
                         "seconds": round(time.perf_counter() - t, 1)}, "methods": {}}
    concurrent = {"min_improvement": 0.0}
    methods = {"nsga2": ("full", args.real_budget, None),
               "concurrent": ("concurrent", args.real_concurrent_budget, concurrent)}
    if n := args.real_other_initial:  # the concurrent search from another first sample size
        other = {**concurrent, "initial": n, "batch_size": max(4, n // 2)}
        methods[f"concurrent_initial{n}"] = ("concurrent", args.real_concurrent_budget, other)
    runs = {}
    for method, (tactic, budget, options) in methods.items():
        for seed in range(args.seeds):
            t = time.perf_counter()
            r = search(net, objs, tactic=tactic, budget=budget, population=50, seed=seed,
                       progress=False, bounds=ref_run.bounds, options=options)
            runs.setdefault(method, []).append((r, time.perf_counter() - t))
    ref = max([ref_run.best_hypervolume] + [r.best_hypervolume for rs in runs.values() for r, _ in rs])
    out["reference"]["hypervolume_used"] = ref
    out["distinct_configs_measured"] = len(memo)
    if ref <= 0:
        raise SystemExit("(d): every front has zero hypervolume: is the super-network trained?")
    for method, rs in runs.items():
        out["methods"][method] = {
            "budget": methods[method][1],
            "to_90": summary([reach(r.hypervolume, 0.90 * ref) for r, _ in rs]),
            "to_95": summary([reach(r.hypervolume, 0.95 * ref) for r, _ in rs]),
            "final_fraction": [round(r.best_hypervolume / ref, 4) for r, _ in rs],
            "seconds": [round(x, 1) for _, x in rs]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--full-budget", type=int, default=5000)
    ap.add_argument("--concurrent-budget", type=int, default=600)
    ap.add_argument("--reference-budget", type=int, default=20000)
    ap.add_argument("--skip-transfer", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="(c): searches run in this many processes")
    ap.add_argument("--parts", default="a,b,c",
                    help="comma-separated parts to run: a (synthetic), b (iteration), c (transfer)")
    ap.add_argument("--supernet", help="(d) a trained super-network file")
    ap.add_argument("--data", help="(d) data reference for runtime.train.data.load_data")
    ap.add_argument("--real-budget", type=int, default=600, help="(d) NSGA-II validations per seed")
    ap.add_argument("--real-concurrent-budget", type=int, default=150)
    ap.add_argument("--real-reference-budget", type=int, default=1500)
    ap.add_argument("--real-other-initial", type=int, default=50,
                    help="(d) also run the concurrent search from this many first validations "
                         "(batches of half as many; 50 was the default before 16); 0: skip")
    ap.add_argument("--real-val-batches", type=int, default=8,
                    help="(d) validation batches per accuracy (the pipeline's search uses ~2000 images)")
    ap.add_argument("--threads", type=int, default=2, help="(d) torch threads")
    ap.add_argument("-o", "--output", default="bench/results/search_efficiency.json")
    args = ap.parse_args(argv)
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    report = {"args": vars(args)}
    if "a" in parts:
        report["synthetic"] = synthetic(args)
    if "b" in parts:
        report["iteration"] = iteration_timing()
    if "c" in parts and not args.skip_transfer:
        report["transfer"] = transfer(args, out_path.parent)
    if args.supernet:
        report["real"] = real_supernet(args)
    out_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "args"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
