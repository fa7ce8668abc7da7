"""find_width_groups: which channels must shrink together (width-dependency groups).

Every tensor axis that carries channels holds a *channel space*; spaces are united with
union-find (linear in graph size, closed-form index maps, no path enumeration). A `WidthGroup`
is one united space: its producers' output channels, its consumers' input channels, its norms
and direct parameters all keep one width.

Rules:
  1. Producers: conv (1d/2d/3d, groups=1) output channels and linear output features create a space.
  2. Consumers: conv input channels and linear input features (the last axis) read a space; a
     linear over a non-channel axis leaves the channels where they are and is not elastic.
  3. A depthwise conv (groups == in == out channels) unites its input and output spaces.
  3b. A grouped conv (1 < groups, not depthwise) keeps its group count G and shrinks every group
      alike: its input space becomes G copies of a per-group space, its output G copies of
      another (index maps). Such a group (``groups == G``) counts channels *per conv group*; its
      choices are the totals of Rule 15 that are multiples of G, divided by G.
  4. Channel-preserving ops pass a space through: activations, dropout, pooling, interpolation,
     pad (not along channels), identity, casts, softmax, scalar arithmetic, and train-time ops:
     stochastic depth / drop path, ``*_like`` constructors and ``bernoulli_`` of a per-sample mask.
  5. Norms are members of the space they normalise: batch/instance norm on axis 1, layer norm
     over the last axis (modules or F.layer_norm with parameters), group norm with widths kept
     multiples of its channels per group.
  6. Binary elementwise ops (add, sub, mul, div, ...) unite the spaces of operands that both
     carry channels at the same output axis, broadcasts such as squeeze-excitation's
     ``x * s`` (s of shape N,C,1,1) included.
  7. Concat along the channel axis makes an ordered composite of its inputs' spaces: each input
     keeps its group and consumers see an index map; concat along another axis unites them.
  8. Flatten of (C, H, W) maps channel i to features [i*H*W, (i+1)*H*W) (``inner`` = H*W).
  9. Permute and transpose move the channel axis; it is tracked.
  10. Reductions, indexing, (un)squeeze and expand over other axes shift the channel axis;
      indexing channels only to shape a ``*_like`` mask (``empty_like(x[:, :1, :1, :1])``)
      gives a fixed one-channel tensor.
  11. Direct parameters (get_attr: class token, position embedding, layer scale) that meet a
      channel space elementwise, by concat or as norm weights become members sliced on that dim.
  12. Model inputs are fixed-channel tensors; the spaces of the model's outputs are frozen.
  13. Anything not understood (grouped convs, channel split/chunk, matmul of channel-carrying
      tensors, unknown modules or functions touching channels) freezes the spaces it touches
      and is recorded as `Unsupported`; a tensor of fixed channels meeting a space freezes it.
  14. view/reshape keep a space when the channel axis survives or merges with trailing axes;
      one that splits it (attention heads, channel shuffle) or hard-codes its size is Rule 13.
  15. Width choices descend from the original width: ``width_step`` steps, else
      ``width_multipliers``; rounded to multiples of ``width_divisor`` (and of a group norm's
      channels per group), at least ``min_width``, at most ``max_num_widths`` choices.
  16. A channel count read at run time (``x.shape[c]``, ``x.size(c)``, arithmetic on them) may
      only shape a reshape of that same tensor at its channel position; feeding it anywhere
      else (another tensor's reshape, as attention does with ``C // heads``, a new tensor's
      size) freezes the spaces it was read from.
  17. A module called at several nodes has one weight: the spaces its calls read (and write)
      are united (calls with different channel layouts are Rule 13).
  18. Attention heads: a reshape of the last (channel) axis into ``(outer..., heads, head_size)``
      makes the space ``outer`` copies of a *heads* space of ``heads`` units, each ``head_size``
      channels wide (segments with ``inner = head_size``; fused QKV has outer = 3). A heads group
      (``kind == "heads"``) keeps whole heads: choices are head counts, from
      ``width_multipliers`` (or every count with ``width_step``), at least 1.
  19. A split/chunk of a plain channel axis into pieces (a fused QKV projection split into q, k
      and v) makes each piece a space of its own; the producer sees their concatenation.
  21. Ops registered in `compiler.ops` (globally with ``register_op`` or for one run through
      ``op_rules``) follow their registered behaviour: channel-preserving, elementwise, frozen
      (full width, with the reason, no record) or a custom rule.
  20. Batched matrix products and scaled-dot-product attention unite the spaces their operands
      carry on one batch axis (the heads axis of q, k and v); a channel on a matrix axis is
      Rule 13. A space refined two different ways (Rules 18-19) is frozen.
  22. Channel shuffle and splits of concatenated channels are index maps (ShuffleNet). A
      reshape ``(C) -> (G, C / G)`` of the channel axis, a transpose/permute of those two axes,
      ``contiguous`` and a reshape merging them back move channel ``g * C/G + i`` to
      ``i * G + g``; a chunk/split of an axis made of several segments (a concat, a shuffle)
      cuts it at fixed positions. Spaces are not refined: a tensor's axis is described channel
      by channel as *parts* of spaces (``Segment.start``), so every conv keeps one width group,
      and the result lists each shuffle and split as a `Relayout` (the emitter replaces them by
      a gather and a width-following split). Such a group keeps its channels in their order
      (`reorder_channels` leaves it), and its choices keep every piece of a split non-empty.
      Anything else done to the two-axis intermediate is Rule 13.

Unsupported (frozen and reported; ``strict=True`` raises one error listing them all):
  - a grouped convolution fed by concatenated channels;
  - reshapes that split channels other than attention heads off the last axis or a channel
    shuffle's ``(G, C / G)`` (Rule 22), and ops other than a shuffle's on those two axes;
  - matmul/einsum over a channel-carrying matrix axis; grouped-query attention (k/v with fewer
    heads than q);
  - functional conv/linear/batch-norm with graph weights; unknown modules and functions;
  - reductions over the channel axis; operands whose channel layouts differ;
  - a module called at several nodes with different channel layouts.

Example:
    >>> import torch.nn as nn, torch
    >>> from compiler.capture import capture
    >>> m = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1))
    >>> wg = find_width_groups(capture(m, torch.zeros(1, 3, 8, 8)))
    >>> [(g.name, g.size, g.frozen, g.choices) for g in wg.groups]
    [('0', 16, False, (16, 8)), ('3', 8, True, (8,))]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from compiler.ir import IRGraph
from compiler.ops import local_rules
from passes._width_layout import HANDLERS
from passes._width_ops import on_unknown
from passes._width_rules import Desc, Seg, State, classify, cut_segs, rest_args, whole
from passes._width_shuffle import grid_misuse, min_active
from passes.unsupported import Unsupported, raise_if_strict

__all__ = ["GroupingConfig", "Segment", "ChannelUse", "Relayout", "WidthGroup", "WidthGroups",
           "find_width_groups", "width_choices", "heads_choices"]


@dataclass(frozen=True, kw_only=True)
class GroupingConfig:
    """Width options (Rule 15) and strictness."""
    max_num_widths: int = 4
    min_width: int = 8
    width_step: int | None = None
    width_multipliers: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    width_divisor: int = 8
    strict: bool = False
    op_rules: tuple = ()  # ((target, behaviour), ...): see compiler.ops

    def __post_init__(self):
        rules = self.op_rules.items() if isinstance(self.op_rules, dict) else self.op_rules
        object.__setattr__(self, "op_rules", tuple((k, v) for k, v in rules))
        if self.max_num_widths < 1 or self.min_width < 1 or self.width_divisor < 1:
            raise ValueError("max_num_widths, min_width and width_divisor must be >= 1")
        if self.width_step is not None and self.width_step < 1:
            raise ValueError(f"width_step must be >= 1 or None, got {self.width_step}")
        if not self.width_multipliers or any(not 0 < m <= 1 for m in self.width_multipliers):
            raise ValueError(f"width_multipliers must lie in (0, 1], got {self.width_multipliers}")


@dataclass(frozen=True)
class Segment:
    """``size`` channels of `group` along an axis, each repeated ``inner`` times (Rule 8);
    channels ``[start, start + size)`` of the group for a part (Rule 22)."""
    group: str
    size: int
    inner: int = 1
    start: int = 0


@dataclass(frozen=True)
class Relayout:
    """Rule 22: `node` re-lays out the channels of `source` along `dim`, whose segments are
    `segments`: ``kind == "permute"``: output channel p is input channel ``index[p]``;
    ``kind == "split"``: pieces of ``sizes`` channels (its outputs are the tuple items)."""
    kind: str
    node: str
    source: str
    dim: int
    segments: tuple[Segment, ...]
    index: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "node": self.node, "source": self.source, "dim": self.dim,
             "groups": list(dict.fromkeys(s.group for s in self.segments))}
        return d | ({"sizes": list(self.sizes)} if self.kind == "split" else {})


@dataclass(frozen=True)
class ChannelUse:
    """How a layer or parameter sees channels: its axis `dim` is the concatenation of segments.

    role: ``out`` (producer: weight dim 0 and bias), ``in`` (consumer: weight dim 1),
    ``dw`` (depthwise: dim 0 of weight and bias), ``norm`` (weight, bias, running stats),
    ``param`` (a direct parameter, `node` being its get_attr node, sliced on `dim`).
    """
    node: str
    role: str
    dim: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class WidthGroup:
    name: str
    size: int
    producers: tuple[str, ...]
    members: tuple[tuple[str, str, int], ...]   # (node, role, offset of this group in its axis)
    choices: tuple[int, ...]
    frozen: bool
    reasons: tuple[str, ...]
    multiple_of: int = 1
    kind: str = "width"  # "heads" (Rule 18): size and choices count heads of `head_size` channels
    head_size: int = 1
    groups: int = 1  # Rule 3b: size and choices count channels per group of a grouped conv

    def to_dict(self) -> dict:
        d = {"name": self.name, "size": self.size, "producers": list(self.producers),
             "members": [list(m) for m in self.members], "choices": list(self.choices),
             "frozen": self.frozen, "reasons": list(self.reasons),
             "multiple_of": self.multiple_of}
        if self.kind != "width":
            d.update(kind=self.kind, head_size=self.head_size)
        if self.groups != 1:
            d.update(groups=self.groups)
        return d


@dataclass(frozen=True)
class WidthGroups:
    groups: tuple[WidthGroup, ...]
    uses: tuple[ChannelUse, ...]
    unsupported: tuple[Unsupported, ...]
    config: GroupingConfig = field(default_factory=GroupingConfig)
    layouts: tuple[ChannelUse, ...] = ()  # reshapes: where their output carries channels
    relayouts: tuple[Relayout, ...] = ()  # Rule 22: channel shuffles and splits

    @property
    def elastic(self) -> tuple[WidthGroup, ...]:
        return tuple(g for g in self.groups if not g.frozen)

    def group(self, name: str) -> WidthGroup:
        return next(g for g in self.groups if g.name == name)

    def uses_of(self, node: str) -> tuple[ChannelUse, ...]:
        return tuple(u for u in self.uses if u.node == node)

    def log10_size(self) -> float:
        return sum(math.log10(len(g.choices)) for g in self.elastic)

    def why(self, node: str) -> list[str]:
        """Human-readable reasons for how `node`'s channels are grouped or frozen."""
        lines = [f"{u.role} channels (dim {u.dim}): " + " + ".join(
            f"{s.group}[{s.size}{'x' + str(s.inner) if s.inner > 1 else ''}]"
            for s in u.segments) for u in self.uses_of(node)]
        names = {s.group for u in self.uses_of(node) for s in u.segments}
        for g in self.groups:
            if g.name in names:
                state = "frozen: " + "; ".join(g.reasons) if g.frozen else \
                    f"elastic, choices {list(g.choices)}"
                lines.append(f"group {g.name} ({g.size} ch, producers {list(g.producers)}): "
                             f"{state}")
        lines += [f"unsupported: {u}" for u in self.unsupported if u.node == node]
        return lines

    def to_dict(self) -> dict:
        d = {"groups": [g.to_dict() for g in self.groups],
             "unsupported": [u.to_dict() for u in self.unsupported]}
        return d | ({"relayouts": [r.to_dict() for r in self.relayouts]} if self.relayouts else {})


