"""The optimization graph: a DiGraph (``compiler.digraph``, networkx's API) of one block's expression DAG.

Nodes are integers with attributes; ``kind`` is one of

- ``data`` (name, value), ``param`` (name, value, domain), ``var`` (name, shape, domain): declarations;
- ``const`` (value: a number, string, symbol or array), ``ref`` (name; removed by name resolution);
- ``call`` (atom, args: ordered list of node ids, kwargs: name -> node id): an atom application;
- ``objective`` (sense, args=[expr]), ``constraint`` (op, args=[lhs, rhs] or [lhs] with a set),
  ``regularize`` (via, args=[term]).

The ordered ``args`` list is the source of truth for operands (an expression may use one operand
twice, which a DiGraph edge cannot say); edges mirror it for ordering and traversal. ``let``
names point at the node of their expression, so a let used twice is one shared node.
Analyses add attributes: ``shape``, ``sign``, ``curvature``, ``value`` (for constants), ``role``.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Iterator

from regspec.compiler.digraph import DiGraph, ancestors, lexicographical_topological_sort
from regspec.diagnostics import Span

DECL_KINDS = ("data", "param", "var")
ROOT_KINDS = ("objective", "constraint", "regularize")
# Arrays (variables, parameters, generated data) are refused above this many entries, before
# anything is allocated: past it the solvers' 32-bit sparse indices overflow (CVXPY's problem
# data), and a float64 array of this size is already 16 GiB.
MAX_ELEMENTS = 2 ** 31 - 1


def _physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the platform does not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def size_error(shape: Iterable[int]) -> str | None:
    """Why an array of ``shape`` is refused, with its size named, or None when it is fine: more
    entries than ``MAX_ELEMENTS``, or one float64 copy larger than this machine's memory."""
    shape = tuple(int(n) for n in shape)
    size = 1
    for n in shape:
        size *= n
    gib = size * 8 / 2 ** 30
    if size > MAX_ELEMENTS:
        return (f"shape {shape} has {size:,} entries, more than the {MAX_ELEMENTS:,} regspec accepts "
                f"({gib:,.0f} GiB as float64)")
    memory = _physical_memory()
    if memory and size * 8 > memory:
        return (f"shape {shape} has {size:,} entries: {gib:,.1f} GiB as float64, more than this machine's "
                f"{memory / 2 ** 30:,.1f} GiB of memory")
    return None


