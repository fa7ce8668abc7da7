"""The torch.export front end of `capture`: models torch.fx cannot trace (Hugging Face
transformers, data-dependent Python control flow) captured at the ATen level.

Rules:
  1. The model is exported with ``torch.export.export(model, args, kwargs, strict=False)`` and
     unlifted (``ep.module()``): parameters and buffers become ``get_attr`` nodes at their original
     dotted paths, and the forward keeps the model's calling convention (keyword inputs, and a
     pytree output such as a Hugging Face ``ModelOutput``).
  2. ATen calls that are exactly a stock module's forward become ``call_module`` nodes of that
     ORIGINAL module (shared parameters), so the analysis and emission treat them as in the fx
     front end: ``aten.linear`` of an ``nn.Linear``'s weight and bias, ``aten.conv1d/2d/3d`` of an
     ``nn.ConvNd`` with the same stride, padding, dilation and groups, ``aten.layer_norm`` of an
     ``nn.LayerNorm`` with its shape and eps.
  3. GPT-2's ``Conv1D`` (``view(x, [-1, nx]) -> addmm(b, ., W) -> view(., [..., nf])``) becomes
     one call of an equivalent ``nn.Linear`` holding a transposed copy of ``W`` at the Conv1D's
     path (the only weights capture copies; outputs agree to float rounding).
  4. Export's shape guards (``_guards_fn``) and parameters no node reads any more are removed.
  5. Shapes and dtypes come from the export's fake tensors (``node.meta["val"]``), module paths of
     function nodes from ``nn_module_stack``; no forward pass runs.
  6. The graph is specialised to the example inputs' shapes (batch size and sequence length are
     constants in it); the compiled super-network runs at those shapes.

Unsupported:
  - Models torch.export cannot export either: `CaptureError` naming the user's line.
  - ``resolutions`` (re-capture at other input sizes) for exported graphs.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch import nn

__all__ = ["export_graph_module"]

_aten = torch.ops.aten
_CONV = {_aten.conv1d.default: nn.Conv1d, _aten.conv2d.default: nn.Conv2d,
         _aten.conv3d.default: nn.Conv3d}


def _param_owner(node, suffix: str) -> str | None:
    if isinstance(node, fx.Node) and node.op == "get_attr" and node.target.endswith(suffix):
        return node.target[:-len(suffix)]
    return None


def _stock(module: nn.Module, cls: type) -> bool:
    return isinstance(module, cls) and type(module).forward is cls.forward


def _same_params(gm, module: nn.Module, weight, bias) -> bool:
    """The get_attr nodes read exactly `module`'s weight and bias."""
    if operator.attrgetter(weight.target)(gm) is not module.weight:
        return False
    if module.bias is None:
        return bias is None
    return isinstance(bias, fx.Node) and bias.op == "get_attr" \
        and operator.attrgetter(bias.target)(gm) is module.bias