def width_choices(size: int, cfg: GroupingConfig, multiple_of: int = 1) -> tuple[int, ...]:
    """Rule 15: descending width choices for a group of `size` channels."""
    unit = math.lcm(cfg.width_divisor, multiple_of)
    if cfg.width_step is not None:
        raw = range(size, 0, -cfg.width_step)
    else:
        raw = (size * m for m in cfg.width_multipliers)
    out = [size]
    for w in raw:
        w = max(unit, int(w / unit + 0.5) * unit)
        if w < cfg.min_width or w > size or size % multiple_of or w % multiple_of:
            continue
        if w not in out:
            out.append(w)
    return tuple(sorted(out, reverse=True)[:cfg.max_num_widths])


def heads_choices(heads: int, cfg: GroupingConfig) -> tuple[int, ...]:
    """Rule 18: descending head counts for a heads group."""
    raw = range(heads, 0, -cfg.width_step) if cfg.width_step is not None else \
        (max(1, int(heads * m + 0.5)) for m in cfg.width_multipliers)
    return tuple(sorted({heads, *raw}, reverse=True)[:cfg.max_num_widths])


def find_width_groups(ir: IRGraph, *, cfg: GroupingConfig = GroupingConfig()) -> WidthGroups:
    """Union the channel spaces of `ir` into width groups (rules in the module docstring)."""
    st = State(ir)
    rules = local_rules(cfg.op_rules) if cfg.op_rules else None
    for name in ir.names:
        node = ir.fx_node(name)
        kind = classify(node, ir, rules)
        if grid_misuse(st, node, kind):  # Rule 22
            st.desc[name] = None
            continue
        handler = kind if callable(kind) else HANDLERS.get(kind, on_unknown)  # compiler.ops
        st.desc[name] = handler(st, node)
        relaid = bool(st.relayouts) and st.relayouts[-1][1] == name
        if kind == "reshape" and isinstance(st.desc[name], Desc) and not relaid:
            st.layouts.append((name, "reshape", st.desc[name].axis, st.desc[name].segs))
        _check_size_reads(st, node, kind)
    _unite_shared_modules(st)
    result = _assemble(st, cfg)
    raise_if_strict(cfg.strict, "find_width_groups", result.unsupported)
    return result


