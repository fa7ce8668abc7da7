"""Capture rule for `torch.nn.MultiheadAttention`: self-attention calls are written out as the
ops the analysis understands, so their heads become elastic.

Rules:
  1. A call ``mha(x, x, x, ...)`` (query, key and value the same node) of a module with
     ``batch_first=True``, one embedding size, no bias_k/bias_v, no zero attention, dropout 0,
     no masks and ``is_causal`` False, whose attention-weights output is unused, is replaced by:
     ``in_proj`` (an ``nn.Linear`` at ``<path>_in_proj`` of the GraphModule, holding the SAME ``in_proj_weight`` and
     ``in_proj_bias`` Parameters), ``reshape(B, L, 3, heads, head_size)``, ``permute``, q/k/v,
     ``scaled_dot_product_attention``, ``transpose``, ``reshape(B, L, -1)`` and the module's own
     ``out_proj``. Outputs agree with the module to float rounding (not bit for bit: the fused
     kernel sums in another order).
  2. Any other call keeps the module whole (an unknown leaf for the analysis: frozen, reported).
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

__all__ = ["decompose_self_attention"]


def _eligible(mod: nn.Module, node: fx.Node) -> bool:
    args, kw = node.args, node.kwargs
    if not (isinstance(mod, nn.MultiheadAttention) and mod.batch_first and mod._qkv_same_embed_dim
            and mod.bias_k is None and not mod.add_zero_attn and mod.dropout == 0.0
            and mod.in_proj_weight is not None and len(args) == 3 and args[0] is args[1] is args[2]):
        return False
    if any(kw.get(k) is not None for k in ("key_padding_mask", "attn_mask")) or kw.get("is_causal"):
        return False
    if set(kw) - {"need_weights", "key_padding_mask", "attn_mask", "is_causal",
                  "average_attn_weights"}:
        return False
    users = list(node.users)
    return all(u.target is operator.getitem and u.args[1] in (0, 1) for u in users) \
        and all(not u.users for u in users if u.args[1] == 1)


def _in_proj(mod: nn.MultiheadAttention) -> nn.Linear:
    e = mod.embed_dim
    lin = nn.Linear(e, 3 * e, bias=mod.in_proj_bias is not None, device="meta")
    lin.weight = mod.in_proj_weight  # the same Parameter: shared with the model
    if mod.in_proj_bias is not None:
        lin.bias = mod.in_proj_bias
    return lin.train(mod.training)


def _write_out(gm: fx.GraphModule, node: fx.Node, mod: nn.MultiheadAttention) -> fx.Node:
    g, x, path = gm.graph, node.args[0], node.target
    heads, size = mod.num_heads, mod.head_dim
    proj = f"{path}_in_proj"
    gm.add_submodule(proj, _in_proj(mod))
    first = node.prev
    with g.inserting_before(node):
        shape = g.call_function(getattr, (x, "shape"))
        b = g.call_function(operator.getitem, (shape, 0))
        n = g.call_function(operator.getitem, (shape, 1))
        qkv = g.call_module(proj, (x,))
        qkv = g.call_method("reshape", (qkv, b, n, 3, heads, size))
        qkv = g.call_method("permute", (qkv, 2, 0, 3, 1, 4))
        q, k, v = (g.call_function(operator.getitem, (qkv, i)) for i in range(3))
        o = g.call_function(F.scaled_dot_product_attention, (q, k, v))
        o = g.call_method("transpose", (o, 1, 2))
        o = g.call_method("reshape", (o, b, n, -1))
        out = g.call_module(f"{path}.out_proj", (o,))
    created, cur = [], first.next
    while cur is not node:
        created.append(cur)
        cur = cur.next
    for new in created:
        new.meta.update({k: node.meta[k] for k in ("nn_module_stack", "stack_trace")
                         if k in node.meta})
    for u in list(node.users):
        if u.args[1] == 0:
            u.replace_all_uses_with(out)
        g.erase_node(u)
    g.erase_node(node)
    return out


def decompose_self_attention(gm: fx.GraphModule) -> int:
    """Rule 1 on `gm` in place (a GraphModule capture owns); returns the number rewritten."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if _eligible(mod, node):
                _write_out(gm, node, mod)
                count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
