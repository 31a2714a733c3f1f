"""huber and kl_div are totals here and elementwise in CVXPY: where the two readings differ
(the total broadcast over an array, `sum(w * huber(r))`, `kl_div(x, y) <= t` with a vector t),
the spec is refused at the atom instead of solving something else than a CVXPY user meant
(sum(w) * total instead of sum_i w_i huber(r_i): 83.2 vs 3.70 on the case below). Scalar uses
agree with CVXPY's sum of the elementwise atom."""
from __future__ import annotations

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError

cp = pytest.importorskip("cvxpy")

HEAD = "problem p {\n  data A, b = randn([20, 3], [20], seed = 1)\n  data w = rand(20, seed = 2)\n  var x[3]\n"


def _error(body: str) -> str:
    with pytest.raises(RegspecError) as info:
        regspec.load(HEAD + body + "}\n").compiled("p")
    return str(info.value)


def test_a_total_broadcast_over_weights_is_refused_at_the_atom():
    message = _error("  minimize sum(w * huber(A @ x - b, 1))\n")
    assert ":5:20:" in message and "is a single number (a sum) broadcast here over shape (20,)" in message
    assert "CVXPY's huber is elementwise" in message


def test_a_total_compared_with_a_vector_is_refused():
    message = _error("  minimize sum_squares(x)\n  subject to kl_div(exp(A @ x), w + 1) <= w + 1\n")
    assert ":6:14:" in message and "rel_entr(x, y) - x + y" in message


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_scalar_uses_mean_cvxpys_sum(backend):
    pytest.importorskip(backend)
    g = np.random.default_rng(1)
    A, b = g.standard_normal((20, 3)), g.standard_normal(20)
    x = cp.Variable(3)
    ref = cp.Problem(cp.Minimize(2 * cp.sum(cp.huber(A @ x - b, 1)) + cp.sum_squares(x)))
    ref.solve(solver="CLARABEL")
    result = regspec.solve(regspec.load(HEAD + "  minimize 2 * huber(A @ x - b, 1) + sum_squares(x)\n}\n"),
                           backend=backend)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(ref.value, rel=1e-4 if backend == "torch" else 1e-6)
