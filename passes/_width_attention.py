"""Attention handlers of `find_width_groups` (Rules 18-20): head splits, channel splits of a fused
projection, batched matrix products and scaled-dot-product attention over heads. Rules are
numbered as in `find_width_groups`."""
from __future__ import annotations

import math

from passes._width_ops import HINT_FREEZE, TDesc, D, _meet_other, _norm_dim, shape
from passes._width_rules import Desc, Seg, arg, is_node, whole

HINT_HEADS = ("attention is elastic in whole heads when q/k/v come from linears, heads are "
              "split off the last axis as (..., heads, head_size) and meet only in batched "
              "matrix products over the heads axis; " + HINT_FREEZE)


def split_heads(st, node, d: Desc, s, out):
    """Rule 18: a reshape of the last (channel) axis into ``(outer..., heads, head_size)``.

    The channel space becomes ``outer`` copies of a new heads space of ``heads`` units, each
    ``head_size`` channels wide (fused QKV: outer = 3); the output carries the heads axis."""
    axis = d.axis
    if axis != len(s) - 1 or len(d.segs) != 1 or d.segs[0].inner != 1 or not whole(st, d.segs[0]) \
            or tuple(out[:axis]) != tuple(s[:axis]) or len(out) - axis < 2:
        return None
    *outer, heads, size = out[axis:]
    if heads < 2 or size < 2 or math.prod(out[axis:]) != s[axis]:
        return None
    h = st.new_space(heads, node.name)
    st.heads[h.space] = size
    st.refine_(d.segs[0], (Seg(h.space, heads, size),) * math.prod(outer), node.name)
    return Desc(axis + len(outer), (h,))


def split_channels(st, node, d: Desc, sizes: list[int]):
    """Rule 19: a split of a plain channel axis into pieces makes each piece a space of its own
    (a fused QKV projection split into q, k and v). The pieces must end up in one group of one
    size (the emitter makes the split a chunk); otherwise they are frozen and reported."""
    if len(d.segs) != 1 or d.segs[0].inner != 1 or not whole(st, d.segs[0]) \
            or sum(sizes) != d.length or len(sizes) < 2:
        return None
    parts = tuple(st.new_space(n, node.name) for n in sizes)
    st.refine_(d.segs[0], parts, node.name)
    st.layouts.append((node.name, "split", d.axis, parts))
    return TDesc(tuple(Desc(d.axis, (p,)) for p in parts))


def piece_sizes(st, node, total: int) -> list[int]:
    kind, n = st.ir.info(node.name).kind, len(st.ir.info(node.name).tuple_shapes or ())
    size = arg(node, 1, "split_size_or_sections" if kind == "split" else "chunks")
    if kind == "chunk" or (kind == "tensor_split" and isinstance(size, int)):
        return [total // n] * n if n and total % n == 0 else []
    if isinstance(size, int):
        return [size] * (total // size) if size > 0 and total % size == 0 else []
    return list(size) if isinstance(size, (list, tuple)) and all(isinstance(v, int) for v in size) \
        else []


def on_matmul(st, node):  # Rule 20: batched products over the heads axis
    a, b = (arg(node, 0, "input"), arg(node, 1, "other"))
    if st.ir.info(node.name).kind in ("addmm",):
        a, b = arg(node, 1, "mat1"), arg(node, 2, "mat2")
    out = st.ir.info(node.name).shape
    ops = [(x, D(st, x), shape(st, x)) for x in (a, b) if is_node(x)]
    carriers = [(x, dd, s) for x, dd, s in ops if isinstance(dd, Desc)]
    if not carriers:
        return None
    if out is None or len(ops) != 2 or any(len(s) < 3 for _, _, s in ops):
        return _refuse(st, node, [dd for _, dd, _ in carriers])
    axes = {len(out) - len(s) + dd.axis for _, dd, s in carriers}
    if len(axes) != 1 or any(dd.axis >= len(s) - 2 for _, dd, s in carriers):
        return _refuse(st, node, [dd for _, dd, _ in carriers])
    first = carriers[0][1]
    if len(carriers) == 2 and not st.unite_segs(first, carriers[1][1]):
        return _refuse(st, node, [dd for _, dd, _ in carriers])
    axis = axes.pop()
    for x, dd, s in ops:
        _meet_other(st, node, x, dd, s, axis - (len(out) - len(s)), first)
    return Desc(axis, first.segs)


def on_sdpa(st, node):  # Rule 20: scaled_dot_product_attention(q, k, v, mask) over heads
    q, k, v = (arg(node, i, n) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    mask = arg(node, 3, "attn_mask")
    descs = [D(st, x) for x in (q, k, v)]
    carriers = [dd for dd in descs if isinstance(dd, Desc)]
    if not carriers:
        return None
    nd = len(shape(st, q))
    if len(carriers) != 3 or len({dd.axis for dd in carriers}) != 1 or carriers[0].axis >= nd - 2 \
            or isinstance(D(st, mask), Desc):
        return _refuse(st, node, carriers + ([D(st, mask)] if isinstance(D(st, mask), Desc) else []))
    first = carriers[0]
    for dd in carriers[1:]:
        if not st.unite_segs(first, dd):
            return _refuse(st, node, carriers)
    if is_node(mask):
        ms = shape(st, mask)
        _meet_other(st, node, mask, D(st, mask), ms, first.axis - (nd - len(ms)), first)
    return Desc(first.axis, first.segs)


def _refuse(st, node, touched):
    st.unsupported_(node.name, "Rule 13", "matrix product of channel-carrying tensors "
                    "other than over the heads axis of attention", HINT_HEADS, touched)
    return None


def on_select(st, node):  # Rule 10: aten.select(x, dim, index)
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    if not isinstance(d, Desc):
        return None
    dim = _norm_dim(arg(node, 1, "dim"), len(s))
    if dim == d.axis:
        st.unsupported_(node.name, "Rule 10", "indexing selects channels", HINT_FREEZE, [d])
        return None
    return Desc(d.axis - (dim < d.axis), d.segs)


def on_slice(st, node):  # Rule 10: aten.slice(x, dim, start, end, step)
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    if not isinstance(d, Desc):
        return None
    dim = _norm_dim(arg(node, 1, "dim", 0), len(s))
    out = st.ir.info(node.name).shape
    if dim == d.axis and (out is None or out[dim] != s[dim]):
        st.unsupported_(node.name, "Rule 10", "slicing selects channels", HINT_FREEZE, [d])
        return None
    return d


def on_t(st, node):  # Rule 9: 2-D transpose
    d = D(st, node.args[0])
    if isinstance(d, Desc) and len(shape(st, node.args[0])) == 2:
        return Desc(1 - d.axis, d.segs)
    return None
