"""Train-block terms as expressions of the language, typed by the problem passes.

``regularize`` takes any expression of catalogue atoms over tensors named by selectors
(``param(...)``, ``act(...)``, ``output``, ``input``, ``target``). Each distinct selector becomes
a leaf: a ``var`` node of a small IR, built by the problem builder, so that names, keywords and
argument counts (``resolve_names``), static keywords (``evaluate_constants``), shapes
(``infer_shapes``, once the selectors are bound to tensors) and curvature (``analyse_curvature``)
are checked by the same passes as in a ``problem``.

The typed expression is kept as plain data (``TermExpr.tree``, nested lists of numbers and
strings) that the torch runtime evaluates with each atom's torch lowering and that the trainer
generator can print as a literal:

    ["sel", i]                               the tensor bound to selector i
    ["const", value]                          a number or a (nested) list
    ["call", atom, [args], {static}, {tensor keywords}]

Pure Python: no torch, no cvxpy (``regspec check`` types train blocks too).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from regspec import ast
from regspec.compiler.build import _Builder
from regspec.compiler.ir import IR
from regspec.diagnostics import RegspecError, Span, error

__all__ = ["SELECTOR_NAMES", "TermExpr", "Part", "selector_key", "selector_nodes", "type_expression", "split_parts",
           "expr_text", "array_value"]

#: bare names that select tensors of the batch
SELECTOR_NAMES = ("output", "input", "target")
SELECTOR_CALLS = ("param", "act")


def selector_key(e: ast.Expr) -> tuple | None:
    """A hashable key for a selector node (None when ``e`` is not a selector): two occurrences of
    the same selector text are one leaf (the same tensors)."""
    if isinstance(e, ast.Name) and e.id in SELECTOR_NAMES:
        return (e.id,)
    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in SELECTOR_CALLS:
        args = tuple(a.value if isinstance(a, ast.Str) else repr(a) for a in e.args)
        kwargs = tuple(sorted((k.name, getattr(k.value, "id", getattr(k.value, "value", repr(k.value))))
                              for k in e.kwargs))
        return (e.func.id, args, kwargs)
    return None


def selector_nodes(e: ast.Expr) -> list[ast.Expr]:
    """The selector nodes of an expression, first occurrence of each, in source order."""
    out: list[ast.Expr] = []
    seen: set[tuple] = set()

    def walk(x: ast.Expr) -> None:
        key = selector_key(x)
        if key is not None:
            if key not in seen:
                seen.add(key)
                out.append(x)
            return
        for child in _children(x):
            walk(child)

    walk(e)
    return out


def _children(x: ast.Expr) -> list[ast.Expr]:
    if isinstance(x, ast.Call):
        return [*x.args, *(k.value for k in x.kwargs)]
    if isinstance(x, ast.ListExpr):
        return list(x.items)
    if isinstance(x, ast.Index):
        return [x.obj]
    kids = getattr(x, "children", None)
    return list(kids()) if callable(kids) else []


@dataclass
class Part:
    """One additive part of a term: ``scale * expr`` (scale a constant >= 0)."""

    scale: float
    node: ast.Expr


def split_parts(e: ast.Expr, lets: dict[str, Any]) -> list[Part]:
    """``a + b`` -> [a, b] and ``c * a`` / ``a * c`` / ``a / c`` with a constant c >= 0 -> c * a,
    recursively: the additive parts a split lowers one by one (CATALOGUE §3, separable sums).
    Anything else (a difference, a negative scale) is one part."""
    if isinstance(e, ast.BinOp) and e.op == "+":
        return split_parts(e.left, lets) + split_parts(e.right, lets)
    if isinstance(e, ast.BinOp) and e.op in ("*", "/"):
        const, other = (_constant(e.left, lets), e.right) if e.op == "*" else (None, e.left)
        if const is None:
            const, other = _constant(e.right, lets), e.left
            if const is not None and e.op == "/":
                const = 1.0 / const if const != 0 else None
        if const is not None and const >= 0 and selector_nodes(other):
            return [Part(p.scale * const, p.node) for p in split_parts(other, lets)]
    return [Part(1.0, e)]


def _constant(e: ast.Expr, lets: dict[str, Any]) -> float | None:
    if isinstance(e, ast.Num):
        return float(e.value)
    if isinstance(e, ast.Name) and isinstance(lets.get(e.id), (int, float)) and not isinstance(lets[e.id], bool):
        return float(lets[e.id])
    if isinstance(e, ast.Neg):
        v = _constant(e.operand, lets)
        return None if v is None else -v
    if isinstance(e, ast.BinOp) and e.op in ("*", "/"):
        a, b = _constant(e.left, lets), _constant(e.right, lets)
        if a is None or b is None or (e.op == "/" and b == 0):
            return None
        return a * b if e.op == "*" else a / b
    return None


class _TermBuilder(_Builder):
    """The problem builder, with selectors as variables and the block's `let` values as constants."""

    def __init__(self, ir: IR, leaves: dict[tuple, int], shapes: Sequence[tuple[int, ...] | None],
                 lets: dict[str, Any], texts: Sequence[str]):
        super().__init__(ir)
        self.leaves, self.shapes, self.lets, self.texts = leaves, shapes, lets, texts
        self.vars: dict[int, int] = {}

    def expr(self, e: ast.Expr) -> int:
        key = selector_key(e)
        if key is not None:
            i = self.leaves[key]
            if i not in self.vars:
                dims = [self.ir.add("const", e.span, value=int(d)) for d in (self.shapes[i] or ())]
                self.vars[i] = self.ir.add("var", e.span, dims, name=self.texts[i], domain=None, leaf=i)
            return self.vars[i]
        if isinstance(e, ast.Name) and e.id in self.lets:
            return self.ir.add("const", e.span, value=self.lets[e.id])
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in ("param", "act"):
            raise error(f"{e.func.id}(...) takes a name pattern or `type = ...`", e.span)
        if isinstance(e, (ast.Arrow, ast.Range)) or _is_schedule_call(e):  # not "unknown regularizer `step`"
            raise error("a schedule weights a whole statement (`regularize TERM * SCHEDULE`), not a part of it",
                        e.span, ["give each scheduled part its own `regularize` statement"])
        return super().expr(e)


