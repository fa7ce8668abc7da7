"""Per-layer latency lookup table: time each distinct layer configuration once, sum per network.

Rules:
  1. A network's layers are its leaf modules (modules without children) as called by one forward
     pass on ``example_inputs``; a module called twice counts twice.
  2. A layer configuration is its class, its ``extra_repr`` (kernel, stride, channels, groups...)
     and its input shapes; two layers with the same configuration share one table entry, across
     networks too, so a table built for one sub-network is reused by every other.
  3. Each new configuration is timed alone with `measure_latency` on the table's backend,
     threads and device (p50 of ``iterations`` calls). The fixed cost of one call
     (``overhead_ms``, an ``nn.Identity`` on the network's input) is subtracted from every entry
     and added once per network, so per-call overheads are not summed per layer.
  4. `estimate` returns ``overhead_ms + sum(entries)``; a configuration missing from the table is
     timed and added first (``extend=True``) or raises ``KeyError`` naming it.
  5. `lut_agreement` compares the table's estimates with full measurements over sampled
     sub-networks by Kendall's tau (1 = the same ranking), which is what search needs.

Unsupported:
  - Functional operations in ``forward`` (residual adds, ``F.adaptive_avg_pool2d``, ``cat``,
    ``flatten``) are not modules and are not counted; they are cheap and shift every estimate
    alike, which the agreement measures.
  - Fusion: a backend that fuses conv+BN+activation runs the network faster than the sum of
    its separately timed layers; rankings hold better than absolute values.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.ReLU())
    >>> table = build_latency_table([net], torch.randn(1, 3, 16, 16), iterations=3, warmup=1)
    >>> len(table.entries)
    2
    >>> table.estimate(net, torch.randn(1, 3, 16, 16)) > 0
    True
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from runtime.lower.cache import LoweringCache
from runtime.lower.environment import capture_environment
from runtime.lower.latency import measure_latency
from runtime.lower.onnx_export import as_input_tuple, to_onnx
from runtime.lower.openvino import to_openvino

__all__ = ["LatencyTable", "LutAgreement", "build_latency_table", "layer_calls", "lut_agreement"]


def _shapes(inputs: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor))


def layer_calls(model: torch.nn.Module, example_inputs: Any
                ) -> list[tuple[str, torch.nn.Module, tuple[tuple[int, ...], ...]]]:
    """``(configuration key, layer, input shapes)`` per leaf-module call, in order (Rules 1-2)."""
    calls: list[tuple[str, torch.nn.Module, tuple[tuple[int, ...], ...]]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        shapes = _shapes(args)
        key = f"{type(module).__qualname__}({module.extra_repr()})|{shapes}"
        calls.append((key, module, shapes))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_pre_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*as_input_tuple(example_inputs))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


@dataclasses.dataclass
class LatencyTable:
    """Layer configuration -> milliseconds on one backend, threads and device."""

    backend: str = "torch"
    threads: int = 1
    device: str = "cpu"
    warmup: int = 5
    iterations: int = 20
    overhead_ms: float = 0.0
    entries: dict[str, float] = dataclasses.field(default_factory=dict)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)

    def _time(self, module: torch.nn.Module, shapes: tuple[tuple[int, ...], ...]) -> float:
        inputs = tuple(torch.randn(s) for s in shapes)
        layer: Any = copy.deepcopy(module).eval()
        store = LoweringCache(None)
        # Rule 3: one layer's numerics are not checked here; full networks are, when lowered.
        if self.backend == "onnxruntime":
            layer = to_onnx(layer, inputs, check=False, cache=store)
        elif self.backend == "openvino":
            layer = to_openvino(layer, inputs, check=False, cache=store)
        report = measure_latency(
            layer, backend=self.backend, threads=self.threads, device=self.device,
            warmup=self.warmup, iterations=self.iterations, repeats=1, example_inputs=inputs,
            batch_size=shapes[0][0], cache=store)
        return report.p50_ms

    def add(self, model: torch.nn.Module, example_inputs: Any) -> int:
        """Time the configurations of ``model`` missing from the table; returns how many."""
        if not self.environment:
            self.environment = capture_environment(device=self.device, threads=self.threads)
            shapes = _shapes(as_input_tuple(example_inputs))
            self.overhead_ms = self._time(torch.nn.Identity(), shapes)  # Rule 3
        added = 0
        for key, module, shapes in layer_calls(model, example_inputs):
            if key not in self.entries:
                self.entries[key] = max(0.0, self._time(module, shapes) - self.overhead_ms)
                added += 1
        return added

    def estimate(self, model: torch.nn.Module, example_inputs: Any, *,
                 extend: bool = True) -> float:
        """Estimated latency in milliseconds (Rule 4)."""
        calls = layer_calls(model, example_inputs)
        missing = sorted({key for key, _, _ in calls if key not in self.entries})
        if missing and not extend:
            raise KeyError(f"{len(missing)} layer configurations are not in the table, e.g. "
                           f"{missing[0]}; call table.add(model, example_inputs) or extend=True")
        if missing:
            self.add(model, example_inputs)
        return self.overhead_ms + sum(self.entries[key] for key, _, _ in calls)

    def save(self, path: str | Path) -> None:
        """Write the table as JSON."""
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """Read a table written by `save`."""
        return cls(**json.loads(Path(path).read_text()))


def build_latency_table(models: Sequence[torch.nn.Module], example_inputs: Any, *,
                        backend: str = "torch", threads: int = 1, device: str = "cpu",
                        warmup: int = 5, iterations: int = 20) -> LatencyTable:
    """A table holding every layer configuration of ``models`` (Rules 1-3)."""
    table = LatencyTable(backend=backend, threads=threads, device=device, warmup=warmup,
                         iterations=iterations)
    for model in models:
        table.add(model, example_inputs)
    return table


@dataclasses.dataclass(frozen=True)
class LutAgreement:
    """Table estimates against full measurements over the same networks (Rule 5)."""

    kendall_tau: float
    p_value: float
    estimated_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def lut_agreement(table: LatencyTable, models: Sequence[torch.nn.Module], example_inputs: Any, *,
                  measure: Callable[[torch.nn.Module], float] | None = None) -> LutAgreement:
    """Kendall's tau between ``table.estimate`` and ``measure`` (default: full p50, Rule 5)."""
    from scipy.stats import kendalltau

    if len(models) < 2:
        raise ValueError("lut_agreement needs at least two networks to rank")
    if measure is None:
        def measure(m: torch.nn.Module) -> float:
            return measure_latency(m, backend=table.backend, threads=table.threads,
                                   device=table.device, warmup=table.warmup,
                                   iterations=table.iterations, repeats=1,
                                   example_inputs=example_inputs).p50_ms
    estimated = tuple(table.estimate(m, example_inputs) for m in models)
    measured = tuple(measure(m) for m in models)
    tau, p = kendalltau(estimated, measured)
    return LutAgreement(float(tau), float(p), estimated, measured)