class IR:
    def __init__(self, block_name: str, block_kind: str = "problem"):
        self.graph = DiGraph()
        self.block_name = block_name
        self.block_kind = block_kind
        self.scope: dict[str, int] = {}       # declared and let names -> node
        self.lets: dict[str, int] = {}        # let names only (for explain)
        self.meta: dict[str, Any] = {}        # pass results that are not per node (split, algorithm)
        self._next = 0

    # ---- construction
    def add(self, kind: str, span: Span | None, args: Iterable[int] = (), **attrs: Any) -> int:
        node = self._next
        self._next += 1
        args = list(args)
        self.graph.add_node(node, kind=kind, span=span, args=args, **attrs)
        for a in args:
            self.graph.add_edge(a, node)
        for k in attrs.get("kwargs", {}).values():
            self.graph.add_edge(k, node)
        return node

    def set_args(self, node: int, args: list[int]) -> None:
        for a in self.operands(node):
            if self.graph.has_edge(a, node):
                self.graph.remove_edge(a, node)
        self.graph.nodes[node]["args"] = list(args)
        for a in self.operands(node):
            self.graph.add_edge(a, node)

    def set_kwargs(self, node: int, kwargs: dict[str, int]) -> None:
        for a in self.operands(node):
            if self.graph.has_edge(a, node):
                self.graph.remove_edge(a, node)
        self.graph.nodes[node]["kwargs"] = dict(kwargs)
        for a in self.operands(node):
            self.graph.add_edge(a, node)

    # ---- queries
    def __getitem__(self, node: int) -> dict[str, Any]:
        return self.graph.nodes[node]

    def __iter__(self) -> Iterator[int]:
        return iter(self.graph.nodes)

    def args(self, node: int) -> list[int]:
        return self.graph.nodes[node].get("args", [])

    def kwargs(self, node: int) -> dict[str, int]:
        return self.graph.nodes[node].get("kwargs", {})

    def operands(self, node: int) -> list[int]:
        return [*self.args(node), *self.kwargs(node).values()]

    def nodes_of(self, *kinds: str) -> list[int]:
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] in kinds]

    def topological(self) -> list[int]:
        return list(lexicographical_topological_sort(self.graph))

    def ancestors(self, node: int) -> set[int]:
        return ancestors(self.graph, node)

    def depends_on_kind(self, node: int, kind: str) -> bool:
        return any(self[a]["kind"] == kind for a in self.ancestors(node) | {node})

    def variables(self) -> dict[str, int]:
        return {self[n]["name"]: n for n in self.nodes_of("var")}

    def params(self) -> dict[str, int]:
        return {self[n]["name"]: n for n in self.nodes_of("param")}

    def objective(self) -> int | None:
        objs = self.nodes_of("objective")
        return objs[0] if objs else None

    def copy(self) -> "IR":
        return copy.deepcopy(self)

    def remove_unused(self) -> None:
        """Drop nodes that no root (objective, constraint, regularizer) or declaration needs."""
        keep: set[int] = set()
        for n in self.nodes_of(*ROOT_KINDS, *DECL_KINDS):
            keep |= {n} | self.ancestors(n)
        self.graph.remove_nodes_from([n for n in list(self.graph) if n not in keep])

    # ---- display
    def text(self, node: int) -> str:
        """The source text of a node's span (for messages), or a rendering of the node."""
        d = self[node]
        if d["kind"] in DECL_KINDS:
            return d["name"]
        span: Span | None = d.get("span")
        if span is not None and span.source is not None and span.line == span.end_line:
            line = span.source.line(span.line)
            return line[span.column - 1: span.end_column - 1]
        return self.label(node)

    def label(self, node: int) -> str:
        d = self[node]
        k = d["kind"]
        if "display" in d:  # a node a pass made, named by what it computes
            return d["display"]
        if k in DECL_KINDS or k == "ref":
            return d["name"]
        if k == "const":
            v = d["value"]
            return repr(v) if not hasattr(v, "shape") or getattr(v, "ndim", 0) == 0 else f"array{tuple(v.shape)}"
        if k == "call":
            return d["atom"]
        if k == "source":
            return d["source"] + "(...) -> " + ", ".join(d["names"])
        if k == "set":
            return d["set"]
        return k

    def dump(self) -> str:
        """One line per node, in topological order: the format ``regspec explain`` prints."""
        lines = []
        for n in self.topological():
            d = self[n]
            parts = [f"%{n} = {d['kind']}"]
            if d["kind"] == "call":
                parts.append(d["atom"] + "(" + ", ".join(
                    [f"%{a}" for a in d["args"]] + [f"{k}=%{v}" for k, v in d.get("kwargs", {}).items()]) + ")")
            elif d["kind"] in ROOT_KINDS:
                extra = d.get("sense") or d.get("op") or d.get("via") or ""
                parts.append(f"{extra} " + ", ".join(f"%{a}" for a in d["args"]))
            else:
                parts.append(self.label(n))
            ann = []
            for key in ("shape", "sign", "curvature", "role"):
                if key in d and d[key] is not None:
                    v = d[key]
                    ann.append(f"{key}={getattr(v, 'value', v)}")
            names = d.get("let_names")
            if names:
                ann.append("let=" + ",".join(names))
            lines.append(" ".join(parts) + (("    # " + " ".join(ann)) if ann else ""))
        return "\n".join(lines)
