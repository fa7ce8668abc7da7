"""The stages of `supernet run`; `compiler.pipeline.run_pipeline` puts them in order.

Each stage reads what earlier stages wrote under ``output_dir``, writes its own folder, and ends
by writing ``<stage>/done.json`` atomically: a stage with that file is complete and is skipped
on ``--resume``; a stage without it is redone, continuing from its own checkpoints (training)
or store (search), so a kill loses at most the work since the last checkpoint.

Rules:
  1. original: build the model (reference + kwargs), load its checkpoint (weights only; a
     mismatch lists the keys), or train it first when the config asks (``model.pretrain``,
     cached under ``$SUPERNET_CACHE_DIR/models`` by a hash of everything that shapes it);
     evaluate its top-1 on the whole validation set.
  2. compile: `compile_supernet` with the ``supernet`` options; ``compile/supernet.pt``.
  3. train: `runtime.train.train_supernet` from ``compile/supernet.pt`` with checkpoints in
     ``train/checkpoints``; ``train/supernet.pt`` and ``train/metrics.jsonl``. With
     ``training.time_budget_s`` the epochs are cut to what fits, timed on this machine
     (`runtime.train.plan`) and fixed in ``train/plan.json`` before the first step.
  4. search: `runtime.search.search` over the trained network; accuracy on a fixed validation
     subset (``data.search_val_limit``) after BN re-calibration; the store is
     ``search/store.sqlite``, so a restarted search validates nothing twice.
  5. export (`compiler.export_stage`): candidates from the front are re-evaluated on the whole
     validation set, selected, extracted, written in every format, verified, and timed beside
     the original model on every target.
  6. report (`compiler.run_report`): ``report.json`` and ``report.html``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from compiler.run_config import RunConfig

__all__ = ["RunContext", "STAGES", "write_json", "read_json"]


def write_json(path: Path, data: Any) -> Path:
    """Atomic JSON write (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@dataclass
class RunContext:
    """What every stage shares: the config, the output folder, lazily built objects."""
    cfg: RunConfig
    out: Path
    progress: bool = True
    log: Callable[[str], None] = print
    source: str | None = None
    _memo: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(self.cfg.model.input_shape)

    def loaders(self) -> tuple[Any, Any]:
        key = "loaders"
        if key not in self._memo:
            from runtime.train.data import load_data
            d = self.cfg.data
            kwargs = dict(d.kwargs)
            if d.name in ("digits", "fashion-mnist", "fashion_mnist"):
                kwargs.setdefault("batch_size", d.batch_size)
                kwargs.setdefault("seed", self.cfg.seed)
                if d.name != "digits":
                    kwargs.setdefault("train_limit", d.train_limit)
                    kwargs.setdefault("val_limit", d.val_limit)
            self._memo[key] = load_data(d.name, **kwargs)
        return self._memo[key]

    def search_val_batches(self) -> list:
        """A fixed validation subset (the first ``search_val_limit`` images) as batches."""
        if "search_val" not in self._memo:
            limit, batches, seen = self.cfg.data.search_val_limit, [], 0
            for images, labels in self.loaders()[1]:
                if limit is not None and seen >= limit:
                    break
                take = len(labels) if limit is None else min(len(labels), limit - seen)
                batches.append((images[:take], labels[:take]))
                seen += take
            self._memo["search_val"] = batches
        return self._memo["search_val"]

    def calibration_batches(self, count: int) -> list:
        """The first ``count`` training batches (BN calibration, INT8): `take_batches` returns
        epoch 0's whatever the loader did before, so a resumed stage sees what an uninterrupted
        one saw."""
        from runtime.train.data import take_batches
        key = ("calib", count)
        if key not in self._memo:
            self._memo[key] = take_batches(self.loaders()[0], count)
        return self._memo[key]

    def model(self) -> torch.nn.Module:
        """The user's trained model (after the original stage)."""
        if "model" not in self._memo:
            model = build_model(self.cfg)
            state = torch.load(self.path("original", "model.pt"), weights_only=True)
            model.load_state_dict(state)
            self._memo["model"] = model.eval()
        return self._memo["model"]

    def supernet(self, stage: str):
        from runtime.elastic import SuperNetwork
        key = ("supernet", stage)
        if key not in self._memo:
            self._memo[key] = SuperNetwork.load(self.path(stage, "supernet.pt"))
        return self._memo[key]


def build_model(cfg: RunConfig) -> torch.nn.Module:
    from runtime.modelref import load_model
    return load_model(cfg.model.ref, cfg.model.kwargs)


def load_checkpoint_into(model: torch.nn.Module, path: str) -> None:
    """Load a weights-only state dict; a mismatch lists the keys (Rule 1)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"model.checkpoint {path!r} does not exist") from None
    except Exception as exc:
        raise ValueError(f"model.checkpoint {path!r} cannot be read as a weights-only state dict "
                         f"({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state)
                    if tuple(own[k].shape) != tuple(getattr(state[k], "shape", ())))
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing keys {missing[:10]}" if missing else "",
                 f"{len(unexpected)} unexpected keys {unexpected[:10]}" if unexpected else "",
                 f"shape mismatches {[(k, tuple(own[k].shape), tuple(state[k].shape)) for k in shapes[:5]]}"
                 if shapes else ""]
        raise ValueError(f"model.checkpoint {path!r} does not fit {type(model).__name__}: "
                         + "; ".join(p for p in parts if p))
    model.load_state_dict(state)


def _pretrain_key(cfg: RunConfig) -> str:
    shaping = {"model": cfg.model.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json"),
               "seed": cfg.seed, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:20]


def stage_original(ctx: RunContext) -> dict:
    """Rule 1."""
    from runtime.train.evaluate import evaluate_model
    from runtime.train.fit import fit_model
    cfg, t0 = ctx.cfg, time.perf_counter()
    model = build_model(cfg)
    source = cfg.model.checkpoint
    if source:
        load_checkpoint_into(model, source)
    elif cfg.model.pretrain is not None:
        cache = Path(os.environ.get("SUPERNET_CACHE_DIR", Path.home() / ".cache" / "supernet"))
        cached = cache / "models" / f"{_pretrain_key(cfg)}.pt"
        if cached.exists():
            model.load_state_dict(torch.load(cached, weights_only=True))
            source = f"cache:{cached}"
        else:
            p = cfg.model.pretrain
            ctx.log(f"  training the model first ({p.epochs:g} epochs; cached for later runs)")
            fit_model(model, ctx.loaders()[0], epochs=p.epochs, lr=p.lr,
                      weight_decay=p.weight_decay, seed=cfg.seed, progress=ctx.progress)
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cached.with_suffix(".tmp"))
            os.replace(cached.with_suffix(".tmp"), cached)
            source = f"trained:{cached}"
    else:
        ctx.log("  warning: no model.checkpoint and no model.pretrain: the model is untrained")
    model.eval()
    ctx.path("original").mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), ctx.path("original", "model.pt"))
    ctx._memo["model"] = model
    top1 = evaluate_model(model, ctx.loaders()[1]).top1
    params = sum(p.numel() for p in model.parameters())
    ctx.log(f"  original model: top-1 {top1:.2f}% on the validation set, {params:,} parameters")
    return {"accuracy": top1, "params": params, "weights_from": source,
            "wall_s": time.perf_counter() - t0}


def stage_compile(ctx: RunContext) -> dict:
    """Rule 2."""
    from compiler.pipeline import compile_supernet
    t0 = time.perf_counter()
    net = compile_supernet(ctx.model(), ctx.example_input(), dict(ctx.cfg.supernet))
    ctx.path("compile").mkdir(parents=True, exist_ok=True)
    net.save(ctx.path("compile", "supernet.pt"))
    ctx._memo[("supernet", "compile")] = net
    dims = {d.name: list(d.choices) for d in net.space}
    macs_max, macs_min = net.macs(net.max_config()), net.macs(net.min_config())
    ctx.log(f"  {len(dims)} dimensions, {float(net.space.size):.3g} sub-networks, "
            f"MACs {macs_min / 1e6:.1f}M..{macs_max / 1e6:.1f}M")
    return {"dimensions": dims, "size": str(net.space.size), "macs_max": macs_max,
            "macs_min": macs_min, "unsupported": net.meta.get("unsupported", []),
            "wall_s": time.perf_counter() - t0}


def stage_train(ctx: RunContext) -> dict:
    """Rule 3."""
    from runtime.train import train_supernet
    t = ctx.cfg.training
    t0 = time.perf_counter()
    net = ctx.supernet("compile")
    ctx.path("train").mkdir(parents=True, exist_ok=True)
    options = strategy_options(ctx.cfg)
    teacher = ctx.model() if t.teacher == "original" else None
    device = ("cuda" if torch.cuda.is_available() else "cpu") if t.device == "auto" else t.device
    plan = None if t.time_budget_s is None else training_plan(ctx, net, options, teacher, device)
    epochs = t.epochs if plan is None else float(plan["epochs"])
    result = train_supernet(
        net, ctx.loaders()[0], strategy=t.strategy, strategy_options=options, epochs=epochs,
        lr=t.lr, teacher=teacher, max_steps=t.max_steps,
        checkpoint_dir=ctx.path("train", "checkpoints"), checkpoint_every=t.checkpoint_every,
        metrics_path=ctx.path("train", "metrics.jsonl"), resume=True, seed=ctx.cfg.seed,
        progress=ctx.progress, device=device)
    net.to("cpu")  # search and export run on the CPU; the file is device-free
    if teacher is not None:
        teacher.to("cpu")
    net.save(ctx.path("train", "supernet.pt"))
    ctx._memo[("supernet", "train")] = net
    summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "history"}
    ctx.log(f"  {result.steps} steps, {result.images_per_s:.0f} images/s")
    return {"result": summary, "plan": plan, "wall_s": time.perf_counter() - t0}


def training_plan(ctx: RunContext, net, options: dict, teacher, device) -> dict:
    """Rule 3's ``time_budget_s``: the epochs that fit, planned once (``train/plan.json``)."""
    from runtime.train import plan_epochs, step_seconds, take_batches
    t, path = ctx.cfg.training, ctx.path("train", "plan.json")
    if path.exists():  # a resumed run ends where the uninterrupted one would
        return read_json(path)
    loader, t0 = ctx.loaders()[0], time.perf_counter()
    spe = len(loader)
    seconds = step_seconds(net, take_batches(loader, 4), strategy=t.strategy,
                           strategy_options=options, total_steps=max(1, round(t.epochs * spe)),
                           steps_per_epoch=spe, lr=t.lr, teacher=teacher, device=device,
                           seed=ctx.cfg.seed, steps=16)
    left = max(t.time_budget_s - (time.perf_counter() - t0), 1e-3)  # the timing counts too
    epochs = plan_epochs(t.epochs, steps_per_epoch=spe, budget_s=left, seconds_per_step=seconds)
    plan = {"epochs": epochs, "seconds_per_step": seconds, "steps_per_epoch": spe,
            "time_budget_s": t.time_budget_s, "configured_epochs": t.epochs}
    write_json(path, plan)
    ctx.log(f"  {seconds:.2f} s per step here: {epochs:.3g} of {t.epochs:g} epochs fit "
            f"time_budget_s={t.time_budget_s:g}")
    return plan


def strategy_options(cfg: RunConfig) -> dict:
    """The strategy's options: ``training.options`` plus the keys the config names itself."""
    options = dict(cfg.training.options)
    if cfg.training.list_stage_descriptions is not None:
        options.setdefault("list_stage_descriptions", cfg.training.list_stage_descriptions)
    options.setdefault("weight_decay", cfg.training.weight_decay)
    return options


def stage_search(ctx: RunContext) -> dict:
    """Rule 4."""
    from runtime.search import search
    s, t0 = ctx.cfg.search, time.perf_counter()
    net = ctx.supernet("train")
    objectives = search_objectives(ctx, net)
    store = s.store or str(ctx.path("search", "store.sqlite"))
    ctx.path("search").mkdir(parents=True, exist_ok=True)
    result = search(net, objectives, tactic=s.tactic, algorithm=s.algorithm, budget=s.num_evals,
                    population=s.population, seed=ctx.cfg.seed, store=store,
                    constraints=s.constraints or None, progress=ctx.progress)
    result.save_json(ctx.path("search", "result.json"))
    ctx.log(f"  {result.validations} validations, {len(result.pareto)} sub-networks on the front")
    return {"validations": result.validations, "front": len(result.pareto),
            "wall_s": time.perf_counter() - t0}


def search_objectives(ctx: RunContext, net) -> list:
    from runtime.search import (HardwareTarget, accuracy_objective, latency_objective,
                                macs_objective, params_objective)
    out = []
    for name in ctx.cfg.search.objectives:
        if name == "accuracy":
            out.append(accuracy_objective(
                net, ctx.search_val_batches(),
                calibration_loader=ctx.calibration_batches(ctx.cfg.data.calibration_batches),
                calibration_batches=ctx.cfg.data.calibration_batches))
        elif name == "macs":
            out.append(macs_objective(net))
        elif name == "params":
            out.append(params_objective(net))
        elif name == "latency":
            t = ctx.cfg.search.targets[0]
            out.append(latency_objective(net, HardwareTarget(
                backend=t.backend, precision=t.precision, batch_size=t.batch_size,
                threads=t.threads, device=t.device), method=ctx.cfg.search.latency_method))
        else:
            raise ValueError(f"unknown search objective {name!r}; valid: accuracy, macs, params, "
                             "latency")
    return out


def _export(ctx: RunContext) -> dict:
    from compiler.export_stage import stage_export
    return stage_export(ctx)


def _report(ctx: RunContext) -> dict:
    from compiler.run_report import stage_report
    return stage_report(ctx)


STAGES: tuple[tuple[str, Callable[[RunContext], dict]], ...] = (
    ("original", stage_original), ("compile", stage_compile), ("train", stage_train),
    ("search", stage_search), ("export", _export), ("report", _report))


def check_before_start(cfg: RunConfig) -> None:
    """Every name the runtime must know, and the model reference, checked before any work."""
    from compiler.run_config import ConfigError

    problems = []
    try:
        build_model(cfg)
    except Exception as exc:
        problems.append(f"  model.ref {cfg.model.ref!r}: {exc}")
    if cfg.model.checkpoint and not Path(cfg.model.checkpoint).is_file():
        problems.append(f"  model.checkpoint {cfg.model.checkpoint!r}: no such file")
    try:
        from runtime.train import get_strategy
        get_strategy(cfg.training.strategy, **strategy_options(cfg))
    except (ValueError, TypeError, KeyError) as exc:
        problems.append(f"  training.strategy/options: {exc}")
    from runtime.search import ALGORITHMS, TACTICS
    if cfg.search.tactic not in TACTICS or cfg.search.tactic in ("warm_start", "popdb"):
        problems.append(f"  search.tactic: {cfg.search.tactic!r} is not one of "
                        f"{[t for t in TACTICS if t not in ('warm_start', 'popdb')]} (warm_start "
                        "and popdb need an earlier search: use the Python API)")
    if cfg.search.algorithm not in ALGORITHMS:
        problems.append(f"  search.algorithm: {cfg.search.algorithm!r} is not one of "
                        f"{list(ALGORITHMS)}")
    unknown = [o for o in cfg.search.objectives if o not in ("accuracy", "macs", "params", "latency")]
    if unknown:
        problems.append(f"  search.objectives: unknown {unknown}; valid: accuracy, macs, params, "
                        "latency")
    if problems:
        raise ConfigError("invalid run config:\n" + "\n".join(problems))
