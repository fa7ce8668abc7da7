"""The op registry: how the channel analysis treats each op, and the extension point for users.

Ops are keyed by what capture records: a module class (``call_module``), a function object
(``call_function``, e.g. a ``torch.fx.wrap``-ped helper) or a canonical op name
(`NodeInfo.kind`: method names, ATen op names, function names). `behaviour` says how the op treats
channels:

  - ``"channel_preserving"``: output channels are the input's (activations, dropout, stochastic
    depth, pooling); the first argument carries them.
  - ``"elementwise"``: like ``add``/``mul``: operands that carry channels are united.
  - ``"frozen"``: the channels it touches stay at full width (a deliberate choice: the reason
    says so, no unsupported record).
  - a callable ``rule(state, node) -> descriptor``: a custom rule with the signature of the
    handlers in `passes._width_ops` (advanced).

Rules:
  1. The op table itself is `runtime.elastic.optable.OPS` (torch only, so the runtime's fast
     path reads it too): one entry per op, read by capture (same-shape modules), every analysis
     pass (width rules, blocks and their activations/norms/merges, kernels, MACs) and the fast
     path (fresh outputs). Adding an op is one `OPS.add` (or one line of its built-in list).
  2. `register_op(target, behaviour)` is that one edit for users: it adds (or replaces) the
     entry of ``target`` -- a module class, a function, a canonical op name, or a
     ``"package.module:Name"`` reference (imported) -- and `unregister_op` restores what was
     there. ``family`` (default ``"registered"``) is what the depth analysis sees, e.g.
     ``"activation"``; ``same_shape=True`` lets capture skip computing its output's shape.
  3. `SupernetConfig(op_rules={"mypkg.mod:MyOp": "channel_preserving"})` gives rules for one
     compilation only (they reach the analysis through `GroupingConfig.op_rules`); they win over
     the table.

Example:
    >>> import torch
    >>> class Gate(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x * torch.sigmoid(x)
    >>> register_op(Gate, "channel_preserving")
    >>> behaviour_of(Gate())
    'channel_preserving'
    >>> unregister_op(Gate)
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import torch.nn as nn

from runtime.elastic.optable import OPS, Op

__all__ = ["register_op", "unregister_op", "behaviour_of", "resolve_target", "BEHAVIOURS", "OPS",
           "Op"]

BEHAVIOURS = ("channel_preserving", "elementwise", "frozen")
WIDTH_RULE = {"channel_preserving": "pass", "elementwise": "binary", "frozen": "frozen"}
_BEHAVIOUR = {v: k for k, v in WIDTH_RULE.items()}
_REPLACED: dict[Any, Op | None] = {}  # Rule 2: what a user rule replaced, restored on unregister


def resolve_target(target: Any) -> Any:
    """A class/function for ``"package.module:Name"``, else `target` itself (Rule 2)."""
    if isinstance(target, str) and ":" in target:
        module, _, name = target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"op rule target {target!r} cannot be imported: {exc}") from exc
        return obj
    return target


def _check(behaviour: Any) -> None:
    if not (behaviour in BEHAVIOURS or callable(behaviour)):
        raise ValueError(f"op behaviour must be one of {BEHAVIOURS} or a callable rule, "
                         f"got {behaviour!r}")


def register_op(target: Any, behaviour: str | Callable, *, family: str = "registered",
                same_shape: bool = False) -> None:
    """Rule 2: tell the compiler how `target` treats channels (see the module docstring)."""
    _check(behaviour)
    key = resolve_target(target)
    old = OPS.add(key, Op(family, WIDTH_RULE.get(behaviour, behaviour), same_shape=same_shape))
    _REPLACED.setdefault(key, old)


def unregister_op(target: Any) -> None:
    key = resolve_target(target)
    if key in _REPLACED:
        OPS.remove(key, restore=_REPLACED.pop(key))


def local_rules(pairs) -> dict:
    """Rule 3: {target object: width rule} from ``(reference, behaviour)`` pairs."""
    out = {}
    for target, behaviour in pairs:
        _check(behaviour)
        out[resolve_target(target)] = WIDTH_RULE.get(behaviour, behaviour)
    return out


def local_rule(obj: Any, name: str | None, local: Mapping | None) -> str | Callable | None:
    """The width rule `local` (from `local_rules`) gives a module instance, function or name."""
    if not local:
        return None
    if isinstance(obj, nn.Module):
        for cls in type(obj).__mro__:
            if cls in local:
                return local[cls]
    elif obj is not None and _hashable(obj) and obj in local:
        return local[obj]
    return local.get(name) if name is not None else None


def behaviour_of(obj: Any, name: str | None = None) -> str | Callable | None:
    """How the table (user rules included) treats a module instance, a function or an op name:
    a behaviour of `BEHAVIOURS`, another width rule's name, a custom rule, or None (unknown)."""
    op = OPS.of_module(obj) if isinstance(obj, nn.Module) else \
        OPS.of_function(obj) if obj is not None and _hashable(obj) else None
    if op is None and name is not None:
        op = OPS.of_name(name)
    if op is None or op.width is None:
        return None
    return _BEHAVIOUR.get(op.width, op.width)


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True
