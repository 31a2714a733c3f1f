"""Benchmark: class-based optimal transport with sum-of-norms fusion (CATALOGUE X17 at scale),
torch backend (restarted PDHG) vs the same problem written by hand in CVXPY with Clarabel and SCS.

    .venv/bin/python bench/bench_class_ot.py [--sizes 200 500 1000] [--budget 1800] [--clarabel-budget 300]
        [--skip-cvxpy] [--cvxpy-max-n 500]

Problem (the spec specs/class_ot.reg, with data from a file):
    minimize <C, P> + rho sum_{i < i' same class} ||P[i, :] - P[i', :]||_2
    subject to P >= 0, P 1 = a, P^T 1 = b,
n = m points, k = max(3, n // 100) Gaussian blobs (sd 0.7) of about n/k sources each (the X17
recipe: targets are a fresh draw rotated by 30 degrees and shifted by (1, 1)); C = squared
distances / max; a = b uniform; rho = 0.01. The fusion term has k C(n/k, 2) pairs: ~6.6e3 at
n = 200, 2.5e4 at 500, 5e4 at 1000, each a norm of an m-vector (the dual block has pairs x m
entries: 1.3e6, 1.2e7, 5e7).

Reported per size: the torch runs at tol 1e-6 (relative primal/dual residuals) and a tighter
run (--ref-tol, default 1e-7) whose objective is the reference f_ref; each conic solver's wall
time (problem build + CVXPY compile + solve, in a child process abandoned past its budget,
which the output says) and solver time, at its first setting (SCS eps 1e-4, 1e-5, 1e-6;
Clarabel defaults) whose objective is within --gap (1e-4) of f_ref; a setting that missed the
gap at a smaller n is not retried at a larger one, and a solver that ran out of budget is not
run at larger sizes. Relative gap =
|f - f_ref| / |f_ref|; the conic results also cross-check f_ref when they finish. No timing is
asserted; the ratios printed are from this one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _budget import run_with_budget  # bench/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CENTRES = 2.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 0], [0, 2], [2, 1], [1, 2], [2, 2], [3, 0],
                          [0, 3], [3, 1], [1, 3], [3, 2], [2, 3], [3, 3]], float)

SPEC = """problem class_ot {
  data C = load("ot.npz", "C")
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  data labels = load("ot.npz", "labels")
  param rho = 0.01 >= 0
  var P[rows(C), cols(C)] >= 0

  minimize sum(C * P) + rho * sum_of_norms(P, pairs = same(labels))
  subject to {
    sum(P, axis = 1) == a
    sum(P, axis = 0) == b
  }
}
"""


def class_ot_data(n: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """X17's recipe (with n = 30, k = 3, seed 0 it gives X17's data exactly)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), -(-n // k))[:n]
    xs = CENTRES[labels] + 0.7 * rng.standard_normal((n, 2))
    xt = CENTRES[labels] + 0.7 * rng.standard_normal((n, 2))
    th = np.pi / 6
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    xt = xt @ rot.T + 1.0
    C = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    C /= C.max()
    return {"C": C, "a": np.full(n, 1.0 / n), "b": np.full(n, 1.0 / n), "labels": labels.astype(np.int64)}


def same_pairs(labels: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(labels), 1)
    keep = labels[i] == labels[j]
    return np.stack([i[keep], j[keep]], axis=1)


def objective(d: dict[str, np.ndarray], P: np.ndarray, rho: float) -> float:
    pairs = same_pairs(d["labels"])
    diff = P[pairs[:, 0]] - P[pairs[:, 1]]
    return float((d["C"] * P).sum() + rho * np.linalg.norm(diff, axis=1).sum())


def _cvxpy_child(path: str, rho: float, solver: str, opts: dict, queue) -> None:
    import cvxpy as cp
    import scipy.sparse as sp

    d = dict(np.load(path))
    n = d["C"].shape[0]
    pairs = same_pairs(d["labels"])
    count = len(pairs)
    B = sp.csr_matrix((np.r_[np.ones(count), -np.ones(count)], (np.r_[np.arange(count), np.arange(count)],
                                                                  np.r_[pairs[:, 0], pairs[:, 1]])), shape=(count, n))
    t0 = time.perf_counter()
    P = cp.Variable(d["C"].shape, nonneg=True)
    obj = cp.sum(cp.multiply(d["C"], P)) + rho * cp.sum(cp.norm(B @ P, 2, axis=1))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(P, axis=1) == d["a"], cp.sum(P, axis=0) == d["b"]])
    try:
        prob.solve(solver=solver, **opts)
    except cp.error.SolverError as e:
        queue.put({"status": f"solver_error: {e}"})
        return
    stats = prob.solver_stats
    queue.put({"status": prob.status, "wall": time.perf_counter() - t0, "solver_time": float(stats.solve_time or 0),
               "P": None if P.value is None else np.asarray(P.value)})


