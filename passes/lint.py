"""lint_result: check an analysis result against the IR it was computed from.

Rules:
  1. Every node a result names exists in the IR.
  2. Width groups: group names are unique; every use's segments reference existing groups and
     their sizes add up to the length of the axis they describe (a layer's weight dim, a
     parameter's dim); a segment is its whole group, or a part within it of a group that a
     channel shuffle or split cuts (find_width_groups' Rule 22); a frozen group has exactly
     one choice, its size; choices descend from the group's size.
  3. Blocks: a block's input and output have the same shape; a stage's blocks are chained
     (each exit is the next entry); no node is in two blocks.
  4. Kernels: each elastic kernel names a conv whose kernel size matches and whose choices
     descend in steps of 2.

Example:
    >>> import torch
    >>> from compiler.capture import capture
    >>> from passes.find_width_groups import find_width_groups
    >>> ir = capture(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1)), torch.zeros(1, 3, 4, 4))
    >>> lint_result(ir, find_width_groups(ir))
"""
from __future__ import annotations

import torch

from compiler.ir import IRGraph, IRLintError
from passes.find_elastic_kernels import ElasticKernels
from passes.find_skippable_blocks import SkippableBlocks
from passes.find_width_groups import WidthGroups

__all__ = ["lint_result"]


def _axis_length(ir: IRGraph, node: str, role: str, dim: int) -> int | None:
    info = ir.info(node)
    if info.op == "get_attr":
        return info.shape[dim] if info.shape else None
    if info.op != "call_module":
        return None
    weight = getattr(ir.module(info.module_path), "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    return weight.shape[1] if role == "in" else weight.shape[0]  # a grouped conv: one group


def _width_groups(ir: IRGraph, wg: WidthGroups, problems: list[str]) -> None:
    names = [g.name for g in wg.groups]
    if len(set(names)) != len(names):  # Rule 2
        problems.append(f"Rule 2: duplicate group names {sorted(n for n in names if names.count(n) > 1)}")
    sizes = {g.name: g.size for g in wg.groups}
    for g in wg.groups:
        if g.frozen and g.choices != (g.size,):
            problems.append(f"Rule 2: frozen group {g.name} has choices {g.choices}")
        if g.choices[0] != g.size or list(g.choices) != sorted(g.choices, reverse=True):
            problems.append(f"Rule 2: group {g.name} choices {g.choices} do not descend from "
                            f"{g.size}")
    for u in wg.uses:
        if u.node not in ir.graph:
            problems.append(f"Rule 1: use of unknown node {u.node}")
            continue
        for s in u.segments:
            if s.group not in sizes or s.start + s.size > sizes[s.group] \
                    or (s.start == 0 and s.size != sizes[s.group] and not _parted(wg, s.group)):
                problems.append(f"Rule 2: {u.node} segment {s} does not match its group")
        want = _axis_length(ir, u.node, u.role, u.dim)
        have = sum(s.size * s.inner for s in u.segments)
        if want is not None and want != have:
            problems.append(f"Rule 2: {u.node} ({u.role}) axis has {want} channels, "
                            f"segments cover {have}")


def _parted(wg: WidthGroups, group: str) -> bool:
    """Whether `group` is cut into parts by a channel shuffle or split (its Rule 22)."""
    return any(s.group == group for r in wg.relayouts for s in r.segments)


def _blocks(ir: IRGraph, blocks: SkippableBlocks, problems: list[str]) -> None:
    seen: set[str] = set()
    for stage in blocks.stages:
        for a, b in zip(stage.blocks, stage.blocks[1:]):
            if a.exit != b.entry:  # Rule 3
                problems.append(f"Rule 3: stage {stage.name}: {a.name} and {b.name} not chained")
        for b in stage.blocks:
            missing = [n for n in (b.entry, *b.nodes) if n not in ir.graph]
            if missing:
                problems.append(f"Rule 1: block {b.name} names unknown nodes {missing}")
                continue
            if ir.info(b.entry).shape != ir.info(b.exit).shape:
                problems.append(f"Rule 3: block {b.name} changes shape")
            if seen & set(b.nodes):
                problems.append(f"Rule 3: block {b.name} overlaps another block")
            seen |= set(b.nodes)


def _kernels(ir: IRGraph, kernels: ElasticKernels, problems: list[str]) -> None:
    for k in kernels.kernels:
        if k.node not in ir.graph:
            problems.append(f"Rule 1: kernel of unknown node {k.node}")
            continue
        conv = ir.module(ir.info(k.node).module_path)
        if conv.kernel_size[0] != k.kernel_size or k.choices[0] != k.kernel_size or any(
                a - b != 2 for a, b in zip(k.choices, k.choices[1:])):
            problems.append(f"Rule 4: kernel {k.node} choices {k.choices} do not fit "
                            f"{conv.kernel_size}")


def lint_result(ir: IRGraph, result) -> None:
    """Raise `IRLintError` listing every rule `result` breaks on `ir`."""
    problems: list[str] = []
    checkers = {WidthGroups: _width_groups, SkippableBlocks: _blocks, ElasticKernels: _kernels}
    checker = checkers.get(type(result))
    if checker is None:
        raise TypeError(f"no lint rules for {type(result).__name__}")
    checker(ir, result, problems)
    for u in getattr(result, "unsupported", ()):
        if u.node not in ir.graph:
            problems.append(f"Rule 1: unsupported record names unknown node {u.node}")
    if problems:
        raise IRLintError(f"{type(result).__name__} lint failed:\n  " + "\n  ".join(problems))
