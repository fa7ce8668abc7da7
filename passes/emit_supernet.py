"""emit_supernet: rewrite an analysed GraphModule into an elastic weight-sharing `SuperNetwork`.

Rules:
  1. Each elastic width group (not frozen, more than one choice) becomes a ``width:<group>``
     dimension; frozen groups appear in channel maps as fixed segments (group ``None``).
  2. Every conv, linear and batch/layer/group norm module with an elastic channel map, and every
     conv with an elastic kernel, is replaced by its elastic wrapper, which holds the original
     module (shared parameters). Layers whose channels are all fixed stay the original module.
  3. A direct parameter (``get_attr``) with an elastic map becomes an `ElasticParameter` module
     ``_elastic_params.<target>`` holding the same Parameter, called where the get_attr was.
  4. ``F.layer_norm`` with an elastic map reads its ``normalized_shape`` from its input
     (``x.shape[-1:]``) instead of the traced constant.
  5. Each skippable block of a kept stage is outlined into a sub-GraphModule with one input (plus
     its context inputs, e.g. an attention mask) and
     called through a `SkipBlock` at ``_blocks.<block name>``, so a skipped block is not
     executed at all; its stage becomes a ``depth:<stage>`` dimension with choices
     ``n, n-1, ..., min_active_blocks`` (configurations skip a suffix).
  6. Each elastic kernel becomes a ``kernel:<module path>`` dimension; each input resolution
     choice (if more than one) a ``resolution`` dimension.
  7. MACs data (``out_spatial``) comes from the IR's shapes at each resolution: no forward pass.
  8. The input module is not modified: the caller passes a copy it owns (`reorder_channels`
     returns one), and this pass rewrites that copy only.
  9. Each elastic heads group becomes a ``heads:<group>`` dimension (whole heads, head size
     fixed); a reshape whose output axis carries an elastic group gets ``-1`` at that axis, so
     head counts and widths are inferred at run time (the traced constant would break); a
     channel split into equal pieces of one elastic group (fused QKV) becomes a ``chunk``.
  10. A channel shuffle or split whose channels carry an elastic group (find_width_groups'
     Rule 22) is replaced by a `ChannelPermute` / `ChannelSplit` module at
     ``_relayout.<node>``, bound through its input's channel map; a shuffle that restores the
     order is dropped. The traced view / transpose / view (and the size reads only they used)
     are removed. Channel maps carry parts of groups (``Segment.start``, ``total``).

Unsupported:
  - A module called at several nodes with different channel maps: ValueError naming it.

Example:
    >>> import torch
    >>> from compiler.pipeline import compile_supernet
    >>> from bench.models import resnet20_cifar
    >>> net = compile_supernet(resnet20_cifar(num_classes=10).eval(), torch.zeros(1, 3, 32, 32))
    >>> net.space.size > 10**6
    True
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from compiler.ops import OPS
from passes.find_elastic_kernels import ElasticKernels
from passes.find_skippable_blocks import Stage
from passes.find_width_groups import WidthGroups
from runtime.elastic import (Bindings, DepthBinding, Dimension, ElasticParameter, KernelBinding,
                             OpBinding, SearchSpace, Segment, SkipBlock, SuperNetwork, wrap)
from runtime.elastic.relayout import ChannelPermute, ChannelSplit

__all__ = ["EmitPlan", "emit_supernet"]


@dataclass(frozen=True)
class EmitPlan:
    """What to make elastic: decided by the pipeline from the analyses and the user's config."""
    width_groups: WidthGroups
    frozen_groups: frozenset[str]
    stages: tuple[Stage, ...]
    min_active_blocks: int
    kernels: ElasticKernels
    resolutions: tuple[int, ...]
    shapes: dict  # resolution -> {node name: output shape}


def _elastic(plan: EmitPlan) -> dict[str, str]:
    """Rule 1: {elastic group: dimension name} (``width:<group>`` or ``heads:<group>``)."""
    return {g.name: f"{g.kind}:{g.name}" for g in plan.width_groups.groups
            if not g.frozen and len(g.choices) > 1 and g.name not in plan.frozen_groups}


def _runtime_map(plan: EmitPlan, elastic: dict, segments) -> tuple[Segment, ...]:
    """Analysis segments as a runtime channel map (parts keep their start and group size)."""
    sizes = {g.name: g.size for g in plan.width_groups.groups}
    out = []
    for s in segments:
        part = s.start != 0 or s.size != sizes.get(s.group, s.size)
        out.append(Segment(elastic.get(s.group), s.size, s.inner, s.start,
                           sizes[s.group] if part else None))
    return tuple(out)


