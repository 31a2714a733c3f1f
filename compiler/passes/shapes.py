"""Shape inference: every expression node gets ``shape`` (a tuple of ints; () for scalars)."""
from __future__ import annotations

import numpy as np

from regspec.compiler.catalogue import ATOMS, SETS, ShapeError
from regspec.compiler.catalogue.atoms import broadcast, fmt
from regspec.compiler.ir import DECL_KINDS, IR
from regspec.compiler.passes.constants import data_origins
from regspec.diagnostics import error


def _origins(ir: IR, node: int) -> list[str]:
    """Notes naming the declarations a shape error involves: the data (and the file or generator
    it came from) and the variables and parameters with their declared shapes."""
    notes = data_origins(ir, node)
    for n in sorted(ir.ancestors(node) | {node}):
        d = ir[n]
        if d["kind"] in ("var", "param") and "shape" in d:
            where = f" at line {d['span'].line}" if d.get("span") is not None else ""
            notes.append(f"`{d['name']}` is declared with shape {fmt(tuple(d['shape']))}{where}")
    return notes


def _check_total_not_broadcast(ir: IR, operands: list[int], shape: tuple[int, ...]) -> None:
    """Refuse a total that CVXPY computes entry by entry (``huber``, ``kl_div``) broadcast over an
    array: ``w * huber(r)`` is sum_i w_i huber(r_i) in CVXPY but sum(w) * sum_i huber(r_i) here."""
    if shape == ():
        return
    for a in operands:
        d = ir[a]
        note = ATOMS[d["atom"]].sums_cvxpy_elementwise if d["kind"] == "call" and d["atom"] in ATOMS else ""
        if note and d.get("shape") == ():
            raise error(f"`{ir.text(a)}` is a single number (a sum) broadcast here over shape {fmt(shape)}",
                        d["span"], [note])


def infer_shapes(ir: IR) -> IR:
    for node in ir.topological():
        d = ir[node]
        kind = d["kind"]
        if kind in ("const", "data", "list"):
            v = d.get("value")
            d["shape"] = tuple(np.shape(v)) if v is not None and not isinstance(v, str) else ()
        elif kind == "call":
            if "value" in d:
                d["shape"] = tuple(np.shape(d["value"]))
                continue
            atom = ATOMS[d["atom"]]
            shapes = [ir[a]["shape"] for a in d["args"]]
            kw = {**d.get("static", {}), **{k: ir[v].get("value") for k, v in d.get("tensor_kwargs", {}).items()}}
            try:
                d["shape"] = tuple(atom.shape(shapes, kw))
            except ShapeError as e:
                span = ir[d["args"][e.arg]]["span"] if e.arg is not None and e.arg < len(d["args"]) else d["span"]
                # a declaration's span is its declaration line: point at the expression instead
                if atom.name in ("matmul", "add", "sub", "multiply", "divide", "index") or (
                        e.arg is not None and e.arg < len(d["args"]) and ir[d["args"][e.arg]]["kind"] in DECL_KINDS):
                    span = d["span"]
                raise error(f"shape mismatch in `{ir.text(node)}`: {e}", span, _origins(ir, node)) from None
            if atom.name in ("add", "sub", "multiply", "divide"):
                _check_total_not_broadcast(ir, d["args"], d["shape"])
        elif kind == "objective":
            shape = ir[d["args"][0]]["shape"]
            if shape != ():
                raise error(f"the objective must be a scalar, but `{ir.text(d['args'][0])}` has shape {fmt(shape)}",
                            ir[d["args"][0]]["span"], ["reduce it, e.g. with sum(...) or a norm"])
        elif kind == "regularize":
            shape = ir[d["args"][0]]["shape"]
            if shape != ():
                raise error(f"a regularizer must be a scalar, but `{ir.text(d['args'][0])}` has shape {fmt(shape)}",
                            ir[d["args"][0]]["span"])
        elif kind == "constraint":
            lhs = d["args"][0]
            if d["op"] == "in":
                s = ir[d["args"][1]]
                try:
                    SETS[s["set"]].check_shape(ir[lhs]["shape"], s["static"])
                except ShapeError as e:
                    raise error(f"`{ir.text(lhs)}` of shape {fmt(ir[lhs]['shape'])} cannot be in {s['set']}: {e}",
                                d["span"], _origins(ir, node)) from None
            else:
                try:
                    shape = broadcast([ir[lhs]["shape"], ir[d["args"][1]]["shape"]])
                except ShapeError as e:
                    raise error(f"shape mismatch in constraint: {e}", d["span"], _origins(ir, node)) from None
                _check_total_not_broadcast(ir, d["args"], shape)
        elif kind in ("var", "param"):
            dom = d.get("domain")
            if dom is not None and ir[dom]["set"] in SETS:
                try:
                    SETS[ir[dom]["set"]].check_shape(d["shape"], ir[dom]["static"])
                except ShapeError as e:
                    raise error(f"`{d['name']}` of shape {fmt(d['shape'])} cannot be in {ir[dom]['set']}: {e}",
                                ir[dom]["span"]) from None
    return ir
