"""Find the blocks a sub-network may skip: single-entry single-exit, shape-preserving regions.

Skipping a block is exactly replacing it by identity (DESIGN invariant 3). Blocks chained one
after another (exit of one == entry of the next) form a stage; configurations skip a suffix.

Rules:
  1. Units. A parametric op (Rule 4) with its following norm and activation, a norm with its
     following activation, and an add/sub/mul/cat merge with its following activation are one
     unit when each link is the sole user of the previous node. A block never starts or ends
     inside a unit, so a residual block ends after the ReLU that follows its add. Norms:
     BatchNorm*, SyncBatchNorm, LayerNorm, GroupNorm, F.batch_norm/layer_norm/group_norm.
     Activations: ReLU, ReLU6, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh, LeakyReLU, ELU,
     Mish (modules, functions, methods).
  2. Side nodes. Nodes with non-tensor values (``size``, ``.shape``, ``dim``, their arithmetic,
     ``_assert``), nodes not computed from the inputs (``get_attr``, constants) and nodes computed
     only from *context inputs* (model inputs whose name contains ``mask``: attention masks)
     carry no data flow for Rule 3: ``x.size(0)`` never breaks single-entry/single-exit.
  3. Trunk points. Unit outputs (and model inputs) that every path from the inputs to the output
     passes through: the dominators of the output, from a virtual source over the inputs.
  4. Candidates. For each trunk point a, the nearest later trunk point b with a's shape and dtype
     such that the region (a, b] (what a dominates and b does not strictly dominate) holds a
     parametric op: a conv/linear module or function, a matmul with a parameter, or another leaf
     module with parameters that is no norm or activation (nn.MultiheadAttention, nn.LSTM).
  5. Innermost. A candidate containing another is discarded (so are unions of smaller blocks);
     overlaps are resolved left to right (Rule 11 applies first).
  6. Layout tail. When only layout ops (view, reshape, permute, transpose, contiguous, flatten, ...)
     follow b up to a trunk point b' with a's shape and dtype (a channel shuffle), the block
     extends to b', so that the next block chains onto it.
  7. Single entry, single exit. No body node uses a tensor from outside but a, and no body node but
     b is used outside. A side node belongs to the block when its users are all inside and its
     sources are inside or a (``a.size(0)`` used inside; a dead-end side node on a alone belongs to
     the block starting at a). Any other side node read inside (but a ``get_attr``, re-read by the
     emitter), or computed inside (not from b alone) and used outside, breaks the block (recorded).
     A side *tensor* computed outside (an attention mask, a constant) that body nodes read is a
     ``context`` input of the block: it is passed in, and skipping the block ignores it.
  8. A body node writing in place into a value from outside the body (the entry, a view of it, a
     buffer) breaks the block (recorded): identity would not equal skipping it.
  9. A leaf module from outside torch.nn returning several outputs is recorded; no block holds it.
  10. ``residual``: b follows without parametric ops from an add/sub/cat that a reaches both
     without and through parametric ops (x + f(x); cat(x1, f(x2)) with x1, x2 = x.chunk(2)), or
     from an add/sub whose operands fork at a (proj(x) + f(x)).
  11. With ``cfg.residual_only`` (the default) only residual blocks are kept: removing a residual
     branch is what trained residual networks tolerate; removing a plain layer is not.
  12. Stages: maximal chains of blocks (blocks[i].exit == blocks[i + 1].entry), in fx order.
  13. Names: the common dotted module path of the nodes inside (their ``nn_module_stack``); if two
     blocks share it, ``prefix[first_child..last_child]``; else ``<entry>..<exit>``. Stages
     likewise from their blocks' names, else ``stage<i>``.
  14. An add/sub of two computed tensors off the trunk (in a parallel branch, or nested in a
     block's body) with a parametric op between it and the fork is recorded: blocks there are
     not searched for.

Unsupported:
  - In-place writes into the entry or any value from outside the body (Rule 8): not a block.
  - Side values (sizes, non-parameter constants) crossing a region's boundary (Rule 7): not a
    block, e.g. a batch size read at the top of ``forward`` and used inside a block.
  - Leaf modules outside torch.nn with several outputs (Rule 9): no block contains them.
  - Blocks inside parallel branches of multi-tower models, or nested in another block's body: not
    found, only trunk blocks are; their residual adds are recorded (Rule 14).
  ``cfg.strict=True`` raises one `UnsupportedError` listing every record instead.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from compiler.capture import capture
    >>> class Res(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(4, 4, 3, padding=1)
    ...     def forward(self, x):
    ...         return torch.relu(x + self.conv(x))
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), Res(), Res())
    >>> found = find_skippable_blocks(capture(net, (torch.randn(1, 3, 8, 8),)))
    >>> [(b.name, b.entry, b.exit, b.residual) for b in found.blocks]
    [('1', '_0', 'relu', True), ('2', 'relu', 'relu_1', True)]
    >>> [s.name for s in found.stages], found.unsupported
    (['stage0'], ())
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

import networkx as nx

from compiler.ir import IRGraph
from passes._block_check import _check
from compiler.ops import OPS
from passes._block_rules import _common_prefix, _is, _scope, _unique_names
from passes.unsupported import Unsupported, raise_if_strict

__all__ = ["BlockConfig", "SkippableBlock", "Stage", "SkippableBlocks", "find_skippable_blocks"]

_SOURCE = ("<source>",)


@dataclass(frozen=True, kw_only=True)
class BlockConfig:
    """``residual_only``: Rule 11. ``strict``: raise `UnsupportedError` instead of recording."""

    residual_only: bool = True
    strict: bool = False


@dataclass(frozen=True)
class SkippableBlock:
    """A region skipping which equals identity. ``nodes``: fx order, without entry, with exit."""

    name: str
    entry: str
    exit: str
    nodes: tuple[str, ...]
    residual: bool
    context: tuple[str, ...] = ()  # Rule 7: side tensors computed outside that the body reads

    def to_dict(self) -> dict:
        d = {"name": self.name, "entry": self.entry, "exit": self.exit,
             "nodes": list(self.nodes), "residual": self.residual}
        if self.context:
            d["context"] = list(self.context)
        return d


@dataclass(frozen=True)
class Stage:
    """Chained blocks: ``blocks[i].exit == blocks[i + 1].entry``."""

    name: str
    blocks: tuple[SkippableBlock, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "blocks": [b.to_dict() for b in self.blocks]}


@dataclass(frozen=True)
class SkippableBlocks:
    stages: tuple[Stage, ...] = ()
    unsupported: tuple[Unsupported, ...] = ()

    @property
    def blocks(self) -> tuple[SkippableBlock, ...]:
        return tuple(b for s in self.stages for b in s.blocks)

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages],
                "unsupported": [u.to_dict() for u in self.unsupported]}


class _Ctx:
    """What the rules share: tensor nodes, dominators, trunk points, regions, side links."""

    def __init__(self, ir: IRGraph):
        self.ir, self.order = ir, {n: i for i, n in enumerate(ir.names)}
        self.params = {n for n in ir.names if _is_param(ir, n)}
        self.inputs = [p for p in ir.placeholders if "mask" not in p.lower()] or ir.placeholders
        self.tensor = set(self.inputs)  # Rule 2: tensors computed from the inputs, and output
        for name, info in zip(ir.names, ir):
            if (info.shape is not None or info.tuple_shapes is not None or info.op == "output") \
                    and info.op != "get_attr" and any(i in self.tensor for i in ir.inputs(name)):
                self.tensor.add(name)
        self.side_inputs = set(ir.placeholders) - self.tensor  # Rule 2: from context inputs
        for name in ir.names:
            if name not in self.tensor and any(i in self.side_inputs for i in ir.inputs(name)):
                self.side_inputs.add(name)
        self.src: dict[str, frozenset] = {}  # Rule 2: side node -> tensor nodes it comes from
        self.usr: dict[str, frozenset] = {}  # Rule 2: side node -> tensor nodes using it
        self.touch: dict[str, list[str]] = defaultdict(list)
        self.multi_leaves: set[str] = set()
        self.idom, self.trunk, self.seg, self.buckets, self.on_trunk = {}, [], {}, [], set()


_MERGES = ("add", "cat", "mul")  # families of the ops where branches meet (Rule 1)


def _is_param(ir: IRGraph, name: str) -> bool:
    info = ir.info(name)  # Rule 4
    if info.op == "call_module":
        module = ir.module(info.target)
        op = OPS.of_module(module)
        return (op is None or op.family not in ("norm", "activation")) \
            and any(True for _ in module.parameters())
    return info.op == "call_function" and (
        info.kind in OPS.names("conv", "conv_transpose", "linear") or (
            info.kind in OPS.names("matmul") and any(ir.info(i).op == "get_attr"
                                                     for i in ir.inputs(name))))


def _unit_interior(ctx: _Ctx) -> set[str]:
    """Rule 1: the nodes of a unit other than its last one."""
    ir, interior = ctx.ir, set()
    for name in ir.names:
        if name in ctx.params:
            follow = [OPS.names("norm"), OPS.names("activation")]
        elif _is(ir.info(name), OPS.names("norm", *_MERGES)):
            follow = [OPS.names("activation")]
        else:
            continue
        cur = ir.fx_node(name)
        for kinds in follow:
            nxt = next(iter(cur.users)) if len(cur.users) == 1 else None
            if nxt is not None and nxt.args and nxt.args[0] is cur \
                    and _is(ir.info(nxt.name), kinds):
                interior.add(cur.name)
                cur = nxt
    return interior


def _build(ir: IRGraph) -> _Ctx:
    """Rules 2-4: dominators, trunk points, and the region of each node."""
    ctx = _Ctx(ir)
    g = nx.DiGraph()
    g.add_edges_from((_SOURCE, p) for p in ctx.inputs)
    g.add_edges_from((i, n) for n in ctx.tensor for i in ir.inputs(n) if i in ctx.tensor)
    ctx.idom = nx.immediate_dominators(g, _SOURCE)
    chain, cur, interior = [], ctx.idom.get(ir.output, _SOURCE), _unit_interior(ctx)
    while cur != _SOURCE:
        chain.append(cur)
        cur = ctx.idom[cur]
    ctx.on_trunk = set(chain)  # Rule 14: every dominator of the output, inside units too
    ctx.trunk = [n for n in reversed(chain) if n not in interior and ir.info(n).shape is not None]
    index = {n: i for i, n in enumerate(ctx.trunk)}
    ctx.buckets = [[] for _ in ctx.trunk]
    for name in ir.names:
        if name in ctx.idom:  # Rule 4: region k holds what t_k is the nearest trunk dominator of
            d = ctx.idom[name]
            ctx.seg[name] = index[d] if d in index else ctx.seg.get(d, -1)
            if ctx.seg[name] >= 0:
                ctx.buckets[ctx.seg[name]].append(name)
    for name in ir.names:
        if name not in ctx.tensor:
            ctx.src[name] = frozenset().union(
                *[{i} if i in ctx.tensor else ctx.src[i] for i in ir.inputs(name)])
    for name in reversed(ir.names):
        if name not in ctx.tensor:
            ctx.usr[name] = frozenset().union(
                *[{u} if u in ctx.tensor else ctx.usr[u] for u in ir.users(name)])
            for t in ctx.src[name] | ctx.usr[name]:
                ctx.touch[t].append(name)
    return ctx


def _candidates(ctx: _Ctx) -> list[tuple[int, int]]:
    """Rules 4-5: innermost (a, b) trunk indices, in order of a."""
    keys = [(ctx.ir.info(t).shape, ctx.ir.info(t).dtype) for t in ctx.trunk]
    where, next_param = defaultdict(list), [len(keys)] * len(keys)
    for i, key in enumerate(keys):
        where[key].append(i)
    for k in range(len(keys) - 1, -1, -1):
        has = any(n in ctx.params for n in ctx.buckets[k])
        next_param[k] = k if has else (next_param[k + 1] if k + 1 < len(keys) else len(keys))
    cands = []
    for a, key in enumerate(keys):
        j = bisect.bisect_left(where[key], next_param[a] + 1)
        if j < len(where[key]):
            cands.append((a, where[key][j]))
    keep, min_exit = [], len(keys)
    for a, b in reversed(cands):  # Rule 5: entries are unique, so containment is b >= min_exit
        if b < min_exit:
            keep.append((a, b))
        min_exit = min(min_exit, b)
    return keep[::-1]


def _layout_tail(ctx: _Ctx, a: int, b: int, entries: set[int]) -> int:
    """Rule 6: the exit after absorbing a layout-only tail back to a's shape and dtype."""
    info = ctx.ir.info(ctx.trunk[a])
    for k in range(b, len(ctx.trunk) - 1):
        if (k > b and k in entries) or not all(_is(ctx.ir.info(n), OPS.names("layout"))
                                                for n in ctx.buckets[k]):
            return b
        nxt = ctx.ir.info(ctx.trunk[k + 1])
        if (nxt.shape, nxt.dtype) == (info.shape, info.dtype):
            return k + 1
    return b


