"""Comparisons as expressions: between data they are boolean masks folded at compile time
(NumPy's `K > 0.4`, as CVXPY's examples build their masks); in constraints and domains only
`==`, `<=`, `>=` are allowed, and a comparison of a variable inside an expression is located."""
from __future__ import annotations

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError
from regspec.fmt import format_text

MASKED = """problem masked {
  data K = rand(4, 5, seed = 3)
  data M = randn(4, 5, seed = 4)
  data lab = repeat([0, 1, 2, 3, 4], 4)
  let known = K > 0.4
  let target = (reshape(lab, [4, 5]) != 1) + 2 * (M < -1)
  var X[4, 5]

  minimize sum_squares(X - target)
  subject to known * X == known * M
}
"""


def _masked_value() -> float:
    """min ||X - t||^2 with X fixed to M on the known entries: the known entries' squared gaps."""
    K = np.random.default_rng(3).uniform(0, 1, (4, 5))
    M = np.random.default_rng(4).standard_normal((4, 5))
    lab = np.repeat([0, 1, 2, 3, 4], 4).reshape(4, 5)
    target = (lab != 1) + 2.0 * (M < -1)
    known = K > 0.4
    return float(((M - target)[known] ** 2).sum())


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_masks_of_data_fold_on_both_backends(backend):
    pytest.importorskip(backend)
    result = regspec.solve(regspec.load(MASKED), backend=backend)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(_masked_value(), rel=1e-4 if backend == "torch" else 1e-6)


def test_masked_spec_is_fmt_stable():
    assert format_text(MASKED) == MASKED


def _error(text: str) -> str:
    with pytest.raises(RegspecError) as info:
        regspec.load(text).compiled("p")
    return str(info.value)


def test_strict_inequality_constraint_is_refused_at_the_operator():
    message = _error("problem p {\n  var x[3]\n  minimize sum_squares(x)\n  subject to x < 1\n}\n")
    assert ":4:16:" in message and "not `<`" in message and "write `<=`" in message


def test_parameter_domains_still_read_and_strict_ones_are_refused():
    spec = regspec.load("problem p {\n  param lam = 0.5 >= 0\n  var x[3]\n  minimize sum_squares(x - 1) + lam * norm1(x)\n}\n")
    assert spec.compiled("p") is not None
    with pytest.raises(RegspecError) as info:
        regspec.load("problem p {\n  param lam = -1 >= 0\n  var x\n  minimize square(x) + lam * x\n}\n").compiled("p")
    assert ":2:" in str(info.value)
    message = _error("problem p {\n  param lam = 0.5 > 0\n  var x\n  minimize square(x) + lam * x\n}\n")
    assert ":2:19:" in message and "not `>`" in message and "write `>=`" in message


def test_comparison_of_a_variable_inside_an_expression_is_located():
    message = _error("problem p {\n  var x[3]\n  minimize sum(x > 0)\n}\n")
    assert ":3:16:" in message and "`x > 0` compares a variable" in message and "subject to" in message


def test_a_constraint_needs_a_comparison_and_comparisons_do_not_chain():
    message = _error("problem p {\n  var x[3]\n  minimize sum_squares(x)\n  subject to sum(x)\n}\n")
    assert ":4:14:" in message and "needs a comparison" in message
    with pytest.raises(RegspecError) as info:
        regspec.load("problem p {\n  var x[3]\n  minimize sum_squares(x)\n  subject to 0 <= x <= 1\n}\n")
    assert ":4:21:" in str(info.value) and "comparisons do not chain" in str(info.value)
