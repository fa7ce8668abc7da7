"""Objectives: named, batched functions of sub-network configs, minimised or maximised.

Rules:
  1. An objective is anything with ``name``, ``minimize`` (bool), ``validation`` (bool: True for
     a costly measurement that counts against the budget, False for a cheap analytic value that
     the search may compute for every candidate) and ``evaluate(configs) -> sequence of floats``
     (one per config, same order). Optional: ``settings`` (JSON-able dict; part of the store key,
     so two differently measured values never mix), ``concurrent`` (False: never run in
     parallel with another call, e.g. latency measurements), ``target`` (a `HardwareTarget`) and
     ``descriptors`` (see Rule 5).
  2. `Objective(name, fn, minimize=True, validation=True)` wraps any callable
     ``fn(list_of_configs) -> sequence of floats``.
  3. Built in: `accuracy_objective` (maximised top-1 percent from
     ``runtime.train.evaluate_subnet``: BN re-calibration then validation data; ``evaluate=``
     injects any ``fn(supernet, config, val_loader, calibration_loader=, calibration_batches=)``
     returning a number or an object with ``.top1``), `macs_objective` and `params_objective`
     (analytic, cheap), `latency_objective` (``supernet.extract(config)`` lowered and timed on a
     `HardwareTarget` through ``runtime.lower.request_latency``, or estimated from a per-layer
     table with ``method="table"``).
  4. `resolve_objectives` keeps the order given; an unknown name raises ValueError listing the
     valid ones.
  5. Descriptors are cheap objective-likes the search never optimises but hands the predictors
     of hardware costs (`predictors.py` Rule 6). `default_descriptors`: the blocks every depth
     dimension keeps (`blocks_descriptor`, any space with depth dimensions) and, for a
     super-network, its analytic MACs and parameters. `resolve_descriptors` turns ``None``
     into those, keeps a list of objective-likes (``[]``: none) and refuses anything else with
     a hint. `uses_descriptors(objective)`: its ``descriptors`` attribute, or (None, missing)
     whether it has a hardware ``target`` (latency does, accuracy does not). Latency is, to
     first order, so much per MAC plus so much per layer on any hardware, so a line on the
     descriptors predicts it from a dozen validations. Accuracy is not: a search's validations
     crowd along its front, where accuracy follows MACs closely, and a line fitted there
     predicts every other config of the same MACs as if it were on the front, so the
     predictor stops telling configs apart (measured on the synthetic accuracy/MACs problem:
     95% of the reference hypervolume in 40-46 validations with the descriptors, 34 without).

Example:
    >>> obj = Objective("size", lambda cs: [sum(c.values()) for c in cs])
    >>> obj.evaluate([{"a": 1, "b": 2}]), obj.minimize, obj.validation
    ([3.0], True, True)
    >>> HardwareTarget.parse("openvino:int8:1:2").key
    'openvino:int8:b1:t2:cpu'
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["ObjectiveLike", "Objective", "HardwareTarget", "accuracy_objective", "macs_objective",
           "params_objective", "latency_objective", "resolve_objectives", "BUILTIN_OBJECTIVES",
           "blocks_descriptor", "default_descriptors", "resolve_descriptors", "uses_descriptors"]

BUILTIN_OBJECTIVES = ("accuracy", "macs", "params", "latency")


@runtime_checkable
class ObjectiveLike(Protocol):
    """Rule 1."""

    name: str
    minimize: bool
    validation: bool

    def evaluate(self, configs: Sequence[Mapping[str, int]]) -> Sequence[float]: ...


@dataclass(frozen=True)
class Objective:
    """Any callable as an objective (Rule 2)."""

    name: str
    fn: Callable[[list], Sequence[float]]
    minimize: bool = True
    validation: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)
    concurrent: bool = True
    target: "HardwareTarget | None" = None
    descriptors: bool | None = None  # Rule 5: None = yes when there is a hardware target

    def evaluate(self, configs: Sequence[Mapping[str, int]]) -> list[float]:
        values = list(self.fn(list(configs)))
        if len(values) != len(configs):
            raise ValueError(f"objective {self.name!r} returned {len(values)} values for "
                             f"{len(configs)} configs; it must return one per config")
        return [float(v) for v in values]


@dataclass(frozen=True, kw_only=True)
class HardwareTarget:
    """Where latency is measured: backend, precision, batch size, threads, device."""

    backend: str = "openvino"
    precision: str = "fp32"
    batch_size: int = 1
    threads: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        from runtime.lower.latency import BACKENDS, PRECISIONS

        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {list(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {list(PRECISIONS)}")
        if self.backend == "torch" and self.precision != "fp32":
            raise ValueError("the torch backend measures fp32 only; use openvino or onnxruntime")
        if self.batch_size < 1 or self.threads < 1:
            raise ValueError(f"batch_size and threads must be >= 1, got {self.batch_size}, "
                             f"{self.threads}")

    @property
    def key(self) -> str:
        return (f"{self.backend}:{self.precision}:b{self.batch_size}:t{self.threads}:"
                f"{self.device}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def parse(cls, text: str) -> "HardwareTarget":
        """``backend[:precision[:batch[:threads[:device]]]]``, e.g. ``openvino:int8:1:1``."""
        parts = [p.strip() for p in text.split(":")]
        if not 1 <= len(parts) <= 5 or not parts[0]:
            raise ValueError(f"target {text!r}: expected backend:precision:batch:threads[:device]")
        names = ("backend", "precision", "batch_size", "threads", "device")
        kwargs: dict[str, Any] = {}
        for name, part in zip(names, parts):
            if part:
                kwargs[name] = int(part) if name in ("batch_size", "threads") else part
        return cls(**kwargs)


def _top1(result: Any) -> float:
    return float(getattr(result, "top1", result))


def accuracy_objective(supernet, val_loader, *, calibration_loader=None, calibration_batches: int = 10,
                       evaluate: Callable | None = None, name: str = "accuracy",
                       settings: Mapping[str, Any] | None = None) -> Objective:
    """Top-1 percent after BN re-calibration, maximised (Rule 3).

    ``settings`` names the data (e.g. ``{"data": "fashion_mnist:val"}``) so the store keeps
    accuracies on different data apart."""
    def fn(configs):
        run = evaluate
        if run is None:
            from runtime.train import evaluate_subnet as run  # the training package, lazily
        return [_top1(run(supernet, c, val_loader, calibration_loader=calibration_loader,
                          calibration_batches=calibration_batches)) for c in configs]

    meta = {"calibration_batches": calibration_batches, **(settings or {})}
    return Objective(name, fn, minimize=False, validation=True, settings=meta)


def macs_objective(supernet, *, name: str = "macs") -> Objective:
    """Analytic multiply-accumulates at batch 1; cheap (Rule 3)."""
    return Objective(name, lambda cs: [supernet.macs(c) for c in cs], minimize=True,
                     validation=False)


def params_objective(supernet, *, name: str = "params") -> Objective:
    """Parameter count of the extracted sub-network; cheap (Rule 3)."""
    return Objective(name, lambda cs: [supernet.params(c) for c in cs], minimize=True,
                     validation=False)


def _input_shape(supernet, config, batch_size: int) -> tuple[int, ...]:
    shapes = supernet.meta.get("input_shapes") or []
    if not shapes:
        raise ValueError("latency needs the input shape: the super-network's meta has no "
                         "'input_shapes'; pass input_shape=(1, C, H, W) to latency_objective")
    shape = list(shapes[0])
    res = supernet.bindings.resolution
    if res is not None:
        shape[-2:] = [config[res], config[res]]
    return (batch_size, *shape[1:])


def latency_objective(supernet, target: HardwareTarget | str = HardwareTarget(), *,
                      method: str = "measure", input_shape: Sequence[int] | None = None,
                      iterations: int = 50, warmup: int = 5, repeats: int = 1,
                      protocol: str = "separate", interleave: int = 10,
                      name: str = "latency_ms", cache: Any = True) -> Objective:
    """p50 latency in ms of ``supernet.extract(config)`` on ``target`` (Rule 3).

    ``method="measure"`` lowers and times every sub-network (costly, never concurrent);
    ``method="table"`` sums a per-layer latency table (`runtime.lower.lut`) that times each new
    layer configuration once (cheap after the first few sub-networks).
    ``protocol="separate"`` times the configs of a batch one after another (each result cached
    by architecture); ``"interleaved"`` times a batch's configs together (`compare_models`,
    ``interleave`` calls of one before the next, in every repeat), so that slow drifts of the
    machine shift them alike instead of reordering them: on a 2-core VM two separate passes
    over 100 MobileNetV2 sub-networks ranked them alike at Kendall tau 0.79, two interleaved
    passes at 0.86 with the same 30 calls (`bench/predictors.py`). Its values are not cached."""
    target = HardwareTarget.parse(target) if isinstance(target, str) else target
    methods, protocols = ("measure", "table"), ("separate", "interleaved")
    if method not in methods:
        raise ValueError(f"unknown latency method {method!r}; valid: {list(methods)}")
    if protocol not in protocols:
        raise ValueError(f"unknown latency protocol {protocol!r}; valid: {list(protocols)}")

    def shape_of(config):
        if input_shape is not None:
            return (target.batch_size, *tuple(input_shape)[1:])
        return _input_shape(supernet, config, target.batch_size)

    def measure(configs):
        from runtime.lower.request import request_latency

        out = []
        for c in configs:
            module = supernet.extract(c).eval()
            reports = request_latency(
                module, input_shape=shape_of(c), backend=target.backend,
                precisions=(target.precision,), batch_size=target.batch_size,
                threads=target.threads, device=target.device, warmup=warmup,
                iterations=iterations, repeats=repeats, cache=cache)
            out.append(reports[target.precision].p50_ms)
        return out

    def measure_together(configs):
        from runtime.lower.latency import compare_models

        if len(configs) < 2:
            return measure(configs)
        by_shape: dict[tuple, list[int]] = {}
        for i, c in enumerate(configs):
            by_shape.setdefault(shape_of(c), []).append(i)
        out = [0.0] * len(configs)
        key = f"{target.backend}/{target.precision}"
        for shape, idx in by_shape.items():
            models = {str(i): supernet.extract(configs[i]).eval() for i in idx}
            reports = compare_models(
                models, [(target.backend, target.precision)], input_shape=shape,
                batch_size=target.batch_size, threads=target.threads, device=target.device,
                warmup=warmup, iterations=iterations, repeats=repeats, interleave=interleave,
                cache=cache)
            for i in idx:
                out[i] = reports[str(i)][key].p50_ms
        return out

    table: dict[str, Any] = {}

    def estimate(configs):
        import torch
        from runtime.lower.lut import build_latency_table

        out = []
        for c in configs:
            module, x = supernet.extract(c).eval(), torch.randn(shape_of(c))
            if "table" not in table:
                table["table"] = build_latency_table(
                    [], x, backend=target.backend, threads=target.threads, device=target.device,
                    iterations=iterations, warmup=warmup)
            out.append(table["table"].estimate(module, x))
        return out

    settings = {"target": target.to_dict(), "method": method, "iterations": iterations,
                "warmup": warmup, "repeats": repeats}
    if protocol != "separate":  # the default's settings (and so old stores) stay as they were
        settings.update(protocol=protocol, interleave=interleave)
    fn = estimate if method == "table" else measure_together if protocol == "interleaved" \
        else measure
    return Objective(name, fn, minimize=True, validation=method == "measure", settings=settings,
                     concurrent=False, target=target)


def resolve_objectives(objectives: Sequence[Any], supernet=None, **context: Any) -> list:
    """Objects pass through; names among `BUILTIN_OBJECTIVES` are built from ``supernet`` and
    ``context`` (``val_loader``, ``calibration_loader``, ``target``, ...). Order kept (Rule 4)."""
    if isinstance(objectives, (str, ObjectiveLike)):
        objectives = [objectives]
    out = []
    for obj in objectives:
        if not isinstance(obj, str):
            if not isinstance(obj, ObjectiveLike):
                raise TypeError(f"an objective needs name, minimize, validation and evaluate(); "
                                f"got {type(obj).__name__}")
            out.append(obj)
            continue
        if obj not in BUILTIN_OBJECTIVES:
            raise ValueError(f"unknown objective {obj!r}; valid names: {list(BUILTIN_OBJECTIVES)} "
                             "or an Objective(name, fn) instance")
        if supernet is None:
            raise ValueError(f"objective {obj!r} needs a SuperNetwork, the search got a space")
        out.append(_builtin(obj, supernet, context))
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ValueError(f"objective names must be distinct, got {names}")
    return out


def _builtin(name: str, supernet, context: Mapping[str, Any]):
    if name == "macs":
        return macs_objective(supernet)
    if name == "params":
        return params_objective(supernet)
    if name == "latency":
        return latency_objective(supernet, context.get("target") or HardwareTarget(),
                                 method=context.get("latency_method", "measure"),
                                 protocol=context.get("latency_protocol", "separate"))
    if context.get("val_loader") is None and context.get("evaluate") is None:
        raise ValueError("objective 'accuracy' needs validation data: pass val_loader= (the CLI's "
                         "--data) or use accuracy_objective(...)")
    return accuracy_objective(supernet, context.get("val_loader"),
                              calibration_loader=context.get("calibration_loader"),
                              evaluate=context.get("evaluate"))


class _BlocksKept:
    """Rule 5: the sum of the depth dimensions' values (0 where a dimension is irrelevant)."""

    name, minimize, validation, concurrent, target, settings = "blocks", True, False, True, None, {}

    def __init__(self, space):
        self.space = space
        depth = [(i, d) for i, d in enumerate(space) if d.kind == "depth"]
        self.columns = [i for i, _ in depth]
        self.values = [np.asarray(d.choices, dtype=float) for _, d in depth]

    def evaluate_indices(self, X):
        X = np.asarray(X, dtype=np.int64).reshape(-1, len(self.space))
        relevant = self.space.relevance(X)
        out = np.zeros(len(X))
        for i, values in zip(self.columns, self.values):
            out += np.where(relevant[:, i], values[X[:, i]], 0.0)
        return out

    def evaluate(self, configs):
        return self.evaluate_indices(self.space.indices(configs)).tolist()


