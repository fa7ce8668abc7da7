"""Human-readable renderings of an `Analysis`: a text report, Graphviz DOT, and ``--why NODE``."""
from __future__ import annotations

import math

from compiler.pipeline import Analysis

_PALETTE = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69",
            "#fccde5", "#bc80bd", "#ccebc5", "#ffed6f", "#a6cee3", "#b2df8a", "#fb9a99")


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + fmt.format(*header).rstrip(),
            *("  " + fmt.format(*map(str, r)).rstrip() for r in rows)]


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def space_dict(net) -> dict:
    """The search space of a SuperNetwork: exact size, log10, dimensions, MACs/params range."""
    space, lo, hi = net.space, net.min_config(), net.max_config()
    return {"size": str(space.size), "log10_size": round(math.log10(space.size), 3),
            "dimensions": [{"name": n, "kind": space[n].kind, "choices": list(space[n].choices)}
                           for n in space.names],
            "macs": {"max": net.macs(hi), "min": net.macs(lo)},
            "params": {"max": net.params(hi), "min": net.params(lo)}}


def _space_lines(space: dict | None) -> list[str]:
    if space is None:
        return []
    if "error" in space:
        return ["", f"Search space: could not be built: {space['error']}"]
    kinds = {}
    for d in space["dimensions"]:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    out = ["", f"Search space: {len(space['dimensions'])} dimensions ("
           + ", ".join(f"{n} {k}" for k, n in kinds.items()) + f"), {float(space['size']):.3g} "
           f"sub-networks (log10 {space['log10_size']:.2f})",
           f"  MACs {space['macs']['min'] / 1e6:.1f}M .. {space['macs']['max'] / 1e6:.1f}M, "
           f"params {space['params']['min'] / 1e6:.2f}M .. {space['params']['max'] / 1e6:.2f}M"]
    out += [f"  {d['name']:<32} {','.join(map(str, d['choices']))}"
            for d in space["dimensions"] if d["kind"] != "width"]
    return out


def to_text(a: Analysis, title: str = "", space: dict | None = None) -> str:
    s = a.to_dict()["summary"]
    log10 = f" | log10 search space {space['log10_size']:.2f}" if space and "error" not in space \
        else ""
    out = [title or type(a.ir.gm).__name__,
           f"{s['nodes']} nodes | {s['elastic_width_groups']} elastic / {s['width_groups']} width "
           f"groups | {s['skippable_blocks']} skippable blocks in {s['stages']} stages | "
           f"{s['elastic_kernels']} elastic kernels | {s['unsupported']} unsupported{log10}", "",
           "Width groups"]
    rows = [[g.name, g.size, len(g.producers), len(g.members),
             ",".join(map(str, g.choices)),
             "frozen: " + _short("; ".join(g.reasons)) if g.frozen else "elastic"]
            for g in a.width_groups.groups]
    out += _table(rows, ["group", "size", "producers", "members", "choices", "state"])
    out += ["", "Stages (depth: a configuration skips a suffix of each stage's blocks)"]
    for stage in a.blocks.stages:
        out.append(f"  {stage.name}: {len(stage.blocks)} blocks")
        for b in stage.blocks:
            out.append(f"    {b.name:<24} {b.entry} -> {b.exit}  "
                       f"{'residual' if b.residual else 'plain'}, {len(b.nodes)} nodes")
    if not a.blocks.stages:
        out.append("  (none)")
    out += ["", "Elastic kernels"]
    rows = [[k.module_path, k.kernel_size, ",".join(map(str, k.choices)),
             ",".join(map(str, k.paddings)), "yes" if k.depthwise else "no"]
            for k in a.kernels.kernels]
    out += _table(rows, ["conv", "kernel", "choices", "paddings", "depthwise"]) if rows \
        else ["  (none)"]
    out += ["", "Unsupported (frozen at full width, never skipped)"]
    out += [f"  {u}" for u in a.unsupported] or ["  (none)"]
    out += _space_lines(space)
    out += ["", "Timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in a.timings_ms.items())]
    return "\n".join(out)


def why(a: Analysis, node: str) -> str:
    info = a.ir.info(node)
    lines = [f"{node}: {info.describe()}, output {info.shape}, {info.location() or 'no source'}"]
    lines += ["  " + ln for ln in a.width_groups.why(node)] or ["  no channel role (its channels "
                                                               "pass through or it has none)"]
    for stage in a.blocks.stages:
        for b in stage.blocks:
            if node in b.nodes or node == b.entry:
                role = "entry of" if node == b.entry else "inside"
                lines.append(f"  {role} skippable block {b.name} (stage {stage.name})")
    lines += [f"  elastic kernel: choices {k.choices}" for k in a.kernels.kernels
              if k.node == node]
    lines += [f"  unsupported: {u}" for u in a.unsupported if u.node == node
              and u not in a.width_groups.unsupported]
    return "\n".join(lines)


def _node_colors(a: Analysis) -> dict[str, str]:
    color = {g.name: ("#d9d9d9" if g.frozen else _PALETTE[i % len(_PALETTE)])
             for i, g in enumerate(a.width_groups.groups)}
    out = {}
    for u in a.width_groups.uses:
        if u.role in ("out", "dw", "norm", "param") and u.node not in out:
            out[u.node] = color[u.segments[0].group]
    return out


def to_dot(a: Analysis) -> str:
    """Nodes coloured by the width group of their output (grey: frozen), blocks outlined."""
    colors = _node_colors(a)
    lines = ["digraph supernet {", "  node [shape=box, style=filled, fontsize=10];"]
    in_block = {}
    for stage in a.blocks.stages:
        for b in stage.blocks:
            in_block.update({n: b.name for n in b.nodes})
    clusters: dict[str, list[str]] = {}
    for name in a.ir.names:
        label = a.ir.label(name).replace('"', "'")
        decl = f'"{name}" [label="{label}", fillcolor="{colors.get(name, "white")}"];'
        clusters.setdefault(in_block.get(name, ""), []).append(decl)
    lines += [f"  {d}" for d in clusters.pop("", [])]
    for i, (block, decls) in enumerate(clusters.items()):
        lines.append(f'  subgraph cluster_{i} {{ label="{block}"; style=dashed; color=blue;')
        lines += [f"    {d}" for d in decls]
        lines.append("  }")
    lines += [f'  "{u}" -> "{v}";' for u, v in a.ir.graph.edges]
    lines.append("}")
    return "\n".join(lines)
