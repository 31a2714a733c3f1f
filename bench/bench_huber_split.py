"""Huber of a linear map under PDHG: smooth part (Condat-Vu) vs dual block (Chambolle-Pock).

Since the split takes ``huber(A x + b)`` (A not the identity) as a PDHG dual block whenever the
problem goes to PDHG anyway, this bench solves a few Huber problems that need PDHG (a coupling
constraint, a box, an l1 term of a linear map) at several data scales and sizes, and prints the
iterations, the CPU time of the solve (``time.process_time``, the machine is shared) and the
relative objective error against Clarabel at tight tolerances. Run it once per code version
(e.g. with ``PYTHONPATH`` pointing at a checkout of the older commit) and compare the rows.

    .venv/bin/python bench/bench_huber_split.py [--tol 1e-6]
"""
from __future__ import annotations

import argparse
import time
import warnings

import regspec

CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}

SUM_BOX = """problem huber_sum_box {{
  data X = randn({m}, {n}, seed = 6, scale = {scale})
  data y = randn({m}, seed = 7)
  var w[{n}] in linf_ball(0.5)
  minimize sum(huber(X @ w - y, M = 1.0))
  subject to {{
    sum(w) == 1
  }}
}}
"""

OUTLIERS_EQ = """problem huber_outliers_eq {{
  data A, x0, noise = randn([{m}, {n}], [{n}], [{m}], seed = 7)
  data outliers = sparse_randn({m}, density = 0.1, seed = 8, scale = 10)
  let b = A @ x0 + 0.1 * noise + outliers
  var x[{n}]
  minimize huber(A @ x - b, M = 1) + 0.1 * norm1(x)
  subject to {{
    sum(x) == 1
  }}
}}
"""

NONNEG_TV = """problem huber_tv {{
  data X = randn({m}, {n}, seed = 3, scale = {scale})
  data y = randn({m}, seed = 4)
  var w[{n}] >= 0
  minimize huber(X @ w - y, M = 0.5) + 0.5 * tv(w)
}}
"""

CASES = [
    ("sum+box 5x3 scale 1", SUM_BOX, dict(m=5, n=3, scale=1.0)),
    ("sum+box 5x3 scale 1e2", SUM_BOX, dict(m=5, n=3, scale=100.0)),
    ("sum+box 5x3 scale 1e4", SUM_BOX, dict(m=5, n=3, scale=10000.0)),
    ("sum+box 200x50 scale 1", SUM_BOX, dict(m=200, n=50, scale=1.0)),
    ("outliers+l1+sum 40x5", OUTLIERS_EQ, dict(m=40, n=5)),
    ("outliers+l1+sum 400x50", OUTLIERS_EQ, dict(m=400, n=50)),
    ("nonneg+tv 100x30 scale 1", NONNEG_TV, dict(m=100, n=30, scale=1.0)),
    ("nonneg+tv 100x30 scale 1e3", NONNEG_TV, dict(m=100, n=30, scale=1000.0)),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tol", type=float, default=None)
    ap.add_argument("--max-iter", type=int, default=20000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    print(f"{'case':30s} {'status':11s} {'iters':>6s} {'cpu s':>7s} {'rel err':>8s}  path")
    for name, text, kw in CASES:
        spec = regspec.load(text.format(**kw))
        ref = regspec.solve(spec, backend="cvxpy", solver="CLARABEL", solver_opts=CLARABEL_TIGHT)
        opts = {"max_iter": args.max_iter, **({"tol": args.tol} if args.tol else {})}
        regspec.solve(spec, backend="torch", **{**opts, "max_iter": 64})  # warm-up (imports, tracing)
        t0 = time.process_time()
        r = regspec.solve(spec, backend="torch", **opts)
        cpu = time.process_time() - t0
        err = abs(r.objective - ref.objective) / max(abs(ref.objective), 1e-12) if r.objective is not None else None
        path = r.info.get("variant", r.solver)
        print(f"{name:30s} {r.status:11s} {r.iterations:6d} {cpu:7.3f} "
              f"{'-' if err is None else f'{err:.1e}':>8s}  {path}", flush=True)


if __name__ == "__main__":
    main()
