"""Code-free serialisation of a module tree and its fx graphs: data and tensors, never pickled code.

`SuperNetwork.save` writes what `module_to_data` returns and `SuperNetwork.load` reads it with
``torch.load(weights_only=True)``, so a file from elsewhere cannot run code when it is loaded:
the unpickler only builds tensors and plain containers, and this module only instantiates
classes and references functions that pass the allow-list below.

Rules:
  1. A module is stored as ``{"class": "module:qualname", "attrs", "params", "buffers",
     "children"}``. ``attrs`` are its plain instance attributes (ints, floats, bools, strings,
     None, tuples/lists/dicts of them, dtypes, devices, sizes, slices); ``params`` and
     ``buffers`` hold the tensors themselves (None where a slot is empty, e.g. ``bias=None``).
     A module object met a second time is stored as ``{"ref": path}`` and a parameter shared by
     two modules stays one parameter, so sharing survives a round trip.
  2. An fx GraphModule also stores its graph as data: one entry per node (name, op, target,
     args, kwargs); graph values inside arguments are ``{"node": name}``. The default fx code
     generator and torch.export's pytree one (its input/output structure as pytree's JSON) are
     supported.
  3. Allowed classes: ``nn.Module`` subclasses defined under ``torch.nn``, ``torch.fx`` or
     ``runtime.elastic``, plus whatever `register_safe` was given. Allowed functions (fx
     ``call_function`` targets): those of ``torch`` (including ``torch.ops`` overloads),
     ``torch.nn.functional``, ``operator``, ``math``, ``runtime.elastic``, a few builtins
     (getattr, len, ...), plus `register_safe`. The check happens before anything is imported.
  4. Saving something outside the lists, a module with hooks, or an attribute of another type
     raises `NotSerializableError` naming the module path or node and what to do.
  5. Loading rebuilds each module with ``cls.__new__`` and ``nn.Module.__init__`` (no user
     ``__init__`` runs), restores attributes and tensors, and recompiles each GraphModule.

Example:
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    >>> copy = module_from_data(module_to_data(m))
    >>> x = torch.randn(4, 2)
    >>> torch.equal(copy(x), m(x)), type(copy[1]).__name__
    (True, 'ReLU')
"""
from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

__all__ = ["NotSerializableError", "module_to_data", "module_from_data", "register_safe"]

_CLASS_PREFIXES = ("torch.nn.", "torch.fx.", "runtime.elastic.")
_FUNCTION_MODULES = ("torch", "torch.nn.functional", "torch.functional", "torch._C._nn",
                     "torch._C._VariableFunctions", "operator", "_operator", "math",
                     "runtime.elastic")
_BUILTINS = {"getattr", "len", "int", "float", "bool", "slice", "range", "tuple", "list",
             "min", "max", "abs", "sum"}
_extra: set[str] = set()
_MODULE_KEYS = set(nn.Module().__dict__) | {"_modules"}
_GRAPH_KEYS = set(fx.GraphModule(nn.Module(), fx.Graph()).__dict__)


class NotSerializableError(ValueError):
    """Something in the network cannot be saved as code-free data (Rule 4)."""


def register_safe(obj: Any) -> Any:
    """Allow one more module class or graph function (Rule 3); usable as a decorator.

    Registering is a decision of the code that loads a file, never of the file itself.
    """
    _extra.add(_qualified(obj))
    return obj


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}:{getattr(obj, '__qualname__', None)}"


def _class_allowed(name: str) -> bool:
    module = name.split(":", 1)[0]
    return name in _extra or module.startswith(_CLASS_PREFIXES) and "<locals>" not in name


def _function_allowed(name: str) -> bool:
    module, _, qual = name.partition(":")
    if name in _extra or module in ("builtins",) and qual in _BUILTINS:
        return True
    return "<locals>" not in qual and (module in _FUNCTION_MODULES
                                       or module.startswith(("torch.", "runtime.elastic.")))


def _resolve(name: str) -> Any:
    module, _, qual = name.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------- values (Rule 1, Rule 2)
_PLAIN = (int, float, bool, str, type(None))


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, torch.Size):
        return {"size": list(value)}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, where) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(v, where) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
        return {"torch": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, pytree.TreeSpec):
        return {"treespec": _dump_spec(value, where)}
    raise NotSerializableError(f"{where}: a value of type {type(value).__name__} ({value!r:.60}) "
                               "cannot be stored as data")


