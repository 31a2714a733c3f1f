"""Tests of the generic torch solvers (FISTA, PDHG) against independent references.

References: scikit-learn's coordinate-descent Lasso, scipy's active-set NNLS, CVXPY + Clarabel
(tight tolerances), closed forms. Tolerances are derived from each solver's stopping rule:

* FISTA stops when the gradient mapping r = ||G_t(x)|| <= tol * max(1, ||grad f(x)||). For f
  mu-strongly convex with L-Lipschitz gradient, with x+ = prox_{th}(x - t grad f(x)):
  G_t(x) - grad f(x) + grad f(x+) is in dF(x+), so ||x+ - x*|| <= (1 + L t) r / mu, and
  ||x - x+|| = t r; hence  ||x - x*|| <= (t + (1 + L t) / mu) * r.       (bound_fista)
* PDHG's residuals p in d(s+g)(x+) + K^T y+ and d in df*(y+) - K x+ give, for s + g
  mu-strongly convex, mu ||x - x*||^2 <= <p, x - x*> + <d, y - y*>, hence
  ||x - x*|| <= ||p|| / mu + sqrt(||d|| ||y - y*|| / mu).               (bound_pdhg)
  With a duality gap, P(x) - P* <= gap and (mu/2) ||x - x*||^2 <= P(x) - P* <= gap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from regspec.backends.torch.solvers import (
    LinearOperator,
    SolverResult,
    check_pdhg_steps,
    conj_prox_from_prox,
    equality_conj_prox,
    estimate_lipschitz,
    estimate_operator_norm,
    fista,
    pdhg,
    pdhg_step_sizes,
)

F64 = torch.float64
# Clarabel at tight tolerances: its own error is far below the solver tolerances tested here.
CLARABEL_TIGHT = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-10)


def soft(v: torch.Tensor, thr: float) -> torch.Tensor:
    return torch.sign(v) * torch.clamp(v.abs() - thr, min=0.0)


def grad_mapping(smooth_np_grad, prox_np, x: np.ndarray, t: float) -> float:
    """Independent (numpy) recomputation of ||x - prox_{th}(x - t grad f(x))|| / t."""
    return float(np.linalg.norm(x - prox_np(x - t * smooth_np_grad(x), t)) / t)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These problems are tiny: intra-op threads only add synchronisation (10x slower on a
    busy 2-core machine). Restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)  # as shipped: centred, unit-norm columns
    return X, y - y.mean()


def lasso_closures(X: np.ndarray, y: np.ndarray, alpha: float, dtype=F64, device="cpu"):
    n = X.shape[0]
    Xt = torch.tensor(X, dtype=dtype, device=device)
    yt = torch.tensor(y, dtype=dtype, device=device)

    def smooth(xs):
        r = Xt @ xs[0] - yt
        return 0.5 * (r * r).sum() / n

    def prox(vs, t):
        return [soft(vs[0], t * alpha)]

    def objective(xs):
        return smooth(xs) + alpha * xs[0].abs().sum()

    return smooth, prox, objective


def lasso_objective_np(X, y, w, alpha):
    return 0.5 * np.sum((X @ w - y) ** 2) / X.shape[0] + alpha * np.abs(w).sum()


# ------------------------------------------------------------------------------------------
# FISTA
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha_spec, known_value, known_nnz",
    [(1.0, 2586.943195, 3), ("0.1max", 1807.165260, 5)],
)
def test_fista_lasso_diabetes_matches_sklearn(diabetes, alpha_spec, known_value, known_nnz):
    from sklearn.linear_model import Lasso

    X, y = diabetes
    n, p = X.shape
    alpha_max = np.abs(X.T @ y).max() / n
    assert alpha_max == pytest.approx(2.148044, abs=1e-6)  # CATALOGUE X1
    alpha = 0.1 * alpha_max if alpha_spec == "0.1max" else alpha_spec

    tol = 1e-12
    smooth, prox, objective = lasso_closures(X, y, alpha)
    res = fista(smooth, prox, [torch.zeros(p, dtype=F64)], tol=tol, objective=objective)
    assert isinstance(res, SolverResult) and res.algorithm == "fista"
    assert res.status == "optimal"
    w = res.x[0].numpy()

    sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=10**6).fit(X, y)
    w_sk = sk.coef_

    # a-priori bound on our distance to the minimizer (bound_fista), with mu, L of X^T X / n
    eig = np.linalg.eigvalsh(X.T @ X / n)
    mu, L = eig[0], eig[-1]
    t = res.info["step"]
    r = res.residuals["prox_grad"]
    # the rule's scale (solvers._FISTA_RULE): max(||grad f(x)||, ||u||, ||grad f(x0)||), with
    # u = G_t(x) - grad f(x); here ||grad f(x0)|| = ||X^T y|| / n
    g = X.T @ (X @ w - y) / n
    scale = max(np.linalg.norm(g), np.linalg.norm(X.T @ y) / n)
    assert r <= tol * max(scale, r + np.linalg.norm(g)) * (1 + 1e-6)
    bound = (t + (1.0 + L * t) / mu) * r
    assert bound < 1e-6
    # sklearn's CD at tol=1e-12 is certified by its duality gap; the two agree far inside 1e-6
    assert np.max(np.abs(w - w_sk)) <= 1e-6

    f_ours = lasso_objective_np(X, y, w, alpha)
    f_sk = lasso_objective_np(X, y, w_sk, alpha)
    assert res.objective == pytest.approx(f_ours, rel=1e-14)
    assert abs(f_ours - f_sk) <= 1e-8 * abs(f_sk)
    # CATALOGUE X1 value (printed to 6 decimals; ours 2586.9431926, i.e. within 1e-9 relative)
    assert abs(f_ours - known_value) <= 1e-8 * known_value
    assert int(np.count_nonzero(w)) == known_nnz == int(np.count_nonzero(w_sk))

    # KKT: |X_j^T (y - Xw)| / n <= alpha, with equality and sign(w_j) on the support
    c = X.T @ (y - X @ w) / n
    assert np.all(np.abs(c) <= alpha * (1 + 1e-9))
    on = w != 0
    np.testing.assert_allclose(c[on], alpha * np.sign(w[on]), rtol=1e-9)


@pytest.mark.parametrize("step0", [None, 1e-8, 1e3])
def test_fista_nnls_matches_scipy(step0):
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 15))
    b = rng.standard_normal(40)
    x_ref, _ = nnls(A, b)
    assert 0 < np.count_nonzero(x_ref) < 15  # constraints active and inactive

    At, bt = torch.tensor(A), torch.tensor(b)
    tol = 1e-10
    res = fista(lambda xs: 0.5 * ((At @ xs[0] - bt) ** 2).sum(), lambda vs, t: [vs[0].clamp(min=0)],
                [torch.zeros(15, dtype=F64)], tol=tol, step0=step0)
    assert res.status == "optimal"
    x = res.x[0].numpy()
    assert np.all(x >= 0)
    sv = np.linalg.svd(A, compute_uv=False)
    mu, L = sv[-1] ** 2, sv[0] ** 2
    t, r = res.info["step"], res.residuals["prox_grad"]
    # independent recomputation of the certificate
    r_np = grad_mapping(lambda v: A.T @ (A @ v - b), lambda v, _t: np.maximum(v, 0), x, t)
    assert r_np == pytest.approx(r, rel=1e-6, abs=1e-13)
    bound = (t + (1.0 + L * t) / mu) * r
    assert np.linalg.norm(x - x_ref) <= bound + 1e-12  # scipy's active set is exact to rounding
    # a pessimistic (1e-8) or optimistic (1e3) first step is corrected: the final step is
    # within the range the sufficient-decrease test allows
    assert 0.25 / L <= t <= 1e3 / mu
    assert res.iterations < 200


def test_fista_several_variables_matches_cvxpy():
    """min 0.5||A1 u + A2 v - b||^2 + lam ||u||_1, v >= 0; a third variable w is unused by the
    smooth part (zero gradient) and its prox sends it to 0."""
    import cvxpy as cp

    rng = np.random.default_rng(2)
    A1, A2 = rng.standard_normal((40, 10)), rng.standard_normal((40, 5))
    b = rng.standard_normal(40)
    lam = 2.0
    u, v = cp.Variable(10), cp.Variable(5)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(A1 @ u + A2 @ v - b) + lam * cp.norm1(u)), [v >= 0])
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)

    A1t, A2t, bt = map(torch.tensor, (A1, A2, b))

    def smooth(xs):
        return 0.5 * ((A1t @ xs[0] + A2t @ xs[1] - bt) ** 2).sum()

    def prox(vs, t):
        return [soft(vs[0], t * lam), vs[1].clamp(min=0), torch.zeros_like(vs[2])]

    x0 = [torch.zeros(10, dtype=F64), torch.zeros(5, dtype=F64), torch.ones(3, dtype=F64)]
    res = fista(smooth, prox, x0, tol=1e-10, objective=lambda xs: smooth(xs) + lam * xs[0].abs().sum())
    assert res.status == "optimal"
    assert torch.equal(x0[2], torch.ones(3, dtype=F64))  # inputs are not modified
    assert torch.count_nonzero(res.x[2]) == 0
    Aall = np.hstack([A1, A2])
    sv = np.linalg.svd(Aall, compute_uv=False)
    mu, L = sv[-1] ** 2, sv[0] ** 2
    bound = (res.info["step"] + (1 + L * res.info["step"]) / mu) * res.residuals["prox_grad"]
    err = np.linalg.norm(np.concatenate([res.x[0].numpy() - u.value, res.x[1].numpy() - v.value]))
    assert err <= bound + 1e-7  # + Clarabel's own (interior-point) error
    assert res.objective == pytest.approx(prob.value, rel=1e-9)


def test_fista_l1_logistic_breast_cancer():
    """CATALOGUE X6 (non-quadratic smooth part): C * sum logistic(-y * Xw) + ||w||_1, C = 0.1,
    breast_cancer z-scored, no intercept: 12.22277928 with 9 nonzeros."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = 2.0 * y - 1.0
    Xt, yt, C = torch.tensor(X), torch.tensor(y), 0.1
    smooth = lambda ws: C * torch.nn.functional.softplus(-yt * (Xt @ ws[0])).sum()
    res = fista(smooth, lambda vs, t: [soft(vs[0], t)], [torch.zeros(30, dtype=F64)], tol=1e-10,
                objective=lambda ws: smooth(ws) + ws[0].abs().sum())
    assert res.status == "optimal"
    assert abs(res.objective - 12.22277928) <= 1e-8 * 12.22277928  # value printed to 8 decimals
    w = res.x[0].numpy()
    assert np.count_nonzero(w) == 9
    # KKT of the l1 problem: grad_j = -sign(w_j) on the support, |grad_j| <= 1 off it; the
    # certificate r bounds the violation (r <= 1e-10 * ||grad||, ||grad|| ~ 4)
    z = y * (X @ w)
    g = -C * X.T @ (y / (1.0 + np.exp(z)))
    on = w != 0
    np.testing.assert_allclose(g[on], -np.sign(w[on]), atol=1e-8)
    assert np.all(np.abs(g[~on]) <= 1 + 1e-8)