def _unite_shared_modules(st: State) -> None:
    """Rule 17: a module called at several nodes has one weight, so the channel spaces its
    calls see on each axis are one."""
    seen: dict[tuple[str, str], tuple] = {}
    for node, role, dim, segs in st.uses:
        info = st.ir.info(node)
        if info.op != "call_module":
            continue
        key = (info.module_path, "in" if role == "in" else "out")
        if key not in seen:
            seen[key] = (node, segs)
        elif not st.unite_segs(Desc(0, seen[key][1]), Desc(0, segs)):
            st.unsupported_(node, "Rule 17", f"{info.module_path} is called with different "
                            "channel layouts", "call it once, or mark it frozen",
                            [Desc(0, seen[key][1]), Desc(0, segs)])


def _check_size_reads(st: State, node, kind: str) -> None:
    """Rule 16: a channel count read at run time may only reshape its own tensor."""
    if kind in ("meta", "getitem") or (kind == "binary" and st.ir.info(node.name).shape is None):
        return
    reads = [(i, a) for i, a in enumerate(node.args) if getattr(a, "name", None) in st.derived]
    reads += [(i, a) for i, v in enumerate(node.args) if isinstance(v, (tuple, list))
              for a in v if getattr(a, "name", None) in st.derived]
    if not reads:
        return
    first = node.args[0] if node.args else None
    out, src = st.desc.get(node.name), st.desc.get(getattr(first, "name", None))
    own = {st.find(s.space) for s in getattr(src, "segs", ())}
    for _, a in reads:
        segs = st.derived[a.name]
        if kind == "reshape" and out is not None and own == {st.find(s.space) for s in segs} \
                and _shape_position(node, a) == out.axis:
            continue
        st.freeze(Desc(0, segs), f"its channel count is read at run time and used by "
                                 f"{st.ir.label(node.name)}")


