"""What `regspec solve` reports is true (issue 9 item 1, issue 11 item 3 and the NumPy-scalar crash).

References are independent of regspec's lowering: the problems are written by hand in CVXPY and
solved by Clarabel, whose default stopping rule (gap and feasibility 1e-8) puts objectives within
~1e-8 relative; the torch backend's FISTA stops at a relative prox-gradient residual of 1e-9,
which on these well-conditioned problems puts objectives within ~1e-8 relative, so agreement is
checked at 1e-6. JSON is parsed with a ``parse_constant`` that rejects Infinity and NaN.
"""
from __future__ import annotations

import json
import math
import cvxpy as cp
import numpy as np
import pytest

import regspec
from regspec.result import Result, json_safe

ENTROPY_OT = """
problem entropic_ot {
  data u = ones(6)
  data C = rand(6, 6, seed = 0)
  var P[6, 6] in transport(u / 6, u / 6)
  minimize sum(C * P) - 0.01 * entropy(P)
}
"""


def strict_json(text: str):
    """json.loads that refuses the non-standard Infinity / -Infinity / NaN tokens."""
    def refuse(token: str):
        raise ValueError(f"non-standard JSON number {token}")

    return json.loads(text, parse_constant=refuse)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`regspec ARGS` in this process (exit code, stdout, stderr): no interpreter start per call."""
    from regspec.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def entropy_reference() -> float:
    """Entropic OT written by hand in CVXPY, solved by Clarabel (the issue's 0.1767123307)."""
    C = np.random.default_rng(0).uniform(0.0, 1.0, (6, 6))
    P = cp.Variable((6, 6), nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(C, P)) - 0.01 * cp.sum(cp.entr(P))),
                         [cp.sum(P, axis=1) == 1 / 6, cp.sum(P, axis=0) == 1 / 6])
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal"
    return float(problem.value)


# ------------------------------------------------------------------ issue 9 item 1: entropy on cvxpy
def test_entropy_transport_automatic_solver_gives_the_clarabel_value(entropy_reference):
    result = regspec.solve(ENTROPY_OT, backend="cvxpy")
    assert result.status == "optimal", result.info
    assert math.isfinite(result.objective)
    assert abs(result.objective - entropy_reference) <= 1e-7 * abs(entropy_reference)
    assert abs(entropy_reference - 0.1767123307) <= 1e-8 * 0.18  # Clarabel's relative gap 1e-8
    P = result.variables["P"]
    assert np.all(np.isfinite(P)) and np.abs(P.sum(axis=1) - 1 / 6).max() <= 1e-7


def test_entropy_transport_with_scs_chosen_is_never_optimal_with_inf(entropy_reference):
    """A chosen first-order solver's answer is kept, but only as what it is: a finite objective,
    and `optimal_inaccurate` with the reason whenever its point leaves entr's domain."""
    result = regspec.solve(ENTROPY_OT, backend="cvxpy", solver="SCS")
    assert result.status in ("optimal", "optimal_inaccurate")
    assert math.isfinite(result.objective)
    # SCS at its default eps 1e-4: objectives within ~1e-4 relative
    assert abs(result.objective - entropy_reference) <= 1e-3 * abs(entropy_reference)
    if result.status == "optimal_inaccurate":
        assert "entr" in result.info["inaccurate"] and "CLARABEL" in result.info["inaccurate"]


def test_check_point_finds_a_term_outside_its_domain():
    """The mechanism itself, on a point pushed 1e-10 outside entr's domain (as SCS returns)."""
    from regspec.backends.cvxpy import solve as cvx_solve
    from regspec.backends.cvxpy.lower import lower

    program = lower(regspec.load(ENTROPY_OT).compiled().ir)
    program.problem.solve(solver="CLARABEL")
    assert cvx_solve.check_point(program, "CLARABEL", {})[0] == []
    P = program.variables["P"]
    value = P.value.copy()
    i, j = np.unravel_index(np.argmin(value), value.shape)
    value[i, j] = -1e-10
    P.value = value
    program.problem._value = program.problem.objective.value  # what CVXPY's unpack computes
    problems, _ = cvx_solve.check_point(program, "SCS", {})
    assert len(problems) == 1 and "`entr` is -inf at 1 of 36 entries" in problems[0]
    assert "-1e-10" in problems[0]