def _maps(plan: EmitPlan) -> dict[str, dict]:
    """{node: {"in"/"out": channel map, "dim": param dim}} for nodes with an elastic map."""
    elastic = _elastic(plan)
    maps: dict[str, dict] = {}
    for use in plan.width_groups.uses:
        segs = _runtime_map(plan, elastic, use.segments)
        if all(s.group is None for s in segs):
            continue
        entry = maps.setdefault(use.node, {"dim": use.dim})
        entry["in" if use.role == "in" else "out"] = segs
        if use.role == "dw":
            entry["in"] = segs
    return maps


def _set_module(gm: fx.GraphModule, path: str, module: torch.nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _wrap_modules(gm, maps, kernel_choices, renamed) -> dict[int, tuple]:
    """Rules 2-4; returns {id(elastic op): (in_map, out_map)}, recording node renames."""
    nodes = {n.name: n for n in gm.graph.nodes}
    bound: dict[str, tuple] = {}
    params: dict[int, tuple] = {}
    for name, m in maps.items():
        node = nodes[name]
        if node.op == "call_module":
            key = (m.get("in"), m.get("out"))
            if bound.setdefault(node.target, key) != key:
                raise ValueError(f"module {node.target} is called at several places with "
                                 "different channel maps; list it in frozen_modules")
        elif node.op == "get_attr":
            op, renamed[name] = _elastic_param(gm, node, m["dim"])
            params[id(op)] = (None, m["out"])
        elif node.target is F.layer_norm:
            renamed[f"{name}:before"] = _dynamic_layer_norm_shape(gm.graph, node)
    for path in set(bound) | set(kernel_choices):
        _set_module(gm, path, wrap(gm.get_submodule(path), kernel_choices.get(path)))
    ops = {id(gm.get_submodule(p)): bound.get(p, (None, None))
           for p in set(bound) | set(kernel_choices)}
    return {**ops, **params}


def _elastic_param(gm: fx.GraphModule, node: fx.Node, dim: int) -> tuple[ElasticParameter, str]:
    """Rule 3: the get_attr becomes a call of an ElasticParameter sharing the tensor."""
    if "_elastic_params" not in gm._modules:
        gm.add_module("_elastic_params", torch.nn.Module())
    holder, leaf = gm._elastic_params, node.target.replace(".", "_")
    if leaf not in holder._modules:
        holder.add_module(leaf, ElasticParameter(operator.attrgetter(node.target)(gm), dim))
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(f"_elastic_params.{leaf}")
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    return holder._modules[leaf], call.name


def _dynamic_layer_norm_shape(graph: fx.Graph, node: fx.Node) -> tuple[str, str]:
    """Rule 4: normalized_shape = x.shape[-k:] instead of the traced constant."""
    ns = node.args[1] if len(node.args) > 1 else node.kwargs["normalized_shape"]
    k = 1 if isinstance(ns, int) else len(ns)
    with graph.inserting_before(node):
        shape = graph.call_function(getattr, (node.args[0], "shape"))
        dyn = graph.call_function(operator.getitem, (shape, slice(-k, None)))
    if len(node.args) > 1:
        node.update_arg(1, dyn)
    else:
        node.update_kwarg("normalized_shape", dyn)
    return shape.name, dyn.name


def _dynamic_reshapes(gm: fx.GraphModule, plan: EmitPlan) -> None:
    """Rule 9: a reshape whose output axis carries an elastic group infers that size (-1)."""
    elastic, nodes = _elastic(plan), {n.name: n for n in gm.graph.nodes}
    for use in plan.width_groups.layouts:
        node = nodes.get(use.node)
        if node is None or not any(s.group in elastic for s in use.segments):
            continue
        if use.role == "split":
            _split_as_chunk(node, len(use.segments), use.dim)
            continue
        sizes = list(node.args[1]) if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) \
            else list(node.args[1:])
        if use.dim >= len(sizes) or sizes[use.dim] == -1:
            continue
        if -1 in sizes:
            raise ValueError(f"{node.name}: reshape {sizes} has an elastic axis {use.dim} and "
                             "another inferred size; list its module in frozen_modules")
        sizes[use.dim] = -1
        node.args = (node.args[0], sizes) if len(node.args) == 2 and \
            isinstance(node.args[1], (list, tuple)) else (node.args[0], *sizes)


