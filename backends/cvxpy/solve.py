"""Solve a lowered CVXPY program and map the solution back to the spec's names.

Solver choice (``choose_solver``): Clarabel by default (an interior-point method: LP, QP, SOCP);
SCS for problems with PSD cones (SDPs: nuclear and spectral norms, eigenvalue atoms, log_det, psd
sets) or exponential cones (log, exp, entropy, logistic, log_sum_exp, kl_div), and for large
problems (more than ``LARGE_NNZ`` nonzero data entries), where a first-order conic method scales
better. ``--solver`` overrides the choice and ``--solver-opt NAME=VALUE`` passes options through.
When SCS is chosen automatically and no options are given, it runs at eps_abs = eps_rel = 1e-6
(its default 1e-4 is too loose to compare objectives beyond three or four digits) for at most
20000 iterations; if it stops short of "optimal" on a problem that is not large, Clarabel re-solves
it (first-order methods stall on some badly scaled exponential-cone mixes that an interior-point
method solves in a few iterations) and ``info["fallback"]`` says so.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import cvxpy as cp
import numpy as np

from regspec.backends.cvxpy.lower import CvxpyProgram, set_params
from regspec.diagnostics import error
from regspec.result import Result

LARGE_NNZ = 1_000_000
SCS_DEFAULTS = {"eps_abs": 1e-6, "eps_rel": 1e-6, "max_iters": 20_000}
# statuses of an automatic SCS run that Clarabel retries (SCS's infeasible/unbounded certificates stand)
_FALL_BACK_FROM = ("optimal_inaccurate", "infeasible_inaccurate", "unbounded_inaccurate", "user_limit", "solver_error")

# CVXPY atoms whose canonical form needs a PSD cone or an exponential cone.
_PSD_ATOMS = {"lambda_max", "lambda_sum_largest", "log_det", "normNuc", "sigma_max", "matrix_frac", "tr_inv",
              "von_neumann_entr", "quantum_rel_entr", "quantum_cond_entr", "condition_number"}
_EXP_ATOMS = {"exp", "log", "entr", "kl_div", "rel_entr", "logistic", "log_sum_exp", "log1p", "xexp",
              "log_det", "von_neumann_entr"}


def installed_solvers() -> list[str]:
    return [s.upper() for s in cp.installed_solvers()]


def problem_features(problem: cp.Problem) -> dict[str, Any]:
    """Which cones a problem needs and how much data it holds, read from its expression tree
    (no compilation): ``psd``, ``exp`` (bools) and ``nnz`` (nonzero entries of its constants)."""
    psd = exp = False
    nnz = 0
    seen: set[int] = set()
    stack: list[Any] = [problem.objective, *problem.constraints]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        kind = type(node).__name__
        if kind in _PSD_ATOMS or isinstance(node, cp.constraints.PSD):
            psd = True
        if kind in _EXP_ATOMS or isinstance(node, cp.constraints.ExpCone):
            exp = True
        if isinstance(node, cp.Constant):
            value = node.value
            nnz += int(value.nnz) if hasattr(value, "nnz") else int(np.count_nonzero(value))
        if isinstance(node, cp.Variable) and node.attributes.get("PSD"):
            psd = True
        stack.extend(getattr(node, "args", []))
    return {"psd": psd, "exp": exp, "nnz": nnz}


def choose_solver(program: CvxpyProgram, requested: str | None) -> str:
    """The solver to use: ``requested`` if given (and installed), else the module's policy."""
    have = installed_solvers()
    if requested:
        name = requested.upper()
        if name not in have:
            raise error(f"solver `{requested}` is not installed; installed: {', '.join(sorted(have))}")
        return name
    feats = problem_features(program.problem)
    if "SCS" in have and (feats["psd"] or feats["exp"] or feats["nnz"] > LARGE_NNZ):
        return "SCS"
    return "CLARABEL" if "CLARABEL" in have else "SCS"


def solver_options(name: str, requested: str | None, solver_opts: dict[str, Any] | None) -> dict[str, Any]:
    """Options passed to CVXPY's solve: the user's, or SCS's tighter defaults when SCS was chosen
    automatically."""
    if solver_opts:
        return dict(solver_opts)
    if name == "SCS" and not requested:
        return dict(SCS_DEFAULTS)
    return {}


def _run(program: CvxpyProgram, name: str, opts: dict[str, Any], warm_start: bool, info: dict[str, Any]) -> str:
    """One call of CVXPY's solve; returns the status (``solver_error`` with a message on failure)."""
    try:
        with warnings.catch_warnings():
            # "Solution may be inaccurate": the status (optimal_inaccurate) already says so
            warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
            program.problem.solve(solver=name, warm_start=warm_start, **opts)
        return program.problem.status
    except cp.error.SolverError as e:
        info["message"] = str(e)
        return "solver_error"
    except (TypeError, ValueError) as e:  # an unknown or ill-typed --solver-opt
        raise error(f"the solver {name} rejected its options {opts}: {e}") from None


def _iterations(program: CvxpyProgram) -> int | None:
    stats = program.problem.solver_stats
    return getattr(stats, "num_iters", None) if stats is not None else None


def solve(program: CvxpyProgram, *, solver: str | None = None, solver_opts: dict[str, Any] | None = None,
          params: dict[str, Any] | None = None, warm_start: bool = True) -> Result:
    if params:
        set_params(program, params)
    name = choose_solver(program, solver)
    opts = solver_options(name, solver, solver_opts)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    status = _run(program, name, opts, warm_start, info)
    if (status in _FALL_BACK_FROM and name == "SCS" and not solver and not solver_opts
            and "CLARABEL" in installed_solvers() and problem_features(program.problem)["nnz"] <= LARGE_NNZ):
        info["fallback"] = f"SCS stopped at `{status}` after {_iterations(program)} iterations; re-solved with CLARABEL"
        name, opts = "CLARABEL", {}
        info.pop("message", None)
        status = _run(program, name, opts, warm_start, info)
    seconds = time.perf_counter() - t0
    stats = program.problem.solver_stats if status != "solver_error" else None
    ok = status in ("optimal", "optimal_inaccurate")
    values = {k: np.asarray(v.value) for k, v in program.variables.items()} if ok else {}
    iters = getattr(stats, "num_iters", None) if stats is not None else None
    if opts:
        info["solver_opts"] = opts
    if not ok and status != "solver_error":
        # infeasible / unbounded: CVXPY's value is +-inf; report the status, not a number
        info["message"] = {"infeasible": "the constraints have no common point",
                           "unbounded": "the objective is unbounded over the constraints",
                           "infeasible_inaccurate": "probably infeasible (solver accuracy reached)",
                           "unbounded_inaccurate": "probably unbounded (solver accuracy reached)"}.get(status, status)
    return Result(status=status, objective=float(program.problem.value) if ok else None, variables=values,
                  backend="cvxpy", solver=name, iterations=iters,
                  times={"solve": seconds,
                         "solver": float(getattr(stats, "solve_time", None) or 0.0) if stats else 0.0},
                  info=info)
