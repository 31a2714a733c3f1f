"""Split the objective for first-order methods and choose the torch backend's algorithm.

Every objective (and ``regularize``) term ``sign * prod(scale) * core`` gets a role:

- ``constant``: does not depend on a variable;
- ``smooth``: differentiable; joins the smooth part s(x), evaluated and differentiated by autograd;
- ``prox``: ``w * f(x)`` with f in the catalogue with a closed-form prox and x a variable
  (w >= 0 a constant); its prox is a kernel call, separable across variables;
- ``operator``: ``w * f(K x + c)`` with K x + c an affine expression of the variables that is not a
  single variable, and f either prox-able or, for the atoms of ``OPERATOR_FORMS``, a prox-able
  function of a fixed linear map of its argument (sum_of_norms = group norm of pair differences,
  tv = l1 of differences). PDHG takes it through the prox of f*, by Moreau's identity.

Sets: a variable's domain and ``x in SET`` are projections. Constraints on affine expressions
(``sum(P, axis = 1) == a``, ``L + S == M``, ``A @ x <= b``, ``A @ x in SET``) become operator
terms too: ``f`` is the indicator of ``{0}``, of the nonpositive orthant, or of the set, composed
with ``K x + c = lhs - rhs``.

Algorithm (``Split.algorithm``):

- ``fista``: no operator terms and at most one nonsmooth piece per variable (or a pair with a
  joint closed-form prox, ``COMBINED``): minimize s(x) + h(x) by FISTA with backtracking;
- ``pdhg``: otherwise, when every piece can be lowered: minimize s(x) + g(x) + sum_k f_k(K_k x)
  by Chambolle-Pock (Condat-Vu when s is present), with g the separable prox/projection pieces
  (one per variable) and the rest as dual blocks (a second piece on one variable becomes an
  operator term with K = identity);
- ``conic``: some term has no fast lowering but the problem is DCP: the conic fallback
  (``backends/torch/conic``) solves CVXPY's canonical form; ``refusals`` says why no fast path applies;
- ``none``: some term has no lowering and the problem is not DCP; ``refusals`` says which and why
  (with its node, so that the error points at it).

``reasons`` lists why FISTA does not apply (each with its node): ``regspec explain`` prints it.
This pass imports neither torch nor cvxpy: the kernel names are checked when lowering.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from regspec.compiler.catalogue import ATOMS, SETS, Curvature
from regspec.compiler.ir import IR
from regspec.compiler.passes.structure import SeparableProx, rewrite_smooth_forms, separable_prox, sublevel_set


@dataclass
class Term:
    """``sign * prod(scale) * core``: ``scale`` lists (node, exponent) with exponent +1 or -1."""

    core: int
    sign: float = 1.0
    scale: list[tuple[int, int]] = field(default_factory=list)
    role: str = ""            # smooth | prox | constant | operator | refused
    var: int | None = None    # for prox terms: the variable the prox acts on
    kernel: str | None = None
    why: str = ""
    prox: "SeparableProx | None" = None  # prox and operator terms: the kernel's atom node, argument, keywords


@dataclass
class Projection:
    var: int
    set_node: int
    source: int               # the var (domain) or the constraint node it came from
    kernel: str | None
    hyper: dict | None = None  # kernel keywords when not the set's own (a decomposed set)


@dataclass
class OperatorTerm:
    """One dual block of PDHG: ``f(K x + c)`` with ``K x + c`` an affine expression.

    ``kind``:
      - ``prox``: f = w * atom (``term`` holds the weight, ``kernel`` the atom's prox kernel, or
        ``form`` names an operator form, see ``OPERATOR_FORMS``); the affine expression is ``expr``;
      - ``equality`` / ``nonpos``: f = indicator of {0} / of {z <= 0}; the affine expression is
        ``lhs - rhs`` (``sides``);
      - ``set``: f = indicator of the set ``set_node`` (``kernel`` = its projection) of ``expr``.
    ``identity``: the expression is a bare variable (a second nonsmooth piece on that variable).
    ``source``: the node errors and explain point at (the term's core or the constraint).
    """

    kind: str
    source: int
    expr: int | None = None
    sides: tuple[int, int] | None = None
    term: Term | None = None
    kernel: str | None = None
    form: str | None = None
    set_node: int | None = None
    identity: bool = False
    why: str = ""


@dataclass
class Split:
    terms: list[Term]
    projections: list[Projection]
    operator_constraints: list[int]
    algorithm: str            # fista | pdhg | none
    reasons: list[tuple[str, int]]  # why the torch backend cannot use FISTA, each with its node
    operators: list[OperatorTerm] = field(default_factory=list)   # PDHG dual blocks
    g_projections: list[Projection] = field(default_factory=list)  # PDHG: projections kept in g
    g_prox: list[Term] = field(default_factory=list)                # PDHG: prox terms kept in g
    refusals: list[tuple[str, int]] = field(default_factory=list)  # why the torch backend refuses
    why_algorithm: str = ""
    marginals: tuple[int, int] | None = None  # sinkhorn: the constant nodes a, b (None: the transport set's)

    @property
    def smooth(self) -> list[Term]:
        return [t for t in self.terms if t.role == "smooth"]

    @property
    def prox(self) -> list[Term]:
        return [t for t in self.terms if t.role == "prox"]


# Pairs (prox kernel, projection kernel) with a closed-form prox of the sum. A string is the joint
# kernel; ("after", proj) means prox_{f + i_C} = prox_f o proj_C, which holds for these pairs:
# for f a (group) norm invariant under sign flips and C the nonnegative orthant, minimizing
# f(x) + 1/2||x - v||^2 over x >= 0 equals minimizing f(x) + 1/2||x - v_+||^2 + <x, v_->, whose
# unconstrained minimizer (a shrinkage of v_+) is >= 0 and orthogonal to v_-; for the nuclear
# norm on the PSD cone, SVT of the PSD projection is the eigenvalue shrinkage. -log det already
# keeps its prox positive definite, so the PSD projection is redundant.
COMBINED: dict[tuple[str, str], str | tuple[str, str]] = {
    ("l1", "nonneg"): "l1_nonneg",
    ("group_l2", "nonneg"): ("after", "nonneg"),
    ("l2", "nonneg"): ("after", "nonneg"),
    ("nuclear", "psd"): ("after", "psd"),
    ("neg_log_det", "psd"): "neg_log_det",
    # proxes whose value is already > 0 (domain z > 0) or that are monotone in the sign of z:
    # prox_{f + i_{z>=0}} is prox_f itself or prox_f after the projection (f(z) = sum max(z, 0) is z there)
    ("neg_entropy", "nonneg"): "neg_entropy",
    ("inv_pos", "nonneg"): "inv_pos",
    ("neg_power", "nonneg"): "neg_power",
    ("neg_log", "nonneg"): "neg_log",
    ("kl_div", "nonneg"): "kl_div",
    ("rel_entr", "nonneg"): "rel_entr",
    ("power_abs", "nonneg"): "power_nonneg",
    ("power_nonneg", "nonneg"): "power_nonneg",
    ("pos", "nonneg"): "l1_nonneg",
}

# Atoms whose gradient is not globally Lipschitz (a barrier at the boundary of their domain):
# PDHG with a smooth part needs a global Lipschitz constant, so when the problem goes to PDHG and
# such an atom has a prox it is taken through its prox (on a variable) or as a dual block (on an
# affine expression) instead of the smooth part. FISTA keeps them smooth (backtracking copes).
BARRIER_ATOMS = ("log_det", "log", "entropy", "kl_div", "entr", "inv_pos", "power", "rel_entr")
BARRIER_KERNELS = ("neg_log_det", "neg_log", "neg_entropy", "inv_pos", "neg_power", "kl_div", "rel_entr")

# Smooth atoms that are Lipschitz themselves (their conjugate's domain is bounded: huber's is
# y^2/4 on |y| <= 2M) and have a closed-form prox. Under PDHG, w * f(A x + b) with A x + b not a
# bare variable is taken as a dual block (prox of f* by Moreau) rather than joining the smooth
# part: there its gradient's Lipschitz constant 2 w ||A||^2 would set the primal step of every
# variable (Condat-Vu: tau (L/2 + sigma ||K||^2) < 1), which on data scaled by 1e4 is a step of
# 7e-10 against a problem that is piecewise linear at that scale; as a block, A is normalized to
# unit norm like every other block and the dual iterate stays in the box |y| <= 2 M w. FISTA
# keeps them smooth (backtracking adapts its step). A bare variable keeps them smooth (L = 2 w).
LIPSCHITZ_SMOOTH_KERNELS = ("huber",)

# Atoms whose domain excludes the zero start point (x > 0, x >= 0 with an infinite slope at 0):
# on a bare variable they are taken through their prox under FISTA too, whose iterates then stay
# strictly inside the domain (the prox maps into it), instead of a gradient that is infinite at
# the start. A negative power is such an atom; a power p > 1 is not (its kernel is not a barrier).
# log_det of a bare matrix variable (no `in psd`) is one too: -inf at X = 0, while its prox maps
# any matrix to a symmetric positive definite one.
DOMAIN_PROX_KERNELS = ("neg_entropy", "inv_pos", "neg_power", "neg_log", "kl_div", "rel_entr", "neg_log_det")

# Sets whose projection is iterative but which split into a cheap projection and linear
# equalities: under PDHG a variable in transport(a, b) gets P >= 0 in g and one dual block for
# the marginals [P 1; P^T 1] = [a; b].
DECOMPOSED_SETS = {"transport": ("nonneg", "transport_marginals")}

# Atoms that are a prox-able function g of a fixed linear map D of their argument, f(x) = g(D x),
# with no closed-form prox of their own when D is not orthogonal: the torch backend lowers
# w * f(A x + b) as one PDHG block with K = D A. The torch side (``pdhg_lowering.FORMS``) builds
# D and g from the atom's keywords; this table only says which atoms have such a form.
OPERATOR_FORMS: dict[str, str] = {
    "sum_of_norms": "sum over pairs (i, j) of w_ij ||X_i - X_j||_2: a row-group l2 norm of B X, "
                    "B the pair incidence matrix",
    "tv": "total variation: l1 (anisotropic) or l2-per-pixel (isotropic) norm of finite differences",
    "graph_tv": "sum over edges of w_ij |x_i - x_j|: weighted l1 norm of B x, B the edge incidence",
}


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
        if atom in ("sum", "mean") and d.get("static", {}).get("axis") is None and ir[a[0]]["shape"] != ():
            _flatten_sum(ir, node, a[0], sign, scale, out)
            return
        if atom in ("sum", "mean") and ir[a[0]]["shape"] == () and ir[a[0]]["kind"] == "call":
            _flatten(ir, a[0], sign, scale, out)  # the sum (or mean) of a scalar is that scalar
            return
    out.append(Term(node, sign, scale))


def _flatten_sum(ir: IR, sum_node: int, piece: int, sign: float, scale: list[tuple[int, int]],
                 out: list[Term]) -> None:
    """``sum`` is linear: ``sum(a + b - c)`` is ``sum(a) + sum(b) - sum(c)`` and ``sum(s * a)`` is
    ``s * sum(a)`` for a scalar constant s (no broadcasting: a sum over a broadcast operand counts
    it several times). Each piece that is not the whole argument gets its own ``sum`` node, so a
    pinball loss ``sum(0.5 * abs(r) + (q - 0.5) * r)`` splits into an l1 term and a linear one."""
    d = ir[piece]
    shape = d["shape"]
    if d["kind"] == "call" and "value" not in d:
        atom, a = d["atom"], d["args"]
        same = all(ir[x]["shape"] == shape for x in a)
        if atom in ("add", "sub") and same:
            _flatten_sum(ir, sum_node, a[0], sign, scale, out)
            _flatten_sum(ir, sum_node, a[1], -sign if atom == "sub" else sign, scale, out)
            return
        if atom == "neg":
            _flatten_sum(ir, sum_node, a[0], -sign, scale, out)
            return
        if atom in ("multiply", "divide"):
            const = [x for x in a if ir[x]["shape"] == () and ir[x]["curvature"] is Curvature.CONSTANT]
            if atom == "multiply" and const and ir[a[1] if const[0] == a[0] else a[0]]["shape"] == shape:
                other = a[1] if const[0] == a[0] else a[0]
                _flatten_sum(ir, sum_node, other, sign, scale + [(const[0], 1)], out)
                return
            if atom == "divide" and a[1] in const and ir[a[0]]["shape"] == shape:
                _flatten_sum(ir, sum_node, a[0], sign, scale + [(a[1], -1)], out)
                return
    out.append(Term(_sum_of(ir, sum_node, piece), sign, scale))


def _sum_of(ir: IR, sum_node: int, piece: int) -> int:
    """The node ``sum(piece)``: the spec's own sum node when piece is its whole argument, else one
    made once per piece (memoized in ``ir.meta``, so that splitting again reuses it)."""
    if ir[sum_node]["args"][0] == piece:
        return sum_node
    memo = ir.meta.setdefault("sum_pieces", {})
    reducer = ir[sum_node]["atom"]  # sum or mean: both are linear
    key = (reducer, piece)
    if key not in memo:
        p = ir[piece]
        memo[key] = ir.add("call", None, [piece], atom=reducer, kwargs={}, static={"axis": None}, tensor_kwargs={},
                           shape=(), curvature=p["curvature"], sign=p["sign"], dcp_reason=None,
                           display=f"{reducer}({ir.text(piece)})")
    return memo[key]


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


def _is_affine_expr(ir: IR, node: int) -> bool:
    return ir[node]["curvature"] is Curvature.AFFINE


def _classify(ir: IR, t: Term, barrier_as_prox: bool | str = False) -> OperatorTerm | None:
    """Role of one term; returns its operator block when it is an operator term.
    ``barrier_as_prox``: take the ``BARRIER_ATOMS`` that have a prox through it, and the
    ``LIPSCHITZ_SMOOTH_KERNELS`` of an affine expression that is not a bare variable, through their
    prox (PDHG); ``"domain"``: only the ``DOMAIN_PROX_KERNELS`` on a bare variable (FISTA)."""
    core = ir[t.core]
    if core["curvature"] is Curvature.CONSTANT:
        t.role, t.why = "constant", "does not depend on a variable"
        return None
    sep = separable_prox(ir, t.core)
    barrier = False
    if sep is not None and is_smooth(ir, sep.arg):
        if barrier_as_prox == "domain":
            barrier = sep.kernel in DOMAIN_PROX_KERNELS and ir[sep.arg]["kind"] == "var"
        elif barrier_as_prox:
            barrier = ir[sep.node].get("atom") in BARRIER_ATOMS and sep.kernel in BARRIER_KERNELS or \
                _is_lipschitz_block(ir, t, sep)
    if is_smooth(ir, t.core) and not barrier:
        t.role, t.why = "smooth", "differentiable: joins the smooth part (autograd)"
        if "rewritten_from" in core:
            t.why = f"rewritten to the smooth `{core['display']}`, " + t.why
        return None
    name = core.get("atom", "")
    atom = ATOMS.get(name)
    args = core.get("args", [])
    t.role = "refused"
    if atom is None or not args:
        t.why = f"`{ir.text(t.core)}` is nonsmooth and not a catalogue atom applied to an argument"
        return None
    if sep is None:
        return _classify_without_prox(ir, t, name, atom, args)
    t.prox = sep
    fn = "the deadzone max(|.| - a, 0)" if sep.kernel == "deadzone" else ir[sep.node]["atom"]
    what = f"sum of {fn} over the entries of" if sep.summed else f"{fn} of"
    flipped = Term(t.core, -t.sign, t.scale)
    if not _scale_sign_ok(ir, flipped if sep.negated else t):
        t.why = (f"the nonsmooth term {name} has a weight that is " + ("positive" if sep.negated else "negative") +
                 " or of unknown sign (its prox needs a " + ("nonpositive" if sep.negated else "nonnegative") +
                 " weight: the term would be nonconvex)")
        return None
    if any(ir[v]["curvature"] is not Curvature.CONSTANT for v in ir[sep.node].get("tensor_kwargs", {}).values()):
        t.why = f"a keyword argument of {ir[sep.node]['atom']} depends on a variable"
        return None
    arg = sep.arg
    if ir[arg]["kind"] == "var":
        t.role, t.var, t.kernel = "prox", arg, sep.kernel
        t.why = f"{what} the variable `{ir[arg]['name']}` has a closed-form prox ({sep.kernel})"
        if barrier:
            t.why += " (its domain excludes the start point: the prox keeps the iterates inside it)"
        return None
    if not _is_affine_expr(ir, arg):
        t.why = (f"{name} is nonsmooth and its argument `{ir.text(arg)}` is {ir[arg]['curvature'].value}, "
                 "not affine: no prox or linear-operator splitting applies")
        return None
    t.role, t.kernel = "operator", sep.kernel
    t.why = (f"PDHG block: {what} `{ir.text(arg)}`, a linear map of the variables: a dual block through the prox "
             f"of its conjugate ({sep.kernel}, Moreau)")
    if barrier and _is_lipschitz_block(ir, t, sep):
        t.why += (" (smooth but Lipschitz: in the smooth part its map's norm squared would set the primal step; "
                  "as a block the map is normalized)")
    return OperatorTerm("prox", t.core, expr=arg, term=t, kernel=sep.kernel, identity=False, why=t.why)


def _classify_without_prox(ir: IR, t: Term, name: str, atom, args: list[int]) -> OperatorTerm | None:
    """A nonsmooth term without a kernel of its own: an operator form (``OPERATOR_FORMS``) of a
    variable or an affine expression, or refused with the reason."""
    arg = args[0]
    if any(ir[v]["curvature"] is not Curvature.CONSTANT for v in ir[t.core].get("tensor_kwargs", {}).values()):
        t.why = f"a keyword argument of {name} depends on a variable"
        return None
    if len(args) > 1:
        t.why = f"{name} has {len(args)} tensor arguments; proxes are lowered for one-argument atoms only"
        return None
    if not _scale_sign_ok(ir, t):
        t.why = (f"the nonsmooth term {name} has a weight that is negative or of unknown sign (its prox needs a "
                 "nonnegative weight: the term would be nonconvex)")
        return None
    if not _is_affine_expr(ir, arg):
        t.why = (f"{name} is nonsmooth and its argument `{ir.text(arg)}` is {ir[arg]['curvature'].value}, "
                 "not affine: no prox or linear-operator splitting applies")
        return None
    if name not in OPERATOR_FORMS:
        t.why = f"{name} is nonsmooth and has no prox in the catalogue"
        return None
    t.role = "operator"
    if ir[arg]["kind"] == "var":
        t.why = (f"PDHG block: {name} of `{ir.text(arg)}` has no closed-form prox; it is {OPERATOR_FORMS[name]}: "
                 "a dual block of PDHG")
    else:
        t.why = (f"PDHG block: {name} of `{ir.text(arg)}` is {OPERATOR_FORMS[name]}, composed with a linear map of "
                 "the variables: a dual block of PDHG")
    return OperatorTerm("prox", t.core, expr=arg, term=t, kernel=None, form=name,
                        identity=ir[arg]["kind"] == "var", why=t.why)


def _constraint(ir: IR, c: int, projections: list[Projection], operators: list[OperatorTerm],
                refusals: list[tuple[str, int]]) -> bool:
    """Route one constraint; returns True when it is an operator constraint (not a projection)."""
    d = ir[c]
    lhs = d["args"][0]
    text = ir.text(c)
    if d["op"] == "in":
        set_node = d["args"][1]
        entry = SETS[ir[set_node]["set"]]
        if ir[lhs]["kind"] == "var":
            projections.append(Projection(lhs, set_node, c, entry.projection))
            return False
        if ir[lhs]["curvature"] is Curvature.CONSTANT:
            return False
        if not _is_affine_expr(ir, lhs):
            refusals.append((f"the constraint `{text}` constrains `{ir.text(lhs)}`, which is not affine", c))
        elif not entry.convex:
            refusals.append((f"the constraint `{text}` puts a linear map of the variables in the nonconvex set "
                             f"{entry.name}; projections onto nonconvex sets apply to variables only", c))
        elif entry.projection is None:
            refusals.append((f"the set {entry.name} has no projection kernel", c))
        else:
            operators.append(OperatorTerm("set", c, expr=lhs, kernel=entry.projection, set_node=set_node,
                                          why=f"`{ir.text(lhs)}` in {entry.name}: indicator of the set composed "
                                              "with a linear map (dual block, projection by Moreau)"))
        return True
    rhs = d["args"][1]
    if ir[lhs]["curvature"] is Curvature.CONSTANT and ir[rhs]["curvature"] is Curvature.CONSTANT:
        return False
    if not (ir[lhs]["curvature"].is_affine and ir[rhs]["curvature"].is_affine):
        level = _sublevel(ir, c)
        if level is not None:
            return _sublevel_route(ir, c, level, projections, operators)
    if not (_is_affine_expr(ir, lhs) or ir[lhs]["curvature"] is Curvature.CONSTANT) or \
            not (_is_affine_expr(ir, rhs) or ir[rhs]["curvature"] is Curvature.CONSTANT):
        bad = lhs if not ir[lhs]["curvature"].is_affine else rhs
        refusals.append((f"the constraint `{text}` has the nonlinear side `{ir.text(bad)}`; the torch backend "
                         "takes affine constraints and `x in SET` (e.g. `x in l2_ball(1)` for norm2(x) <= 1)", c))
        return True
    if d["op"] == "==":
        operators.append(OperatorTerm("equality", c, sides=(lhs, rhs),
                                      why=f"`{text}`: indicator of {{0}} of lhs - rhs (dual block)"))
    elif d["op"] == "<=":
        operators.append(OperatorTerm("nonpos", c, sides=(lhs, rhs),
                                      why=f"`{text}`: indicator of lhs - rhs <= 0 (dual block)"))
    else:
        operators.append(OperatorTerm("nonpos", c, sides=(rhs, lhs),
                                      why=f"`{text}`: indicator of rhs - lhs <= 0 (dual block)"))
    return True


def _is_barrier(ir: IR, core: int) -> bool:
    sep = separable_prox(ir, core)
    return sep is not None and ir[sep.node].get("atom") in BARRIER_ATOMS and sep.kernel in BARRIER_KERNELS


def _is_lipschitz_block(ir: IR, t: Term, sep: SeparableProx | None) -> bool:
    """A ``LIPSCHITZ_SMOOTH_KERNELS`` atom of an affine expression that is not a bare variable, with a
    weight known to be >= 0: PDHG takes it as a dual block (see the table). A weight of unknown sign
    keeps it smooth (a prox needs a convex term)."""
    return sep is not None and sep.kernel in LIPSCHITZ_SMOOTH_KERNELS and not sep.negated and \
        ir[sep.arg]["kind"] != "var" and _is_affine_expr(ir, sep.arg) and _scale_sign_ok(ir, t)


def _sublevel(ir: IR, c: int):
    """The recognized sublevel set of constraint ``c`` (memoized: its set node is made once)."""
    memo = ir.meta.setdefault("sublevel", {})
    if c not in memo:
        memo[c] = sublevel_set(ir, c)
    return memo[c]


def _sublevel_route(ir: IR, c: int, level, projections: list[Projection], operators: list[OperatorTerm]) -> bool:
    """``norm(e) <= r`` as the projection onto the ball (e a variable) or a dual block with the ball's
    projection (e affine); ``norm2(e) <= t`` as a dual block with the second-order cone's projection."""
    entry = SETS[ir[level.set_node]["set"]]
    if level.bound is not None:
        operators.append(OperatorTerm("set", c, sides=(level.arg, level.bound), kernel=entry.projection,
                                      set_node=level.set_node, form="soc_stack",
                                      why=f"`{level.text}`: [{ir.text(level.arg)}; {ir.text(level.bound)}] in the "
                                          "second-order cone (its projection, dual block by Moreau)"))
        return True
    if ir[level.arg]["kind"] == "var":
        projections.append(Projection(level.arg, level.set_node, c, entry.projection))
        return False
    operators.append(OperatorTerm("set", c, expr=level.arg, kernel=entry.projection, set_node=level.set_node,
                                  why=f"`{level.text}`: `{ir.text(level.arg)}` in {entry.name}"
                                      f"({ir[level.set_node]['static'].get('r', '')}), a linear map of the variables "
                                      "(dual block, projection by Moreau)"))
    return True


def split_terms(ir: IR) -> IR:
    if "smooth_forms" not in ir.meta:
        ir.meta["smooth_forms"] = rewrite_smooth_forms(ir)
    obj = ir.objective()
    terms: list[Term] = []
    flip = -1.0 if ir[obj]["sense"] == "maximize" else 1.0  # first-order methods minimize
    _flatten(ir, ir[obj]["args"][0], flip, [], terms)
    for r in ir.nodes_of("regularize"):
        _flatten(ir, ir[r]["args"][0], 1.0, [], terms)

    split = _split(ir, terms, barrier_as_prox="domain")
    if split.algorithm == "pdhg" and any(_is_barrier(ir, t.core) or _is_lipschitz_block(ir, t, separable_prox(ir, t.core))
                                         for t in split.smooth):
        # PDHG needs a global Lipschitz constant of the smooth part: redo with barriers as proxes, and
        # Lipschitz atoms of linear maps as dual blocks
        for t in terms:
            t.role, t.var, t.kernel, t.why = "", None, None, ""
        split = _split(ir, terms, barrier_as_prox=True)
    _refuse_atoms_without(ir, split, "torch")
    _entropic_ot(ir, split)
    _conic_fallback(ir, split)
    ir.meta["split"] = split
    for t in terms:
        ir[t.core]["role"] = t.role
    return ir


SINKHORN_WHY = ("entropic optimal transport: <C, P> - eps * entropy(P) over P in transport(a, b), solved by "
                "log-domain Sinkhorn on its dual, certified by the duality gap of the plan rounded onto U(a, b)")


def _entropic_ot(ir: IR, split: Split) -> None:
    """``minimize <C, P> - eps * entropy(P)`` (plus constants) with ``P in transport(a, b)`` and
    nothing else: the entropic OT path (``backends/torch/sinkhorn.py``), exact where PDHG on the
    same problem converges slowly (a barrier term on a polytope)."""
    variables = ir.nodes_of("var")
    if split.refusals or len(variables) != 1 or len(ir[variables[0]]["shape"]) != 2:
        return
    var = variables[0]
    marginals = None
    if not split.operator_constraints and len(split.projections) == 1 and \
            ir[split.projections[0].set_node]["set"] == "transport":
        pass
    elif all(ir[p.set_node]["set"] == "nonneg" for p in split.projections):
        marginals = _marginal_constraints(ir, split.operator_constraints, var)
        if marginals is None:
            return
    else:
        return
    entropic = [t for t in split.terms if t.prox is not None and t.prox.kernel == "neg_entropy" and t.prox.arg == var]
    others = [t for t in split.terms if t not in entropic]
    if len(entropic) != 1 or any(not ir[t.core]["curvature"].is_affine for t in others):
        return
    if any(t.role not in ("smooth", "constant") for t in others):
        return
    term = entropic[0]
    term.role, term.var, term.kernel = "prox", var, "neg_entropy"
    term.why = "entropic OT: eps * sum P log P, handled exactly by Sinkhorn's scaling of exp(-C/eps)"
    for t in others:
        if t.role == "smooth":
            t.why = "entropic OT: affine in P, the cost matrix C (its gradient)"
    split.algorithm, split.why_algorithm = "sinkhorn", SINKHORN_WHY
    split.marginals = marginals
    split.reasons, split.operators, split.g_prox, split.g_projections = [], [], [], []


def _marginal_constraints(ir: IR, constraints: list[int], var: int) -> tuple[int, int] | None:
    """(a, b) when the constraints are exactly ``sum(P, axis = 1) == a`` and ``sum(P, axis = 0) == b``
    (either side) with constant a, b of the sums' own shapes: the transport marginals written as
    equalities (a broadcast one, P of 1 row with `sum(P, axis = 1) == a` of 8 entries, is not)."""
    found: dict[int, int] = {}
    for c in constraints:
        d = ir[c]
        if d["op"] != "==":
            return None
        for lhs, rhs in (d["args"], d["args"][::-1]):
            e = ir[lhs]
            if e["kind"] == "call" and e.get("atom") == "sum" and e["args"] == [var] and \
                    e.get("static", {}).get("axis") in (0, 1) and ir[rhs]["curvature"] is Curvature.CONSTANT and \
                    tuple(ir[rhs].get("shape", ())) == tuple(e.get("shape", ())):  # not broadcast: (1,) == a
                axis = e["static"]["axis"]
                if axis in found:
                    return None
                found[axis] = rhs
                break
        else:
            return None
    return (found[1], found[0]) if set(found) == {0, 1} else None


def _refuse_atoms_without(ir: IR, split: Split, backend: str) -> None:
    """A problem with such a call has no lowering to ``backend``: refused there, with the reason,
    instead of failing when the lowered graph first runs."""
    from regspec.compiler.passes.curvature import unlowerable_calls

    for why, n in unlowerable_calls(ir, backend):
        split.refusals.append((why, n))
        split.algorithm = "none"


def _conic_fallback(ir: IR, split: Split) -> None:
    """A DCP problem that no fast path takes goes to the conic fallback (``backends/torch/conic``):
    CVXPY's canonical form solved by restarted PDHG in torch. ``refusals`` keeps why the fast paths
    do not apply; a problem not proved convex stays refused."""
    from regspec.compiler.passes.curvature import cvxpy_refusals

    if split.algorithm != "none" or cvxpy_refusals(ir):
        return
    split.algorithm = "conic"
    split.why_algorithm = (CONIC_WHY + " (no fast path: " + "; ".join(w for w, _ in split.refusals) + ")")


CONIC_WHY = ("conic fallback: the problem is DCP; CVXPY canonicalises it to min c^T x s.t. b - A x in K "
             "(zero, nonnegative, second-order, PSD, exponential cones), solved in torch by restarted, "
             "preconditioned PDHG")


def _split(ir: IR, terms: list[Term], barrier_as_prox: bool) -> Split:
    reasons: list[tuple[str, int]] = []
    refusals: list[tuple[str, int]] = []
    operators: list[OperatorTerm] = []
    for t in terms:
        op = _classify(ir, t, barrier_as_prox)
        if op is not None:
            operators.append(op)
            reasons.append((t.why, t.core))
        elif t.role == "refused":
            refusals.append((t.why, t.core))
        elif t.role == "prox" and barrier_as_prox and ir[t.core]["atom"] in BARRIER_ATOMS:
            t.why += " (a barrier: through its prox, not the smooth part, since PDHG needs a global L)"

    projections: list[Projection] = []
    operator_constraints: list[int] = []
    for v in ir.nodes_of("var"):
        dom = ir[v].get("domain")
        if dom is not None:
            projections.append(Projection(v, dom, v, SETS[ir[dom]["set"]].projection))
    for c in ir.nodes_of("constraint"):
        n_ops = len(operators)
        if _constraint(ir, c, projections, operators, refusals):
            operator_constraints.append(c)
            if len(operators) > n_ops:
                reasons.append((f"the constraint `{ir.text(c)}` couples variables through a linear map", c))

    for p in projections:
        if p.kernel is None:
            refusals.append((f"the set {ir[p.set_node]['set']} has no projection kernel", p.source))

    # Each variable may carry one nonsmooth piece (a prox term or a projection), or a known pair.
    # For PDHG the extra pieces become dual blocks with K = identity; projections stay in g first
    # (the iterates then stay in the set).
    by_var: dict[int, list] = {}
    for t in terms:
        if t.role == "prox":
            by_var.setdefault(t.var, []).append(t)
    for p in projections:
        by_var.setdefault(p.var, []).append(p)
    g_prox: list[Term] = []
    g_proj: list[Projection] = []
    for v, items in by_var.items():
        if len(items) > 1 or any(isinstance(i, Projection) and ir[i.set_node]["set"] in DECOMPOSED_SETS
                                 for i in items):
            # an iteratively projected set splits into a cheap projection plus a dual block (also
            # alone: Dykstra's transport projection stops on an absolute rule that misses the
            # marginals of a 200 x 200 plan by 100%, and FISTA's certificate trusts its prox)
            for k, i in enumerate(items):
                if isinstance(i, Projection) and ir[i.set_node]["set"] in DECOMPOSED_SETS:
                    proj_kernel, form = DECOMPOSED_SETS[ir[i.set_node]["set"]]
                    items[k] = Projection(v, i.set_node, i.source, proj_kernel, hyper={})
                    operators.append(OperatorTerm(
                        "equality", i.source, expr=v, form=form, set_node=i.set_node, identity=True,
                        why=f"`{ir[v]['name']}` in {ir[i.set_node]['set']}: {proj_kernel} projection in g and "
                            f"the linear equalities ({form}) as a dual block"))
                    reasons.append((f"`{ir[v]['name']}` in {ir[i.set_node]['set']} has no cheap exact projection "
                                    "together with other pieces", i.source))
        kinds = tuple((i.kernel if isinstance(i, Term) else i.kernel) or "?" for i in
                      sorted(items, key=lambda i: isinstance(i, Projection)))
        if len(items) <= 1 or (len(items) == 2 and kinds in COMBINED):
            g_prox += [i for i in items if isinstance(i, Term)]
            g_proj += [i for i in items if isinstance(i, Projection)]
            continue
        reasons.append((f"the variable `{ir[v]['name']}` has {len(items)} nonsmooth pieces "
                        f"({', '.join(map(str, kinds))}) with no closed-form joint prox", v))
        keep = next((i for i in items if isinstance(i, Projection)), items[0])
        for i in items:
            if i is keep:
                (g_proj if isinstance(i, Projection) else g_prox).append(i)
            elif isinstance(i, Term):
                i.role = "operator"
                operators.append(OperatorTerm("prox", i.core, expr=v, term=i, kernel=i.kernel, identity=True,
                                              why=f"second nonsmooth piece on `{ir[v]['name']}`: a dual block "
                                                  "with K = identity"))
            else:
                s = ir[i.set_node]
                if not SETS[s["set"]].convex:
                    refusals.append((f"`{ir[v]['name']}` in the nonconvex set {s['set']} together with other "
                                     "nonsmooth pieces: no splitting is exact", i.source))
                operators.append(OperatorTerm("set", i.source, expr=v, kernel=i.kernel, set_node=i.set_node,
                                              identity=True,
                                              why=f"second set on `{ir[v]['name']}`: a dual block with K = identity"))

    if refusals:
        algorithm = "none"
        why = "refused: " + "; ".join(w for w, _ in refusals)
    elif not reasons:
        algorithm = "fista"
        why = ("smooth part plus separable prox/projection pieces, one per variable: FISTA with backtracking "
               "(prox-gradient residual certificate)")
    else:
        algorithm = "pdhg"
        has_smooth = any(t.role == "smooth" for t in terms)
        why = (("Condat-Vu" if has_smooth else "Chambolle-Pock") + " PDHG: " +
               "; ".join(w for w, _ in reasons) +
               ". Steps from ||K|| (closed forms, Lanczos)" + (" and L of the smooth part" if has_smooth else ""))
    return Split(terms, projections, operator_constraints, algorithm, reasons, operators,
                 g_proj if algorithm == "pdhg" else [], g_prox if algorithm == "pdhg" else [], refusals, why)


def _constraint_paths(ir: IR, split: Split) -> list[str]:
    """One line per constraint not shown as a projection above: the path it takes (a PDHG dual
    block, the conic form, or the refusal that names it)."""
    shown = {p.source for p in split.projections + split.g_projections}
    blocks = {op.source: op for op in split.operators}
    refused = {node: why for why, node in split.refusals}
    lines = []
    for c in ir.nodes_of("constraint"):
        if c in shown and split.algorithm != "conic":
            continue
        if split.algorithm == "conic":
            how = "in the conic form (CVXPY's canonicalisation)"
        elif split.algorithm == "sinkhorn":
            how = "Sinkhorn: a marginal of the transport plan, met by its scaling steps (checked on the rounded plan)"
        elif c in blocks:
            op = blocks[c]
            f = (f"indicator of {ir[op.set_node]['set']} (projection {op.kernel})" if op.kind == "set" else
                 "indicator of {0}" if op.kind == "equality" else "indicator of z <= 0")
            how = f"PDHG block: f = {f}"
        elif c in refused:
            how = f"refused: {refused[c]}"
        else:
            continue
        lines.append(f"  subject to {ir.text(c)}: {how}")
    return lines


def explain_lines(ir: IR, split: Split) -> list[str]:
    """How the torch backend lowers the problem, in words (``regspec explain``): the algorithm and
    why, each term's role, the pieces of g, the dual blocks of PDHG, and the step-size rule."""
    lines = [f"torch: algorithm {split.algorithm}: {split.why_algorithm}"]
    for t in split.terms:
        scale = " * ".join(ir.text(s) + ("" if e > 0 else "^-1") for s, e in t.scale)
        sign = "-" if t.sign < 0 else "+"
        how = "in the conic form (CVXPY's canonicalisation)" if split.algorithm == "conic" else f"{t.role}: {t.why}"
        lines.append(f"  {sign} {scale + ' * ' if scale else ''}{ir.text(t.core)}: {how}")
    projections = {"pdhg": split.g_projections, "conic": []}.get(split.algorithm, split.projections)
    for p in projections:
        lines.append(f"  {ir[p.var]['name']} in {ir[p.set_node]['set']}: projection ({p.kernel})")
    lines += _constraint_paths(ir, split)
    if split.algorithm == "pdhg":
        smooth = [ir.text(t.core) for t in split.smooth]
        lines.append("  smooth part s: " + (" + ".join(smooth) if smooth else "none") +
                     (" (autograd; Condat-Vu forward step)" if smooth else ""))
        g = [f"{ir.text(t.core)} ({t.kernel})" for t in split.g_prox] + \
            [f"{ir[p.var]['name']} in {ir[p.set_node]['set']} ({p.kernel}" +
             (" part)" if p.hyper is not None else ")") for p in split.g_projections]
        joint = []
        for t in split.g_prox:
            for p in split.g_projections:
                rule = COMBINED.get((t.kernel, p.kernel)) if p.var == t.var else None
                if rule is not None:
                    how = rule if isinstance(rule, str) else f"{t.kernel} after the {p.kernel} projection"
                    joint.append(f"`{ir[t.var]['name']}`: {how}")
        lines.append("  g (prox per variable): " + (", ".join(g) if g else "none") +
                     (f"; joint prox {', '.join(joint)}" if joint else ""))
        for op in split.operators:
            if op.kind == "prox":
                f = f"{ir[op.source]['atom']} ({'operator form: ' + op.form if op.form else op.kernel})"
                k = f"the linear part of `{ir.text(op.expr)}`" + (" composed with the form's D" if op.form else "")
            elif op.kind == "set":
                f = f"indicator of {ir[op.set_node]['set']} (projection {op.kernel})"
                k = (f"the linear part of `{ir.text(op.expr)}`" if op.expr is not None else
                     f"the linear part of [{ir.text(op.sides[0])}; {ir.text(op.sides[1])}]")
            elif op.kind == "equality" and op.form is not None:
                f = "indicator of the target values"
                k = f"{op.form} of `{ir[op.expr]['name']}`"
            else:
                f = "indicator of {0}" if op.kind == "equality" else "indicator of z <= 0"
                k = f"the linear part of lhs - rhs of `{ir.text(op.source)}`"
            lines.append(f"  dual block: K = {k}; f = {f}; prox of f* by Moreau")
        lines.append("  steps: each block scaled to unit norm (closed form where known, else Lanczos), ||K|| of the "
                     "stack by Lanczos (at most sqrt(#blocks)), L of s by Hessian power iteration; "
                     "tau (L/2 + sigma ||K||^2) < 1; restarted averaged PDHG, stop when the primal and dual "
                     "residuals, the objective error and the duality gap are <= tol (relative)")
    elif split.algorithm == "fista":
        lines.append("  steps: FISTA with backtracking on the smooth part, restarts; stop when the "
                     "prox-gradient residual ||x - prox(x - t grad)||/t <= tol max(1, ||grad||)")
        from regspec.compiler.passes.working_sets import working_set_lines

        lines.extend(working_set_lines(ir, split))
    elif split.algorithm == "sinkhorn":
        lines.append("  steps: log-domain Sinkhorn (alternating exact dual maximizations with log-sum-exp); every "
                     "10 iterations the plan is rounded onto U(a, b) and the duality gap checked; optimal when "
                     "gap <= tol x the size of the objective's terms and the marginals are within tol")
    elif split.algorithm == "conic":
        lines.append("  steps: Ruiz + Pock-Chambolle scaling (one factor per cone block), PDLP's adaptive steps, "
                     "restarts on the weighted KKT error, primal weight updates; stop when the relative primal "
                     "and dual residuals and the duality gap are <= tol; infeasible/unbounded from certificate rays")
    for why, _ in split.refusals:
        lines.append(f"  {'no fast path' if split.algorithm == 'conic' else 'refused'}: {why}")
    return lines
