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
  1. `register_op(target, behaviour)` adds or replaces a global rule; ``target`` may be a class,
     a function, a canonical name, or a ``"package.module:Name"`` reference (imported).
  2. `SupernetConfig(op_rules={"mypkg.mod:MyOp": "channel_preserving"})` gives rules for one
     compilation only (they reach the analysis through `GroupingConfig.op_rules`); they win over
     global ones, which win over the built-in tables.
  3. Built-in knowledge lives in the tables below: `PASS_NAMES` (channel-preserving functions and
     methods), `BINARY_NAMES`, `REDUCE_NAMES`, `META_NAMES`, `PASS_MODULES`, `SPATIAL_MODULES`.

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

__all__ = ["register_op", "unregister_op", "behaviour_of", "resolve_target", "BEHAVIOURS",
           "PASS_NAMES", "BINARY_NAMES", "REDUCE_NAMES", "META_NAMES", "LIKE_NAMES", "NEW_NAMES", "PASS_MODULES",
           "SPATIAL_MODULES"]

BEHAVIOURS = ("channel_preserving", "elementwise", "frozen")

PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Identity, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.Softmax, nn.LogSoftmax, nn.SELU, nn.CELU,
)
SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
PASS_NAMES = frozenset({
    "relu", "relu_", "relu6", "silu", "gelu", "hardswish", "hardsigmoid", "sigmoid", "tanh",
    "leaky_relu", "elu", "mish", "softplus", "hardtanh", "dropout", "dropout1d", "dropout2d",
    "alpha_dropout", "contiguous", "clone", "detach", "float", "half", "double", "bfloat16", "to",
    "type", "type_as", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "erf", "clamp", "clamp_",
    "clip", "softmax", "log_softmax", "sigmoid_", "hardswish_", "hardsigmoid_", "tanh_", "selu",
    "celu", "square", "reciprocal", "sign", "round", "floor", "ceil", "requires_grad_",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool2d",
    "interpolate", "upsample", "pixel_dropout", "silu_", "gelu_", "identity",
    # train-time ops that keep channels: stochastic depth / drop path (torchvision, timm),
    # dropout variants, and the *_like constructors a hand-written per-sample mask uses
    "stochastic_depth", "drop_path", "drop_block2d", "drop_block3d", "dropout_",
    "feature_alpha_dropout", "dropout3d", "native_dropout", "empty_like", "zeros_like",
    "ones_like", "rand_like", "randn_like", "bernoulli", "bernoulli_",
})
NEW_NAMES = frozenset({"new_empty", "new_zeros", "new_ones", "new_full", "empty", "zeros",
                       "ones", "full", "rand", "randn"})  # fresh tensors of a given size
LIKE_NAMES = frozenset({"empty_like", "zeros_like", "ones_like", "rand_like", "randn_like",
                        "full_like"})
BINARY_NAMES = frozenset({
    "add", "sub", "mul", "truediv", "div", "floordiv", "iadd", "isub", "imul", "itruediv",
    "add_", "sub_", "mul_", "div_", "maximum", "minimum", "rsub", "radd", "rmul", "true_divide",
    "multiply", "subtract", "pow",
})
REDUCE_NAMES = frozenset({"mean", "sum", "amax", "amin", "max", "min", "prod", "std", "var",
                          "norm", "logsumexp"})
META_NAMES = frozenset({"size", "dim", "numel", "getattr", "ndimension", "nelement", "_assert",
                        "eq", "ne"})

_RULES: dict[Any, Any] = {}


def resolve_target(target: Any) -> Any:
    """A class/function for ``"package.module:Name"``, else `target` itself (Rule 1)."""
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


def register_op(target: Any, behaviour: str | Callable) -> None:
    """Rule 1: tell the analysis how `target` treats channels (see the module docstring)."""
    _check(behaviour)
    _RULES[resolve_target(target)] = behaviour


def unregister_op(target: Any) -> None:
    _RULES.pop(resolve_target(target), None)


def local_rules(pairs) -> dict:
    """Rule 2: {target object: behaviour} from ``(reference, behaviour)`` pairs."""
    out = {}
    for target, behaviour in pairs:
        _check(behaviour)
        out[resolve_target(target)] = behaviour
    return out


def behaviour_of(obj: Any, name: str | None = None,
                 local: Mapping | None = None) -> str | Callable | None:
    """The registered behaviour for a module instance, a function or an op name, if any."""
    for rules in (local or {}, _RULES):
        if not rules:
            continue
        if isinstance(obj, nn.Module):
            for cls in type(obj).__mro__:
                if cls in rules:
                    return rules[cls]
        elif obj is not None and _hashable(obj) and obj in rules:
            return rules[obj]
        if name is not None and name in rules:
            return rules[name]
    return None


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True
