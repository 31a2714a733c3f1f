"""Semantic errors: unknown atoms and names (with suggestions), shape mismatches, nonconvex
objectives sent to CVXPY. Each must name the right line:col and say why."""
import pytest

import regspec
from regspec.diagnostics import RegspecError

HEAD = "problem p {\n  data A = randn(3, 4, seed = 0)\n  var x[4]\n"


def first_error(text: str, **solve_kw):
    with pytest.raises(RegspecError) as exc:
        regspec.solve(regspec.load(text), **solve_kw)
    return exc.value.first


def test_unknown_atom_suggests_closest():
    d = first_error(HEAD + "  minimize norm3(x)\n}\n")
    assert (d.span.line, d.span.column) == (4, 12)
    assert d.message == "unknown atom `norm3`"
    assert any("`norm1`" in n for n in d.notes)


def test_misspelled_variable_suggests_declared_name():
    d = first_error(HEAD + "  var weights[4]\n  minimize norm1(wieghts)\n}\n")
    assert (d.span.line, d.span.column) == (5, 18)
    assert d.message == "unknown name `wieghts`"
    assert d.notes == ["did you mean `weights`?"]


def test_matmul_shape_mismatch_is_located_on_the_product():
    d = first_error("problem p {\n  data A = randn(3, 4, seed = 0)\n  var x[5]\n  minimize sum_squares(A @ x)\n}\n")
    assert (d.span.line, d.span.column) == (4, 24)
    assert "inner dimensions 4 and 5 differ" in d.message
    assert "`A @ x`" in d.message


def test_nonconvex_objective_sent_to_cvxpy_points_at_the_term():
    text = HEAD + "  minimize sum_squares(A @ x) + sqrt(norm1(x))\n}\n"
    d = first_error(text, backend="cvxpy")
    assert (d.span.line, d.span.column) == (4, 33)
    assert "sqrt is concave, but its argument `norm1(x)` is convex" in d.message
    assert "sqrt is increasing" in d.message


def test_product_of_variables_is_not_dcp():
    d = first_error(HEAD + "  var y[4]\n  minimize sum(x * y)\n}\n", backend="cvxpy")
    assert (d.span.line, d.span.column) == (5, 16)
    assert "two non-constant expressions" in d.message


def test_maximize_convex_is_refused_with_reason():
    d = first_error(HEAD + "  maximize norm2(x)\n}\n", backend="cvxpy")
    assert "maximize needs a concave objective" in d.message


def test_unknown_set_and_keyword():
    d = first_error(HEAD + "  var z[4] in simplx\n  minimize norm1(z)\n}\n")
    assert d.message == "unknown set `simplx`" and d.notes[0] == "did you mean `simplex`?"
    d = first_error(HEAD + "  minimize sum(x, axsi = 0)\n}\n")
    assert d.message == "sum has no keyword `axsi`" and d.notes[0] == "did you mean `axis`?"


def test_param_values_are_validated():
    spec = regspec.load("problem p {\n  param lam = 1 >= 0\n  var x[2]\n  minimize lam * norm1(x)\n}\n")
    with pytest.raises(RegspecError, match="outside its declared domain"):
        regspec.solve(spec, params={"lam": -1})
    with pytest.raises(RegspecError, match="did you mean `lam`"):
        regspec.solve(spec, params={"lamb": 1})


def test_rendering_has_caret_under_span():
    d = first_error(HEAD + "  minimize norm3(x)\n}\n")
    lines = d.render().splitlines()
    assert lines[0] == "<string>:4:12: error: unknown atom `norm3`"
    assert lines[1].endswith("minimize norm3(x)")
    caret = lines[2]
    assert caret.index("^") == lines[1].index("norm3") and caret.count("^") == len("norm3")