def _decode(value: Any, nodes: dict[str, fx.Node] | None = None) -> Any:
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, body), = value.items()
    if tag == "node":
        return nodes[body]
    if tag == "size":
        return torch.Size(body)
    if tag == "tuple":
        return tuple(_decode(v, nodes) for v in body)
    if tag == "dict":
        return {k: _decode(v, nodes) for k, v in body.items()}
    if tag == "slice":
        return slice(*(_decode(v, nodes) for v in body))
    if tag == "ellipsis":
        return Ellipsis
    if tag == "device":
        return torch.device(body)
    if tag == "treespec":
        return pytree.treespec_loads(body)
    if tag == "torch":
        obj = getattr(torch, body, None)
        if not isinstance(obj, (torch.dtype, torch.memory_format, torch.layout)):
            raise NotSerializableError(f"unknown torch constant {body!r}")
        return obj
    raise NotSerializableError(f"unknown value tag {tag!r}")


# ---------------------------------------------------------------- graphs (Rule 2)
def _target_to_data(node: fx.Node) -> Any:
    target = node.target
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return {"op": f"{target._schema.name.replace('::', '.')}.{target._overloadname}"}
    name = _function_name(target)
    if not _function_allowed(name) or _resolve_or_none(name) is not target:
        raise NotSerializableError(
            f"node {node.name!r} calls {name}, which is not on the allow-list of functions a "
            "saved super-network may reference. Hint: runtime.elastic.serialize.register_safe(fn) "
            "in the code that saves and loads, or save(..., trusted_format=True) for a file only "
            "trusted code will load.")
    return {"fn": name}


def _function_name(target: Any) -> str:
    """``module:qualname`` that resolves back to `target` (torch's C functions report a class)."""
    name = _qualified(target)
    if _resolve_or_none(name) is target:
        return name
    short = getattr(target, "__name__", None)
    for module in _FUNCTION_MODULES:
        candidate = f"{module}:{short}"
        if short and _resolve_or_none(candidate) is target:
            return candidate
    return name


def _resolve_or_none(name: str) -> Any:
    try:
        return _resolve(name)
    except (ImportError, AttributeError, ValueError):
        return None


def _target_from_data(data: Any) -> Any:
    if isinstance(data, str):
        return data
    if "op" in data:
        namespace, op, overload = data["op"].split(".")
        return getattr(getattr(getattr(torch.ops, namespace), op), overload)
    if not _function_allowed(data["fn"]):
        raise NotSerializableError(f"the file references function {data['fn']}, which is not on "
                                   "the allow-list; refused")
    return _resolve(data["fn"])


def _dump_spec(spec: Any, where: str) -> str:
    try:
        return pytree.treespec_dumps(spec)
    except Exception as exc:  # a container type pytree cannot name
        raise NotSerializableError(f"{where}: its input/output structure cannot be stored as "
                                   f"data ({exc})") from exc


def _codegen_to_data(graph: fx.Graph, where: str) -> dict | None:
    codegen = graph._codegen
    if type(codegen) is fx.graph.CodeGen:
        return None
    if type(codegen) is fx.graph._PyTreeCodeGen:  # torch.export's unlifted modules
        info = codegen.pytree_info
        return {"orig_args": list(info.orig_args), "in_spec": _dump_spec(info.in_spec, where),
                "out_spec": None if info.out_spec is None else _dump_spec(info.out_spec, where)}
    raise NotSerializableError(f"{where}: its fx graph uses a custom code generator "
                               f"({type(codegen).__name__})")


def _graph_to_data(graph: fx.Graph, where: str) -> dict:
    nodes = [{"name": n.name, "op": n.op, "target": _target_to_data(n),
              "args": _encode(tuple(n.args), f"{where} node {n.name}"),
              "kwargs": _encode(dict(n.kwargs), f"{where} node {n.name}")} for n in graph.nodes]
    return {"nodes": nodes, "pytree": _codegen_to_data(graph, where)}


