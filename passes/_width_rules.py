"""Per-op channel rules of `find_width_groups` (its docstring is the spec; rules cited as "# Rule N").

Channel spaces are union-find elements (ints). A tensor that carries channels has a `Desc`: the
axis holding them and the ordered segments that axis is made of (one segment for a plain tensor,
several after a concat). A parameter read by ``get_attr`` has a `PDesc` until it meets a channel
space. ``None`` means a tensor whose channels are fixed (or that has no channel axis).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from compiler.ir import IRGraph
from compiler.ops import (BINARY_NAMES, META_NAMES, NEW_NAMES, PASS_MODULES, PASS_NAMES,
                          REDUCE_NAMES, SPATIAL_MODULES, behaviour_of)
from passes.unsupported import Unsupported


@dataclass(frozen=True)
class Seg:
    """``size`` channels of a space, each repeated ``inner`` times; channels
    ``[start, start + size)`` of it behind a shuffle or a split of concatenated channels."""
    space: int
    size: int
    inner: int = 1
    start: int = 0


@dataclass(frozen=True)
class Desc:
    axis: int
    segs: tuple[Seg, ...]

    @property
    def length(self) -> int:
        return sum(s.size * s.inner for s in self.segs)


@dataclass(frozen=True)
class Grid:
    """Rule 22: channels split over two axes by a reshape ``(C) -> (G, C / G)`` on the way to a
    channel shuffle: ``pieces[g]`` is at index g of axis `outer`, each indexed along `axis`
    (where the per-piece count is), of the tensor `source` the reshape split."""
    outer: int
    axis: int
    pieces: tuple[tuple[Seg, ...], ...]
    source: str

    @property
    def segs(self) -> tuple[Seg, ...]:
        return tuple(s for p in self.pieces for s in p)


@dataclass(frozen=True)
class PDesc:
    """A direct parameter (``get_attr``): `dims[i]` is the parameter dim behind output dim i."""
    node: str
    dims: tuple[int | None, ...]


class State:
    """Union-find over channel spaces, plus what the rules record."""

    def __init__(self, ir: IRGraph):
        self.ir = ir
        self.parent: list[int] = []
        self.size: list[int] = []
        self.origin: list[str] = []          # the node that created each space
        self.frozen: dict[int, list[str]] = {}
        self.desc: dict[str, object] = {}
        self.uses: list[tuple[str, str, int, tuple[Seg, ...]]] = []  # (node, role, dim, segs)
        self.params: dict[tuple[str, int], tuple[Seg, ...]] = {}
        self.unsupported: list[Unsupported] = []
        self.multiple_of: dict[int, int] = {}
        self.derived: dict[str, tuple[Seg, ...]] = {}  # size values derived from channel counts
        self.refine: list[tuple[int, tuple[Seg, ...], str]] = []  # Rule 18: space -> its parts
        self.heads: dict[int, int] = {}  # Rule 18: heads space -> head size
        self.grouped: dict[int, int] = {}  # Rule 3b: per-group space -> conv groups
        # (node, role, axis, segs): "reshape" output axes, "split" inputs (Rules 14, 19)
        self.layouts: list[tuple[str, str, int, tuple[Seg, ...]]] = []
        # Rule 22: (kind, node, source, axis, source segs, index or sizes)
        self.relayouts: list[tuple[str, str, str, int, tuple[Seg, ...], tuple[int, ...]]] = []

    def new_space(self, size: int, origin: str, frozen: str | None = None) -> Desc:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.origin.append(origin)
        if frozen:
            self.frozen.setdefault(len(self.parent) - 1, []).append(frozen)
        return Seg(len(self.parent) - 1, size)

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.frozen.setdefault(ra, []).extend(self.frozen.pop(rb, []))
        if rb in self.multiple_of:
            self.multiple_of[ra] = _lcm(self.multiple_of.get(ra, 1), self.multiple_of.pop(rb))

    def freeze(self, d, reason: str) -> None:
        for seg in _segs(d):
            self.frozen.setdefault(self.find(seg.space), []).append(reason)

    def unsupported_(self, node: str, rule: str, reason: str, hint: str, touched=()) -> None:
        self.unsupported.append(Unsupported(node, rule, reason, hint))
        for d in touched:
            self.freeze(d, f"unsupported: {reason} at {self.ir.label(node)}")

    def unite_segs(self, a: Desc, b: Desc) -> bool:
        """Rule 6: unite two channel axes segment by segment; False if their layouts differ."""
        if [(s.size, s.inner, s.start, self.size[s.space]) for s in a.segs] != \
                [(s.size, s.inner, s.start, self.size[s.space]) for s in b.segs]:
            return False  # a part (Rule 22) meets only the same part of a space of its size
        for sa, sb in zip(a.segs, b.segs):
            self.union(sa.space, sb.space)
        return True


    def refine_(self, seg: Seg, parts: tuple[Seg, ...], node: str) -> None:
        """Rule 18: the channels of `seg`'s space are the concatenation of `parts`."""
        self.refine.append((seg.space, parts, node))