def _split_as_chunk(node: fx.Node, n: int, dim: int) -> None:
    """Rule 9: equal pieces of one elastic group: ``split(x, size)`` becomes ``chunk(x, n)``."""
    if isinstance(node.target, torch._ops.OpOverload):
        node.target, node.args, node.kwargs = torch.ops.aten.chunk.default, (node.args[0], n, dim), {}
    elif node.op == "call_method":
        node.target, node.args, node.kwargs = "chunk", (node.args[0], n), {"dim": dim}
    else:
        node.target, node.args, node.kwargs = torch.chunk, (node.args[0], n), {"dim": dim}


def _relayouts(gm: fx.GraphModule, plan: EmitPlan, renamed: dict) -> dict[int, tuple]:
    """Rule 10: elastic shuffles and splits become relayout ops; {id(op): (in_map, None)}."""
    elastic, nodes, ops = _elastic(plan), {n.name: n for n in gm.graph.nodes}, {}
    for r in plan.width_groups.relayouts:
        cmap = _runtime_map(plan, elastic, r.segments)
        if all(s.group is None for s in cmap):
            continue  # fixed channels: the traced code runs as it is
        node, source = nodes[r.node], nodes[renamed.get(r.source, r.source)]
        if r.kind == "permute" and r.index == tuple(range(len(r.index))):
            node.replace_all_uses_with(source)
            _erase_dead(gm.graph, node, source)
            renamed[r.node] = source.name
            continue
        if "_relayout" not in gm._modules:
            gm.add_module("_relayout", torch.nn.Module())
        op = ChannelPermute(r.index, r.dim) if r.kind == "permute" else ChannelSplit(r.sizes, r.dim)
        gm._relayout.add_module(r.node, op)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(f"_relayout.{r.node}", (source,))
        node.replace_all_uses_with(call)
        _erase_dead(gm.graph, node, source)
        renamed[r.node], nodes[call.name] = call.name, call
        ops[id(op)] = (cmap, None)
    return ops


def _erase_dead(graph: fx.Graph, node: fx.Node, source: fx.Node) -> None:
    """Erase `node` and what only it used, back to `source` (a shuffle's views, size reads)."""
    todo, erased = [node], set()
    while todo:
        n = todo.pop()
        if n is source or n in erased or n.users or n.op in ("placeholder", "output"):
            continue
        inputs = list(n.all_input_nodes)
        graph.erase_node(n)
        erased.add(n)
        todo += inputs


def _outline(gm: fx.GraphModule, block, path: str, renamed: dict[str, str]) -> None:
    """Rule 5: move `block`'s nodes into a sub-GraphModule called through a SkipBlock.

    `renamed` maps IR node names to the nodes that replaced them (earlier blocks' calls,
    ElasticParameter calls, Rule 4's shape reads, listed under the node they precede)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    entry = nodes[renamed.get(block.entry, block.entry)]
    wanted = set()
    for name in block.nodes:
        wanted.update(renamed.get(f"{name}:before", ()))
        wanted.add(renamed.get(name, name))
    inside = [n for n in gm.graph.nodes if n.name in wanted]
    sub = fx.Graph()
    env = {entry: sub.placeholder("x")}
    context = [nodes[renamed.get(c, c)] for c in getattr(block, "context", ())]
    for i, c in enumerate(context):  # Rule 5: side inputs (attention masks) are passed in
        env[c] = sub.placeholder(f"context_{i}")
    for n in inside:
        env[n] = sub.node_copy(n, lambda a: env[a] if a in env else _rematerialize(sub, a))
    exit_ = nodes[renamed.get(block.exit, block.exit)]
    sub.output(env[exit_])
    gm.add_submodule(path, SkipBlock(fx.GraphModule(gm, sub, class_name="Block")))
    with gm.graph.inserting_after(exit_):
        call = gm.graph.call_module(path, (entry, *context))
    exit_.replace_all_uses_with(call)
    call.update_arg(0, entry)
    for i, c in enumerate(context):
        call.update_arg(1 + i, c)
    for n in reversed(inside):
        gm.graph.erase_node(n)
    renamed[block.exit] = call.name


def _rematerialize(sub: fx.Graph, node: fx.Node) -> fx.Node:
    """A constant the block reads from outside (a parameter) is re-read inside the block."""
    if node.op == "get_attr" or (node.op == "call_module" and not node.all_input_nodes):
        return sub.create_node(node.op, node.target, (), {})
    raise ValueError(f"skippable block reads {node.name} from outside its entry; this is a bug "
                     "in find_skippable_blocks, please report it")


def _spatial(shape: tuple, is_conv: bool) -> int:
    """Rule 7: output positions per sample (H*W for a conv, tokens for a linear)."""
    return math.prod(shape[2:]) if is_conv else math.prod(shape[1:-1])


def _mac_layers(gm: fx.GraphModule) -> dict[int, tuple[list[str], bool]]:
    """{id(original conv/linear module): (fx node names calling it, is_conv)} before rewriting."""
    out: dict[int, tuple[list[str], bool]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        # Rule 7: layers inside a leaf module (nn.MultiheadAttention's out_proj) count with the
        # leaf's output positions
        for sub in mod.modules():
            if isinstance(sub, OPS.types("conv", "linear")):
                out.setdefault(id(sub), ([], not isinstance(sub, torch.nn.Linear)))[0] \
                    .append(node.name)
    return out


def _bindings(gm, plan, elastic_ops, mac_layers, kernel_dims, stage_paths) -> Bindings:
    """Rules 6-7: every binding by the module's final path in the rewritten graph."""
    ops, spatial, kernels = [], {}, []
    res = plan.resolutions if len(plan.resolutions) > 1 else (None,)
    inner = {id(m.module) for m in gm.modules() if hasattr(m, "module") and id(m) in elastic_ops}
    for path, mod in gm.named_modules():
        if id(mod) in inner:
            continue
        if id(mod) in elastic_ops and any(elastic_ops[id(mod)]):
            ops.append(OpBinding(path, *elastic_ops[id(mod)]))
        original = getattr(mod, "module", mod) if id(mod) in elastic_ops else mod
        if id(original) in mac_layers:
            names, is_conv = mac_layers[id(original)]
            spatial[path] = {r: sum(_spatial(plan.shapes[r if r is not None else plan.resolutions[0]][n], is_conv)
                                    for n in names) for r in res}
        if id(original) in kernel_dims:
            kernels.append(KernelBinding(kernel_dims[id(original)], (path,)))
    return Bindings(ops=ops, kernels=kernels,
                    depths=[DepthBinding(d, p) for d, p in stage_paths.items()],
                    resolution="resolution" if len(plan.resolutions) > 1 else None,
                    out_spatial=spatial)


