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

import math
import time
import warnings
from typing import Any

import cvxpy as cp
import numpy as np

from regspec.backends.cvxpy.lower import CvxpyProgram, canonicalising, set_params
from regspec.diagnostics import error
from regspec.result import RAY_CHECK_SIZE, Result

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
        with warnings.catch_warnings(), canonicalising(info):
            # "Solution may be inaccurate": the status (optimal_inaccurate) already says so
            warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
            program.problem.solve(solver=name, warm_start=warm_start, **opts)
        return program.problem.status
    except cp.error.SolverError as e:
        info["message"] = str(e)
        return "solver_error"
    except (TypeError, ValueError) as e:  # an unknown or ill-typed --solver-opt, or data it cannot take
        rejected = f"its options {opts}" if opts else "the problem"
        raise error(f"the solver {name} rejected {rejected}: {e}") from None


def _iterations(program: CvxpyProgram) -> int | None:
    stats = program.problem.solver_stats
    return getattr(stats, "num_iters", None) if stats is not None else None


# A returned point is checked against the solver's own accuracy: a constraint violated by more than
# this many times the solver's feasibility tolerance (eps_abs + eps_rel * scale) is not within it.
FEAS_MARGIN = 100.0
# the default feasibility tolerances (absolute, relative) of the solvers we choose; others: 1e-6
_FEAS_TOL = {"SCS": ("eps_abs", 1e-4, "eps_rel", 1e-4), "CLARABEL": ("tol_feas", 1e-8, "tol_feas", 1e-8)}
SOLVED = ("optimal", "optimal_inaccurate")


def feasibility_tolerance(name: str, opts: dict[str, Any]) -> tuple[float, float]:
    """(absolute, relative) feasibility tolerance the solver ran at."""
    if name not in _FEAS_TOL:
        return 1e-6, 1e-6
    abs_key, abs_default, rel_key, rel_default = _FEAS_TOL[name]
    return float(opts.get(abs_key, abs_default)), float(opts.get(rel_key, rel_default))


def _out_of_domain(expr: Any) -> str:
    """The innermost atom of ``expr`` whose value is not finite while its arguments are: the term
    evaluated outside its domain, with its argument's smallest entry."""
    for arg in getattr(expr, "args", []):
        value = getattr(arg, "value", None)
        if value is not None and not np.all(np.isfinite(np.asarray(value, dtype=float))):
            return _out_of_domain(arg)
    args = [np.asarray(a.value, dtype=float) for a in getattr(expr, "args", []) if a.value is not None]
    low = min((float(a.min()) for a in args if a.size), default=None)
    where = f"; its argument's smallest entry is {low:.3g}" if low is not None else ""
    value = np.asarray(expr.value, dtype=float)
    bad = value[~np.isfinite(value)]
    what = f"{bad.flat[0]}" if value.size == 1 else f"{bad.flat[0]} at {bad.size} of {value.size} entries"
    return f"`{type(expr).__name__}` is {what} (outside its domain{where})"


def check_point(program: CvxpyProgram, name: str, opts: dict[str, Any]) -> tuple[list[str], float]:
    """What is wrong with a solved status's point (empty when nothing), and its largest constraint
    violation. The point must be finite, the objective finite there (every atom inside its
    domain: an interior-point method's iterates are, a first-order method's may be off by its
    tolerance), and the constraints satisfied within the solver's tolerance."""
    problems: list[str] = []
    for var_name, var in program.variables.items():
        if var.value is not None and not np.all(np.isfinite(var.value)):
            problems.append(f"the variable `{var_name}` has non-finite entries")
    if problems:
        return problems, math.inf
    solver_value = getattr(program.problem.solution, "opt_val", None)
    if solver_value is None or not math.isfinite(float(solver_value)):
        problems.append(f"the solver's objective is {solver_value}")
    value = program.problem.value
    if value is None:
        problems.append("the objective has no value at the returned point")
    elif not math.isfinite(float(value)):
        problems.append(f"the objective at the returned point is {value}: "
                        f"{_out_of_domain(program.problem.objective.args[0])}")
    worst, scale = 0.0, 1.0
    for c in program.problem.constraints:
        v = c.violation()
        if v is None:
            continue
        worst = max(worst, float(np.max(v)) if np.size(v) else 0.0)
        scale = max([scale] + [float(np.max(np.abs(a.value))) for a in c.args
                               if a.value is not None and np.size(a.value)])
    eps_abs, eps_rel = feasibility_tolerance(name, opts)
    if not math.isfinite(worst) or worst > FEAS_MARGIN * (eps_abs + eps_rel * scale):
        problems.append(f"a constraint is violated by {worst:.3g} at the returned point, beyond {name}'s "
                        f"tolerance ({eps_abs:g} + {eps_rel:g} x {scale:.3g})")
    return problems, worst