def _tup(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


def _module_call(gm, node, modules) -> str | None:
    """Rule 2: the path of the stock module this ATen call is the forward of, if any."""
    args = list(node.args) + [None] * 8
    if node.target is _aten.linear.default:
        path = _param_owner(args[1], ".weight")
        mod = modules.get(path)
        if mod is not None and _stock(mod, nn.Linear) and _same_params(gm, mod, args[1], args[2]):
            return path
    elif node.target in _CONV:
        path = _param_owner(args[1], ".weight")
        mod, cls = modules.get(path), _CONV[node.target]
        if mod is None or not _stock(mod, cls) or mod.padding_mode != "zeros" \
                or not _same_params(gm, mod, args[1], args[2]):
            return None
        nd = len(mod.kernel_size)
        got = (_tup(args[3] or 1, nd), _tup(args[4] or 0, nd), _tup(args[5] or 1, nd), args[6] or 1)
        if got == (mod.stride, _tup(mod.padding, nd), mod.dilation, mod.groups):
            return path
    elif node.target is _aten.layer_norm.default:
        path = _param_owner(args[2], ".weight")
        mod = modules.get(path)
        if mod is not None and _stock(mod, nn.LayerNorm) and mod.elementwise_affine \
                and _same_params(gm, mod, args[2], args[3]) \
                and tuple(args[1]) == tuple(mod.normalized_shape) and (args[4] or 1e-5) == mod.eps:
            return path
    return None


def _conv1d_call(gm, node, modules):
    """Rule 3: (path, input, nn.Linear) for the final view of a GPT-2 Conv1D, else None."""
    if node.target is not _aten.view.default or not isinstance(node.args[0], fx.Node):
        return None
    mm = node.args[0]
    if mm.target is not _aten.addmm.default or len(mm.users) != 1 or len(mm.args) != 3:
        return None
    bias, flat, weight = mm.args
    path = _param_owner(weight, ".weight")
    mod = modules.get(path)
    if mod is None or type(mod).__name__ != "Conv1D" or flat.target is not _aten.view.default \
            or len(flat.users) != 1 or _param_owner(bias, ".bias") != path:
        return None
    w, b = operator.attrgetter(weight.target)(gm), operator.attrgetter(bias.target)(gm)
    if w is not mod.weight or b is not mod.bias:
        return None
    x = flat.args[0]
    xs, out = x.meta["val"].shape, node.meta["val"].shape
    if tuple(out[:-1]) != tuple(xs[:-1]) or out[-1] != w.shape[1] or xs[-1] != w.shape[0]:
        return None
    linear = nn.Linear(w.shape[0], w.shape[1], device=w.device, dtype=w.dtype)
    linear.weight = nn.Parameter(w.detach().t().contiguous(), requires_grad=w.requires_grad)
    linear.bias = nn.Parameter(b.detach().clone(), requires_grad=b.requires_grad)
    linear.train(mod.training)
    return path, x, linear


def _replace(graph: fx.Graph, node: fx.Node, path: str, x: fx.Node) -> fx.Node:
    with graph.inserting_before(node):
        call = graph.call_module(path, (x,))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    return call


def _rewrite(gm: fx.GraphModule, modules: dict) -> dict:
    """Rules 2-4 on `gm.graph` in place; returns {call_module path: module}."""
    graph, called = gm.graph, {}
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target.startswith("_guards_fn"):  # Rule 4
            graph.erase_node(node)
            continue
        if node.op != "call_function":
            continue
        path = _module_call(gm, node, modules)
        if path is not None:
            _replace(graph, node, path, node.args[0])
            called[path] = modules[path]
            graph.erase_node(node)
            continue
        found = _conv1d_call(gm, node, modules)
        if found is not None:
            path, x, linear = found
            mm = node.args[0]
            flat = mm.args[1]
            _replace(graph, node, path, x)
            called[path] = linear
            for dead in (node, mm, flat):
                graph.erase_node(dead)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:  # Rule 4
            graph.erase_node(node)
    return called


def _constants_as_buffers(gm: fx.GraphModule) -> None:
    """Tensor constants export lifted (``_tensor_constant0``) become buffers, so they are in
    the state dict that a saved super-network restores."""
    known = {id(t) for t in (*gm.parameters(), *gm.buffers())}
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        value = operator.attrgetter(node.target)(gm)
        if isinstance(value, torch.Tensor) and id(value) not in known:
            parent, _, name = node.target.rpartition(".")
            owner = gm.get_submodule(parent) if parent else gm
            delattr(owner, name)
            owner.register_buffer(name, value)
            known.add(id(value))


def export_graph_module(model: nn.Module, args: tuple, kwargs: dict) -> fx.GraphModule:
    """Rules 1-4: an fx GraphModule of ATen calls and original modules."""
    ep = torch.export.export(model, tuple(args), dict(kwargs), strict=False)
    unlifted = ep.module()
    called = _rewrite(unlifted, dict(model.named_modules()))
    root: dict = dict(called)
    for node in unlifted.graph.nodes:
        if node.op == "get_attr":
            root[node.target] = operator.attrgetter(node.target)(unlifted)
    gm = fx.GraphModule(root, unlifted.graph, class_name=type(model).__name__)
    for key in ("_in_spec", "_out_spec"):
        if hasattr(unlifted, key):
            setattr(gm, key, getattr(unlifted, key))
    gm.graph._tracer_cls = gm._tracer_cls = None  # unpickling must not need export's tracer
    _constants_as_buffers(gm)
    gm.graph.lint()
    gm.recompile()
    return gm.train(model.training)
