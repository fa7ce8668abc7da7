"""Capture: torch.fx symbolic tracing (or torch.export) plus shape propagation into an `IRGraph`.

Rules:
  1. The model is traced with `torch.fx.symbolic_trace` semantics; modules named in
     ``leaf_modules`` (dotted paths or classes) are kept as opaque calls. ``frontend="export"``
     uses the torch.export front end instead (see `compiler.capture_export`); ``"auto"`` (the
     default) uses fx and falls back to torch.export when fx cannot trace, with a warning.
  2. Shapes are propagated with meta tensors (no arithmetic, no weight reads), falling back to
     fake tensors and, for data-dependent leaf modules, to a real forward pass: every node's
     output shape and dtype are recorded in its `NodeInfo`.
  3. The input model is never modified: tracing reads it, the GraphModule shares its parameters.
  4. A model that neither front end can capture raises `CaptureError` naming the offending code
     and what to do.
  5. ``example_kwargs`` are keyword inputs (``input_ids``, ``attention_mask``, ``pixel_values``);
     the fx front end binds them to its placeholders by name.
  6. Every node's `NodeInfo.kind` is one canonical op name for both front ends: an ATen overload
     ``aten.view.default`` is ``"view"``, ``aten.__and__.Tensor`` is ``"and"``.
  7. Self-attention calls of ``nn.MultiheadAttention`` are written out as linear, head reshape
     and scaled-dot-product attention (see `compiler.capture_mha`), sharing the parameters.

Unsupported:
  - Data-dependent control flow that torch.export cannot capture either: `CaptureError`.
  - Models whose forward takes non-tensor inputs besides the example tensors.

Example:
    >>> import torch
    >>> ir = capture(torch.nn.Linear(4, 2), (torch.randn(3, 4),))
    >>> ir.info(ir.output_values()[0]).shape
    (3, 2)
"""
from __future__ import annotations

import copy
import operator
import traceback
import warnings
from typing import Iterable, Sequence

import networkx as nx
import torch
import torch.fx as fx
from torch.fx.interpreter import Interpreter

from compiler.capture_mha import decompose_self_attention
from compiler.ir import IRGraph, NodeInfo
from compiler.ops import OPS

__all__ = ["capture", "CaptureError", "example_inputs_for", "warm_up"]


class CaptureError(RuntimeError):
    """The model could not be captured; the message says where and what to do."""


_HINT = (
    "What to do: torch.fx traces Python control flow symbolically, so branches on tensor values, "
    "tensor-dependent loops and calls into untraceable libraries fail. Either (a) rewrite that line "
    "without data-dependent control flow, (b) pass leaf_modules=[...] naming the submodule that "
    "contains it (it will be kept whole and frozen at full width), or (c) decorate the helper "
    "function with @torch.fx.wrap."
)


class _Tracer(fx.Tracer):
    def __init__(self, leaf_paths: frozenset[str] = frozenset(), leaf_types: tuple[type, ...] = ()):
        super().__init__()
        self.record_stack_traces = True  # NodeInfo.location() and --why show the user's line
        self.leaf_paths = leaf_paths
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_paths or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch: the user's line that failed to trace."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and "/compiler/capture.py" not in f.filename]
    if not frames:
        return "(no user frame recorded)"
    f = frames[-1]
    return f"{f.filename}:{f.lineno} in {f.name}: {f.line}"


def _trace(model: torch.nn.Module, leaf_modules: Iterable) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return _untyped(fx.GraphModule(model, copy.deepcopy(model.graph), type(model).__name__))
    leaves = list(leaf_modules or ())
    tracer = _Tracer(frozenset(p for p in leaves if isinstance(p, str)),
                     tuple(t for t in leaves if isinstance(t, type)))
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, AttributeError, ...
        raise CaptureError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}\n"
            f"  at {_user_frame(exc)}\n{_HINT}") from exc
    return _untyped(fx.GraphModule(tracer.root, graph, type(model).__name__))


