"""Sign and curvature (DCP) analysis. Nothing is raised here: each root gets ``dcp_ok`` and, when
the rules fail, ``dcp_error = (message, node)`` pointing at the innermost offending term. The CVXPY
backend turns that into a located error; ``check`` and ``explain`` report it."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from regspec.compiler.catalogue import ATOMS, SETS, Curvature, Sign
from regspec.compiler.ir import IR


def _domain_sign(ir: IR, node: int) -> Sign:
    dom = ir[node].get("domain")
    if dom is None:
        return Sign.UNKNOWN
    s = ir[dom]
    # psd is not here: a PSD matrix may have negative off-diagonal entries
    if s["set"] in ("nonneg", "simplex", "transport", "metric_cone"):
        return Sign.NONNEG
    if s["set"] == "nonpos":
        return Sign.NONPOS
    if s["set"] == "box":
        lo, hi = s["static"].get("lo"), s["static"].get("hi")  # numbers or arrays of bounds
        if lo is not None and np.all(np.asarray(lo) >= 0):
            return Sign.NONNEG
        if hi is not None and np.all(np.asarray(hi) <= 0):
            return Sign.NONPOS
    return Sign.UNKNOWN


class _Texts(Sequence[str]):
    """The source texts of a call's arguments, rendered only if a DCP rule fails and says why."""

    def __init__(self, ir: IR, args: list[int]):
        self.ir, self.args = ir, args

    def __len__(self) -> int:
        return len(self.args)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.ir.text(a) for a in self.args[i]]
        return self.ir.text(self.args[i])


def _first_reason(ir: IR, root: int) -> int | None:
    """The innermost (first in topological order) node under ``root`` that breaks a DCP rule."""
    under = ir.ancestors(root) | {root}
    for n in ir.topological():
        if n in under and ir[n].get("dcp_reason"):
            return n
    return None