def _space(plan: EmitPlan, kernel_dims: dict, stage_paths: dict) -> SearchSpace:
    elastic = _elastic(plan)
    dims = [Dimension(elastic[g.name], g.kind, g.choices) for g in plan.width_groups.groups
            if g.name in elastic]
    for dim, paths in stage_paths.items():
        low = min(plan.min_active_blocks, len(paths))
        dims.append(Dimension(dim, "depth", tuple(range(len(paths), low - 1, -1))))
    kchoices = {f"kernel:{k.module_path}": k.choices for k in plan.kernels.kernels}
    dims += [Dimension(d, "kernel", kchoices[d]) for d in kernel_dims.values()]
    if len(plan.resolutions) > 1:
        dims.append(Dimension("resolution", "resolution",
                              tuple(sorted(plan.resolutions, reverse=True))))
    return SearchSpace(dims)


def _block_path(name: str) -> str:
    """``_blocks.<name>`` with every character that is not a letter, digit or _ made ``_``."""
    return "_blocks." + re.sub(r"\W", "_", name)


def emit_supernet(gm: fx.GraphModule, plan: EmitPlan, *, meta: dict | None = None) -> SuperNetwork:
    """Rewrite `gm` (a copy the caller owns, Rule 8) into a SuperNetwork following `plan`."""
    mac_layers = _mac_layers(gm)
    kernel_choices = {k.module_path: k.choices for k in plan.kernels.kernels}
    kernel_dims = {id(gm.get_submodule(p)): f"kernel:{p}" for p in kernel_choices}
    renamed: dict = {}
    _dynamic_reshapes(gm, plan)
    relayout_ops = _relayouts(gm, plan, renamed)
    elastic_ops = {**_wrap_modules(gm, _maps(plan), kernel_choices, renamed), **relayout_ops}
    if "_blocks" not in gm._modules and plan.stages:
        gm.add_module("_blocks", torch.nn.Module())
    stage_paths = {}
    for stage in plan.stages:
        paths = [_block_path(b.name) for b in stage.blocks]
        for block, path in zip(stage.blocks, paths):
            _outline(gm, block, path, renamed)
        stage_paths[f"depth:{stage.name}"] = tuple(paths)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    space = _space(plan, {k: v for k, v in kernel_dims.items()}, stage_paths)
    bindings = _bindings(gm, plan, elastic_ops, mac_layers, kernel_dims, stage_paths)
    return SuperNetwork(gm, space, bindings, dict(meta or {}))
