"""The pipeline: the only place where passes are put in order.

    analyze(model, example_inputs)  -> Analysis   capture + every analysis pass, timed
    compile_supernet(model, ...)    -> SuperNetwork   (see passes/emit_supernet.py)

Example:
    >>> import torch
    >>> from bench.models import resnet20_cifar
    >>> a = analyze(resnet20_cifar(num_classes=10), torch.zeros(1, 3, 32, 32))
    >>> len(a.width_groups.elastic), len(a.blocks.blocks)
    (12, 7)
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import torch

from compiler.capture import capture, warm_up
from compiler.ir import IRGraph
from passes.find_elastic_kernels import ElasticKernels, KernelConfig, find_elastic_kernels
from passes.find_skippable_blocks import BlockConfig, SkippableBlocks, find_skippable_blocks
from passes.find_width_groups import GroupingConfig, WidthGroups, find_width_groups
from passes.unsupported import UnsupportedError

__all__ = ["AnalysisConfig", "Analysis", "analyze", "compile_supernet", "run_pipeline", "FORMAT_VERSION"]

FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class AnalysisConfig:
    width: GroupingConfig = field(default_factory=GroupingConfig)
    blocks: BlockConfig = field(default_factory=BlockConfig)
    kernels: KernelConfig = field(default_factory=KernelConfig)
    leaf_modules: tuple = ()
    strict: bool = False
    frontend: str = "auto"


@dataclass(frozen=True)
class Analysis:
    """Everything the analysis passes found, with their timings in milliseconds."""
    ir: IRGraph
    width_groups: WidthGroups
    blocks: SkippableBlocks
    kernels: ElasticKernels
    timings_ms: dict

    @property
    def unsupported(self):
        return (*self.width_groups.unsupported, *self.blocks.unsupported,
                *self.kernels.unsupported)

    def to_dict(self) -> dict:
        wg = self.width_groups
        return {
            "format_version": FORMAT_VERSION,
            "model": type(self.ir.gm).__name__,
            "input_shapes": [list(s) for s in self.ir.input_shapes],
            "summary": {
                "nodes": len(self.ir),
                "width_groups": len(wg.groups),
                "elastic_width_groups": len(wg.elastic),
                "frozen_width_groups": len(wg.groups) - len(wg.elastic),
                "stages": len(self.blocks.stages),
                "skippable_blocks": len(self.blocks.blocks),
                "elastic_kernels": len(self.kernels.kernels),
                "unsupported": len(self.unsupported),
            },
            "width_groups": [g.to_dict() for g in wg.groups],
            "stages": self.blocks.to_dict()["stages"],
            "kernels": self.kernels.to_dict()["kernels"],
            "unsupported": [u.to_dict() for u in self.unsupported],
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


def analyze(model: torch.nn.Module, example_inputs=(), *,
            cfg: AnalysisConfig = AnalysisConfig(), example_kwargs=None) -> Analysis:
    """Capture `model` and run every analysis pass; `cfg.strict` raises on anything unsupported.
    `example_kwargs` are keyword inputs (Hugging Face ``input_ids``, ``pixel_values``, ...)."""
    timings = {}
    warm = warm_up()
    if warm:
        timings["one_time_warmup"] = warm * 1e3
    t0 = time.perf_counter()
    ir = capture(model, example_inputs, example_kwargs=example_kwargs,
                 leaf_modules=cfg.leaf_modules, frontend=cfg.frontend)
    t1 = time.perf_counter()
    timings["capture"] = (t1 - t0) * 1e3
    wg = find_width_groups(ir, cfg=dataclasses.replace(cfg.width, strict=False))
    t2 = time.perf_counter()
    timings["find_width_groups"] = (t2 - t1) * 1e3
    blocks = find_skippable_blocks(ir, cfg=cfg.blocks)
    t3 = time.perf_counter()
    timings["find_skippable_blocks"] = (t3 - t2) * 1e3
    kernels = find_elastic_kernels(ir, cfg=cfg.kernels)
    t4 = time.perf_counter()
    timings["find_elastic_kernels"] = (t4 - t3) * 1e3
    timings["total"] = (t4 - t0) * 1e3
    analysis = Analysis(ir, wg, blocks, kernels, timings)
    if cfg.strict or cfg.width.strict:  # strictness is the pipeline's: one error, every pass
        pairs = [(name, u) for name, result in (("find_width_groups", wg),
                                                ("find_skippable_blocks", blocks),
                                                ("find_elastic_kernels", kernels))
                 for u in result.unsupported]
        if pairs:
            raise UnsupportedError("analyze (strict=True)", [u for _, u in pairs],
                                   [p for p, _ in pairs])
    return analysis


def _keep_blocks(stages, keep) -> tuple:
    """Stages re-chained from the blocks `keep` accepts (a removed block splits its stage)."""
    from passes.find_skippable_blocks import Stage

    out = []
    for stage in stages:
        runs, run = [], []
        for b in stage.blocks:
            if keep(b) and (not run or run[-1].exit == b.entry):
                run.append(b)
            else:
                runs.append(run)
                run = [b] if keep(b) else []
        runs.append(run)
        runs = [r for r in runs if r]
        out += [Stage(stage.name if len(runs) == 1 else f"{stage.name}.{i}", tuple(r))
                for i, r in enumerate(runs)]
    return tuple(out)


def _frozen(analysis: Analysis, cfg) -> tuple[set, frozenset]:
    """(nodes inside ``frozen_modules``, the width groups they touch)."""
    ir = analysis.ir
    nodes = {n for n in ir.names if any(
        (ir.info(n).module_path or "").startswith(p) for p in cfg.frozen_modules)}
    return nodes, frozenset(s.group for u in analysis.width_groups.uses
                            if u.node in nodes for s in u.segments)


def relayout_conflicts(analysis: Analysis, cfg) -> dict[str, str]:
    """{block: why it is not skippable}: a block whose body shuffles or splits elastic channels
    (ShuffleNet's units) hands on its channels in another order than it takes them, so
    identity cannot stand in for it once widths shrink; the widths are kept, the depth is not."""
    wg, (_, frozen_groups) = analysis.width_groups, _frozen(analysis, cfg)
    elastic = {g.name for g in wg.elastic if len(g.choices) > 1} - frozen_groups
    relaid = {r.node for r in wg.relayouts if any(s.group in elastic for s in r.segments)}
    return {b.name: f"its channel shuffle/split {sorted(relaid & set(b.nodes))[0]} re-lays out "
                    "elastic channels, so skipping it would not be identity (widths kept)"
            for b in analysis.blocks.blocks if relaid & set(b.nodes)}


def _plan(analysis: Analysis, cfg, example_inputs):
    from passes.emit_supernet import EmitPlan

    ir = analysis.ir
    frozen_nodes, frozen_groups = _frozen(analysis, cfg)
    # find_skippable_blocks' Rule 14 records say where blocks were not searched for; a block
    # found around such a node is still single-entry single-exit.
    bad = frozen_nodes | {u.node for u in analysis.unsupported
                          if u not in analysis.blocks.unsupported or u.rule != "Rule 14"}
    names = None if isinstance(cfg.depth, str) else set(cfg.depth)
    conflicts = relayout_conflicts(analysis, cfg)
    stages = () if cfg.depth == "off" else _keep_blocks(
        analysis.blocks.stages,
        lambda b: not (bad & {b.entry, *b.nodes} - {b.entry}) and b.name not in conflicts
        and (names is None or b.name in names))
    if names is not None:
        missing = names - {b.name for s in analysis.blocks.stages for b in s.blocks}
        if missing:
            found = [b.name for s in analysis.blocks.stages for b in s.blocks]
            raise ValueError(f"depth lists unknown block(s) {sorted(missing)}; skippable blocks "
                             f"found: {found}")
    kernels = dataclasses.replace(analysis.kernels, kernels=tuple(
        k for k in analysis.kernels.kernels if k.node not in frozen_nodes))
    shapes, resolutions = _shapes_per_resolution(ir, example_inputs, cfg.resolutions)
    return EmitPlan(analysis.width_groups, frozen_groups, stages, cfg.min_active_blocks, kernels,
                    resolutions, shapes)


def _shapes_per_resolution(ir: IRGraph, example_inputs, resolutions):
    """{resolution: {node: shape}}: one capture per extra resolution (meta tensors: cheap)."""
    base = {n: _first_shape(ir.info(n)) for n in ir.names}
    if not resolutions:
        return {None: base}, (None,)
    if ir.frontend == "export":
        raise ValueError("resolutions are not supported for models captured with torch.export "
                         "(the exported graph is specialised to the example input's shape)")
    x = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    shapes = {}
    for r in resolutions:
        if x.dim() < 3:
            raise ValueError("resolutions need an image-like example input (N, C, H, W)")
        xr = torch.zeros(*x.shape[:-2], r, r, dtype=x.dtype)
        try:
            other = capture(ir.gm, (xr,))
        except Exception as exc:
            raise ValueError(f"the model does not run at resolution {r}: {exc}") from exc
        shapes[r] = {n: _first_shape(other.info(n)) for n in ir.names}
    return shapes, tuple(sorted(resolutions, reverse=True))


def _first_shape(info):
    """A node's output shape; for a tuple output (a leaf module), its first tensor's."""
    if info.shape is not None or not info.tuple_shapes:
        return info.shape
    return next((s for s in info.tuple_shapes if s is not None), None)


def as_config(config):
    """A `SupernetConfig` from None (defaults), a dict of its fields, or a SupernetConfig."""
    from compiler.config import SupernetConfig

    if config is None:
        return SupernetConfig()
    if isinstance(config, dict):
        return SupernetConfig.from_dict(config)
    if not isinstance(config, SupernetConfig):
        raise TypeError(f"config must be a SupernetConfig, a dict or None, not "
                        f"{type(config).__name__}")
    return config


def analysis_config(config) -> AnalysisConfig:
    return AnalysisConfig(width=config.grouping(), kernels=config.kernel_config(),
                          strict=config.strict, frontend=config.frontend)


def build_supernet(analysis: Analysis, example_inputs, config):
    """The rewrite half of `compile_supernet`, from an existing analysis."""
    from passes.emit_supernet import emit_supernet
    from passes.reorder_channels import reorder_channels

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    plan = _plan(analysis, config, example_inputs)
    gm = reorder_channels(analysis.ir.gm, analysis.width_groups) if config.reorder else \
        copy.deepcopy(analysis.ir.gm)
    meta = {"model": type(analysis.ir.gm).__name__, "config": config.to_dict(),
            "input_shapes": [list(s) for s in analysis.ir.input_shapes],
            "unsupported": [u.to_dict() for u in analysis.unsupported]}
    conflicts = relayout_conflicts(analysis, config)
    if conflicts:  # reported, never dropped silently
        meta["not_skippable"] = conflicts
    return emit_supernet(gm, plan, meta=meta)


def compile_supernet(model: torch.nn.Module, example_inputs=(), config=None, *,
                     example_kwargs=None):
    """Analyse `model` and rewrite it into an elastic weight-sharing `SuperNetwork`.

    `config` is a `SupernetConfig`, a dict of its fields, or None for the defaults. The model is
    not modified; the super-network owns a copy of its weights, channels reordered by importance.
    `example_kwargs` are keyword inputs (``input_ids``, ``attention_mask``, ``pixel_values``).
    """
    config = as_config(config)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    analysis = analyze(model, example_inputs, cfg=analysis_config(config),
                       example_kwargs=example_kwargs)
    return build_supernet(analysis, example_inputs, config)


def run_pipeline(config, *, resume: bool = False, until: str | None = None, force: bool = False,
                 progress: bool = True, log=print) -> dict:
    """`supernet run`: original model -> compile -> train -> search -> export -> report.

    ``config`` is a `RunConfig`, a dict of its sections or a path to a JSON/YAML file. Every
    stage writes under ``output_dir`` and ends with ``<stage>/done.json``; ``resume=True`` skips
    completed stages and continues the interrupted one from its checkpoints or store. A folder
    holding another run is refused unless ``resume`` (same config) or ``force`` (start over:
    only the run's own files are deleted); a non-empty folder that is not a run is refused.
    ``until`` stops after that stage. Returns ``{stage: its summary}``.
    """
    import shutil
    from pathlib import Path

    from compiler.run_config import RunConfig, load_run_config
    from compiler.stages import STAGES, RunContext, check_before_start, read_json, write_json

    if isinstance(config, (str, Path)):
        cfg = load_run_config(config)
    else:
        cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    names = [n for n, _ in STAGES]
    if until is not None and until not in names:
        raise ValueError(f"until must be one of {names}, got {until!r}")
    check_before_start(cfg)
    out = Path(cfg.output_dir)
    resolved = cfg.resolved()
    marker = out / "config.resolved.json"
    if marker.exists() and not force:
        previous = read_json(marker)
        if not resume:
            raise FileExistsError(f"{out} holds the results of an earlier run; pass --resume to "
                                  "continue it or --force to start over (its results are deleted)")
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved)
                             if previous.get(k) != resolved.get(k))
            raise FileExistsError(f"{out} holds a run with another config (sections {changed} "
                                  "differ); use another output_dir, or --force to start over")
    elif out.exists() and any(out.iterdir()) and not marker.exists():
        raise FileExistsError(f"{out} exists and holds files that are not a supernet run; choose "
                              "an empty or new output_dir (nothing there is deleted, not even "
                              "with --force)")
    if force and out.exists():  # only what a run writes: never the user's other files
        for name in [n for n, _ in STAGES] + ["config.resolved.json", "report.json", "report.html"]:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    write_json(marker, resolved)
    ctx = RunContext(cfg, out, progress=progress, log=log,
                     source=str(config) if isinstance(config, (str, Path)) else None)
    summaries = {}
    for i, (name, stage) in enumerate(STAGES, 1):
        done = out / name / "done.json" if name != "report" else out / "report.json"
        if resume and done.exists() and name != "report":
            log(f"[{i}/{len(STAGES)}] {name}: already complete, skipped")
            summaries[name] = read_json(done)
        else:
            log(f"[{i}/{len(STAGES)}] {name}")
            t0 = time.perf_counter()
            summaries[name] = stage(ctx)
            if name != "report":
                write_json(done, summaries[name])
            log(f"  done in {time.perf_counter() - t0:.1f} s")
        if name == until:
            break
    return summaries
