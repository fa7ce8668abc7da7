"""`RunConfig`: the one file a user writes for `supernet run` (JSON or YAML), validated by pydantic.

Rules:
  1. Sections: ``model``, ``data``, ``supernet``, ``training``, ``search``, ``export``, plus
     ``output_dir`` and ``seed``. Every section rejects unknown keys; the error lists each
     wrong key or value with what is allowed (`ConfigError`), all at once, before any work.
  2. ``supernet`` takes `SupernetConfig`'s keys; BootstrapNAS's nested ``width`` / ``depth``
     elasticity objects (``max_num_widths``, ``min_width``, ``width_step``,
     ``width_multipliers``; depth ``mode``/``min_block_size`` are not ours) are flattened.
  3. BootstrapNAS key names are kept where the concept is the same: ``training.
     list_stage_descriptions`` (progressive shrinking stages), ``search.num_evals`` (the budget in
     validations), ``search.population``, ``search.ref_acc`` (reference accuracy, percent).
  4. ``resolved()`` is the config with every default filled in, as JSON-able data; the run
     writes it to ``output_dir/config.resolved.json``. `schema()` is the published JSON schema
     (``supernet schema`` prints it).
  5. Names checked against the runtime (training strategies, search tactics and algorithms,
     objectives) are checked by the pipeline before it starts (`compiler.stages.check_names`).

Example:
    >>> cfg = RunConfig.from_dict({"model": {"ref": "bench.demo:fmnist_resnet",
    ...                                      "input_shape": [1, 1, 28, 28]}, "output_dir": "out"})
    >>> cfg.search.objectives, cfg.search.num_evals, cfg.training.strategy
    (['accuracy', 'macs'], 120, 'sandwich')
    >>> RunConfig.from_dict({"model": {"ref": "m:f", "input_shape": [1, 3, 8, 8], "kwarg": 1},
    ...                      "output_dir": "o"})
    Traceback (most recent call last):
    ...
    compiler.run_config.ConfigError: invalid run config:
      model.kwarg: unknown key; valid keys: ['checkpoint', 'input_shape', 'kwargs', 'pretrain', 'ref']
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["RunConfig", "ConfigError", "schema", "load_run_config"]


class ConfigError(ValueError):
    """An invalid run config: every problem, each with what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Pretrain(_Section):
    """Train the model first when no checkpoint is given (the demo's "user's model"); cached."""
    epochs: float = Field(2.0, gt=0)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(5e-4, ge=0)


class ModelSection(_Section):
    ref: str = Field(description="'package.module:factory' or 'path/file.py:factory'")
    kwargs: dict[str, Any] = {}
    checkpoint: str | None = Field(None, description="state dict of the trained model")
    input_shape: list[int] = Field(description="one example input, e.g. [1, 3, 224, 224]")
    pretrain: Pretrain | None = None

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 for d in v):
            raise ValueError("must be positive integers like [1, 3, 224, 224]")
        return v


class DataSection(_Section):
    name: str = Field("fashion-mnist", description="'digits', 'fashion-mnist', or a factory "
                      "reference returning (train_loader, val_loader)")
    kwargs: dict[str, Any] = {}
    batch_size: int = Field(128, ge=1)
    train_limit: int | None = Field(None, ge=1)
    val_limit: int | None = Field(None, ge=1)
    search_val_limit: int | None = Field(2000, ge=1, description="validation images per "
                                         "accuracy evaluation during search")
    calibration_batches: int = Field(4, ge=1, description="BN re-calibration batches per subnet")


class TrainingSection(_Section):
    strategy: str = "sandwich"
    options: dict[str, Any] = {}
    epochs: float = Field(1.0, gt=0)
    time_budget_s: float | None = Field(
        None, gt=0, description="cap on training time: the steps that fit are planned from the "
        "timed steps of this machine (fewer epochs when the budget is short; never more)")
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(5e-5, ge=0)
    teacher: Literal["inplace", "original", "none"] = "inplace"
    list_stage_descriptions: list[dict[str, Any]] | None = None
    max_steps: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1'")


