"""The duality-gap test of restarted PDHG's stopping rule (test (4) of ``restarted_pdhg.RULE``).

Before it, a run on a second-order-cone / ball constraint could stop at a feasible point strictly
inside the set while the block's multiplier was nonzero: residuals of 1e-9 and an objective error
of 8.5e-9 at ``tol = 1e-9``. The gap ``P - D = <p, x> + sum_k (sigma_S(y_k) - <y_k, K_k x>)`` sees
that complementarity; the rule asks ``|P - D| <= tol (1 + |P| + |D|)`` (PDLP's).

References are independent: the ball problem's minimizer by a scalar root-find on its multiplier
(its KKT conditions in closed form, NumPy + SciPy), and CVXPY + Clarabel at tight tolerances.
Tolerances follow from the rule: the gap bounds the objective error by ``tol (1 + |P| + |D|)``
up to the dropped residual terms, so the relative error may be ``tol (1 + 2 |P|) / |P|``; a
factor 2 is kept for the reference's own error (Clarabel's at 1e-10, ~1e-11 here).
"""
from __future__ import annotations

import numpy as np
import pytest

import regspec

CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}
TOL = 1e-9

BALL = """problem ball {{
  data f, A, b = randn([8], [12, 8], [12], seed = {seed})
  var x[8]
  minimize f @ x + 0.1 * sum_squares(x)
  subject to {{
    norm2(A @ x - b) <= 3.0
  }}
}}
"""

SOCP = """problem socp {
  data f, x0, A1, A2, A3, b1, b2, b3, c1, c2, c3, F = randn([10], [10], [5, 10], [5, 10], [5, 10], [5], [5], [5], [10], [10], [10], [5, 10], seed = 3)
  let d1 = norm2(A1 @ x0 + b1) - c1 @ x0
  let d2 = norm2(A2 @ x0 + b2) - c2 @ x0
  let d3 = norm2(A3 @ x0 + b3) - c3 @ x0
  let g = F @ x0
  var x[10]
  minimize f @ x
  subject to {
    norm2(A1 @ x + b1) <= c1 @ x + d1
    norm2(A2 @ x + b2) <= c2 @ x + d2
    norm2(A3 @ x + b3) <= c3 @ x + d3
    F @ x == g
  }
}
"""


def ball_minimum(seed: int, r: float = 3.0) -> float:
    """min f'x + 0.1 ||x||^2 s.t. ||A x - b|| <= r: x(l) = argmin f'x + 0.1||x||^2 + l ||A x - b||^2
    solves (0.2 I + 2 l A'A) x = 2 l A'b - f, and l > 0 is the root of ||A x(l) - b|| = r when the
    unconstrained minimizer is outside the ball (the KKT conditions)."""
    from scipy.optimize import brentq

    g = np.random.default_rng(seed)
    f, A, b = g.standard_normal(8), g.standard_normal((12, 8)), g.standard_normal(12)

    def x_of(lam: float) -> np.ndarray:
        return np.linalg.solve(0.2 * np.eye(8) + 2 * lam * A.T @ A, 2 * lam * A.T @ b - f)

    x = x_of(0.0)
    if np.linalg.norm(A @ x - b) > r:
        lam = brentq(lambda t: np.linalg.norm(A @ x_of(t) - b) - r, 0.0, 1e6, xtol=1e-300, rtol=1e-15)
        x = x_of(lam)
    return float(f @ x + 0.1 * x @ x)


def allowed(objective: float) -> float:
    """The relative objective error the rule allows at TOL (see the module docstring), times 2."""
    return 2 * TOL * (1 + 2 * abs(objective)) / abs(objective)


@pytest.mark.parametrize("seed", [1, 2, 6])
def test_ball_constraint_stops_at_the_right_objective(seed):
    """Seed 2 stopped at 8.5e-9 relative error before the gap test (tol 1e-9), at a point strictly
    inside the ball; now the objective is within the rule's bound of the closed-form minimum."""
    ref = ball_minimum(seed)
    r = regspec.solve(regspec.load(BALL.format(seed=seed)), backend="torch", tol=TOL)
    assert r.status == "optimal", (r.status, r.info.get("message"))
    assert abs(r.objective - ref) / abs(ref) <= allowed(ref), (r.objective, ref)
    assert r.residuals["gap_rel"] <= r.tol


def test_second_order_cones_stop_at_the_right_objective():
    """Three cones with affine right sides and an equality (the socp classic's structure, seed 3):
    7.5e-9 relative error at tol 1e-9 before the gap test."""
    spec = regspec.load(SOCP)
    ref = regspec.solve(spec, backend="cvxpy", solver="CLARABEL", solver_opts=CLARABEL_TIGHT)
    assert ref.status.startswith("optimal")
    r = regspec.solve(spec, backend="torch", tol=TOL)
    assert r.status == "optimal", (r.status, r.info.get("message"))
    assert abs(r.objective - ref.objective) / abs(ref.objective) <= allowed(ref.objective)


def test_the_reported_dual_objective_brackets_the_minimum():
    """D = P - gap is the dual objective at the step's subgradients: at the returned point it lies
    below the true minimum and P above it, up to the residual terms (O(tol) relative)."""
    ref = ball_minimum(2)
    r = regspec.solve(regspec.load(BALL.format(seed=2)), backend="torch", tol=TOL)
    D, P = r.info["dual_objective"], r.objective
    assert D is not None and P is not None
    slack = TOL * (1 + abs(P) + abs(D))
    assert D <= ref + slack and P >= ref - slack
    assert abs(P - D) <= slack


@pytest.mark.parametrize("path", ["tests/classics/lad_regression.reg", "specs/tv_denoise.reg", "specs/class_ot.reg"])
def test_norm_blocks_enter_the_gap_through_their_conjugates(path):
    """Weighted-norm blocks (l1 of a residual, TV's differences, class OT's pair norms) add their
    exact part f(K x) + f*(y) - <y, K x> (f* the dual ball's indicator minus <c, y>): the reported
    dual objective is below Clarabel's minimum and the objective above it, each up to the rule's
    slack tol (1 + |P| + |D|) (the dropped stationarity residual)."""
    from conftest import ROOT

    spec = regspec.load(ROOT / path)
    ref = regspec.solve(spec, backend="cvxpy", solver="CLARABEL", solver_opts=CLARABEL_TIGHT).objective
    r = regspec.solve(spec, backend="torch", tol=TOL)
    assert r.status == "optimal"
    P, D = r.objective, r.info["dual_objective"]
    slack = TOL * (1 + abs(P) + abs(D))
    assert D <= ref + slack and P >= ref - slack and abs(P - D) <= slack