def test_check_point_finds_a_violated_constraint():
    from regspec.backends.cvxpy import solve as cvx_solve
    from regspec.backends.cvxpy.lower import lower

    program = lower(regspec.load(ENTROPY_OT).compiled().ir)
    program.problem.solve(solver="CLARABEL")
    P = program.variables["P"]
    P.value = P.value + 0.01  # rows now sum to 1/6 + 0.06
    program.problem._value = program.problem.objective.value
    problems, worst = cvx_solve.check_point(program, "CLARABEL", {})
    assert worst >= 0.05 and any("violated" in p for p in problems)


def test_cli_json_of_the_entropy_problem_is_strict_json(tmp_path, entropy_reference, capsys):
    spec = tmp_path / "ot.reg"
    spec.write_text(ENTROPY_OT)
    for extra in ([], ["--solver", "SCS"]):
        code, out, err = run_cli(capsys, "solve", str(spec), "--json", *extra)
        data = strict_json(out)
        assert isinstance(data["objective"], float), data["objective"]
        assert abs(data["objective"] - entropy_reference) <= 1e-3 * entropy_reference
        assert code == (0 if data["status"] == "optimal" else 3)
        assert "Traceback" not in err


# ------------------------------------------------------------------ the Result guard and JSON writer
def test_a_non_finite_value_is_never_a_result():
    r = Result("optimal", math.inf, {"x": np.ones(3)}, "cvxpy", "SCS")
    assert r.status == "solver_error" and r.objective is None and not r.ok
    assert "objective is inf" in r.info["message"]
    r = Result("optimal_inaccurate", 1.0, {"x": np.array([1.0, np.nan])}, "torch", "PDHG")
    assert r.status == "solver_error" and r.variables == {} and "`x` has 1 non-finite entry" in r.info["message"]
    r = Result("infeasible", None, {}, "cvxpy", "CLARABEL")
    assert r.status == "infeasible"


def test_to_json_has_numbers_or_null_everywhere():
    r = Result("optimal", 1.5, {"x": np.array([1.0, 2.0])}, "torch", "PDHG", iterations=np.int64(7),
               times={"solve": math.inf, "parse": 0.25}, residuals={"primal": math.nan, "dual": np.float32(1e-9)},
               info={"norms": [np.float64(2.0), math.inf], "tau": np.float32(0.5), "nested": {"gap": -math.inf}})
    text = json.dumps(r.to_json(), allow_nan=False)
    data = strict_json(text)
    assert data["objective"] == 1.5 and data["iterations"] == 7 and data["local"] is False
    assert data["times"] == {"solve": None, "parse": 0.25}
    assert data["residuals"]["primal"] is None and abs(data["residuals"]["dual"] - 1e-9) < 1e-15
    assert data["info"]["norms"] == [2.0, None] and data["info"]["nested"]["gap"] is None
    assert json_safe({"a": (np.bool_(True), "s", None)}) == {"a": [True, "s", None]}


# ------------------------------------------------------------------ issue 11: folded NumPy scalars on torch
NUMPY_SCALARS = """
problem np_scalars {
  data X = randn(30, 4, seed = 3)
  data y = randn(30, seed = 4)
  let b = [0.2, 3.0]
  var w[4]
  minimize sum_squares(X @ w - y) / sqrt(rows(X)) / log(2) + b[0] * norm1(w)
}
"""


def test_folded_numpy_scalars_lower_and_match_cvxpy():
    result = regspec.solve(NUMPY_SCALARS, backend="torch")
    assert result.status == "optimal", result.info
    X, y = np.random.default_rng(3).standard_normal((30, 4)), np.random.default_rng(4).standard_normal(30)
    w = cp.Variable(4)
    ref = cp.Problem(cp.Minimize(cp.sum_squares(X @ w - y) / np.sqrt(30) / np.log(2) + 0.2 * cp.norm1(w)))
    ref.solve(solver="CLARABEL")
    assert abs(result.objective - ref.value) <= 1e-6 * abs(ref.value)
    assert np.abs(result.variables["w"] - w.value).max() <= 1e-5


@pytest.mark.parametrize("value", [np.float16(0.5), np.float32(0.5), np.float64(0.5), np.int8(3), np.int64(3),
                                   np.uint16(3), np.bool_(True), (np.float64(1.0), [np.int32(2)])])
def test_every_numpy_scalar_becomes_a_printable_literal(value):
    import torch
    import torch.fx as fx

    from regspec.backends.torch.lower import fx_literal

    lit = fx_literal(value)
    flat = list(lit[:1]) + list(lit[1]) if isinstance(lit, tuple) else [lit]
    assert all(type(v) in (bool, int, float) for v in flat)
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.mul, (x, flat[0])))
    gm = fx.GraphModule(torch.nn.Module(), g)
    assert "np." not in gm.code
    assert float(gm(torch.ones(1))) == float(flat[0])


