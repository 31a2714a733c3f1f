"""The AST of a `.reg` file. Every node carries the ``Span`` it was parsed from.

The node classes are dataclasses (``fields``, ``replace`` work on them) that generate no method:
``__init__``, equality (spans ignored) and ``repr`` are ``Node``'s, written once. Generating them
for each of ~45 classes compiled ~130 functions at every start-up (``regspec check``, ~10 ms for
equality and repr, ~3 ms for ``__init__``)."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterator, Union

from regspec.diagnostics import Source, Span


@dataclass(eq=False, repr=False, init=False)
class Node:
    """A node of the AST: its fields, and where in the source it was parsed from."""

    span: Span = field(repr=False, compare=False, kw_only=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The fields as a dataclass's generated ``__init__`` sets them: positional arguments in
        declaration order, then keywords (``span`` and the other keyword-only fields by keyword
        only), defaults and default factories for the rest."""
        positional, keyword_only, order, defaults = _INIT_FIELDS.get(type(self)) or _init_fields(type(self))
        if len(args) > len(positional):
            raise TypeError(f"{type(self).__name__}() takes {len(positional)} positional arguments but "
                            f"{len(args)} were given")
        values = dict(zip(positional, args))
        for name, value in kwargs.items():
            if name in values or not (name in positional or name in keyword_only):
                problem = "multiple values for" if name in values else "an unexpected keyword"
                raise TypeError(f"{type(self).__name__}() got {problem} argument '{name}'")
            values[name] = value
        state = self.__dict__
        for name in order:
            if name in values:
                state[name] = values[name]
            elif name in defaults:
                default, factory = defaults[name]
                state[name] = factory() if factory is not None else default
            else:
                raise TypeError(f"{type(self).__name__}() missing required argument: '{name}'")

    def __eq__(self, other: Any) -> bool:
        """Nodes of one class whose compared fields are equal (as a dataclass's ``__eq__``)."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        compared = [f.name for f in fields(self) if f.compare]
        return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)

    __hash__ = None  # mutable, compared by value: unhashable, as a dataclass with eq

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"{self.__class__.__qualname__}({shown})"


_INIT_FIELDS: dict[type, tuple] = {}


def _init_fields(cls: type) -> tuple:
    """(positional names, keyword-only names, all names in declaration order, {name: (default,
    factory)}) of a node class's fields, computed once per class."""
    every = fields(cls)
    defaults = {f.name: (f.default, None if f.default_factory is MISSING else f.default_factory) for f in every
                if f.default is not MISSING or f.default_factory is not MISSING}
    spec = (tuple(f.name for f in every if not f.kw_only), frozenset(f.name for f in every if f.kw_only),
            tuple(f.name for f in every), defaults)
    _INIT_FIELDS[cls] = spec
    return spec


# ---------------------------------------------------------------- expressions
@dataclass(eq=False, repr=False, init=False)
class Expr(Node):
    """An expression."""

    def children(self) -> list["Expr"]:
        return []

    def walk(self) -> Iterator["Expr"]:
        yield self
        for c in self.children():
            yield from c.walk()


@dataclass(eq=False, repr=False, init=False)
class Num(Expr):
    """A number literal; ``is_int`` when written without a point or exponent."""

    value: float
    is_int: bool = False


@dataclass(eq=False, repr=False, init=False)
class Str(Expr):
    """A string literal, escapes decoded."""

    value: str


@dataclass(eq=False, repr=False, init=False)
class Bool(Expr):
    """``true`` or ``false``."""

    value: bool


@dataclass(eq=False, repr=False, init=False)
class Name(Expr):
    """A name: a declared symbol, an atom, a set or a keyword argument's value."""

    id: str


@dataclass(eq=False, repr=False, init=False)
class BinOp(Expr):
    """``left op right`` for the binary operators ``+ - * / @ **``."""

    op: str  # + - * / @ **
    left: Expr
    right: Expr

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass(eq=False, repr=False, init=False)
class Neg(Expr):
    """Unary minus."""

    operand: Expr

    def children(self) -> list[Expr]:
        return [self.operand]


@dataclass(eq=False, repr=False, init=False)
class Keyword(Node):
    """``name = value`` inside a call's arguments."""

    name: str
    value: Expr


