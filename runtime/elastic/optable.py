"""The op vocabulary: one table of what the compiler and the runtime know about each op.

Every op that capture, the analysis passes or the runtime's forward fast path treat specially is
one entry here; they all read this table (through `OPS`), so adding an op is one `OPS.add` call
(or one line in `_BUILTIN`). It knows torch only, never the compiler's IR, so the runtime can
read it too; `compiler.ops` is its public face (user rules, `register_op`).

An entry (`Op`) says:
  - ``family``: what the op is, read by the depth analysis (``"norm"``, ``"activation"``,
    ``"add"``, ``"mul"``, ``"cat"``, ``"layout"``, ``"conv"``, ``"linear"``, ``"matmul"``, ...);
  - ``width``: the rule family of the width analysis (`passes._width_rules` names its handlers
    after these: ``"pass"`` = channel-preserving, ``"binary"``, ``"reduce"``, ``"meta"``,
    ``"conv"``, ...), ``None`` when the width analysis has no rule (it freezes and reports), or a
    callable custom rule;
  - ``same_shape``: output has its first input's shape and dtype (capture's shape propagation
    skips computing it);
  - ``alias``: the output may share storage with an input (a view);
  - ``inplace``: writes into its first operand;
  - ``fresh``: a module whose output is a new tensor nothing else holds (the fast path may add
    a residual into it);
  - ``where``: for names, which spellings it applies to: ``"function"`` (a function torch or
    `operator` defines), ``"method"`` (a Tensor method), ``"aten"`` (an ATen op, the torch.export
    front end), or ``"any"`` (any callable of that name, e.g. timm's own ``drop_path``).

Keys are module classes (matched along the module's class hierarchy, most specific first), or
canonical op names (`NodeInfo.kind`: function, method and ATen op names).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

__all__ = ["Op", "OpTable", "OPS", "SPELLINGS"]

SPELLINGS = ("function", "method", "aten", "any")
_TORCH = frozenset(SPELLINGS[:3])


@dataclass(frozen=True)
class Op:
    family: str
    width: str | Callable | None = None
    same_shape: bool = False
    alias: bool = False
    inplace: bool = False
    fresh: bool = False
    where: frozenset = frozenset({"any"})


def spelling(target: Any, node_op: str) -> str:
    """How a called op is spelled: ``"aten"``, ``"method"``, ``"function"`` (torch's or
    `operator`'s own) or ``"other"`` (anything else, e.g. a user's `torch.fx.wrap` helper)."""
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return "aten"
    if node_op == "call_method":
        return "method"
    module = getattr(target, "__module__", None) or ""
    root = module.split(".")[0]
    return "function" if root in ("torch", "_operator", "operator") else "other"


class OpTable:
    """The table (module docstring). Derived views (`names`, `types`) are cached until the next
    `add`/`remove`."""

    def __init__(self) -> None:
        self._types: dict[type, Op] = {}
        self._names: dict[str, Op] = {}
        self._funcs: dict[Callable, Op] = {}  # by identity: a user's `torch.fx.wrap`-ped helper
        self._cache: dict = {}

    def _table(self, key) -> dict:
        if isinstance(key, type):
            return self._types
        if isinstance(key, str):
            return self._names
        if callable(key):
            return self._funcs
        raise TypeError(f"an op table key is a module class, a function or an op name, "
                        f"got {key!r}")

    # ------------------------------------------------------------------ edits
    def add(self, key: type | str | Callable, op: Op) -> Op | None:
        """Add or replace the entry of a module class, function or op name; returns the entry
        replaced (None if new)."""
        if not isinstance(op, Op):
            raise TypeError(f"an op table entry is an Op, got {op!r}")
        table = self._table(key)
        old = table.get(key)
        table[key] = op
        self._cache.clear()
        return old

    def remove(self, key: type | str | Callable, restore: Op | None = None) -> None:
        """Drop the entry of `key`, or put `restore` back in its place."""
        table = self._table(key)
        if restore is None:
            table.pop(key, None)
        else:
            table[key] = restore
        self._cache.clear()

    # ------------------------------------------------------------------ lookups
    def of_module(self, module: nn.Module | type) -> Op | None:
        cls = module if isinstance(module, type) else type(module)
        for c in cls.__mro__:
            op = self._types.get(c)
            if op is not None:
                return op
        return None

    def of_function(self, fn: Callable) -> Op | None:
        try:
            return self._funcs.get(fn)
        except TypeError:  # unhashable
            return None

    def of_name(self, name: str, how: str = "any") -> Op | None:
        """The entry of op name `name` when spelled `how` (see `spelling`)."""
        op = self._names.get(name)
        if op is None or "any" in op.where or how in op.where:
            return op
        return None

    def names(self, *families: str, **flags: bool) -> frozenset[str]:
        """Op names and module class names of the entries in `families` (all when none) that
        have every flag given (``alias=True``, ``inplace=True``, ...)."""
        key = ("names", families, tuple(sorted(flags.items())))
        if key not in self._cache:
            found = {n for n, op in self._names.items() if self._match(op, families, flags)}
            found |= {c.__name__ for c, op in self._types.items()
                      if self._match(op, families, flags)}
            self._cache[key] = frozenset(found)
        return self._cache[key]

    def types(self, *families: str, **flags: bool) -> tuple[type, ...]:
        """Module classes of the entries in `families` (all when none) with every flag given."""
        key = ("types", families, tuple(sorted(flags.items())))
        if key not in self._cache:
            self._cache[key] = tuple(c for c, op in self._types.items()
                                     if self._match(op, families, flags))
        return self._cache[key]

    @staticmethod
    def _match(op: Op, families: tuple, flags: dict) -> bool:
        return (not families or op.family in families) and \
            all(getattr(op, f) == v for f, v in flags.items())


def _entries(keys: Iterable, family: str, width=None, where: Iterable[str] = ("any",),
             **flags) -> list[tuple[Any, Op]]:
    op = Op(family, width, where=frozenset(where), **flags)
    return [(k, op) for k in keys]


def _named(keys: Iterable[str], family: str, where: Iterable[str], **flags) -> list:
    """Entries whose width rule is named after the op itself (``"permute"`` -> ``"permute"``)."""
    return [(k, Op(family, k, where=frozenset(where), **flags)) for k in keys]


_FN, _METHOD_ATEN, _ATEN = ("function",), ("method", "aten"), ("aten",)
_ALL = ("function", "method", "aten")

_BUILTIN: list[tuple[Any, Op]] = [
    # ---- modules: layers with weights, norms, activations, dropout, pooling, layout
    *_entries((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv", "conv", fresh=True),
    *_entries((nn.Linear,), "linear", "linear", fresh=True),
    *_entries((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "norm", "batch_norm",
              same_shape=True, fresh=True),
    *_entries((nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm, nn.InstanceNorm1d,
               nn.InstanceNorm2d, nn.InstanceNorm3d), "norm", "batch_norm", same_shape=True),
    *_entries((nn.GroupNorm,), "norm", "group_norm", same_shape=True),
    *_entries((nn.LayerNorm,), "norm", "layer_norm", same_shape=True),
    *_entries((nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
               nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.SELU, nn.CELU),
              "activation", "pass", same_shape=True),
    *_entries((nn.PReLU,), "activation", None, same_shape=True),  # per-channel weight: no rule yet
    *_entries((nn.Softmax, nn.LogSoftmax), "softmax", "pass", same_shape=True),
    *_entries((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
               nn.FeatureAlphaDropout), "dropout", "pass", same_shape=True),
    *_entries((nn.Identity,), "layout", "pass", same_shape=True, alias=True),
    *_entries((nn.Flatten,), "layout", "flatten", alias=True),
    *_entries((nn.Unflatten,), "layout", alias=True),
    *_entries((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
               nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
               nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), "pool", "spatial"),
    *_entries((nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d), "pad",
              "spatial"),
    # ---- functions and methods that keep channels (any spelling: user helpers too)
    *_entries(("relu", "relu_", "relu6", "silu", "silu_", "gelu", "gelu_", "hardswish",
               "hardswish_", "hardsigmoid", "hardsigmoid_", "sigmoid", "sigmoid_", "tanh", "tanh_",
               "leaky_relu", "elu", "mish", "softplus", "hardtanh", "selu", "celu"),
              "activation", "pass"),
    *_entries(("leaky_relu_", "elu_", "hardtanh_"), "activation"),
    *_entries(("softmax", "log_softmax"), "softmax", "pass"),
    *_entries(("dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
               "feature_alpha_dropout", "native_dropout", "pixel_dropout",
               # stochastic depth / drop path (torchvision, timm) and drop block
               "stochastic_depth", "drop_path", "drop_block2d", "drop_block3d", "bernoulli",
               "bernoulli_"), "dropout", "pass"),
    *_entries(("contiguous",), "layout", "pass", alias=True),
    *_entries(("detach",), "cast", "pass", alias=True),
    *_entries(("clone", "float", "half", "double", "bfloat16", "to", "type", "type_as",
               "requires_grad_", "identity"), "cast", "pass"),
    *_entries(("neg", "abs", "exp", "log", "sqrt", "rsqrt", "erf", "clamp", "clamp_", "clip",
               "square", "reciprocal", "sign", "round", "floor", "ceil"), "math", "pass"),
    *_entries(("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
               "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
               "adaptive_max_pool2d", "interpolate", "upsample"), "pool", "pass"),
    # fresh tensors: of a given size, or shaped like an input (a hand-written per-sample mask)
    *_entries(("new_empty", "new_zeros", "new_ones", "new_full", "empty", "zeros", "ones", "full",
               "rand", "randn"), "new", "new"),
    *_entries(("empty_like", "zeros_like", "ones_like", "rand_like", "randn_like"), "like", "pass"),
    *_entries(("full_like",), "like"),
    # ---- binary, reductions, metadata
    *_entries(("add", "sub", "add_", "sub_"), "add", "binary"),
    *_entries(("iadd", "isub"), "add", "binary", inplace=True),
    *_entries(("mul", "mul_"), "mul", "binary"),
    *_entries(("imul",), "mul", "binary", inplace=True),
    *_entries(("truediv", "div", "floordiv", "div_", "maximum", "minimum", "rsub", "radd", "rmul",
               "true_divide", "multiply", "subtract", "pow"), "arith", "binary"),
    *_entries(("itruediv",), "arith", "binary", inplace=True),
    *_entries(("ifloordiv", "imod", "ipow", "iand", "ior", "ixor", "ilshift", "irshift",
               "imatmul", "setitem"), "arith", inplace=True),
    *_entries(("mean", "sum", "amax", "amin", "max", "min", "prod", "std", "var", "norm",
               "logsumexp"), "reduce", "reduce"),
    *_entries(("size", "dim", "numel", "getattr", "ndimension", "nelement", "_assert", "eq", "ne"),
              "meta", "meta"),
    *_entries(("_assert_tensor_metadata", "sym_size"), "meta", "meta", where=_ATEN),
    # ---- torch's own layout ops, concatenation, products, layers as functions
    *_named(("permute", "transpose", "reshape", "flatten", "squeeze", "unsqueeze"), "layout", _ALL,
            alias=True),
    *_named(("unflatten",), "layout", _METHOD_ATEN, alias=True),
    *_entries(("view",), "layout", "reshape", where=_METHOD_ATEN, alias=True),
    *_named(("t",), "layout", _ATEN, alias=True),
    *_entries(("movedim",), "layout", alias=True),
    *_entries(("_unsafe_view",), "view", "reshape", where=_METHOD_ATEN),
    *_named(("chunk", "split"), "view", _ALL, alias=True),
    *_entries(("split_with_sizes",), "view", "split", where=_METHOD_ATEN),
    *_named(("expand", "expand_as", "unbind"), "view", _METHOD_ATEN, alias=True),
    *_named(("tensor_split", "repeat"), "view", _METHOD_ATEN),
    *_entries(("view_as", "narrow", "as_strided"), "view", alias=True),
    *_entries(("select",), "view", "select", where=_ATEN, alias=True),
    *_entries(("slice",), "view", "slice", where=_ATEN),
    *_entries(("alias",), "view", "pass", where=_ATEN),
    *_entries(("getitem",), "view", "getitem", where=_FN, alias=True),
    *_named(("cat",), "cat", ("function", "aten")),
    *_named(("stack",), "stack", ("function", "aten")),
    *_entries(("concat", "concatenate"), "cat", "cat", where=_FN),
    *_entries(("matmul",), "matmul", "matmul", where=_ALL),
    *_entries(("bmm",), "matmul", "matmul", where=_ALL),
    *_entries(("einsum",), "matmul", "matmul", where=_FN),
    *_entries(("mm", "addmm"), "matmul", "matmul", where=_ATEN),
    *_entries(("scaled_dot_product_attention",), "attention", "sdpa", where=("function", "aten")),
    *_entries(("linear",), "linear", "functional_layer", where=("function", "aten")),
    *_entries(("bilinear",), "linear"),
    *_entries(("conv2d",), "conv", "functional_layer", where=("function", "aten")),
    *_entries(("conv1d",), "conv", "functional_layer", where=_FN),
    *_entries(("conv3d",), "conv"),
    *_entries(("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"), "conv_transpose"),
    *_entries(("batch_norm", "group_norm"), "norm", "functional_layer", where=_FN),
    *_entries(("layer_norm",), "norm", "layer_norm_fn", where=("function", "aten")),
    *_entries(("pad",), "pad", "pad", where=_FN),
    *_entries(("constant_pad_nd",), "pad", "pad", where=_ATEN),
    *_entries(("where",), "select", "where", where=_FN),
]

OPS = OpTable()
for _key, _op in _BUILTIN:
    if OPS.add(_key, _op) is not None:
        raise AssertionError(f"op {_key!r} is listed twice in the op table")
