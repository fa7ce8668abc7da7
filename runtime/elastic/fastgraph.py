"""A faster generated forward for the fx GraphModules of a super-network, computing the same.

torch.fx emits ``getattr(getattr(self.layer1, "0"), "conv1")(x)`` to call the submodule at path
``layer1.0.conv1``: one Python-level ``nn.Module.__getattr__`` per path component (about a
microsecond each on a slow CPU), several per call and hundreds of calls per forward. At batch 1
that is several percent of a MobileNetV2 forward, more than the elastic ops themselves cost.
Tracing also turns a residual ``out += identity`` into ``out + identity``: one more activation-
sized allocation per block, several percent of a ResNet-50 forward at batch 16.

Rules:
  1. `accelerate(gm)` recompiles ``gm``'s forward from the very source torch.fx generates, with
     each called submodule path resolved through the ``_modules`` dicts instead
     (``self._modules["layer1"]._modules["0"]._modules["conv1"](x)``). The same modules are
     called with the same arguments, through ``__call__`` (hooks included); only the lookup
     is cheaper. ``get_attr`` reads and everything else are unchanged.
  2. The lookup stays live: a submodule replaced later is the one the next call uses.
  3. Only ``gm``'s private class is touched (torch.fx gives every GraphModule its own).
     ``recompile()`` (which pickling runs), deepcopy and unpickling install the stock forward
     again, which is correct, only slower; `is_accelerated` tells, and accelerating again is
     allowed. ``gm.code`` keeps showing the stock source.
  4. When the source does not have the expected form (another torch.fx version, a custom
     codegen), nothing changes. Either way the forward is marked as handled (`is_handled`), so
     callers can retry cheaply after a change of forward and never retry a failure.
  5. `accelerate_all(module)` accelerates every GraphModule inside ``module`` (itself included).
  6. Residual add: ``a + b`` (``operator.add`` of two graph values) where one operand is the
     output of a conv, linear or batch-norm module (stock torch class or its elastic op) that
     nothing else in the graph uses is computed into that operand's memory (``add_``) when,
     at run time, autograd is off, neither that module nor (for an elastic op) its wrapped
     module has forward hooks, no global forward hook is set, and both operands have the same
     shape, dtype, device and strides. The values are bit-identical (each element is the same
     float addition); otherwise it is ``a + b`` as traced. Only something that keeps the
     module's output without a hook (a dispatch mode, say) could tell the difference.

Example:
    >>> import torch, torch.fx as fx
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Sequential(torch.nn.ReLU())))
    >>> accelerate(gm), is_accelerated(gm)
    (True, True)
    >>> gm(torch.tensor([-1.0, 2.0]))
    tensor([0., 2.])
    >>> _ = gm.recompile()
    >>> is_accelerated(gm)
    False
"""
from __future__ import annotations

import hashlib
import linecache
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules import module as _module_globals

from runtime.elastic.optable import OPS

__all__ = ["accelerate", "accelerate_all", "is_accelerated", "is_handled", "add_into"]

_FAST = "_elastic_accelerated"  # set on the forward functions `accelerate` makes
_HANDLED = "_elastic_handled_forward"  # class attribute: the forward `accelerate` last saw (Rule 4)


def _fx_target(base: str, target: str) -> str:
    """The expression torch.fx generates for the submodule at ``target``."""
    for name in target.split("."):
        base = f"{base}.{name}" if name.isidentifier() else f'getattr({base}, "{name}")'
    return base


def _dict_target(base: str, target: str) -> str:
    return base + "".join(f"._modules[{name!r}]" for name in target.split("."))  # Rule 1


def _own_class(gm: fx.GraphModule) -> type | None:
    cls = type(gm)
    return cls if cls.__qualname__.endswith("GraphModuleImpl") else None  # Rule 3


def is_accelerated(gm: fx.GraphModule) -> bool:
    cls = _own_class(gm)
    return cls is not None and getattr(cls.__dict__.get("forward"), _FAST, False) is True