def _reach(ir: IRGraph, start: str, body: set[str], step, skip: set[str]) -> set[str]:
    """Body nodes reached from `start` along `step` (users or inputs) avoiding `skip`."""
    seen, todo = {start}, [start]
    while todo:
        for n in step(todo.pop()):
            if n in body and n not in skip and n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _residual(ctx: _Ctx, a: str, b: str, body: set[str]) -> bool:
    """Rule 10: a merge from which b follows without parametric ops, fed by a bypass of a."""
    if b in ctx.params:
        return False
    bypass = _reach(ctx.ir, a, body, ctx.ir.users, ctx.params)
    for m in _reach(ctx.ir, b, body, ctx.ir.inputs, ctx.params):
        ins = {i for i in ctx.ir.inputs(m) if i in ctx.tensor}
        if _is(ctx.ir.info(m), OPS.names("add", "cat")) and ins & bypass and ins - bypass:
            return True
        if _is(ctx.ir.info(m), OPS.names("add")) and len(ins) >= 2 and ctx.idom[m] == a:
            return True
    return False


def _unsupported_nodes(ctx: _Ctx) -> list[Unsupported]:
    """Rules 9 and 14, recorded whatever the candidates."""
    out = []
    for v in ctx.ir.names:
        info = ctx.ir.info(v)
        if info.op == "call_module" and info.tuple_shapes is not None \
                and not type(ctx.ir.module(info.target)).__module__.startswith("torch.nn"):
            ctx.multi_leaves.add(v)
            out.append(Unsupported(v, "Rule 9", (
                f"{info.describe()} is a leaf module with {len(info.tuple_shapes)} outputs: "
                "whether it aliases or keeps state is unknown, so no block contains it"),
                "let capture trace into it (drop it from leaf_modules) or return one tensor"))
        elif v in ctx.idom and _is(info, OPS.names("add")) and v not in ctx.on_trunk \
                and len({i for i in ctx.ir.inputs(v) if i in ctx.tensor}) >= 2 \
                and _param_between(ctx, ctx.idom[v], v):
            out.append(Unsupported(v, "Rule 14", (
                f"{ctx.ir.label(v)} joins two paths from {ctx.idom[v]} off the trunk (in a "
                "parallel branch or a block's body): residual blocks there are not searched for"),
                "only regions every input-to-output path passes through can be skipped"))
    return out