def test_fista_tighter_tol_gives_smaller_residual(diabetes):
    X, y = diabetes
    alpha = 0.5
    smooth, prox, _ = lasso_closures(X, y, alpha)
    n = X.shape[0]
    w_star = fista(smooth, prox, [torch.zeros(10, dtype=F64)], tol=1e-13).x[0].numpy()
    out = []
    for tol in (1e-3, 1e-6, 1e-9, 1e-12):
        res = fista(smooth, prox, [torch.zeros(10, dtype=F64)], tol=tol)
        assert res.status == "optimal"
        x = res.x[0].numpy()
        # the stopping rule is real: recompute the certificate independently
        r = grad_mapping(lambda v: X.T @ (X @ v - y) / n, lambda v, t: np.sign(v) * np.maximum(np.abs(v) - t * alpha, 0),
                         x, res.info["step"])
        gnorm = np.linalg.norm(X.T @ (X @ x - y) / n)
        # the rule's scale: max(||grad f(x)||, ||u||, ||grad f(x0)||), ||u|| <= r + ||grad f(x)||
        scale = max(gnorm, np.linalg.norm(X.T @ y) / n, r + gnorm)
        assert r <= tol * scale * (1 + 1e-6) + 1e-14
        out.append((r, res.iterations, np.linalg.norm(x - w_star)))
    rs, its, errs = zip(*out)
    assert all(a > b for a, b in zip(rs, rs[1:]))
    assert all(a <= b for a, b in zip(its, its[1:]))
    assert errs[-1] < 1e-7 < errs[0]


