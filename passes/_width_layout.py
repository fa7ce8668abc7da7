"""Layout handlers of `find_width_groups`: ops that move, merge, split or drop axes
(flatten, view/reshape, permute/transpose, (un)squeeze, expand, indexing, reductions, splits).
Rules are numbered as in `find_width_groups`."""
from __future__ import annotations

import math

from passes._width_ops import HANDLERS_BASE, HINT_FREEZE, ShapeOf, TDesc, D, _norm_dim, shape
from passes._width_attention import (on_matmul, on_sdpa, on_select, on_slice, on_t, piece_sizes,
                                     split_channels, split_heads)
from compiler.ops import OPS
from passes._width_rules import Desc, Grid, PDesc, Seg, arg, is_node, rest_args
from passes._width_shuffle import cut_pieces, merge_grid, permute_grid, split_grid

HINT_RESHAPE = ("write the reshape with -1 or sizes read from x.shape, or keep that part frozen; "
                "attention-head and channel-shuffle reshapes are frozen by design")


def _with_inner(segs, inner):
    return tuple(Seg(s.space, s.size, s.inner * inner) for s in segs)


def on_flatten(st, node):  # Rule 8
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    if node.op == "call_module":
        mod = st.ir.module(node.target)
        start, end = mod.start_dim, mod.end_dim
    else:
        start, end = arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1)
    if not isinstance(d, Desc):
        return None
    start, end = _norm_dim(start, len(s)), _norm_dim(end, len(s))
    if d.axis < start:
        return d
    if d.axis > end:
        return Desc(d.axis - (end - start), d.segs)
    if math.prod(s[start:d.axis]) != 1:
        st.unsupported_(node.name, "Rule 8", "flatten merges the channel axis under a larger "
                        "outer axis (channels become strided)", HINT_RESHAPE, [d])
        return None
    return Desc(start, _with_inner(d.segs, math.prod(s[d.axis + 1:end + 1])))


def _reshape_target(s, out, axis):
    """(output dim, inner repeat) where the channel axis lands, or (None, 1) if it is split."""
    before = math.prod(s[:axis])
    tails = [math.prod(s[axis + 1:k]) for k in range(axis + 1, len(s) + 1)]
    for j in range(len(out)):
        if math.prod(out[:j]) == before and out[j] % s[axis] == 0 and out[j] // s[axis] in tails:
            return j, out[j] // s[axis]
    return None, 1


def on_reshape(st, node):  # Rule 14
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    out = st.ir.info(node.name).shape
    if isinstance(d, Grid):  # Rule 22: a channel shuffle's last view
        return merge_grid(st, node, d, s, out)
    if not isinstance(d, Desc):
        return None
    j, inner = _reshape_target(s, out, d.axis)
    heads = split_heads(st, node, d, s, out) if j is None else None
    if heads is not None:
        return heads
    grid = split_grid(st, node, d, s, out) if j is None else None
    if grid is not None:  # Rule 22: a channel shuffle's first view
        return grid
    if j is None:
        st.unsupported_(node.name, "Rule 14", f"reshape {tuple(s)} -> {tuple(out)} splits the "
                        "channel axis (e.g. attention heads or channel shuffle)", HINT_RESHAPE, [d])
        return None
    args = rest_args(node, "shape")
    if len(args) == len(out) and isinstance(args[j], int) and args[j] != -1 and out[j] > 1 \
            and not all(st.frozen.get(st.find(g.space)) for g in d.segs):
        st.unsupported_(node.name, "Rule 14", f"reshape hard-codes the channel count {args[j]}",
                        HINT_RESHAPE, [d])
        return None
    return Desc(j, _with_inner(d.segs, inner) if inner > 1 else d.segs)


def on_permute(st, node):  # Rule 9
    d = D(st, node.args[0])
    nd = len(st.ir.info(node.name).shape)
    perm = [_norm_dim(p, nd) for p in rest_args(node, "dims")]
    if isinstance(d, Grid):
        return permute_grid(d, perm)
    if isinstance(d, Desc):
        return Desc(perm.index(d.axis), d.segs)
    if isinstance(d, PDesc):
        return PDesc(d.node, tuple(d.dims[p] for p in perm))
    return None


def on_transpose(st, node):  # Rule 9
    d = D(st, node.args[0])
    nd = len(st.ir.info(node.name).shape)
    a, b = (_norm_dim(arg(node, i, n), nd) for i, n in ((1, "dim0"), (2, "dim1")))
    swap = {a: b, b: a}
    if isinstance(d, Grid):
        return permute_grid(d, [swap.get(k, k) for k in range(nd)])
    if isinstance(d, Desc):
        return Desc(swap.get(d.axis, d.axis), d.segs)
    if isinstance(d, PDesc):
        dims = list(d.dims)
        dims[a], dims[b] = dims[b], dims[a]
        return PDesc(d.node, tuple(dims))
    return None


def on_unsqueeze(st, node):  # Rule 10
    d = D(st, node.args[0])
    dim = _norm_dim(arg(node, 1, "dim"), len(st.ir.info(node.name).shape))
    if isinstance(d, Desc):
        return Desc(d.axis + (dim <= d.axis), d.segs)
    if isinstance(d, PDesc):
        return PDesc(d.node, d.dims[:dim] + (None,) + d.dims[dim:])
    return None


