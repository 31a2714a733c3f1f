"""The walking skeleton's end-to-end check: specs/lasso.reg solved by both backends agrees with
scikit-learn's Lasso (an independent coordinate-descent implementation) and with CATALOGUE X1."""
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso

import regspec

from conftest import SPECS


def sklearn_lasso(alpha: float):
    X, y = load_diabetes(return_X_y=True)
    y = y - y.mean()
    # tol=1e-12 on the duality gap: coefficients good far beyond the 1e-6 asserted below.
    model = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(X, y)
    w = model.coef_
    obj = np.sum((X @ w - y) ** 2) / (2 * len(y)) + alpha * np.abs(w).sum()
    return w, obj


# Interior-point accuracy: Clarabel's gap tolerances at 1e-12 give objective values to ~1e-10
# relative and coefficients to ~1e-7 on this well-conditioned problem (columns of unit norm).
CLARABEL_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


@pytest.mark.parametrize("lam", [1.0, 0.2148044])
@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_lasso_agrees_with_sklearn(backend, lam):
    spec = regspec.load(SPECS / "lasso.reg")
    kw = {"solver_opts": CLARABEL_TIGHT} if backend == "cvxpy" else {"tol": 1e-12}
    result = regspec.solve(spec, backend=backend, params={"lam": lam}, **kw)
    assert result.status == "optimal"
    w_ref, obj_ref = sklearn_lasso(lam)
    # FISTA stops at ||G_t(w)|| <= 1e-12 max(1, ||grad||); with the smallest eigenvalue of
    # X^T X / n (~1e-4 here) the distance to the unique minimizer is below 1e-12 / 1e-4 = 1e-8.
    np.testing.assert_allclose(result.variables["w"], w_ref, atol=1e-6, rtol=0)
    assert abs(result.objective - obj_ref) <= 1e-8 * abs(obj_ref)


def test_lasso_known_value_and_support():
    result = regspec.solve(SPECS / "lasso.reg", backend="torch")
    assert abs(result.objective - 2586.943195) < 1e-6 * 2586.943195  # CATALOGUE X1, lam = 1
    assert np.count_nonzero(result.variables["w"]) == 3  # prox steps give exact zeros


def test_lasso_from_npz_matches_dataset(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    np.savez(tmp_path / "diabetes.npz", X=X, y=y - y.mean())
    (tmp_path / "lasso.reg").write_text(
        'problem lasso {\n  data X = load("diabetes.npz", "X")\n  data y = load("diabetes.npz", "y")\n'
        "  param lam = 1.0 >= 0\n  var w[cols(X)]\n"
        "  minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * norm1(w)\n}\n")
    a = regspec.solve(tmp_path / "lasso.reg", backend="torch")
    b = regspec.solve(SPECS / "lasso.reg", backend="torch")
    # dataset(center=true) also re-centres X's columns, which moves the data by ~1e-17.
    np.testing.assert_allclose(a.variables["w"], b.variables["w"], rtol=1e-10, atol=1e-10)


def test_parameters_resolve_without_recompiling():
    spec = regspec.load(SPECS / "lasso.reg")
    first = regspec.solve(spec, backend="cvxpy", params={"lam": 1.0})
    program = spec._compiled["cvxpy:lasso"]
    second = regspec.solve(spec, backend="cvxpy", params={"lam": 0.5})
    assert spec._compiled["cvxpy:lasso"] is program          # the same cvxpy.Problem object
    assert program.problem.is_dpp()
    assert second.objective < first.objective