def unbounded_ray(program: CvxpyProgram, name: str, feasibility: tuple[float, float],
                  status: str = "optimal") -> str | None:
    """Why a solved point x (``status``: optimal or optimal_inaccurate) is probably no optimum at all,
    or None. x has an entry >= ``RAY_CHECK_SIZE``, and the points with its huge variables doubled and
    quadrupled (the others kept) are feasible within ``feasibility`` (the absolute and relative
    tolerance x was solved to) and improve the objective by more than the solver's accuracy: a
    convex problem improving along the ray of its returned point has no optimum there.
    Interior-point and splitting methods cannot certify unboundedness when the objective grows
    slower than linearly along a ray (log, sqrt: CVXPY reports such problems `optimal` at a point
    of size 1e13). The problem's variables hold x; they are restored (without CVXPY's attribute
    checks: a PSD variable's solved value can be off the cone by rounding, and setting it raised)."""
    values = {v: v.value for v in program.problem.variables()}
    size = max((float(np.max(np.abs(x))) for x in values.values() if x is not None and np.size(x)), default=0.0)
    if not math.isfinite(size) or size < RAY_CHECK_SIZE:
        return None
    sign = 1.0 if isinstance(program.problem.objective, cp.Minimize) else -1.0
    gains, base = [], float(program.problem.objective.value)
    eps_abs, eps_rel = feasibility
    try:
        for factor in (2.0, 4.0):
            for v, x in values.items():
                if x is not None and np.size(x) and float(np.max(np.abs(x))) >= RAY_CHECK_SIZE:
                    v.save_value(factor * np.asarray(x))  # as the solver left it: no PSD re-check
            value = program.problem.objective.value
            if value is None or not math.isfinite(float(value)):
                return None
            for c in program.problem.constraints:
                worst = c.violation()
                if worst is not None and np.size(worst) and float(np.max(worst)) > FEAS_MARGIN * (
                        eps_abs + eps_rel * factor * size):
                    return None
            gains.append(sign * (base - float(value)))
    finally:
        for v, x in values.items():  # a PSD variable's value may be off the cone by rounding: the
            v.save_value(x)            # setter's check would refuse the solver's own point
    if min(gains) <= 1e-6 * (1.0 + abs(base)):
        return None
    return (f"{name} stopped as `{status}` at a point with entries as large as {size:.3g}, but the objective "
            f"keeps improving along that point's ray (by {gains[0]:.3g} at twice its huge variables, "
            f"{gains[1]:.3g} at four times, both feasible): the problem is probably unbounded (the solvers "
            f"cannot certify an objective that grows slower than linearly along a ray, such as log or sqrt)")


def _exact_solver_applies(program: CvxpyProgram, name: str, solver: str | None,
                          solver_opts: dict[str, Any] | None) -> bool:
    """An automatic SCS choice may be re-solved by Clarabel (the interior-point method: iterates
    strictly inside the cones) when the problem is not large."""
    return (name == "SCS" and not solver and not solver_opts and "CLARABEL" in installed_solvers()
            and problem_features(program.problem)["nnz"] <= LARGE_NNZ)


def _solve_checked(program: CvxpyProgram, solver: str | None, solver_opts: dict[str, Any] | None,
                   warm_start: bool, info: dict[str, Any]) -> tuple[str, str, dict[str, Any], list[str], float]:
    """Run the chosen solver; re-solve with Clarabel when an automatic SCS run stopped short of
    optimal or returned a point that fails ``check_point``. Returns (status, solver, options,
    problems of the final point, its largest violation)."""
    name = choose_solver(program, solver)
    opts = solver_options(name, solver, solver_opts)
    status = _run(program, name, opts, warm_start, info)
    problems, worst = check_point(program, name, opts) if status in SOLVED else ([], math.nan)
    if (status in _FALL_BACK_FROM or problems) and _exact_solver_applies(program, name, solver, solver_opts):
        why = (f"SCS stopped at `{status}` after {_iterations(program)} iterations" if status in _FALL_BACK_FROM
               else f"SCS returned `{status}`, but {problems[0]}")
        info["fallback"] = f"{why}; re-solved with CLARABEL"
        name, opts = "CLARABEL", {}
        info.pop("message", None)
        status = _run(program, name, opts, warm_start, info)
        problems, worst = check_point(program, name, opts) if status in SOLVED else ([], math.nan)
    return status, name, opts, problems, worst