def on_squeeze(st, node):  # Rule 10
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    dim = arg(node, 1, "dim")
    dims = range(len(s)) if dim is None else ([dim] if isinstance(dim, int) else dim)
    gone = {_norm_dim(k, len(s)) for k in dims if s[_norm_dim(k, len(s))] == 1}
    if isinstance(d, Desc) and d.axis not in gone:
        return Desc(d.axis - sum(k < d.axis for k in gone), d.segs)
    if isinstance(d, PDesc):
        return PDesc(d.node, tuple(x for k, x in enumerate(d.dims) if k not in gone))
    return None


def on_expand(st, node):  # Rule 10: expand/repeat keep channels unless they repeat them
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    out = st.ir.info(node.name).shape
    off = len(out) - len(s)
    if isinstance(d, Desc):
        if out[d.axis + off] != d.length:
            st.unsupported_(node.name, "Rule 10", "repeat along the channel axis", HINT_FREEZE, [d])
            return None
        return Desc(d.axis + off, d.segs)
    if isinstance(d, PDesc):
        return PDesc(d.node, (None,) * off + d.dims)
    return None


def on_reduce(st, node):  # Rule 10
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    if not isinstance(d, Desc):
        return None
    if st.ir.info(node.name).shape is None:
        return on_split_like(st, node, None)
    dim = arg(node, 1, "dim")
    keep = arg(node, 2, "keepdim", False)
    dims = range(len(s)) if dim is None else ([dim] if isinstance(dim, int) else dim)
    dims = {_norm_dim(k, len(s)) for k in dims}
    if d.axis in dims:
        st.unsupported_(node.name, "Rule 10", "reduction over the channel axis", HINT_FREEZE, [d])
        return None
    return Desc(d.axis if keep else d.axis - sum(k < d.axis for k in dims), d.segs)


def on_split_like(st, node, _=None):  # Rule 13 (channel split) / Rule 10 (other axes)
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    n = len(st.ir.info(node.name).tuple_shapes or ())
    if not isinstance(d, Desc):
        return TDesc((None,) * n)
    kind = st.ir.info(node.name).kind
    dim = _norm_dim(arg(node, 2 if kind in ("split", "chunk", "tensor_split") else 1, "dim", 0),
                    len(s))
    if kind == "unbind" or dim is None:
        dim = _norm_dim(arg(node, 1, "dim", 0), len(s))
    if dim == d.axis:
        sizes = piece_sizes(st, node, d.length) if kind != "unbind" else []
        pieces = split_channels(st, node, d, sizes) if len(sizes) == n else None
        if pieces is not None:
            return pieces
        cut = cut_pieces(st, node, d, sizes) if len(sizes) == n else None
        if cut is not None:  # Rule 22: a split of concatenated or shuffled channels
            return TDesc(cut)
        st.unsupported_(node.name, "Rule 13", f"{kind} along the channel axis", HINT_FREEZE, [d])
        return TDesc((None,) * n)
    if kind == "unbind":
        return TDesc((Desc(d.axis - (dim < d.axis), d.segs),) * n)
    return TDesc((d,) * n)


def _shape_only(st, node) -> bool:
    """Whether a value only gives shape, dtype and device to ``*_like`` constructors (the
    per-sample mask of hand-written stochastic depth: ``empty_like(x[:, :1, :1, :1])``)."""
    like = OPS.names("like")
    return bool(node.users) and all(st.ir.info(u.name).kind in like for u in node.users)


def on_getitem(st, node):  # Rule 10
    src, idx = node.args[0], node.args[1]
    d = D(st, src)
    if isinstance(d, ShapeOf):  # Rule 16: x.shape[k]
        nd = len(st.ir.info(src.args[0].name).shape)
        hit = (isinstance(idx, int) and _norm_dim(idx, nd) == d.desc.axis) or isinstance(idx, slice)
        if hit:
            st.derived[node.name] = d.desc.segs
        return None
    if isinstance(d, TDesc):
        return d.items[idx] if isinstance(idx, int) and idx < len(d.items) else None
    if not isinstance(d, Desc):
        return None
    s = shape(st, src)
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(is_node(i) for i in idx):
        st.unsupported_(node.name, "Rule 10", "tensor indexing of a channel-carrying tensor",
                        HINT_FREEZE, [d])
        return None
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        fill = len(s) - (len(idx) - 1 - sum(i is None for i in idx))
        idx = idx[:k] + (slice(None),) * fill + idx[k + 1:]
    in_dim = out_dim = 0
    for i in idx:
        if i is None:
            out_dim += 1
            continue
        if in_dim == d.axis:
            if isinstance(i, slice) and i == slice(None):
                return Desc(out_dim, d.segs)
            if _shape_only(st, node):  # Rule 10: x[:, :1] only shapes a new mask
                return None
            st.unsupported_(node.name, "Rule 10", "indexing selects channels", HINT_FREEZE, [d])
            return None
        out_dim += isinstance(i, slice)
        in_dim += 1
    return Desc(out_dim + d.axis - in_dim, d.segs)


HANDLERS = dict(HANDLERS_BASE, flatten=on_flatten, reshape=on_reshape, permute=on_permute,
                transpose=on_transpose, unsqueeze=on_unsqueeze, squeeze=on_squeeze,
                expand=on_expand, expand_as=on_expand, repeat=on_expand, reduce=on_reduce,
                chunk=on_split_like, split=on_split_like, tensor_split=on_split_like,
                unbind=on_split_like, getitem=on_getitem, matmul=on_matmul, sdpa=on_sdpa,
                select=on_select, slice=on_slice, t=on_t)
