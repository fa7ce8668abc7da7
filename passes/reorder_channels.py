"""reorder_channels: sort each width group's channels by importance so prefixes keep the best.

Rules:
  1. A channel's importance is the L1 norm of its producers' filters (conv/linear output rows,
     ``role == "out"``), summed over every producer of the group.
  2. Channels are sorted by decreasing importance (stable: ties keep their order).
  3. Every member of the group is permuted consistently: producers' outputs (weight dim 0 and
     bias), consumers' inputs (weight dim 1), depthwise convs (weight dim 0 and bias), norms
     (weight, bias, running mean and variance), direct parameters (their dim), and, behind a
     concat or flatten, only this group's segment of the member's axis (block-wise for flatten).
  4. Frozen groups and groups with one width choice are left in their order, and so are groups
     a channel shuffle or split cuts into parts (find_width_groups' Rule 22): their channels
     go different ways at fixed positions, which a permutation would change.
  6. A heads group is permuted in whole heads: its segments have ``inner = head_size``.
  5. The input module is not modified: the result is a deep copy whose maximal sub-network
     computes the same outputs (up to float rounding of reordered sums).

Unsupported:
  - A module called at several nodes with different channel roles is permuted once per
    (module, role); if its calls disagree the analysis has frozen it already.

Example:
    >>> import torch, torch.nn as nn
    >>> from compiler.capture import capture
    >>> from passes.find_width_groups import find_width_groups
    >>> m = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    >>> x = torch.randn(1, 3, 4, 4)
    >>> ir = capture(m, x)
    >>> r = reorder_channels(ir.gm, find_width_groups(ir))
    >>> torch.testing.assert_close(r(x), m(x), rtol=1e-5, atol=1e-5)
    >>> w = r.get_submodule("0").weight.abs().flatten(1).sum(1)
    >>> bool((w[:-1] >= w[1:]).all())
    True
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx

from passes.find_width_groups import ChannelUse, WidthGroups

__all__ = ["reorder_channels", "channel_importance"]


def _tensors(gm: fx.GraphModule, node: fx.Node, use: ChannelUse) -> list[tuple[torch.Tensor, int]]:
    """(tensor, dim) pairs that a use's channel axis indexes (Rule 3)."""
    if node.op == "get_attr":
        return [(operator.attrgetter(node.target)(gm), use.dim)]
    if node.op != "call_module":
        return []
    mod = gm.get_submodule(node.target)
    if use.role == "in":
        return [(mod.weight, 1)]
    names = ("weight", "bias", "running_mean", "running_var")
    return [(getattr(mod, n), 0) for n in names if isinstance(getattr(mod, n, None), torch.Tensor)]


def channel_importance(gm: fx.GraphModule, wg: WidthGroups) -> dict[str, torch.Tensor]:
    """Rule 1: per elastic group, the summed L1 norm of its producers' filters; a unit of
    ``inner`` rows (a head of a heads group, Rule 6) scores the sum of its rows, and a producer
    made of several segments (fused QKV) scores each segment of the group."""
    nodes = {n.name: n for n in gm.graph.nodes}
    out: dict[str, torch.Tensor] = {}
    for use in wg.uses:
        if use.role != "out":
            continue
        w = gm.get_submodule(nodes[use.node].target).weight.detach()
        rows = w.abs().reshape(w.shape[0], -1).sum(1).double()
        offset = 0
        for seg in use.segments:
            n = seg.size * seg.inner
            score = rows[offset:offset + n].reshape(seg.size, seg.inner).sum(1)
            offset += n
            out[seg.group] = out[seg.group] + score if seg.group in out else score
    return out


def _permutations(gm, wg) -> dict[str, torch.Tensor]:
    parted = {s.group for r in wg.relayouts for s in r.segments}
    elastic = {g.name for g in wg.groups if not g.frozen and len(g.choices) > 1
               and g.name not in parted}  # Rule 4
    scores = channel_importance(gm, wg)
    return {g: torch.sort(-s, stable=True).indices for g, s in scores.items() if g in elastic}


def _axis_index(use: ChannelUse, perms: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The full-axis index that applies every group's permutation to its segment (Rule 3)."""
    parts, offset, changed = [], 0, False
    for seg in use.segments:
        n = seg.size * seg.inner
        perm = perms.get(seg.group)
        if perm is None:
            parts.append(torch.arange(offset, offset + n))
        else:
            changed = True
            block = perm[:, None] * seg.inner + torch.arange(seg.inner)[None, :]
            parts.append(offset + block.reshape(-1))
        offset += n
    return torch.cat(parts) if changed else None


def reorder_channels(gm: fx.GraphModule, wg: WidthGroups) -> fx.GraphModule:
    """A copy of `gm` with every elastic group's channels sorted by importance (Rules 1-5)."""
    gm = copy.deepcopy(gm)  # Rule 5
    perms = _permutations(gm, wg)
    nodes = {n.name: n for n in gm.graph.nodes}
    done: set[tuple[int, int]] = set()
    with torch.no_grad():
        for use in wg.uses:
            index = _axis_index(use, perms)
            if index is None:
                continue
            for tensor, dim in _tensors(gm, nodes[use.node], use):
                if (id(tensor), dim) in done:
                    continue
                done.add((id(tensor), dim))
                tensor.data = tensor.data.index_select(dim, index.to(tensor.device))
    return gm
