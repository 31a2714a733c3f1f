"""Static keywords (quad_form's P, huber's M, axis, k, ...) are fixed when the problem is compiled:
given a parameter or a variable, the error is at the call that uses it, with the entry's advice.
quad_form(w, Sigma) with a parameter Sigma (CVXPY: Parameter(PSD=True), not DPP) is written with
a parameter factor instead, and that form re-solves for new values on both backends."""
from __future__ import annotations

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError

PARAM_P = """problem p {
  data F = randn(3, 4, seed = 1)
  param Sigma[4, 4] = F.T @ F in psd
  var w[4]

  minimize quad_form(w, Sigma)
  subject to sum(w) == 1
}
"""

FACTOR = """problem p {
  data F0 = randn(3, 4, seed = 1)
  param F[3, 4] = F0
  var w[4]

  minimize sum_squares(F @ w) + 0.1 * sum_squares(w)
  subject to sum(w) == 1
}
"""


def test_a_parameter_matrix_in_quad_form_is_refused_at_the_call_with_the_factor_form():
    with pytest.raises(RegspecError) as info:
        regspec.load(PARAM_P).compiled("p")
    message = str(info.value)
    assert ":6:12:" in message, message
    assert "the keyword `P` of quad_form is fixed when the problem is compiled" in message
    assert "depends on a parameter" in message and "sum_squares(F @ x)" in message


def test_a_parameter_for_a_scalar_static_keyword_is_located_at_the_call():
    with pytest.raises(RegspecError) as info:
        regspec.load("problem p {\n  param m = 1 >= 0\n  var x[3]\n  minimize huber(x - 2, m)\n}\n").compiled("p")
    assert ":4:12:" in str(info.value) and "keyword `M` of huber" in str(info.value)


def _min_variance(F: np.ndarray) -> float:
    """min w'(F'F + 0.1 I)w s.t. 1'w = 1: 1 / (1' P^-1 1)."""
    P = F.T @ F + 0.1 * np.eye(F.shape[1])
    return float(1 / (np.ones(4) @ np.linalg.solve(P, np.ones(4))))


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_the_factor_form_re_solves_for_new_parameter_values(backend):
    pytest.importorskip(backend)
    spec = regspec.load(FACTOR)
    F0 = np.random.default_rng(1).standard_normal((3, 4))
    for F in (F0, 2 * F0):
        result = regspec.solve(spec, backend=backend, params={"F": F})
        assert result.status == "optimal"
        assert result.objective == pytest.approx(_min_variance(F), rel=1e-4 if backend == "torch" else 1e-6)


@pytest.mark.parametrize("constraint,col,key", [("x in l2_ball(r)", 19, "`r` of set l2_ball"),
                                                ("x in box(-r, 0.3)", 23, "`lo` of set box")])
def test_a_parameter_as_a_set_argument_is_located_with_the_constraint_form(constraint, col, key):
    text = ("problem p {\n  data b = randn(5, seed = 1)\n  param r = 0.5 >= 0\n  var x[5]\n"
            f"  minimize sum_squares(x - b)\n  subject to {constraint}\n}}\n")
    with pytest.raises(RegspecError) as info:
        regspec.load(text).compiled("p")
    message = str(info.value)
    assert f":6:{col}:" in message and key in message and "`norm2(x) <= r`" in message


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_the_constraint_form_keeps_the_radius_symbolic(backend):
    """min ||x - b||^2 s.t. ||x|| <= r: b scaled to the ball, value (||b|| - r)^2."""
    pytest.importorskip(backend)
    spec = regspec.load("problem p {\n  data b = randn(5, seed = 1)\n  param r = 0.5 >= 0\n  var x[5]\n"
                        "  minimize sum_squares(x - b)\n  subject to norm2(x) <= r\n}\n")
    norm_b = np.linalg.norm(np.random.default_rng(1).standard_normal(5))
    for r in (0.5, 1.0):
        result = regspec.solve(spec, backend=backend, params={"r": r})
        assert result.status == "optimal"
        assert result.objective == pytest.approx((norm_b - r) ** 2, rel=1e-4 if backend == "torch" else 1e-6)