def test_fista_limits_history_callback(diabetes):
    X, y = diabetes
    smooth, prox, objective = lasso_closures(X, y, 0.1)
    res = fista(smooth, prox, [torch.zeros(10, dtype=F64)], tol=1e-14, max_iter=7, check_every=2)
    assert res.status == "user_limit" and res.iterations == 7
    assert "prox_grad" in res.residuals and res.residuals["prox_grad"] > 0
    assert [h["iteration"] for h in res.history] == [2.0, 4.0, 6.0]
    seen = []
    res = fista(smooth, prox, [torch.zeros(10, dtype=F64)], tol=1e-14, check_every=3,
                callback=lambda k, xs, r: seen.append(k) or k >= 6)
    assert res.status == "user_limit" and seen == [3, 6] and res.iterations == 6
    assert res.objective is None


def test_fista_float32_and_tol_floor(diabetes):
    X, y = diabetes
    alpha = 1.0
    smooth, prox, objective = lasso_closures(X, y, alpha, dtype=torch.float32)
    res = fista(smooth, prox, [torch.zeros(10, dtype=torch.float32)], tol=1e-5, objective=objective)
    assert res.status == "optimal" and res.x[0].dtype == torch.float32
    f64 = lasso_objective_np(X, y, res.x[0].double().numpy(), alpha)
    assert f64 == pytest.approx(2586.9431926, rel=1e-6)
    # tol below float32 resolution is floored at 10 eps and still terminates
    res = fista(smooth, prox, [torch.zeros(10, dtype=torch.float32)], tol=1e-12, max_iter=5000)
    assert res.info["tol_effective"] == pytest.approx(10 * torch.finfo(torch.float32).eps)
    assert res.status == "optimal"


