"""Property: on random convex problems over matrix and PSD variables, indexing and slicing,
transposes, reshape/vec, scalar broadcasting, bounded parameters, mixed equalities, inequalities
and sets (tests/fuzz_problems.py), regspec agrees with a CVXPY problem built by hand from the same
arrays: the statuses match (an infeasible or unbounded instance is reported so by the cvxpy
backend (possibly `_inaccurate`) and never `optimal` by the torch backend), the cvxpy backend's
objective agrees to 1e-6 relative with Clarabel (1e-8 gaps on both sides) and within three times
SCS's stopping tolerance with SCS, the torch backend's `optimal` to 1e-4 (its certified accuracy,
tests/test_cvxpy_classics.py); `regspec fmt` round-trips every generated spec.

4 seeds by default (each solves three times; CI has two cores); ``REGSPEC_FUZZ_EXAMPLES=400``
runs 400, and ``python tests/fuzz_problems.py N START`` prints every disagreement."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("cvxpy")

from fuzz_problems import disagreements, fmt_failure, generate  # noqa: E402

EXAMPLES = int(os.environ.get("REGSPEC_FUZZ_EXAMPLES", "4"))


@pytest.mark.parametrize("seed", range(EXAMPLES))
def test_regspec_agrees_with_cvxpy_by_hand(tmp_path, seed):
    problem = generate(seed)
    assert fmt_failure(problem.text) is None, problem.text
    assert disagreements(problem, tmp_path) == [], problem.text
