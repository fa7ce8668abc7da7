"""Per-op channel rules of `find_width_groups` (its docstring is the spec; rules cited as "# Rule N").

Channel spaces are union-find elements (ints). A tensor that carries channels has a `Desc`: the
axis holding them and the ordered segments that axis is made of (one segment for a plain tensor,
several after a concat). A parameter read by ``get_attr`` has a `PDesc` until it meets a channel
space. ``None`` means a tensor whose channels are fixed (or that has no channel axis).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from compiler.ir import IRGraph
from compiler.ops import OPS, local_rule
from runtime.elastic.optable import spelling
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


# ---------------------------------------------------------------- helpers
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


def classify(node, ir: IRGraph, rules=None) -> str | object:
    """The width rule family of an fx node, from the op table (`compiler.ops.OPS`); a rule given
    for this compilation (`rules`, from `compiler.ops.local_rules`) comes first, and a custom
    rule is returned as the callable itself. Ops the table does not know are ``"unknown"``."""
    if node.op in ("placeholder", "get_attr", "output"):
        return node.op
    obj = ir.module(node.target) if node.op == "call_module" else \
        node.target if node.op == "call_function" else None
    name = ir.info(node.name).kind
    found = local_rule(obj, name, rules)
    if found is not None:
        return found
    if node.op == "call_module":
        op = OPS.of_module(obj)
    else:
        op = OPS.of_function(obj) if obj is not None else None
        if op is None:
            op = OPS.of_name(name, spelling(node.target, node.op))
    return op.width if op is not None and op.width is not None else "unknown"