def test_fista_given_gradient_and_constant_smooth():
    rng = np.random.default_rng(3)
    A = torch.tensor(rng.standard_normal((20, 6)))
    b = torch.tensor(rng.standard_normal(20))
    smooth = lambda xs: 0.5 * ((A @ xs[0] - b) ** 2).sum()
    grad = lambda xs: [A.T @ (A @ xs[0] - b)]
    prox = lambda vs, t: [vs[0].clamp(-0.1, 0.1)]
    r1 = fista(smooth, prox, [torch.zeros(6, dtype=F64)], tol=1e-10)
    r2 = fista(smooth, prox, [torch.zeros(6, dtype=F64)], tol=1e-10, grad=grad)
    assert r1.status == r2.status == "optimal"
    torch.testing.assert_close(r1.x[0], r2.x[0], atol=1e-9, rtol=0)
    # smooth part constant (no dependence on x): the prox alone decides, in one step
    r3 = fista(lambda xs: torch.tensor(1.0, dtype=F64), lambda vs, t: [vs[0].clamp(min=2.0)],
               [torch.zeros(3, dtype=F64)], tol=1e-12)
    assert r3.status == "optimal" and torch.all(r3.x[0] == 2.0)


# ------------------------------------------------------------------------------------------
# PDHG
# ------------------------------------------------------------------------------------------


def diff_operator(n: int, *, with_norm: bool = False) -> LinearOperator:
    def apply(xs):
        return xs[0][1:] - xs[0][:-1]

    def adjoint(y):
        return [torch.cat([-y[:1], y[:-1] - y[1:], y[-1:]])]

    return LinearOperator(apply, adjoint, 2.0 if with_norm else None)


@pytest.fixture(scope="module")
def tv_problem():
    import cvxpy as cp

    rng = np.random.default_rng(0)
    n, lam = 200, 1.0
    truth = np.repeat(rng.normal(0.0, 1.0, 8), n // 8)
    b = truth + 0.1 * rng.standard_normal(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - b) + lam * cp.norm1(cp.diff(x))))
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    return b, lam, x.value, prob.value


