"""Benchmark: restarted PDHG on small transport problems against CVXPY + SCS / Clarabel
(issue 13 item 4: "at n = 60 the torch path (or auto's choice) is no slower than CVXPY+SCS").

    .venv/bin/python bench/bench_pdhg_small.py [--sizes 60] [--repeat 3] [--fresh]

Problems (bench_class_ot's data at n = m, k = max(3, n // 100) classes):
- class OT: <C, P> + rho sum_{same class} ||P_i - P_i'||_2, P >= 0, marginals a, b (rho = 0.01);
- exact OT: <C, P> over the transport polytope (the ``transport(a, b)`` set).

In one process, after a warm-up solve of each (imports, graph capture): the torch backend at its
default tolerance (``regspec.solve``, best of --repeat), its time per iteration, and CVXPY with SCS
(defaults, then eps 1e-5 if the default misses the gap) and with Clarabel (defaults), each the
problem written by hand (build + compile + solve, best of --repeat). Gap: relative to a torch
float64 run at tol 1e-9 whose certificate held; every timed run must be within --gap (1e-4).
Ratios printed: torch / SCS and torch / faster conic solver. ``--fresh``: the same problems as a
CLI user runs them, ``regspec solve --backend torch|cvxpy|auto`` in fresh processes (wall, median of
--repeat after a warm-up), with auto's choice. In-process times are CPU seconds of this process by
default (``--clock wall`` for wall time). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_class_ot import SPEC as CLASS_OT_SPEC  # noqa: E402
from bench_class_ot import class_ot_data, same_pairs  # noqa: E402

EXACT_OT_SPEC = """problem exact_ot {
  data C = load("ot.npz", "C")
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  var P[rows(C), cols(C)] in transport(a, b)
  minimize sum(C * P)
}
"""
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
REGSPEC = str(Path(sys.executable).with_name("regspec"))


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCK["cpu"]


def best_of(fn, repeat: int):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = clock()
        out = fn()
        best = min(best, clock() - t0)
    return best, out


def cvxpy_solve(d: dict, rho: float | None, solver: str, opts: dict) -> tuple[str, np.ndarray | None]:
    """The problem written by hand in CVXPY (rho None: exact OT); build + compile + solve."""
    import cvxpy as cp
    import scipy.sparse as sp

    n, m = d["C"].shape
    P = cp.Variable((n, m), nonneg=True)
    obj = cp.sum(cp.multiply(d["C"], P))
    if rho is not None:
        pairs = same_pairs(d["labels"])
        cnt = len(pairs)
        B = sp.csr_matrix((np.r_[np.ones(cnt), -np.ones(cnt)], (np.r_[np.arange(cnt), np.arange(cnt)],
                                                                 np.r_[pairs[:, 0], pairs[:, 1]])), shape=(cnt, n))
        obj = obj + rho * cp.sum(cp.norm(B @ P, 2, axis=1))
    prob = cp.Problem(cp.Minimize(obj), [cp.sum(P, axis=1) == d["a"], cp.sum(P, axis=0) == d["b"]])
    prob.solve(solver=solver, **opts)
    return prob.status, None if P.value is None else np.asarray(P.value)


def objective(d: dict, P: np.ndarray, rho: float | None) -> float:
    f = float((d["C"] * P).sum())
    if rho is not None:
        pairs = same_pairs(d["labels"])
        f += rho * float(np.linalg.norm(P[pairs[:, 0]] - P[pairs[:, 1]], axis=1).sum())
    return f


def in_process(name: str, spec_path: Path, d: dict, rho: float | None, args) -> dict:
    import regspec

    params = {"rho": rho} if rho is not None else {}
    spec = regspec.load(spec_path)
    ref = regspec.solve(spec, backend="torch", tol=1e-9, params=params, max_iter=400000)
    f_ref = objective(d, ref.variables["P"], rho)

    def gap(f: float) -> float:
        return abs(f - f_ref) / abs(f_ref)

    t_first, r = best_of(lambda: regspec.solve(regspec.load(spec_path), backend="torch", params=params), 1)
    t_torch, r = best_of(lambda: regspec.solve(regspec.load(spec_path), backend="torch", params=params), args.repeat)
    g = gap(objective(d, r.variables["P"], rho))
    print(f"  torch (restarted PDHG, default tol {r.tol:g}): {t_torch:.3f} s (first solve in this process "
          f"{t_first:.3f} s), {r.status}, {r.iterations} it, {1e3 * t_torch / r.iterations:.3f} ms/it (whole solve), "
          f"{r.info.get('restarts')} restarts, gap {g:.1e}")
    out = {"torch": t_torch}
    for solver, ladder in (("SCS", [{}, {"eps_abs": 1e-5, "eps_rel": 1e-5}]), ("CLARABEL", [{}])):
        for opts in ladder:
            cvxpy_solve(d, rho, solver, opts)  # warm-up (CVXPY's caches, imports)
            t, (status, P) = best_of(lambda: cvxpy_solve(d, rho, solver, opts), args.repeat)
            gg = gap(objective(d, P, rho)) if P is not None else math.inf
            print(f"  CVXPY + {solver} {opts or 'defaults'}: {t:.3f} s, {status}, gap {gg:.1e}")
            if gg <= args.gap:
                out[solver] = t
                break
    scs, cla = out.get("SCS"), out.get("CLARABEL")
    conic = min([t for t in (scs, cla) if t is not None], default=None)
    print(f"  ratios: torch / SCS = {t_torch / scs:.2f}x" if scs else "  SCS missed the gap", end="")
    print(f", torch / faster conic = {t_torch / conic:.2f}x" if conic else "")
    return out


def fresh(name: str, spec_path: Path, rho: float | None, args) -> None:
    sets = ["--set", f"rho={rho}"] if rho is not None else []
    cmds = {b: [REGSPEC, "solve", str(spec_path), "--backend", b, *sets] for b in ("torch", "cvxpy", "auto")}
    times: dict[str, list[float]] = {b: [] for b in cmds}
    for rnd in range(args.repeat + 1):
        for b, cmd in cmds.items():
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=CHILD_ENV)
            if out.returncode != 0:
                print(f"  {b}: failed: {out.stderr.strip()[-300:]}")
            if rnd > 0:
                times[b].append(time.perf_counter() - t0)
    med = {b: statistics.median(t) for b, t in times.items()}
    expl = subprocess.run([REGSPEC, "explain", str(spec_path)], capture_output=True, text=True, cwd=ROOT,
                          env=CHILD_ENV).stdout
    choice = next((ln for ln in expl.splitlines() if ln.startswith("auto:")), "auto: ?")
    print(f"  fresh processes (median of {args.repeat}): " + ", ".join(f"{b} {t:.2f} s" for b, t in med.items()))
    print(f"  {choice}")
    print(f"  auto / faster backend = {med['auto'] / min(med['torch'], med['cvxpy']):.2f}x; "
          f"torch / cvxpy = {med['torch'] / med['cvxpy']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[60])
    ap.add_argument("--rho", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gap", type=float, default=1e-4)
    ap.add_argument("--fresh", action="store_true", help="also time the CLI in fresh processes")
    ap.add_argument("--clock", choices=list(CLOCK), default="cpu",
                    help="in-process times: this process's CPU seconds (default; the solvers here run on one "
                         "thread, and wall time on a shared machine measures the other jobs) or wall seconds")
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    import torch

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}; torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clock} seconds; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    for n in args.sizes:
        d = class_ot_data(n, max(3, n // 100))
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_pdhg_small_{n}_"))
        np.savez(tmp / "ot.npz", **d)
        (tmp / "class_ot.reg").write_text(CLASS_OT_SPEC)
        (tmp / "exact_ot.reg").write_text(EXACT_OT_SPEC)
        for name, file, rho in (("class OT", "class_ot.reg", args.rho), ("exact OT", "exact_ot.reg", None)):
            print(f"\n== {name}, n = m = {n}" + (f", rho = {rho}, {len(same_pairs(d['labels']))} pairs" if rho else ""))
            in_process(name, tmp / file, d, rho, args)
            if args.fresh:
                fresh(name, tmp / file, rho, args)


if __name__ == "__main__":
    main()
