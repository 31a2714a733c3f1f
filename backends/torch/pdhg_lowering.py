"""Operator terms of the torch backend: IR -> linear operators and conjugate proxes for PDHG.

A problem the split pass marks ``pdhg`` is

    minimize  s(x) + g(x) + sum_k f_k(K_k x + c_k)

with ``s`` the smooth part (an fx GraphModule, autograd), ``g`` the separable prox and projection
pieces bound to variables (``ProxStep``, the same kernels FISTA and training use), and one dual
block per operator term (``OperatorTerm`` of the split):

- ``w * atom(A(x))`` with ``A(x)`` affine: ``K x + c = D(A(x))`` where ``D`` is the identity or,
  for the atoms of ``FORMS`` (sum_of_norms, tv), a fixed linear map, and ``f = w * h(. )`` with
  ``h`` the atom's prox kernel (or the form's outer kernel: group l2 of pair differences, l1 of
  finite differences);
- ``lhs == rhs``: ``f`` = indicator of ``{0}`` of ``lhs - rhs``;
- ``lhs <= rhs``: ``f`` = indicator of the nonpositive orthant of ``lhs - rhs``;
- ``A(x) in SET``: ``f`` = indicator of the set, whose prox is the set's projection kernel.

Affine extraction. The affine expression A(x) is emitted into its own fx GraphModule whose
inputs are the variables it reads (placeholders ``var{i}_NAME``; data, constants and parameters are
buffers of the program module). Its value at zero is the offset; ``A(x) - A(0)`` is the linear
part, and its adjoint is the vector-Jacobian product of that linear map, computed by
``torch.func.vjp`` once at ``x = 0`` (the map is linear, so its vjp does not depend on the
point). Both are then traced by ``make_fx`` into straight-line aten graphs (dead code removed),
so an iteration pays neither the autograd engine nor module-call overhead. Every affine atom of
the catalogue works without a hand-written adjoint; forms may supply D^T, ||D|| and a one-pass
``y + alpha D x`` (the sparse pair incidence does). A bare variable needs no graph at all.

Conjugate proxes. With ``f(z) = w h(z + c)``: ``prox_{t f}(v) = prox_{t w h}(v + c) - c`` (a kernel
call), and ``prox_{sigma f*}(y) = y - sigma prox_{f / sigma}(y / sigma)`` (Moreau's identity,
``solvers.conj_prox_from_prox``). For l1 and row-group l2 (the TV and fusion norms) the same map
is the projection of ``y + sigma c`` onto the scaled dual ball (a clamp, a row rescaling), done in
place. Equalities: ``prox_{sigma f*}(y) = y + sigma c``; ``lhs <= rhs``: ``max(y + sigma c, 0)``.

Scaling. Each block is normalized to unit operator norm before PDHG runs: ``K_k -> a K_k`` and
``f_k -> f_k(. / a)`` with ``a = 1 / ||K_k||``, the same problem. Blocks of very different norms
(row sums with norm sqrt(m), pair differences with norm sqrt(class size)) then get comparable
dual steps, a block-diagonal form of Pock and Chambolle's preconditioning. ``||K_k||`` is exact
where known in closed form (a bare variable: 1; pair incidence: Lanczos on the pair graph's
Laplacian; 1-D differences: 2; 2-D gradient: sqrt(8); transport marginals: sqrt(m + n)), else
power iteration inflated by 1%. The scale is applied on the primal side (cheaper on fusion
problems) and, for norms and indicators, folded into c and w.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
from torch import Tensor

from regspec.backends.torch.tracing import LazyGraph, linear_adjoint
from regspec.compiler.catalogue import ATOMS, SETS
from regspec.compiler.evaluate import evaluate
from regspec.compiler.ir import IR
from regspec.compiler.passes.split import OperatorTerm, Split, Term
from regspec.diagnostics import Diagnostic, RegspecError

__all__ = ["FORMS", "SET_FORMS", "LoweredOperator", "lower_operators", "build_block", "Block", "scaled",
           "violation", "block_name", "block_check", "pdhg_report", "PdhgReport"]


# ------------------------------------------------------------------------------------------------
# operator forms: f(X) = g(D X) for atoms without a closed-form prox
# ------------------------------------------------------------------------------------------------


@dataclass
class Form:
    """``atom(X) = g(D X)``: ``pre`` computes D X in torch (linear), ``kernel``/``hyper`` give g's
    prox, ``text`` says what D is (for explain)."""

    pre: Callable[[Tensor], Tensor]
    kernel: str
    hyper: dict[str, Any]
    text: str
    adjoint: Callable[[Tensor], Tensor] | None = None   # D^T when written by hand (else autograd)
    norm: float | None = None                           # an upper bound on ||D|| when known
    # (y, x, alpha, out) -> y + alpha D x (alpha D x when y is None), into out when given
    axpy: Callable[[Tensor | None, Tensor, float, Tensor | None], Tensor] | None = None


def _weights(value: Any, count: int, like_dtype: torch.dtype, device: torch.device) -> Tensor:
    if value is None:
        return torch.ones(count, dtype=like_dtype, device=device)
    w = torch.as_tensor(np.asarray(value, dtype=float), dtype=like_dtype, device=device)
    return w.expand(count).clone() if w.dim() == 0 else w.reshape(count)


def _form_sum_of_norms(kw: dict[str, Any], shape: tuple[int, ...], dtype: torch.dtype,
                       device: torch.device) -> Form:
    """sum_p w_p ||X[i_p] - X[j_p]||: D X = X[I] - X[J] (the pair incidence B applied to the rows),
    g = row-group l2 with weights w (l1 with weights w for a vector X)."""
    pairs = np.asarray(kw["pairs"], dtype=np.int64).reshape(-1, 2)
    w = _weights(kw.get("w"), len(pairs), dtype, device)
    # B and B^T as sparse CSR matrices (2 nonzeros per row of B): one sparse-dense product each
    # way, much cheaper than gathers and scatter-adds (index_add), which also scale badly with
    # threads on a loaded CPU.
    B, Bt = _incidence(pairs, shape[0], dtype, device)
    norm = _incidence_norm(pairs, shape[0])
    if len(shape) == 1:
        return Form(lambda x: (B @ x.unsqueeze(1)).squeeze(1), "l1", {"weight": w},
                    f"B x, B the {len(pairs)} x {shape[0]} pair incidence",
                    adjoint=lambda y: (Bt @ y.unsqueeze(1)).squeeze(1), norm=norm)
    return Form(lambda x: B @ x, "group_l2", {"groups": "rows", "weights": w},
                f"B X, B the {len(pairs)} x {shape[0]} pair incidence (rows of X)", adjoint=lambda y: Bt @ y,
                norm=norm, axpy=_sparse_axpy(B))


def _sparse_axpy(B: Tensor) -> Callable[[Tensor | None, Tensor, float, Tensor | None], Tensor]:
    """(y, x, alpha, out) -> y + alpha B x (alpha B x when y is None), into out if given: a sparse
    product written into the buffer (addmm with beta = 0, which ignores the buffer's contents) and
    one in-place add of y (measured: faster than addmm with beta = 1, which makes an extra pass)."""
    def axpy(y: Tensor | None, x: Tensor, alpha: float, out: Tensor | None) -> Tensor:
        if out is None:
            out = torch.empty((B.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        torch.addmm(out, B, x, beta=0.0, alpha=alpha, out=out)
        return out if y is None else out.add_(y)

    return axpy


def _incidence_norm(pairs: np.ndarray, rows: int) -> float:
    """||B|| = sqrt(lambda_max(B^T B)), B^T B the graph Laplacian of the pairs (rows x rows; B acts
    on the rows of X, so ||B (x) I|| = ||B||), by Lanczos (ARPACK) to 1e-10, padded by 1e-6
    relative; the Gershgorin bound 2 max degree if ARPACK does not converge."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    if len(pairs) == 0:
        return 0.0
    deg = np.bincount(pairs.reshape(-1), minlength=rows).astype(float)
    bound = math.sqrt(2.0 * deg.max())
    count = len(pairs)
    B = sp.csr_matrix((np.r_[np.ones(count), -np.ones(count)], (np.r_[np.arange(count), np.arange(count)],
                                                                  np.r_[pairs[:, 0], pairs[:, 1]])),
                      shape=(count, rows))
    L = (B.T @ B).tocsr()
    try:
        if rows <= 64:
            lam = float(np.linalg.eigvalsh(L.toarray())[-1])
        else:
            lam = float(eigsh(L, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0])
    except (ArpackNoConvergence, ValueError):
        return bound
    return min(bound, math.sqrt(max(lam, 0.0)) * (1.0 + 1e-6))


def _incidence(pairs: np.ndarray, rows: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """The pair incidence B (P x rows, (B X)_p = X_i - X_j) and B^T, as sparse CSR tensors."""
    import warnings

    count = len(pairs)
    r = np.concatenate([np.arange(count), np.arange(count)])
    cidx = np.concatenate([pairs[:, 0], pairs[:, 1]])
    vals = np.concatenate([np.ones(count), -np.ones(count)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.as_tensor(np.stack([r, cidx])), torch.as_tensor(vals, dtype=dtype),
                                      (count, rows), device=device).coalesce()
        B = coo.to_sparse_csr()
        Bt = coo.t().coalesce().to_sparse_csr()
    return B, Bt


def _form_tv(kw: dict[str, Any], shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Form:
    """1-D: D x = x[1:] - x[:-1], g = weighted l1. 2-D iso (CVXPY's tv): per pixel of the
    (m-1) x (n-1) grid the pair (dx, dy) = (U[1:, :-1] - U[:-1, :-1], U[:-1, 1:] - U[:-1, :-1]),
    g = row-group l2 (one group per pixel) with weights w[:-1, :-1]. 2-D aniso: all vertical and
    horizontal forward differences, g = weighted l1 with weights w[:-1, :] and w[:, :-1]."""
    w = kw.get("w")
    if len(shape) == 1:
        n = shape[0]
        weight = _weights(w, n - 1, dtype, device)
        return Form(lambda x: x[1:] - x[:-1], "l1", {"weight": weight}, f"forward differences ({n - 1} x {n})",
                    norm=2.0)  # ||D||^2 <= 4 (Gershgorin on D^T D)
    m, n = shape
    wt = torch.ones(shape, dtype=dtype, device=device) if w is None else \
        torch.as_tensor(np.asarray(w, dtype=float), dtype=dtype, device=device).expand(shape)
    if kw.get("mode", "iso") == "iso":
        def pre_iso(u: Tensor) -> Tensor:
            dx = u[1:, :-1] - u[:-1, :-1]
            dy = u[:-1, 1:] - u[:-1, :-1]
            return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)

        return Form(pre_iso, "group_l2", {"groups": "rows", "weights": wt[:-1, :-1].reshape(-1).clone()},
                    f"image gradient on the {m - 1} x {n - 1} grid (isotropic)", norm=math.sqrt(8.0))

    def pre_aniso(u: Tensor) -> Tensor:
        return torch.cat([(u[1:, :] - u[:-1, :]).reshape(-1), (u[:, 1:] - u[:, :-1]).reshape(-1)])

    weight = torch.cat([wt[:-1, :].reshape(-1), wt[:, :-1].reshape(-1)])
    return Form(pre_aniso, "l1", {"weight": weight}, f"vertical and horizontal differences of the {m} x {n} image",
                norm=math.sqrt(8.0))  # ||grad||^2 <= 8 on a 2-D grid


FORMS: dict[str, Callable[[dict[str, Any], tuple[int, ...], torch.dtype, torch.device], Form]] = {
    "sum_of_norms": _form_sum_of_norms,
    "tv": _form_tv,
}


def _transport_marginals(static: dict[str, Any], shape: tuple[int, ...], dtype: torch.dtype,
                         device: torch.device) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """transport(a, b) less its P >= 0 part: D P = [P 1; P^T 1] = [a; b] (one dual block; the
    system has one redundant equation when sum a = sum b, which PDHG does not mind). Returns
    (D, target, D^T), D^T [u; v] = u 1^T + 1 v^T."""
    m, n = shape
    a = torch.as_tensor(np.broadcast_to(np.asarray(static["a"], dtype=float), (m,)).copy(), dtype=dtype, device=device)
    b = torch.as_tensor(np.broadcast_to(np.asarray(static["b"], dtype=float), (n,)).copy(), dtype=dtype, device=device)
    # ||D||^2 = m + n, attained at P = 1 1^T
    return (lambda P: torch.cat([P.sum(dim=1), P.sum(dim=0)])), torch.cat([a, b]), \
        (lambda y: y[:m].unsqueeze(1) + y[m:].unsqueeze(0)), math.sqrt(m + n)


# Sets split into a projection in g and linear equalities D x = t (split.DECOMPOSED_SETS): the
# builder returns (D, t) from the set's static keywords and the variable's shape.
SET_FORMS: dict[str, Callable[..., tuple[Callable[[Tensor], Tensor], Tensor, Callable[[Tensor], Tensor]]]] = {
    "transport_marginals": _transport_marginals,
}


# ------------------------------------------------------------------------------------------------
# lowering: one fx GraphModule per affine expression
# ------------------------------------------------------------------------------------------------


@dataclass
class LoweredOperator:
    """One dual block, lowered: ``expr`` maps the variables ``var_names`` (positional inputs, in
    program order) to the affine expression ``A(x)``; the block is ``f(D(A(x)))``."""

    op: OperatorTerm
    expr: fx.GraphModule
    var_names: list[str]
    shape: tuple[int, ...]
    kind: str                       # prox | equality | nonpos | set
    kernel: str | None              # prox kernel of h (prox kind, no form) or projection kernel (set)
    negated: bool = False           # the kernel is the prox of -atom (weights w <= 0)
    form: str | None = None
    text: str = ""                  # what K and f are, for explain

    @property
    def source(self) -> int:
        return self.op.source


def _emitter_class():
    from regspec.backends.torch.lower import _GraphEmitter

    class AffineEmitter(_GraphEmitter):
        """Emits an expression with the variables as graph inputs (placeholders), so that the
        resulting GraphModule is a plain function of them: ``expr(var_P, var_Q) -> Tensor``."""

        def __init__(self, root, ir, dtype, device, var_names: list[str]):
            super().__init__(root, ir, dtype, device)
            # indexed names: fx snake-cases placeholders, so var_X and var_x would collide
            self.inputs = {name: self.graph.placeholder(f"var{i}_{name}") for i, name in enumerate(var_names)}

        def emit(self, node: int) -> Any:
            d = self.ir[node]
            if d["kind"] == "var":
                return self.inputs[d["name"]]
            return super().emit(node)

    return AffineEmitter


def soc_stack(e: Tensor, t: Tensor) -> Tensor:
    """[vec(e); t] for the second-order cone block of ``norm2(e) <= t`` (t a scalar)."""
    return torch.cat([e.reshape(-1), t.reshape(1).to(e.dtype) if isinstance(t, Tensor) else
                      torch.tensor([float(t)], dtype=e.dtype, device=e.device)])


def _vars_of(ir: IR, nodes: list[int], order: list[str]) -> list[str]:
    names = set()
    for n in nodes:
        for a in ir.ancestors(n) | {n}:
            if ir[a]["kind"] == "var":
                names.add(ir[a]["name"])
    return [v for v in order if v in names]


def _fail(ir: IR, node: int, message: str) -> RegspecError:
    from regspec.hints import refusal_hint

    return RegspecError([Diagnostic(message, ir[node]["span"], notes=[refusal_hint(ir, "torch", message)])])


def lower_operators(ir: IR, split: Split, root: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                    var_order: list[str]) -> list[LoweredOperator]:
    """Emit one GraphModule per operator term (the affine expression it composes with)."""
    from regspec.backends.torch.prox import KERNELS

    Emitter = _emitter_class()
    out: list[LoweredOperator] = []
    for op in split.operators:
        nodes = [op.expr] if op.expr is not None else list(op.sides)
        names = _vars_of(ir, nodes, var_order)
        em = Emitter(root, ir, dtype, device, names)
        if op.expr is not None:
            value = em.emit(op.expr)
            shape = tuple(ir[op.expr]["shape"])
        elif op.form == "soc_stack":  # norm2(e) <= t: the vector [vec(e); t] in the second-order cone
            e, t = op.sides
            value = em.graph.call_function(soc_stack, (em.emit(e), em.emit(t)))
            shape = (int(np.prod(ir[e]["shape"], dtype=np.int64)) + 1,)
        else:
            lhs, rhs = op.sides
            value = em.graph.call_function(torch.sub, (em.emit(lhs), em.emit(rhs)))
            shape = tuple(np.broadcast_shapes(tuple(ir[lhs]["shape"]), tuple(ir[rhs]["shape"])))
        if not isinstance(value, fx.Node):  # pragma: no cover - the split routes constants elsewhere
            raise _fail(ir, op.source, "an operator term does not depend on a variable")
        em.graph.output(value)
        gm = fx.GraphModule(root, em.graph, class_name="AffineExpr")
        kernel = op.kernel
        negated = False
        text = ""
        if op.kind == "prox":
            atom = ATOMS[ir[op.source]["atom"]]
            sep = op.term.prox if op.term is not None else None
            negated = bool(sep is not None and sep.negated and op.form is None)
            arg_text = ir.text(op.expr)
            if op.form is not None:
                if op.form not in FORMS:
                    raise _fail(ir, op.source, f"the torch backend has no operator form for {op.form}")
                text = f"{atom.name}({arg_text}) = g(D ({arg_text})), g prox by Moreau"
            else:
                text = f"{atom.name}({arg_text}): K = the linear part of `{arg_text}`, f* prox by Moreau ({kernel})"
        elif op.kind == "set" and op.form == "soc_stack":
            text = f"`{ir.text(op.source)}`: [e; t] in the second-order cone: projection ({kernel}) by Moreau"
        elif op.kind == "set":
            text = f"`{ir.text(op.expr)}` in {ir[op.set_node]['set']}: projection ({kernel}) by Moreau"
        elif op.kind == "equality" and op.form is not None:
            if op.form not in SET_FORMS:
                raise _fail(ir, op.source, f"the torch backend has no linear form `{op.form}`")
            text = f"`{ir[op.expr]['name']}` in {ir[op.set_node]['set']}: {op.form} == target, f = indicator"
        elif op.kind == "equality":
            text = f"`{ir.text(op.source)}`: K x + c = lhs - rhs, f = indicator of {{0}}"
        else:
            text = f"`{ir.text(op.source)}`: K x + c = lhs - rhs, f = indicator of (-inf, 0]"
        for name in [kernel] if kernel else []:
            if name not in KERNELS:
                raise _fail(ir, op.source, f"the torch backend has no kernel `{name}` for `{ir.text(op.source)}`")
        out.append(LoweredOperator(op, gm, names, shape, op.kind, kernel, negated, op.form, text))
    return out


# ------------------------------------------------------------------------------------------------
# per-solve blocks: offsets, adjoints, conjugate proxes (parameters may have changed)
# ------------------------------------------------------------------------------------------------


def _hyper_tensors(hyper: dict[str, Any], dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    from regspec.backends.torch.lower import _as_tensor

    out = {}
    for k, v in hyper.items():
        if isinstance(v, np.ndarray):
            out[k] = _as_tensor(v, dtype, device)
        elif isinstance(v, Tensor):
            out[k] = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        else:
            out[k] = v
    return out


def _atom_kw(ir: IR, node: int, params: dict[str, np.ndarray]) -> dict[str, Any]:
    d = ir[node]
    kw = dict(d.get("static", {}))
    for k, v in d.get("tensor_kwargs", {}).items():
        kw[k] = np.asarray(evaluate(ir, v, params))
    return kw


def term_weight_of(ir: IR, term: Term | None, params: dict[str, np.ndarray]) -> float:
    """sign * prod(scale) of a term at the given parameter values."""
    if term is None:
        return 1.0
    w = term.sign
    for n, e in term.scale:
        v = float(np.asarray(evaluate(ir, n, params)))
        w = w * v if e > 0 else w / v
    return float(w)


@dataclass
class Block:
    """One dual block ready for ``solvers.pdhg``: ``apply``/``adjoint`` of K (scaled by ``scale``),
    ``conj`` = prox of the (rescaled) conjugate, ``offset`` c, and what to report."""

    lowered: LoweredOperator
    apply: Callable[[list[Tensor]], Tensor]
    adjoint: Callable[[Tensor], list[Tensor | None]]
    conj: Callable[[Tensor, float], Tensor]
    offset: Tensor
    kind: str
    scale: float = 1.0
    norm: float | None = None       # ||K|| before scaling (an upper bound), when known in closed form
    prox_f: Callable[[Tensor, float], Tensor] | None = None   # for constraint violations
    info: dict[str, Any] = field(default_factory=dict)


def build_block(ir: IR, lowered: LoweredOperator, xs_like: list[Tensor], var_index: dict[str, int],
                params: dict[str, np.ndarray]) -> Block:
    """K, K^T (autograd), c and the conjugate prox of one block at the current parameter values."""
    from regspec.backends.torch.prox import get_kernel
    from regspec.backends.torch.solvers import conj_prox_from_prox

    like = xs_like[0]
    dtype, device = like.dtype, like.device
    idx = [var_index[n] for n in lowered.var_names]
    op = lowered.op
    pre: Callable[[Tensor], Tensor] | None = None
    pre_adjoint: Callable[[Tensor], Tensor] | None = None
    pre_norm: float | None = None
    pre_axpy: Callable[[Tensor | None, Tensor, float, Tensor | None], Tensor] | None = None
    kernel_name = lowered.kernel
    hyper: dict[str, Any] = {}
    weight = 1.0
    if lowered.kind == "prox":
        node = op.source
        atom = ATOMS[ir[node]["atom"]]
        kw = _atom_kw(ir, node, params)
        arg_shape = tuple(ir[op.expr]["shape"])
        if lowered.form is not None:
            form = FORMS[lowered.form](kw, arg_shape, dtype, device)
            pre, pre_adjoint, kernel_name, hyper = form.pre, form.adjoint, form.kernel, form.hyper
            pre_norm, pre_axpy = form.norm, form.axpy
        elif op.term is not None and op.term.prox is not None:  # the term's separable prox
            from regspec.compiler.passes.structure import prox_hyper

            hyper = prox_hyper(ir, op.term.prox, params)
        else:
            if hasattr(atom, "prox_hyper"):
                hyper = atom.prox_hyper(kw, [arg_shape])
            else:
                hyper = {k: kw[n] for k, n in atom.prox.hyper if kw.get(n) is not None}
        weight = term_weight_of(ir, op.term, params)
        if lowered.negated:
            weight = -weight
    elif lowered.kind == "set":
        s = ir[op.set_node]
        hyper = SETS[s["set"]].kernel_hyper(s["static"])
    target: Tensor | None = None
    if lowered.kind == "equality" and lowered.form is not None:
        pre, target, pre_adjoint, pre_norm = SET_FORMS[lowered.form](ir[op.set_node]["static"],
                                                                     tuple(ir[op.expr]["shape"]), dtype, device)
    hyper = _hyper_tensors(hyper, dtype, device)

    # K x + c = D(A(x)) - target: A the affine expression (its GraphModule), D the form's map.
    # Linear part of A by subtracting A(0), its adjoint by autograd (both traced); D^T by hand or
    # by autograd. A bare variable needs neither.
    expr = lowered.expr
    zeros = [torch.zeros_like(xs_like[i]) for i in idx]
    traced = True
    with torch.no_grad():
        a0 = expr(*zeros).detach()
    if op.identity and len(idx) == 1:
        lin_a: Callable[..., Tensor] = lambda x: x  # noqa: E731 - the identity map
        adj_a: Callable[[Tensor], tuple[Tensor, ...]] = lambda y: (y,)  # noqa: E731
    else:
        vjp_a = linear_adjoint(expr, zeros)  # autograd: a functorch vjp would import torch._dynamo
        lin_a, adj_a, traced = _trace_linear(expr, vjp_a, zeros, a0)
    if pre is not None and pre_adjoint is None:
        z0 = torch.zeros_like(a0)
        vjp_d = linear_adjoint(pre, [z0])
        d0 = pre(z0).detach()
        pre_lin, pre_adj_parts, traced_d = _trace_linear(pre, vjp_d, [z0], d0)
        traced = traced and traced_d
        pre, pre_adjoint = pre_lin, (lambda y, f=pre_adj_parts: f(y)[0])
    with torch.no_grad():
        c = pre(a0) if pre is not None else a0
        if target is not None:
            c = c - target
        c = c.to(dtype)
    nvars = len(xs_like)

    def apply(xs: list[Tensor]) -> Tensor:
        v = lin_a(*[xs[i] for i in idx])
        return pre(v) if pre is not None else v

    def adjoint(y: Tensor) -> list[Tensor | None]:
        parts = adj_a(pre_adjoint(y) if pre_adjoint is not None else y)
        out: list[Tensor | None] = [None] * nvars
        for i, p in zip(idx, parts):
            out[i] = p
        return out

    prox_f: Callable[[Tensor, float], Tensor] | None = None
    if lowered.kind == "equality":
        def prox_f(v: Tensor, t: float) -> Tensor:  # f(z) = indicator{z + c = 0}
            return -c.expand_as(v) if c.shape != v.shape else -c

        def conj(y: Tensor, sigma: float) -> Tensor:
            return y + sigma * c
    elif lowered.kind == "nonpos":
        def prox_f(v: Tensor, t: float) -> Tensor:  # f(z) = indicator{z + c <= 0}
            return torch.clamp_max(v + c, 0.0) - c

        def conj(y: Tensor, sigma: float) -> Tensor:
            return torch.clamp_min(y + sigma * c, 0.0)
    else:
        fn = get_kernel(kernel_name).fn
        w = float(weight)

        def prox_f(v: Tensor, t: float) -> Tensor:  # f(z) = w h(z + c)
            return fn(v + c, t * w, **hyper) - c

        conj = _dual_ball(kernel_name, hyper, w, c) or conj_prox_from_prox(prox_f)

    primal_numel = sum(xs_like[i].numel() for i in idx)
    # ||K|| is known without power iteration when K is a bare variable (norm 1) or a form of one
    known = (pre_norm if pre is not None else 1.0) if (op.identity and len(idx) == 1) else None
    return Block(lowered, apply, adjoint, conj, c, lowered.kind, norm=known, prox_f=prox_f,
                 info={"weight": weight, "kernel": kernel_name, "traced": traced, "hyper": hyper,
                       "primal_numel": primal_numel, "idx": idx,
                       # y + alpha K x in one pass: a bare variable through a form that has it
                       "axpy": pre_axpy if (op.identity and len(idx) == 1 and pre_axpy is not None) else None})


def _trace_linear(full: Callable[..., Tensor], vjp_fn: Callable, zeros: list[Tensor], c: Tensor):
    """K x = full(x) - c and K^T y = vjp(y), as closures until tracing pays, then as straight-line
    aten graphs (``make_fx``, dead code removed; ``tracing.LazyGraph``): the adjoint graph is
    autograd's backward of the linear part only, without the autograd engine's per-call
    overhead. A one-off solve stays eager and does not import torch's graph-capture stack; a
    failed trace keeps the closures. The flag says whether both are graphs already."""
    def linear(*xs: Tensor) -> Tensor:
        return full(*xs) - c

    def adjoint(y: Tensor) -> tuple[Tensor, ...]:
        return tuple(vjp_fn(y))

    lin_gm, adj_gm = LazyGraph(linear, zeros), LazyGraph(adjoint, [torch.zeros_like(c)])
    return lin_gm, adj_gm, lin_gm.traced and adj_gm.traced


def _dual_ball(kernel: str | None, hyper: dict[str, Any], w: float, c: Tensor):
    """prox_{sigma f*} for f(z) = w h(z + c) with h a norm whose dual ball is a cheap box or
    product of l2 balls: prox_{sigma f*}(y) = proj_{w B*}(y + sigma c) (f* = indicator of the
    scaled dual ball minus <c, .>). The same map as Moreau's identity, in fewer passes and in
    place on y (the PDHG loops pass a temporary); None for other kernels (Moreau then applies)."""
    zero_c = not bool(torch.any(c != 0))
    if kernel == "l1" and set(hyper) <= {"weight", "lam"}:
        radius = w * hyper.get("lam", 1.0)
        if hyper.get("weight") is not None:
            radius = hyper["weight"] * radius
        lo = -radius if isinstance(radius, Tensor) else None

        def conj_l1(y: Tensor, sigma: float) -> Tensor:  # in place on y (a temporary)
            v = y if zero_c else y.add_(c, alpha=sigma)
            if lo is not None:
                return torch.clamp(v, min=lo, max=radius, out=v)
            return v.clamp_(-radius, radius)

        return conj_l1
    if kernel == "group_l2" and hyper.get("groups") == "rows" and set(hyper) <= {"groups", "weights", "lam"} \
            and c.dim() >= 1:
        lam = hyper.get("lam", 1.0)
        weights = hyper.get("weights")
        rows = c.shape[0]
        if weights is None:
            width = c.numel() // max(rows, 1)
            weights = torch.full((rows,), math.sqrt(width), dtype=c.dtype, device=c.device)
        radius = (w * lam * weights).reshape(rows, *([1] * (c.dim() - 1)))

        def conj_rows(y: Tensor, sigma: float) -> Tensor:  # in place on y (a temporary)
            v = y if zero_c else y.add_(c, alpha=sigma)
            norms = torch.linalg.vector_norm(v.reshape(rows, -1), dim=1).reshape(radius.shape)
            return v.mul_((radius / torch.maximum(norms, radius)).nan_to_num_(1.0))

        return conj_rows
    return None


def scaled(block: Block, scale: float) -> tuple[Callable, Callable, Callable, Callable | None]:
    """(apply, adjoint, conj, axpy) of the same term written as f(z / a) with K -> a K
    (a = ``scale``); ``axpy(y, x, alpha, out)`` = y + alpha a K x in one pass when the block can.

    The scale goes where it costs least: on the primal side of K (K(a x) = a K x, and a K^T y),
    whose tensors are smaller than the dual ones for fusion and difference operators. The
    conjugate prox of f(. / a): for the indicators and for norms (positively homogeneous h,
    f(z) = w h(z + c)), f(z / a) has the same form with c -> a c and w -> w / a, so the fast
    paths apply unchanged; otherwise prox_{sigma (f(./a))*}(y) = prox_{sigma a^2 f*}(a y) / a."""
    a = float(scale)
    form_axpy = block.info.get("axpy")
    idx = block.info["idx"]
    if form_axpy is not None:
        i0 = idx[0]

        def apply_axpy(y: Tensor | None, xs: list[Tensor], alpha: float, out: Tensor | None) -> Tensor:
            return form_axpy(y, xs[i0], alpha * a, out)  # y + alpha (a K) x
    else:
        apply_axpy = None
    if a == 1.0:
        return block.apply, block.adjoint, block.conj, apply_axpy
    apply, adjoint, conj = block.apply, block.adjoint, block.conj

    def apply_s(xs: list[Tensor]) -> Tensor:
        ys = list(xs)
        for i in idx:
            ys[i] = xs[i] * a  # out of place: an identity block returns its input
        return apply(ys)

    def adjoint_s(y: Tensor) -> list[Tensor | None]:
        return [None if p is None else p * a for p in adjoint(y)]

    c = block.offset
    kind = block.kind
    if kind == "equality":
        ac = a * c

        def conj_s(y: Tensor, sigma: float) -> Tensor:  # in place on y (a temporary)
            return y.add_(ac, alpha=sigma)
    elif kind == "nonpos":
        ac = a * c

        def conj_s(y: Tensor, sigma: float) -> Tensor:
            return y.add_(ac, alpha=sigma).clamp_min_(0.0)
    else:
        fast = None
        if kind == "prox":
            fast = _dual_ball(block.info["kernel"], block.info["hyper"], block.info["weight"] / a, a * c)
        if fast is not None:
            conj_s = fast
        else:
            def conj_s(y: Tensor, sigma: float) -> Tensor:
                return conj(y * a, sigma * a * a) / a

    return apply_s, adjoint_s, conj_s, apply_axpy


def block_name(ir: IR, block: Block) -> str:
    """``line N: <source text>`` of the statement a block comes from (the key of ``violations``)."""
    node = block.lowered.source
    span = ir[node].get("span")
    where = f"line {span.line}: " if span is not None else ""
    return where + ir.text(node)


def _term_radius(block: Block, a: float) -> Tensor | float | None:
    """The dual-ball radius of a norm term (its Lipschitz constant per entry or row) in the
    coordinates of the block scaled by ``a``; None where the kernel is not a weighted l1 or
    row-group l2 (the certificate then estimates the term's error by ||y|| ||d||)."""
    kernel, hyper, w = block.info.get("kernel"), block.info.get("hyper", {}), block.info.get("weight", 1.0) / a
    if kernel == "l1" and set(hyper) <= {"weight", "lam"}:
        r = abs(w) * hyper.get("lam", 1.0)
        return hyper["weight"].abs() * r if hyper.get("weight") is not None else r
    if kernel == "group_l2" and hyper.get("groups") == "rows" and set(hyper) <= {"groups", "weights", "lam"} \
            and block.offset.dim() >= 1:
        rows = block.offset.shape[0]
        weights = hyper.get("weights")
        if weights is None:
            weights = torch.full((rows,), math.sqrt(block.offset.numel() // max(rows, 1)),
                                 dtype=block.offset.dtype, device=block.offset.device)
        return ("rows", abs(w) * hyper.get("lam", 1.0) * weights.abs())
    return None


def block_check(ir: IR, block: Block, a: float):
    """The certificate's view of a block scaled by ``a`` (``restarted_pdhg.BlockCheck``): a
    constraint (with the projection onto its scaled set, ``a`` times the set of ``K x``) or a
    term (with the Lipschitz bound of its norm, when known)."""
    from regspec.backends.torch.restarted_pdhg import BlockCheck

    name = block_name(ir, block)
    if block.kind in ("equality", "nonpos", "set"):
        prox_f = block.prox_f

        def project(z: Tensor) -> Tensor:
            return prox_f(z / a, 1.0) * a

        return BlockCheck(name, True, project=project)
    radius = _term_radius(block, a) if block.kind == "prox" else None
    if radius is None:
        return BlockCheck(name, False)
    if isinstance(radius, tuple):
        r_rows = radius[1]

        def bound(d: Tensor) -> Tensor:
            return torch.dot(r_rows, torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1))
    else:
        def bound(d: Tensor) -> Tensor:
            return (d.abs() * radius).sum()

    # the scaled term is f(z) = bound(z + a c) (a weighted norm, ``_term_radius``), whose conjugate on
    # its dual ball, where y+ always is (the ``_dual_ball`` projection), is -<a c, y>
    ac = block.offset * a

    def conjugate_gap(kx: Tensor, y: Tensor) -> Tensor:  # f(K x) + f*(y) - <y, K x> >= 0
        z = kx + ac
        return bound(z) - torch.vdot(y.reshape(-1), z.reshape(-1))

    return BlockCheck(name, False, term_bound=bound, conjugate_gap=conjugate_gap)


def violation(block: Block, xs: list[Tensor]) -> float:
    """For a constraint block, ``||K x + c - proj||_inf / max(||K x||_inf, size of its terms, ||c||_inf)``:
    the largest distance of an entry of ``lhs - rhs`` to its target set, relative to the size of the
    block's own terms (the marginals' masses, the right-hand side; ``restarted_pdhg._term_size``
    for lhs and rhs where they cancel, as in ``A x == B x``), not to 1 (0 on feasible points). Here
    ``K x`` and ``c`` are taken before the block's scaling, so the value is what the user wrote.
    As in the stopping rule (``restarted_pdhg._rule_measures``), the size is at least sqrt(eps)
    times the largest entry of the variables: a block whose terms all vanish at the solution
    (``x[19] == 0``) is judged against the problem's scale, not against its own rounding error
    (1e-15 / 1e-15 read as a violation of 1)."""
    with torch.no_grad():
        kx = block.apply(xs)
        proj = block.prox_f(kx, 1.0)
        num = float((kx - proj).abs().max()) if kx.numel() else 0.0
        from regspec.backends.torch.restarted_pdhg import _random_signs, _term_size

        sizes = [float(kx.abs().max()) if kx.numel() else 0.0,
                 float(_term_size(block.apply, xs, _random_signs(xs))) if kx.numel() else 0.0,
                 float(block.offset.abs().max()) if block.offset.numel() else 0.0]
        x_inf = max((float(t.abs().max()) for t in xs if t.numel()), default=0.0)
        floor = math.sqrt(torch.finfo(kx.dtype).eps) * x_inf if kx.is_floating_point() else 0.0
        den = max(sizes + [floor, 1e-300])
    return num / den


@dataclass
class PdhgReport:
    """What a PDHG run reports: the status (``optimal`` demoted to ``optimal_inaccurate`` when an
    independently computed violation exceeds the tolerance), whether its point is a solution,
    residuals (``infeasibility``: the largest relative violation) and info (``violations`` per
    constraint, ``tol``, a ``message`` and the ``last_iterate``'s objective when not solved)."""

    status: str
    solved: bool
    residuals: dict[str, float]
    info: dict[str, Any]


NOT_SOLVED_MESSAGES = {
    "user_limit": "stopped at the iteration or time budget before the stopping rule held; the last iterate "
                  "is not a solution (raise --max-iter, or loosen --tol)",
    "solver_error": "a non-finite value appeared in the iterations",
    "infeasible": "the constraints have no common point (certificate from the iterates)",
    "unbounded": "the objective is unbounded below over the constraints (certificate from the iterates)",
}


def pdhg_report(ir: IR, blocks: list[Block], res, objective_value: float) -> PdhgReport:
    """Recompute every constraint's relative violation at the returned point (``violation``, from
    the user's K x and c, independent of the solver's scaled certificate) and decide what is reported."""
    violations: dict[str, float] = {}
    for b in blocks:
        if b.kind in ("equality", "nonpos", "set"):
            name = block_name(ir, b)
            violations[name] = max(violations.get(name, 0.0), violation(b, res.x))
    worst = max(violations.values(), default=0.0)
    tol = res.info.get("tol_effective", res.info.get("tol", 0.0))
    status = res.status
    info: dict[str, Any] = {"tol": tol, "violations": violations}
    if status == "optimal" and worst > tol * (1.0 + 1e-6):
        status = "optimal_inaccurate"
        info["message"] = (f"the stopping rule held, but a constraint's relative violation recomputed at the point "
                           f"is {worst:.3g} > tol {tol:.3g}")
    solved = status in ("optimal", "optimal_inaccurate")
    if not solved:
        info["message"] = NOT_SOLVED_MESSAGES.get(status, status)
        if status == "user_limit" and math.isfinite(objective_value):
            info["last_iterate"] = {"objective": objective_value, "infeasibility": worst}
        if "certificate" in res.info:
            info["certificate"] = res.info["certificate"]
    return PdhgReport(status, solved, {"infeasibility": worst}, info)