@pytest.mark.parametrize("variant", ["prox_g", "condat_vu", "fixed_steps"])
def test_pdhg_tv1d_matches_cvxpy(tv_problem, variant):
    """min 0.5||x - b||^2 + lam ||D x||_1 (CATALOGUE X20, 1-D)."""
    b, lam, x_ref, p_ref = tv_problem
    n = b.size
    bt = torch.tensor(b)
    D = diff_operator(n)
    obj = lambda xs: 0.5 * ((xs[0] - bt) ** 2).sum() + lam * (xs[0][1:] - xs[0][:-1]).abs().sum()
    # dual: (s+g)*(z) = 0.5||z||^2 + <z, b>, f*(y) = indicator(||y||_inf <= lam) = 0 on the iterates
    conj_g = lambda zs: 0.5 * (zs[0] ** 2).sum() + (zs[0] * bt).sum()
    conj_f = [lambda y: 0.0]
    x0 = [torch.zeros(n, dtype=F64)]
    tol = 1e-8
    common = dict(tol=tol, objective=obj, conj_g=conj_g, conj_f=conj_f)
    if variant == "prox_g":
        res = pdhg(lambda vs, t: [(vs[0] + t * bt) / (1 + t)], [D], [lambda y, s: y.clamp(-lam, lam)], x0, **common)
        assert res.algorithm == "pdhg"
    elif variant == "condat_vu":
        prox_l1 = lambda v, t: soft(v, t * lam)
        res = pdhg(None, [D], [conj_prox_from_prox(prox_l1)], x0, smooth=lambda xs: 0.5 * ((xs[0] - bt) ** 2).sum(),
                   **common)
        assert res.algorithm == "condat-vu"
        assert res.info["lipschitz"] == pytest.approx(1.01, rel=1e-6)  # Hessian = I, inflated 1%
    else:
        res = pdhg(lambda vs, t: [(vs[0] + t * bt) / (1 + t)], [diff_operator(n, with_norm=True)],
                   [lambda y, s: y.clamp(-lam, lam)], x0, tau=0.45, sigma=0.5, max_iter=20000, **common)
        assert res.info["norm_K"] == 2.0 and not res.info["adaptive"]
        assert (res.info["tau"], res.info["sigma"]) == (0.45, 0.5)
    assert res.status == "optimal"
    assert res.residuals["primal_rel"] <= tol and res.residuals["dual_rel"] <= tol
    gap = res.residuals["gap"]
    assert -1e-10 <= gap <= 1e-6  # weak duality; gap ~ P * rel. residual
    # P(x) - P* <= gap and P* <= P(x): objective to 1e-6 relative vs Clarabel (observed ~1.5e-8)
    assert res.objective - p_ref <= gap + 1e-9 * abs(p_ref)
    assert abs(res.objective - p_ref) <= 1e-6 * abs(p_ref)
    # 1-strongly convex: ||x - x*|| <= sqrt(2 gap), plus Clarabel's error on x
    assert np.linalg.norm(res.x[0].numpy() - x_ref) <= math.sqrt(2 * max(gap, 0.0)) + 1e-5
    assert torch.all(res.y[0].abs() <= lam * (1 + 1e-12))  # dual feasibility (Moreau form: to rounding)


def test_pdhg_equality_qp_matches_cvxpy():
    """min <c, x> + 0.5||x||^2  s.t.  A x = b, x >= 0 (g carries the linear term, the square and
    the sign constraint; f = indicator of {b})."""
    import cvxpy as cp

    rng = np.random.default_rng(1)
    m, n = 8, 30
    A = rng.standard_normal((m, n))
    b = A @ rng.uniform(0.5, 1.5, n)
    c = rng.standard_normal(n)
    x = cp.Variable(n)
    cons = [A @ x == b, x >= 0]
    prob = cp.Problem(cp.Minimize(c @ x + 0.5 * cp.sum_squares(x)), cons)
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    y_ref = cons[0].dual_value

    At, bt, ct = map(torch.tensor, (A, b, c))
    K = LinearOperator(lambda xs: At @ xs[0], lambda y: [At.T @ y])
    tol = 1e-9
    res = pdhg(lambda vs, t: [torch.clamp((vs[0] - t * ct) / (1 + t), min=0)], [K], [equality_conj_prox(bt)],
               [torch.zeros(n, dtype=F64)], tol=tol, objective=lambda xs: ct @ xs[0] + 0.5 * (xs[0] ** 2).sum())
    assert res.status == "optimal"
    xr, yr = res.x[0].numpy(), res.y[0].numpy()
    # for f = indicator{b}: d = b - A x+, the constraint violation
    assert np.linalg.norm(A @ xr - b) <= res.residuals["dual"] * (1 + 1e-6) + 1e-12
    assert res.residuals["dual"] <= tol * max(1.0, np.linalg.norm(A @ xr), np.linalg.norm(b)) * 1.01
    # bound_pdhg with mu = 1; ||y - y*|| <= ||y|| + ||y*|| (sign-free)
    p, d = res.residuals["primal"], res.residuals["dual"]
    bound = p + math.sqrt(d * (np.linalg.norm(yr) + np.linalg.norm(y_ref)))
    assert np.linalg.norm(xr - x.value) <= bound + 1e-7
    assert res.objective == pytest.approx(prob.value, rel=1e-7)
    # A has full row rank: the multiplier is unique; CVXPY's sign convention matches ours
    np.testing.assert_allclose(yr, y_ref, atol=1e-6)