@dataclass(eq=False, repr=False, init=False)
class Call(Expr):
    """``func(args, kwargs)``: an atom, a set, a data source or a model."""

    func: Expr  # a Name, or a Str for import paths: "pkg.mod:Class"(...)
    args: list[Expr]
    kwargs: list[Keyword]

    @property
    def func_name(self) -> str:
        return self.func.id if isinstance(self.func, Name) else getattr(self.func, "value", "?")

    def kwarg(self, name: str) -> Expr | None:
        return next((k.value for k in self.kwargs if k.name == name), None)

    def children(self) -> list[Expr]:
        return [*self.args, *(k.value for k in self.kwargs)]


@dataclass(eq=False, repr=False, init=False)
class Attr(Expr):
    """``obj.name``."""

    obj: Expr
    name: str

    def children(self) -> list[Expr]:
        return [self.obj]


@dataclass(eq=False, repr=False, init=False)
class Slice(Expr):
    """``lo:hi`` or ``lo:hi:step`` in a subscript; any part may be missing."""

    lo: Expr | None
    hi: Expr | None
    step: Expr | None = None

    def children(self) -> list[Expr]:
        return [e for e in (self.lo, self.hi, self.step) if e is not None]


@dataclass(eq=False, repr=False, init=False)
class Index(Expr):
    """``obj[items]``."""

    obj: Expr
    items: list[Expr]

    def children(self) -> list[Expr]:
        return [self.obj, *self.items]


@dataclass(eq=False, repr=False, init=False)
class Compare(Expr):
    """``left op right``: a constraint, a domain (``param lam = 0.1 >= 0``), or between data a
    boolean mask (``let mask = K > 0.4``, ``P[labels == k, :]``)."""

    op: str  # == != <= >= < >
    left: Expr
    right: Expr
    op_span: Span | None = field(default=None, repr=False, compare=False, kw_only=True)

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass(eq=False, repr=False, init=False)
class Arrow(Expr):
    """``a -> b`` in schedules (``linear(0 -> 1e-4)``) and rewrites."""

    start: Expr
    end: Expr

    def children(self) -> list[Expr]:
        return [self.start, self.end]


@dataclass(eq=False, repr=False, init=False)
class Range(Expr):
    """``0..5`` in phrase arguments (``epochs 0..5``)."""

    lo: Expr
    hi: Expr

    def children(self) -> list[Expr]:
        return [self.lo, self.hi]


@dataclass(eq=False, repr=False, init=False)
class ListExpr(Expr):
    """``[a, b, ...]``."""

    items: list[Expr]

    def children(self) -> list[Expr]:
        return list(self.items)


# ---------------------------------------------------------------- statements
@dataclass(eq=False, repr=False, init=False)
class Stmt(Node):
    """A statement of a block (or a file-level ``let``)."""


@dataclass(eq=False, repr=False, init=False)
class Domain(Node):
    """``>= 0``, ``<= 0`` or ``in SET``."""

    kind: str  # ">=", "<=", "in"
    value: Expr


@dataclass(eq=False, repr=False, init=False)
class DataDecl(Stmt):
    """``data NAMES = SOURCE``."""

    names: list[str]
    source: Expr


@dataclass(eq=False, repr=False, init=False)
class ParamDecl(Stmt):
    """``param NAME[shape] = VALUE DOMAIN``."""

    name: str
    shape: list[Expr] | None
    value: Expr
    domain: Domain | None


@dataclass(eq=False, repr=False, init=False)
class VarDecl(Stmt):
    """``var NAME[shape] DOMAIN``."""

    name: str
    shape: list[Expr] | None
    domain: Domain | None


@dataclass(eq=False, repr=False, init=False)
class Let(Stmt):
    """``let NAME = EXPR``."""

    name: str
    value: Expr


@dataclass(eq=False, repr=False, init=False)
class Objective(Stmt):
    """``minimize EXPR`` or ``maximize EXPR``."""

    sense: str  # minimize | maximize
    expr: Expr


@dataclass(eq=False, repr=False, init=False)
class Constraint(Stmt):
    """``lhs == rhs``, ``lhs <= rhs``, ``lhs >= rhs`` or ``lhs in SET``."""

    op: str
    lhs: Expr
    rhs: Expr


@dataclass(eq=False, repr=False, init=False)
class MetricName(Node):
    """``as NAME`` after a regularize/constrain statement: its key in metrics.jsonl."""

    name: str


@dataclass(eq=False, repr=False, init=False)
class Regularize(Stmt):
    """``regularize TERM [via NAME] [gates] [as NAME]``."""

    term: Expr
    via: str | None = None
    gates: list[Gate] = field(default_factory=list)  # train blocks only: a gated proximal step
    metric: MetricName | None = None


