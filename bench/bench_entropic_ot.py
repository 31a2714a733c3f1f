"""Entropic OT (CATALOGUE X16's construction at several sizes): the torch backend's certified
log-domain Sinkhorn path against CVXPY + Clarabel (exponential cones) on the same spec.

Prints, per size, each backend's wall time for the solve call (spec already loaded and compiled,
imports paid by a warm-up run; lowering and solving timed), the objective gap between them, torch's certified duality gap, and the ratio
CVXPY time / torch time (> 1: torch faster). Run: .venv/bin/python bench/bench_entropic_ot.py [n ...]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import regspec


def spec_text(n: int, eps: float = 0.05, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    xs, xt = rng.uniform(size=(n, 2)), rng.uniform(size=(n, 2))
    C = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    C /= C.max()
    a = np.full(n, 1.0 / n).tolist()
    return (f"problem ot {{\n  let C = {C.tolist()}\n  var P[{n}, {n}] in transport({a}, {a})\n"
            f"  minimize sum(C * P) - {eps} * entropy(P)\n}}\n")


def timed(spec, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    res = regspec.solve(spec, **kw)
    return time.perf_counter() - t0, res


def main(sizes: list[int]) -> None:
    warm = regspec.load(spec_text(5))
    regspec.solve(warm, backend="torch")
    regspec.solve(warm, backend="cvxpy", solver="CLARABEL")
    print(f"{'n':>5} {'torch s':>9} {'iters':>6} {'cvxpy s':>9} {'rel gap':>9} {'cert gap_rel':>12} {'cvxpy/torch':>12}")
    for n in sizes:
        spec = regspec.load(spec_text(n))
        spec.compiled(None)  # parse and analysis once, outside both timings
        t_torch, r_torch = timed(spec, backend="torch")
        t_cvx, r_cvx = timed(spec, backend="cvxpy", solver="CLARABEL")
        gap = abs(r_torch.objective - r_cvx.objective) / max(1.0, abs(r_cvx.objective))
        print(f"{n:>5} {t_torch:>9.3f} {r_torch.iterations:>6} {t_cvx:>9.3f} {gap:>9.1e} "
              f"{r_torch.residuals['gap_rel']:>12.1e} {t_cvx / t_torch:>12.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20, 50, 100])
