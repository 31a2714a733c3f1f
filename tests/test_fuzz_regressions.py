"""What the command and problem fuzzers (tests/fuzz_commands.py, tests/fuzz_problems.py) found,
one test each, run through the CLI's main in-process or the API, against closed forms and
CVXPY written by hand."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from regspec.cli import main
from test_front_errors import located  # (line, column, message) of a located error


def run(tmp_path, capsys, argv: list[str], text: str | bytes, name: str = "spec.reg") -> tuple[int, str, str, str]:
    """``regspec COMMAND SPEC OPTIONS...`` in-process on ``text`` written to a file: (rc, stdout, stderr, path)."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    rc = main([*argv[:1], str(path), *argv[1:]])
    out, err = capsys.readouterr()
    return rc, out, err, str(path)


def problem_with(param_value: str, domain: str = " >= 0") -> str:
    return (f"problem p {{\n  param lam = {param_value}{domain}\n  var x[2]\n"
            "  minimize sum_squares(x) + lam * norm1(x)\n}\n")


def train_with(lr: str, optimizer: str = "sgd") -> str:
    return (f'train t {{\n  model linear(in = 10, out = 1)\n  data dataset("diabetes")\n  loss mse\n'
            f"  optimizer {optimizer}(lr = {lr})\n}}\n")


# ---------------------------------------------------------------- 64-bit integer arithmetic
# `2 ** 1024` folded as a Python integer: "holds Python objects" in a problem, OverflowError
# (internal error) in a train block; `2 ** 9223372036854775807` never finished.
@pytest.mark.parametrize("expr", ["2 ** 1024", "2 ** 9223372036854775807", "2 ** 62 * 2", "9223372036854775807 + 1",
                                  "[2, 3] * 9223372036854775807", "sum([9223372036854775807, 1])"])
def test_integer_overflow_in_a_problem_is_located(tmp_path, capsys, expr):
    rc, _, err, path = run(tmp_path, capsys, ["check"], problem_with(expr))
    assert rc == 1
    line, col, message = located(err, path)
    assert (line, col) == (2, 15) and "integer arithmetic overflows" in message


@pytest.mark.parametrize("expr, value", [("9223372036854775806 + 1", 2 ** 63 - 1), ("2 ** 62 * 2.0", 2.0 ** 63),
                                         ("2 ** -1", 0.5), ("-(2 ** 62) * 2", -2 ** 63)])
def test_integer_arithmetic_up_to_the_limit_is_exact(expr, value):
    import regspec

    spec = regspec.load(problem_with(expr, domain=""))
    ir = spec.compiled().ir
    (node,) = ir.nodes_of("param")
    assert float(ir[node]["value"]) == float(value)


@pytest.mark.parametrize("expr, fragment", [("2 ** 1024", "integer arithmetic overflows"),
                                            ("2 ** 9223372036854775807", "integer arithmetic overflows"),
                                            ("9223372036854775807 + 1", "integer arithmetic overflows"),
                                            ("2.0 ** 100000", "overflows a 64-bit float"),
                                            ("(-8) ** 0.5", "is not a real number")])
def test_integer_overflow_in_a_train_block_is_located(tmp_path, capsys, expr, fragment):
    rc, _, err, path = run(tmp_path, capsys, ["check"], train_with(expr))
    assert rc == 1
    line, col, message = located(err, path)
    assert (line, col) == (5, 22) and fragment in message


# ---------------------------------------------------------------- reading and showing the file
def test_fmt_reports_bytes_that_are_not_utf8_at_their_line(tmp_path, capsys):
    text = b"problem p {\n  var x[2]\n  minimize sum_squares(x) \xed\xa0\x80\n}\n"
    rc, _, err, path = run(tmp_path, capsys, ["fmt"], text)
    assert rc == 1
    assert located(err, path)[:2] == (3, 27)


