"""Analytic MACs and parameter counts of sub-networks, without a forward pass.

Rules:
  1. The walk visits what extraction keeps: every module a graph calls and every tensor it reads
     with get_attr, recursing into SkipBlocks (recording the chain of SkipBlock paths that
     contain each item), nested GraphModules and the children of plain modules. Each path is
     counted once.
  2. MACs = sum over conv and linear layers of out_active * in_active / groups * kernel_numel *
     out_spatial (batch 1, at the config's resolution). Params = numel of every parameter the
     extracted module keeps. Both skip items inside an inactive SkipBlock.
  3. Elastic sizes come from the ops' Selectors (depthwise convs: one selection, groups =
     active); a kernel dimension sets kernel_numel = k ** ndim. Kernel-transformation matrices
     vanish on extraction and are not counted. Buffers are not parameters.
  4. Every evaluation is a loop over precompiled integer terms: (const, selectors, kernel dim,
     kernel ndim, SkipBlock chain, spatial per resolution).
  5. `measure_out_spatial(graph_module, inputs)` runs the maximal network once per resolution
     (inputs of batch size 1) with forward hooks and returns ``Bindings.out_spatial`` data.

Example:
    >>> import torch, torch.fx as fx
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)))
    >>> measure_out_spatial(gm, {None: (torch.randn(1, 3, 8, 8),)})
    {'0': {None: 64}}
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple

import torch
import torch.fx as fx
from torch import nn

from runtime.elastic.base import ElasticOp
from runtime.elastic.blocks import SkipBlock
from runtime.elastic.channels import Selector
from runtime.elastic.conv import ElasticConv
from runtime.elastic.ops import ElasticLinear, ElasticParameter
from runtime.elastic.optable import OPS

__all__ = ["Item", "walk", "CostModel", "measure_out_spatial", "is_mac_layer"]


class Item(NamedTuple):
    kind: str  # "op" | "skip" | "plain" | "attr"
    path: str
    obj: Any
    chain: tuple[str, ...]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _visit(module: nn.Module, path: str, chain: tuple[str, ...]) -> Iterator[Item]:
    if isinstance(module, ElasticOp):
        yield Item("op", path, module, chain)
    elif isinstance(module, SkipBlock):
        yield Item("skip", path, module, chain)
        yield from _visit(module.block, _join(path, "block"), chain + (path,))
    elif isinstance(module, fx.GraphModule):
        yield from _walk_graph(module, path, chain)
    else:
        yield Item("plain", path, module, chain)
        for name, child in module.named_children():
            yield from _visit(child, _join(path, name), chain)


def _walk_graph(gm: fx.GraphModule, prefix: str, chain: tuple[str, ...]) -> Iterator[Item]:
    for node in gm.graph.nodes:
        if node.op == "call_module":
            yield from _visit(gm.get_submodule(node.target), _join(prefix, node.target), chain)
        elif node.op == "get_attr":
            obj: Any = gm
            for name in node.target.split("."):
                obj = getattr(obj, name)
            yield Item("attr", _join(prefix, node.target), obj, chain)


def walk(gm: fx.GraphModule) -> list[Item]:
    """Rule 1: every called module / read tensor once, with its SkipBlock chain."""
    seen: dict[str, Item] = {}
    for item in _walk_graph(gm, "", ()):
        seen.setdefault(item.path, item)
    return list(seen.values())


def is_mac_layer(item: Item) -> bool:
    obj = item.obj
    return isinstance(obj, (ElasticConv, ElasticLinear)) or (
        item.kind == "plain" and isinstance(obj, OPS.types("conv", "linear")))


class Term(NamedTuple):
    const: int
    selectors: tuple[Selector, ...]
    kernel_dim: str | None
    kernel_ndim: int
    chain: tuple[str, ...]
    spatial: Mapping[int | None, int] | None


def _weight_factors(op: nn.Module, sels: Mapping[str, Selector], kernel_dim: str | None):
    """(const, selectors, kernel ndim) giving the weight numel of a conv/linear (Rule 3)."""
    if isinstance(op, ElasticLinear):
        m, ndim, const = op.module, 0, 1
        dims = [("out_sel", m.out_features), ("in_sel", m.in_features)]
    elif isinstance(op, ElasticConv):
        m, ndim = op.module, op.ndim
        const = 1 if kernel_dim else _prod(m.kernel_size)
        if op.depthwise:  # weight (C, 1, *kernel), one selection
            sel = sels.get("out_sel") or sels.get("in_sel")
            return (const, (sel,), ndim) if sel else (const * m.out_channels, (), ndim)
        dims = [("out_sel", m.out_channels), ("in_sel", m.in_channels // m.groups)]
    else:  # plain conv / linear
        return op.weight.numel(), (), 0
    chosen = []
    for attr, full in dims:
        if attr in sels:
            chosen.append(sels[attr])
        else:
            const *= full
    return const, tuple(chosen), ndim


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


class CostModel:
    """Precompiled MACs/params terms (Rule 4)."""

    def __init__(self, items: list[Item], selectors: Mapping[str, Mapping[str, Selector]],
                 kernel_dims: Mapping[str, str], spatial: Mapping[str, Mapping]):
        self.mac_terms: list[Term] = []
        self.param_terms: list[Term] = []
        self._seen: set[int] = set()  # a tied parameter (GPT-2's lm_head and wte) counts once
        for item in items:
            sels = selectors.get(item.path, {})
            kdim = kernel_dims.get(item.path)
            if is_mac_layer(item):
                const, chosen, ndim = _weight_factors(item.obj, sels, kdim)
                self.mac_terms.append(Term(const, chosen, kdim, ndim, item.chain, spatial[item.path]))
            self.param_terms.extend(self._params(item, sels, kdim))

    def _params(self, item: Item, sels: Mapping[str, Selector], kdim: str | None) -> Iterator[Term]:
        obj, chain = item.obj, item.chain
        if item.kind == "attr":
            if isinstance(obj, nn.Parameter) and id(obj) not in self._seen:
                self._seen.add(id(obj))
                yield Term(obj.numel(), (), None, 0, chain, None)
        elif item.kind == "plain":
            for p in obj.parameters(recurse=False):
                if id(p) not in self._seen:
                    self._seen.add(id(p))
                    yield Term(p.numel(), (), None, 0, chain, None)
        elif isinstance(obj, ElasticParameter):
            if isinstance(obj.param, nn.Parameter):
                sel = sels.get("sel")
                full = obj.param.shape[obj.dim]
                yield Term(obj.param.numel() // (full if sel else 1), (sel,) if sel else (),
                           None, 0, chain, None)
        elif item.kind == "op":
            yield from self._op_params(obj, sels, kdim, chain)

    @staticmethod
    def _op_params(op: ElasticOp, sels, kdim, chain) -> Iterator[Term]:
        m = getattr(op, "module", None)
        if m is None:  # a relayout op (relayout.py): no parameters
            return
        if isinstance(op, (ElasticConv, ElasticLinear)):
            const, chosen, ndim = _weight_factors(op, sels, kdim)
            yield Term(const, chosen, kdim, ndim, chain, None)
            bias_sel = sels.get("out_sel") or (sels.get("in_sel") if getattr(op, "depthwise", False) else None)
            if m.bias is not None:
                yield Term(1 if bias_sel else m.bias.numel(), (bias_sel,) if bias_sel else (),
                           None, 0, chain, None)
            return
        sel = sels.get("sel")  # norms: one selection
        for p in (m.weight, m.bias):
            if p is not None:
                yield Term(1 if sel else p.numel(), (sel,) if sel else (), None, 0, chain, None)

    @staticmethod
    def _evaluate(terms: list[Term], config: Mapping[str, int], inactive: set[str],
                  resolution: int | None) -> int:
        total, sizes = 0, {}
        for const, selectors, kdim, kndim, chain, spatial in terms:
            if chain and not inactive.isdisjoint(chain):
                continue  # Rule 2
            value = const
            for s in selectors:
                size = sizes.get(id(s))
                if size is None:
                    size = sizes[id(s)] = s.size(config)
                value *= size
            if kdim is not None:
                value *= config[kdim] ** kndim
            if spatial is not None:
                value *= spatial[resolution]
            total += value
        return total

    def macs(self, config: Mapping[str, int], inactive: set[str], resolution: int | None) -> int:
        return self._evaluate(self.mac_terms, config, inactive, resolution)

    def params(self, config: Mapping[str, int], inactive: set[str]) -> int:
        return self._evaluate(self.param_terms, config, inactive, None)


def measure_out_spatial(graph_module: fx.GraphModule,
                        inputs: Mapping[int | None, tuple]) -> dict[str, dict[int | None, int]]:
    """Rule 5: ``{path: {resolution: out spatial numel}}`` for every conv/linear the graph calls.

    Runs the maximal network (every op and SkipBlock is set to full for the measurement and
    restored afterwards), once per resolution, with inputs of batch size 1.
    """
    layers = {item.path: item.obj for item in walk(graph_module) if is_mac_layer(item)}
    result: dict[str, dict[int | None, int]] = {p: {} for p in layers}
    saved = _save_state(graph_module)
    hooks = []
    try:
        for resolution, args in inputs.items():
            counts = dict.fromkeys(layers, 0)
            hooks = [m.register_forward_hook(_counter(counts, p)) for p, m in layers.items()]
            with torch.no_grad():
                graph_module(*args)
            for h in hooks:
                h.remove()
            for p, n in counts.items():
                result[p][resolution] = n
    finally:
        for h in hooks:
            h.remove()
        _restore_state(saved)
    return result


def _save_state(gm: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Remember every op's selections and SkipBlock flag, and set all of them to maximal."""
    saved = []
    for m in gm.modules():
        if isinstance(m, ElasticOp):
            saved.append((m, {a: getattr(m, a) for a in (*m.axes, "kernel") if hasattr(m, a)}))
            m.reset()
        elif isinstance(m, SkipBlock):
            saved.append((m, {"active": m.active}))
            m.active = True
    return saved


def _restore_state(saved: list[tuple[nn.Module, dict[str, Any]]]) -> None:
    for m, state in saved:
        for name, value in state.items():
            m.__dict__[name] = value


def _counter(counts: dict[str, int], path: str):
    def hook(module, args, out):
        channels = out.shape[-1] if isinstance(module, (nn.Linear, ElasticLinear)) else out.shape[1]
        counts[path] += out.numel() // channels
    return hook