def _graph_from_data(data: dict | list) -> fx.Graph:
    entries, codegen = (data, None) if isinstance(data, list) else (data["nodes"], data["pytree"])
    graph, nodes = fx.Graph(), {}
    if codegen is not None:
        out_spec = codegen["out_spec"]
        graph.set_codegen(fx.graph._PyTreeCodeGen(fx.graph._PyTreeInfo(
            codegen["orig_args"], pytree.treespec_loads(codegen["in_spec"]),
            None if out_spec is None else pytree.treespec_loads(out_spec))))
    for e in entries:
        node = graph.create_node(e["op"], _target_from_data(e["target"]),
                                 _decode(e["args"], nodes), _decode(e["kwargs"], nodes), e["name"])
        if node.name != e["name"]:
            raise NotSerializableError(f"node name {e['name']!r} did not round-trip")
        nodes[e["name"]] = node
    return graph


# ---------------------------------------------------------------- modules (Rule 1, Rule 5)
def module_to_data(module: nn.Module) -> dict:
    """The module tree as plain data and tensors (Rules 1-4)."""
    return _module_to_data(module, "", {})


def _module_to_data(module: nn.Module, path: str, seen: dict[int, str]) -> dict:
    where = path or "<root>"
    if id(module) in seen:
        return {"ref": seen[id(module)]}
    seen[id(module)] = path
    is_graph = isinstance(module, fx.GraphModule)
    cls = type(module).__mro__[1] if is_graph else type(module)  # fx's per-instance subclass
    name = _qualified(cls)
    if not _class_allowed(name):
        raise NotSerializableError(
            f"{where} is a {name}, not on the allow-list of module classes a saved super-network "
            "may contain. Hint: runtime.elastic.serialize.register_safe(ThatClass) where it is "
            "defined, or save(..., trusted_format=True) for a file only trusted code will load.")
    hooks = [k for k in _MODULE_KEYS if "hooks" in k and getattr(module, k, None)]
    if hooks:
        raise NotSerializableError(f"{where} has hooks ({hooks}); remove them before saving")
    skip = _GRAPH_KEYS if is_graph else _MODULE_KEYS
    attrs = {k: _encode(v, f"{where}.{k}") for k, v in module.__dict__.items() if k not in skip}
    data = {"class": name, "attrs": attrs, "training": module.training,
            "params": dict(module._parameters), "buffers": dict(module._buffers),
            "non_persistent": sorted(module._non_persistent_buffers_set),
            "children": {k: None if m is None else
                         _module_to_data(m, f"{path}.{k}" if path else k, seen)
                         for k, m in module._modules.items()}}
    if is_graph:
        data["graph"] = _graph_to_data(module.graph, where)
    return data


def module_from_data(data: dict) -> nn.Module:
    """Rebuild a module tree written by `module_to_data` (Rules 3 and 5)."""
    return _module_from_data(data, "", {})


def _module_from_data(data: dict, path: str, built: dict[str, nn.Module]) -> nn.Module:
    if "ref" in data:
        return built[data["ref"]]
    name = data["class"]
    if not _class_allowed(name):
        raise NotSerializableError(f"{path or '<root>'}: the file asks for class {name}, which is "
                                   "not on the allow-list; refused")
    cls = _resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise NotSerializableError(f"{path or '<root>'}: {name} is not an nn.Module class")
    is_graph = issubclass(cls, fx.GraphModule)
    module = nn.Module.__new__(nn.Module if is_graph else cls)
    nn.Module.__init__(module)
    built[path] = module
    for k, child in data["children"].items():
        module._modules[k] = None if child is None else \
            _module_from_data(child, f"{path}.{k}" if path else k, built)
    for k, v in data["params"].items():
        module._parameters[k] = v if v is None or isinstance(v, nn.Parameter) else nn.Parameter(v)
    module._buffers.update(data["buffers"])
    module._non_persistent_buffers_set.update(data["non_persistent"])
    if is_graph:
        graph = _graph_from_data(data["graph"])
        gm = fx.GraphModule(module, graph)
        # every child, parameter and buffer as stored (fx copies only what the graph names)
        gm._modules, gm._parameters, gm._buffers = module._modules, module._parameters, module._buffers
        gm._non_persistent_buffers_set = module._non_persistent_buffers_set
        module = gm
        built[path] = gm
    for k, v in data["attrs"].items():
        module.__dict__[k] = _decode(v)
    module.train(data["training"])
    return module