def test_errors_inside_generated_graphs_print_no_traceback(capfd, monkeypatch):
    import torch
    import torch.fx as fx

    from regspec.backends.torch.lower import quiet_errors

    monkeypatch.delenv("REGSPEC_DEBUG", raising=False)
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.mm, (x, x)))
    gm = quiet_errors(fx.GraphModule(torch.nn.Module(), g))
    with pytest.raises(RuntimeError):
        gm(torch.ones(2, 3))
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------ issue 11 item 3: local answers on torch
CONCAVE = """
problem concave_box {
  data c = randn(5, seed = 1)
  var x[5] in box(-1, 1)
  minimize -sum_squares(x - c) + sum(x)
}
"""

SPARSE = """
problem sparse_ls {
  data A = randn(20, 10, seed = 1)
  data y = randn(20, seed = 2)
  var x[10] in top_k(3)
  minimize sum_squares(A @ x - y)
}
"""


@pytest.mark.parametrize("text", [CONCAVE, SPARSE])
def test_nonconvex_torch_answers_are_stationary_and_local(text, tmp_path, capsys):
    result = regspec.solve(text, backend="auto")
    assert result.backend == "torch"
    assert result.status == "stationary" and result.local and result.ok
    assert "not proved convex" in result.info["local"]
    spec = tmp_path / "p.reg"
    spec.write_text(text)
    code, out, _ = run_cli(capsys, "solve", str(spec), "--json")
    data = strict_json(out)
    assert code == 0 and data["status"] == "stationary" and data["local"] is True
    code, out, _ = run_cli(capsys, "solve", str(spec))
    assert ": stationary (torch" in out and "\n  local: a stationary point" in out


def test_a_stationary_point_of_the_concave_problem_is_a_vertex_kkt_point():
    """Minimizing a concave function over a box: a stationary point of projected gradient is a
    vertex where every coordinate's gradient pushes outwards (checked in closed form)."""
    result = regspec.solve(CONCAVE, backend="torch")
    x = result.variables["x"]
    c = np.random.default_rng(1).standard_normal(5)
    grad = -2 * (x - c) + 1
    assert np.allclose(np.abs(x), 1.0)
    assert np.all(grad * np.sign(x) <= 0)  # moving inwards does not decrease the objective
    assert abs(result.objective - (-np.sum((x - c) ** 2) + x.sum())) <= 1e-9 * max(1.0, abs(result.objective))


def test_convex_torch_answers_stay_optimal_and_not_local():
    result = regspec.solve(NUMPY_SCALARS, backend="torch")
    assert result.status == "optimal" and result.local is False and "local" not in result.info


# ------------------------------------------------------------------ issue 9 item 12: hints never circle
NO_BACKEND = """
problem neither {
  data c = randn(3, seed = 0)
  var x[3]
  minimize -norm1(x - c)
}
"""

SUBLEVEL = """
problem sublevel {
  data A = randn(8, 4, seed = 0)
  data y = randn(8, seed = 1)
  var x[4]
  minimize sum_squares(A @ x - y)
  subject to norm1(x) + norm2(x) <= 1
}
"""


def _refusal(text: str, backend: str) -> str | None:
    """The notes of ``backend``'s refusal, or None when it solves the problem."""
    try:
        regspec.solve(text, backend=backend, max_iter=2000) if backend == "torch" else \
            regspec.solve(text, backend=backend)
    except regspec.RegspecError as e:
        return str(e)
    return None


@pytest.mark.parametrize("text", [NO_BACKEND, CONCAVE, SUBLEVEL])
def test_a_hint_names_only_a_backend_that_accepts(text):
    """Following a refusal's hint never leads to another refusal, and `no backend accepts` is said
    only when every backend refuses."""
    from regspec.hints import accepting

    refusals = {b: _refusal(text, b) for b in ("cvxpy", "torch")}
    ir = regspec.load(text).compiled().ir
    assert [b for b in ("cvxpy", "torch") if refusals[b] is None] == accepting(ir)
    for backend, message in refusals.items():
        if message is None:
            continue
        other = "torch" if backend == "cvxpy" else "cvxpy"
        if refusals[other] is None:
            assert f"--backend {other}" in message
        else:
            assert "--backend" not in message and "no backend accepts this problem" in message
            assert "cvxpy: not convex (DCP)" in message and "torch: " in message


