"""The parser: every LANGUAGE.md example parses with the right structure, spans are exact, and
malformed input gets located messages."""
from pathlib import Path

import pytest

from regspec import ast
from regspec.diagnostics import RegspecError
from regspec.parser import parse, parse_file

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "language").glob("*.reg"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_language_examples_parse(path):
    spec = parse_file(path)
    assert spec.blocks or spec.lets


def test_language_examples_structure():
    spec = parse_file(Path(__file__).parent / "fixtures" / "language" / "example_2.reg")
    assert [b.name for b in spec.blocks] == ["class_ot", "robust_pca", "d_optimal_design"]
    ot = spec.blocks[0]
    assert [type(s).__name__ for s in ot.body] == ["DataDecl"] * 4 + ["ParamDecl", "VarDecl", "Objective",
                                                                      "Constraint", "Constraint"]
    var = ot.body[5]
    assert var.domain.kind == ">=" and isinstance(var.domain.value, ast.Num)
    assert [c.op for c in ot.constraints] == ["==", "=="]
    rpca = spec.blocks[1]
    assert rpca.constraints[0].op == "==" and isinstance(rpca.constraints[0].lhs, ast.BinOp)
    dopt = spec.blocks[2]
    assert dopt.objective.sense == "maximize"
    assert dopt.of(ast.VarDecl)[0].domain.kind == "in"


def test_train_block_statements():
    spec = parse_file(Path(__file__).parent / "fixtures" / "language" / "example_3.reg")
    train = spec.trains[0]
    kinds = [type(s).__name__ for s in train.body]
    assert kinds == ["ModelStmt", "TrainData", "LossStmt", "OptimizerStmt", "Setting", "Setting", "Setting",
                     "Rewrite", "Regularize", "Regularize", "Regularize", "Constrain", "Constrain", "Regularize"]
    model = train.body[0].model
    assert [k.name for k in model.kwargs] == ["in", "hidden", "out", "act"]
    reg = train.body[8]
    sched = reg.term.right
    assert isinstance(sched.args[0], ast.Arrow) and sched.kwarg("stages").value == 4
    assert train.body[10].via == "prox"
    every = train.body[11].gates[0]
    assert (every.kind, every.value.value, every.unit) == ("every", 10, "steps")
    frm = train.body[12].gates[0]
    assert (frm.kind, frm.value.value, frm.unit) == ("from", 5, "epoch")


def test_spans_point_at_source():
    text = "problem p {\n  var x[3]\n  minimize norm1(x) + sum_squares(x)\n}\n"
    spec = parse(text)
    obj = spec.blocks[0].objective
    term = obj.expr.right
    assert (term.span.line, term.span.column, term.span.end_column) == (3, 23, 37)
    assert text.splitlines()[2][term.span.column - 1: term.span.end_column - 1] == "sum_squares(x)"


def test_precedence_and_continuation_lines():
    spec = parse("problem p {\n var x[2]\n minimize -x[0] ** 2 * 3\n   + norm1(x)\n}")
    e = spec.blocks[0].objective.expr
    assert e.op == "+"                       # continued on the next line
    prod = e.left
    assert isinstance(prod.left, ast.Neg) and prod.left.operand.op == "**"  # -(x**2), numpy-style


def test_constraint_lines_starting_with_minus_are_new_statements():
    spec = parse("problem p {\n var x[2]\n minimize norm1(x)\n subject to {\n  x >= 1\n  -x <= 3\n }\n}")
    assert len(spec.blocks[0].constraints) == 2


def test_phrase_and_schedule_arguments():
    spec = parse("train t {\n regularize l1(param(\"w\")) * linear(0 -> 1e-3, epochs 0..5)\n}")
    call = spec.blocks[0].body[0].term.right
    rng = call.kwarg("epochs")
    assert isinstance(rng, ast.Range) and (rng.lo.value, rng.hi.value) == (0, 5)


@pytest.mark.parametrize("text,line,col,needle", [
    ("problem p {\n  var x[3]\n  minimize norm1(x)\n", 3, 20, "missing `}`"),
    ("problem p {\n  var x[3]\n  minimize norm1(x) +\n}\n", 4, 1, "unexpected `}`"),
    ("problem p {\n  var x[3] $\n}\n", 2, 12, "unexpected character `$`"),
    ("problem p {\n  param a = 1 == 0\n}\n", 2, 15, "not `==`"),
    ("problem p {\n  minimize f(a = 1, 2)\n}\n", 2, 21, "positional argument follows keyword"),
])
def test_syntax_errors_are_located(text, line, col, needle):
    with pytest.raises(RegspecError) as exc:
        parse(text, "bad.reg")
    d = exc.value.first
    assert (d.span.line, d.span.column) == (line, col), d.render()
    assert needle in d.message
    rendered = d.render()
    assert rendered.startswith(f"bad.reg:{line}:{col}: error: ")
    assert "^" in rendered.splitlines()[-1] or "note" in rendered.splitlines()[-1]
