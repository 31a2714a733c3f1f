"""Structure the first-order backend exploits, recognized on the IR before the split:

- ``rewrite_smooth_forms``: ``norm2(e) ** 2``, ``square(norm2(e))``, ``pnorm(e, 2) ** 2`` become
  ``sum_squares(e)`` and ``quad_over_lin(e, c)`` with a constant c > 0 becomes ``sum_squares(e) / c``
  (e affine): the same function, smooth, where the written form composes a nonsmooth norm;
- ``separable_prox``: a term whose prox is a kernel call: an atom with a catalogue ``Prox`` applied
  to one argument, or ``sum(f(e))`` with f an elementwise atom whose ``Prox`` is the prox of the sum
  of f over the entries (``sum(pos(e))``, ``sum(abs(e) ** 1.5)``, ``sum(entr(x))``, ``sum(inv_pos(x))``,
  the deadzone ``sum(pos(abs(e) - a))`` or ``sum(max(abs(e) - a, 0))``);
- ``sublevel_set``: a constraint ``s * norm(e) <= c`` (c, s > 0 constants) is ``e`` in a norm ball
  of radius c / s (l1, l2, linf; ``sum_squares(e) <= c`` is the l2 ball of radius sqrt(c)), and
  ``norm2(e) <= t`` with t affine is ``[e; t]`` in the second-order cone: both are projections.

Numpy only (no torch, no cvxpy): kernel names are checked when the torch backend lowers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regspec.compiler.catalogue import ATOMS, Curvature, Sign
from regspec.compiler.ir import IR


# ------------------------------------------------------------------------------------------------
# smooth forms
# ------------------------------------------------------------------------------------------------


def _is_call(ir: IR, node: int, atom: str | tuple[str, ...]) -> bool:
    d = ir[node]
    names = (atom,) if isinstance(atom, str) else atom
    return d["kind"] == "call" and "value" not in d and d.get("atom") in names


def _scalar_constant(ir: IR, node: int) -> float | None:
    """The value of a compile-time scalar constant (not a parameter), else None."""
    d = ir[node]
    if d["curvature"] is not Curvature.CONSTANT or tuple(d["shape"]) != () or ir.depends_on_kind(node, "param"):
        return None
    if "value" not in d:
        return None
    try:
        return float(np.asarray(d["value"], dtype=float))
    except (TypeError, ValueError):
        return None


def _whole_l2_norm_arg(ir: IR, node: int) -> int | None:
    """e when ``node`` is the l2 norm of all entries of an affine e (norm2(e) or pnorm(e, 2))."""
    d = ir[node]
    if not _is_call(ir, node, ("norm2", "pnorm")) or d.get("static", {}).get("axis") is not None:
        return None
    if d["atom"] == "pnorm" and float(d["static"].get("p", 2)) != 2.0:
        return None
    if d.get("tensor_kwargs"):
        return None
    arg = d["args"][0]
    return arg if ir[arg]["curvature"] is Curvature.AFFINE else None


def _squared_norm_arg(ir: IR, node: int) -> int | None:
    """e when ``node`` is ``norm2(e) ** 2`` or ``square(norm2(e))``, e affine."""
    d = ir[node]
    if _is_call(ir, node, "power") and d.get("static", {}).get("_exponent") == 2:
        return _whole_l2_norm_arg(ir, d["args"][0])
    if _is_call(ir, node, "square") and tuple(d["shape"]) == ():
        return _whole_l2_norm_arg(ir, d["args"][0])
    return None


def _replace_uses(ir: IR, old: int, new: int) -> None:
    for succ in list(ir.graph.successors(old)):
        if succ == new:
            continue
        ir.set_args(succ, [new if a == old else a for a in ir.args(succ)])
        kw = ir.kwargs(succ)
        if old in kw.values():
            ir.set_kwargs(succ, {k: (new if v == old else v) for k, v in kw.items()})
        tkw = ir[succ].get("tensor_kwargs")
        if tkw and old in tkw.values():
            ir[succ]["tensor_kwargs"] = {k: (new if v == old else v) for k, v in tkw.items()}


def _call(ir: IR, like: int, atom: str, args: list[int], curvature: Curvature, sign: Sign,
          display: str, static: dict[str, Any] | None = None) -> int:
    return ir.add("call", ir[like].get("span"), args, atom=atom, kwargs={}, static=static or {}, tensor_kwargs={},
                  shape=(), curvature=curvature, sign=sign, dcp_reason=None, display=display)


def rewrite_smooth_forms(ir: IR) -> list[tuple[str, int]]:
    """Rewrite squared l2 norms of affine expressions to ``sum_squares`` (in place); returns what
    was rewritten, in words, with the new node (``regspec explain`` prints it)."""
    done: list[tuple[str, int]] = []
    for node in list(ir.topological()):
        if node not in ir.graph or ir[node]["kind"] != "call":
            continue
        arg = _squared_norm_arg(ir, node)
        divisor = None
        if arg is None and _is_call(ir, node, "quad_over_lin"):
            e, s = ir[node]["args"]
            c = _scalar_constant(ir, s)
            if c is not None and c > 0 and ir[e]["curvature"] is Curvature.AFFINE:
                arg, divisor = e, s
        if arg is None:
            continue
        text = ir.text(node)
        new = _call(ir, node, "sum_squares", [arg], Curvature.CONVEX, Sign.NONNEG, f"sum_squares({ir.text(arg)})")
        ir[new]["rewritten_from"] = node
        if divisor is not None:
            new = _call(ir, node, "divide", [new, divisor], Curvature.CONVEX, Sign.NONNEG,
                        f"sum_squares({ir.text(arg)}) / {ir.text(divisor)}")
        _replace_uses(ir, node, new)
        ir[new]["rewritten_from"] = node
        done.append((f"`{text}` rewritten to the smooth `{ir[new]['display']}`", new))
    return done


# ------------------------------------------------------------------------------------------------
# separable proxes
# ------------------------------------------------------------------------------------------------


@dataclass
class SeparableProx:
    """``weight * sum_i f(arg_i)`` (or ``weight * f(arg)``) whose prox is ``kernel``: ``node`` is the
    atom's node (its keywords give the kernel's through its ``Prox.hyper``), ``hyper`` fixed extra
    keywords (a power's exponent), ``negated``: the kernel is the prox of ``-f`` (concave f)."""

    kernel: str
    node: int
    arg: int
    hyper: dict[str, Any] = field(default_factory=dict)
    negated: bool = False
    summed: bool = False
    lam_node: int | None = None   # sum(w * f(e)): the constant weights w >= 0 (per entry)
    count: int = 1                # mean(f(e)) = sum(f(e)) / count
    data_arg: int | None = None   # kl_div(x, y) / rel_entr(x, y) with y constant: the node of y
    hyper_nodes: dict[str, int] = field(default_factory=dict)  # kernel keywords given by scalar data or parameters


def _prox_of(ir: IR, node: int):
    d = ir[node]
    atom = ATOMS.get(d.get("atom", ""))
    if atom is None:
        return None
    chooser = getattr(atom, "prox_for", None)
    return chooser(dict(d.get("static", {}))) if chooser is not None else atom.prox


def _power_of_abs(ir: IR, node: int) -> SeparableProx | None:
    """``abs(e) ** p`` (p >= 1): the separable |.|^p of e."""
    d = ir[node]
    if not _is_call(ir, node, "power"):
        return None
    p = d.get("static", {}).get("_exponent")
    base = d["args"][0]
    if p is None or float(p) < 1 or not _is_call(ir, base, "abs"):
        return None
    return SeparableProx("power_abs", node, ir[base]["args"][0], {"p": float(p)})


def _scalar_data(ir: IR, node: int) -> bool:
    """A scalar known at solve time: a constant or an expression of parameters (no variable)."""
    d = ir[node]
    return tuple(d["shape"]) == () and d["curvature"] is Curvature.CONSTANT and d["sign"].nonneg


def _deadzone(ir: IR, node: int) -> SeparableProx | None:
    """``pos(abs(e) - a)`` or ``max(abs(e) - a, 0)`` (a >= 0 a scalar constant or parameter): the
    deadzone-linear penalty max(|e| - a, 0) of e (Boyd & Vandenberghe 6.1.2)."""
    d = ir[node]
    if _is_call(ir, node, "pos") and len(d["args"]) == 1:
        shifted = d["args"][0]
    elif _is_call(ir, node, "max") and len(d["args"]) == 2 and _scalar_constant(ir, d["args"][1]) == 0.0:
        shifted = d["args"][0]
    else:
        return None
    if not _is_call(ir, shifted, "sub"):
        return None
    mag, a = ir[shifted]["args"]
    if not _is_call(ir, mag, "abs") or not _scalar_data(ir, a) or tuple(ir[shifted]["shape"]) != tuple(ir[mag]["shape"]):
        return None
    return SeparableProx("deadzone", node, ir[mag]["args"][0], hyper_nodes={"a": a})


def separable_prox(ir: IR, core: int) -> SeparableProx | None:
    """The prox kernel of a term's core, when it has one (see the module docstring)."""
    d = ir[core]
    if d["kind"] != "call" or "value" in d:
        return None
    node, summed, lam_node, count = core, False, None, 1
    if d["atom"] in ("sum", "mean") and d.get("static", {}).get("axis") is None:
        if d["atom"] == "mean":
            count = int(np.prod(ir[d["args"][0]]["shape"], dtype=np.int64))
        inner = d["args"][0]
        if ir[inner]["kind"] != "call" or "value" in ir[inner]:
            return None
        weighted = _weighted(ir, inner)
        if weighted is not None:
            lam_node, inner = weighted
        from regspec.compiler.catalogue.base import Elementwise

        inner_atom = ATOMS.get(ir[inner]["atom"])
        if not (isinstance(inner_atom, Elementwise) or ir[inner]["atom"] in ("power", "max")):
            return None
        node, summed = inner, True
    elif tuple(d["shape"]) != ():
        return None
    found = _power_of_abs(ir, node) or _deadzone(ir, node)
    if found is not None:
        found.summed, found.lam_node, found.count = summed, lam_node, count
        return found
    prox = _prox_of(ir, node)
    if prox is None:
        return None
    args = ir[node]["args"]
    data_arg = None
    if ir[node]["atom"] in ("kl_div", "rel_entr"):
        # in x for a constant y > 0: the entropy prox shifted (prox_scalar.prox_kl_div / prox_rel_entr)
        if len(args) != 2 or ir[args[1]]["curvature"] is not Curvature.CONSTANT or \
                tuple(ir[args[1]]["shape"]) not in ((), tuple(ir[args[0]]["shape"])):
            return None
        data_arg = args[1]
    elif ir[node]["atom"] != "power" and len(args) != 1:
        return None
    return SeparableProx(prox.kernel, node, args[0], {}, bool(getattr(prox, "negated", False)), summed=summed,
                         lam_node=lam_node, count=count, data_arg=data_arg)


def _weighted(ir: IR, node: int) -> tuple[int, int] | None:
    """(w, f) when node is ``w * f(e)`` with w a constant array >= 0 of f's shape and f elementwise."""
    d = ir[node]
    if not _is_call(ir, node, "multiply"):
        return None
    for w, f in (d["args"], d["args"][::-1]):
        if ir[w]["curvature"] is Curvature.CONSTANT and ir[w]["sign"].nonneg and \
                tuple(ir[w]["shape"]) == tuple(d["shape"]) == tuple(ir[f]["shape"]) and ir[f]["kind"] == "call":
            return w, f
    return None


def prox_hyper(ir: IR, sep: SeparableProx, params: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The kernel keywords (numpy or Python values) of a separable prox at the parameter values."""
    from regspec.compiler.evaluate import evaluate

    d = ir[sep.node]
    atom = ATOMS[d["atom"]]
    kw = dict(d.get("static", {}))
    for k, v in d.get("tensor_kwargs", {}).items():
        kw[k] = np.asarray(evaluate(ir, v, params or {}))
    prox = _prox_of(ir, sep.node)
    if prox is not None and prox is atom.prox and hasattr(atom, "prox_hyper"):  # the atom's canonical form
        hyper = atom.prox_hyper(kw, [tuple(ir[a]["shape"]) for a in d["args"]])
    else:  # a Prox chosen by the keywords (``prox_for``) or none: its keyword map
        hyper = {k: kw[n] for k, n in (prox.hyper if prox is not None else ()) if kw.get(n) is not None}
    hyper.update(sep.hyper)
    for k, n in sep.hyper_nodes.items():
        hyper[k] = float(np.asarray(evaluate(ir, n, params or {}), dtype=float))
    if sep.lam_node is not None:
        hyper["lam"] = np.asarray(evaluate(ir, sep.lam_node, params or {}), dtype=float)
    if sep.count != 1:  # a mean: every entry weighs 1/count (times its weight)
        hyper["lam"] = np.asarray(hyper.get("lam", 1.0), dtype=float) / sep.count
    if sep.data_arg is not None:
        y = np.asarray(evaluate(ir, sep.data_arg, params or {}), dtype=float)
        hyper["y"] = np.broadcast_to(y, tuple(ir[sep.arg]["shape"])).copy()
    return hyper


# ------------------------------------------------------------------------------------------------
# sublevel sets of norms
# ------------------------------------------------------------------------------------------------

# norm atom (over all entries) -> (set, how the bound maps to the radius)
BALL_OF_NORM = {"norm1": "l1_ball", "norm2": "l2_ball", "norm_inf": "linf_ball", "sum_squares": "l2_ball"}


@dataclass
class Sublevel:
    """A constraint recognized as ``arg in set_node`` (a synthesized set node), or, for ``soc``,
    ``[arg; bound] in`` the second-order cone."""

    set_node: int
    arg: int
    bound: int | None = None      # soc: the affine right side t of norm2(e) <= t
    text: str = ""


def _peel_scale(ir: IR, node: int) -> tuple[int, float]:
    """(inner, s) with node = s * inner for a positive compile-time scalar s (1 if none)."""
    s = 1.0
    while ir[node]["kind"] == "call" and ir[node].get("atom") in ("multiply", "divide") and "value" not in ir[node]:
        a, b = ir[node]["args"]
        if ir[node]["atom"] == "divide":
            c = _scalar_constant(ir, b)
            if c is None or c <= 0:
                break
            s, node = s / c, a
            continue
        ca, cb = _scalar_constant(ir, a), _scalar_constant(ir, b)
        if ca is not None and ca > 0 and tuple(ir[b]["shape"]) == ():
            s, node = s * ca, b
        elif cb is not None and cb > 0 and tuple(ir[a]["shape"]) == ():
            s, node = s * cb, a
        else:
            break
    return node, s


def _norm_ball(ir: IR, node: int) -> tuple[str, int] | None:
    """(set name, e) when node is a norm of all entries of e: norm1/norm2/norm_inf/pnorm(1, 2),
    sum(abs(e)), sum_squares(e) (the squared l2 norm); abs(e) and max(abs(e)) bounded by a scalar
    are the linf ball."""
    d = ir[node]
    if d["kind"] != "call" or "value" in d or d.get("tensor_kwargs"):
        return None
    atom = d.get("atom")
    if d.get("static", {}).get("axis") is not None:
        return None
    if atom in BALL_OF_NORM:
        return BALL_OF_NORM[atom], d["args"][0]
    if atom == "pnorm" and float(d["static"].get("p", 2)) in (1.0, 2.0):
        return ("l1_ball" if float(d["static"]["p"]) == 1.0 else "l2_ball"), d["args"][0]
    if atom == "sum" and _is_call(ir, d["args"][0], "abs"):
        return "l1_ball", ir[d["args"][0]]["args"][0]
    # every entry's |e_i| <= c is ||e||_inf <= c: `abs(U) <= 1` (a box) and `max(abs(e)) <= c`
    if atom == "abs":
        return "linf_ball", d["args"][0]
    if atom == "max" and len(d["args"]) == 1 and _is_call(ir, d["args"][0], "abs"):
        return "linf_ball", ir[d["args"][0]]["args"][0]
    return None


def sublevel_set(ir: IR, constraint: int) -> Sublevel | None:
    """``s * norm(e) <= c`` / ``c >= s * norm(e)`` as ``e in ball(c / s)``; ``norm2(e) <= t`` (t affine)
    as ``[e; t]`` in the second-order cone. The synthesized set node carries the constraint's span."""
    d = ir[constraint]
    if d["op"] not in ("<=", ">="):
        return None
    small, big = d["args"] if d["op"] == "<=" else d["args"][::-1]
    if ir[small]["curvature"] is not Curvature.CONVEX:
        return None
    inner, s = _peel_scale(ir, small)
    ball = _norm_ball(ir, inner)
    if ball is None:
        return None
    set_name, arg = ball
    if ir[arg]["curvature"] is not Curvature.AFFINE:
        return None
    span = d.get("span")
    bound = _scalar_constant(ir, big)
    if bound is not None:
        if bound < 0:
            return None  # infeasible as written: left to the solvers that certify it
        radius = bound / s
        if ir[inner]["atom"] == "sum_squares":
            radius = math.sqrt(radius)
        node = ir.add("set", span, [], set=set_name, kwargs={}, static={"r": radius}, synthesized=True)
        return Sublevel(node, arg, None, f"{ir.text(small)} <= {ir.text(big)}")
    if set_name != "l2_ball" or ir[inner]["atom"] == "sum_squares" or s != 1.0:
        return None
    if ir[big]["curvature"] is not Curvature.AFFINE or tuple(ir[big]["shape"]) != ():
        return None
    node = ir.add("set", span, [], set="soc", kwargs={}, static={}, synthesized=True)
    return Sublevel(node, arg, big, f"{ir.text(small)} <= {ir.text(big)}")
