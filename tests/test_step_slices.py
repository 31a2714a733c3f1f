"""Slices with a step (NumPy's and CVXPY's `x[0:20:2]`, `X[::2, :]`) index on both backends;
a zero or negative step is refused at the step. Reference: closed forms."""
from __future__ import annotations

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError
from regspec.fmt import format_text

SPEC = """problem p {
  data y = randn(20, seed = 1)
  data M = randn(6, 4, seed = 2)
  var x[20]
  var X[6, 4]

  minimize sum_squares(x - y) + norm1(x[0:20:2]) + sum_squares(X - M)
  subject to X[::2, 1:4:2] == 0
}
"""


def _closed_form() -> float:
    """min (x - y)^2 + |x| per even entry: y^2 where |y| <= 1/2, else |y| - 1/4; the odd entries
    cost 0; X equals M except on the rows 0, 2, 4 and columns 1, 3 it is pinned to 0."""
    y = np.random.default_rng(1).standard_normal(20)
    M = np.random.default_rng(2).standard_normal((6, 4))
    even = np.abs(y[0::2])
    return float(np.where(even <= 0.5, even ** 2, even - 0.25).sum() + (M[::2, 1:4:2] ** 2).sum())


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_step_slices_on_both_backends(backend):
    pytest.importorskip(backend)
    result = regspec.solve(regspec.load(SPEC), backend=backend)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(_closed_form(), rel=1e-4 if backend == "torch" else 1e-6)
    assert np.abs(result.variables["X"][::2, 1:4:2]).max() <= 1e-5


def test_step_slices_are_fmt_stable():
    assert format_text(SPEC) == SPEC


@pytest.mark.parametrize("key,col,what", [("x[::-1]", 43, "reversed slices"), ("x[0:4:0]", 45, "")])
def test_a_step_that_is_not_positive_is_located(key, col, what):
    text = f"problem p {{\n  data y = randn(20, seed = 1)\n  var x[20]\n  minimize sum_squares(x - y) + norm1({key})\n}}\n"
    with pytest.raises(RegspecError) as info:
        regspec.load(text).compiled("p")
    message = str(info.value)
    assert f":4:{col}:" in message and "a slice step must be a positive integer" in message and what in message
