"""Solve a lowered CVXPY program and map the solution back to the spec's names."""
from __future__ import annotations

import time
from typing import Any

import cvxpy as cp
import numpy as np

from regspec.backends.cvxpy.lower import CvxpyProgram, set_params
from regspec.diagnostics import error
from regspec.result import Result


def installed_solvers() -> list[str]:
    return [s.upper() for s in cp.installed_solvers()]


def choose_solver(program: CvxpyProgram, requested: str | None) -> str:
    """Clarabel where it applies (LP, QP, SOCP, exp and power cones, small SDPs); SCS otherwise."""
    have = installed_solvers()
    if requested:
        name = requested.upper()
        if name not in have:
            raise error(f"solver `{requested}` is not installed; installed: {', '.join(sorted(have))}")
        return name
    return "CLARABEL" if "CLARABEL" in have else "SCS"


def solve(program: CvxpyProgram, *, solver: str | None = None, solver_opts: dict[str, Any] | None = None,
          params: dict[str, Any] | None = None, warm_start: bool = True) -> Result:
    if params:
        set_params(program, params)
    name = choose_solver(program, solver)
    t0 = time.perf_counter()
    try:
        program.problem.solve(solver=name, warm_start=warm_start, **(solver_opts or {}))
        status = program.problem.status
    except cp.error.SolverError as e:
        status = "solver_error"
        program.problem._status = status  # keep the object consistent for callers that inspect it
        info = {"message": str(e)}
    else:
        info = {}
    seconds = time.perf_counter() - t0
    stats = program.problem.solver_stats
    ok = status in ("optimal", "optimal_inaccurate")
    values = {k: np.asarray(v.value) for k, v in program.variables.items()} if ok else {}
    iters = getattr(stats, "num_iters", None) if stats is not None else None
    return Result(status=status, objective=float(program.problem.value) if ok else None, variables=values,
                  backend="cvxpy", solver=name, iterations=iters,
                  times={"solve": seconds,
                         "solver": float(getattr(stats, "solve_time", None) or 0.0) if stats else 0.0},
                  info=info)
