"""The IR: a networkx view of a traced torch.fx graph with one frozen `NodeInfo` per node.

An `IRGraph` keeps the source `GraphModule` (so passes can read module attributes and fx
arguments) and a `networkx.DiGraph` whose nodes are fx node names, in fx (topological) order,
each carrying ``info: NodeInfo``; edges follow data flow. Analysis passes only read it.

Rules `lint` checks:
  1. Every fx node is a graph node with a `NodeInfo` whose name matches, and nothing else is.
  2. Edges are exactly the fx data-flow edges (argument -> user).
  3. The graph is acyclic and its node order is the fx order.
  4. Every node with a dtype has a shape, and every model input has one.

Example:
    >>> import torch
    >>> from compiler.capture import capture
    >>> ir = capture(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()),
    ...              (torch.randn(1, 3, 8, 8),))
    >>> [ir.info(n).kind for n in ir.names]
    ['placeholder', 'Conv2d', 'ReLU', 'output']
    >>> ir.info('_0').shape
    (1, 8, 6, 6)
    >>> lint(ir)
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Iterator

import networkx as nx
import torch
import torch.fx as fx

__all__ = ["NodeInfo", "IRGraph", "IRLintError", "lint"]


@dataclass(frozen=True)
class NodeInfo:
    """What capture knows of one fx node. Never mutated; passes derive their own results.

    ``kind`` is a short canonical name: the module class for ``call_module`` (``"Conv2d"``),
    the function or method name otherwise (``"add"``, ``"cat"``, ``"view"``), or the fx op for
    placeholders, ``get_attr`` and the output. ``shape``/``dtype`` describe a tensor output;
    ``tuple_shapes`` lists the shapes of a tuple/list output (``None`` entries for non-tensors).
    ``channel_axis`` is 1 for tensors of rank >= 2 and ``None`` otherwise: the layout convention of
    PyTorch convolutions; passes that follow permutes track the axis themselves.
    """

    name: str
    op: str
    target: str
    kind: str
    module_path: str | None = None
    module_type: str | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    tuple_shapes: tuple[tuple[int, ...] | None, ...] | None = None
    channel_axis: int | None = None
    stack_trace: str | None = None

    @property
    def is_tensor(self) -> bool:
        return self.shape is not None

    def location(self) -> str:
        """The user's source line that created this node (``file:line: code``), if recorded."""
        if not self.stack_trace:
            return ""
        lines = self.stack_trace.strip().splitlines()
        found = ""
        for i, line in enumerate(lines):  # frames run outermost first: keep the innermost
            line = line.strip()
            if line.startswith("File ") and "/torch/" not in line:
                where = line[5:].replace('"', "").replace(", line ", ":").split(", in ")[0]
                code = lines[i + 1].strip() if i + 1 < len(lines) else ""
                found = f"{where}: {code}"
        return found

    def describe(self) -> str:
        """``layer1.0.conv1 (Conv2d)`` for modules, ``add_3 (add)`` for functions."""
        if self.module_path is not None and self.op == "call_module":
            return f"{self.module_path} ({self.module_type})"
        return f"{self.name} ({self.kind})"


class IRLintError(ValueError):
    """An IR invariant does not hold; the message lists every violation."""


class IRGraph:
    """A captured model: the fx `GraphModule`, and a networkx DiGraph of `NodeInfo` nodes."""

    def __init__(self, gm: fx.GraphModule, graph: nx.DiGraph, input_shapes: tuple,
                 frontend: str = "fx"):
        self.gm = gm
        self.frontend = frontend  # "fx" or "export": which front end captured it
        self.graph = graph
        self.input_shapes = tuple(input_shapes)
        self._fx = {n.name: n for n in gm.graph.nodes}
        self._modules = dict(gm.named_modules())
        self.names: tuple[str, ...] = tuple(self._fx)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[NodeInfo]:
        return (self.info(n) for n in self.names)

    def __repr__(self) -> str:
        return f"IRGraph({type(self.gm).__name__}, {len(self)} nodes, inputs={self.input_shapes})"

    def info(self, name: str) -> NodeInfo:
        return self.graph.nodes[name]["info"]

    def fx_node(self, name: str) -> fx.Node:
        return self._fx[name]

    def module(self, path: str) -> torch.nn.Module:
        return self._modules[path]

    def get_attr(self, target: str):
        """The tensor (parameter or buffer) a ``get_attr`` node reads."""
        return operator.attrgetter(target)(self.gm)

    def users(self, name: str) -> list[str]:
        return [u.name for u in self._fx[name].users]

    def inputs(self, name: str) -> list[str]:
        return [a.name for a in self._fx[name].all_input_nodes]

    @property
    def placeholders(self) -> list[str]:
        return [n for n in self.names if self._fx[n].op == "placeholder"]

    @property
    def output(self) -> str:
        return next(n for n in self.names if self._fx[n].op == "output")

    def output_values(self) -> list[str]:
        """Names of the nodes whose values the model returns (flattening tuples/dicts)."""
        return [n.name for n in self._fx[self.output].all_input_nodes]

    def label(self, name: str) -> str:
        return self.info(name).describe()


def lint(ir: IRGraph) -> None:
    """Raise `IRLintError` listing every violated rule (see the module docstring)."""
    problems = []
    fx_names = [n.name for n in ir.gm.graph.nodes]
    if set(fx_names) != set(ir.graph.nodes):  # Rule 1
        problems.append(f"Rule 1: node sets differ: {set(fx_names) ^ set(ir.graph.nodes)}")
    for name in fx_names:
        info = ir.graph.nodes[name].get("info") if name in ir.graph else None
        if not isinstance(info, NodeInfo) or info.name != name:
            problems.append(f"Rule 1: {name} has no NodeInfo of its own")
        elif info.dtype is not None and info.shape is None:
            problems.append(f"Rule 4: {name} has a dtype but no shape")
    want = {(a.name, n.name) for n in ir.gm.graph.nodes for a in n.all_input_nodes}
    if want != set(ir.graph.edges):  # Rule 2
        problems.append(f"Rule 2: edges differ from fx data flow: {want ^ set(ir.graph.edges)}")
    if not nx.is_directed_acyclic_graph(ir.graph):  # Rule 3
        problems.append("Rule 3: the graph has a cycle")
    if list(ir.names) != fx_names:
        problems.append("Rule 3: node order differs from fx order")
    for name in ir.placeholders:
        if name in ir.graph and ir.graph.nodes[name].get("info") is not None \
                and ir.graph.nodes[name]["info"].shape is None:  # Rule 4
            problems.append(f"Rule 4: input {name} has no shape")
    if problems:
        raise IRLintError("IR lint failed:\n  " + "\n  ".join(problems))


def replace_info(info: NodeInfo, **changes) -> NodeInfo:
    """A copy of `info` with `changes` (NodeInfo is frozen)."""
    return dataclasses.replace(info, **changes)
