"""The torch backend's conic fallback (restarted PDHG on CVXPY's conic form) against CVXPY + SCS on
LPs and SOCPs of a few sizes, in one run: iterations, wall time (CVXPY's canonicalisation included
on both sides: the same ``get_problem_data`` work), and the objective's relative gap to Clarabel
(interior point, the reference). Both first-order methods run at the same relative tolerance
(SCS: eps_abs = eps_rel = TOL; torch: PDLP's relative criteria at TOL) and the same iteration cap.

    .venv/bin/python bench/bench_conic.py [--sizes small|all|large] [--tol 1e-6] [--repeat 2]

Prints one row per problem and the ratio torch / SCS of iterations and of time (best of --repeat).
"""
from __future__ import annotations

import argparse
import platform
import time

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import torch

from regspec.backends.torch.conic.canon import conic_form
from regspec.backends.torch.conic.pdhg import solve_conic_pdhg

MAX_ITER = 20000


def standard_lp(m: int, n: int, seed: int):
    """min c^T x s.t. A x = b, x >= 0 with a feasible point and c >= 0 (bounded); sparse A."""
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=min(1.0, 8.0 / m), random_state=seed, data_rvs=rng.standard_normal)
    b = A @ rng.random(n)
    x = cp.Variable(n)
    return cp.Problem(cp.Minimize(rng.random(n) @ x), [A @ x == b, x >= 0]), {"x": x}


def l1_regression_lp(m: int, n: int, seed: int):
    """min ||X w - y||_1 (an LP after canonicalisation)."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((m, n)), rng.standard_normal(m)
    w = cp.Variable(n)
    return cp.Problem(cp.Minimize(cp.norm1(X @ w - y))), {"w": w}


def soc_affine_rhs(m: int, n: int, seed: int):
    """min c^T x s.t. ||A x + b||_2 <= 1^T x + d, |x| <= 1 (the issue's SOC with an affine right side)."""
    rng = np.random.default_rng(seed)
    A, b, c = rng.standard_normal((m, n)) / np.sqrt(n), rng.standard_normal(m), rng.standard_normal(n)
    x = cp.Variable(n)
    return cp.Problem(cp.Minimize(c @ x), [cp.norm2(A @ x + b) <= np.ones(n) @ x + 2 * np.sqrt(m),
                                          cp.abs(x) <= 1]), {"x": x}


def norm1_ball_ls(m: int, n: int, seed: int):
    """min ||X w - y||^2 s.t. ||w||_1 <= 1 (a second-order cone after canonicalisation)."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((m, n)), rng.standard_normal(m)
    w = cp.Variable(n)
    return cp.Problem(cp.Minimize(cp.sum_squares(X @ w - y)), [cp.norm1(w) <= 1]), {"w": w}


CASES = {
    "small": [("LP standard form", standard_lp, [(50, 100), (200, 400)]),
              ("LP l1 regression", l1_regression_lp, [(100, 20), (400, 50)]),
              ("SOCP affine rhs", soc_affine_rhs, [(20, 10), (100, 50)]),
              ("SOCP l1-ball LS", norm1_ball_ls, [(50, 20), (200, 50)])],
}
CASES["large"] = [("SOCP affine rhs", soc_affine_rhs, [(1000, 500)]), ("LP l1 regression", l1_regression_lp, [(2000, 200)])]
CASES["all"] = [(name, fn, sizes + {"LP standard form": [(500, 1000)], "LP l1 regression": [(1000, 100)],
                                    "SOCP affine rhs": [(300, 150)], "SOCP l1-ball LS": [(500, 100)]}[name])
                for name, fn, sizes in CASES["small"]]


def run_scs(problem: cp.Problem, tol: float) -> dict:
    t = time.perf_counter()
    problem.solve(solver=cp.SCS, eps_abs=tol, eps_rel=tol, max_iters=MAX_ITER, warm_start=False)
    return {"status": problem.status, "objective": problem.value, "iterations": problem.solver_stats.num_iters,
            "seconds": time.perf_counter() - t}


def run_torch(problem: cp.Problem, variables: dict, tol: float) -> dict:
    t = time.perf_counter()
    form = conic_form(problem, variables)
    sol = solve_conic_pdhg(form.A, form.b, form.c, form.layout, tol=tol, max_iter=MAX_ITER)
    objective = form.recover(sol.x, sol.y)[1] if sol.status == "optimal" else None
    return {"status": sol.status, "objective": objective, "iterations": sol.iterations,
            "seconds": time.perf_counter() - t, "shape": form.shape, "restarts": sol.info["restarts"]}


def best_of(fn, repeat: int) -> dict:
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"])


def gap(value, ref) -> str:
    return "-" if value is None else f"{abs(value - ref) / max(1.0, abs(ref)):.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", choices=sorted(CASES), default="small")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default="", help="run the problems whose name contains this text")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), cvxpy {cp.__version__}, tol {args.tol:g}, cap {MAX_ITER} iterations")
    print(f"{'problem':<18} {'size':>10} {'conic m x n':>12} | {'SCS it':>7} {'SCS s':>7} {'gap':>7} | "
          f"{'torch it':>8} {'torch s':>8} {'gap':>7} {'status':>9} | {'it ratio':>8} {'time ratio':>10}")
    for name, build, sizes in CASES[args.sizes]:
        if args.only not in name:
            continue
        for m, n in sizes:
            problem, variables = build(m, n, seed=0)
            ref = problem.solve(solver=cp.CLARABEL)
            scs = best_of(lambda: run_scs(problem, args.tol), args.repeat)
            mine = best_of(lambda: run_torch(problem, variables, args.tol), args.repeat)
            rows, cols = mine["shape"]
            print(f"{name:<18} {f'{m}x{n}':>10} {f'{rows}x{cols}':>12} | {scs['iterations']:>7} "
                  f"{scs['seconds']:>7.3f} {gap(scs['objective'], ref):>7} | {mine['iterations']:>8} "
                  f"{mine['seconds']:>8.3f} {gap(mine['objective'], ref):>7} {mine['status']:>9} | "
                  f"{mine['iterations'] / max(scs['iterations'], 1):>8.2f} {mine['seconds'] / scs['seconds']:>10.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