def analyse_curvature(ir: IR) -> IR:
    for node in ir.topological():
        d = ir[node]
        kind = d["kind"]
        if kind in ("const", "data", "list") or (kind == "call" and "value" in d):
            d["curvature"] = Curvature.CONSTANT
            d["sign"] = Sign.of_value(d.get("value"))
        elif kind == "param":
            # Parameters are constants for DCP; their sign is what the domain guarantees, so that a
            # later --set cannot invalidate the analysis.
            d["curvature"] = Curvature.CONSTANT
            d["sign"] = _domain_sign(ir, node)
        elif kind == "var":
            d["curvature"] = Curvature.AFFINE
            d["sign"] = _domain_sign(ir, node)
            dom = d.get("domain")
            if dom is not None and ir[dom]["set"] in SETS and not SETS[ir[dom]["set"]].convex:
                d["dcp_ok"] = False
                d["dcp_error"] = (f"`{d['name']}` is declared in {ir.text(dom)}, which is not a convex set",
                                  dom)
        elif kind == "call":
            atom = ATOMS[d["atom"]]
            args = d["args"]
            curvs = [ir[a]["curvature"] for a in args]
            signs = [ir[a]["sign"] for a in args]
            kw = d.get("static", {})
            curv, reason = atom.dcp(curvs, signs, kw, _Texts(ir, args))
            if curv is Curvature.UNKNOWN and any(ir[a]["curvature"] is Curvature.UNKNOWN for a in args):
                reason = None  # the reason lives on the argument that failed first
            d["curvature"] = curv
            d["sign"] = atom.sign(signs, kw)
            d["dcp_reason"] = reason
        elif kind == "objective":
            expr = ir[d["args"][0]]
            want_convex = d["sense"] == "minimize"
            ok = expr["curvature"].is_convex if want_convex else expr["curvature"].is_concave
            d["dcp_ok"] = ok
            if not ok:
                inner = _first_reason(ir, d["args"][0])
                if inner is not None:
                    d["dcp_error"] = (ir[inner]["dcp_reason"], inner)
                else:
                    need = "convex" if want_convex else "concave"
                    d["dcp_error"] = (f"{d['sense']} needs a {need} objective, but `{ir.text(d['args'][0])}` is "
                                      f"{expr['curvature'].value}", d["args"][0])
        elif kind == "regularize":
            term = ir[d["args"][0]]
            d["dcp_ok"] = term["curvature"].is_convex
            if not d["dcp_ok"]:
                inner = _first_reason(ir, d["args"][0])
                d["dcp_error"] = ((ir[inner]["dcp_reason"], inner) if inner is not None else
                                  (f"a regularizer must be convex, but `{ir.text(d['args'][0])}` is "
                                   f"{term['curvature'].value}", d["args"][0]))
        elif kind == "constraint":
            lhs = ir[d["args"][0]]
            op = d["op"]
            if op == "in":
                entry = SETS[ir[d["args"][1]]["set"]]
                ok = lhs["curvature"].is_affine and entry.convex
                why = (f"`{ir.text(d['args'][0])}` must be affine to constrain it to a set" if not
                       lhs["curvature"].is_affine else
                       f"{ir.text(d['args'][1])} is not a convex set" if not entry.convex else "")
            else:
                rhs = ir[d["args"][1]]
                if op == "==":
                    ok = lhs["curvature"].is_affine and rhs["curvature"].is_affine
                    bad = d["args"][0] if not lhs["curvature"].is_affine else d["args"][1]
                    why = (f"both sides of `==` must be affine, but `{ir.text(bad)}` is "
                           f"{ir[bad]['curvature'].value}")
                else:
                    small_n, big_n = (d["args"][0], d["args"][1]) if op == "<=" else (d["args"][1], d["args"][0])
                    small, big = ir[small_n], ir[big_n]
                    ok = small["curvature"].is_convex and big["curvature"].is_concave
                    if not small["curvature"].is_convex:
                        why = (f"the smaller side `{ir.text(small_n)}` of `{op}` is {small['curvature'].value}; "
                               "DCP inequalities read convex <= concave")
                    else:
                        why = (f"the larger side `{ir.text(big_n)}` of `{op}` is {big['curvature'].value}; "
                               "DCP inequalities read convex <= concave")
            d["dcp_ok"] = ok
            if not ok:
                inner = _first_reason(ir, d["args"][0]) if op != "in" else None
                if op == "in" and lhs["curvature"].is_affine:
                    d["dcp_error"] = (why, d["args"][1])  # a nonconvex set: point at the set
                elif inner is None and op != "in":
                    inner = _first_reason(ir, d["args"][1])
                    d["dcp_error"] = (ir[inner]["dcp_reason"], inner) if inner is not None else (why, node)
                else:
                    d["dcp_error"] = (ir[inner]["dcp_reason"], inner) if inner is not None else (why, node)
    return ir


def dcp_errors(ir: IR) -> list[tuple[str, int]]:
    """All (message, node) pairs of roots that break the DCP rules."""
    return [ir[n]["dcp_error"] for n in ir.nodes_of("var", "objective", "constraint", "regularize")
            if not ir[n].get("dcp_ok", True) and "dcp_error" in ir[n]]


def unlowerable_calls(ir: IR, backend: str) -> list[tuple[str, int]]:
    """(reason, node) for each call whose atom has no lowering to ``backend`` (its ``lacks`` says
    why: anchor_l2's anchor is a training run's initial weights); folded calls need none."""
    what = "CVXPY lowering" if backend == "cvxpy" else f"{backend} evaluation"
    return [(f"{ir[n]['atom']} has no {what}: {ATOMS[ir[n]['atom']].lacks[backend]}", n)
            for n in ir.nodes_of("call") if "value" not in ir[n] and backend in ATOMS[ir[n]["atom"]].lacks]


def cvxpy_refusals(ir: IR) -> list[tuple[str, int]]:
    """Why CVXPY cannot take the problem (empty: it can): the DCP rules, then atoms it has no
    lowering for (a training-only term in a problem block passed DCP, so `check` said cvxpy)."""
    return dcp_errors(ir) + unlowerable_calls(ir, "cvxpy")
