"""Every training strategy on Fashion-MNIST from the same trained model, same wall-clock budget.

    python -m bench.train_strategies [--model resnet20_cifar] [--width-mult 1.0]
        [--strategies sandwich upper_attentive deps random progressive_shrinking]
        [--budget-s 600] [--pretrain-epochs 10] [--train-limit N] [--val-limit N]
        [--batch-size 128] [--lr 0.01] [--eval-configs 20] [--eval-max-batches N]
        [--threads 2] [--teacher] [--search-budget 60] [--select-batches 40] [--quick]
        [--out-dir bench/results]

Protocol:
  1. "The user's model": the zoo model (3-channel input; the grey image is repeated) trained
     normally on Fashion-MNIST for ``--pretrain-epochs`` (SGD Nesterov, one-cycle LR), cached
     under ``$SUPERNET_CACHE_DIR/bench`` so later runs reuse it.
  2. It is compiled (`compile_supernet`) once; each strategy trains a copy from that state.
  3. Same wall-clock budget: a step's cost is modelled as ``a + b * MACs`` per sub-network
     (fitted on timed single-sub-network steps of the largest and smallest configs), the
     strategy's plans are evaluated at 64 points of the run to get its mean step cost, and
     its run gets ``budget / mean cost`` steps (iterated three times, since warm-ups measured
     in epochs change the mix). The actual wall time is reported next to the budget. When the
     budget is under two epochs, upper-attentive's warm-up (1 epoch by default) is cut to a
     quarter of the run (recorded in the row's options).
  4. After training, each sub-network's batch norm is re-calibrated on training batches, then
     evaluated on the official 10k test split (``--val-limit`` for less): the largest, the
     smallest, the mean over a fixed set of ``--eval-configs`` sub-networks spanning the MACs
     range (the same for every strategy), the best accuracy among configs with at most 1/3 of
     the maximal MACs, and DepS's mean Pareto accuracy: normalised MACs
     ``(m - min) / (max - min)`` cut into 6 buckets; for each bucket edge k/6 the best accuracy
     among configs at or under it; the mean over the 6 edges.
  4b. "searched <= 1/3 MACs": what a user would deploy at that size. A concurrent search
     (``--search-budget`` validations, constraint MACs <= 1/3 of the maximal) ranks sub-networks
     by their top-1 on ``--select-batches`` *training* batches (never the test split); the one
     with the best selection accuracy under the constraint is then evaluated once on the test
     split. The test split chooses nothing, so the figure carries no selection bias.
  5. The row "none" is the compiled super-network before any training (its sub-networks only
     re-calibrated), a lower bound every strategy should beat.
Writes ``train_strategies.json`` and ``train_strategies.png`` (accuracy vs MACs per strategy)
under ``--out-dir`` and prints a table.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.models import ZOO
from compiler.pipeline import compile_supernet
from runtime.train import (SubnetEvaluator, evaluate_model, evaluate_subnet, fashion_mnist_loaders,
                           get_strategy, spanning_configs, take_batches, train_supernet)
from runtime.train.step import Task, run_step
from runtime.search import search
from runtime.search.objectives import Objective, macs_objective

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ("sandwich", "upper_attentive", "deps", "random", "progressive_shrinking")


def _cache_dir() -> Path:
    return Path(os.environ.get("SUPERNET_CACHE_DIR", Path.home() / ".cache" / "supernet")) / "bench"


def build_model(args) -> nn.Module:
    kwargs = {"num_classes": 10}
    if args.model == "mobilenet_v2":
        kwargs["width_mult"] = args.width_mult
    torch.manual_seed(args.seed)
    return ZOO[args.model](**kwargs)


def users_model(args, train, val) -> nn.Module:
    """Rule 1: trained normally once, then cached."""
    model = build_model(args)
    key = f"{args.model}-w{args.width_mult}-n{args.train_limit}-e{args.pretrain_epochs}-s{args.seed}"
    path = _cache_dir() / f"train_strategies-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    opt = torch.optim.SGD(model.parameters(), lr=args.pretrain_lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = args.pretrain_epochs * len(train)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.pretrain_lr, total_steps=steps)
    model.train()
    for _ in range(args.pretrain_epochs):
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def _time_task(net, config, x, y, repeats: int = 3) -> float:
    net = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        run_step(net, [Task(config, "largest")], x, y, optimizer=opt)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def cost_model(net, x, y) -> tuple[float, float]:
    """Rule 3: seconds per sub-network step = a + b * MACs."""
    big, small = net.max_config(), net.min_config()
    t_big, t_small = _time_task(net, big, x, y), _time_task(net, small, x, y)
    m_big, m_small = net.macs(big), net.macs(small)
    b = max(t_big - t_small, 0.0) / max(m_big - m_small, 1)
    return t_small - b * m_small, b


def planned_steps(name: str, options: dict, net, spe: int, budget_s: float,
                  cost: tuple[float, float]) -> int:
    a, b = cost
    steps = max(int(budget_s / (a + b * net.macs(net.max_config()))), 1)
    for _ in range(3):
        s = get_strategy(name, **options)
        s.bind(net, seed=0, total_steps=None, steps_per_epoch=spe)
        s._total_steps = steps  # no run-length checks while estimating
        per_step = []
        for point in np.linspace(0, steps - 1, 64).astype(int):
            s._step = int(point)
            per_step.append(sum(a + b * net.macs(t.config) for t in s.plan(s.context())))
        steps = max(int(budget_s / float(np.mean(per_step))), 1)
    return steps


def evaluate_all(net, configs, train, val, args) -> dict:
    cal = take_batches(train, args.calibration_batches)
    kw = dict(calibration_loader=cal, calibration_batches=len(cal),
              max_batches=args.eval_max_batches)
    accs = [evaluate_subnet(net, c, val, **kw).top1 for c in configs]
    macs = [net.macs(c) for c in configs]
    lo, hi = min(macs), max(macs)
    norm = [(m - lo) / max(hi - lo, 1) for m in macs]
    pareto = [max([a for a, n in zip(accs, norm) if n <= k / 6 + 1e-12] or [0.0])
              for k in range(1, 7)]
    third = [a for a, m in zip(accs, macs) if m <= hi / 3]
    return {"largest_top1": accs[-1], "smallest_top1": accs[0],
            "mean_top1": float(np.mean(accs)), "pareto6_top1": float(np.mean(pareto)),
            "best_third_macs_top1": max(third) if third else None,
            "configs": [{"macs": m, "top1": a} for m, a in zip(macs, accs)]}


def searched_third(net, train, val, args) -> dict | None:
    """Rule 4b: the best sub-network at <= 1/3 MACs, chosen on training batches."""
    if args.search_budget <= 0:
        return None
    batches = take_batches(train, args.calibration_batches + args.select_batches)
    cal, select = batches[:args.calibration_batches], batches[args.calibration_batches:]
    ev = SubnetEvaluator(net, select, calibration_loader=cal, calibration_batches=len(cal))
    acc = Objective("accuracy", lambda cs: [ev(c).top1 for c in cs], minimize=False)
    limit = net.macs(net.max_config()) / 3
    result = search(net, [acc, macs_objective(net)], tactic="concurrent",
                    budget=args.search_budget, seed=args.seed, progress=False,
                    constraints={"macs": ("<=", limit)})
    feasible = [e for e in result.history if e.ok and e.values["macs"] <= limit]
    if not feasible:
        return None
    pick = max(feasible, key=lambda e: (e.values["accuracy"], -e.values["macs"]))
    test = evaluate_subnet(net, pick.config, val, calibration_loader=cal,
                           calibration_batches=len(cal), max_batches=args.eval_max_batches)
    return {"top1": test.top1, "select_top1": pick.values["accuracy"],
            "macs": pick.values["macs"], "validations": result.validations,
            "config": dict(pick.config)}


def run_strategy(name, base_net, configs, train, val, args, cost, teacher) -> dict:
    net = copy.deepcopy(base_net)
    options = json.loads(args.options).get(name, {}) if args.options else {}
    steps = planned_steps(name, options, net, len(train), args.budget_s, cost)
    warmup = options.get("warmup_epochs", 1.0)
    if name == "upper_attentive" and warmup >= 0.5 * steps / len(train):
        options = {**options, "warmup_epochs": 0.25 * steps / len(train)}  # short budgets: 1/4
        steps = planned_steps(name, options, net, len(train), args.budget_s, cost)
    t = time.perf_counter()
    result = train_supernet(net, train, strategy=name, strategy_options=options,
                            epochs=steps / len(train), lr=args.lr, seed=args.seed,
                            progress=not args.no_progress, teacher=teacher)
    wall = time.perf_counter() - t
    row = {"strategy": name, "options": options, "steps": result.steps,
           "epochs": round(result.epochs, 3), "wall_s": round(wall, 1),
           "images_per_s": round(result.images_per_s, 1)}
    row.update(evaluate_all(net, configs, train, val, args))
    row["searched_third"] = searched_third(net, train, val, args)
    return row


def plot(rows, user_top1, user_macs, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        pts = sorted((c["macs"] / 1e6, c["top1"]) for c in row["configs"])
        ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=row["strategy"])
    ax.scatter([user_macs / 1e6], [user_top1], marker="*", s=150, c="k", label="user's model")
    ax.set_xlabel("MMACs (batch 1)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Fashion-MNIST: sub-networks after each strategy (same wall-clock budget)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows, user_top1) -> None:
    print(f"user's model top-1: {user_top1:.2f}")
    head = (f"{'strategy':<22}{'steps':>7}{'wall s':>8}{'img/s':>8}{'largest':>9}{'smallest':>9}"
            f"{'mean':>7}{'pareto6':>9}{'<=1/3 MACs':>11}{'searched':>9}{'d largest':>10}")
    print(head)
    for r in rows:
        third = r["best_third_macs_top1"]
        found = (r.get("searched_third") or {}).get("top1")
        print(f"{r['strategy']:<22}{r['steps']:>7}{r['wall_s']:>8.1f}{r['images_per_s']:>8.0f}"
              f"{r['largest_top1']:>9.2f}{r['smallest_top1']:>9.2f}{r['mean_top1']:>7.2f}"
              f"{r['pareto6_top1']:>9.2f}{'-' if third is None else f'{third:.2f}':>11}"
              f"{'-' if found is None else f'{found:.2f}':>9}"
              f"{r['largest_top1'] - user_top1:>+10.2f}")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20_cifar", choices=["resnet20_cifar", "mobilenet_v2"])
    p.add_argument("--width-mult", type=float, default=0.5)
    p.add_argument("--strategies", nargs="+", default=list(ALL))
    p.add_argument("--options", help='JSON {strategy: {option: value}}')
    p.add_argument("--budget-s", type=float, default=600.0, help="training seconds per strategy")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--pretrain-lr", type=float, default=0.1)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--eval-configs", type=int, default=20)
    p.add_argument("--eval-max-batches", type=int, default=None)
    p.add_argument("--calibration-batches", type=int, default=8)
    p.add_argument("--search-budget", type=int, default=60,
                   help="validations of the <= 1/3 MACs search per strategy (0: none)")
    p.add_argument("--select-batches", type=int, default=40,
                   help="training batches that rank sub-networks in that search")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", action="store_true",
                   help="distil from the user's model instead of in-place")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (~1-2 min)")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.train_limit, args.val_limit = args.train_limit or 1024, args.val_limit or 256
        args.pretrain_epochs, args.budget_s = 1, min(args.budget_s, 8.0)
        args.eval_configs, args.calibration_batches = min(args.eval_configs, 5), 2
        args.search_budget, args.select_batches = min(args.search_budget, 12), 2
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    for name in args.strategies:
        get_strategy(name)  # unknown names fail before any training
    train, val = fashion_mnist_loaders(batch_size=args.batch_size, seed=args.seed,
                                       train_limit=args.train_limit, val_limit=args.val_limit,
                                       channels=3)
    model = users_model(args, train, val)
    user_top1 = evaluate_model(model, val, max_batches=args.eval_max_batches).top1
    base = compile_supernet(model, torch.zeros(2, 3, 28, 28))
    configs = spanning_configs(base, args.eval_configs, seed=args.seed)
    x, y = next(iter(train))
    cost = cost_model(base, x, y)
    teacher = copy.deepcopy(model) if args.teacher else None
    rows = [{"strategy": "none", "options": {}, "steps": 0, "epochs": 0, "wall_s": 0.0,
             "images_per_s": 0.0, **evaluate_all(base, configs, train, val, args),
             "searched_third": searched_third(base, train, val, args)}]
    for name in args.strategies:
        rows.append(run_strategy(name, base, configs, train, val, args, cost, teacher))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"settings": {k: v for k, v in vars(args).items()},
              "user_top1": user_top1, "user_macs": base.macs(base.max_config()),
              "cost_model_s": {"a": cost[0], "b_per_mac": cost[1]}, "rows": rows}
    (out / "train_strategies.json").write_text(json.dumps(result, indent=2))
    plot(rows, user_top1, base.macs(base.max_config()), out / "train_strategies.png")
    print_table(rows, user_top1)
    print(f"wrote {out / 'train_strategies.json'} and {out / 'train_strategies.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