def run_cvxpy(path: str, rho: float, solver: str, opts: dict, budget: float) -> dict:
    return run_with_budget(_cvxpy_child, (path, rho, solver, opts), budget)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--rho", type=float, default=0.01)
    ap.add_argument("--tol", type=float, default=1e-6, help="torch run that is timed against the conic solvers")
    ap.add_argument("--ref-tol", type=float, default=1e-7, help="torch reference run")
    ap.add_argument("--gap", type=float, default=1e-4)
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds per CVXPY + SCS solve before giving up")
    ap.add_argument("--clarabel-budget", type=float, default=300.0, help="seconds per CVXPY + Clarabel solve")
    ap.add_argument("--skip-cvxpy", action="store_true")
    ap.add_argument("--cvxpy-max-n", type=int, default=500, help="no CVXPY runs above this size")
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"],
                    help="dtypes of the timed torch runs (the reference run is float64)")
    args = ap.parse_args()

    import torch

    import regspec

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), CUDA available: {torch.cuda.is_available()}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    summary = []
    exceeded: dict[str, int] = {}
    missed: dict[str, set] = {"SCS": set(), "CLARABEL": set()}  # settings that missed the gap at a smaller n
    for n in args.sizes:
        k = max(3, n // 100)
        d = class_ot_data(n, k)
        pairs = same_pairs(d["labels"])
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_class_ot_{n}_"))
        np.savez(tmp / "ot.npz", **d)
        (tmp / "class_ot.reg").write_text(SPEC)
        print(f"\n== n = m = {n}, {k} classes, {len(pairs)} pairs (dual block {len(pairs)} x {n} = "
              f"{len(pairs) * n:.2e} entries), rho = {args.rho}")

        def torch_run(tol: float, dtype: str):
            t0 = time.perf_counter()
            spec = regspec.load(tmp / "class_ot.reg")
            r = regspec.solve(spec, backend="torch", tol=tol, params={"rho": args.rho}, dtype=dtype)
            return time.perf_counter() - t0, r

        if n == args.sizes[0]:
            for dtype in args.dtypes:
                torch_run(1e-2, dtype)  # warm-up: imports, tracing machinery
        wall_ref, ref = torch_run(args.ref_tol, "float64")
        f_ref = objective(d, ref.variables["P"], args.rho)

        def gap(f: float) -> float:
            return abs(f - f_ref) / abs(f_ref)

        runs = [(f"torch PDHG {dtype}", args.tol, *torch_run(args.tol, dtype)) for dtype in args.dtypes]
        runs.append(("torch PDHG (reference)", args.ref_tol, wall_ref, ref))
        print(f"{'method':<26} {'setting':<12} {'objective':>16} {'rel. gap':>10} {'time (s)':>10}  notes")
        row = {"n": n}
        for label, tol, w, r in runs:
            res = r.residuals
            f = objective(d, r.variables["P"].astype(np.float64), args.rho)
            print(f"{label:<26} {'tol=' + format(tol, 'g'):<12} "
                  f"{f:>16.10g} {gap(f):>10.1e} {w:>10.2f}  {r.status}, {r.iterations} it, solve {r.times['solve']:.2f} s, "
                  f"p {res['primal_rel']:.1e} d {res['dual_rel']:.1e} infeas {res['infeasibility']:.1e}")
            if "reference" not in label:
                row[label.split()[-1]] = (w, gap(f))
        if not args.skip_cvxpy and n <= args.cvxpy_max_n:
            for solver, ladder in (("SCS", [1e-4, 1e-5, 1e-6]), ("CLARABEL", [None])):
                if solver in exceeded:
                    print(f"{'CVXPY + ' + solver:<26} {'-':<12} {'-':>16} {'-':>10} {'-':>10}  not run: exceeded the "
                          f"budget at n = {exceeded[solver]}")
                    continue
                budget = args.clarabel_budget if solver == "CLARABEL" else args.budget
                for eps in ladder:
                    opts = {} if eps is None else {"eps_abs": eps, "eps_rel": eps, "max_iters": 1_000_000}
                    setting = "defaults" if eps is None else f"eps={eps:g}"
                    if eps in missed[solver]:
                        # a looser setting does not get more accurate on a larger instance
                        print(f"{'CVXPY + ' + solver:<26} {setting:<12} {'-':>16} {'-':>10} {'-':>10}  not run: "
                              f"missed the gap at a smaller n")
                        continue
                    out = run_cvxpy(str(tmp / "ot.npz"), args.rho, solver, opts, budget)
                    if out.get("P") is None:
                        print(f"{'CVXPY + ' + solver:<26} {setting:<12} {'-':>16} {'-':>10} {'-':>10}  {out['status']}")
                        if "budget" in out["status"]:
                            exceeded[solver] = n
                            row[solver] = None
                        break
                    f = objective(d, out["P"], args.rho)
                    print(f"{'CVXPY + ' + solver:<26} {setting:<12} {f:>16.10g} {gap(f):>10.1e} {out['wall']:>10.2f}  "
                          f"{out['status']}; solver alone {out['solver_time']:.2f} s")
                    if gap(f) <= args.gap:
                        row[solver] = out["wall"]
                        break
                    missed[solver].add(eps)
                else:
                    row[solver] = None
        elif not args.skip_cvxpy:
            print(f"CVXPY not run above n = {args.cvxpy_max_n} (--cvxpy-max-n)")
        summary.append(row)

    print("\nsummary (this run):")
    for row in summary:
        parts = [f"torch {dt} {row[dt][0]:.1f} s (gap {row[dt][1]:.1e})" for dt in args.dtypes if dt in row]
        line = f"  n = {row['n']}: " + ", ".join(parts)
        conic = {s: row[s] for s in ("SCS", "CLARABEL") if row.get(s)}
        fastest = min(row[dt][0] for dt in args.dtypes if dt in row)
        if conic:
            best = min(conic, key=conic.get)
            line += (f"; faster conic solver {best} {conic[best]:.1f} s -> {conic[best] / row['float64'][0]:.1f}x "
                     f"(float64), {conic[best] / fastest:.1f}x (fastest torch run)" if "float64" in row else "")
        elif any(s in row for s in ("SCS", "CLARABEL")):
            line += (f"; no conic solver reached the gap within its budget ({args.budget:.0f} s for SCS, "
                     f"{args.clarabel_budget:.0f} s for Clarabel)")
        print(line)


if __name__ == "__main__":
    main()
