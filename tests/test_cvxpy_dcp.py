"""Nonconvex specs sent to CVXPY: every DCP failure is a located error (line:col of the innermost
offending term) whose message says why, in the words of the DCP rules."""
from __future__ import annotations

import subprocess
import sys

import pytest

import regspec
from regspec.diagnostics import RegspecError

PREFIX = "not convex (DCP), so CVXPY cannot take it: "


def dcp_errors(text: str) -> list[tuple[int, int, str]]:
    spec = regspec.load(text)
    with pytest.raises(RegspecError) as info:
        regspec.solve(spec, backend="cvxpy")
    out = []
    for d in info.value.diagnostics:
        assert d.message.startswith(PREFIX), d.message
        out.append((d.span.line, d.span.column, d.message[len(PREFIX):]))
    return out


def test_convex_of_concave_without_monotonicity():
    errs = dcp_errors("""problem p {
  var x[5]
  minimize norm1(log(x))
}
""")
    assert errs == [(3, 12, "norm1 is convex, but its argument `log(x)` is concave and norm1 is not monotone")]


def test_convex_of_concave_with_the_wrong_monotonicity():
    # sqrt(x) >= 0, where norm1 is increasing: DCP needs it decreasing for a concave argument
    errs = dcp_errors("""problem p {
  var x[5] >= 0
  minimize sum_squares(x) + norm1(sqrt(x))
}
""")
    assert errs == [(3, 29, "norm1 is convex, but its argument `sqrt(x)` is concave and norm1 is increasing "
                            "(it would need to be decreasing)")]


def test_concave_of_convex_inside_a_sum():
    errs = dcp_errors("""problem p {
  var z[4]
  minimize sum_squares(z) - log(sum(exp(z)))
}
""")
    assert errs == [(3, 29, "log is concave, but its argument `sum(exp(z))` is convex and log is increasing "
                            "(it would need to be decreasing)")]


def test_maximize_a_convex_objective():
    errs = dcp_errors("""problem p {
  data A = randn(4, 5, seed = 0)
  var x[5]
  maximize norm2(A @ x)
  subject to norm_inf(x) <= 1
}
""")
    assert errs == [(4, 12, "maximize needs a concave objective, but `norm2(A @ x)` is convex")]


def test_product_of_variables_and_inequalities():
    errs = dcp_errors("""problem p {
  var x[3]
  var y[3]
  minimize sum_squares(x)
  subject to {
    sum(x * y) <= 1
    norm_inf(x) >= 1
    sum_squares(y) == 2
  }
}
""")
    assert errs == [
        (6, 9, "the product `x * y` of two non-constant expressions is not DCP (one factor must be a constant "
               "or a parameter)"),
        (7, 5, "the larger side `norm_inf(x)` of `>=` is convex; DCP inequalities read convex <= concave"),
        (8, 5, "both sides of `==` must be affine, but `sum_squares(y)` is convex"),
    ]


def test_nonconvex_sets_are_refused_at_the_set():
    errs = dcp_errors("""problem p {
  var w[10] in top_k(3)
  var z[4]
  minimize sum_squares(w - 1) + sum_squares(z - 1)
  subject to z in sphere(2)
}
""")
    assert errs == [(2, 16, "`w` is declared in top_k(3), which is not a convex set"),
                    (5, 19, "sphere(2) is not a convex set")]


def test_odd_power_of_a_signed_base():
    errs = dcp_errors("""problem p {
  var x[3]
  minimize sum(x ** 3)
}
""")
    assert errs == [(3, 16, "`x ** 3` is convex only for a nonnegative base; use abs(...) or declare the "
                            "variable >= 0")]


def test_indefinite_quad_form():
    errs = dcp_errors("""problem p {
  var x[2]
  minimize quad_form(x, [[1, 0], [0, -1]])
}
""")
    assert errs == [(3, 12, "quad_form needs a positive (or negative) semidefinite P; this P is indefinite")]


def test_the_rendering_shows_file_line_and_caret(tmp_path):
    path = tmp_path / "bad.reg"
    path.write_text("problem p {\n  var x[5]\n  minimize norm1(log(x))\n}\n")
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(path), "--backend", "cvxpy"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines[0] == (f"{path}:3:12: error: {PREFIX}norm1 is convex, but its argument `log(x)` is concave "
                        "and norm1 is not monotone")
    assert lines[1] == "   3 |   minimize norm1(log(x))"
    assert lines[2] == "                  ^^^^^^^^^^^^^"
    assert "Traceback" not in out.stderr


def test_check_reports_curvature_per_term(tmp_path):
    path = tmp_path / "mixed.reg"
    path.write_text("problem p {\n  var x[5] >= 0\n  minimize sum_squares(x) + norm1(sqrt(x)) - entropy(x)\n}\n")
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "check", str(path)], capture_output=True, text=True)
    # neither backend takes it (`backends: none`): the summary is printed, then a located error
    assert out.returncode == 1 and f"{path}:3:29: error: no backend can solve problem `p`" in out.stderr
    terms = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()
             if line.startswith("    ") and "(" in line and not line.strip().startswith(("cvxpy", "torch"))}
    assert terms == {"sum_squares(x)": "convex", "norm1(sqrt(x))": "unknown", "entropy(x)": "concave"}
    assert "cvxpy: norm1 is convex, but its argument `sqrt(x)` is concave" in out.stdout