def is_handled(gm: fx.GraphModule) -> bool:
    """Whether `accelerate` already ran on ``gm``'s current forward, or never can (Rule 4)."""
    cls = _own_class(gm)
    if cls is None:
        return True
    forward = cls.__dict__.get("forward")
    return forward is not None and cls.__dict__.get(_HANDLED) is forward


_ADD = "_elastic_add_into"  # the name of `add_into` in the generated code


def _fresh_operand(gm: fx.GraphModule, node: fx.Node) -> int | None:
    """Index of the operand of ``node`` that Rule 6 may add into, if any."""
    if node.op != "call_function" or node.target is not operator.add or node.kwargs \
            or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args) \
            or node.args[0] is node.args[1]:
        return None
    for i, arg in enumerate(node.args):
        if arg.op == "call_module" and len(arg.users) == 1:
            module = gm.get_submodule(arg.target)
            if type(module) in OPS.types(fresh=True):  # the op table's fresh-output modules
                return i
    return None


def _residual_adds(gm: fx.GraphModule, src: str) -> str:
    """Rule 6: route eligible adds through `add_into`; an add not found as expected stays."""
    for node in gm.graph.nodes:
        i = _fresh_operand(gm, node)
        if i is None:
            continue
        a, b = node.args
        producer = _dict_target("self", node.args[i].target)
        for end in (";", "\n"):
            old = f"\n    {node.name} = {a.name} + {b.name}{end}"
            new = f"\n    {node.name} = {_ADD}({a.name}, {b.name}, {i}, {producer}){end}"
            if src.count(old) == 1:
                src = src.replace(old, new)
                break
    return src


def _observed(module: nn.Module) -> bool:
    """Whether a forward hook could keep ``module``'s output (Rule 6)."""
    if getattr(_module_globals, "_global_forward_hooks", True):  # unknown torch: assume a hook
        return True
    inner = module._modules.get("module")  # an elastic op's wrapped module
    return bool(module._forward_hooks) or (inner is not None and bool(inner._forward_hooks))


def add_into(a, b, fresh: int, producer: nn.Module):
    """``a + b``, written into operand ``fresh`` when nothing can tell (Rule 6)."""
    into, other = (a, b) if fresh == 0 else (b, a)
    if torch.is_grad_enabled() or not isinstance(other, torch.Tensor) or _observed(producer) \
            or into.shape != other.shape or into.dtype != other.dtype \
            or into.device != other.device or into.stride() != other.stride():
        return a + b
    return into.add_(other)


def _fast_source(gm: fx.GraphModule, src: str) -> str | None:
    src = _residual_adds(gm, src)
    for target in {n.target for n in gm.graph.nodes if n.op == "call_module"}:
        old = f" = {_fx_target('self', target)}("
        if old not in src:
            return None  # Rule 4
        src = src.replace(old, f" = {_dict_target('self', target)}(")
    return src


def accelerate(gm: fx.GraphModule) -> bool:
    """Install the faster forward on ``gm`` (Rule 1); False when it cannot (Rule 4)."""
    cls = _own_class(gm)
    if cls is None:
        return False
    if is_handled(gm):
        return is_accelerated(gm)
    code = gm.graph.python_code(root_module="self")
    src = _fast_source(gm, code.src)
    if src is None:
        setattr(cls, _HANDLED, cls.__dict__.get("forward"))
        return False
    filename = f"<elastic fx forward {hashlib.sha1(src.encode()).hexdigest()[:12]}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # tracebacks
    scope = {**code.globals, _ADD: add_into}
    exec(compile(src, filename, "exec", dont_inherit=True), scope)
    forward = scope["forward"]
    setattr(forward, _FAST, True)
    cls.forward = forward
    setattr(cls, _HANDLED, forward)
    return True


def accelerate_all(module: nn.Module) -> int:
    """Rule 5: the number of GraphModules accelerated (those already fast count too)."""
    return sum(accelerate(m) for m in module.modules() if isinstance(m, fx.GraphModule))