def _is_schedule_call(e: ast.Expr) -> bool:
    from regspec.backends.torch.train.schedules import SCHEDULES  # pure Python: no torch
    from regspec.compiler.catalogue import ATOMS

    return (isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in SCHEDULES
            and e.func.id not in ATOMS)  # `exp` is both: an atom here


@dataclass
class TermExpr:
    """A typed term expression. ``leaves``: selector index per distinct selector, in order;
    ``direct``: the atom when the expression is ``atom(selector, keywords)`` (a prox candidate),
    with its static keywords ``direct_kw``; ``curvature``/``sign``/``smooth`` from the passes;
    ``nonsmooth``: the atoms that make it nonsmooth."""

    tree: Any
    text: str
    curvature: str
    sign: str
    smooth: bool
    nonsmooth: list[str] = field(default_factory=list)
    direct: str | None = None
    direct_kw: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    dcp_note: str | None = None
    lets: dict[str, Any] = field(default_factory=dict, repr=False)

    def typed(self) -> str:
        curv = self.curvature if self.curvature != "unknown" else "not DCP-convex (a local method: fine for training)"
        smooth = "smooth" if self.smooth else f"nonsmooth ({', '.join(self.nonsmooth)})"
        shape = "" if self.shape is None else (" : scalar" if self.shape == () else f" : {list(self.shape)}")
        return f"{self.text}{shape}, {curv}, {smooth}"


