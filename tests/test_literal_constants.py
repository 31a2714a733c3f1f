"""Integer literals as numbers on the torch backend: `let A = [[1, 0, 2], [0, 1, 1]]` is an integer
array, and torch's `@` / `dot` do not promote a long operand (every case below was an internal
error: "addmv input tensors must have the same dtype"). Each problem is checked against the cvxpy
backend (Clarabel, ~1e-8) at the torch defaults' threshold, 1e-4 relative with a floor of 1."""
from __future__ import annotations

import pytest

pytest.importorskip("cvxpy")

import regspec  # noqa: E402

HEAD = ("problem p {\n  let A = [[1, 0, 2], [0, 1, 1]]\n  let c = [1, 2, 3]\n  let b = [1, 2]\n"
        "  let P = [[2, 0, 0], [0, 1, 0], [0, 0, 3]]\n  var x[3]\n  var X[3, 3]\n")
CASES = [
    "minimize sum_squares(A @ x - b) + norm1(x)",            # FISTA, smooth part
    "minimize sum_squares(x @ P) + norm1(x)",
    "minimize sum_squares(x - c)\n  subject to A @ x <= b",   # PDHG constraint blocks
    "minimize sum_squares(x - c)\n  subject to c @ x == 2",
    "minimize norm1(A @ x - b) + sum_squares(x)",            # PDHG term block
    "minimize trace(P @ X) + sum_squares(X)",
    "minimize sum_squares(X @ c - c) + norm1(X)",
    "minimize sum_squares(x)\n  subject to norm2(A @ x - b) <= 1",
]


@pytest.mark.parametrize("body", CASES)
def test_integer_literal_matrices_are_numbers(body):
    spec = regspec.load(HEAD + "  " + body + "\n}\n")
    ref = regspec.solve(spec, backend="cvxpy")
    got = regspec.solve(spec, backend="torch")
    assert ref.status == "optimal" and got.status == "optimal", got.info.get("message")
    assert abs(got.objective - ref.objective) <= 1e-4 * max(1.0, abs(ref.objective))
