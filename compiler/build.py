"""AST -> IR for `problem` blocks. Names stay unresolved (``ref`` nodes) until ``resolve_names``."""
from __future__ import annotations

from pathlib import Path
from regspec import ast
from regspec.compiler.catalogue import ALIASES, ATOMS, OPERATORS
from regspec.compiler.ir import IR
from regspec.diagnostics import Span, error


def _sequence_items(call: ast.Call) -> list[ast.Expr]:
    """The positional arguments of a call; for an atom that takes a sequence (``hstack([a, b])``,
    CVXPY's spelling) a lone list literal stands for its items, which may then hold variables."""
    name = ALIASES.get(call.func.id, call.func.id)
    atom = ATOMS.get(name)
    if (atom is not None and atom.sequence_args and len(call.args) == 1
            and isinstance(call.args[0], ast.ListExpr) and call.args[0].items):
        return list(call.args[0].items)
    return list(call.args)


class _Builder:
    def __init__(self, ir: IR):
        self.ir = ir
        self.file_lets: set[str] = set()  # names of the file-level lets, declared before the block

    def expr(self, e: ast.Expr) -> int:
        ir = self.ir
        if isinstance(e, ast.Num):
            return ir.add("const", e.span, value=e.value)
        if isinstance(e, (ast.Str, ast.Bool)):
            return ir.add("const", e.span, value=e.value)
        if isinstance(e, ast.Name):
            return ir.add("ref", e.span, name=e.id)
        if isinstance(e, ast.BinOp):
            return ir.add("call", e.span, [self.expr(e.left), self.expr(e.right)], atom=OPERATORS[e.op], kwargs={})
        if isinstance(e, ast.Neg):
            if isinstance(e.operand, ast.Num):
                return ir.add("const", e.span, value=-e.operand.value)
            return ir.add("call", e.span, [self.expr(e.operand)], atom="neg", kwargs={})
        if isinstance(e, ast.Attr):
            if e.name != "T":
                raise error(f"unknown attribute `.{e.name}`; the only attribute is `.T` (transpose)", e.span)
            return ir.add("call", e.span, [self.expr(e.obj)], atom="transpose", kwargs={})
        if isinstance(e, ast.Call):
            if not isinstance(e.func, ast.Name):
                raise error("only `train` blocks may call import paths", e.func.span)
            args = [self.expr(a) for a in _sequence_items(e)]
            kwargs = {k.name: self.expr(k.value) for k in e.kwargs}
            return ir.add("call", e.span, args, atom=e.func.id, kwargs=kwargs, func_span=e.func.span)
        if isinstance(e, ast.Index):
            items = {f"_i{i}": self.index_item(it) for i, it in enumerate(e.items)}
            return ir.add("call", e.span, [self.expr(e.obj)], atom="index", kwargs=items)
        if isinstance(e, ast.Compare):
            return ir.add("call", e.span, [self.expr(e.left), self.expr(e.right)], atom="compare",
                          kwargs={"op": ir.add("const", e.span, value=e.op)})
        if isinstance(e, ast.ListExpr):
            return ir.add("list", e.span, [self.expr(i) for i in e.items])
        if isinstance(e, (ast.Arrow, ast.Range)):
            raise error("schedules and ranges (`a -> b`, `0..5`) belong in `train` blocks", e.span)
        raise error(f"unsupported expression {type(e).__name__}", e.span)

    def index_item(self, it: ast.Expr) -> int:
        if isinstance(it, ast.Slice):
            lo, hi, step = (self.expr(e) if e is not None else self.ir.add("const", it.span, value=None)
                            for e in (it.lo, it.hi, it.step))
            return self.ir.add("slice", it.span, [lo, hi, step])
        return self.expr(it)

    def set_expr(self, e: ast.Expr, span: Span) -> int:
        """``simplex``, ``box(0, 1)``, ``l2_ball(r = 2)`` -> a ``set`` node (static arguments as operands)."""
        if isinstance(e, ast.Name):
            return self.ir.add("set", e.span, [], set=e.id, kwargs={})
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
            return self.ir.add("set", e.span, [self.expr(a) for a in e.args], set=e.func.id,
                               kwargs={k.name: self.expr(k.value) for k in e.kwargs}, func_span=e.func.span)
        raise error("expected a set, such as `simplex`, `psd` or `box(0, 1)`", e.span)

    def domain(self, d: ast.Domain | None) -> int | None:
        if d is None:
            return None
        if d.kind == "in":
            return self.set_expr(d.value, d.span)
        bound = self.expr(d.value)
        key = "lo" if d.kind == ">=" else "hi"
        return self.ir.add("set", d.span, [], set="box", kwargs={key: bound})

    def shape(self, dims: list[ast.Expr] | None) -> list[int]:
        return [self.expr(d) for d in dims or []]

    def let(self, s: ast.Let) -> None:
        node = self.expr(s.value)
        self.declare(s.name, node, s.span)
        self.ir.lets[s.name] = node
        self.ir[node].setdefault("let_names", []).append(s.name)

    def declare(self, name: str, node: int, span: Span) -> None:
        if name in self.ir.scope:
            prev = self.ir[self.ir.scope[name]].get("decl_span") or self.ir[self.ir.scope[name]].get("span")
            line = f" at line {prev.line}" if prev is not None else ""
            if name in self.file_lets:
                raise error(f"`{name}` is already a file-level `let` (declared{line}); a block cannot declare it "
                            "again", span, ["rename one of them: a file-level name is shared by every block"])
            raise error(f"`{name}` is declared twice in this block{f' (first declared{line})' if line else ''}", span)
        self.ir.scope[name] = node
        self.ir[node]["decl_span"] = span

    def stmt(self, s: ast.Stmt) -> None:
        ir = self.ir
        if isinstance(s, ast.Let):
            self.let(s)
        elif isinstance(s, ast.DataDecl):
            src = s.source
            if not (isinstance(src, ast.Call) and isinstance(src.func, ast.Name)):
                names = s.names[0] if len(s.names) == 1 else "NAME"
                raise error("a data source is a call such as load(\"file.npz\", \"key\"), dataset(\"diabetes\") "
                            "or randn(10, 5, seed = 0)", src.span,
                            notes=[f"a literal or an expression is a constant: `let {names} = ...`"])
            source = ir.add("source", src.span, [self.expr(a) for a in src.args], source=src.func.id,
                            kwargs={k.name: self.expr(k.value) for k in src.kwargs}, func_span=src.func.span,
                            names=list(s.names))
            for i, name in enumerate(s.names):
                node = ir.add("data", s.span, [source], name=name, output=i)
                self.declare(name, node, s.span)
        elif isinstance(s, ast.ParamDecl):
            node = ir.add("param", s.span, [self.expr(s.value), *self.shape(s.shape)], name=s.name,
                          domain=self.domain(s.domain), has_shape=s.shape is not None)
            if ir[node]["domain"] is not None:
                ir.graph.add_edge(ir[node]["domain"], node)
            self.declare(s.name, node, s.span)
        elif isinstance(s, ast.VarDecl):
            node = ir.add("var", s.span, self.shape(s.shape), name=s.name, domain=self.domain(s.domain))
            if ir[node]["domain"] is not None:
                ir.graph.add_edge(ir[node]["domain"], node)
            self.declare(s.name, node, s.span)
        elif isinstance(s, ast.Objective):
            if ir.objective() is not None:
                raise error("a problem has one objective; this is a second one", s.span)
            ir.add("objective", s.span, [self.expr(s.expr)], sense=s.sense)
        elif isinstance(s, ast.Constraint):
            if s.op == "in":
                ir.add("constraint", s.span, [self.expr(s.lhs), self.set_expr(s.rhs, s.span)], op="in")
            else:
                ir.add("constraint", s.span, [self.expr(s.lhs), self.expr(s.rhs)], op=s.op)
        elif isinstance(s, (ast.Constrain, ast.Regularize)) and s.metric is not None:
            raise error("`as NAME` names a training metric; a problem's terms have no metrics", s.metric.span)
        elif isinstance(s, ast.Constrain):
            if s.gates:
                raise error("`every`, `from` and `until` apply to training runs, not problems", s.gates[0].span)
            ir.add("constraint", s.span, [self.expr(s.target), self.set_expr(s.set, s.span)], op="in")
        elif isinstance(s, ast.Regularize):
            if s.gates:
                raise error("`every`, `from` and `until` apply to training runs, not problems", s.gates[0].span)
            ir.add("regularize", s.span, [self.expr(s.term)], via=s.via)
        elif isinstance(s, ast.LagrangeConstrain):
            raise error("`constrain ... via lagrangian` is a training statement; in a problem, write the "
                        "comparison as a constraint: `subject to EXPR <= c`", s.span)
        else:
            from regspec.compiler.train_plan import span_text

            keyword = (span_text(s.span).split() or ["this"])[0]
            raise error(f"`{keyword}` statements belong in `train` blocks", s.span)


def build_problem(spec: ast.Spec, block: ast.ProblemBlock) -> IR:
    """Lower one problem block (with the file-level lets) to a raw IR."""
    ir = IR(block.name, "problem")
    ir.meta["base_dir"] = str(Path(spec.source.path).parent) if spec.source.path != "<string>" else "."
    ir.meta["block_span"] = block.name_span
    b = _Builder(ir)
    for let in spec.lets:
        b.let(let)
    b.file_lets = {let.name for let in spec.lets}
    for s in block.body:
        b.stmt(s)
    if ir.objective() is None:
        raise error(f"problem `{block.name}` has no objective (`minimize ...` or `maximize ...`)", block.name_span)
    # `regularize` in a problem adds its term to the objective (minimize) or subtracts (maximize).
    return ir