def _param_between(ctx: _Ctx, fork: str, v: str) -> bool:
    """Rule 14: a parametric op on a path from `fork` to `v` (else the add is arithmetic, such
    as GPT-2's ``x + 0.044715 * x ** 3``, and no residual block can hide there)."""
    seen, todo = {v}, [v]
    while todo:
        for i in ctx.ir.inputs(todo.pop()):
            if i == fork:
                continue
            if i in ctx.params:
                return True
            if i in ctx.tensor and i not in seen:
                seen.add(i)
                todo.append(i)
    return False


def _stages(ctx: _Ctx, raw: list[tuple]) -> tuple[Stage, ...]:
    """Rules 12-13: name the blocks, then chain them into stages."""
    scopes = [[_scope(ctx.ir, n) for n in r[2]] for r in raw]
    prefixes = [_common_prefix(s) for s in scopes]
    names = _unique_names(prefixes, scopes, [f"{r[0]}..{r[1]}" for r in raw])
    chains: list[list[int]] = []
    for i, (a, *_) in enumerate(raw):
        if chains and raw[chains[-1][-1]][1] == a:
            chains[-1].append(i)
        else:
            chains.append([i])
    stage_prefixes = [_common_prefix([prefixes[i] for i in c]) for c in chains]
    stage_names = _unique_names(stage_prefixes, [[prefixes[i] for i in c] for c in chains],
                                [f"stage{k}" for k in range(len(chains))])
    return tuple(Stage(sname, tuple(SkippableBlock(names[i], *raw[i]) for i in c))
                 for sname, c in zip(stage_names, chains))


