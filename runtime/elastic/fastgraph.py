"""Cheaper submodule lookups in the generated forward of a super-network's fx GraphModules.

torch.fx emits ``getattr(getattr(self.layer1, "0"), "conv1")(x)`` to call the submodule at path
``layer1.0.conv1``: one Python-level ``nn.Module.__getattr__`` per path component (about a
microsecond each on a slow CPU), several per call and hundreds of calls per forward. At batch 1
that is several percent of a MobileNetV2 forward, and more than the elastic ops themselves cost.

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

import torch.fx as fx
from torch import nn

__all__ = ["accelerate", "accelerate_all", "is_accelerated", "is_handled"]

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
    """Whether `accelerate` already ran on ``gm``'s current forward, or cannot run at all (Rule 4)."""
    cls = _own_class(gm)
    if cls is None:
        return True
    forward = cls.__dict__.get("forward")
    return forward is not None and cls.__dict__.get(_HANDLED) is forward


def _fast_source(gm: fx.GraphModule, src: str) -> str | None:
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
    scope = dict(code.globals)
    exec(compile(src, filename, "exec", dont_inherit=True), scope)
    forward = scope["forward"]
    setattr(forward, _FAST, True)
    cls.forward = forward
    setattr(cls, _HANDLED, forward)
    return True


def accelerate_all(module: nn.Module) -> int:
    """Rule 5: the number of GraphModules accelerated (those already fast count too)."""
    return sum(accelerate(m) for m in module.modules() if isinstance(m, fx.GraphModule))
