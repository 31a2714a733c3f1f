"""Data sources: files (npz, npy, csv), scikit-learn's bundled sets and seeded generators. A missing
file or key, or data whose shape contradicts a declaration, is a located error that names the file
and the declaration."""
from __future__ import annotations

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError


def compile_text(tmp_path, body: str):
    path = tmp_path / "spec.reg"
    path.write_text(body)
    spec = regspec.load(path)
    return spec.compiled().ir


def value(ir, name):
    return ir[ir.scope[name]]["value"]


def error_of(tmp_path, body: str) -> RegspecError:
    with pytest.raises(RegspecError) as info:
        compile_text(tmp_path, body)
    return info.value


# ------------------------------------------------------------------ files
def test_load_npz_npy_and_csv(tmp_path):
    np.savez(tmp_path / "d.npz", A=np.arange(6.0).reshape(2, 3), b=np.ones(2))
    np.save(tmp_path / "v.npy", np.array([1.0, 2.0, 3.0]))
    (tmp_path / "t.csv").write_text("x,y,z\n1,2,3\n4,5,6\n")
    ir = compile_text(tmp_path, """problem p {
  data A = load("d.npz", "A")
  data A2, b2 = load("d.npz")
  data v = load("v.npy")
  data T = csv("t.csv", skip_header = 1)
  data Tz = csv("t.csv", skip_header = 1, columns = [0, 2])
  var x[cols(A)]
  minimize sum_squares(A @ x - b2) + sum_squares(x - v) + sum(T) + sum(Tz)
}
""")
    np.testing.assert_array_equal(value(ir, "A"), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(value(ir, "A2"), value(ir, "A"))
    np.testing.assert_array_equal(value(ir, "v"), [1, 2, 3])
    np.testing.assert_array_equal(value(ir, "T"), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(value(ir, "Tz"), [[1, 3], [4, 6]])


def test_missing_file_names_the_file_and_the_declaration(tmp_path):
    err = error_of(tmp_path, 'problem p {\n  data X, y = load("nope.npz", "X")\n  var w[2]\n  minimize sum_squares(w)\n}\n')
    d = err.first
    assert (d.span.line, d.span.column) == (2, 15)
    assert d.message == f"data file not found: {tmp_path / 'nope.npz'}"
    assert "in the declaration `data X, y = ...`" in d.notes


def test_missing_key_suggests_the_keys(tmp_path):
    np.savez(tmp_path / "d.npz", labels=np.arange(3), C=np.eye(3))
    err = error_of(tmp_path, 'problem p {\n  data L = load("d.npz", "label")\n  var w[2]\n  minimize sum_squares(w)\n}\n')
    d = err.first
    assert (d.span.line, d.span.column) == (2, 12)
    assert d.message == f"no array `label` in {tmp_path / 'd.npz'}"
    assert "did you mean `labels`?" in d.notes
    assert "the file holds: labels, C" in d.notes
    assert "in the declaration `data L = ...`" in d.notes


def test_bad_files(tmp_path):
    np.save(tmp_path / "v.npy", np.ones(3))
    (tmp_path / "t.txt").write_text("1 2\n")
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    assert "takes no key" in error_of(tmp_path, 'problem p {\n  data v = load("v.npy", "k")\n'
                                                '  var w[2]\n  minimize sum_squares(w)\n}\n').first.message
    assert "reads .npz and .npy" in error_of(tmp_path, 'problem p {\n  data v = load("t.txt")\n'
                                                       '  var w[2]\n  minimize sum_squares(w)\n}\n').first.message
    assert "non-numeric" in error_of(tmp_path, 'problem p {\n  data v = csv("bad.csv")\n'
                                               '  var w[2]\n  minimize sum_squares(w)\n}\n').first.message


# ------------------------------------------------------------------ shapes that contradict declarations
def test_matmul_mismatch_names_the_data_file_and_the_variable(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((5, 3)))
    err = error_of(tmp_path, """problem p {
  data X = load("d.npz", "X")
  var w[4]
  minimize sum_squares(X @ w)
}
""")
    d = err.first
    assert (d.span.line, d.span.column) == (4, 24)
    assert d.message == "shape mismatch in `X @ w`: `@` of shapes (5, 3) and (4,): inner dimensions 3 and 4 differ"
    assert '`X` has shape (5, 3), from load("d.npz", "X") at line 2' in d.notes
    assert "`w` is declared with shape (4,) at line 3" in d.notes


def test_param_shape_contradicting_its_data(tmp_path):
    np.save(tmp_path / "w0.npy", np.ones(5))
    err = error_of(tmp_path, """problem p {
  data w_init = load("w0.npy")
  param w0[3] = w_init
  var w[3]
  minimize sum_squares(w - w0)
}
""")
    d = err.first
    assert d.span.line == 3
    assert d.message == "parameter `w0` is declared with shape (3,) but its value has shape (5,)"
    assert '`w_init` has shape (5,), from load("w0.npy") at line 2' in d.notes


def test_constraint_and_set_shapes_name_their_data(tmp_path):
    np.savez(tmp_path / "ot.npz", a=np.full(3, 1 / 3), b=np.full(4, 1 / 4))
    err = error_of(tmp_path, """problem p {
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  var P[3, 3] >= 0
  minimize sum(P)
  subject to sum(P, axis = 0) == b
}
""")
    assert err.first.span.line == 6
    assert "shape mismatch in constraint" in err.first.message
    assert '`b` has shape (4,), from load("ot.npz", "b") at line 3' in err.first.notes
    err = error_of(tmp_path, """problem p {
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  var P[3, 3] in transport(a, b)
  minimize sum(P)
}
""")
    assert err.first.span.line == 4
    assert "the column marginal b has shape (4,), the plan has 3 columns" in err.first.message


# ------------------------------------------------------------------ bundled data sets
def test_datasets(tmp_path):
    ir = compile_text(tmp_path, """problem p {
  data X, y = dataset("diabetes", center = true)
  data Xb, yb = dataset("breast_cancer", standardize = true, labels = "pm1")
  data Xd, yd = dataset("digits", rows = 300)
  var w[cols(X)]
  minimize sum_squares(X @ w - y)
}
""")
    assert value(ir, "X").shape == (442, 10) and abs(value(ir, "y").mean()) < 1e-9
    assert value(ir, "Xb").shape == (569, 30) and set(np.unique(value(ir, "yb"))) == {-1.0, 1.0}
    np.testing.assert_allclose(value(ir, "Xb").std(axis=0), 1.0)
    assert value(ir, "Xd").shape == (300, 64) and value(ir, "yd").max() == 9
    err = error_of(tmp_path, 'problem p {\n  data X, y = dataset("diabetis")\n  var w[2]\n  minimize sum_squares(w)\n}\n')
    assert err.first.message == "unknown data set `diabetis`"
    assert "did you mean `diabetes`?" in err.first.notes


# ------------------------------------------------------------------ generators
def test_generators_are_seeded_and_streams_are_sequential(tmp_path):
    ir = compile_text(tmp_path, """problem p {
  data X, G, E = randn([5, 3], [3, 2], [5, 2], seed = 7)
  data Z = randn(4, 2, seed = 7, scale = 2)
  data U = rand(3, 3, seed = 1, low = -1, high = 1)
  data K = randint(0, 4, 10, seed = 2)
  data S = sparse_randn(50, 40, density = 0.1, seed = 3, values = "sign", scale = 10)
  data I = eye(3)
  data o = ones(4)
  data z = zeros(2, 2)
  data r = arange(5)
  data labels = repeat([0, 1, 2], 3)
  data counts = repeat([0, 1], [1, 2])
  var w[3]
  minimize sum_squares(X @ w)
}
""")
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(value(ir, "X"), rng.standard_normal((5, 3)))
    np.testing.assert_array_equal(value(ir, "G"), rng.standard_normal((3, 2)))
    np.testing.assert_array_equal(value(ir, "E"), rng.standard_normal((5, 2)))
    np.testing.assert_array_equal(value(ir, "Z"), 2 * np.random.default_rng(7).standard_normal((4, 2)))
    U = value(ir, "U")
    assert U.shape == (3, 3) and U.min() >= -1 and U.max() < 1
    assert value(ir, "K").dtype.kind == "i" and value(ir, "K").max() < 4
    S = value(ir, "S")
    assert set(np.unique(S)) <= {-10.0, 0.0, 10.0} and 0.05 < np.mean(S != 0) < 0.15
    np.testing.assert_array_equal(value(ir, "I"), np.eye(3))
    np.testing.assert_array_equal(value(ir, "r"), np.arange(5))
    np.testing.assert_array_equal(value(ir, "labels"), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert value(ir, "labels").dtype.kind == "i"
    np.testing.assert_array_equal(value(ir, "counts"), [0, 1, 1])


@pytest.mark.parametrize("source,message", [
    ("randn(3, -1)", "nonnegative integers"),
    ("randn([3, 2], 4)", "several shapes as lists"),
    ("sparse_randn(3, density = 2)", "density must lie in [0, 1]"),
    ("randint(3, 3, 2)", "low < high"),
    ("repeat([0, 1], [1, 2, 3])", "one count per value"),
    ("randn(3, sd = 2)", "randn has no keyword `sd`"),
])
def test_generator_argument_errors(tmp_path, source, message):
    err = error_of(tmp_path, f"problem p {{\n  data A = {source}\n  var w[2]\n  minimize sum_squares(w)\n}}\n")
    assert message in err.first.message
    assert err.first.span.line == 2


def test_list_literals_are_arrays(tmp_path):
    # 2 * [[0, 0], [1, 0]] scales (NumPy), it does not repeat the list (Python)
    ir = compile_text(tmp_path, "problem p {\n  let c = 2 * [[0, 0], [1, 0]]\n  var w[2]\n"
                                "  minimize sum_squares(w - c[1, :])\n}\n")
    np.testing.assert_array_equal(ir[ir.lets["c"]]["value"], [[0, 0], [2, 0]])