class Target(_Section):
    backend: Literal["openvino", "onnxruntime", "torch"] = "openvino"
    precision: Literal["fp32", "int8"] = "fp32"
    batch_size: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}-b{self.batch_size}-t{self.threads}-{self.device}"


class SearchSection(_Section):
    objectives: list[str] = ["accuracy", "macs"]
    targets: list[Target] = [Target(), Target(precision="int8")]
    tactic: str = "concurrent"
    algorithm: str = "nsga2"
    num_evals: int = Field(120, ge=1, description="budget: validations")
    population: int = Field(24, ge=2)
    constraints: dict[str, Any] = {}
    latency_method: Literal["measure", "table"] = Field(
        "measure", description="the latency objective: time each sub-network on the first target, "
        "or sum a per-layer table")
    ref_acc: float | None = Field(None, description="reference accuracy (percent); default: "
                                  "the original model's, measured")
    store: str | None = Field(None, description="SQLite store; default output_dir/search/store.sqlite")


class LatencySection(_Section):
    warmup: int = Field(10, ge=0)
    iterations: int = Field(100, ge=1)
    repeats: int = Field(5, ge=1)


class ExportSection(_Section):
    num_subnets: int = Field(3, ge=1)
    selection: Literal["within_tolerance", "pareto_spread"] = "within_tolerance"
    tolerance_pt: float = Field(0.5, ge=0)
    formats: list[Literal["pytorch", "onnx", "openvino_fp32", "openvino_int8"]] = \
        ["pytorch", "onnx", "openvino_fp32", "openvino_int8"]
    calibration_samples: int = Field(300, ge=1)
    bias_correction: Literal["full", "fast", "none"] = Field(
        "full", description="NNCF's bias correction for the INT8 exports: 'full' measures the "
        "shift layer by layer (a few seconds more; kept the demo's INT8 models within 0.1 pt of "
        "FP32 where 'fast' lost 1 pt)")
    latency: LatencySection = LatencySection()


class RunConfig(_Section):
    model: ModelSection
    data: DataSection = DataSection()
    supernet: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    training: TrainingSection = TrainingSection()
    search: SearchSection = SearchSection()
    export: ExportSection = ExportSection()
    output_dir: str
    seed: int = 0

    @field_validator("supernet", mode="before")
    @classmethod
    def _supernet(cls, v: Any) -> dict[str, Any]:
        from compiler.config import SupernetConfig
        if not isinstance(v, dict):
            raise ValueError("must be an object with SupernetConfig keys")
        flat = {k: w for k, w in v.items() if k not in ("width", "depth") or not isinstance(w, dict)}
        flat.update(v.get("width", {}) if isinstance(v.get("width"), dict) else {})  # Rule 2
        depth = v.get("depth") if isinstance(v.get("depth"), dict) else None
        if depth is not None:
            flat["depth"] = "off" if depth.get("mode") == "off" else "auto"
        return SupernetConfig.from_dict(flat).to_dict()

    @classmethod
    def from_dict(cls, data: Any) -> "RunConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format(exc)) from None

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _valid_keys(loc: tuple) -> list[str]:
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            inner = getattr(candidate, "__args__", ())
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                model = inner[0]
                break
    return sorted(getattr(model, "model_fields", {}))


def _format(exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int)) or ("<root>",)
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key; valid keys: {_valid_keys(loc)}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r:.60})"
            lines.append(f"  {where}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "invalid run config:\n" + "\n".join(lines)


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a JSON (or YAML, when PyYAML is installed) run config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read run config {path}: {exc}") from exc
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path} is YAML; pip install pyyaml, or write it as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object with the sections of RunConfig")
    data = {**data, **(overrides or {})}
    return RunConfig.from_dict(data)


def schema() -> dict[str, Any]:
    """The published JSON schema of the run config (Rule 4)."""
    return RunConfig.model_json_schema()