def _shape_position(node, a) -> int | None:
    return next((i for i, v in enumerate(rest_args(node, "shape")) if v is a), None)


def _resolve_refinements(st: State) -> dict[int, tuple]:
    """Rules 18-20: {root: parts} once every union is known; two different refinements of one
    space freeze it, equal ones unite their parts."""
    found: dict[int, tuple] = {}
    for space, parts, node in st.refine:
        r = st.find(space)
        if r not in found:
            found[r] = parts
        elif not st.unite_segs(Desc(0, found[r]), Desc(0, parts)):
            st.freeze(Desc(0, (Seg(r, st.size[r]),) + found[r] + parts),
                      f"its channels are split two different ways (at {st.ir.label(node)})")
    refined = {st.find(r): parts for r, parts in found.items()}
    for r, parts in refined.items():  # a frozen space freezes its parts
        if st.frozen.get(st.find(r)):
            st.freeze(Desc(0, parts), st.frozen[st.find(r)][0])
    return refined


def _check_splits(st: State) -> None:
    """Rule 19: a channel split is elastic when its pieces are one group of one size."""
    for node, role, _, segs in st.layouts:
        if role == "split" and (len({st.find(s.space) for s in segs}) != 1
                                or len({(s.size, s.inner) for s in segs}) != 1):
            st.unsupported_(node, "Rule 19", "a channel split whose pieces keep different "
                            "widths", "only equal pieces that shrink together (q, k, v of one "
                            "attention) are elastic", [Desc(0, segs)])