@dataclass(eq=False, repr=False, init=False)
class Gate(Node):
    """``every N steps``, ``from epoch N`` or ``until step N`` after a train statement."""

    kind: str  # every | from | until
    value: Expr
    unit: str  # steps | epoch


@dataclass(eq=False, repr=False, init=False)
class Constrain(Stmt):
    """``constrain TARGET in SET [gates] [as NAME]``: a projection (train blocks)."""

    target: Expr
    set: Expr
    gates: list[Gate]
    metric: MetricName | None = None


@dataclass(eq=False, repr=False, init=False)
class LagrangeConstrain(Stmt):
    """``constrain EXPR <= c via lagrangian(...)`` (or ``>=``, ``==``): a constraint without a
    projection, handled by a Lagrange multiplier (train blocks)."""

    lhs: Expr
    op: str
    rhs: Expr
    via: Expr | None
    gates: list[Gate]
    metric: MetricName | None = None


@dataclass(eq=False, repr=False, init=False)
class Transform(Stmt):
    """``transform FORM(SELECTOR, options)``: an update transform on the selected tensors."""

    form: Expr
    gates: list[Gate]


@dataclass(eq=False, repr=False, init=False)
class ModelStmt(Stmt):
    """``model EXPR``."""

    model: Expr


@dataclass(eq=False, repr=False, init=False)
class TrainData(Stmt):
    """``data EXPR`` in a train block."""

    source: Expr


@dataclass(eq=False, repr=False, init=False)
class LossStmt(Stmt):
    """``loss EXPR``."""

    loss: Expr


@dataclass(eq=False, repr=False, init=False)
class OptimizerStmt(Stmt):
    """``optimizer EXPR``."""

    optimizer: Expr


@dataclass(eq=False, repr=False, init=False)
class Setting(Stmt):
    """``epochs N``, ``steps N``, ``batch N``, ``seed N`` or ``device NAME``."""

    key: str  # epochs | steps | batch | seed | device
    value: Expr


@dataclass(eq=False, repr=False, init=False)
class Rewrite(Stmt):
    """``rewrite SRC -> DST``: a module of the model replaced by another."""

    src: Expr
    dst: Expr


@dataclass(eq=False, repr=False, init=False)
class Reparametrize(Stmt):
    """``reparametrize SELECTOR as FORM(...)``: train the tensors through a parametrization."""

    target: Expr
    form: Expr


@dataclass(eq=False, repr=False, init=False)
class Freeze(Stmt):
    """``freeze SELECTOR``: the matched tensors are not trained."""

    target: Expr


@dataclass(eq=False, repr=False, init=False)
class Init(Stmt):
    """``init "file.pt"``: starting weights from a state_dict file (relative to the spec)."""

    source: Expr


@dataclass(eq=False, repr=False, init=False)
class Block(Node):
    """A ``problem`` or ``train`` block: its name and statements."""

    name: str
    body: list[Stmt]
    name_span: Span = field(repr=False, compare=False, kw_only=True)

    def of(self, cls: type) -> list:
        return [s for s in self.body if isinstance(s, cls)]


@dataclass(eq=False, repr=False, init=False)
class ProblemBlock(Block):
    """``problem NAME { ... }``."""

    kind = "problem"

    @property
    def objective(self) -> Objective | None:
        objs = self.of(Objective)
        return objs[0] if objs else None

    @property
    def constraints(self) -> list[Constraint]:
        return self.of(Constraint)


@dataclass(eq=False, repr=False, init=False)
class TrainBlock(Block):
    """``train NAME { ... }``."""

    kind = "train"


@dataclass(eq=False, repr=False, init=False)
class Spec(Node):
    """A parsed `.reg` file: its file-level lets and its blocks."""

    source: Source
    lets: list[Let]
    blocks: list[Block]

    @property
    def problems(self) -> list[ProblemBlock]:
        return [b for b in self.blocks if isinstance(b, ProblemBlock)]

    @property
    def trains(self) -> list[TrainBlock]:
        return [b for b in self.blocks if isinstance(b, TrainBlock)]

    def block(self, name: str) -> Block | None:
        return next((b for b in self.blocks if b.name == name), None)


Statement = Union[DataDecl, ParamDecl, VarDecl, Let, Objective, Constraint, Regularize, Constrain,
                  ModelStmt, TrainData, LossStmt, OptimizerStmt, Setting, Rewrite, Reparametrize, Freeze, Init,
                  LagrangeConstrain, Transform]