def type_expression(e: ast.Expr, selectors: Sequence[ast.Expr], lets: dict[str, Any],
                    shapes: Sequence[tuple[int, ...] | None] | None = None, what: str = "the term") -> TermExpr:
    """Build and type ``e`` (its selectors bound to ``shapes``, or unshaped when None: then only
    names, keywords and curvature are checked). Errors are located at the offending span."""
    from regspec.compiler.catalogue import ATOMS
    from regspec.compiler.passes.constants import evaluate_constants
    from regspec.compiler.passes.curvature import analyse_curvature
    from regspec.compiler.passes.resolve import resolve_names
    from regspec.compiler.passes.shapes import infer_shapes

    keys = {selector_key(s): i for i, s in enumerate(selectors)}
    texts = [_span_text(s.span) or repr(selector_key(s)) for s in selectors]
    ir = IR("term", "train")
    builder = _TermBuilder(ir, keys, shapes or [None] * len(selectors), lets, texts)
    root = builder.expr(e)
    ir.add("regularize", e.span, [root], via=None)
    resolve_names(ir)
    evaluate_constants(ir)
    if shapes is not None:
        infer_shapes(ir)
    analyse_curvature(ir)
    d = ir[root]
    nonsmooth = sorted({ir[n]["atom"] for n in ir.nodes_of("call")
                        if "value" not in ir[n] and not ATOMS[ir[n]["atom"]].smooth
                        and ir[n]["atom"] not in ("index", "transpose", "reshape", "vec")})
    out = TermExpr(_tree(ir, root), _span_text(e.span), d["curvature"].value, d["sign"].value, not nonsmooth,
                   nonsmooth, shape=d.get("shape") if shapes is not None else None, lets=dict(lets))
    core = _direct_core(ir, root)
    if core is not None:
        out.direct = ir[core]["atom"]
        out.direct_kw = {k: _plain(v) for k, v in ir[core].get("static", {}).items() if not k.startswith("_")}
    if d.get("dcp_reason"):
        out.dcp_note = d["dcp_reason"]
    if "value" in d:
        raise error(f"{what} `{out.text}` is a constant: it names no tensor", e.span)
    return out


def _direct_core(ir: IR, root: int) -> int | None:
    """The node of ``f(selector)`` when the term is ``f(selector)`` or ``sum(f(selector))`` with f
    elementwise (the forms whose prox is f's kernel, as the problem split reads them), else None."""
    from regspec.compiler.catalogue import ATOMS
    from regspec.compiler.catalogue.base import Elementwise

    def on_leaf(node: int) -> bool:
        d = ir[node]
        return (d["kind"] == "call" and len(d["args"]) == 1 and ir[d["args"][0]]["kind"] == "var"
                and not d.get("tensor_kwargs"))

    d = ir[root]
    if d["kind"] != "call":
        return None
    if d["atom"] == "sum" and d.get("static", {}).get("axis") is None and ir[d["args"][0]]["kind"] == "call":
        inner = d["args"][0]
        if on_leaf(inner) and isinstance(ATOMS[ir[inner]["atom"]], Elementwise):
            return inner
    return root if on_leaf(root) else None


def _tree(ir: IR, node: int) -> Any:
    d = ir[node]
    if d["kind"] == "var":
        return ["sel", int(d["leaf"])]
    if "value" in d and d["kind"] != "var":
        return ["const", _plain(d["value"])]
    if d["kind"] == "list":
        return ["const", [_plain(ir[a].get("value")) for a in d["args"]]]
    if d["kind"] != "call":
        raise error(f"cannot use `{ir.text(node)}` in a train term", d.get("span"))
    static = {k: _plain(v) for k, v in d.get("static", {}).items()}
    tkw = {k: _tree(ir, v) for k, v in d.get("tensor_kwargs", {}).items()}
    return ["call", d["atom"], [_tree(ir, a) for a in d["args"]], static, tkw]


def _plain(v: Any) -> Any:
    """Numbers, strings, lists (numpy arrays become {"array": nested list}); slices stay slices."""
    import numpy as np

    if isinstance(v, np.ndarray):
        return {"array": v.tolist()} if v.ndim else v.item()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def array_value(v: Any) -> Any:
    """The inverse of ``_plain`` for static keywords: {"array": list} -> numpy array."""
    import numpy as np

    if isinstance(v, dict) and set(v) == {"array"}:
        return np.asarray(v["array"])
    if isinstance(v, tuple):
        return tuple(array_value(x) for x in v)
    return v


def expr_text(tree: Any, names: Sequence[str]) -> str:
    """A readable rendering of a tree with selector i shown as ``names[i]``."""
    kind = tree[0]
    if kind == "sel":
        return names[tree[1]]
    if kind == "const":
        return repr(tree[1])
    args = [expr_text(a, names) for a in tree[2]]
    kws = [f"{k}={v!r}" for k, v in tree[3].items() if not k.startswith("_")]
    kws += [f"{k}={expr_text(v, names)}" for k, v in tree[4].items()]
    return f"{tree[1]}({', '.join(args + kws)})"


def _span_text(span: Span | None) -> str:
    from regspec.compiler.train_plan import span_text

    return span_text(span)


def relocate(exc: RegspecError, notes: list[str]) -> RegspecError:
    """``exc`` with ``notes`` added (what the selectors matched)."""
    d = exc.first
    return error(d.message, d.span, [*d.notes, *notes])
