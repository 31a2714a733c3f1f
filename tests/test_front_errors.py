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