def test_fmt_check_reads_the_file_as_the_parser_does(tmp_path, capsys):
    """A lone carriage return is no line end for the parser; fmt refuses it at the same column."""
    text = b"problem p {\r  var x[2]\r  minimize sum_squares(x)\r}\r"
    for command in (["check"], ["fmt", "--check"]):
        rc, _, err, path = run(tmp_path, capsys, command, text)
        assert rc == 1
        line, col, message = located(err, path)
        assert (line, col) == (1, 12) and "U+000D" in message
        shown = err.splitlines()[1]
        assert "\r" not in shown and "\ufffd" in shown  # the caret line stays one line on the terminal


def test_caret_stays_under_the_error_in_a_line_with_tabs(tmp_path, capsys):
    rc, _, err, path = run(tmp_path, capsys, ["check"], "problem p {\n\tvar x[2]\n\tminimize sum_squares(y)\n}\n")
    assert rc == 1
    line, col, _ = located(err, path)
    source_line, caret = err.splitlines()[1:3]
    gutter = source_line.index("|") + 2
    assert source_line[gutter + col - 1] == "y" and caret.index("^") == gutter + col - 1


def test_a_huge_seed_is_shown_as_written(tmp_path, capsys):
    rc, _, err, path = run(tmp_path, capsys, ["check"],
                           "problem p {\n  data A = randn(4, 2, seed = 1e308)\n  var x[2]\n"
                           "  minimize sum_squares(A @ x)\n}\n")
    assert rc == 1 and "got 1e+308" in located(err, path)[2] and len(err.splitlines()[0]) < 200


