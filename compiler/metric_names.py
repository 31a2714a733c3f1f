"""Short, stable metric names for the terms of a train block.

Each ``regularize`` / ``constrain`` term is logged as ``reg/<name>`` and ``weight/<name>``
(metrics.jsonl, TensorBoard, summary.json). A name is the user's ``as NAME`` or, without one,
the term's atom (or set) and a word from its selector: ``l1_acts``, ``group_l2_layers``,
``spectral_ball_head``. Names are unique within the block: a repeated automatic name gets
``_2``, ``_3`` in statement order; a repeated ``as NAME`` is an error at the second one. The parts
of a statement split into several terms get ``_1``, ``_2``... after the user's name.
"""
from __future__ import annotations

import re
from typing import Any

from regspec import ast
from regspec.diagnostics import error

__all__ = ["assign_metric_names", "auto_name"]

#: selector words that say nothing about which tensor is meant
_GENERIC = frozenset({"weight", "re"})


def _selector_word(sel: Any) -> str:
    """``param("layers.*.weight")`` -> ``layers``; ``param("head.bias")`` -> ``head_bias``;
    ``param(type = Linear)`` -> ``linear``; ``output`` -> ``output``."""
    if getattr(sel, "pattern", None):
        words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", sel.pattern) if w not in _GENERIC]
        if not words:
            return "all"
        return words[0] if len(words) == 1 or words[-1] == words[0] else f"{words[0]}_{words[-1]}"
    if getattr(sel, "type", None):
        return str(sel.type).lower()
    return str(sel.kind)


def _atom_word(term: Any) -> str:
    """The atom as the spec spells it (``l1``, not its catalogue name ``norm1``), or the set."""
    node = term.expr_node
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id
    if term.name and term.name != "expr":
        return str(term.name)
    return str(term.atom or "expr")


def auto_name(term: Any) -> str:
    """The automatic name of one planned term (``TermPlan``), before making it unique."""
    raw = f"{_atom_word(term)}_{_selector_word(term.target)}"
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", raw)).strip("_") or "term"


def _user_names(body: list[Any]) -> dict[tuple[int, int], ast.MetricName]:
    """Statement position -> its ``as NAME``, checked unique in the block."""
    out: dict[tuple[int, int], ast.MetricName] = {}
    first: dict[str, ast.MetricName] = {}
    for s in body:
        m = getattr(s, "metric", None)
        if m is None:
            continue
        if m.name in first:
            raise error(f"the metric name `{m.name}` is already used in this block", m.span,
                        [f"first named at line {first[m.name].span.line}", "each `as NAME` names one term's metrics"])
        first[m.name] = m
        out[(s.span.line, s.span.column)] = m
    return out


def assign_metric_names(body: list[Any], terms: list[Any]) -> None:
    """Set ``term.metric`` on every term of a block (statements ``body``, planned ``terms``)."""
    named = _user_names(body)
    taken = {m.name: m for m in named.values()}
    auto: list[Any] = []
    for t in terms:
        m = named.get((t.span.line, t.span.column)) if t.span is not None else None
        if m is None:
            auto.append(t)
            continue
        t.metric = m.name if not t.part else f"{m.name}_{t.part.split(' ')[0]}"
        if t.part and t.metric in taken and taken[t.metric] is not m:
            raise error(f"`{m.name}` names a sum of several terms, logged as `{m.name}_1`, `{m.name}_2`...; "
                        f"`{t.metric}` is already a name in this block", taken[t.metric].span, ["rename one of them"])
        taken[t.metric] = m
    for t in auto:
        base = auto_name(t)
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        t.metric = name
        taken[name] = t
