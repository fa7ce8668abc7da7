"""Rules 7-8 of `find_skippable_blocks` (its docstring is the spec): single entry and exit,
side nodes and context inputs, in-place writes."""
from __future__ import annotations

import functools
import inspect

import torch.fx as fx

from compiler.ir import IRGraph
from compiler.ops import OPS
from passes._block_rules import _is
from passes.unsupported import Unsupported


_signature = functools.lru_cache(maxsize=None)(inspect.signature)


def _writes_into(ir: IRGraph, name: str, body: set[str]) -> str | None:
    """Rule 8: the tensor whose storage this node writes (following views back), if any."""
    node, kind = ir.fx_node(name), ir.info(name).kind
    arg = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if arg is None or node.op not in ("call_module", "call_method", "call_function"):
        return None
    if node.op == "call_module":
        hit = getattr(ir.module(node.target), "inplace", False) is True
    else:
        hit = kind in OPS.names(inplace=True) or (
            kind.endswith("_") and not kind.startswith("_") and kind != "requires_grad_")
    if not hit and node.op == "call_function":
        try:  # F.relu(x, inplace=True), F.relu(x, True)
            hit = _signature(node.target).bind(*node.args, **node.kwargs) \
                .arguments.get("inplace") is True
        except (TypeError, ValueError):
            pass
    views = OPS.names(alias=True)
    while hit and arg.name in body and _is(ir.info(arg.name), views) and arg.args \
            and isinstance(arg.args[0], fx.Node):
        arg = arg.args[0]
    return arg.name if hit else None


def _check(ctx: _Ctx, a: str, b: str, body: set[str]) -> tuple[list, list, Unsupported | None]:
    """Rules 7-8: the side nodes the block owns and its context inputs, or why it is not a
    block."""
    ir, where, ordered = ctx.ir, f"{a}..{b}", sorted(body, key=ctx.order.get)
    for v in ordered:
        outside = [i for i in ir.inputs(v) if i in ctx.tensor and i not in body and i != a]
        outside += [u for u in ir.users(v) if v != b and u in ctx.tensor and u not in body]
        if outside:
            return [], [], _leak(ir, v, f"is linked to {ir.label(outside[0])} outside", where)
        root = _writes_into(ir, v, body)
        if root is not None and root not in body:
            return [], [], Unsupported(v, "Rule 8", (
                f"{ir.label(v)} writes in place into {root}, from outside the region {where}: "
                "skipping the region would not equal identity"),
                "use the out-of-place op (x = x + y, inplace=False) on the block input")
    members, context = [], []
    for s in dict.fromkeys(s for v in [a, *ordered] for s in ctx.touch[v]):
        src, usr = ctx.src[s], ctx.usr[s]
        side_input = s in ctx.side_inputs
        if not side_input and usr <= body and (usr or src) and src <= body | {a} \
                and not (src and src <= {b}):
            members.append(s)
        elif usr - body and src & (body - {b}):
            user = ir.label(min(usr - body, key=ctx.order.get))
            return [], [], _leak(ir, s, f"is computed inside and used by {user} outside", where)
        elif usr & body and ir.info(s).op != "get_attr":
            if ir.info(s).shape is not None and not src & body:  # Rule 7: a context input
                if any(u in body for u in ir.users(s)):
                    context.append(s)
                continue
            return [], [], _leak(ir, s, "is computed outside and read inside", where)
    member_set = set(members)
    for s in members:  # a member may read a context input, nothing else from outside
        if any(i not in body and i not in member_set and i != a and i not in context
               and ir.info(i).op != "get_attr" for i in ir.inputs(s)):
            return [], [], _leak(ir, s, "is computed from values outside", where)
    return members, context, None


def _leak(ir: IRGraph, node: str, how: str, where: str) -> Unsupported:
    return Unsupported(node, "Rule 7", (
        f"{ir.label(node)} {how} the region {where}: the region has no single entry and exit, "
        "so it is not a skippable block"),
        "compute that value inside the block from its input, or move its use into the block")
