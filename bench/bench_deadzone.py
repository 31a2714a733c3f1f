"""The deadzone-linear penalty sum(pos(abs(A x - b) - a)) on the torch backend: its fast path (a
PDHG block with the deadzone prox, since f7cbbfa) against the conic fallback it took before
(restarted PDHG on CVXPY's conic form, the same solver the fallback calls), both at the default
tolerance 1e-6, with the objective's relative gap to Clarabel. CPU seconds (process time), best
of --repeat, so a loaded machine changes the ratio little.

    .venv/bin/python bench/bench_deadzone.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import time

import cvxpy as cp
import numpy as np

import regspec
from regspec.backends.torch.conic.canon import conic_form
from regspec.backends.torch.conic.pdhg import solve_conic_pdhg

SPEC = """problem deadzone {{
  data A, b = randn([{m}, {n}], [{m}], seed = 53)
  var x[{n}]
  minimize sum(pos(abs(A @ x - b) - 0.5))
}}
"""


def _cpu(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'m x n':>9}  {'fast path':>22}  {'conic fallback':>22}  ratio")
    for m, n in ((40, 8), (400, 50), (1000, 100)):
        g = np.random.default_rng(53)
        A, b = g.standard_normal((m, n)), g.standard_normal(m)
        x = cp.Variable(n)
        problem = cp.Problem(cp.Minimize(cp.sum(cp.pos(cp.abs(A @ x - b) - 0.5))))
        problem.solve(solver="CLARABEL")
        ref = problem.value
        spec = regspec.load(SPEC.format(m=m, n=n))
        fast_s, fast = _cpu(lambda: regspec.solve(spec, backend="torch"), args.repeat)
        assert "conic" not in fast.solver, fast.solver

        def fallback():
            form = conic_form(problem, {"x": x})
            sol = solve_conic_pdhg(form.A, form.b, form.c, form.layout, tol=1e-6)
            return form.recover(sol.x, sol.y)[1]

        conic_s, conic_value = _cpu(fallback, args.repeat)
        gap = [abs(v - ref) / abs(ref) for v in (fast.objective, conic_value)]
        print(f"{m:>4} x {n:<3}  {fast_s:7.2f} s (gap {gap[0]:.1e})  {conic_s:7.2f} s (gap {gap[1]:.1e})  "
              f"{conic_s / fast_s:5.1f}x")


if __name__ == "__main__":
    main()
