"""PDHG's independent recheck of each constraint (pdhg_lowering.violation) judges a block whose
terms all vanish at the solution (`x[-1] == 0`) against the problem's scale, as the stopping
rule does: its rounding error (1e-15 over a size of 1e-15) once demoted a certified answer of a
projection to optimal_inaccurate. Reference: the projection's closed form."""
from __future__ import annotations

import numpy as np
import pytest

import regspec

pytest.importorskip("torch")

SPEC = """problem p {
  data y = randn(20, seed = 1)
  var x[20]
  minimize sum_squares(x - y)
  subject to {
    x[-1] == 0
    x[[0, 2, 4]] >= 1
  }
}
"""


def _closed_form() -> float:
    y = np.random.default_rng(1).standard_normal(20)
    lifted = np.maximum(y[[0, 2, 4]], 1) - y[[0, 2, 4]]
    return float(y[-1] ** 2 + (lifted ** 2).sum())


def test_a_constraint_whose_terms_vanish_is_not_read_as_violated():
    result = regspec.solve(regspec.load(SPEC), backend="torch")
    assert result.status == "optimal", result.info.get("message")
    assert result.objective == pytest.approx(_closed_form(), rel=1e-5)
    assert abs(result.variables["x"][-1]) <= 1e-6
    assert result.residuals["infeasibility"] <= 1e-6


def test_a_real_violation_of_a_vanishing_block_still_counts():
    """The floor is sqrt(eps) times the variables' size: a violation of 1e-3 at |x| ~ 1 stays 1e-3/1e-3."""
    import torch

    from regspec.backends.torch.pdhg_lowering import violation

    class Selection:  # the block x[0] == 0 of the user's form, K x + c in {0}
        offset = torch.zeros(1, dtype=torch.float64)

        @staticmethod
        def apply(xs):
            return xs[0][:1]

        @staticmethod
        def prox_f(v, step):
            return torch.zeros_like(v)

    x = torch.tensor([1e-3, 1.0], dtype=torch.float64)
    assert violation(Selection, [x]) == pytest.approx(1.0)
    tiny = torch.tensor([1e-15, 1.0], dtype=torch.float64)
    assert violation(Selection, [tiny]) <= 1e-7
