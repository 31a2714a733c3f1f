"""``--json`` for ``regspec check``, ``plan`` and ``explain``: the same facts as the text output, as
data. Stdout carries one JSON document and nothing else (anything a stage prints while the
document is built goes to stderr); numbers are numbers or null, never strings or NaN."""
from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterator

from regspec.diagnostics import Diagnostic, RegspecError

__all__ = ["jsonable", "emit", "stdout_to_stderr", "check_json", "plan_json", "explain_json", "diagnostic_json"]


def jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats -> null, arrays -> lists, schedules and gates -> their text."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "text") and callable(value.text):  # ScheduleRef, GatePlan
        return value.text()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    return str(value)


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    s = d.span
    return {"severity": d.severity, "message": d.message, "notes": list(d.notes),
            "path": getattr(getattr(s, "source", None), "path", None) if s else None,
            "line": s.line if s else None, "column": s.column if s else None,
            "end_line": s.end_line if s else None, "end_column": s.end_column if s else None}


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Python's prints and writes to file descriptor 1 from compiled code (solver logs) go to
    stderr until the block ends (``--json``: stdout carries the document alone)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded use): Python-level redirection only
        saved = None
    try:
        if saved is not None:
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def emit(build: Callable[[], Any]) -> Any:
    """Build the document with stdout routed to stderr, then print it alone on stdout."""
    with stdout_to_stderr():
        doc = build()
    print(json.dumps(jsonable(doc), allow_nan=False))
    return doc


# ---------------------------------------------------------------- check
def _problem(spec, name: str) -> dict[str, Any]:
    from regspec.compiler.passes.curvature import cvxpy_refusals, dcp_errors

    ir = spec.compiled(name).ir
    decls = []
    for kind in ("data", "param", "var"):
        for n in ir.nodes_of(kind):
            d = ir[n]
            entry: dict[str, Any] = {"kind": kind, "name": d["name"], "shape": list(d["shape"])}
            if d.get("domain") is not None:
                s = ir[d["domain"]]
                entry["domain"] = {"set": s["set"], **{k: v for k, v in s["static"].items() if v is not None}}
            if kind == "param" and d["shape"] == ():
                entry["value"] = float(d["value"])
            decls.append(entry)
    obj = ir.objective()
    split = ir.meta["split"]
    errs = cvxpy_refusals(ir)
    backends = (["cvxpy"] if not errs else []) + (["torch"] if split.algorithm != "none" else [])
    return {
        "name": name, "declarations": decls,
        "objective": {"sense": ir[obj]["sense"], "curvature": ir[ir[obj]["args"][0]]["curvature"].value,
                      "terms": [{"text": ir.text(t.core), "curvature": ir[t.core]["curvature"].value,
                                 "role": t.role} for t in split.terms]},
        "constraints": [{"text": ir.text(c), "dcp": bool(ir[c]["dcp_ok"])} for c in ir.nodes_of("constraint")],
        "backends": backends,
        "torch": {"algorithm": None if split.algorithm == "none" else split.algorithm,
                  "refusals" if split.algorithm == "none" else "reasons":
                  [why for why, _ in (split.refusals if split.algorithm == "none" else split.reasons)]},
        "cvxpy": {"dcp": not dcp_errors(ir), "errors": [msg for msg, _ in errs]},
        "auto": _auto_json(spec, name) if len(backends) == 2 else None,
    }


def _auto_json(spec, name: str) -> dict[str, Any]:
    """auto's choice, its reason, and the cost model's features and estimates (regspec.api)."""
    from regspec.api import cost_features, estimate_seconds, explain_choice

    features, choice = cost_features(spec, name), explain_choice(spec, name)
    return {"backend": choice.backend, "reason": choice.reason, "features": features,
            "estimates_s": estimate_seconds(features)}


def term_json(t: Any) -> dict[str, Any]:
    return {"line": t.line, "text": t.text, "statement": t.stmt, "name": t.name,
            "logged_as": f"reg/{t.metric}" if getattr(t, "metric", "") else None,
            "target": {"kind": t.target.kind, "pattern": t.target.pattern, "type": t.target.type},
            "lowering": t.lowering, "kernel": t.kernel, "math": t.math, "why": t.why, "via": t.via,
            "weight": t.weight, "options": t.options, "gate": t.gate,
            # an expression term (compiler/train_terms.py): its typed form, part of a split sum, selectors
            "typed": t.expr.typed() if getattr(t, "expr", None) is not None else None,
            "part": getattr(t, "part", "") or None,
            "selectors": [sel.text for sel in getattr(t, "selectors", [])] or None}


