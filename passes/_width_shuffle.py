"""Channel shuffle and split handlers of `find_width_groups` (Rule 22): index maps.

A channel shuffle ``x.view(N, G, C // G, H, W).transpose(1, 2).reshape(N, C, H, W)`` moves
channel ``g * (C / G) + i`` to ``i * G + g``; a chunk of concatenated (or shuffled) channels cuts
them at fixed positions. Neither needs the spaces to be refined: the output describes each
channel by its space and its index there (segments with a ``start``), so every space keeps one
width and the emitter replaces the shuffle by a gather and the chunk by a split whose sizes
follow the widths. Rules are numbered as in `find_width_groups`.
"""
from __future__ import annotations

from passes._width_ops import HINT_FREEZE, D
from passes._width_rules import Desc, Grid, cut_segs, merge_segs, unit_segs

HINT_SHUFFLE = ("a channel shuffle is elastic when it is view (N, G, C/G, ...) -> transpose or "
                "permute of those two axes -> contiguous -> view/reshape back to (N, C, ...); "
                + HINT_FREEZE)
GRID_KINDS = ("reshape", "permute", "transpose")  # Rule 22: what may carry a Grid
GRID_PASS = ("contiguous",)


def split_grid(st, node, d: Desc, s, out) -> Grid | None:
    """Rule 22: a reshape splitting the channel axis into ``(G, C / G)`` (a shuffle's first view)."""
    a = d.axis
    if len(out) != len(s) + 1 or tuple(out[:a]) != tuple(s[:a]) \
            or tuple(out[a + 2:]) != tuple(s[a + 1:]) or out[a] * out[a + 1] != s[a] or out[a] < 2:
        return None
    m = out[a + 1]
    pieces = tuple(cut_segs(d.segs, k * m, (k + 1) * m) for k in range(out[a]))
    if any(p is None for p in pieces):
        return None
    return Grid(a, a + 1, pieces, node.args[0].name)


def merge_grid(st, node, g: Grid, s, out) -> Desc | None:
    """Rule 22: the reshape that merges a Grid's two axes back into one channel axis."""
    lo = min(g.outer, g.axis)
    groups, m = len(g.pieces), s[g.axis]
    ok = max(g.outer, g.axis) == lo + 1 and len(out) == len(s) - 1 \
        and tuple(out[:lo]) == tuple(s[:lo]) and tuple(out[lo + 1:]) == tuple(s[lo + 2:])
    units = [unit_segs(p) for p in g.pieces] if ok else None
    if not ok or any(u is None for u in units):
        st.unsupported_(node.name, "Rule 22", "a reshape of channels split over two axes that "
                        "does not merge them back into one", HINT_SHUFFLE, [g])
        return None
    if g.outer == lo:  # the pieces are back in order: no shuffle
        index = tuple(range(groups * m))
    else:  # output channel i * G + k is channel i of piece k
        index = tuple(k * m + i for i in range(m) for k in range(groups))
    flat = [u for piece in units for u in piece]
    segs = merge_segs(flat[j] for j in index)
    st.relayouts.append(("permute", node.name, g.source, lo, g.segs, index))
    return Desc(lo, segs)


def cut_pieces(st, node, d: Desc, sizes: list[int]):
    """Rule 22: a split of concatenated or shuffled channels: each piece is the segments it
    covers (parts of spaces), the emitter's split follows the active widths."""
    if not sizes or sum(sizes) != d.length:
        return None
    bounds = [0] + list(_cumsum(sizes))
    pieces = [cut_segs(d.segs, a, b) for a, b in zip(bounds, bounds[1:])]
    if any(not p for p in pieces):
        return None
    st.relayouts.append(("split", node.name, node.args[0].name, d.axis, d.segs, tuple(sizes)))
    return tuple(Desc(d.axis, p) for p in pieces)


def _cumsum(xs):
    total = 0
    for x in xs:
        total += x
        yield total


def permute_grid(g: Grid, perm) -> Grid:
    """Rule 22 with Rule 9: a permute/transpose moves a Grid's two axes."""
    return Grid(perm.index(g.outer), perm.index(g.axis), g.pieces, g.source)


def grid_misuse(st, node, kind: str) -> bool:
    """Rule 22: a Grid may only flow, as the only use of its tensor, through the reshapes,
    permutes and ``contiguous`` of a shuffle; anything else freezes it and is recorded."""
    grids = [a for a in node.all_input_nodes if isinstance(D(st, a), Grid)]
    if not grids:
        return False
    name = st.ir.info(node.name).kind
    if (kind in GRID_KINDS or (kind == "pass" and name in GRID_PASS)) and len(grids) == 1 \
            and len(grids[0].users) == 1 and node.args and node.args[0] is grids[0]:
        return False
    st.unsupported_(node.name, "Rule 22", f"{name} of channels split over two axes (only a "
                    "channel shuffle's view / transpose / view is understood)", HINT_SHUFFLE,
                    [D(st, a) for a in grids])
    return True


def min_active(segs, lowest: dict[int, int], find) -> int:
    """Channels a piece keeps when every space is at its smallest width (`lowest[root]`)."""
    return sum(min(max(lowest.get(find(s.space), s.start + s.size) - s.start, 0), s.size)
               * s.inner for s in segs)
