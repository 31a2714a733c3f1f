"""A first-order `optimal` at a huge point, checked for a ray of improvement.

FISTA's and PDHG's stopping rules measure fixed-point residuals, and along a ray where the
objective grows like a logarithm those residuals vanish (the prox of -log det moves an eigenvalue
lam by about t / lam): `maximize log_det(S + I)` with S free stopped `optimal` at eigenvalues near
1e7. A convex problem whose objective still improves at twice and four times the returned point
(both feasible) has no optimum there; the check is the cvxpy backend's (``unbounded_ray``), on the
problem lowered to CVXPY, so the objective and every constraint are evaluated from the user's
expressions, independent of the solver."""
from __future__ import annotations

from typing import Any

import numpy as np

from regspec.result import RAY_CHECK_SIZE, Result



def without_improving_ray(ir: Any, result: Result, params: dict[str, np.ndarray] | None) -> Result:
    """``result``, or ``unbounded_inaccurate`` with the reason and no numbers when its solved point
    (an entry >= ``RAY_CHECK_SIZE``) improves along its ray on a problem proved convex."""
    if result.status not in ("optimal", "optimal_inaccurate") or result.local or not result.variables:
        return result
    size = max((float(np.max(np.abs(v))) for v in result.variables.values() if np.size(v)), default=0.0)
    if not size >= RAY_CHECK_SIZE:
        return result
    from regspec.backends.cvxpy.lower import lower, set_params
    from regspec.backends.cvxpy.solve import unbounded_ray
    from regspec.compiler.passes.curvature import dcp_errors

    if dcp_errors(ir):
        return result
    program = lower(ir)
    if params:
        set_params(program, params)
    for name, var in program.variables.items():
        var.value = np.asarray(result.variables[name], dtype=float).reshape(var.shape)
    tol = result.tol or 1e-6
    why = unbounded_ray(program, result.solver, (tol, tol), result.status)
    if why is None:
        return result
    result.status, result.objective, result.variables = "unbounded_inaccurate", None, {}
    result.info["message"] = why
    return result