def train_plan_json(plan: Any) -> dict[str, Any]:
    """A TrainPlan (pure Python, no model built) as data."""
    return {"name": plan.name, "model": plan.model.text if plan.model else None,
            "data": plan.data.text if plan.data else None, "loss": plan.loss_text,
            "optimizer": plan.optimizer.text if plan.optimizer else None, "epochs": plan.epochs,
            "steps": plan.steps, "batch": plan.batch, "seed": plan.seed, "device": plan.device,
            "rewrites": [{"line": r.span.line if r.span else None, "text": r.text} for r in plan.rewrites],
            "terms": [term_json(t) for t in plan.terms],
            "warnings": [diagnostic_json(w) for w in getattr(plan, "warnings", [])]}


def _check_one(path: str) -> dict[str, Any]:
    import regspec
    from regspec.compiler.pipeline import no_backend_error
    from regspec.compiler.train_plan import plan_train

    t0 = time.perf_counter()
    try:
        spec = regspec.load(path)
        problems = [_problem(spec, name) for name in spec.problems]
        for name in spec.problems:  # `backends: none` is an error, as in the text output
            refusal = no_backend_error(spec.compiled(name).ir)
            if refusal is not None:
                raise refusal
        trains = [train_plan_json(plan_train(spec.ast, b.name, attach_only=True)) for b in spec.ast.trains]
    except RegspecError as e:
        print(str(e), file=sys.stderr)
        return {"spec": path, "ok": False, "errors": [diagnostic_json(d) for d in e.diagnostics]}
    return {"spec": path, "ok": True, "blocks": len(spec.ast.blocks), "problems": problems, "trains": trains,
            "seconds": time.perf_counter() - t0, "errors": []}


def check_json(paths: list[str]) -> dict[str, Any]:
    results = [_check_one(p) for p in paths]
    return {"ok": all(r["ok"] for r in results), "specs": results}


# ---------------------------------------------------------------- plan
def plan_json(spec_path: str, train: str | None) -> dict[str, Any]:
    """What `regspec plan` prints, as data: the plan, then what each term matched on the built model."""
    from regspec.backends.torch.train.assemble import assemble
    from regspec.train_api import plan

    asm = assemble(plan(spec_path, train))
    doc = train_plan_json(asm.plan)
    b, d = asm.binding, asm.data
    doc["model_class"] = type(b.model).__name__
    doc["parameters"] = sum(p.numel() for p in b.model.parameters())
    doc["filled_from_data"] = list(asm.filled)
    doc["data_summary"] = {"task": d.task, "n_train": d.n_train, "n_val": d.n_val, "batch": d.batch,
                           "steps_per_epoch": asm.steps_per_epoch}
    doc["epochs"] = asm.epochs
    doc["graph"] = b.graph
    doc["activation_taps"] = b.tap_path
    doc["rewrites"] = [{"line": rb.rewrite.span.line if rb.rewrite.span else None, "text": rb.rewrite.text,
                        "replaced": rb.count, "modules": list(rb.modules)} for rb in b.rewrites]
    if getattr(b, "weights", None) is not None:   # init, reparametrize, freeze: what trains
        doc["weights"] = b.weights.to_json(b.model)
    from regspec.backends.torch.train.optim import update_json   # transforms, sam, multipliers

    doc["update"] = update_json(asm.plan, b.module)
    frozen = {n for n, p in b.model.named_parameters() if not p.requires_grad}
    for entry, tb in zip(doc["terms"], b.terms):
        entry["matches"] = [{"name": n, "shape": list(tb.shapes.get(n, ())) or None,
                             "frozen": n in frozen} for n in tb.names]
        entry["notes"] = list(tb.notes)
        entry["metric"] = tb.metric
        if getattr(tb, "selector_names", None):   # an expression term: what each selector matched
            entry["selector_matches"] = [list(names) for names in tb.selector_names]
        if getattr(tb, "typed", None) is not None:
            entry["typed"] = tb.typed.typed()
    doc["warnings"] += [diagnostic_json(w) for w in getattr(asm, "warnings", [])]
    return doc


# ---------------------------------------------------------------- explain
def explain_json(spec_path: str, problem: str | None) -> dict[str, Any]:
    import regspec
    from regspec.compiler.catalogue import ATOMS
    from regspec.compiler.passes.curvature import cvxpy_refusals, dcp_errors
    from regspec.compiler.passes.split import explain_lines

    spec = regspec.load(spec_path)
    out = []
    for name in [problem] if problem else spec.problems:
        ir = spec.compiled(name, record=True).ir
        snapshots = spec.compiled(name, record=True).snapshots
        errs = cvxpy_refusals(ir)
        atoms = [{"node": n, "atom": ir[n]["atom"], "cvxpy": ATOMS[ir[n]["atom"]].doc} for n in ir.topological()
                 if ir[n]["kind"] == "call" and "value" not in ir[n]]
        out.append({"problem": ir.block_name,
                    "passes": [{"pass": p, "ir": dump} for p, dump in snapshots],
                    "cvxpy": {"dcp": not dcp_errors(ir), "errors": [m for m, _ in errs], "atoms": atoms},
                    "torch": explain_lines(ir, ir.meta["split"])})
    return {"spec": spec_path, "problems": out}
