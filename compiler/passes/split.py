"""Split the objective for first-order methods: smooth terms (autograd), separable prox terms on a
single variable, projections (variable domains and ``x in SET``), and terms or constraints that act
through linear operators (these need a primal-dual method). Chooses the algorithm and says why."""
from __future__ import annotations

from dataclasses import dataclass, field

from regspec.compiler.catalogue import ATOMS, SETS, Curvature
from regspec.compiler.ir import IR


@dataclass
class Term:
    """``sign * prod(scale) * core``: ``scale`` lists (node, exponent) with exponent +1 or -1."""

    core: int
    sign: float = 1.0
    scale: list[tuple[int, int]] = field(default_factory=list)
    role: str = ""            # smooth | prox | constant | operator
    var: int | None = None    # for prox terms: the variable the prox acts on
    kernel: str | None = None
    why: str = ""


@dataclass
class Projection:
    var: int
    set_node: int
    source: int               # the var (domain) or the constraint node it came from
    kernel: str | None


@dataclass
class Split:
    terms: list[Term]
    projections: list[Projection]
    operator_constraints: list[int]
    algorithm: str            # fista | pdhg | none
    reasons: list[tuple[str, int]]  # why the torch backend cannot use FISTA, each with its node

    @property
    def smooth(self) -> list[Term]:
        return [t for t in self.terms if t.role == "smooth"]

    @property
    def prox(self) -> list[Term]:
        return [t for t in self.terms if t.role == "prox"]


# Pairs (prox kernel, set) with one closed-form prox of the sum.
COMBINED = {("l1", "nonneg"): "l1_nonneg"}


def _flatten(ir: IR, node: int, sign: float, scale: list[tuple[int, int]], out: list[Term]) -> None:
    d = ir[node]
    if d["kind"] == "call" and "value" not in d:
        atom = d["atom"]
        a = d["args"]
        if atom == "add":
            _flatten(ir, a[0], sign, scale, out)
            _flatten(ir, a[1], sign, scale, out)
            return
        if atom == "sub":
            _flatten(ir, a[0], sign, scale, out)
            _flatten(ir, a[1], -sign, scale, out)
            return
        if atom == "neg":
            _flatten(ir, a[0], -sign, scale, out)
            return
        if atom in ("multiply", "divide") and ir[a[0]]["shape"] == () and ir[a[1]]["shape"] == ():
            const = [x for x in a if ir[x]["curvature"] is Curvature.CONSTANT]
            if atom == "multiply" and const:
                c = const[0]
                other = a[1] if c == a[0] else a[0]
                _flatten(ir, other, sign, scale + [(c, 1)], out)
                return
            if atom == "divide" and ir[a[1]]["curvature"] is Curvature.CONSTANT:
                _flatten(ir, a[0], sign, scale + [(a[1], -1)], out)
                return
    out.append(Term(node, sign, scale))


def is_smooth(ir: IR, node: int) -> bool:
    d = ir[node]
    if d["kind"] != "call" or "value" in d:
        return True
    return ATOMS[d["atom"]].smooth and all(is_smooth(ir, a) for a in d["args"])


def _scale_sign_ok(ir: IR, term: Term) -> bool:
    """A prox needs a nonnegative weight: the sign of sign * prod(scale) must be known and >= 0."""
    neg = term.sign < 0
    for n, _ in term.scale:
        s = ir[n]["sign"]
        if s.nonpos and not s.nonneg:
            neg = not neg
        elif not s.nonneg:
            return False
    return not neg


def split_terms(ir: IR) -> IR:
    obj = ir.objective()
    terms: list[Term] = []
    flip = -1.0 if ir[obj]["sense"] == "maximize" else 1.0  # first-order methods minimize
    _flatten(ir, ir[obj]["args"][0], flip, [], terms)
    for r in ir.nodes_of("regularize"):
        _flatten(ir, ir[r]["args"][0], 1.0, [], terms)

    reasons: list[tuple[str, int]] = []
    for t in terms:
        core = ir[t.core]
        if core["curvature"] is Curvature.CONSTANT:
            t.role, t.why = "constant", "does not depend on a variable"
        elif is_smooth(ir, t.core):
            t.role, t.why = "smooth", "differentiable: joins the smooth part (autograd)"
        else:
            atom = ATOMS.get(core.get("atom", ""))
            arg = core["args"][0] if core.get("args") else None
            if atom is not None and atom.prox is not None and arg is not None and ir[arg]["kind"] == "var" \
                    and _scale_sign_ok(ir, t) and all(ir[v]["curvature"] is Curvature.CONSTANT
                                                      for v in core.get("tensor_kwargs", {}).values()):
                t.role, t.var, t.kernel = "prox", arg, atom.prox.kernel
                t.why = f"{atom.name} of the variable `{ir[arg]['name']}` has a closed-form prox ({atom.prox.kernel})"
            else:
                t.role = "operator"
                if atom is not None and atom.prox is not None and arg is not None and ir[arg]["kind"] != "var":
                    t.why = (f"{atom.name} acts on `{ir.text(arg)}`, a linear map of the variables, "
                             "not on a variable itself")
                elif atom is not None and atom.prox is None:
                    t.why = f"{atom.name} is nonsmooth and has no prox"
                else:
                    t.why = "nonsmooth term with a weight of unknown sign"
                reasons.append((t.why, t.core))

    projections: list[Projection] = []
    operator_constraints: list[int] = []
    for v in ir.nodes_of("var"):
        dom = ir[v].get("domain")
        if dom is not None:
            projections.append(Projection(v, dom, v, SETS[ir[dom]["set"]].projection))
    for c in ir.nodes_of("constraint"):
        d = ir[c]
        lhs = d["args"][0]
        if d["op"] == "in" and ir[lhs]["kind"] == "var":
            projections.append(Projection(lhs, d["args"][1], c, SETS[ir[d["args"][1]]["set"]].projection))
        else:
            operator_constraints.append(c)
            reasons.append((f"the constraint `{ir.text(c)}` couples variables through a linear map", c))

    # Each variable may carry one nonsmooth piece (a prox term or a projection), or a known pair.
    by_var: dict[int, list] = {}
    for t in terms:
        if t.role == "prox":
            by_var.setdefault(t.var, []).append(t)
    for p in projections:
        by_var.setdefault(p.var, []).append(p)
    for v, items in by_var.items():
        if len(items) <= 1:
            continue
        kinds = tuple(sorted(((i.kernel if isinstance(i, Term) else ir[i.set_node]["set"]) for i in items),
                             key=lambda k: k != "l1"))
        if len(items) == 2 and kinds in COMBINED:
            continue
        reasons.append((f"the variable `{ir[v]['name']}` has {len(items)} nonsmooth pieces "
                        f"({', '.join(map(str, kinds))}) with no closed-form joint prox", v))
    for p in projections:
        if p.kernel is None:
            reasons.append((f"the set {ir[p.set_node]['set']} has no projection kernel", p.source))

    algorithm = "fista" if not reasons else "pdhg"
    ir.meta["split"] = Split(terms, projections, operator_constraints, algorithm, reasons)
    for t in terms:
        ir[t.core]["role"] = t.role
    return ir