def uses_descriptors(objective) -> bool:
    """Rule 5."""
    flag = getattr(objective, "descriptors", None)
    return bool(flag) if flag is not None else getattr(objective, "target", None) is not None


def blocks_descriptor(space):
    """Rule 5: blocks kept by the depth dimensions, or None for a space without any."""
    d = _BlocksKept(space)
    return d if d.columns else None


def default_descriptors(space, supernet=None) -> list:
    """Rule 5."""
    out = [d for d in (blocks_descriptor(space),) if d is not None]
    if supernet is not None:
        out += [macs_objective(supernet), params_objective(supernet)]
    return out


def resolve_descriptors(descriptors: Any, space, supernet=None) -> list:
    """Rule 5."""
    if descriptors is None:
        return default_descriptors(space, supernet)
    if isinstance(descriptors, ObjectiveLike) or not isinstance(descriptors, (list, tuple)):
        raise TypeError("descriptors must be None (the defaults) or a list of cheap objective-likes "
                        f"(name, evaluate(configs)), got {type(descriptors).__name__}")
    for d in descriptors:
        if not isinstance(d, ObjectiveLike):
            raise TypeError(f"a descriptor needs name, minimize, validation and evaluate(); got "
                            f"{type(d).__name__}. Hint: Objective(name, fn, validation=False)")
        if d.validation:
            raise ValueError(f"descriptor {d.name!r} is a validation (costly); a descriptor must be "
                             "cheap: Objective(name, fn, validation=False)")
    return list(descriptors)
