"""The AST of a `.reg` file. Every node carries the ``Span`` it was parsed from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

from regspec.diagnostics import Source, Span


@dataclass
class Node:
    span: Span = field(repr=False, compare=False, kw_only=True)


# ---------------------------------------------------------------- expressions
@dataclass
class Expr(Node):
    def children(self) -> list["Expr"]:
        return []

    def walk(self) -> Iterator["Expr"]:
        yield self
        for c in self.children():
            yield from c.walk()


@dataclass
class Num(Expr):
    value: float
    is_int: bool = False


@dataclass
class Str(Expr):
    value: str


@dataclass
class Bool(Expr):
    value: bool


@dataclass
class Name(Expr):
    id: str


@dataclass
class BinOp(Expr):
    op: str  # + - * / @ **
    left: Expr
    right: Expr

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass
class Neg(Expr):
    operand: Expr

    def children(self) -> list[Expr]:
        return [self.operand]


@dataclass
class Keyword(Node):
    name: str
    value: Expr


@dataclass
class Call(Expr):
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


@dataclass
class Attr(Expr):
    obj: Expr
    name: str

    def children(self) -> list[Expr]:
        return [self.obj]


@dataclass
class Slice(Expr):
    lo: Expr | None
    hi: Expr | None

    def children(self) -> list[Expr]:
        return [e for e in (self.lo, self.hi) if e is not None]


@dataclass
class Index(Expr):
    obj: Expr
    items: list[Expr]

    def children(self) -> list[Expr]:
        return [self.obj, *self.items]


@dataclass
class Compare(Expr):
    op: str  # == <= >=
    left: Expr
    right: Expr

    def children(self) -> list[Expr]:
        return [self.left, self.right]


@dataclass
class Arrow(Expr):
    """``a -> b`` in schedules (``linear(0 -> 1e-4)``) and rewrites."""

    start: Expr
    end: Expr

    def children(self) -> list[Expr]:
        return [self.start, self.end]


@dataclass
class Range(Expr):
    """``0..5`` in phrase arguments (``epochs 0..5``)."""

    lo: Expr
    hi: Expr

    def children(self) -> list[Expr]:
        return [self.lo, self.hi]


@dataclass
class ListExpr(Expr):
    items: list[Expr]

    def children(self) -> list[Expr]:
        return list(self.items)


# ---------------------------------------------------------------- statements
@dataclass
class Stmt(Node):
    pass


@dataclass
class Domain(Node):
    """``>= 0``, ``<= 0`` or ``in SET``."""

    kind: str  # ">=", "<=", "in"
    value: Expr


@dataclass
class DataDecl(Stmt):
    names: list[str]
    source: Expr


@dataclass
class ParamDecl(Stmt):
    name: str
    shape: list[Expr] | None
    value: Expr
    domain: Domain | None


@dataclass
class VarDecl(Stmt):
    name: str
    shape: list[Expr] | None
    domain: Domain | None


@dataclass
class Let(Stmt):
    name: str
    value: Expr


@dataclass
class Objective(Stmt):
    sense: str  # minimize | maximize
    expr: Expr


@dataclass
class Constraint(Stmt):
    """``lhs == rhs``, ``lhs <= rhs``, ``lhs >= rhs`` or ``lhs in SET``."""

    op: str
    lhs: Expr
    rhs: Expr


@dataclass
class MetricName(Node):
    """``as NAME`` after a regularize/constrain statement: its key in metrics.jsonl."""

    name: str


@dataclass
class Regularize(Stmt):
    term: Expr
    via: str | None = None
    gates: list[Gate] = field(default_factory=list)  # train blocks only: a gated proximal step
    metric: MetricName | None = None


@dataclass
class Gate(Node):
    kind: str  # every | from | until
    value: Expr
    unit: str  # steps | epoch


@dataclass
class Constrain(Stmt):
    target: Expr
    set: Expr
    gates: list[Gate]
    metric: MetricName | None = None


@dataclass
class LagrangeConstrain(Stmt):
    """``constrain EXPR <= c via lagrangian(...)`` (or ``>=``, ``==``): a constraint without a
    projection, handled by a Lagrange multiplier (train blocks)."""

    lhs: Expr
    op: str
    rhs: Expr
    via: Expr | None
    gates: list[Gate]
    metric: MetricName | None = None


@dataclass
class Transform(Stmt):
    """``transform FORM(SELECTOR, options)``: an update transform on the selected tensors."""

    form: Expr
    gates: list[Gate]


@dataclass
class ModelStmt(Stmt):
    model: Expr


@dataclass
class TrainData(Stmt):
    source: Expr


@dataclass
class LossStmt(Stmt):
    loss: Expr


@dataclass
class OptimizerStmt(Stmt):
    optimizer: Expr


@dataclass
class Setting(Stmt):
    key: str  # epochs | steps | batch | seed | device
    value: Expr


@dataclass
class Rewrite(Stmt):
    src: Expr
    dst: Expr


@dataclass
class Reparametrize(Stmt):
    """``reparametrize SELECTOR as FORM(...)``: train the tensors through a parametrization."""

    target: Expr
    form: Expr


@dataclass
class Freeze(Stmt):
    """``freeze SELECTOR``: the matched tensors are not trained."""

    target: Expr


@dataclass
class Init(Stmt):
    """``init "file.pt"``: starting weights from a state_dict file (relative to the spec)."""

    source: Expr


@dataclass
class Block(Node):
    name: str
    body: list[Stmt]
    name_span: Span = field(repr=False, compare=False, kw_only=True)

    def of(self, cls: type) -> list:
        return [s for s in self.body if isinstance(s, cls)]


@dataclass
class ProblemBlock(Block):
    kind = "problem"

    @property
    def objective(self) -> Objective | None:
        objs = self.of(Objective)
        return objs[0] if objs else None

    @property
    def constraints(self) -> list[Constraint]:
        return self.of(Constraint)


@dataclass
class TrainBlock(Block):
    kind = "train"


@dataclass
class Spec(Node):
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
