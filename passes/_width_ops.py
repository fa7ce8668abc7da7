"""Handlers of `find_width_groups`: one function per rule family, each returning the output's
channel descriptor (see `passes._width_rules`). Rules are numbered as in `find_width_groups`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from passes._width_rules import Desc, PDesc, State, arg, is_node, whole

HINT_FREEZE = ("it is kept at full width; replace it with standard layers or mark the module "
               "frozen to silence this")


@dataclass(frozen=True)
class TDesc:
    """Descriptors of the items of a tuple-valued node (split, chunk, multi-output modules)."""
    items: tuple


def D(st: State, x):
    return st.desc.get(x.name) if is_node(x) else None


def shape(st: State, x):
    return st.ir.info(x.name).shape if is_node(x) else None


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _tensor_descs(st, node):
    return [D(st, a) for a in node.all_input_nodes if isinstance(D(st, a), Desc)]


def on_placeholder(st, node):  # Rule 12: model inputs are fixed tensors
    return None


def on_get_attr(st, node):
    s = st.ir.info(node.name).shape
    return PDesc(node.name, tuple(range(len(s)))) if s else None


def on_output(st, node):  # Rule 12: model outputs are frozen
    for x in node.all_input_nodes:
        d = D(st, x)
        for item in (d.items if isinstance(d, TDesc) else (d,)):
            st.freeze(item, "model output")
    return None


def on_conv(st, node):  # Rules 1-3, 3b
    mod = st.ir.module(node.target)
    d = D(st, node.args[0])
    d = d if isinstance(d, Desc) else None
    if d is not None and d.axis != 1:
        st.unsupported_(node.name, "Rule 2", "convolution input channels are not on axis 1",
                        HINT_FREEZE, [d])
        d = None
    if mod.groups == 1:
        if d is not None:
            st.uses.append((node.name, "in", 1, d.segs))
        seg = st.new_space(mod.out_channels, node.name)
        st.uses.append((node.name, "out", 0, (seg,)))
        return Desc(1, (seg,))
    if mod.groups == mod.in_channels == mod.out_channels:  # Rule 3: depthwise
        if d is None:
            d = Desc(1, (st.new_space(mod.out_channels, node.name,
                                      frozen="depthwise conv of a fixed-channel input"),))
        st.uses.append((node.name, "dw", 0, d.segs))
        return d
    return _grouped_conv(st, node, mod, d)


def _grouped_conv(st, node, mod, d):
    """Rule 3b: a grouped conv keeps its group count G; each group keeps the same number of
    channels. Its input space becomes G copies of a per-group space (weight dim 1), its output
    G copies of another (weight dim 0 in G blocks); widths count channels per group."""
    g, cin, cout = mod.groups, mod.in_channels // mod.groups, mod.out_channels // mod.groups
    if d is not None and (len(d.segs) != 1 or d.segs[0].inner != 1 or not whole(st, d.segs[0])):
        st.unsupported_(node.name, "Rule 13", f"grouped convolution (groups={g}) of "
                        "concatenated channels", "only a grouped conv fed by one layer is "
                        "elastic (in whole groups' worth)", [d])
        d = None
    if d is not None:
        part = st.new_space(cin, node.name)
        st.grouped[part.space] = g
        st.refine_(d.segs[0], (part,) * g, node.name)
        st.uses.append((node.name, "in", 1, (part,)))
    out = st.new_space(cout, node.name)
    st.grouped[out.space] = g
    st.uses.append((node.name, "out", 0, (out,) * g))
    return Desc(1, (out,) * g)


def on_linear(st, node):  # Rules 1-2
    mod = st.ir.module(node.target)
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    out_nd = len(st.ir.info(node.name).shape)
    if isinstance(d, Desc) and d.axis != len(s) - 1:
        return d  # the linear maps a non-channel axis: channels pass through, the layer is fixed
    if isinstance(d, Desc):
        st.uses.append((node.name, "in", 1, d.segs))
    seg = st.new_space(mod.out_features, node.name)
    st.uses.append((node.name, "out", 0, (seg,)))
    return Desc(out_nd - 1, (seg,))


def on_batch_norm(st, node):  # Rule 5
    d = D(st, node.args[0])
    if not isinstance(d, Desc):
        return None
    if d.axis != 1:
        st.unsupported_(node.name, "Rule 5", "norm over an axis that is not the channel axis",
                        HINT_FREEZE, [d])
        return d
    st.uses.append((node.name, "norm", 0, d.segs))
    return d


def on_group_norm(st, node):  # Rule 5: widths stay multiples of channels-per-group
    d = on_batch_norm(st, node)
    mod = st.ir.module(node.target)
    if isinstance(d, Desc):
        cpg = mod.num_channels // mod.num_groups
        for seg in d.segs:
            r = st.find(seg.space)
            st.multiple_of[r] = math.lcm(st.multiple_of.get(r, 1), cpg)
    return d


def _layer_norm(st, node, ns, params):
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    if not isinstance(d, Desc):
        return d if isinstance(d, PDesc) else None
    first = len(s) - len(ns)
    if d.axis < first:
        return d  # Rule 5: channels are not normalised over; they pass through
    if len(ns) != 1:
        st.unsupported_(node.name, "Rule 5", "layer norm over several axes including channels",
                        HINT_FREEZE, [d])
        return d
    st.uses.append((node.name, "norm", 0, d.segs))
    for p in params:
        if is_node(p):
            if not isinstance(D(st, p), PDesc):
                st.unsupported_(node.name, "Rule 11", "layer norm affine parameters are computed",
                                HINT_FREEZE, [d])
            else:
                param_member(st, D(st, p), 0, d.segs)
    return d


def on_layer_norm(st, node):
    mod = st.ir.module(node.target)
    return _layer_norm(st, node, tuple(mod.normalized_shape), ())


def on_layer_norm_fn(st, node):
    ns = arg(node, 1, "normalized_shape")
    ns = (ns,) if isinstance(ns, int) else tuple(ns)
    return _layer_norm(st, node, ns, (arg(node, 2, "weight"), arg(node, 3, "bias")))


def param_member(st, pd: PDesc, pdim_pos: int, segs) -> bool:
    """Rule 11: a direct parameter meeting a channel space along a dim becomes its member."""
    if pdim_pos < 0 or pdim_pos >= len(pd.dims) or pd.dims[pdim_pos] is None:
        return True
    pdim = pd.dims[pdim_pos]
    size = st.ir.info(pd.node).shape[pdim]
    if size == 1:
        return True
    if size != sum(s.size * s.inner for s in segs):
        return False
    key = (pd.node, pdim)
    if key in st.params:
        if not st.unite_segs(Desc(0, st.params[key]), Desc(0, segs)):
            return False
    else:
        st.params[key] = segs
        st.uses.append((pd.node, "param", pdim, segs))
    return True


def on_pass(st, node):  # Rule 4
    d = D(st, node.args[0]) if node.args else None
    out = st.ir.info(node.name).shape
    if isinstance(d, Desc) and (out is None or len(out) <= d.axis or out[d.axis] != d.length):
        st.unsupported_(node.name, "Rule 4", "a channel-preserving op changed the channel count",
                        HINT_FREEZE, [d])
        return None
    if isinstance(d, PDesc) and out is not None and len(out) != len(d.dims):
        return None
    return d


def on_pad(st, node):  # Rule 4: padding must not touch the channel axis
    d, s = D(st, node.args[0]), shape(st, node.args[0])
    pad = arg(node, 1, "pad", ())
    if isinstance(d, Desc):
        k = len(pad) // 2
        padded = {len(s) - 1 - i for i in range(k) if pad[2 * i] or pad[2 * i + 1]}
        if d.axis in padded:
            st.unsupported_(node.name, "Rule 4", "padding along the channel axis", HINT_FREEZE, [d])
            return None
    return on_pass(st, node)


def on_binary(st, node):  # Rule 6: elementwise ops unite the spaces of their operands
    out = st.ir.info(node.name).shape
    if out is None:  # arithmetic on sizes: carries which channel counts it derives from
        segs = tuple(s for a in node.all_input_nodes for s in st.derived.get(a.name, ()))
        if segs:
            st.derived[node.name] = segs
        return None
    ops = [(a, D(st, a), shape(st, a)) for a in node.args if is_node(a)]
    carriers = [(d, len(out) - len(s)) for _, d, s in ops if isinstance(d, Desc)]
    if not carriers:
        pds = [d for _, d, s in ops if isinstance(d, PDesc) and len(s) == len(out)]
        return pds[0] if len(pds) == len(ops) == 1 else None
    axes = {d.axis + off for d, off in carriers}
    if len(axes) > 1:
        st.unsupported_(node.name, "Rule 6", "operands carry channels on different axes",
                        HINT_FREEZE, [d for d, _ in carriers])
        return None
    axis, first = axes.pop(), carriers[0][0]
    for d, _ in carriers[1:]:
        if not st.unite_segs(first, d):
            st.unsupported_(node.name, "Rule 6", "operands have different channel layouts "
                            "(e.g. a concat added to a plain tensor)", HINT_FREEZE,
                            [d for d, _ in carriers])
            return None
    for a, d, s in ops:
        _meet_other(st, node, a, d, s, axis - (len(out) - len(s)), first)
    return Desc(axis, first.segs)


def _meet_other(st, node, a, d, s, pos, first):
    """An operand that carries no channel space meets one (Rules 6 and 11)."""
    if isinstance(d, Desc) or s is None or pos < 0:
        return
    if isinstance(d, PDesc):
        if not param_member(st, d, pos, first.segs):
            st.freeze(first, f"meets parameter {d.node} of another size at {st.ir.label(node.name)}")
    elif s[pos] != 1:
        st.freeze(first, f"meets the fixed-channel tensor {st.ir.label(a.name)} "
                         f"at {st.ir.label(node.name)}")


def on_cat(st, node):  # Rule 7
    items = list(arg(node, 0, "tensors"))
    out = st.ir.info(node.name).shape
    dim = _norm_dim(arg(node, 1, "dim", 0), len(out))
    descs = [D(st, t) for t in items]
    if any(isinstance(d, Desc) and d.axis == dim for d in descs):
        segs = []
        for t, d in zip(items, descs):
            if not (isinstance(d, Desc) and d.axis == dim):
                d = Desc(dim, (st.new_space(shape(st, t)[dim], t.name,
                                            frozen="fixed-channel input of a concat"),))
            segs.extend(d.segs)
        return Desc(dim, tuple(segs))
    return _unite_along(st, node, items, descs, out)


def _unite_along(st, node, items, descs, out, shift=0):
    carriers = [d for d in descs if isinstance(d, Desc)]
    if not carriers:
        return None
    first = carriers[0]
    for d in carriers[1:]:
        if d.axis != first.axis or not st.unite_segs(first, d):
            st.unsupported_(node.name, "Rule 7", "inputs carry channels differently",
                            HINT_FREEZE, carriers)
            return None
    for t, d in zip(items, descs):
        _meet_other(st, node, t, d, shape(st, t), first.axis, first)
    return Desc(first.axis + shift, first.segs)


def on_stack(st, node):
    items = list(arg(node, 0, "tensors"))
    out = st.ir.info(node.name).shape
    dim = _norm_dim(arg(node, 1, "dim", 0), len(out))
    descs = [D(st, t) for t in items]
    carriers = [d for d in descs if isinstance(d, Desc)]
    shift = 1 if carriers and dim <= carriers[0].axis else 0
    return _unite_along(st, node, items, descs, out, shift)


@dataclass(frozen=True)
class ShapeOf:
    """The value of ``x.shape`` / ``x.size()`` for a channel-carrying x (Rule 16)."""
    desc: Desc


def on_meta(st, node):  # size(), .shape: metadata; reading the channel count is Rule 16
    src = node.args[0] if node.args else None
    d = D(st, src)
    kind = st.ir.info(node.name).kind
    if not isinstance(d, Desc) or kind not in ("getattr", "size"):
        return None
    if kind == "getattr" and node.args[1] != "shape":
        return None
    dim = arg(node, 1, "dim") if kind == "size" else None
    if dim is None:
        return ShapeOf(d)
    if _norm_dim(dim, len(shape(st, src))) == d.axis:
        st.derived[node.name] = d.segs
    return None


def on_unknown(st, node):  # Rule 13: anything not understood freezes what it touches
    touched = _tensor_descs(st, node)
    if touched:
        what = (f"unknown module {st.ir.info(node.name).module_type}" if node.op == "call_module"
                else f"unknown function {st.ir.info(node.name).target}")
        st.unsupported_(node.name, "Rule 13", f"{what} touches channels", HINT_FREEZE, touched)
    return None


def on_functional_layer(st, node):  # Rule 13
    touched = _tensor_descs(st, node)
    if touched:
        st.unsupported_(node.name, "Rule 13", f"functional layer {st.ir.info(node.name).kind} "
                        "with weights from the graph", "use nn.Conv2d/nn.Linear/nn.BatchNorm2d "
                        "modules to make it elastic; " + HINT_FREEZE, touched)
    return None


def on_matmul(st, node):  # Rule 13
    touched = _tensor_descs(st, node)
    if touched:
        st.unsupported_(node.name, "Rule 13", "matrix product of channel-carrying tensors "
                        "(e.g. attention)", HINT_FREEZE, touched)
    return None


def on_frozen(st, node):  # Rule 21: registered as frozen by the user
    for d in _tensor_descs(st, node):
        st.freeze(d, f"{st.ir.label(node.name)} is registered as frozen (compiler.ops)")
    return None


def on_new(st, node):  # Rule 4: a fresh tensor (x.new_empty(shape)): no channel space
    return None


HANDLERS_BASE = dict(frozen=on_frozen, new=on_new,
    placeholder=on_placeholder, get_attr=on_get_attr, output=on_output, conv=on_conv,
    linear=on_linear, batch_norm=on_batch_norm, group_norm=on_group_norm,
    layer_norm=on_layer_norm, layer_norm_fn=on_layer_norm_fn, spatial=on_pass,
    pad=on_pad, binary=on_binary, where=on_binary, cat=on_cat, stack=on_stack, meta=on_meta,
    unknown=on_unknown, functional_layer=on_functional_layer, matmul=on_matmul)
HANDLERS_BASE["pass"] = on_pass  # "pass" is a keyword, so not a dict() argument
