"""PDHG's smooth part with unbounded curvature (exp, even powers): the step comes from the
curvature near the start point, not from a far sample (issue found by the solve fuzzer: exp's
Hessian at a sample 100 units away, ~1e43, gave a step of 1e-43 and a solve that never moved).
References: the same spec through CVXPY + Clarabel; the torch answer must be `optimal` and within
the cross-check's torch threshold (1e-4 relative, tests/test_cvxpy_classics.py)."""
from __future__ import annotations

import pytest

pytest.importorskip("cvxpy")

import regspec  # noqa: E402

HEAD = "problem p {\n  data A, b = randn([4, 3], [4], seed = 563)\n  var x[3]\n"
CASES = {
    "exp_equality": "  minimize sum(exp(x))\n  subject to sum(x) == 1\n",
    "exp_abs_of_affine": "  minimize sum(exp(x)) + abs(sum(x) - 1)\n",
    "exp_huber_abs_equality": ("  minimize sum(exp(x)) + sum(huber(A @ x - b, 0.3)) + abs(sum(x) - 1)\n"
                               "  subject to sum(x) == 1\n"),
    "exp_of_affine_box": "  minimize sum(exp(A @ x - b)) + norm1(x - 1)\n  subject to x <= 2\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pdhg_with_unbounded_curvature_matches_cvxpy(name):
    spec = regspec.load(HEAD + CASES[name] + "}\n")
    ref = regspec.solve(spec, backend="cvxpy")
    got = regspec.solve(spec, backend="torch")
    assert ref.status == "optimal"
    assert got.status == "optimal", got.info
    assert abs(got.objective - ref.objective) <= 1e-4 * max(1.0, abs(ref.objective))