def test_no_backend_hint_on_auto_is_located_and_exits_1(tmp_path, capsys):
    spec = tmp_path / "neither.reg"
    spec.write_text(NO_BACKEND)
    code, out, err = run_cli(capsys, "solve", str(spec))
    assert code == 1 and out == ""
    assert f"{spec}:5:" in err and "no backend accepts this problem" in err and "Traceback" not in err


def test_a_variable_used_nowhere_is_reported_as_zeros_with_a_note():
    """CVXPY leaves such a variable without a value; the result stays a result (every value is
    optimal for it) and says so, as the torch backend's start point does."""
    result = regspec.solve("problem p {\n  data c = randn(3, seed = 0)\n  var x[3]\n  var z[2]\n"
                           "  minimize sum_squares(x - c)\n}\n", backend="cvxpy")
    assert result.status == "optimal" and np.array_equal(result.variables["z"], np.zeros(2))
    assert "`z` appears in neither" in result.info["unused"]
    assert np.abs(result.variables["x"] - np.random.default_rng(0).standard_normal(3)).max() <= 1e-6


def test_internal_errors_exit_70_without_traceback_unless_debug(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "p.reg"
    spec.write_text(NUMPY_SCALARS)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(regspec, "solve", broken)
    monkeypatch.delenv("REGSPEC_DEBUG", raising=False)
    code, out, err = run_cli(capsys, "solve", str(spec))
    assert code == 70 and "internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err
    monkeypatch.setenv("REGSPEC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        run_cli(capsys, "solve", str(spec))


def test_folded_numpy_scalars_in_pdhg_operators_and_constraints_match_cvxpy():
    """The same constants inside an operator term and an equality (PDHG's affine graphs)."""
    text = NUMPY_SCALARS.replace("minimize sum_squares(X @ w - y) / sqrt(rows(X)) / log(2) + b[0] * norm1(w)",
                                 "minimize b[0] * norm1(X @ w - y) / log(2) + sum_squares(w) / sqrt(rows(X))\n"
                                 "  subject to sum(w) == b[1] / log(2)")
    result = regspec.solve(text, backend="torch")
    assert result.solver == "PDHG" and result.status == "optimal", result.info
    X, y = np.random.default_rng(3).standard_normal((30, 4)), np.random.default_rng(4).standard_normal(30)
    w = cp.Variable(4)
    ref = cp.Problem(cp.Minimize(0.2 * cp.norm1(X @ w - y) / np.log(2) + cp.sum_squares(w) / np.sqrt(30)),
                     [cp.sum(w) == 3.0 / np.log(2)])
    ref.solve(solver="CLARABEL")
    # PDHG stops at relative primal/dual residuals 1e-8: objectives within ~1e-7 relative
    assert abs(result.objective - ref.value) <= 1e-6 * abs(ref.value)


@pytest.mark.parametrize("objective", ["0.5 * log_det(S + I) - sum_squares(x)", "sum(log(x + 2))"])
def test_torch_optimal_on_an_improving_ray_is_reported_probably_unbounded(objective):
    """log det and log grow like a logarithm, so FISTA's prox-gradient residual (the prox of -log det
    moves an eigenvalue lam by about t / lam) vanishes along the ray: FISTA stopped `optimal` at
    entries near 1e7 with a finite objective. The objective still improves at 2x and 4x, so the
    report is `unbounded_inaccurate` without numbers (CVXPY's answer is checked the same way)."""
    text = f"problem p {{\n  data I = eye(3)\n  var S[3, 3]\n  var x[2]\n  maximize {objective}\n}}\n"
    spec = regspec.load(text)
    result = regspec.solve(spec, backend="torch")
    assert result.status == "unbounded_inaccurate" and result.objective is None and result.variables == {}
    assert "ray" in result.info["message"]
    assert regspec.solve(spec, backend="cvxpy").status in ("unbounded", "unbounded_inaccurate")


def test_torch_large_bounded_optimum_stays_optimal():
    """min ||x - 1e7||^2 + |x|: optimal at 1e7 - 1/2 (closed form); the ray check runs and finds
    nothing to improve."""
    text = "problem p {\n  var x[3]\n  minimize sum_squares(x - 10000000) + norm1(x)\n}\n"
    result = regspec.solve(regspec.load(text), backend="torch")
    assert result.status == "optimal"
    np.testing.assert_allclose(result.variables["x"], 1e7 - 0.5, rtol=1e-9)