def test_pdhg_quadratic_ot_two_operators_matches_cvxpy():
    """<C, T> + (gamma/2)||T||_F^2, T 1 = a, T^T 1 = b, T >= 0 (CATALOGUE X18, n = m = 20)."""
    import cvxpy as cp

    rng = np.random.default_rng(0)
    nn, gamma = 20, 0.1
    xs_, xt = rng.uniform(size=(nn, 2)), rng.uniform(size=(nn, 2))
    C = ((xs_[:, None] - xt[None]) ** 2).sum(-1)
    C /= C.max()
    a = np.full(nn, 1.0 / nn)
    T = cp.Variable((nn, nn))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(C, T)) + gamma / 2 * cp.sum_squares(T)),
                      [cp.sum(T, 1) == a, cp.sum(T, 0) == a, T >= 0])
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)

    Ct, at = torch.tensor(C), torch.tensor(a)
    rows = LinearOperator(lambda xs: xs[0].sum(1), lambda y: [y[:, None].expand(nn, nn)])
    cols = LinearOperator(lambda xs: xs[0].sum(0), lambda y: [y[None, :].expand(nn, nn)])
    tol = 1e-9
    res = pdhg(lambda vs, t: [torch.clamp((vs[0] - t * Ct) / (1 + t * gamma), min=0)], [rows, cols],
               [equality_conj_prox(at), equality_conj_prox(at)], [torch.zeros(nn, nn, dtype=F64)], tol=tol,
               objective=lambda xs: (Ct * xs[0]).sum() + gamma / 2 * (xs[0] ** 2).sum())
    assert res.status == "optimal" and len(res.y) == 2
    # ||K||^2 = ||[rows; cols]||^2 = 2 nn (the all-ones direction); power iteration + 1%
    assert res.info["norm_K"] == pytest.approx(1.01 * math.sqrt(2 * nn), rel=1e-4)
    Tr = res.x[0].numpy()
    assert np.all(Tr >= 0)
    assert np.abs(Tr.sum(1) - a).max() <= 1e-8 and np.abs(Tr.sum(0) - a).max() <= 1e-8
    # bound_pdhg with mu = gamma; dual ||y - y*|| bounded by ||y|| + ||y*|| (y* from CVXPY; the
    # OT multipliers are unique only up to a constant shift, so use ||y|| twice + that shift bound)
    p, d = res.residuals["primal"], res.residuals["dual"]
    ynorm = math.sqrt(sum(float((yk ** 2).sum()) for yk in res.y))
    bound = p / gamma + math.sqrt(d * 2 * (ynorm + 10.0) / gamma)
    err = np.linalg.norm(Tr - T.value)
    assert err <= bound + 1e-7
    assert err <= 1e-6  # observed ~1e-8
    assert res.objective == pytest.approx(prob.value, rel=1e-7)


def test_pdhg_two_variables_with_partial_operator():
    """min 0.5||u - a||^2 + 0.5||v - c||^2 + lam ||v||_1  s.t.  u + v = b.
    K1(u, v) = u + v (f1 = indicator{b}); K2(u, v) = v (f2 = lam ||.||_1, adjoint [None, y])."""
    import cvxpy as cp

    rng = np.random.default_rng(4)
    n, lam = 12, 0.3
    a, c, b = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    u, v = cp.Variable(n), cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(u - a) + 0.5 * cp.sum_squares(v - c) + lam * cp.norm1(v)),
                      [u + v == b])
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    at, ct, bt = map(torch.tensor, (a, c, b))
    K1 = LinearOperator(lambda xs: xs[0] + xs[1], lambda y: [y, y])
    K2 = LinearOperator(lambda xs: xs[1], lambda y: [None, y])
    prox_g = lambda vs, t: [(vs[0] + t * at) / (1 + t), (vs[1] + t * ct) / (1 + t)]
    res = pdhg(prox_g, [K1, K2], [equality_conj_prox(bt), lambda y, s: y.clamp(-lam, lam)],
               [torch.zeros(n, dtype=F64), torch.zeros(n, dtype=F64)], tol=1e-10)
    assert res.status == "optimal"
    np.testing.assert_allclose(res.x[0].numpy(), u.value, atol=1e-7)
    np.testing.assert_allclose(res.x[1].numpy(), v.value, atol=1e-7)
    assert np.count_nonzero(np.abs(res.x[1].numpy()) > 1e-9) == np.count_nonzero(np.abs(v.value) > 1e-6)