def _expand(st: State, refined: dict, segs) -> tuple:
    out = []
    for seg in segs:
        parts = refined.get(st.find(seg.space))
        if parts is not None and not whole(st, seg):  # Rule 22: a part of a refined space
            cut = cut_segs(parts, seg.start, seg.start + seg.size)
            if cut is None:
                st.freeze(Desc(0, (seg,) + parts), "a part of its channels meets a refinement "
                          "(heads, grouped conv) that does not align with it")
                out.append(seg)
                continue
            parts = cut
        if parts is None:
            out.append(seg)
        else:
            out += _expand(st, refined, [Seg(p.space, p.size, p.inner * seg.inner, p.start)
                                         for p in parts])
    return tuple(out)


def _nonempty_pieces(st: State, choices: dict[int, tuple]) -> None:
    """Rule 22: no piece of a split may lose all its channels. While one would at the smallest
    widths, the space of its first elastic segment drops the choices that empty it."""
    for kind, node, _, _, segs, sizes in st.relayouts:
        if kind != "split":
            continue
        bounds = [0]
        for n in sizes:
            bounds.append(bounds[-1] + n)
        for a, b in zip(bounds, bounds[1:]):
            piece = cut_segs(segs, a, b) or ()
            while piece:
                lowest = {r: min(c) for r, c in choices.items()}
                if min_active(piece, lowest, st.find) > 0:
                    break
                seg = min((s for s in piece if len(choices.get(st.find(s.space), ())) > 1),
                          key=lambda s: s.start, default=None)
                if seg is None:
                    break
                r = st.find(seg.space)
                choices[r] = tuple(c for c in choices[r] if c > seg.start) or choices[r][:1]
                if len(choices[r]) == 1:
                    st.frozen.setdefault(r, []).append(
                        f"a smaller width would empty a piece of the split at {st.ir.label(node)}")