def find_skippable_blocks(ir: IRGraph, *, cfg: BlockConfig = BlockConfig()) -> SkippableBlocks:
    """The skippable blocks of `ir`, chained into stages (see the module docstring)."""
    ctx = _build(ir)
    records = _unsupported_nodes(ctx)
    cands = _candidates(ctx)
    entries = {a for a, _ in cands}
    raw, last_exit = [], -1
    for a, b in cands:
        b = _layout_tail(ctx, a, b, entries)
        body = {n for k in range(a, b) for n in ctx.buckets[k]}
        if a < last_exit or body & ctx.multi_leaves:  # Rules 5 and 9
            continue
        members, context, problem = _check(ctx, ctx.trunk[a], ctx.trunk[b], body)
        residual = problem is None and _residual(ctx, ctx.trunk[a], ctx.trunk[b], body)
        if problem is not None:
            records.append(problem)
        elif residual or not cfg.residual_only:  # Rule 11
            raw.append((ctx.trunk[a], ctx.trunk[b],
                        tuple(sorted(body | set(members), key=ctx.order.get)), residual,
                        tuple(sorted(context, key=ctx.order.get))))
            last_exit = b
    records = sorted(dict.fromkeys(records), key=lambda u: (ctx.order.get(u.node, -1), u.rule))
    raise_if_strict(cfg.strict, "find_skippable_blocks", records)
    return SkippableBlocks(_stages(ctx, raw), tuple(records))
