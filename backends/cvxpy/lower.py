"""IR -> cvxpy.Problem. Data are constants, ``param`` are ``cvxpy.Parameter`` (the problem is DPP
whenever the spec is, so new parameter values re-solve without recompiling)."""
from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import cvxpy as cp
import numpy as np

from regspec.compiler.catalogue import ATOMS, SETS
from regspec.compiler.ir import IR
from regspec.compiler.passes.curvature import dcp_errors
from regspec.diagnostics import Diagnostic, RegspecError


@dataclass
class CvxpyProgram:
    problem: cp.Problem
    variables: dict[str, cp.Variable]
    params: dict[str, cp.Parameter]
    ir: IR


@contextlib.contextmanager
def canonicalising(info: dict[str, Any]) -> Iterator[None]:
    """Around CVXPY's canonicalisation: its note that an atom is approximated (geo_mean and powers by
    second-order cones, "Consider using approx=False", advice a spec cannot take) goes into
    ``info["approximation"]`` when its stated error is not 0, and is not printed; other warnings
    pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        if "is being approximated" not in text:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        m = re.search(r"error: ([-+0-9.eE]+)", text)
        if m is None or float(m.group(1)) != 0.0:
            info["approximation"] = text.split(" Consider")[0]


def check_dcp(ir: IR) -> None:
    errors = dcp_errors(ir)
    if errors:
        from regspec.hints import refusal_hint

        diags = [Diagnostic(f"not convex (DCP), so CVXPY cannot take it: {message}", ir[node]["span"])
                 for message, node in errors]
        diags[-1].notes.append(refusal_hint(ir, "cvxpy"))
        raise RegspecError(diags)


def _set_constraints(ir: IR, x: Any, set_node: int) -> list:
    s = ir[set_node]
    return SETS[s["set"]].cvxpy(x, s["static"])


def lower(ir: IR) -> CvxpyProgram:
    check_dcp(ir)
    val: dict[int, Any] = {}
    variables: dict[str, cp.Variable] = {}
    params: dict[str, cp.Parameter] = {}
    constraints: list = []
    objective = None
    regularizers = []
    for node in ir.topological():
        d = ir[node]
        kind = d["kind"]
        if kind in ("const", "data", "list") or (kind == "call" and "value" in d):
            val[node] = d.get("value")
        elif kind == "param":
            p = cp.Parameter(d["shape"], name=d["name"], value=d["value"],
                             nonneg=bool(_domain_is(ir, node, "nonneg")))
            params[d["name"]] = p
            val[node] = p
        elif kind == "var":
            # a psd domain becomes CVXPY's PSD attribute: the variable is symmetric by
            # construction, which log_det and the eigenvalue atoms need
            psd = d.get("domain") is not None and ir[d["domain"]]["set"] == "psd"
            v = cp.Variable(d["shape"], name=d["name"], PSD=psd)
            variables[d["name"]] = v
            val[node] = v
            if d.get("domain") is not None and not psd:
                constraints += _set_constraints(ir, v, d["domain"])
        elif kind == "call":
            atom = ATOMS[d["atom"]]
            kw = {**d.get("static", {}), **{k: val[v] for k, v in d.get("tensor_kwargs", {}).items()}}
            try:
                val[node] = atom.cvxpy([val[a] for a in d["args"]], kw)
            except NotImplementedError as e:
                raise RegspecError(Diagnostic(f"cannot lower `{ir.text(node)}` to CVXPY: {e}", d["span"],
                                              notes=[atom.lacks["cvxpy"]] if "cvxpy" in atom.lacks else [])) from None
        elif kind == "objective":
            objective = (d["sense"], val[d["args"][0]])
        elif kind == "regularize":
            regularizers.append(val[d["args"][0]])
        elif kind == "constraint":
            lhs = val[d["args"][0]]
            if d["op"] == "in":
                constraints += _set_constraints(ir, lhs, d["args"][1])
            elif d["op"] == "==":
                constraints.append(lhs == val[d["args"][1]])
            elif d["op"] == "<=":
                constraints.append(lhs <= val[d["args"][1]])
            else:
                constraints.append(lhs >= val[d["args"][1]])
    sense, expr = objective
    for r in regularizers:  # `regularize` adds to a minimized objective, subtracts from a maximized one
        expr = expr + r if sense == "minimize" else expr - r
    problem = cp.Problem(cp.Minimize(expr) if sense == "minimize" else cp.Maximize(expr), constraints)
    return CvxpyProgram(problem, variables, params, ir)


def _domain_is(ir: IR, node: int, name: str) -> bool:
    dom = ir[node].get("domain")
    if dom is None:
        return False
    s = ir[dom]
    if s["set"] == name:
        return True
    lo = s["static"].get("lo")
    return name == "nonneg" and s["set"] == "box" and lo is not None and lo >= 0


def set_params(program: CvxpyProgram, values: dict[str, Any]) -> None:
    for name, value in values.items():
        p = program.params[name]
        arr = np.asarray(value, dtype=float)
        if arr.shape != p.shape:
            arr = np.broadcast_to(arr, p.shape).copy() if arr.ndim == 0 else arr
        p.value = arr
