"""User mistakes found by outside tests and fuzzing (issue 9 items 11, 12, 18): each is a located
error (`path:line:col: error: ...`) with exit 1 from `regspec check`, never an internal error
(exit 70) or a traceback. Run through the CLI's main in-process."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from regspec.cli import main


def check(tmp_path, text: str | bytes, name: str = "spec.reg", capsys=None) -> tuple[int, str, str, str]:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    rc = main(["check", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err, str(path)


def located(err: str, path: str) -> tuple[int, int, str]:
    """(line, column, message) of the first diagnostic; fails unless it is located in ``path``."""
    m = re.match(re.escape(path) + r":(\d+):(\d+): error: (.*)", err)
    assert m, f"not a located error: {err!r}"
    assert "Traceback" not in err and "internal error" not in err
    return int(m.group(1)), int(m.group(2)), m.group(3)


def problem(body: str, head: str = "") -> str:
    return head + "problem p {\n" + body + "\n}\n"


# ---------------------------------------------------------------- lexical level (item 18)
LEXICAL = [
    # (id, text, line, column, message fragment)
    ("invalid_escape", problem('  data A = load("a\\q.npy")\n  var x[3]\n  minimize norm1(x)'), 2, 19,
     "invalid escape `\\q`"),
    ("short_unicode_escape", problem('  data A = load("\\u12")\n  var x[3]\n  minimize norm1(x)'), 2, 18,
     "invalid escape `\\u12"),
    ("integer_over_4300_digits", problem("  var x[3]\n  minimize norm1(x) + " + "9" * 5000), 3, 23,
     "integer literal 999999999999...999999 (5000 digits) is too large"),
    ("integer_over_64_bits", problem("  var x[3]\n  minimize norm1(x) + 99999999999999999999"), 3, 23,
     "must fit in 64 bits"),
    ("float_literal_overflows", problem("  var x[3]\n  minimize norm1(x) + 1e999"), 3, 23, "overflows"),
    ("let_glued_to_name", "letn=3\n" + problem("  var x[3]\n  minimize norm1(x)"), 1, 1,
     "`letn` is not a keyword or name here: write a space after `let`"),
    ("minimize_glued_to_atom", problem("  var x[3]\n  minimizesum_squares(x)"), 3, 3,
     "write a space after `minimize`"),
    ("var_glued_to_name", problem("  varx[3]\n  minimize norm1(x)"), 2, 3, "unexpected `varx`"),
    ("in_glued_to_set", problem("  var x[3]\n  minimize norm1(x)\n  subject to x insimplex"), 4, 16,
     "unexpected `insimplex`"),
    ("single_quoted_string", problem("  var X[3, 3]\n  minimize pnorm(X, 'fro')"), 3, 21,
     'strings are written in double quotes: "fro"'),
    ("literal_as_data_source", problem("  data A = [[1, 0], [0, 1]]\n  var x[2]\n  minimize norm1(A @ x)"), 2, 12,
     "`let A = ...`"),
]


@pytest.mark.parametrize("text,line,col,fragment", [c[1:] for c in LEXICAL], ids=[c[0] for c in LEXICAL])
def test_lexical_mistakes_are_located(tmp_path, capsys, text, line, col, fragment):
    rc, _, err, path = check(tmp_path, text, capsys=capsys)
    assert rc == 1
    assert located(err, path)[:2] == (line, col)
    assert fragment in err


def test_valid_escapes_decode_and_keep_non_ascii(tmp_path):
    from regspec.parser import parse

    spec = parse('let s = "caf\u00e9 \\"q\\" \\\\ \\n \\u00e9"\n')
    assert spec.lets[0].value.value == 'caf\u00e9 "q" \\ \n \u00e9'


@pytest.mark.parametrize("nest", [
    pytest.param(lambda n: "-" * n + "x", id="unary_minus"),
    pytest.param(lambda n: "x" + " + x" * n, id="sum_chain"),
    pytest.param(lambda n: "abs(" * n + "x" + ")" * n, id="calls"),
    pytest.param(lambda n: "sum(" + "[" * n + "1" + "]" * n + ") + x", id="lists"),
    pytest.param(lambda n: "huber(" * n + "x" + ", M = 1)" * n, id="calls_with_keywords"),
])
def test_deep_nesting_is_a_located_error(tmp_path, capsys, nest):
    for n in (330, 2000):
        rc, _, err, path = check(tmp_path, problem(f"  var x[3]\n  minimize sum({nest(n)})"), capsys=capsys)
        assert rc == 1
        line, _, msg = located(err, path)
        assert line == 3 and msg == "expression nested too deeply: more than 100 levels"


def test_nesting_at_the_limit_compiles(tmp_path, capsys):
    from regspec.parser import MAX_NESTING

    rc, out, err, _ = check(tmp_path, problem("  var x[3]\n  minimize sum(" + "-" * (MAX_NESTING - 2) + "x)"),
                            capsys=capsys)
    assert rc == 0, err
    rc, _, err, _ = check(tmp_path, problem("  var x[3]\n  minimize sum(" + "(" * 2000 + "x" + ")" * 2000 + ")"),
                          capsys=capsys)
    assert rc == 0, err  # parentheses alone are no nesting level: the parser is iterative


def test_let_chains_deeper_than_the_limit_are_located(tmp_path, capsys):
    lets = "".join(f"  let a{i + 1} = a{i} + x\n" for i in range(300))
    rc, _, err, path = check(tmp_path, problem(f"  var x[3]\n  let a0 = x\n{lets}  minimize sum(a300)"),
                             capsys=capsys)
    assert rc == 1
    line, _, msg = located(err, path)
    assert "nested too deeply" in msg and "through `let`" in msg


def test_let_aliases_resolve(tmp_path, capsys):
    rc, out, err, _ = check(tmp_path, problem("  var x[3]\n  let a = x\n  let b = a\n  minimize sum_squares(b)"),
                            capsys=capsys)
    assert rc == 0, err


def test_utf8_bom_is_accepted(tmp_path, capsys):
    rc, out, err, _ = check(tmp_path, b"\xef\xbb\xbf" + problem("  var x[3]\n  minimize norm1(x)").encode(),
                            capsys=capsys)
    assert rc == 0, err


def test_invalid_utf8_is_located_from_the_byte_offset(tmp_path, capsys):
    text = b"problem p {\n  var x[3]\n  minimize norm1(x)  # caf\xc3\xa9 \xff\n}\n"
    rc, _, err, path = check(tmp_path, text, capsys=capsys)
    assert rc == 1
    line, col, msg = located(err, path)
    assert (line, col) == (3, 29) and "not valid UTF-8" in msg and "ff" in msg


def test_line_separator_in_a_comment_keeps_the_caret_on_its_line(tmp_path, capsys):
    rc, _, err, path = check(tmp_path, problem("  var x[3]  # a\u2028b\u0085c\n  minimize norm1(y)"),
                             capsys=capsys)
    assert rc == 1
    assert located(err, path)[:2] == (3, 18)
    lines = err.splitlines()
    assert lines[1].endswith("minimize norm1(y)")
    assert lines[2].index("^") == lines[1].index("y")


def test_blank_lines_are_scanned_once_per_run(monkeypatch):
    """A run of blank lines is scanned once for a leading operator, not once per newline (the
    quadratic scan made a file of 20000 blank lines take a minute). Counted, not timed."""
    from regspec import parser

    calls = []
    real = parser.NewlinePostLexer._LEADING_OP

    class Counting:
        def match(self, text, pos):
            calls.append(pos)
            return real.match(text, pos)

    monkeypatch.setattr(parser.NewlinePostLexer, "_LEADING_OP", Counting())
    n = 20000
    spec = parser.parse(problem("\n" * n + "  var x[3]\n" + "  # c\n\n" * n + "  minimize norm1(x)\n" + "\n" * n
                                + "  + 1"))
    assert spec.problems[0].name == "p"
    assert len(calls) < 10


# ---------------------------------------------------------------- values, data, declarations (items 11, 18)
X3 = "  var x[3]\n"
SEMANTIC = [
    # item 11
    ("param_default_outside_domain", problem("  param lam = -1 >= 0\n" + X3 + "  minimize norm1(x) * lam"), 2, 3,
     "the value of parameter `lam` is outside its domain: -1.0 is not >= 0.0"),
    ("string_operand", problem(X3 + '  minimize norm1(x) + "abc"'), 3, 23,
     "an operand of `+` must be a number or an array, got the string 'abc'"),
    ("huge_variable", problem("  var x[100000000000000]\n  minimize norm1(x)"), 2, 3,
     "variable `x`: shape (100000000000000,) has 100,000,000,000,000 entries"),
    ("csv_unknown_keyword", problem('  data A = csv("f.csv", header = true)\n' + X3 + "  minimize norm1(x)"), 2, 34,
     "csv has no keyword `header`"),
    # item 18
    ("let_cycle", problem(X3 + "  let L = L + 1\n  minimize norm1(x) + L"), 3, 3, "`L` is defined in terms of itself"),
    ("let_alias_cycle", problem(X3 + "  let a = b\n  let b = a\n  minimize norm1(x) + a"), 4, 11,
     "names are defined in terms of each other: `a` -> `b` -> `a`"),
    ("param_var_shape_cycle", problem("  param p[cols(x)] = 1\n  var x[rows(p)]\n  minimize norm1(x)"), 2, 3,
     "declarations depend on each other in a cycle: `p` -> `x` -> `p`"),
    ("block_let_names_file_let", problem("  let a = 3\n" + X3 + "  minimize norm1(x) + a", head="let a = 2\n"), 3, 3,
     "`a` is already a file-level `let` (declared at line 1)"),
    ("string_parameter", problem('  param lam = "abc"\n' + X3 + "  minimize norm1(x) * lam"), 2, 15,
     "the value of parameter `lam` must be a number or an array, got the string 'abc'"),
    ("string_keyword_number", problem(X3 + '  minimize huber(x, M = "a")'), 3, 25, "`M` of huber must be a number"),
    ("string_axis", problem(X3 + '  minimize sum(sum(x, axis = "a"))'), 3, 30, "`axis` of sum must be an integer"),
    ("string_list_operand", problem(X3 + '  minimize norm1(x + ["a", "b", "c"])'), 3, 22, "holds text"),
    ("string_shape", problem('  var x["a"]\n  minimize norm1(x)'), 2, 9, "must be an integer"),
    ("negative_seed", problem("  data A = randn(3, seed = -1)\n" + X3 + "  minimize sum_squares(x - A)"), 2, 12,
     "seed must be an integer from 0 to 2**64 - 1, got -1"),
    ("fractional_seed", problem("  data A = randn(3, seed = 0.5)\n" + X3 + "  minimize sum_squares(x - A)"), 2, 12,
     "seed must be an integer"),
    ("infinite_shape", problem("  var x[1e308 * 10]\n  minimize norm1(x)"), 2, 9, "`1e308 * 10` is not finite: it is inf"),
    ("negative_shape", problem("  var x[-3]\n  minimize norm1(x)"), 2, 3, "negative dimension"),
    ("negative_data_shape", problem("  data A = randn(-3)\n" + X3 + "  minimize norm1(x)"), 2, 12,
     "dimensions must be nonnegative integers, got -3"),
    ("power_of_empty_constant", problem(X3 + "  minimize norm1(x) + sum(x ** [])"), 3, 32,
     "the exponent of `**` must be a scalar"),
    ("mask_of_other_length", problem(X3 + "  minimize norm1(x[[true, false]])"), 3, 18, "boolean index did not match"),
    ("data_mask_of_other_length", problem("  data A = randn(3)\n" + X3 + "  minimize norm1(x) + sum(A[[true]])"), 4, 27,
     "boolean index did not match"),
    ("tv_of_one_entry", problem("  var x[1]\n  minimize tv(x)"), 3, 12, "tv needs at least 2 entries along each axis"),
    ("nan_from_folding", problem(X3 + "  minimize norm1(x) + log(-1)"), 3, 23, "`log(-1)` is not finite: it is nan"),
    ("inf_from_folding", problem("  param lam = 1e308 * 10\n" + X3 + "  minimize norm1(x) * lam"), 2, 15,
     "is not finite: it is inf"),
    ("nan_data_entries", problem("  data A = randn(3)\n" + X3 + "  minimize norm1(x - log(A))"), 4, 22,
     "`log(A)` is not finite: 1 of its 3 entries are nan"),
    ("huge_generated_data", problem("  data A = zeros(100000, 100000)\n" + X3 + "  minimize norm1(x)"), 2, 12,
     "refusing to generate data: shape (100000, 100000) has 10,000,000,000 entries"),
    ("huge_identity", problem("  data A = eye(100000)\n" + X3 + "  minimize norm1(x)"), 2, 12, "10,000,000,000 entries"),
    ("huge_parameter", problem("  param p[100000000000000] = 1\n" + X3 + "  minimize norm1(x) + sum(p)"), 2, 3,
     "parameter `p`: shape (100000000000000,)"),
    ("csv_of_a_device", problem('  data A = csv("/dev/zero")\n' + X3 + "  minimize norm1(x)"), 2, 12,
     "/dev/zero is not a regular file"),
    ("rand_bounds_overflow", problem("  data A = rand(3, low = 1e308, high = -1e308)\n" + X3 + "  minimize norm1(x - A)"),
     2, 12, "rand needs finite low <= high"),
    ("dataset_negative_rows", problem('  data X, y = dataset("diabetes", rows = -5)\n  var w[cols(X)]\n'
                                      "  minimize sum_squares(X @ w - y)"), 2, 15, "got -5"),
    ("slice_bound_infinite", problem(X3 + "  minimize norm1(x[0:1e308*10])"), 3, 22, "is not finite"),
    ("fractional_axis", problem(X3 + "  minimize sum(sum(x, axis = 0.5))"), 3, 30, "`axis` of sum must be an integer"),
    # minimal cases found by tests/test_fuzz_specs.py
    ("fuzz_string_domain_bound", problem('  param a = 0.5 >= "abc"\n' + X3 + "  minimize norm1(x) * a"), 2, 20,
     "`lo` of set box must be a number, got the string 'abc'"),
    ("fuzz_array_for_scalar_keyword", problem(X3 + "  minimize elastic_net(x, a = [], b = 1)"), 3, 31,
     "`a` of elastic_net must be a single number, got []"),
    ("fuzz_index_beyond_int64", problem("  data l = repeat([0, 1e308], 2)\n  data C = randn(3, 2)\n" + X3
                                        + "  minimize norm1(x) + sum(C[l, :])"), 5, 27, "must be of integer (or boolean) type"),
    ("fuzz_empty_bound", problem("  param lam = 1.0 >= []\n" + X3 + "  minimize norm1(x) * lam"), 2, 19,
     "the bound lo has shape (0,), which does not fit shape scalar"),
    ("gen_array_for_set_count", problem("  var y[3]\n  subject to y in top_k(-[])\n  minimize sum(y)"), 3, 14,
     "top_k needs a nonnegative integer k, got []"),
    ("sweep_axis_list", problem("  var P[3, 3]\n  minimize sum(sum(P, axis = [0, 1]))"), 3, 30,
     "`axis` of sum must be an integer, got [0, 1]"),
    ("sweep_axis_empty_list", problem("  var P[3, 3]\n  minimize sum(sum(P, axis = []))"), 3, 30,
     "`axis` of sum must be an integer, got []"),
    # found by solving generated problems that check accepted (internal errors in the CVXPY lowering)
    ("string_objective", problem(X3 + '  maximize "abc"'), 3, 12, "the objective must be a number or an array"),
    ("constraint_without_variable", problem(X3 + "  minimize sum(x)\n  subject to ---1 in l1_ball"), 4, 14,
     "the constraint `---1 in l1_ball` involves no variable"),
    ("constraint_between_constants", problem("  data y = randn(3)\n" + X3 + "  maximize x[0]\n  subject to y[0] <= y[0]"),
     5, 14, "involves no variable: it is always true or always false"),
    ("weights_depend_on_a_variable", problem("  var X[3, 3]\n  minimize sum(tv([1, 2, 3], X))"), 3, 16,
     "`w` of tv must be data or a parameter, but `X` depends on a variable"),
    ("fuzz_group_labels_beyond_int64", problem(X3 + "  minimize group_l2(x, groups = [0, 1e308, 1])"), 3, 12,
     "groups must be integer labels, got values of type float64"),
    ("bound_of_other_shape", problem("  var x[3] >= [1, 2]\n  minimize norm1(x)"), 2, 12,
     "the bound lo has shape (2,), which does not fit shape (3,)"),
]


@pytest.mark.parametrize("text,line,col,fragment", [c[1:] for c in SEMANTIC], ids=[c[0] for c in SEMANTIC])
def test_semantic_mistakes_are_located(tmp_path, capsys, text, line, col, fragment):
    rc, _, err, path = check(tmp_path, text, capsys=capsys)
    assert rc == 1, err
    assert located(err, path)[:2] == (line, col), err
    assert fragment in err


def test_arrays_larger_than_memory_are_refused_before_allocation(tmp_path, capsys, monkeypatch):
    from regspec.compiler import ir

    monkeypatch.setattr(ir, "_physical_memory", lambda: 2 ** 30)  # a 1 GiB machine
    for decl, line in (("  var x[20000, 10000]\n", 2), ("  data A = zeros(20000, 10000)\n", 2)):
        rc, _, err, path = check(tmp_path, problem(decl + "  var z[3]\n  minimize norm1(z)"), capsys=capsys)
        assert rc == 1
        assert located(err, path)[0] == line
        assert "200,000,000 entries: 1.5 GiB as float64, more than this machine's 1.0 GiB of memory" in err


def test_csv_unknown_keyword_lists_the_valid_ones(tmp_path, capsys):
    rc, _, err, _ = check(tmp_path, problem('  data A = csv("f.csv", skip_headr = 1)\n' + X3 + "  minimize norm1(x)"),
                          capsys=capsys)
    assert rc == 1
    assert "did you mean `skip_header`?" in err and "its keywords: columns, delimiter, file, skip_header" in err


NPY_DATA = [
    ("complex", np.array([1 + 2j, 3, 4]), "holds complex numbers; regspec works with real numbers"),
    ("strings", np.array(["a", "b", "c"]), "holds text"),
    ("non_finite", np.array([1.0, np.inf, np.nan]), "is not finite: 2 of its 3 entries are inf, nan"),
]


@pytest.mark.parametrize("array,fragment", [c[1:] for c in NPY_DATA], ids=[c[0] for c in NPY_DATA])
def test_npy_data_that_is_not_real_and_finite_is_refused(tmp_path, capsys, array, fragment):
    np.save(tmp_path / "a.npy", array)
    rc, _, err, path = check(tmp_path, problem('  data A = load("a.npy")\n' + X3 + "  minimize sum_squares(x - A)"),
                             capsys=capsys)
    assert rc == 1
    assert located(err, path)[:2] == (2, 3)
    assert "data `A` from load(\"a.npy\")" in err and fragment in err


def test_non_finite_csv_cells_are_refused(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("1,2,3\n4,inf,6\n")
    rc, _, err, path = check(tmp_path, problem('  data A = csv("d.csv")\n' + X3 + "  minimize sum_squares(x - A[0])"),
                             capsys=capsys)
    assert rc == 1 and located(err, path)[:2] == (2, 3) and "1 of its 6 entries are inf" in err


def test_set_values_outside_the_domain_or_not_finite_are_refused(tmp_path, capsys):
    path = tmp_path / "p.reg"
    path.write_text(problem("  param lam = 1 >= 0\n" + X3 + "  minimize norm1(x) * lam"))
    for value, fragment in (("-1", "outside its declared domain `>= 0`"), ("nan", "must be finite")):
        assert main(["solve", str(path), "--set", f"lam={value}"]) == 1
        assert fragment in capsys.readouterr().err


# ---------------------------------------------------------------- no backend (item 12, problem side)
def test_check_refuses_a_problem_no_backend_can_take(tmp_path, capsys):
    rc, out, err, path = check(tmp_path, problem(X3 + "  minimize -norm1(x) + sum(x)"), capsys=capsys)
    assert rc == 1
    assert "backends: none" in out and "ok (" not in out
    line, col, msg = located(err, path)
    assert (line, col) == (3, 12) and msg.startswith("no backend can solve problem `p`")
    assert "note: cvxpy refuses: minimize needs a convex objective" in err
    assert "note: torch refuses: the nonsmooth term norm1 has a weight that is negative" in err


def test_train_block_let_naming_a_file_let_is_located(tmp_path, capsys):
    text = ("let a = 2\ntrain t {\n  let a = 3\n  model linear(in = 10, out = 1)\n"
            '  data dataset("diabetes")\n  loss mse\n  optimizer sgd(lr = 0.1)\n}\n')
    rc, _, err, path = check(tmp_path, text, capsys=capsys)
    assert rc == 1
    assert located(err, path)[:2] == (3, 3) and "`a` is already a file-level `let` (declared at line 1)" in err
    rc, _, err, path = check(tmp_path, "let a = 2\nlet a = 3\n" + problem(X3 + "  minimize norm1(x)"), capsys=capsys)
    assert rc == 1 and located(err, path)[:2] == (2, 1) and "declared twice at file level" in err


def test_check_json_refuses_a_problem_no_backend_can_take(tmp_path, capsys):
    import json

    path = tmp_path / "spec.reg"
    path.write_text(problem(X3 + "  minimize -norm1(x) + sum(x)"))
    assert main(["check", "--json", str(path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    (err,) = doc["specs"][0]["errors"]
    assert not doc["ok"] and err["message"].startswith("no backend can solve problem `p`")


def test_schedule_with_a_huge_stage_count_is_refused_not_built(tmp_path, capsys):
    text = ('train t {\n  model linear(in = 10, out = 1)\n  data dataset("diabetes")\n  loss mse\n'
            '  optimizer sgd(lr = 0.1)\n'
            '  regularize l1(param("head.weight")) * sine_stages(0 -> 2e-3, stages = 100000000000000)\n}\n')
    rc, _, err, path = check(tmp_path, text, capsys=capsys)
    assert rc == 1
    assert located(err, path)[0] == 6 and "`stages` must be from 1 to 100000" in err


def test_array_bounds_give_the_sign(tmp_path, capsys):
    rc, out, err, _ = check(tmp_path, problem("  var x[3] >= [1, 2, 3]\n  minimize norm1(x)"), capsys=capsys)
    assert rc == 0, err
    assert "backends: cvxpy" in out


def test_check_accepts_a_nonconvex_problem_the_torch_backend_takes(tmp_path, capsys):
    rc, out, err, _ = check(tmp_path, problem("  var x[3] in sphere\n  minimize sum_squares(x - 1)"), capsys=capsys)
    assert rc == 0, err
    assert "backends: torch" in out


def test_lagrangian_constrain_in_a_problem_says_what_to_write(tmp_path, capsys):
    text = problem("  var w[3]\n  minimize sum_squares(w - 1)\n  constrain norm1(w) <= 1 via lagrangian(lr = 0.1)")
    rc, _, err, path = check(tmp_path, text, capsys=capsys)
    line, col, message = located(err, path)
    assert rc == 1 and (line, col) == (4, 3)
    assert "training statement" in message and "subject to" in message and "LagrangeConstrain" not in message