def _assemble(st: State, cfg: GroupingConfig) -> WidthGroups:
    order = {n: i for i, n in enumerate(st.ir.names)}
    refined = _resolve_refinements(st)
    st.uses = [(n, role, dim, _expand(st, refined, segs)) for n, role, dim, segs in st.uses]
    st.layouts = [(n, role, axis, _expand(st, refined, segs)) for n, role, axis, segs in st.layouts]
    st.relayouts = [(kind, n, src, axis, _expand(st, refined, segs), v)
                    for kind, n, src, axis, segs, v in st.relayouts]
    _check_splits(st)
    heads, grouped = {}, {}
    for space, size in st.heads.items():
        heads.setdefault(st.find(space), set()).add(size)
    for space, g in st.grouped.items():
        grouped.setdefault(st.find(space), set()).add(g)
    by_root: dict[int, list] = {}
    for node, role, dim, segs in st.uses:
        offset, parted = 0, set()
        for seg in segs:
            r = st.find(seg.space)
            if whole(st, seg) or r not in parted:  # Rule 22: a space's parts once, at the first
                by_root.setdefault(r, []).append((node, role, offset))
            if not whole(st, seg):
                parted.add(r)
            offset += seg.size * seg.inner
    names = {r: _group_name(st, r, m) for r, m in by_root.items()}
    found = []
    for r, members in sorted(by_root.items(), key=lambda kv: min(order[m[0]] for m in kv[1])):
        if len(heads.get(r, ())) > 1:
            st.freeze(Desc(0, (Seg(r, st.size[r]),)), "heads of different sizes meet")
        reasons = tuple(dict.fromkeys(st.frozen.get(r, ())))
        mult = st.multiple_of.get(r, 1)
        if len(grouped.get(r, ())) > 1:
            st.freeze(Desc(0, (Seg(r, st.size[r]),)), "grouped convs of different group counts")
            reasons = tuple(dict.fromkeys(st.frozen.get(r, ())))
        if r in heads:  # Rule 18
            choices = (st.size[r],) if reasons else heads_choices(st.size[r], cfg)
            extra = dict(kind="heads", head_size=min(heads[r]))
        elif r in grouped:  # Rule 3b
            g = min(grouped[r])
            choices = (st.size[r],) if reasons else tuple(
                w // g for w in width_choices(st.size[r] * g, cfg, math.lcm(mult, g)))
            extra = dict(groups=g)
        else:
            choices = (st.size[r],) if reasons else width_choices(st.size[r], cfg, mult)
            extra = {}
        found.append((r, members, choices, reasons, mult, extra))
    choices = {r: c for r, _, c, _, _, _ in found}
    _nonempty_pieces(st, choices)  # Rule 22
    groups = []
    for r, members, _, reasons, mult, extra in found:
        reasons = tuple(dict.fromkeys(st.frozen.get(r, ())))
        members = sorted(set(members), key=lambda m: (order[m[0]], m[1], m[2]))
        producers = tuple(m[0] for m in members if m[1] == "out")
        groups.append(WidthGroup(names[r], st.size[r], producers, tuple(members), choices[r],
                                 bool(reasons), reasons, mult, **extra))
    uses = tuple(_use(st, names, u) for u in st.uses)
    layouts = tuple(ChannelUse(n, role, axis, _segments(st, names, segs))
                    for n, role, axis, segs in st.layouts)
    relayouts = tuple(Relayout(kind, n, src, axis, _segments(st, names, segs),
                               **({"sizes": v} if kind == "split" else {"index": v}))
                      for kind, n, src, axis, segs, v in st.relayouts)
    return WidthGroups(tuple(groups), uses, tuple(st.unsupported), cfg, layouts, relayouts)


def _segments(st, names, segs) -> tuple[Segment, ...]:
    return tuple(Segment(names.get(st.find(s.space), ""), s.size, s.inner, s.start) for s in segs)


def _use(st, names, u) -> ChannelUse:
    node, role, dim, segs = u
    return ChannelUse(node, role, dim, _segments(st, names, segs))


def _group_name(st: State, root: int, members) -> str:
    """The first producer's module path (or fx name); ``input:x`` for model inputs."""
    order = {n: i for i, n in enumerate(st.ir.names)}
    producers = sorted((m[0] for m in members if m[1] == "out"), key=order.get)
    if producers:
        info = st.ir.info(producers[0])
        return info.module_path or info.name
    origin = st.origin[root]
    info = st.ir.info(origin)
    prefix = "input:" if info.op == "placeholder" else ""
    return prefix + (info.module_path or info.name)


