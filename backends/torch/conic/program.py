"""The torch backend's entry points for the conic fallback: ``lower_conic`` (IR -> a CVXPY problem,
kept with its parameters) and ``solve_conic`` (canonical form at the current parameter values ->
restarted PDHG in torch -> a ``Result`` with the spec's variables).

Statuses: ``optimal`` only when PDLP's relative criteria hold at ``tol`` (primal residual, dual
residual, duality gap); ``infeasible`` / ``unbounded`` when a certificate ray from the iterates
passes its check; otherwise ``user_limit`` (iteration or time budget) with neither objective nor
variables, only the residuals reached."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regspec.backends.torch.conic.pdhg import TOL, solve_conic_pdhg
from regspec.compiler.ir import IR
from regspec.diagnostics import Diagnostic, RegspecError
from regspec.result import Result

SOLVER_NAME = "conic PDHG"
# float32 residuals stall near 1e-6 relative: its default tolerance sits above that
FLOAT32_TOL = 1e-5


@dataclass
class ConicProgram:
    ir: IR
    cvxpy: Any                 # backends.cvxpy.lower.CvxpyProgram
    dtype: torch.dtype
    device: torch.device

    @property
    def algorithm(self) -> str:
        return "conic"

    @property
    def split(self):
        return self.ir.meta["split"]


def lower_conic(ir: IR, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> ConicProgram:
    """The CVXPY problem of ``ir`` (the cvxpy backend's lowering: its located errors stand)."""
    from regspec.backends.cvxpy.lower import lower

    return ConicProgram(ir, lower(ir), dtype, torch.device(device))


def _refuse(program: ConicProgram, message: str) -> RegspecError:
    ir = program.ir
    return RegspecError([Diagnostic(f"the torch backend's conic fallback cannot take this problem: {message}",
                                    ir[ir.objective()]["span"], notes=["use --backend cvxpy"])])


# entries beyond this square to more than float64 holds (the restart and stopping tests take
# squared norms): 1e308 in a constraint ended in ZeroDivisionError, an internal error
DATA_LIMIT = 1e150

def _confirm_unbounded(form: Any, sol: Any, **solve_kw: Any) -> None:
    """A ray x with -A x in K and c^T x < 0 proves the objective unbounded only when some point is
    feasible (else the problem is infeasible: contradictory constraints beside a direction of
    decrease were reported `unbounded`). The same PDHG with c = 0 decides: `infeasible` when it
    finds a Farkas ray, `unbounded` kept when it finds a feasible point, else `user_limit`."""
    check = solve_conic_pdhg(form.A, form.b, np.zeros_like(form.c), form.layout, **solve_kw)
    if check.status == "optimal":
        return
    sol.status = "infeasible" if check.status == "infeasible" else "user_limit"
    sol.info["certificate_ratio"] = check.info.get("certificate_ratio", math.nan)
    sol.info["unbounded_ray"] = ("a ray of decrease was found, but " + (
        "the constraints have no common point" if check.status == "infeasible" else
        f"no feasible point was found within the budget ({check.status})"))
    if check.status != "infeasible":
        sol.residuals.update({k: v for k, v in check.residuals.items() if k in sol.residuals})


MESSAGES = {
    "infeasible": "the constraints have no common point: a Farkas certificate y in K* with A^T y ~ 0 and "
                  "b^T y < 0 was found from the PDHG iterates (ratio {ratio:.1e} <= {eps:.0e})",
    "unbounded": "the objective is unbounded below over the constraints: a ray x with -A x in K (within "
                 "{ratio:.1e} <= {eps:.0e}, relative) and c^T x < 0 was found from the PDHG iterates",
    "user_limit": "stopped by the iteration or time limit before the criteria held (relative primal "
                  "{primal_rel:.1e}, dual {dual_rel:.1e}, gap {gap_rel:.1e}; tol {tol:.0e}): no solution is reported",
    "solver_error": "the iterates became non-finite",
}


def solve_conic(program: ConicProgram, *, params: dict[str, np.ndarray] | None = None, tol: float | None = None,
                max_iter: int = 100000, time_limit: float | None = None) -> Result:
    """Solve through CVXPY's conic form; ``tol`` defaults to ``pdhg.TOL`` (``FLOAT32_TOL`` in float32)."""
    import cvxpy as cp

    from regspec.backends.cvxpy.lower import canonicalising, set_params
    from regspec.backends.torch.conic.canon import UnsupportedCone, conic_form
    from regspec.backends.torch.conic.pdhg import INFEASIBLE_TOL

    if tol is None:
        tol = TOL if program.dtype == torch.float64 else FLOAT32_TOL
    if params:
        set_params(program.cvxpy, params)
    t0 = time.perf_counter()
    canon_info: dict[str, Any] = {}
    try:
        with canonicalising(canon_info):
            form = conic_form(program.cvxpy.problem, program.cvxpy.variables)
    except UnsupportedCone as e:
        raise _refuse(program, str(e)) from None
    except (cp.error.DCPError, cp.error.SolverError) as e:
        raise _refuse(program, f"CVXPY could not canonicalise it ({e})") from None
    canon_s = time.perf_counter() - t0
    largest = max(float(np.abs(form.b).max(initial=0.0)), float(np.abs(form.c).max(initial=0.0)),
                  float(abs(form.A).max()) if form.A.nnz else 0.0)
    if not largest <= DATA_LIMIT:
        raise _refuse(program, f"its conic form holds an entry of {largest:.3g}, beyond the {DATA_LIMIT:.0e} whose "
                               "squares PDHG's residual norms can hold in float64")
    sol = solve_conic_pdhg(form.A, form.b, form.c, form.layout, tol=tol, max_iter=max_iter, time_limit=time_limit,
                           dtype=program.dtype, device=program.device)
    if sol.status == "unbounded":
        _confirm_unbounded(form, sol, tol=tol, max_iter=max_iter, time_limit=time_limit, dtype=program.dtype,
                           device=program.device)
    seconds = time.perf_counter() - t0
    info: dict[str, Any] = {"device": str(program.device), "dtype": str(program.dtype).replace("torch.", ""),
                            "path": "conic fallback", "no_fast_path": [why for why, _ in program.split.refusals],
                            "cones": form.layout.describe(), "canonicalise_s": canon_s,
                            "tol": tol, **canon_info, **sol.info}
    objective, values = None, {}
    if sol.status == "optimal":
        values, objective = form.recover(sol.x, sol.y)
        if not math.isfinite(objective):
            sol.status = "solver_error"
            objective, values = None, {}
    else:
        info["message"] = MESSAGES[sol.status].format(ratio=sol.info.get("certificate_ratio", math.nan),
                                                      eps=INFEASIBLE_TOL, tol=tol, **sol.residuals)
    # the conic form's objective values stay out: for a run that did not converge they are not an answer
    residuals = {k: v for k, v in sol.residuals.items() if k not in ("pobj", "dobj")}
    # as PDHG reports it: how far the constraints are from holding, relative (here over the conic form)
    residuals["infeasibility"] = sol.residuals["primal_rel"]
    return Result(status=sol.status, objective=objective, variables=values, backend="torch", solver=SOLVER_NAME,
                  iterations=sol.iterations, times={"solve": seconds}, residuals=residuals, info=info)
