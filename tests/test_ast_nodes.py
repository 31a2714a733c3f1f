"""The AST's node classes share ``Node.__init__`` (no method generated per class, issue 13): it
takes the arguments a dataclass's generated ``__init__`` takes and sets the same fields, checked
against one generated for each class here."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from regspec import ast
from regspec.diagnostics import Source, Span

NODES = [c for c in vars(ast).values() if isinstance(c, type) and issubclass(c, ast.Node)]
SPAN = Span(Source("x.reg", "x\n"), 1, 1, 1, 2)


def _generated(cls: type) -> type:
    """``cls`` with the ``__init__`` dataclasses would generate for its fields."""
    return dataclasses.dataclass(eq=False, repr=False)(type(cls.__name__, (cls,), {}))


def test_every_node_class_generates_no_method():
    assert len(NODES) >= 40
    assert all("__init__" not in c.__dict__ and "__eq__" not in c.__dict__ for c in NODES if c is not ast.Node)


@pytest.mark.parametrize("cls", NODES, ids=lambda c: c.__name__)
def test_node_init_takes_and_sets_what_a_generated_init_does(cls):
    reference = inspect.signature(_generated(cls).__init__).parameters
    required = [p for p in reference.values() if p.name != "self" and p.default is inspect.Parameter.empty]
    args = [f"{p.name}-value" for p in required if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    kwargs = {p.name: SPAN if p.name.endswith("span") else f"{p.name}-value"
              for p in required if p.kind is inspect.Parameter.KEYWORD_ONLY}
    ours, theirs = cls(*args, **kwargs), _generated(cls)(*args, **kwargs)
    assert ours.__dict__ == theirs.__dict__ and list(ours.__dict__) == list(theirs.__dict__)
    by_keyword = dict(zip([p.name for p in required], args)) | kwargs
    assert cls(**by_keyword).__dict__ == theirs.__dict__
    for f in dataclasses.fields(cls):  # a default factory gives each node its own value
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(ours, f.name) == f.default_factory()
            assert getattr(cls(*args, **kwargs), f.name) is not getattr(ours, f.name)
    positional = [p.name for p in reference.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD][1:]
    with pytest.raises(TypeError):
        cls(*positional, "one too many", **kwargs)
    with pytest.raises(TypeError):
        cls(*args, **kwargs, not_a_field=1)
    if "span" in kwargs:
        with pytest.raises(TypeError):
            cls(*args, **{k: v for k, v in kwargs.items() if k != "span"})  # span is required, by keyword
        with pytest.raises(TypeError):
            cls(*args, SPAN, **{k: v for k, v in kwargs.items() if k != "span"})  # ... and keyword-only
    if args:
        with pytest.raises(TypeError):
            cls(*args, **kwargs, **{required[0].name: "again"})


def test_nodes_compare_and_show_as_before():
    a = ast.BinOp("+", ast.Name("x", span=SPAN), ast.Num(1, True, span=SPAN), span=SPAN)
    b = dataclasses.replace(a, span=Span(Source("y.reg", "y\n"), 1, 1, 1, 2))
    assert a == b and a is not b and repr(a) == "BinOp(op='+', left=Name(id='x'), right=Num(value=1, is_int=True))"
    assert ast.Num(1.0, span=SPAN).is_int is False
