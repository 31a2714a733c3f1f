"""Iterations and CPU time of every PDHG problem of the bundled specs and the classics.

For each problem block of ``specs/*.reg`` and ``tests/classics/*.reg`` that the torch backend
solves by restarted PDHG, the status, iterations, CPU time (``time.process_time``: the machine is
shared) and relative objective error against CVXPY + Clarabel (gap and feasibility 1e-10) at the
default tolerance and at ``tol = 1e-9``. Run once per code version (``PYTHONPATH`` at a checkout
of the older commit) and compare: this is how the duality-gap test of the PDHG rule (test (4) of
``restarted_pdhg.RULE``) was measured.

    .venv/bin/python bench/bench_gap_rule.py [--only NAME,...] [--tols default,1e-9]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import regspec

ROOT = Path(__file__).resolve().parent.parent
CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}


def pdhg_problems(only: set[str] | None):
    for path in sorted((ROOT / "specs").glob("*.reg")) + sorted((ROOT / "tests" / "classics").glob("*.reg")):
        try:
            spec = regspec.load(path)
        except Exception:  # noqa: BLE001 - a spec this bench cannot load is skipped, not fatal
            continue
        for name in spec.problems:
            if only and name not in only and path.stem not in only:
                continue
            try:
                split = spec.compiled(name).ir.meta["split"]
            except Exception:  # noqa: BLE001 - training blocks and refusals
                continue
            if split.algorithm == "pdhg":
                yield path, spec, name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--tols", default="default,1e-9")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    only = set(args.only.split(",")) if args.only else None
    tols = [None if t == "default" else float(t) for t in args.tols.split(",")]
    print(f"{'problem':34s} {'tol':>7s} {'status':11s} {'iters':>6s} {'cpu s':>7s} {'rel err':>8s}")
    for path, spec, name in pdhg_problems(only):
        try:
            ref = regspec.solve(spec, problem=name, backend="cvxpy", solver="CLARABEL", solver_opts=CLARABEL_TIGHT)
        except Exception:  # noqa: BLE001 - no Clarabel reference (e.g. PSD cones): objective error not shown
            ref = None
        for tol in tols:
            t0 = time.process_time()
            r = regspec.solve(spec, problem=name, backend="torch", **({} if tol is None else {"tol": tol}))
            cpu = time.process_time() - t0
            err = "-"
            if ref is not None and ref.objective is not None and r.objective is not None:
                err = f"{abs(r.objective - ref.objective) / max(abs(ref.objective), 1e-9):.1e}"
            print(f"{path.stem + '/' + name:34s} {'default' if tol is None else f'{tol:.0e}':>7s} {r.status:11s} "
                  f"{r.iterations:6d} {cpu:7.2f} {err:>8s}", flush=True)


if __name__ == "__main__":
    main()