def test_pdhg_step_size_conditions():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((15, 25))
    At = torch.tensor(A)
    K = LinearOperator(lambda xs: At @ xs[0], lambda y: [At.T @ y])
    true_norm = np.linalg.norm(A, 2)
    est = estimate_operator_norm([K], [torch.zeros(25, dtype=F64)])
    assert 0.999 * true_norm <= est <= true_norm * (1 + 1e-12)  # power iteration: a lower bound
    # 1-D difference operator: ||D|| = 2 cos(pi / 2n) < 2
    n = 200
    est_d = estimate_operator_norm([diff_operator(n)], [torch.zeros(n, dtype=F64)])
    assert 0.999 * 2 * math.cos(math.pi / (2 * n)) <= est_d <= 2 * math.cos(math.pi / (2 * n)) + 1e-12

    # the steps pdhg picks satisfy the conditions with the TRUE constants
    Q = rng.standard_normal((25, 25))
    H = Q.T @ Q / 25
    Ht = torch.tensor(H)
    L_true = np.linalg.eigvalsh(H)[-1]
    assert estimate_lipschitz(lambda xs: 0.5 * xs[0] @ (Ht @ xs[0]), [torch.zeros(25, dtype=F64)]) == \
        pytest.approx(L_true, rel=1e-6)
    b = torch.tensor(rng.standard_normal(15))
    for w in (0.1, 1.0, 10.0):
        # no smooth term: tau sigma ||K||^2 < 1
        res = pdhg(None, [K], [equality_conj_prox(b)], [torch.zeros(25, dtype=F64)], max_iter=20, primal_weight=w,
                   adaptive=False)
        assert res.info["tau"] * res.info["sigma"] * true_norm ** 2 < 1
        # Condat-Vu: 1/tau - sigma ||K||^2 >= L/2 (strictly, with the 0.95 safety)
        res = pdhg(None, [K], [equality_conj_prox(b)], [torch.zeros(25, dtype=F64)], max_iter=200,
                   primal_weight=w, smooth=lambda xs: 0.5 * xs[0] @ (Ht @ xs[0]))
        tau, sigma = res.info["tau"], res.info["sigma"]
        assert 1 / tau - sigma * true_norm ** 2 > L_true / 2
    # the formula sits on Condat's boundary when safety = 1
    tau, sigma = pdhg_step_sizes(3.0, 2.0, 0.7, safety=1.0)
    assert 1 / tau - sigma * 9.0 == pytest.approx(1.0, rel=1e-12)
    # user-given steps are validated; the boundary is refused (1 * 1 * 1 is exact in IEEE arithmetic)
    with pytest.raises(ValueError, match="step-size condition"):
        check_pdhg_steps(1.0, 1.0, 1.0)
    # a computed product is never compared at the boundary itself: 1.0 * (1 / n**2) * n**2 is
    # 0.9999999999999999 on some CPUs, so the steps violate the condition by a clear 1%
    with pytest.raises(ValueError, match="step-size condition"):
        pdhg(None, [K], [equality_conj_prox(b)], [torch.zeros(25, dtype=F64)], tau=1.0, sigma=1.01 / true_norm ** 2,
             norm_K=true_norm)
    with pytest.raises(ValueError, match="step-size condition"):  # violates Condat only
        pdhg(None, [K], [equality_conj_prox(b)], [torch.zeros(25, dtype=F64)], tau=0.9 / true_norm,
             sigma=0.9 / true_norm, norm_K=true_norm, smooth=lambda xs: 0.5 * xs[0] @ (Ht @ xs[0]), lipschitz=L_true)
    res = pdhg(None, [K], [equality_conj_prox(b)], [torch.zeros(25, dtype=F64)], tau=0.5 / true_norm, max_iter=5,
               norm_K=true_norm)
    assert res.info["tau"] * res.info["sigma"] * true_norm ** 2 == pytest.approx(0.95)


def test_pdhg_tighter_tol_gives_smaller_residuals(tv_problem):
    b, lam, x_ref, p_ref = tv_problem
    n = b.size
    bt = torch.tensor(b)
    errs, its = [], []
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        res = pdhg(lambda vs, t: [(vs[0] + t * bt) / (1 + t)], [diff_operator(n)], [lambda y, s: y.clamp(-lam, lam)],
                   [torch.zeros(n, dtype=F64)], tol=tol)
        assert res.status == "optimal"
        assert res.residuals["primal_rel"] <= tol and res.residuals["dual_rel"] <= tol
        assert res.history and res.history[-1]["primal_rel"] == res.residuals["primal_rel"]
        errs.append(np.linalg.norm(res.x[0].numpy() - x_ref))
        its.append(res.iterations)
    assert all(a > b_ for a, b_ in zip(errs, errs[1:]))
    assert all(a <= b_ for a, b_ in zip(its, its[1:]))
    assert errs[-1] < 1e-6


