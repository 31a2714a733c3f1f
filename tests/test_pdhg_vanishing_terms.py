"""PDHG's per-variable stationarity test where every term of the condition vanishes at the
solution (found by the solve fuzzer): the scales at the point go to 0 with the residual, so the
floor is the problem's scale as the run saw it. Before, these ran to the iteration budget with
primal and dual residuals of 1e-16 and ended `user_limit`.
References: closed forms, and the cvxpy backend (Clarabel, ~1e-8) at the torch threshold 1e-4."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cvxpy")

import regspec  # noqa: E402


def test_exact_fit_in_l1_is_optimal_at_the_solution_of_the_system():
    """min ||A x - b||_1 with A square and invertible: x = A^-1 b, value 0, dual y = 0."""
    text = "problem p {\n  data A, b = randn([5, 5], [5], seed = 230)\n  var x[5]\n  minimize norm1(A @ x - b)\n}\n"
    got = regspec.solve(regspec.load(text), backend="torch")
    g = np.random.default_rng(230)
    A, b = g.standard_normal((5, 5)), g.standard_normal(5)
    assert got.status == "optimal" and got.solver == "PDHG"
    assert abs(got.objective) <= 1e-6 * np.abs(b).sum()
    np.testing.assert_allclose(got.variables["x"], np.linalg.solve(A, b), atol=1e-5 * np.abs(np.linalg.solve(A, b)).max())


@pytest.mark.parametrize("body", [
    # a variable that only a constraint mentions, with a zero gradient and a zero multiplier
    "  var S[3, 3]\n  minimize 0.1 * sum(logistic(A @ x)) + 2 * sum(square(x))\n"
    "  subject to {\n    x >= -1\n    S == S.T\n  }\n",
    # an inactive norm-ball constraint around a fit that can be exact
    "  minimize 0.1 * sum_squares(A @ x - b)\n  subject to norm_inf(A @ x - b) <= 2\n",
])
def test_vanishing_terms_agree_with_cvxpy(body):
    text = "problem p {\n  data A, b = randn([6, 6], [6], seed = 7)\n  var x[6]\n" + body + "}\n"
    spec = regspec.load(text)
    got = regspec.solve(spec, backend="torch")
    ref = regspec.solve(spec, backend="cvxpy")
    assert ref.status == "optimal" and got.status == "optimal", got.info.get("message")
    assert abs(got.objective - ref.objective) <= 1e-4 * max(1.0, abs(ref.objective))


@pytest.mark.parametrize("body, value", [
    # S appears only in an equality its objective never reaches: multiplier 0, and the primal
    # weight (driven by a dual that hardly moves) collapses; ran 100000 iterations to user_limit
    ("  var x[3]\n  var S[3, 3] in psd\n  minimize sum_squares(x - 1)\n  subject to trace(S) == 1\n", 0.0),
    ("  var x[3]\n  var t[4]\n  minimize sum_squares(x - 2) + 1\n  subject to {\n    sum(t) == 1\n    t >= 0\n  }\n", 1.0),
])
def test_variable_only_a_slack_equality_names(body, value):
    """The closed form: x = the centre, any feasible S or t; the optimal value is the constant."""
    got = regspec.solve(regspec.load("problem p {\n" + body + "}\n"), backend="torch")
    assert got.status == "optimal", got.info.get("message")
    assert abs(got.objective - value) <= 1e-5 * max(1.0, value)
    assert np.all(np.isfinite(got.variables["x"]))
