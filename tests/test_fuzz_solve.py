"""Property: on random convex problems built from the catalogue, the two backends never contradict
each other (issue 9's fuzzing, carried to `solve`). Two `optimal` answers agree to the cross-check's
torch threshold (1e-4 relative, tests/test_cvxpy_classics.py); an `optimal` on one side is never an
`infeasible` / `unbounded` on the other; nothing raises but a located RegspecError. The torch side
runs at most 5000 iterations (a `user_limit` is an honest answer, not a contradiction).

The problems are seeded draws (deterministic): 1-3 terms from TERMS with random weights, 0-2
constraints from CONSTRAINTS, over a vector x (and matrices S, M when a term or constraint names
them). ``REGSPEC_FUZZ_EXAMPLES=200`` runs a longer search locally; what it found so far is fixed
and covered by tests of its own (tests/test_pdhg_smooth_curvature.py, tests/test_pdhg_vanishing_terms.py,
the ray checks in tests/test_results_truth.py and tests/test_cvxpy_solve.py, the unconstrained
conic fallback in tests/test_conic_fallback.py)."""
from __future__ import annotations

import os
import random

import pytest

pytest.importorskip("cvxpy")

import regspec  # noqa: E402
from regspec.diagnostics import RegspecError  # noqa: E402

EXAMPLES = int(os.environ.get("REGSPEC_FUZZ_EXAMPLES", "12"))
TERMS = ["sum_squares(A @ x - b)", "norm1(x)", "norm2(A @ x - b)", "norm_inf(x - 1)", "sum(huber(A @ x - b))",
         "max(A @ x - b)", "sum(pos(A @ x - b))", "log_sum_exp(A @ x)", "quad_form(x, P)", "sum(exp(x))",
         "sum_largest(A @ x, 2)", "pnorm(x, 3)", "sum(logistic(A @ x))", "tv(x)", "-sum(log(x + 2))",
         "-sum(sqrt(x + 3))", "sum(inv_pos(x + 2))", "norm1(A @ x - b)", "norm2(diff(x))", "-sum(entr(x + 2))",
         "sum(exp(A @ x - b))", "elastic_net(x)", "lambda_max(S)", "nuclear_norm(M)", "sum_squares(M - B)",
         "-log_det(S + I)", "-min(x)", "sum(kl_div(x + 2, 1 + 0 * c))"]
CONSTRAINTS = ["x >= -1", "x <= 2", "sum(x) == 1", "norm2(x) <= 3", "x in simplex", "x in l1_ball(2)",
               "A @ x <= b + 1", "x in linf_ball(0.5)", "max(x) <= 1", "c @ x <= 1", "sum_squares(x) <= 4",
               "S in psd", "trace(S) == 1", "M in spectral_ball(1)", "log_sum_exp(x) <= 2", "geo_mean(x + 2) >= 1"]
SOLVED = {"optimal", "optimal_inaccurate"}
NO_POINT = {"infeasible", "unbounded"}


def problem_text(seed: int) -> str:
    rng = random.Random(seed)
    n = rng.randint(2, 6)
    m = rng.randint(n, 2 * n)
    terms = rng.sample(TERMS, rng.randint(1, 3))
    cons = rng.sample(CONSTRAINTS, rng.randint(0, 2))
    lines = ["problem fz {", f"  data A, b, F, c = randn([{m}, {n}], [{m}], [{n}, {n}], [{n}], seed = {seed})",
             f"  data En = eye({n})", "  let P = F @ F.T + 0.1 * En"]
    if any(k in " ".join(terms + cons) for k in ("S", "M")):
        lines += [f"  data B = randn(3, 4, seed = {seed + 1})", "  data I = eye(3)", "  var S[3, 3]", "  var M[3, 4]"]
    lines.append(f"  var x[{n}]")
    weights = [rng.choice(["", "0.5 * ", "2 * "]) for _ in terms]
    lines.append("  minimize " + " + ".join(f"{w}({t})" for w, t in zip(weights, terms)))
    if cons:
        lines += ["  subject to {", *[f"    {c}" for c in cons], "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def outcome(spec, backend: str):
    try:
        kw = {"max_iter": 5000} if backend == "torch" else {}
        return regspec.solve(spec, backend=backend, **kw)
    except RegspecError as e:  # a located refusal (DCP, no lowering) is an answer
        return e


@pytest.mark.parametrize("seed", range(EXAMPLES))
def test_backends_never_contradict_each_other(seed):
    text = problem_text(seed)
    spec = regspec.load(text)
    spec.compiled()
    cvx, trc = outcome(spec, "cvxpy"), outcome(spec, "torch")
    if isinstance(cvx, RegspecError) or isinstance(trc, RegspecError):
        return
    if cvx.status == "optimal" and trc.status == "optimal":
        scale = max(1.0, abs(cvx.objective), abs(trc.objective))
        assert abs(cvx.objective - trc.objective) <= 1e-4 * scale, (cvx.objective, trc.objective, text)
    assert not (cvx.status in SOLVED and trc.status in NO_POINT), (cvx.status, trc.status, text)
    assert not (trc.status in SOLVED and cvx.status in NO_POINT), (cvx.status, trc.status, text)