def test_pdhg_stop_on_gap_and_limits(tv_problem):
    b, lam, _, p_ref = tv_problem
    n = b.size
    bt = torch.tensor(b)
    args = (lambda vs, t: [(vs[0] + t * bt) / (1 + t)], [diff_operator(n)], [lambda y, s: y.clamp(-lam, lam)],
            [torch.zeros(n, dtype=F64)])
    kw = dict(objective=lambda xs: 0.5 * ((xs[0] - bt) ** 2).sum() + lam * (xs[0][1:] - xs[0][:-1]).abs().sum(),
              conj_g=lambda zs: 0.5 * (zs[0] ** 2).sum() + (zs[0] * bt).sum(), conj_f=[lambda y: 0.0])
    res = pdhg(*args, tol=1e-7, stop_on_gap=True, **kw)
    assert res.status == "optimal" and res.residuals["gap_rel"] <= 1e-7
    assert 0 <= res.objective - p_ref <= res.residuals["gap"] + 1e-9
    res = pdhg(*args, tol=1e-12, max_iter=25, check_every=10, **kw)
    assert res.status == "user_limit" and res.iterations == 25
    assert [h["iteration"] for h in res.history] == [10.0, 20.0, 25.0]
    res = pdhg(*args, tol=1e-12, callback=lambda k, xs, r: k >= 30)
    assert res.status == "user_limit" and res.iterations == 30


def test_pdhg_float32(tv_problem):
    b, lam, x_ref, _ = tv_problem
    bt = torch.tensor(b, dtype=torch.float32)
    res = pdhg(lambda vs, t: [(vs[0] + t * bt) / (1 + t)], [diff_operator(b.size)], [lambda y, s: y.clamp(-lam, lam)],
               [torch.zeros(b.size)], tol=1e-12, max_iter=20000)
    # tol below float32 resolution is floored at 10 eps and the run still terminates
    assert res.info["tol_effective"] == pytest.approx(10 * torch.finfo(torch.float32).eps)
    assert res.status == "optimal" and res.x[0].dtype == torch.float32 and res.y[0].dtype == torch.float32
    assert np.linalg.norm(res.x[0].double().numpy() - x_ref) < 1e-4


def test_conjugate_prox_helpers():
    rng = np.random.default_rng(6)
    y = torch.tensor(rng.standard_normal(50)) * 3
    bvec = torch.tensor(rng.standard_normal(50))
    for sigma in (0.1, 1.0, 7.0):
        # f = lam |.|_1: f* = indicator of the lam-box, its prox is the clip
        lam = 0.8
        pf = conj_prox_from_prox(lambda v, t: soft(v, t * lam))
        torch.testing.assert_close(pf(y, sigma), y.clamp(-lam, lam), rtol=0, atol=1e-12)
        # f = 0.5||. - b||^2: f*(y) = 0.5||y||^2 + <b, y>, prox = (y - sigma b) / (1 + sigma)
        pf = conj_prox_from_prox(lambda v, t: (v + t * bvec) / (1 + t))
        torch.testing.assert_close(pf(y, sigma), (y - sigma * bvec) / (1 + sigma), rtol=0, atol=1e-12)
        # indicator of {b}: prox is the constant b; Moreau gives y - sigma b
        pf = conj_prox_from_prox(lambda v, t: bvec.clone())
        torch.testing.assert_close(pf(y, sigma), equality_conj_prox(bvec)(y, sigma), rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_solvers_on_cuda(diabetes, tv_problem):
    X, y = diabetes
    for dtype, tol, rel in ((torch.float32, 1e-5, 1e-6), (F64, 1e-12, 1e-10)):
        smooth, prox, objective = lasso_closures(X, y, 1.0, dtype=dtype, device="cuda")
        res = fista(smooth, prox, [torch.zeros(10, dtype=dtype, device="cuda")], tol=tol)
        assert res.status == "optimal" and res.x[0].is_cuda
        assert lasso_objective_np(X, y, res.x[0].double().cpu().numpy(), 1.0) == pytest.approx(2586.9431926, rel=rel)
    b, lam, x_ref, p_ref = tv_problem
    bt = torch.tensor(b, device="cuda")
    res = pdhg(lambda vs, t: [(vs[0] + t * bt) / (1 + t)], [diff_operator(b.size)], [lambda y, s: y.clamp(-lam, lam)],
               [torch.zeros(b.size, dtype=F64, device="cuda")], tol=1e-8)
    assert res.status == "optimal" and res.x[0].is_cuda
    assert np.linalg.norm(res.x[0].cpu().numpy() - x_ref) < 1e-5
