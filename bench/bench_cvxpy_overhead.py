"""What regspec adds on top of CVXPY: stage times of the spec path against the same problem
written by hand in CVXPY, in one process.

    .venv/bin/python bench/bench_cvxpy_overhead.py [--repeat 3] [--quick]

Stages of the spec path: parse (text -> AST), analyse (the IR passes, with the time spent
generating data reported apart as `data`, since the hand-written side gets its arrays for free),
lower (IR -> cvxpy.Problem), CVXPY compile (``get_problem_data``: canonicalization and the
solver's matrices) and solve (``solve_via_data``). The hand-written side: build (expressions and
problem), compile, solve. Both use a ``cp.Parameter`` for the penalty weight (the spec's param is
one), so both go through CVXPY's DPP path, and both use the solver regspec's policy picks.

Printed: seconds per stage (best of --repeat runs; one solve each), the front-end overhead
(parse + analyse - data + lower) relative to CVXPY's compile of the same problem (target <= 10%),
and end-to-end ratios.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Case:
    name: str
    spec: str
    data: Callable[[], dict]                 # the arrays, made outside the timed build
    build: Callable[[dict], object]          # arrays -> the hand-written cvxpy.Problem


def lasso_case(n: int) -> Case:
    spec = f"""
problem lasso {{
  data X, y = randn([{n}, {n}], [{n}], seed = 0)
  param lam = 0.1 >= 0
  var w[cols(X)]
  minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * norm1(w)
}}
"""

    def data():
        rng = np.random.default_rng(0)
        return {"X": rng.standard_normal((n, n)), "y": rng.standard_normal(n)}

    def build(d):
        import cvxpy as cp

        lam = cp.Parameter(nonneg=True, value=0.1)
        w = cp.Variable(n)
        return cp.Problem(cp.Minimize(cp.sum_squares(d["X"] @ w - d["y"]) / (2 * n) + lam * cp.norm1(w)))

    return Case(f"lasso n=p={n}", spec, data, build)


def group_lasso_case(n: int, p: int, size: int) -> Case:
    groups = p // size
    spec = f"""
problem group_lasso {{
  data X, y = randn([{n}, {p}], [{n}], seed = 0)
  data ids = arange({groups})
  data g = repeat(ids, {size})
  param lam = 0.1 >= 0
  var w[cols(X)]
  minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * group_norm(w, g)
}}
"""

    def data():
        rng = np.random.default_rng(0)
        return {"X": rng.standard_normal((n, p)), "y": rng.standard_normal(n)}

    def build(d):
        import cvxpy as cp

        lam = cp.Parameter(nonneg=True, value=0.1)
        w = cp.Variable(p)
        # the natural hand-written form: reshape the consecutive groups and take row norms
        penalty = np.sqrt(size) * cp.sum(cp.norm(cp.reshape(w, (groups, size), order="C"), 2, axis=1))
        return cp.Problem(cp.Minimize(cp.sum_squares(d["X"] @ w - d["y"]) / (2 * n) + lam * penalty))

    return Case(f"group lasso n={n} p={p} ({groups} groups of {size})", spec, data, build)


def matrix_completion_case(m: int, rank: int, frac: float) -> Case:
    spec = f"""
