"""Extraction: turn an elastic fx GraphModule, in its current state, into a plain one.

Rules:
  1. The result is a new fx GraphModule built from a copy of the graph; the input is unchanged.
  2. A call to an elastic op becomes a call to its ``extract()`` module, at the same path (so an
     extracted conv's weight is ``<path>.weight``, as in the original model).
  3. A call to an `ElasticParameter` becomes a ``get_attr`` of the sliced parameter copy, at the
     same path.
  4. A call to an inactive `SkipBlock` is removed and its uses read its input instead
     (identity, Invariant 3). An active SkipBlock is replaced, at its path, by its block,
     itself extracted recursively (a GraphModule block by these rules, any other module by
     Rule 6).
  5. ``get_attr`` tensors are cloned (parameters stay parameters); other called modules are
     deep-copied. The result shares no storage with the input.
  6. A non-fx module containing elastic ops (a leaf the tracer did not enter) is deep-copied with
     each elastic descendant replaced by its extracted module and each inactive SkipBlock by
     nn.Identity. An ElasticParameter there is unsupported (TypeError): it needs a get_attr.
  7. The result keeps the input's train/eval mode.

Example:
    >>> import torch, torch.fx as fx
    >>> from runtime.elastic.ops import ElasticLinear
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 3)))
    >>> gm._modules["0"] = ElasticLinear(gm._modules["0"])
    >>> gm._modules["0"].out_sel = 2
    >>> extract_graph_module(gm)(torch.randn(1, 4)).shape
    torch.Size([1, 2])
"""
from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from runtime.elastic.base import ElasticOp, clone_param, clone_tensor
from runtime.elastic.blocks import SkipBlock
from runtime.elastic.ops import ElasticParameter

__all__ = ["extract_graph_module", "extract_module"]


def extract_module(module: nn.Module) -> Any:
    """The plain counterpart of any module in its current state (Rules 2, 4, 6)."""
    if isinstance(module, ElasticOp):
        return module.extract()
    if isinstance(module, SkipBlock):
        return extract_module(module.block) if module.active else nn.Identity()
    if isinstance(module, fx.GraphModule):
        return extract_graph_module(module)
    return _extract_plain(module)


def _extract_plain(module: nn.Module) -> nn.Module:
    memo: dict[int, Any] = {}
    for path, sub in module.named_modules():
        if isinstance(sub, ElasticParameter):  # Rule 6
            raise TypeError(f"{type(module).__name__}.{path}: an ElasticParameter inside a non-fx "
                            "module cannot be extracted; replace the get_attr in an fx graph instead")
        if sub is not module and isinstance(sub, (ElasticOp, SkipBlock, fx.GraphModule)) \
                and id(sub) not in memo:
            memo[id(sub)] = extract_module(sub)
    return copy.deepcopy(module, memo)


def _copy_attr(value: Any) -> Any:
    if isinstance(value, nn.Parameter):
        return clone_param(value, value.requires_grad)
    if isinstance(value, torch.Tensor):
        return clone_tensor(value)
    if isinstance(value, nn.Module):
        return extract_module(value)
    return copy.deepcopy(value)


def _skip_input(node: fx.Node) -> fx.Node:
    if node.args:
        return node.args[0]
    return next(iter(node.kwargs.values()))


def extract_graph_module(gm: fx.GraphModule, class_name: str = "GraphModule") -> fx.GraphModule:
    """A plain GraphModule for ``gm``'s current state (Rules 1-5, 7)."""
    graph = copy.deepcopy(gm.graph)  # Rule 1
    attrs: dict[str, Any] = {}
    for node in list(graph.nodes):
        if node.op == "get_attr" and node.target not in attrs:
            attrs[node.target] = _copy_attr(operator.attrgetter(node.target)(gm))  # Rule 5
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, SkipBlock) and not module.active:  # Rule 4
            node.replace_all_uses_with(_skip_input(node))
            graph.erase_node(node)
        elif isinstance(module, ElasticParameter):  # Rule 3
            with graph.inserting_before(node):
                value = graph.get_attr(node.target)
            node.replace_all_uses_with(value)
            graph.erase_node(node)
            attrs.setdefault(node.target, module.extract())
        elif node.target not in attrs:
            attrs[node.target] = extract_module(module)  # Rules 2, 4
    graph.lint()
    result = fx.GraphModule(attrs, graph, class_name=class_name)
    return result.train(gm.training)