def _confirm_unbounded(program: CvxpyProgram, status: str, info: dict[str, Any]) -> str:
    """An `unbounded` certificate (a dual infeasibility ray) proves the objective unbounded only
    over a nonempty feasible set: the dual of an infeasible problem can be infeasible too (SCS
    says `unbounded` on a problem with x[0] == 1 and x[0] <= 0 beside a PSD term unbounded below).
    A feasibility solve (objective 0, the constraints and the objective's domain) decides:
    `infeasible` when it finds no point, the solver's status otherwise."""
    objective = program.problem.objective.args[0]
    feasibility = cp.Problem(cp.Minimize(0), [*program.problem.constraints, *objective.domain])
    check = "CLARABEL" if "CLARABEL" in installed_solvers() else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feasibility.solve(solver=check)
    except cp.error.SolverError:
        return status
    if feasibility.status in ("infeasible", "infeasible_inaccurate"):
        info["fallback"] = (f"the solver reported `{status}`, but the constraints have no common point "
                            f"(a feasibility solve: `{feasibility.status}`)")
        return feasibility.status
    return status


def _reported_objective(program: CvxpyProgram, status: str, name: str, problems: list[str],
                        info: dict[str, Any]) -> tuple[str, float | None]:
    """(status, objective) of a solved run: the objective at the returned point when the point
    passed ``check_point``; else ``optimal_inaccurate`` with the reason, and the solver's own
    objective value (finite) or no result at all."""
    if not problems:
        return status, float(program.problem.value)
    solver_value = getattr(program.problem.solution, "opt_val", None)
    hint = "" if name == "CLARABEL" else "; `--solver CLARABEL` (interior point) may solve it exactly"
    if solver_value is None or not math.isfinite(float(solver_value)):
        info["message"] = f"{name} returned `{status}`, but {'; '.join(problems)}: no finite result{hint}"
        return "solver_error", None
    info["inaccurate"] = (f"{name} returned `{status}`, but {'; '.join(problems)}; the objective reported is "
                          f"the solver's{hint}")
    return "optimal_inaccurate", float(solver_value)


def _values(program: CvxpyProgram, info: dict[str, Any]) -> dict[str, np.ndarray]:
    """The variables' values. A variable in neither the objective nor a constraint has no value in
    CVXPY; any value is optimal for it, and it is reported as zeros (the torch backend's start
    point), with a note."""
    values, unused = {}, []
    for name, var in program.variables.items():
        if var.value is None:
            unused.append(name)
            values[name] = np.zeros(var.shape)
        else:
            values[name] = np.asarray(var.value)
    if unused:
        info["unused"] = (f"{', '.join(f'`{n}`' for n in unused)} appear{'s' if len(unused) == 1 else ''} in "
                          "neither the objective nor a constraint: any value is optimal; reported as 0")
    return values


def solve(program: CvxpyProgram, *, solver: str | None = None, solver_opts: dict[str, Any] | None = None,
          params: dict[str, Any] | None = None, warm_start: bool = True) -> Result:
    """Solve and check the answer (``check_point``): an automatic SCS run whose point fails the
    checks is re-solved by Clarabel; a chosen solver's failing point is ``optimal_inaccurate``
    with the reason in ``info["inaccurate"]``."""
    if params:
        set_params(program, params)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    status, name, opts, problems, worst = _solve_checked(program, solver, solver_opts, warm_start, info)
    if status in ("unbounded", "unbounded_inaccurate"):
        status = _confirm_unbounded(program, status, info)
    seconds = time.perf_counter() - t0
    stats = program.problem.solver_stats if status != "solver_error" else None
    objective = None
    values: dict[str, np.ndarray] = {}
    residuals: dict[str, float] = {}
    ray = (unbounded_ray(program, name, feasibility_tolerance(name, opts), status)
           if status in SOLVED and not problems else None)
    if ray is not None:
        status = "unbounded_inaccurate"
        info["unbounded"] = ray
    if status in SOLVED:
        status, objective = _reported_objective(program, status, name, problems, info)
        if status in SOLVED:
            values = _values(program, info)
            residuals["violation"] = worst
    iters = getattr(stats, "num_iters", None) if stats is not None else None
    if opts:
        info["solver_opts"] = opts
    if status not in SOLVED and status != "solver_error":
        # infeasible / unbounded: CVXPY's value is +-inf; report the status, not a number
        info["message"] = info.pop("unbounded", None) or {"infeasible": "the constraints have no common point",
                           "unbounded": "the objective is unbounded over the constraints",
                           "infeasible_inaccurate": "probably infeasible (solver accuracy reached)",
                           "unbounded_inaccurate": "probably unbounded (solver accuracy reached)"}.get(status, status)
    return Result(status=status, objective=objective, variables=values,
                  backend="cvxpy", solver=name, iterations=iters, residuals=residuals,
                  times={"solve": seconds,
                         "solver": float(getattr(stats, "solve_time", None) or 0.0) if stats else 0.0},
                  info=info)