def cut_segs(segs, lo: int, hi: int) -> tuple[Seg, ...] | None:
    """Rule 22: the segments covering features ``[lo, hi)`` of the axis `segs` make (parts
    of the segments they cut); None when a cut falls inside a repeated channel (``inner``)."""
    out, offset = [], 0
    for s in segs:
        n = s.size * s.inner
        a, b = max(lo, offset), min(hi, offset + n)
        if a < b:
            if (a - offset) % s.inner or (b - offset) % s.inner:
                return None
            out.append(Seg(s.space, (b - a) // s.inner, s.inner, s.start + (a - offset) // s.inner))
        offset += n
    return tuple(out)


def whole(st, seg: Seg) -> bool:
    """Whether `seg` is all of its space (not a part behind a shuffle or split, Rule 22)."""
    return seg.start == 0 and seg.size == st.size[seg.space]


def unit_segs(segs) -> list[Seg] | None:
    """One segment per channel (None if a channel is repeated: ``inner > 1``)."""
    if any(s.inner != 1 for s in segs):
        return None
    return [Seg(s.space, 1, 1, s.start + i) for s in segs for i in range(s.size)]


def merge_segs(segs) -> tuple[Seg, ...]:
    """Adjacent segments of consecutive channels of one space, joined."""
    out: list[Seg] = []
    for s in segs:
        last = out[-1] if out else None
        if last is not None and last.space == s.space and last.inner == s.inner == 1 \
                and last.start + last.size == s.start:
            out[-1] = Seg(s.space, last.size + s.size, 1, last.start)
        else:
            out.append(s)
    return tuple(out)


def _segs(d) -> tuple[Seg, ...]:
    return d.segs if isinstance(d, (Desc, Grid)) else ()


def _lcm(a: int, b: int) -> int:
    import math
    return a * b // math.gcd(a, b)


# ---------------------------------------------------------------- op tables (compiler.ops)
_PASS_MODULES, _SPATIAL_MODULES = PASS_MODULES, SPATIAL_MODULES
_PASS_NAMES, _BINARY_NAMES, _REDUCE_NAMES, _META_NAMES = PASS_NAMES, BINARY_NAMES, REDUCE_NAMES, \
    META_NAMES
_BEHAVIOUR_KIND = {"channel_preserving": "pass", "elementwise": "binary", "frozen": "frozen"}
_LAYOUT_NAMES = {n: n for n in (
    "permute", "transpose", "reshape", "flatten", "chunk", "split", "expand", "unsqueeze",
    "squeeze", "expand_as", "unflatten", "tensor_split", "unbind", "repeat", "matmul")}
_LAYOUT_NAMES.update(view="reshape", _unsafe_view="reshape", bmm="matmul", split_with_sizes="split")
# ATen spellings (torch.export front end) of what the fx front end sees as methods or functions.
_ATEN_NAMES = {"scaled_dot_product_attention": "sdpa", "select": "select", "slice": "slice",
               "alias": "pass", "_assert_tensor_metadata": "meta", "sym_size": "meta",
               "cat": "cat", "stack": "stack", "layer_norm": "layer_norm_fn", "t": "t",
               "linear": "functional_layer", "conv2d": "functional_layer", "addmm": "matmul",
               "mm": "matmul", "constant_pad_nd": "pad"}


def arg(node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def rest_args(node, kwarg: str) -> tuple:
    """Arguments after the tensor, given as varargs (``x.view(a, b)``) or one sequence
    (``x.view((a, b))``), else the keyword `kwarg`."""
    rest = node.args[1:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        rest = tuple(rest[0])
    return rest or tuple(node.kwargs.get(kwarg, ()))


def is_node(x) -> bool:
    return isinstance(x, torch.fx.Node)


def tensor_args(node) -> list:
    return [a for a in node.all_input_nodes]


# Functions fx records by identity; names resolve the rest.
_FUNC_KIND = {operator.getitem: "getitem", torch.cat: "cat", torch.concat: "cat",
              torch.flatten: "flatten", torch.stack: "stack", F.layer_norm: "layer_norm_fn",
              F.pad: "pad", torch.permute: "permute", torch.transpose: "transpose",
              torch.reshape: "reshape", torch.chunk: "chunk", torch.split: "split",
              operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "matmul",
              torch.einsum: "matmul", F.linear: "functional_layer", F.conv2d: "functional_layer",
              F.conv1d: "functional_layer", F.batch_norm: "functional_layer",
              F.group_norm: "functional_layer", F.scaled_dot_product_attention: "sdpa",
              torch.unsqueeze: "unsqueeze", torch.squeeze: "squeeze", torch.where: "where"}
try:
    _FUNC_KIND[torch.concatenate] = "cat"
except AttributeError:  # older torch
    pass


def classify(node, ir: IRGraph, rules=None) -> str | object:
    """The rule family of an fx node; a registered behaviour (`compiler.ops`) comes first, and
    a custom rule is returned as the callable itself."""
    if node.op in ("placeholder", "get_attr", "output"):
        return node.op
    obj = ir.module(node.target) if node.op == "call_module" else \
        node.target if node.op == "call_function" else None
    found = behaviour_of(obj, ir.info(node.name).kind, rules)
    if found is not None:
        return _BEHAVIOUR_KIND.get(found, found)
    if node.op == "call_module":
        mod = ir.module(node.target)
        for types, kind in _MODULE_KINDS:
            if isinstance(mod, types):
                return kind
        return "unknown"
    kind = _FUNC_KIND.get(node.target) if node.op == "call_function" else None
    if kind:
        return kind
    name = ir.info(node.name).kind
    aten = isinstance(node.target, torch._ops.OpOverload)
    if (node.op == "call_method" or aten) and name in _LAYOUT_NAMES:
        return _LAYOUT_NAMES[name]
    if aten and name in _ATEN_NAMES:
        return _ATEN_NAMES[name]
    if name in _META_NAMES:
        return "meta"
    if name in NEW_NAMES:
        return "new"
    if name in _BINARY_NAMES:
        return "binary"
    if name in _PASS_NAMES:
        return "pass"
    if name in _REDUCE_NAMES:
        return "reduce"
    return "unknown"


_MODULE_KINDS = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv"),
    ((nn.Linear,), "linear"),
    ((nn.modules.batchnorm._BatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
     "batch_norm"),
    ((nn.GroupNorm,), "group_norm"),
    ((nn.LayerNorm,), "layer_norm"),
    (_PASS_MODULES, "pass"),
    (_SPATIAL_MODULES, "spatial"),
    ((nn.Flatten,), "flatten"),
]
