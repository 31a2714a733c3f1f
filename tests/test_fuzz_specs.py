"""Property: `regspec check` on any mutation of a bundled spec either succeeds or reports a located
error with exit 1 -- never an internal error (exit 70), an uncaught exception or a hang (issue 9).

The mutations work on tokens of the bundled specs (delete, duplicate, swap, replace a number by an
extreme value, insert random characters), so most mutants stay close to valid specs and reach the
passes behind the parser. A second property generates problems from the whole catalogue (atoms
and sets with odd arguments, keywords, shapes and constants). Checks run in-process through the
CLI's main with captured output.
``REGSPEC_FUZZ_EXAMPLES=2000`` runs a longer search locally."""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from regspec.cli import main  # noqa: E402
from regspec.compiler.catalogue import ATOMS, SETS  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"
SPEC_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.reg"))}
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_]\w*|->|\*\*|==|<=|>=|\.\.'
                   r"|#[^\n]*|\n|[ \t]+|.", re.S)
NUMBER = re.compile(r"\d")
EXTREME = ["0", "-1", "1", "0.5", "1e308", "1e-320", "1e999", "100000000000000", "99999999999999999999",
           "9" * 5000, "(0 / 0)", "(1e308 * 10)", "-0", "2 ** 64", '"abc"', "[]", "[1, 2]", "true"]
CHARS = list('{}[]()",;=+-*/@<>.:#\\\n \t0123456789xyzSe_') + ["\u2028", "\ufeff", "\u00e9", "\x00", "\r"]
EXAMPLES = int(os.environ.get("REGSPEC_FUZZ_EXAMPLES", "200"))
HANG_SECONDS = 30  # far above any check (tens of ms); only a hang reaches it


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


# weighted: value and name changes keep most mutants parseable, so they reach the passes
OPERATIONS = ["number"] * 4 + ["name"] * 3 + ["line"] * 2 + ["delete", "duplicate", "swap", "insert", "glue"]
NAME = re.compile(r"[A-Za-z_]\w*")


@st.composite
def mutants(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(SPEC_TEXTS)))
    toks = tokens(SPEC_TEXTS[name])
    for _ in range(draw(st.integers(1, 3))):
        solid = [i for i, t in enumerate(toks) if not t.isspace()] or [0]
        i = draw(st.sampled_from(solid))
        op = draw(st.sampled_from(OPERATIONS))
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap":
            j = draw(st.sampled_from(solid))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "number":
            numbers = [k for k, t in enumerate(toks) if NUMBER.match(t)] or [i]
            toks[draw(st.sampled_from(numbers))] = draw(st.sampled_from(EXTREME))
        elif op == "name":  # one identifier becomes another of the same spec (a name, an atom, a keyword)
            names = [k for k, t in enumerate(toks) if NAME.fullmatch(t)] or [i]
            toks[draw(st.sampled_from(names))] = toks[draw(st.sampled_from(names))]
        elif op == "line":  # delete or duplicate a whole line (a statement, a brace)
            starts = [0] + [k + 1 for k, t in enumerate(toks) if t == "\n"]
            a = draw(st.sampled_from(starts))
            b = next((k + 1 for k in range(a, len(toks)) if toks[k] == "\n"), len(toks))
            toks[a:b] = [] if draw(st.booleans()) else toks[a:b] * 2
        elif op == "insert":
            toks.insert(i, draw(st.text(st.sampled_from(CHARS), min_size=1, max_size=4)))
        elif i + 1 < len(toks) and toks[i + 1].isspace() and toks[i + 1] != "\n":  # glue to the next token
            del toks[i + 1]
    return name, "".join(toks)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"check ran past {HANG_SECONDS} s")


def run_check(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["check", str(path)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return rc, err.getvalue()


def assert_ok_or_located(rc: int, err: str, path: Path, text: str) -> None:
    assert rc in (0, 1), f"exit {rc} on\n{text}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, f"{err}\non\n{text}"
    if rc == 1:
        assert re.match(re.escape(str(path)) + r":\d+:\d+: error: \S", err), f"unlocated error:\n{err}\non\n{text}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder beside which the specs' relative data paths resolve (specs/data)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "data").symlink_to(SPECS / "data")
    return folder


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a numpy warning on the user's terminal is a defect too
@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=HANG_SECONDS), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=mutants())
def test_mutated_specs_check_ok_or_fail_located(workdir, case):
    name, text = case
    path = workdir / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    rc, err = run_check(path)
    assert_ok_or_located(rc, err, path, text)


# ---------------------------------------------------------------- generated problems
# Random expressions over the whole catalogue: every atom with odd arguments and keywords, every
# set with odd parameters, operators on mismatched shapes, strings and extreme constants.
OPERATORS = {"add", "sub", "neg", "multiply", "divide", "matmul", "power", "transpose", "index", "compare"}
LEAVES = ["x", "X", "y", "A", "lam", "0", "-1", "3", "2.5", "1e308", "[1, 2, 3]", "[]", '"abc"', "true", "rows"]
KEYWORDS = sorted({k for a in ATOMS.values() for k in (*a.static, *a.tensor_kwargs)} - {"_key", "op"})
HEAD = ("problem p {\n  data A = randn(3, 3, seed = 0)\n  data y = randn(3, seed = 1)\n  param lam = 0.5 >= 0\n"
        "  var x[3]\n  var X[3, 3]\n")


def expressions(depth: int):
    leaf = st.sampled_from(LEAVES)
    if depth == 0:
        return leaf
    sub = expressions(depth - 1)
    keyword = st.tuples(st.sampled_from(KEYWORDS), sub).map(lambda t: f"{t[0]} = {t[1]}")
    call = st.tuples(st.sampled_from(sorted(set(ATOMS) - OPERATORS)), st.lists(sub, max_size=2),
                     st.lists(keyword, max_size=1)).map(lambda t: f"{t[0]}({', '.join(t[1] + t[2])})")
    binop = st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "@", "**"]), sub).map(lambda t: f"({' '.join(t)})")
    unary = st.one_of(sub.map("-{}".format), sub.map("({}).T".format), sub.map("({})[0]".format),
                      sub.map("({})[0:2]".format))
    return st.one_of(leaf, call, call, binop, unary)


set_exprs = st.tuples(st.sampled_from(sorted(SETS)), st.lists(expressions(1), max_size=2)).map(
    lambda t: f"{t[0]}({', '.join(t[1])})" if t[1] else t[0])
statements = st.one_of(
    st.tuples(expressions(2), st.sampled_from(["<=", ">=", "=="]), expressions(2)).map(
        lambda t: "  subject to " + " ".join(t)),
    st.tuples(expressions(2), set_exprs).map(lambda t: f"  subject to {t[0]} in {t[1]}"),
    set_exprs.map("  var z[3] in {}".format), expressions(1).map("  param q = {} >= 0".format))


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=max(20, EXAMPLES // 2), deadline=timedelta(seconds=HANG_SECONDS), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sense=st.sampled_from(["minimize", "maximize"]), objective=expressions(3),
       extra=st.lists(statements, max_size=2))
def test_generated_problems_check_ok_or_fail_located(workdir, sense, objective, extra):
    text = HEAD + "\n".join([*extra, f"  {sense} {objective}"]) + "\n}\n"
    path = workdir / "generated.reg"
    path.write_text(text, encoding="utf-8")
    rc, err = run_check(path)
    assert_ok_or_located(rc, err, path, text)