# ---------------------------------------------------------------- passes and backends
def test_quad_form_of_a_huge_but_finite_matrix_is_classified():
    """P = F F^T / 10 + 1e308 I: P + P^T overflowed (a RuntimeWarning, then LAPACK's LinAlgError,
    an internal error). Its definiteness is that of P / max|P_ij|."""
    from regspec.compiler.catalogue import ATOMS

    F = np.random.default_rng(17).standard_normal((10, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ATOMS["quad_form"].definiteness(F @ F.T / 10 + 1e308 * np.eye(10)) == "psd"
        assert ATOMS["quad_form"].definiteness(-1e308 * np.eye(3)) == "nsd"
        assert ATOMS["quad_form"].definiteness(np.diag([1e308, -1e308])) == "indefinite"
        assert ATOMS["quad_form"].definiteness(np.zeros((2, 2))) == "psd"


def test_pdhg_starting_at_the_solution_with_every_scale_zero(tmp_path):
    """min 0.5 ||x||_1 s.t. -1 <= x <= 1 from x = 0: every stationarity scale is 0 (ZeroDivisionError
    in the certificate). Closed form: x = 0, objective 0."""
    import regspec

    res = regspec.solve(regspec.load("problem p {\n  var x[3]\n  minimize 0.5 * norm1(x)\n"
                                     "  subject to x in box(-1, 1)\n}\n"), backend="torch")
    assert res.status == "optimal" and abs(res.objective) <= 1e-12
    assert np.allclose(res.variables["x"], 0.0, atol=1e-12)


BROADCASTS = [("X - y", lambda cp, X, y, w, c: X - np.ones((2, 1)) @ cp.reshape(y, (1, 3), order="C")),
              ("X * w", lambda cp, X, y, w, c: cp.multiply(X, np.tile(w, (2, 1)))),
              ("X - c", lambda cp, X, y, w, c: X - np.tile(c, (1, 3))),
              ("y - X", lambda cp, X, y, w, c: np.ones((2, 1)) @ cp.reshape(y, (1, 3), order="C") - X),
              ("X / (w * w + 1)", lambda cp, X, y, w, c: cp.multiply(X, 1 / np.tile(w * w + 1, (2, 1))))]


@pytest.mark.parametrize("expr, by_hand", BROADCASTS, ids=[b[0] for b in BROADCASTS])
def test_cvxpy_broadcasting_of_rows_and_columns(tmp_path, expr, by_hand):
    """X (2, 3) against a (3,) or (2, 1) operand: CVXPY's own broadcast_to has no C++
    canonicalization (a UserWarning on the terminal, the SciPy path). Objective vs CVXPY with the
    rows and columns expanded by hand."""
    cp = pytest.importorskip("cvxpy")
    import regspec

    w, c = np.random.default_rng(0).standard_normal(3), np.random.default_rng(1).standard_normal((2, 1))
    np.savez(tmp_path / "bc.npz", w=w, c=c)
    (tmp_path / "bc.reg").write_text(
        'problem p {\n  data w = load("bc.npz", "w")\n  data c = load("bc.npz", "c")\n  var X[2, 3]\n  var y[3]\n'
        f"  minimize sum_squares({expr} - 1) + sum_squares(X - 2) + sum_squares(y + w)\n}}\n")
    X, y = cp.Variable((2, 3)), cp.Variable(3)
    ref = cp.Problem(cp.Minimize(cp.sum_squares(by_hand(cp, X, y, w, c) - 1) + cp.sum_squares(X - 2)
                                 + cp.sum_squares(y + w))).solve(solver=cp.CLARABEL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = regspec.solve(regspec.load(str(tmp_path / "bc.reg")), backend="cvxpy")
    assert res.status == "optimal"
    assert abs(res.objective - ref) <= 1e-6 * max(1.0, abs(ref))


def test_a_misspelt_optimizer_keyword_is_located_before_training(tmp_path, capsys):
    """`sgd(lr = 0.05, momentun = 0.9)` passed check, plan and compile; `train` stopped in the
    generated trainer with an unlocated error."""
    pytest.importorskip("torch")
    text = train_with("0.05, momentun = 0.9")
    for command in (["plan"], ["compile", "-o", str(tmp_path / "trainer.py")]):
        rc, _, err, path = run(tmp_path, capsys, command, text)
        assert rc == 1
        line, col, message = located(err, path)
        assert line == 5 and "has no argument `momentun`" in message and "did you mean `momentum`" in err


def test_infeasible_beside_an_unbounded_term_is_infeasible():
    """X[0, :] == 1 and X[0, 0] <= 0 beside -trace(S), S PSD (unbounded below): SCS's
    dual-infeasibility certificate said `unbounded`, which holds only over a nonempty feasible set.
    CVXPY with Clarabel, by hand: infeasible."""
    cp = pytest.importorskip("cvxpy")
    import regspec

    X, S = cp.Variable((3, 3)), cp.Variable((3, 3), PSD=True)
    ref = cp.Problem(cp.Minimize(-cp.trace(S) + cp.sum_squares(X - 1)), [X[0, :] == 1, X[0, 0] <= 0])
    ref.solve(solver=cp.CLARABEL)
    spec = regspec.load("problem p {\n  var X[3, 3]\n  var S[3, 3] in psd\n"
                        "  minimize -trace(S) + sum_squares(X - 1)\n  subject to {\n    X[0, :] == 1\n"
                        "    X[0, 0] <= 0\n  }\n}\n")
    for solver in ("SCS", "CLARABEL"):
        res = regspec.solve(spec, backend="cvxpy", solver=solver)
        assert res.status == ref.status == "infeasible" and res.objective is None, (solver, res.status, res.info)


def test_an_unbounded_problem_stays_unbounded():
    """min trace(C S) over PSD S with C indefinite and a feasible constraint: unbounded, confirmed by
    the feasibility solve (CVXPY with Clarabel, by hand: unbounded)."""
    cp = pytest.importorskip("cvxpy")
    import regspec

    S = cp.Variable((2, 2), PSD=True)
    ref = cp.Problem(cp.Minimize(cp.trace(np.diag([1.0, -1.0]) @ S)), [S[0, 0] <= 1])
    ref.solve(solver=cp.CLARABEL)
    spec = regspec.load("problem p {\n  let C = [[1, 0], [0, -1]]\n  var S[2, 2] in psd\n"
                        "  minimize trace(C @ S)\n  subject to S[0, 0] <= 1\n}\n")
    res = regspec.solve(spec, backend="cvxpy")
    assert res.status == ref.status == "unbounded" and res.objective is None


SHAPES = [(), (0,), (1,), (3,), (2, 1), (1, 3), (2, 3), (0, 3), (2, 0), (1, 0), (0, 1)]


def test_broadcasting_of_shapes_is_numpys():
    """(0,) against (30,) was (30,) (a 1 padded in front of the first shape met 0 and kept 1), so
    `A @ x - b` with A of 0 rows passed check and failed inside CVXPY (an internal error)."""
    from regspec.compiler.catalogue.atoms import ShapeError, broadcast

    for a in SHAPES:
        for b in SHAPES:
            try:
                expected = np.broadcast_shapes(a, b)
            except ValueError:
                with pytest.raises(ShapeError):
                    broadcast([a, b])
            else:
                assert broadcast([a, b]) == expected, (a, b)


def test_an_empty_data_array_against_a_full_one_is_located(tmp_path, capsys):
    text = ("problem p {\n  data A, b = randn([0, 6], [30], seed = 9)\n  var x[cols(A)]\n"
            "  minimize pnorm(A @ x - b, 1.5)\n}\n")
    rc, _, err, path = run(tmp_path, capsys, ["check"], text)
    assert rc == 1
    line, col, message = located(err, path)
    assert (line, col) == (4, 18) and "(0,) and (30,) do not broadcast" in message


@pytest.mark.parametrize("divisor, column, what", [("-0", 28, "is 0"), ("(1 - 1)", 29, "is 0"),
                                                    ("[1, 0, 2]", 28, "has 1 zero entry")])
def test_division_by_a_zero_constant_is_located(tmp_path, capsys, divisor, column, what):
    """`sum_smallest(R @ w, 5) / -0` reached CLARABEL as an infinite coefficient: a RuntimeWarning on
    the terminal and an `optimal_inaccurate` "outside its domain"."""
    text = f"problem p {{\n  var x[3]\n  minimize sum_squares(x / {divisor} - 1)\n}}\n"
    for command in (["check"], ["solve", "--backend", "cvxpy"]):
        rc, _, err, path = run(tmp_path, capsys, command, text)
        assert rc == 1
        line, col, message = located(err, path)
        assert (line, col) == (3, column) and f"division by zero: the divisor `{divisor.strip('()')}` {what}" in message


@pytest.mark.parametrize("expr, column", [("x / 1e-320", 24), ("x * 1e308 * 10", 24), ("1e200 * (1e200 * x)", 24),
                                          ("diff(x * 1e308, k = 3)", 24), ("[[1e308, 1], [1, 1]] @ (x * 10)", 24)])
def test_coefficients_that_overflow_are_located(tmp_path, capsys, expr, column):
    """`x * 1e308 * 10` reached CLARABEL as an infinite coefficient: "the solver CLARABEL rejected
    its options {}", no location."""
    text = f"problem p {{\n  var x[2]\n  minimize sum_squares({expr} - 1)\n}}\n"
    for command in (["check"], ["solve", "--backend", "cvxpy"], ["solve", "--backend", "torch"]):
        rc, _, err, path = run(tmp_path, capsys, command, text)
        assert rc == 1
        line, col, message = located(err, path)
        assert (line, col) == (3, column) and "overflow 64-bit floats" in message


@pytest.mark.parametrize("expr", ["x * 1e300", "x * 1e307 + 1e308 * x", "hstack([x * 1e308, x * 1e308])",
                                  "diff(x * 1e308)"])
def test_large_but_finite_coefficients_pass(expr):
    import regspec

    regspec.load(f"problem p {{\n  var x[2]\n  minimize sum_squares({expr} - 1)\n}}\n").compiled()


def test_maximize_on_the_torch_backend_is_not_called_unbounded():
    """maximize -(2 norm_inf(x - 0.5) + ||X - 2||^2) is bounded (the optimum is 0 at x = 0.5,
    X = 2); PDHG's ray test read the spec's objective, not the negation it minimizes, and called
    it `unbounded` (a decreasing 'recession slope' of -2/sqrt(3)). Whatever the torch backend
    says now, it is not unbounded, and an optimal answer is 0 (closed form)."""
    import regspec

    spec = regspec.load("problem p {\n  var x[3]\n  var X[2, 2]\n"
                        "  maximize -(2 * norm_inf(x - 0.5) + sum_squares(X - 2))\n}\n")
    res = regspec.solve(spec, backend="torch", max_iter=5000)  # the false ray was found at 3040
    assert res.status not in ("unbounded", "infeasible")
    if res.status == "optimal":
        assert abs(res.objective) <= 1e-4



def test_a_training_atom_in_a_problem_is_refused_located(tmp_path, capsys):
    """anchor_l2 (its anchor is a training run's initial weights) in a problem: check listed the
    torch backend, and solving there raised NotImplementedError inside the lowered graph; then
    check listed cvxpy (the term is DCP), which has no lowering for it either: no backend."""
    text = ("problem p {\n  data y = randn(5, seed = 0)\n  var x[5]\n"
            "  minimize 0.5 * anchor_l2(x - y) + tv(x)\n}\n")
    rc, out, err, path = run(tmp_path, capsys, ["check"], text)
    assert rc == 1 and "torch: refused: anchor_l2 has no torch evaluation" in out
    assert "cvxpy: anchor_l2 has no CVXPY lowering" in out and "backends: none" in out
    assert located(err, path)[:2] == (4, 18) and "cvxpy cannot lower it" in err
    for backend in ("torch", "cvxpy", "auto"):
        rc, _, err, path = run(tmp_path, capsys, ["solve", "--backend", backend], text)
        assert rc == 1
        assert located(err, path)[:2] == (4, 18) and "anchor_l2" in err


def test_conic_fallback_refuses_data_beyond_1e150(tmp_path, capsys):
    """X[:, 0] == [-1e308, 0] in a problem the conic fallback takes: the squared norms of PDHG's
    tests overflowed (RuntimeWarning, then ZeroDivisionError: an internal error)."""
    pytest.importorskip("torch")
    text = ("problem p {\n  var X[2, 4]\n  minimize sum(norm2(diff(X, axis = 1), axis = 0))\n  subject to {\n"
            "    X[:, 0] == [-1e308, 0]\n    X[:, 3] == [4, 4]\n  }\n}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rc, _, err, path = run(tmp_path, capsys, ["solve", "--backend", "torch"], text)
    assert rc == 1 and "beyond the 1e+150" in located(err, path)[2]


def test_conic_norms_do_not_overflow():
    pytest.importorskip("torch")
    from regspec.backends.torch.conic.pdhg import _norm

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _norm(np.array([1e308, 1e308])) == pytest.approx(1e308 * np.sqrt(2), rel=1e-15)
        assert _norm(np.zeros(3)) == 0.0 and _norm(np.array([3.0, 4.0])) == pytest.approx(5.0, rel=1e-15)


def test_ray_check_keeps_a_psd_variable_off_the_cone_by_rounding():
    """min -sum(log(x + 3)) + trace(C S), S PSD, trace(S) = 1: unbounded in x (Clarabel stops
    `optimal` at x ~ 1e13), and the ray check restoring S (an eigenvalue of -1e-12 from the solver)
    went through CVXPY's value setter: "Variable value must be positive semidefinite" (an internal
    error). The check reads and restores the values as the solver left them."""
    cp = pytest.importorskip("cvxpy")
    from regspec.backends.cvxpy.lower import CvxpyProgram
    from regspec.backends.cvxpy.solve import unbounded_ray

    x, S = cp.Variable(2), cp.Variable((2, 2), PSD=True)
    problem = cp.Problem(cp.Minimize(-cp.sum(cp.log(x + 3)) + cp.trace(S)), [cp.trace(S) == 1])
    x.save_value(np.array([1e13, 2e13]))
    S.save_value(np.array([[1.0, 0.0], [0.0, -1e-12]]))  # off the cone by rounding
    why = unbounded_ray(CvxpyProgram(problem, {"x": x, "S": S}, {}, None), "CLARABEL", (1e-8, 1e-8))
    assert why is not None and "probably unbounded" in why
    assert S.value[1, 1] == -1e-12 and x.value[1] == 2e13  # restored as they were


@pytest.mark.parametrize("constraints, expected", [("x >= 0\n    X[0, :] == 1", "unbounded"),
                                                   ("X[0, :] == 1\n    X[0, 0] <= 0", "infeasible")])
def test_torch_rays_start_from_a_feasible_point(constraints, expected):
    """min -sum(x) + ||X - 1||^2: unbounded in x when the constraints on X hold together, infeasible
    when X[0, 0] == 1 and X[0, 0] <= 0 (CVXPY by hand says so too). PDHG's ray test took the
    iterates' fixed distance to the contradictory constraints for a feasible ray and answered
    `unbounded`; an `unbounded` now needs a feasible start."""
    cp = pytest.importorskip("cvxpy")
    import regspec

    x, X = cp.Variable(3), cp.Variable((2, 2))
    cons = [x >= 0, X[0, :] == 1] if expected == "unbounded" else [X[0, :] == 1, X[0, 0] <= 0]
    ref = cp.Problem(cp.Minimize(-cp.sum(x) + cp.sum_squares(X - 1)), cons)
    ref.solve(solver=cp.CLARABEL)
    assert ref.status == expected
    spec = regspec.load("problem p {\n  var x[3]\n  var X[2, 2]\n  minimize -sum(x) + sum_squares(X - 1)\n"
                        f"  subject to {{\n    {constraints}\n  }}\n}}\n")
    res = regspec.solve(spec, backend="torch", max_iter=20000)
    assert res.status in (expected, "user_limit") and res.objective is None
    if expected == "infeasible":
        assert res.status != "unbounded"


@pytest.mark.parametrize("constraints, expected", [("X[0, :] == 1", "unbounded"),
                                                   ("X[0, :] == 1\n    X[0, 0] <= 0", "infeasible")])
def test_conic_fallback_unbounded_needs_a_feasible_point(constraints, expected):
    """maximize geo_mean(x + 1) + sum(X) (the conic fallback's problem): unbounded in X[1, :], and
    infeasible beside X[0, 0] == 1, X[0, 0] <= 0 (CVXPY by hand agrees); the conic PDHG's ray of
    decrease alone said `unbounded` for both."""
    cp = pytest.importorskip("cvxpy")
    import regspec

    x, X = cp.Variable(3), cp.Variable((2, 2))
    cons = [X[0, :] == 1] + ([X[0, 0] <= 0] if expected == "infeasible" else [])
    ref = cp.Problem(cp.Maximize(cp.geo_mean(x + 1) + cp.sum(X)), cons)
    ref.solve(solver=cp.CLARABEL)
    assert ref.status == expected
    spec = regspec.load("problem p {\n  var x[3]\n  var X[2, 2]\n  maximize geo_mean(x + 1) + sum(X)\n"
                        f"  subject to {{\n    {constraints}\n  }}\n}}\n")
    res = regspec.solve(spec, backend="torch")
    assert res.solver.startswith("conic") and res.status == expected and res.objective is None


def test_a_broadcast_marginal_is_not_the_entropic_ot_path():
    """P of 1 row with sum(P, axis = 1) == a (8 entries, broadcast) and sum(P, axis = 0) == a:
    Sinkhorn took it for transport marginals and failed broadcasting a to the plan's 1 row (an
    internal error). The problem is infeasible (total mass 1/8 against 1); CVXPY by hand agrees."""
    cp = pytest.importorskip("cvxpy")
    import regspec

    C = np.arange(64.0).reshape(8, 8) / 64
    P = cp.Variable((1, 8))
    ref = cp.Problem(cp.Minimize(cp.sum(cp.multiply(C, np.ones((8, 1)) @ P)) - 0.05 * cp.sum(cp.entr(P))),
                     [np.ones(8) * cp.sum(P) == np.ones(8) / 8, cp.sum(P, axis=0) == np.ones(8) / 8])
    ref.solve(solver=cp.CLARABEL)
    spec = regspec.load("problem p {\n  data c = arange(64)\n  let C = reshape(c, [8, 8]) / 64\n  data a = ones(8)\n"
                        "  var P[1, 8]\n"
                        "  minimize sum(C * P) - 0.05 * entropy(P)\n  subject to {\n    sum(P, axis = 1) == a / 8\n"
                        "    sum(P, axis = 0) == a / 8\n  }\n}\n")
    assert spec.compiled().ir.meta["split"].algorithm != "sinkhorn"
    for backend in ("torch", "cvxpy"):
        res = regspec.solve(spec, backend=backend)
        assert res.status == ref.status == "infeasible", (backend, res.status)


def test_quad_form_symmetrizes_a_huge_matrix_without_overflow():
    """P + P^T overflowed for P = F F^T / 10 + 1e308 I in the CVXPY and torch lowerings (a
    RuntimeWarning, an internal error under warnings-as-errors); the symmetric part is P/2 + P^T/2.
    x^T P x for x = (1, 0, ...) by hand: P[0, 0]."""
    pytest.importorskip("torch")
    import torch

    from regspec.compiler.catalogue import ATOMS

    F = np.random.default_rng(17).standard_normal((4, 2))
    P = F @ F.T / 10 + 1e307 * np.eye(4)
    x = torch.zeros(4, dtype=torch.float64)
    x[0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = float(ATOMS["quad_form"].torch([x], {"P": P}))
        ATOMS["quad_form"].cvxpy([pytest.importorskip("cvxpy").Variable(4)], {"P": 10 * P})
    assert value == pytest.approx(P[0, 0], rel=1e-15)


def test_a_matrix_atom_of_an_empty_matrix_is_located(tmp_path, capsys):
    """log_det(V.T @ diag(w) @ V) with V of shape (1, 0): a 0 x 0 matrix reached SCS ("1-dimensional
    array given", reported as its options being rejected, unlocated)."""
    text = ("problem p {\n  data V = randn(1, 0, seed = 4)\n  var w[rows(V)] in simplex\n"
            "  maximize log_det(V.T @ diag(w) @ V)\n}\n")
    for command in (["check"], ["solve", "--backend", "cvxpy"]):
        rc, _, err, path = run(tmp_path, capsys, command, text)
        assert rc == 1
        line, col, message = located(err, path)
        assert (line, col) == (4, 20) and "log_det of an empty matrix (shape (0, 0))" in message


@pytest.mark.parametrize("value", ['"abc"', "true"])
def test_a_non_number_optimizer_hyperparameter_is_located(tmp_path, capsys, value):
    """adam(lr = "abc") passed check and plan; train stopped with "'<=' not supported between
    instances of 'float' and 'str'", unlocated."""
    rc, _, err, path = run(tmp_path, capsys, ["check"], train_with(value))
    assert rc == 1
    line, col, message = located(err, path)
    assert (line, col) == (5, 22) and "the optimizer's `lr` must be a number" in message
