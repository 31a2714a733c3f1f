"""Benchmark: what the torch backend's stopping tolerance buys, and what its default costs.

    .venv/bin/python bench/bench_tolerance.py sweep            # accuracy vs tol on the bundled specs
    .venv/bin/python bench/bench_tolerance.py ratios [--ot-n 200] [--lasso-n 500 --lasso-p 1000]

``sweep``: every problem block of ``specs/*.reg`` that both backends take is solved by CVXPY at
reference accuracy (Clarabel with gap and feasibility tolerances 1e-10, or SCS at eps 1e-9 where
CVXPY picks SCS) and by the torch backend at tol = 1e-4 ... 1e-9. For each run: the objective's
relative error ``|f - f_ref| / max(|f_ref|, 1e-9)``, the solution's error ``max |x - x_ref| /
max(1, max |x_ref|)`` (meaningful only where the minimizer is unique: TV, lasso, logistic; transport
LPs and nuclear-norm problems may have several), the status and the iterations. The default
tolerances (``backends/torch/solve.py``: FISTA_TOL, PDHG_TOL) are the loosest whose objective error
is within ``ACCURACY`` on every spec (docs/solvers.md states both).

``marginals``: class OT and exact OT at ``--ot-n`` at default settings, with each plan's worst
relative marginal error next to the tol the result states.

``ratios``: lasso (seeded Gaussian data, scikit-learn's scaling), logistic-l1 (the bundled
breast-cancer spec) and class OT (bench_class_ot's data, rho = 0.01, and the exact OT LP, rho = 0):
the time at the default tolerance, at the previous defaults (FISTA 1e-9, PDHG 1e-8) and at the
matched tolerance, the loosest of the ladder whose objective is within ``ACCURACY`` of the reference
(CVXPY + Clarabel, tight; for class OT a torch float64 run at tol 1e-10 whose certificate held,
Clarabel being minutes there). Each time is the best of --repeat runs after a warm-up. Ratios are
printed; nothing is asserted. The machine is shared: run at modest sizes and say so with the numbers.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ACCURACY = 1e-6  # the documented objective accuracy at default settings (relative to a tight reference)
LADDER = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]
OLD_DEFAULTS = {"fista": 1e-9, "pdhg": 1e-8}
CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
SCS_TIGHT = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200000}


def rel_err(f: float | None, ref: float) -> float:
    return abs(f - ref) / max(abs(ref), 1e-9) if f is not None else math.inf


def sol_err(r, ref) -> float:
    errs = []
    for name, v in ref.variables.items():
        if name in r.variables:
            v = np.asarray(v, dtype=float)
            errs.append(float(np.max(np.abs(np.asarray(r.variables[name]) - v), initial=0.0)
                              / max(1.0, float(np.max(np.abs(v), initial=0.0)))))
    return max(errs, default=math.nan)


def reference(spec, problem: str, params: dict | None = None):
    import regspec
    from regspec.backends.cvxpy import lower as cvx_lower
    from regspec.backends.cvxpy import solve as cvx_solve

    program = cvx_lower.lower(spec.compiled(problem).ir)
    solver = cvx_solve.choose_solver(program, None)
    opts = SCS_TIGHT if solver == "SCS" else CLARABEL_TIGHT
    return regspec.solve(spec, problem=problem, backend="cvxpy", solver=solver, solver_opts=opts, params=params)


def timed(fn, repeat: int):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ------------------------------------------------------------------------------------------- sweep

def sweep(args: argparse.Namespace) -> None:
    import regspec
    from regspec.crosscheck import accepts, default_specs, read_directives

    worst: dict[float, float] = {t: 0.0 for t in LADDER}
    print(f"{'spec/problem':<34} {'tol':>7} {'status':<18} {'obj err':>9} {'sol err':>9} {'iters':>7} {'s':>7}")
    for path in default_specs():
        if path.name.startswith("train_") or read_directives(path).skip:
            continue
        spec = regspec.load(path)
        for problem in spec.problems:
            ok_c, _, ok_t, _ = accepts(spec, problem)
            if not (ok_c and ok_t):
                continue
            ref = reference(spec, problem)
            if not ref.ok:
                print(f"{path.stem + '/' + problem:<34} reference {ref.status}")
                continue
            for tol in LADDER:
                t0 = time.perf_counter()
                r = regspec.solve(spec, problem=problem, backend="torch", tol=tol, max_iter=args.max_iter)
                sec = time.perf_counter() - t0
                e = rel_err(r.objective, ref.objective)
                worst[tol] = max(worst[tol], e)
                print(f"{path.stem + '/' + problem:<34} {tol:>7.0e} {r.status:<18} {e:>9.1e} {sol_err(r, ref):>9.1e} "
                      f"{r.iterations:>7} {sec:>7.2f}", flush=True)
    print("\nworst objective error over the specs, per tol:")
    for tol in LADDER:
        print(f"  tol {tol:.0e}: {worst[tol]:.1e}" + ("  <= ACCURACY" if worst[tol] <= ACCURACY else ""))


# ------------------------------------------------------------------------------------------ ratios

LASSO_SPEC = """problem lasso {
  data X = load("lasso.npz", "X")
  data y = load("lasso.npz", "y")
  param alpha = 0.1 >= 0
  var w[cols(X)]
  minimize sum_squares(X @ w - y) / (2 * rows(X)) + alpha * norm1(w)
}
"""

EXACT_OT_SPEC = """problem exact_ot {
  data C = load("ot.npz", "C")
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  var P[rows(C), cols(C)] in transport(a, b)
  minimize sum(C * P)
}
"""


def ratio_case(name: str, spec, params: dict, ref_objective: float, algorithm: str, repeat: int,
               check=None, ladder: list[float] = LADDER) -> None:
    import regspec
    from regspec.backends.torch.solve import FISTA_TOL, PDHG_TOL

    default = FISTA_TOL if algorithm == "fista" else PDHG_TOL

    def run(tol: float):
        return timed(lambda: regspec.solve(spec, backend="torch", tol=tol, params=params), repeat)

    run(1e-3)  # warm-up: imports, traces
    rows = {}
    for tol in sorted(set(ladder) | {default, OLD_DEFAULTS[algorithm]}, reverse=True):
        sec, r = run(tol)
        rows[tol] = (sec, r, rel_err(r.objective, ref_objective))
        extra = check(r) if check is not None and r.ok else ""
        print(f"  {name:<14} tol {tol:>7.0e}: {r.status:<18} obj err {rows[tol][2]:.1e}  {r.iterations:>6} it  "
              f"{sec:7.3f} s {extra}", flush=True)
    matched = max((t for t, (_, r, e) in rows.items() if r.ok and e <= ACCURACY), default=None)
    if matched is None:
        print(f"  {name}: no tolerance of the ladder reached {ACCURACY:g}")
        return
    t_m = rows[matched][0]
    old = OLD_DEFAULTS[algorithm]
    print(f"  {name}: matched tol {matched:.0e} ({t_m:.3f} s); default {default:.0e}: {rows[default][0]:.3f} s, "
          f"ratio {rows[default][0] / t_m:.2f}; previous default {old:.0e}: {rows[old][0]:.3f} s, "
          f"ratio {rows[old][0] / t_m:.2f}")


def marginal_check(d: dict) -> callable:
    """The worst relative marginal error of a plan: max_i |P 1 - a|_i / a_i, and the same for b."""
    def check(r) -> str:
        P = np.asarray(r.variables["P"])
        row = np.max(np.abs(P.sum(1) - d["a"]) / d["a"])
        col = np.max(np.abs(P.sum(0) - d["b"]) / d["b"])
        return f"worst marginal rel err rows {row:.1e} cols {col:.1e}; reported tol {r.tol:.0e}"
    return check


def ratios(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_tolerance_"))
    if not args.skip_fista:
        fista_cases(args, tmp)
    ot_cases(args, tmp)


def fista_cases(args: argparse.Namespace, tmp: Path) -> None:
    import regspec

    rng = np.random.default_rng(0)
    n, p = args.lasso_n, args.lasso_p
    X = rng.standard_normal((n, p))
    w0 = np.zeros(p)
    w0[rng.choice(p, max(1, p // 20), replace=False)] = rng.standard_normal(max(1, p // 20))
    y = X @ w0 + 0.1 * rng.standard_normal(n)
    alpha = 0.1 * float(np.abs(X.T @ y).max()) / n
    np.savez(tmp / "lasso.npz", X=X, y=y)
    (tmp / "lasso.reg").write_text(LASSO_SPEC)
    lasso = regspec.load(tmp / "lasso.reg")
    ref = reference(lasso, "lasso", {"alpha": alpha})
    print(f"\n== lasso {n} x {p}, alpha = 0.1 alpha_max; reference CVXPY+{ref.solver} {ref.objective:.12g}")
    ratio_case("lasso", lasso, {"alpha": alpha}, ref.objective, "fista", args.repeat)

    logit = regspec.load(ROOT / "specs" / "sparse_logistic.reg")
    ref = reference(logit, "sparse_logistic")
    print(f"\n== logistic-l1 (breast cancer, C = 0.1); reference CVXPY+{ref.solver} {ref.objective:.12g}")
    ratio_case("logistic-l1", logit, {}, ref.objective, "fista", args.repeat)


def ot_cases(args: argparse.Namespace, tmp: Path) -> None:
    import regspec
    from bench_class_ot import SPEC as CLASS_OT_SPEC
    from bench_class_ot import class_ot_data

    d = class_ot_data(args.ot_n, max(3, args.ot_n // 100))
    np.savez(tmp / "ot.npz", **d)
    (tmp / "class_ot.reg").write_text(CLASS_OT_SPEC)
    (tmp / "exact_ot.reg").write_text(EXACT_OT_SPEC)
    for name, file, params in (("class OT", "class_ot.reg", {"rho": 0.01}), ("exact OT", "exact_ot.reg", {})):
        spec = regspec.load(tmp / file)
        ref = regspec.solve(spec, backend="torch", tol=args.ot_ref_tol, params=params, max_iter=200000)
        print(f"\n== {name} n = {args.ot_n}; reference torch float64 tol {args.ot_ref_tol:g}: {ref.status} "
              f"{ref.objective}")
        if not ref.ok:
            continue
        ratio_case(name, spec, params, ref.objective, "pdhg", args.ot_repeat, check=marginal_check(d),
                   ladder=[t for t in LADDER if t >= 1e-8])


def marginals(args: argparse.Namespace) -> None:
    """Class OT (rho = 0.01) and exact OT at --ot-n, default settings: status, iterations, time and the
    worst relative marginal error of the plan against the tol the result states."""
    import regspec
    from bench_class_ot import SPEC as CLASS_OT_SPEC
    from bench_class_ot import class_ot_data

    tmp = Path(tempfile.mkdtemp(prefix="bench_tolerance_"))
    d = class_ot_data(args.ot_n, max(3, args.ot_n // 100))
    np.savez(tmp / "ot.npz", **d)
    (tmp / "class_ot.reg").write_text(CLASS_OT_SPEC)
    (tmp / "exact_ot.reg").write_text(EXACT_OT_SPEC)
    for name, file, params in (("exact OT", "exact_ot.reg", {}), ("class OT", "class_ot.reg", {"rho": 0.01})):
        t0 = time.perf_counter()
        r = regspec.solve(regspec.load(tmp / file), backend="torch", params=params)
        extra = marginal_check(d)(r) if r.ok else ""
        print(f"{name} n = {args.ot_n}: {r.status}, {r.iterations} it, {time.perf_counter() - t0:.1f} s {extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sweep", "ratios", "marginals"])
    ap.add_argument("--max-iter", type=int, default=100000)
    ap.add_argument("--ot-n", type=int, default=200)
    ap.add_argument("--lasso-n", type=int, default=500)
    ap.add_argument("--lasso-p", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--ot-repeat", type=int, default=1)
    ap.add_argument("--ot-ref-tol", type=float, default=1e-10)
    ap.add_argument("--skip-fista", action="store_true", help="ratios: only the OT cases")
    args = ap.parse_args()
    import subprocess

    import torch

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}; torch {torch.__version__}, {torch.get_num_threads()} threads; ACCURACY {ACCURACY:g}")
    {"sweep": sweep, "ratios": ratios, "marginals": marginals}[args.what](args)


if __name__ == "__main__":
    main()
