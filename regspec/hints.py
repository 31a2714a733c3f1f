"""Which backends accept a problem, and the hint a backend's refusal carries.

A hint names another backend only when that backend's own acceptance check passes, so hints never
send a user round in a circle: when no backend accepts the problem, the hint says so and gives each
backend's reason. The checks are the compiler's (the curvature pass for CVXPY, the split pass for
torch); nothing here imports torch or cvxpy.
"""
from __future__ import annotations

from regspec.compiler.ir import IR

BACKEND_NAMES = ("cvxpy", "torch")


def refusals(ir: IR) -> dict[str, list[str]]:
    """Why each backend refuses the problem (an empty list: it accepts). CVXPY takes DCP problems;
    torch takes what the split pass lowers (FISTA, PDHG, or the conic fallback for DCP problems no
    fast path takes; a problem not proved convex gets a stationary point, a local answer)."""
    from regspec.compiler.passes.curvature import dcp_errors, unlowerable_calls

    split = ir.meta["split"]
    # the split pass decides torch's verdict, conic fallback included (algorithm "conic")
    return {"cvxpy": ([f"not convex (DCP): {message}" for message, _ in dcp_errors(ir)]
                      + [message for message, _ in unlowerable_calls(ir, "cvxpy")]),
            "torch": [why for why, _ in split.refusals] if split.algorithm == "none" else []}


def accepting(ir: IR) -> list[str]:
    """The backends whose acceptance check passes, in ``BACKEND_NAMES`` order."""
    return [name for name, why in refusals(ir).items() if not why]


def refusal_hint(ir: IR, refusing: str, why: str | None = None) -> str:
    """The note for ``refusing``'s refusal: the other backend that accepts the problem, or a plain
    statement that none does, with each backend's reason (``why`` overrides the refusing
    backend's own reason, for refusals found after the compiler's checks, such as a start point
    outside a term's domain)."""
    reasons = refusals(ir)
    if why is not None:
        reasons[refusing] = [why]
    others = [name for name in BACKEND_NAMES if name != refusing and not reasons[name]]
    if others:
        name = others[0]
        local = " (a stationary point: the problem is not proved convex)" if name == "torch" and \
            reasons["cvxpy"] else ""
        return f"the {name} backend accepts this problem{local}: --backend {name}"
    said = "; ".join(f"{name}: {reasons[name][0] if reasons[name] else 'refused'}" for name in BACKEND_NAMES)
    return f"no backend accepts this problem ({said})"