def _untyped(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop type annotations from the graph: torch 2.13's fx code generation records a
    ``Tensor`` annotation as a string global that `torch.save` of the GraphModule cannot pickle
    (and shapes, not annotations, are what passes read). Forget the tracer class too."""
    for node in gm.graph.nodes:
        node.type = None
    gm._tracer_cls = None  # unpickling a super-network must not need this package's tracer
    gm.recompile()
    return gm


def _to_meta(value):
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, (tuple, list)):
        return type(value)(_to_meta(v) for v in value)
    return value


class _Recorder(Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


class _MetaShapes(_Recorder):
    """Runs the graph on meta tensors: shapes without arithmetic. Modules run through
    `functional_call` with meta parameters, shape-preserving ones are skipped."""
    def get_attr(self, target, args, kwargs):
        return _to_meta(super().get_attr(target, args, kwargs))

    def call_module(self, target, args, kwargs):
        mod = self.fetch_attr(target)
        op = OPS.of_module(mod)  # Rule 2: same-shape modules need no computation
        if op is not None and op.same_shape and len(args) == 1 and isinstance(args[0], torch.Tensor):
            return args[0]
        state = {k: _to_meta(v) for k, v in
                 [*mod.named_parameters(), *mod.named_buffers()]}
        return torch.func.functional_call(mod, state, tuple(args), kwargs)


_WARM = []


def warm_up() -> float:
    """Load torch's meta kernels once (the first meta op of a process costs ~1 s here);
    returns the seconds it took (0 after the first call)."""
    if _WARM:
        return 0.0
    import time
    t = time.perf_counter()
    x = torch.empty(1, 1, 3, 3, device="meta")
    torch.nn.functional.conv2d(x, torch.empty(1, 1, 1, 1, device="meta")).relu().sum()
    _WARM.append(True)
    return time.perf_counter() - t


def _fake_run(gm, example_inputs) -> dict:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        rec = _Recorder(gm)
        rec.run(*[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t
                  for t in example_inputs])
    return rec.values


def _real_run(gm, example_inputs) -> dict:
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*example_inputs)
    return rec.values


def _fake_shapes(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> dict:
    """Rule 2: {node name: output value} on meta tensors; where meta fails (graphs that create
    real tensors, e.g. ``torch.arange``), on fake tensors; where those fail too (a leaf module
    with data-dependent control flow), on the real example inputs, a real forward pass."""
    try:
        interp = _MetaShapes(gm)
        interp.run(*[_to_meta(t) for t in example_inputs])
        return interp.values
    except Exception:
        pass
    try:
        return _fake_run(gm, example_inputs)
    except Exception:
        pass
    try:
        return _real_run(gm, example_inputs)
    except Exception as exc:
        raise CaptureError(
            f"shape propagation failed on {type(gm).__name__} with inputs "
            f"{[tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]}: "
            f"{type(exc).__name__}: {exc}\n  at {_user_frame(exc)}\n"
            "What to do: check that the example inputs have the shape the model expects "
            "(e.g. --input-shape 1,3,224,224).") from exc


def op_name(target) -> str:
    """Rule 6: the canonical name of a called function or ATen overload."""
    packet = getattr(target, "overloadpacket", None)
    name = getattr(packet if packet is not None else target, "__name__", str(target))
    return name.strip("_") if name.startswith("__") else name


def _scope_path(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    last = next(reversed(stack.values()))
    return str(last[0] if isinstance(last, tuple) else last)


def _kind(node: fx.Node, gm: fx.GraphModule) -> tuple[str, str | None, str | None]:
    """(kind, module_path, module_type) of an fx node."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return type(mod).__name__, node.target, type(mod).__name__
    if node.op == "call_function":
        path = _scope_path(node) if isinstance(node.target, torch._ops.OpOverload) else None
        return op_name(node.target), path, None
    if node.op == "call_method":
        return str(node.target), None, None
    if node.op == "get_attr":
        return "get_attr", str(node.target), None
    return node.op, None, None


def _target_str(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", None) or ""
    return f"{mod}.{getattr(t, '__qualname__', getattr(t, '__name__', repr(t)))}".lstrip(".")


def _meta(value) -> tuple:
    """(shape, dtype, tuple_shapes) of a propagated value."""
    if isinstance(value, torch.Tensor):
        return tuple(int(d) for d in value.shape), str(value.dtype).replace("torch.", ""), None
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return None, None, tuple(tuple(int(d) for d in v.shape) if isinstance(v, torch.Tensor)
                                 else None for v in value)
    return None, None, None


def _node_info(node: fx.Node, gm: fx.GraphModule, value) -> NodeInfo:
    kind, path, mtype = _kind(node, gm)
    if node.op == "get_attr" and value is None:
        value = operator.attrgetter(node.target)(gm)
    shape, dtype, tuple_shapes = _meta(value)
    return NodeInfo(
        name=node.name, op=node.op, target=_target_str(node), kind=kind, module_path=path,
        module_type=mtype, shape=shape, dtype=dtype, tuple_shapes=tuple_shapes,
        channel_axis=1 if shape is not None and len(shape) >= 2 else None,
        stack_trace=node.meta.get("stack_trace"))


FRONTENDS = ("auto", "fx", "export")


def _bind_kwargs(gm: fx.GraphModule, args: tuple, kwargs: dict) -> tuple:
    """Rule 5: positional inputs for the fx placeholders, keyword inputs bound by name."""
    out = list(args)
    for node in list(gm.graph.nodes)[len(args):]:
        if node.op != "placeholder":
            break
        name = str(node.target).lstrip("*")
        if name in kwargs:
            out.append(kwargs[name])
        elif node.args:
            out.append(node.args[0])
        else:
            raise CaptureError(f"no example value for input {name!r}: pass it in example_kwargs")
    unknown = set(kwargs) - {str(n.target) for n in gm.graph.nodes if n.op == "placeholder"}
    if unknown:
        raise CaptureError(f"example_kwargs {sorted(unknown)} are not inputs of the model")
    return tuple(out)


def _capture_export(model, args, kwargs) -> tuple[fx.GraphModule, dict]:
    from compiler.capture_export import export_graph_module

    try:
        gm = export_graph_module(model, args, kwargs)
    except Exception as exc:
        raise CaptureError(
            f"torch.export could not export {type(model).__name__}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}\n  at {_user_frame(exc)}\n"
            "What to do: make the example inputs match what the model expects, or rewrite that "
            "line without data-dependent control flow (torch.cond, or a branch on shapes).") from exc
    return gm, {n.name: n.meta.get("val") for n in gm.graph.nodes}


def capture(model: torch.nn.Module, example_inputs=(), *, example_kwargs=None,
            leaf_modules: Iterable = (), frontend: str = "auto") -> IRGraph:
    """Trace `model` and propagate shapes from `example_inputs` (a tensor or tuple of tensors)
    and `example_kwargs` (keyword inputs).

    Rule 3: `model` is not modified (its training flag included).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"capture expects an nn.Module, got {type(model).__name__}")
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs, kwargs = tuple(example_inputs), dict(example_kwargs or {})
    used = "fx"
    if frontend == "export":
        gm, values = _capture_export(model, example_inputs, kwargs)
        used = "export"
    else:
        try:
            gm = _trace(model, leaf_modules)
        except CaptureError as exc:
            if frontend == "fx":
                raise
            warnings.warn(f"{str(exc).splitlines()[0]}; falling back to torch.export "
                          "(non-strict)", stacklevel=2)
            try:
                gm, values = _capture_export(model, example_inputs, kwargs)
            except CaptureError as exc2:
                raise CaptureError(f"{exc}\nThe torch.export fallback failed too: {exc2}") from exc2
            used = "export"
        else:
            decompose_self_attention(gm)  # Rule 7
            example_inputs = _bind_kwargs(gm, example_inputs, kwargs) if kwargs else example_inputs
            values = _fake_shapes(gm, example_inputs)
    return _ir(gm, values, used)


def _ir(gm: fx.GraphModule, values: dict, frontend: str) -> IRGraph:
    graph = nx.DiGraph()
    for node in gm.graph.nodes:
        graph.add_node(node.name, info=_node_info(node, gm, values.get(node.name)))
        for arg in node.all_input_nodes:
            graph.add_edge(arg.name, node.name)
    shapes = tuple(graph.nodes[n.name]["info"].shape for n in gm.graph.nodes
                   if n.op == "placeholder" and graph.nodes[n.name]["info"].shape is not None)
    return IRGraph(gm, graph, shapes, frontend)


def example_inputs_for(shape: Sequence[int], dtype=torch.float32) -> tuple[torch.Tensor]:
    """A zero tensor of `shape`: for capture, only shapes matter."""
    return (torch.zeros(tuple(shape), dtype=dtype),)
