"""Op matching and block naming of `find_skippable_blocks` (its docstring is the spec; the op
families it matches come from the op table, `compiler.ops.OPS`)."""
from __future__ import annotations

import os
from collections import Counter

from compiler.ir import IRGraph, NodeInfo


def _is(info: NodeInfo, kinds) -> bool:
    """Whether a call node's op (`NodeInfo.kind`) is one of `kinds` (names from `OPS.names`)."""
    return info.op in ("call_module", "call_function", "call_method") and info.kind in kinds


def _scope(ir: IRGraph, name: str) -> str:
    stack = ir.fx_node(name).meta.get("nn_module_stack")
    if stack:
        last = next(reversed(stack.values()))
        return str(last[0] if isinstance(last, tuple) else last)
    info = ir.info(name)
    return info.target.rpartition(".")[0] if info.op == "get_attr" else info.module_path or ""


def _common_prefix(paths: list[str]) -> str:
    return ".".join(os.path.commonprefix([p.split(".") if p else [] for p in paths]))


def _unique_names(prefixes: list[str], scopes: list[list[str]], fallbacks: list[str]) -> list[str]:
    """Rule 13: the prefix; ``prefix[first..last]`` child when shared; else the fallback."""
    counts, names = Counter(prefixes), []
    for prefix, paths, fallback in zip(prefixes, scopes, fallbacks):
        kids = [p[len(prefix) + 1:].split(".")[0] for p in paths if p.startswith(prefix + ".")]
        if prefix and counts[prefix] == 1:
            names.append(prefix)
        elif prefix and kids:
            span = kids[0] if kids[0] == kids[-1] else f"{kids[0]}..{kids[-1]}"
            names.append(f"{prefix}[{span}]")
        else:
            names.append(fallback)
    again = Counter(names)
    return [n if again[n] == 1 else f for n, f in zip(names, fallbacks)]
