"""A small directed graph for the IR: nodes with attribute dicts, simple edges, ancestors and a
lexicographic topological order.

The IR needs only these few operations on graphs of tens to thousands of nodes; networkx offered
them at the price of ~370 imported modules (0.15-0.4 s), paid by every `regspec check`. The
method names and semantics are networkx's (``add_node``, ``add_edge``, ``nodes[n]``,
``nodes(data=True)``, ``successors``, ...), so code written against a networkx DiGraph reads the
same. Node iteration follows insertion order; an edge is present or not (no multi-edges).
"""
from __future__ import annotations

import heapq
from typing import Any, Hashable, Iterable, Iterator


class CycleError(ValueError):
    """The graph has a directed cycle, so it has no topological order."""


class NodeView:
    """``g.nodes[n]`` (the attribute dict), ``g.nodes(data=True)`` ((n, attrs) pairs), iteration."""

    def __init__(self, attrs: dict[Hashable, dict[str, Any]]):
        self._attrs = attrs

    def __getitem__(self, node: Hashable) -> dict[str, Any]:
        return self._attrs[node]

    def __call__(self, data: bool = False) -> Iterator[Any]:
        return iter(self._attrs.items()) if data else iter(self._attrs)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, node: object) -> bool:
        return node in self._attrs


class DiGraph:
    def __init__(self) -> None:
        self._attrs: dict[Hashable, dict[str, Any]] = {}
        self._succ: dict[Hashable, dict[Hashable, None]] = {}  # dicts as ordered sets
        self._pred: dict[Hashable, dict[Hashable, None]] = {}

    # ---- nodes
    @property
    def nodes(self) -> NodeView:
        return NodeView(self._attrs)

    def add_node(self, node: Hashable, **attrs: Any) -> None:
        if node not in self._attrs:
            self._attrs[node] = {}
            self._succ[node] = {}
            self._pred[node] = {}
        self._attrs[node].update(attrs)

    def remove_node(self, node: Hashable) -> None:
        if node not in self._attrs:
            raise KeyError(f"node {node!r} is not in the graph")
        for s in self._succ.pop(node):
            del self._pred[s][node]
        for p in self._pred.pop(node):
            del self._succ[p][node]
        del self._attrs[node]

    def remove_nodes_from(self, nodes: Iterable[Hashable]) -> None:
        for n in list(nodes):
            if n in self._attrs:
                self.remove_node(n)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, node: object) -> bool:
        return node in self._attrs

    # ---- edges
    def add_edge(self, u: Hashable, v: Hashable) -> None:
        self.add_node(u)
        self.add_node(v)
        self._succ[u][v] = None
        self._pred[v][u] = None

    def has_edge(self, u: Hashable, v: Hashable) -> bool:
        return u in self._succ and v in self._succ[u]

    def remove_edge(self, u: Hashable, v: Hashable) -> None:
        if not self.has_edge(u, v):
            raise KeyError(f"edge {u!r} -> {v!r} is not in the graph")
        del self._succ[u][v]
        del self._pred[v][u]

    def successors(self, node: Hashable) -> Iterator[Hashable]:
        return iter(self._succ[node])

    def predecessors(self, node: Hashable) -> Iterator[Hashable]:
        return iter(self._pred[node])

    def in_degree(self, node: Hashable) -> int:
        return len(self._pred[node])

    def number_of_edges(self) -> int:
        return sum(len(s) for s in self._succ.values())


def ancestors(graph: DiGraph, node: Hashable) -> set[Hashable]:
    """Every node with a path to ``node`` (``node`` itself excluded)."""
    seen: set[Hashable] = set()
    stack = list(graph.predecessors(node))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(graph.predecessors(n))
    seen.discard(node)  # on a cycle through it
    return seen


def lexicographical_topological_sort(graph: DiGraph) -> Iterator[Hashable]:
    """Kahn's algorithm taking the smallest ready node first: one deterministic order (the
    same as networkx's function of this name). Raises ``CycleError`` on a cycle."""
    indegree = {n: graph.in_degree(n) for n in graph}
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    emitted = 0
    while ready:
        n = heapq.heappop(ready)
        emitted += 1
        yield n
        for s in graph.successors(n):
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, s)
    if emitted != len(indegree):
        raise CycleError("the graph has a cycle; it has no topological order")


class NoCycle(Exception):
    """``find_cycle`` found no cycle (networkx's ``NetworkXNoCycle``)."""


def find_cycle(graph: DiGraph) -> list[tuple[Hashable, Hashable]]:
    """The edges ``[(a, b), (b, c), ..., (z, a)]`` of one directed cycle, found by depth-first
    search from the nodes in insertion order; raises ``NoCycle`` when there is none."""
    done: set[Hashable] = set()
    for root in graph:
        if root in done:
            continue
        path = [root]  # the current DFS path; on_path mirrors it for O(1) membership
        on_path = {root}
        todo = [iter(graph.successors(root))]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                todo.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                loop = path[path.index(nxt):] + [nxt]
                return list(zip(loop[:-1], loop[1:]))
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                todo.append(iter(graph.successors(nxt)))
    raise NoCycle("no cycle found")