problem matrix_completion {{
  data U, Vt = randn([{m}, {rank}], [{rank}, {m}], seed = 0)
  data R = rand({m}, {m}, seed = 1)
  let M = U @ Vt
  param lam = 0.1 >= 0
  var X[{m}, {m}]
  minimize 0.5 * sum_squares(X[R <= {frac}] - M[R <= {frac}]) + lam * nuclear_norm(X)
}}
"""

    def data():
        rng = np.random.default_rng(0)
        U, Vt = rng.standard_normal((m, rank)), rng.standard_normal((rank, m))
        return {"M": U @ Vt, "mask": np.random.default_rng(1).uniform(size=(m, m)) <= frac}

    def build(d):
        import cvxpy as cp

        lam = cp.Parameter(nonneg=True, value=0.1)
        X = cp.Variable((m, m))
        mask, M = d["mask"], d["M"]
        return cp.Problem(cp.Minimize(0.5 * cp.sum_squares(X[mask] - M[mask]) + lam * cp.normNuc(X)))

    return Case(f"matrix completion {m}x{m} rank {rank}, {frac:.0%} observed", spec, data, build)


def spec_path(case: Case, solve: bool = True) -> dict[str, float]:
    import regspec
    from regspec.backends.cvxpy.lower import lower
    from regspec.backends.cvxpy.solve import choose_solver, solver_options
    from regspec.compiler.passes import constants

    data_seconds = [0.0]
    call_source = constants.call_source

    def timed_source(*args, **kwargs):
        t = time.perf_counter()
        try:
            return call_source(*args, **kwargs)
        finally:
            data_seconds[0] += time.perf_counter() - t

    constants.call_source = timed_source
    try:
        t = {}
        t0 = time.perf_counter()
        spec = regspec.load(case.spec)
        t["parse"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ir = spec.compiled().ir
        t["analyse"] = time.perf_counter() - t0
        t["data"] = data_seconds[0]
    finally:
        constants.call_source = call_source
    t0 = time.perf_counter()
    program = lower(ir)
    t["lower"] = time.perf_counter() - t0
    solver = choose_solver(program, None)
    t0 = time.perf_counter()
    data, chain, inverse = program.problem.get_problem_data(solver, solver_opts=solver_options(solver, None, None))
    t["compile"] = time.perf_counter() - t0
    t["solver"] = solver
    if solve:
        t0 = time.perf_counter()
        raw = chain.solve_via_data(program.problem, data, solver_opts=solver_options(solver, None, None))
        program.problem.unpack_results(raw, chain, inverse)
        t["solve"] = time.perf_counter() - t0
        t["value"] = float(program.problem.value)
    return t


def hand_path(case: Case, arrays: dict, solver: str, solve: bool = True) -> dict[str, float]:
    from regspec.backends.cvxpy.solve import solver_options

    t = {}
    t0 = time.perf_counter()
    problem = case.build(arrays)
    t["build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data, chain, inverse = problem.get_problem_data(solver, solver_opts=solver_options(solver, None, None))
    t["compile"] = time.perf_counter() - t0
    if solve:
        t0 = time.perf_counter()
        raw = chain.solve_via_data(problem, data, solver_opts=solver_options(solver, None, None))
        problem.unpack_results(raw, chain, inverse)
        t["solve"] = time.perf_counter() - t0
        t["value"] = float(problem.value)
    return t


def best(runs: list[dict]) -> dict:
    """Per stage, the fastest run (the first run also solved: its solve time and value are kept)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float) and key not in ("value", "solve"):
            out[key] = min(r[key] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = ap.parse_args()
    import cvxpy  # noqa: F401  (imported up front: its import time is no stage's)

    import regspec  # noqa: F401

    if args.quick:
        cases = [lasso_case(300), group_lasso_case(200, 400, 5), matrix_completion_case(30, 2, 0.4)]
    else:
        cases = [lasso_case(2000), group_lasso_case(1000, 2000, 5), matrix_completion_case(100, 3, 0.4)]
    spec_path(cases[0])  # warm caches (lark grammar, sklearn-free imports) outside the timings
    for case in cases:
        s = best([spec_path(case, solve=(i == 0)) for i in range(args.repeat)])
        arrays = case.data()
        h = best([hand_path(case, arrays, s["solver"], solve=(i == 0)) for i in range(args.repeat)])
        front = s["parse"] + s["analyse"] - s["data"] + s["lower"]
        print(f"\n== {case.name} (solver {s['solver']}, best of {args.repeat})")
        print(f"  regspec : parse {s['parse']:.4f}  analyse {s['analyse']:.4f} (data {s['data']:.4f})  "
              f"lower {s['lower']:.4f}  compile {s['compile']:.4f}  solve {s['solve']:.4f}")
        print(f"  by hand : build {h['build']:.4f}  compile {h['compile']:.4f}  solve {h['solve']:.4f}")
        print(f"  objective: regspec {s['value']:.10g}  by hand {h['value']:.10g}")
        print(f"  front end + lowering (parse + analyse - data + lower) = {front:.4f} s "
              f"= {100 * front / h['compile']:.1f}% of CVXPY's compile ({h['compile']:.4f} s)"
              f"  [target <= 10%]")
        print(f"  lower / hand build = {s['lower'] / max(h['build'], 1e-9):.2f}x;  "
              f"compile ratio regspec/hand = {s['compile'] / h['compile']:.2f}x;  "
              f"to-solver-data ratio (front + compile) / (build + compile) = "
              f"{(front + s['compile']) / (h['build'] + h['compile']):.3f}")


if __name__ == "__main__":
    main()
