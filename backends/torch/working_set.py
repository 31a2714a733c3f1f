"""Working sets for FISTA problems whose smooth part reads the variable through one matrix and whose
nonsmooth part is separable by entries or by groups: lasso, elastic net, group lasso, l1-logistic
and their weighted forms, recognised from the lowered program, never from the spec's words.

Structure (``plan_working_set``): one 1-D variable ``x``; the smooth graph uses ``x`` only in
``A @ x`` with ``A`` a data or parameter matrix, so ``s(x) = phi(A x)`` with ``phi`` the rest of
the graph (least squares, logistic, Huber, ...: anything the graph computes from ``A x``); every
prox or projection on ``x`` has a kernel the registry declares ``pointwise`` (one entry at a time)
or ``group`` (disjoint groups of entries). Anything else returns a reason and the caller keeps
plain FISTA.

Algorithm (``solve_working_set``): groups outside the working set ``W`` stay at their values
(zero from the start point of an l1-type prox); FISTA solves the problem in ``x_W`` alone, with
``A_W = A[:, W]`` (n x |W| instead of n x p) and the same prox kernel applied to ``x`` with only
``W`` changed (exact for a separable or group-separable prox when ``W`` is a union of groups).
After each inner solve the optimality of the FULL problem is checked on every coordinate with
FISTA's own certificate (the gradient mapping ``G_t(x) = (x - prox(x - t grad s(x), t)) / t``
relative to ``max(||grad s(x)||, ||G_t - grad s||, ||grad s(x0)||)``, ``t`` the inner solve's
accepted step), so ``optimal`` means exactly what it means for plain FISTA. When it fails, the
groups with the largest residual ``||G_t(x)_g||`` join ``W`` (the working set only grows: it keeps
every earlier group, and always adds violators while any remain outside), its size at least
``2 x`` the number of nonzero groups (skglm's doubling rule), and the inner tolerance tightens
with the full residual (a loose inner solve while ``W`` is still wrong costs little).

Quadratic data-fit (``_diagonal_hessian``): when ``phi`` is quadratic with a diagonal Hessian
``D`` (least squares, weighted least squares: ``grad phi(z) = D z + q``, found by two probes of
``phi`` at the start), the inner solve runs on ``f(v) = f0 + <g0 + H (v - v0) / 2, v - v0>`` with
``H = A_W^T D A_W`` (the working set's Gram matrix, its new rows added as ``W`` grows), anchored
at each inner start on the exact gradient of the last full check: an inner iteration costs
``|W|^2`` instead of two products with the n x |W| columns and an autograd pass through ``phi``.
It is a model until checked: the next full check computes the exact gradient on ``W`` too, and if
it differs from the model's by more than a tenth of the tolerance (relative, the certificate's
scale) the solve continues without the model. The stopping test is never the model's.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, fx

from regspec.backends.torch import iteration_log
from regspec.backends.torch.lower import TorchProgram, atom_call
from regspec.backends.torch.prox import get_kernel
from regspec.backends.torch.solvers import OPTIMAL, SOLVER_ERROR, USER_LIMIT, SolverResult, _FISTA_RULE

# Groups the first working set holds (and the fewest that each growth adds while violators remain).
FIRST_SIZE = 10
# A working set on whose every group the inner solution is nonzero grows to this many times its
# nonzero groups (else twice, skglm's rule): each growth costs a full check (a pass over A), and
# measured on the bench's lasso / elastic net / l1-logistic at n = p = 2000 this takes one to two
# fewer outer iterations (bench/RESULTS.md).
SATURATED_GROWTH = 4
# By default working sets run when A has at least MIN_ENTRIES entries and there are MIN_GROUPS
# groups: below, the outer checks and copies of A_W cost about what the skipped columns save
# (measured on the shared 2-core machine: plain FISTA 1.2-2.6x faster on lasso for p <= 400, mixed
# on l1-logistic; working sets 2-16x faster at n = p = 2000, bench/RESULTS.md).
MIN_GROUPS = 100
MIN_ENTRIES = 1 << 20
# The Gram matrix's rows are built when that costs less than the inner iterations it speeds up
# (expected: as many as the last inner solve took, at least FIRST_EXPECTED): a row is n |W|
# multiply-adds in a matrix product, an exact inner iteration two matrix-vector products over
# the n x |W| columns (memory-bound) plus autograd through phi; on the 2-core machine one exact
# iteration costs about GRAM_ROWS_PER_ITERATION rows.
GRAM_ROWS_PER_ITERATION = 14
FIRST_EXPECTED = 10
# The model's gradient must match the exact one on W to this fraction of the tolerance.
MODEL_FRACTION = 0.1


def worth_it(plan: "WorkingSetPlan") -> bool:
    """The default choice: large enough for working sets to pay (MIN_ENTRIES, MIN_GROUPS)."""
    return plan.groups >= MIN_GROUPS and plan.matrix.numel() >= MIN_ENTRIES
# The inner solve's relative tolerance: this fraction of the current full residual, floored at
# INNER_FLOOR x tol (the inner residual is part of the full one, so it must end below tol).
INNER_FRACTION = 0.1
INNER_FLOOR = 0.5

SOLVER_NAME = "FISTA (working sets)"
RULE = ("working sets: " + _FISTA_RULE + "; checked on ALL coordinates of the full problem after each inner "
        "FISTA solve on the working set")


@dataclass
class WorkingSetPlan:
    """What the working-set solver needs from the program: ``s(x) = phi(matrix @ x)``, the
    per-entry group labels (``None``: every entry its own group) and their count."""

    matrix: Tensor
    phi: fx.GraphModule
    labels: Tensor | None
    groups: int
    kernels: list[str] = field(default_factory=list)

    def describe(self) -> str:
        kind = "entries" if self.labels is None else "groups"
        return (f"working sets over {self.groups} {kind} ({', '.join(self.kernels)}); smooth part "
                f"phi(A x) with A {tuple(self.matrix.shape)}")


def plan_working_set(program: TorchProgram) -> tuple[WorkingSetPlan | None, str]:
    """The working-set plan of a FISTA program, or ``(None, why not)``."""
    if program.algorithm != "fista":
        return None, f"the algorithm is {program.algorithm}, not FISTA"
    if len(program.var_names) != 1:
        return None, "more than one variable"
    var = program.var_names[0]
    x = program.variables()[0]
    if x.ndim != 1:
        return None, f"the variable `{var}` is not a vector"
    if not program.steps:
        return None, "no nonsmooth part"
    labels, count, kernels = None, x.numel(), []
    for step in program.steps:
        for s in (step, step.pre) if step.pre is not None else (step,):
            structure = get_kernel(s.kernel).structure
            if structure not in ("pointwise", "group"):
                return None, f"the prox `{s.kernel}` is not separable ({structure})"
            kernels.append(s.kernel)
            if structure == "group":
                if labels is not None:
                    return None, "more than one grouping"
                labels, count = _entry_labels(s.hyper.get("groups", "rows"), tuple(x.shape), x.device)
    found = _composite_cached(program.smooth, f"var_{var}")
    if isinstance(found, str):
        return None, found
    matrix, phi = found
    if matrix.ndim != 2 or matrix.shape[1] != x.numel():
        return None, "the matrix multiplying the variable is not n x p"
    return WorkingSetPlan(matrix, phi, labels, count, kernels), ""


def _entry_labels(groups: object, shape: tuple[int, ...], device: torch.device) -> tuple[Tensor, int]:
    from regspec.compiler.catalogue.groups import entry_labels

    raw = groups.detach().cpu().numpy() if isinstance(groups, Tensor) else groups
    labels, count = entry_labels(shape, raw)
    return torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device), int(count)


_COMPOSITES: "weakref.WeakKeyDictionary[fx.GraphModule, dict]" = weakref.WeakKeyDictionary()


def _composite_cached(smooth: fx.GraphModule, var_attr: str) -> tuple[Tensor, fx.GraphModule] | str:
    """``_composite`` once per smooth graph (building phi's module costs milliseconds, a re-solve's
    share): phi holds the program's buffers themselves, which new parameter values update in place."""
    per_graph = _COMPOSITES.setdefault(smooth, {})
    if var_attr not in per_graph:
        per_graph[var_attr] = _composite(smooth, var_attr)
    return per_graph[var_attr]


def _composite(smooth: fx.GraphModule, var_attr: str) -> tuple[Tensor, fx.GraphModule] | str:
    """``(A, phi)`` with ``smooth() == phi(A @ x)`` when the graph reads the variable only in one
    ``matmul(A, x)`` whose ``A`` is a buffer (data or parameter); else why not."""
    nodes = [n for n in smooth.graph.nodes if n.op == "get_attr" and n.target == var_attr]
    if len(nodes) != 1:
        return "the smooth part does not read the variable" if not nodes else "the variable is read twice"
    users = list(nodes[0].users)
    if len(users) != 1:
        return "the smooth part reads the variable outside one matrix product"
    use = users[0]
    if not (use.op == "call_function" and use.target is atom_call and len(use.args) == 3 and
            use.args[0] == "matmul" and use.args[2] is nodes[0] and not use.kwargs):
        return "the smooth part reads the variable outside `A @ x`"
    a_node = use.args[1]
    if not (isinstance(a_node, fx.Node) and a_node.op == "get_attr" and not str(a_node.target).startswith("var_")):
        return "the matrix multiplying the variable is not data"
    matrix = getattr(smooth, a_node.target)
    graph = fx.Graph()
    z = graph.placeholder("z")
    env: dict[fx.Node, fx.Node] = {use: z}
    for node in smooth.graph.nodes:
        if node is use or node is nodes[0]:
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    phi = fx.GraphModule(smooth, graph, class_name="OuterFunction")
    return matrix.detach(), phi


class _Outer:
    """Value and gradient of ``phi`` at ``z`` (autograd over the graph), the last pair cached."""

    def __init__(self, phi: fx.GraphModule):
        self.phi = phi
        self._last: tuple[Tensor, Tensor, Tensor | None] | None = None

    def value(self, z: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is z:
            return self._last[1]
        with torch.no_grad():
            v = self.phi(z)
        self._last = (z, v, None)
        return v

    def value_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self._last is not None and self._last[0] is z and self._last[2] is not None:
            return self._last[1], self._last[2]
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            v = self.phi(leaf)
            g = torch.autograd.grad(v, leaf)[0] if v.requires_grad else torch.zeros_like(z)
        v = v.detach()
        self._last = (z, v, g)
        return v, g


@dataclass
class _Certificate:
    """FISTA's certificate on the full problem at x: the gradient mapping ``d`` per entry and its
    relative norm (``_FISTA_RULE``)."""

    d: Tensor
    residuals: dict[str, float]

    @property
    def rel(self) -> float:
        return self.residuals["prox_grad_rel"]


def _certify(x: Tensor, grad: Tensor, t: float, prox: Callable, g0_norm: float) -> _Certificate:
    xp = prox([x - t * grad], t)[0]
    d = (x - xp) / t
    u = d - grad
    r, gnorm, unorm = torch.stack([torch.linalg.vector_norm(v) for v in (d, grad, u)]).tolist()
    scale = max(gnorm, unorm, g0_norm, 1e-300)
    return _Certificate(d, {"prox_grad": r, "prox_grad_rel": r / scale, "grad_norm": gnorm, "step": t})


def _group_sq(v: Tensor, plan: WorkingSetPlan) -> Tensor:
    """Squared norm of v per group."""
    if plan.labels is None:
        return v * v
    return v.new_zeros(plan.groups).index_add_(0, plan.labels, v * v)


def grow(scores: Tensor, support: Tensor, current: Tensor, first: int = FIRST_SIZE) -> Tensor:
    """The next working set (a boolean mask over groups): the current one, every nonzero group, and
    the largest violators outside, so that it holds at least ``2 x`` the nonzero groups (``4 x``
    while the inner solution is nonzero on every group of the set: it is still too small) and
    ``first``, adding at least ``first`` violators (or all that remain)."""
    keep = current | support
    outside = scores.masked_fill(keep, 0.0)
    violators = int((outside > 0).sum())
    if violators == 0:
        return keep
    n_keep = int(keep.sum())
    saturated = bool(current.any()) and bool((support | ~current).all())
    target = max(first, (SATURATED_GROWTH if saturated else 2) * int(support.sum()))
    add = min(violators, max(target - n_keep, first))
    chosen = torch.topk(outside, add).indices
    out = keep.clone()
    out[chosen] = True
    return out


# The working-set steps are many small operations (vectors, A_W with few columns) and products
# with A that are bound by memory bandwidth: torch's intra-op threads cost more than they save
# there (a thread handoff stalls for milliseconds on a loaded machine; one thread measured 1.5-6x
# faster on the shared 2-core machine, also with two threads for the products with all of A), so
# a CPU solve runs on one thread, as scikit-learn's and skglm's coordinate descent do.
@contextlib.contextmanager
def _one_thread(device: torch.device):
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _full_grad(plan: WorkingSetPlan, outer: _Outer, z: Tensor) -> Tensor:
    _, g = outer.value_and_grad(z)
    return torch.mv(plan.matrix.t(), g)


def _ranking_step(x: Tensor, grad: Tensor) -> float:
    """A step small against any curvature, for the first check only: the prox-gradient residual is
    nonincreasing in the step, so at this step it is the conservative side of FISTA's (at x = 0 and
    an l1-type prox it does not depend on the step at all). The first inner solve then estimates its
    step on the working set's columns, which saves two products with all of A."""
    gn = float(torch.linalg.vector_norm(grad))
    return 1e-6 * max(1.0, float(torch.linalg.vector_norm(x))) / gn if gn > 0 and math.isfinite(gn) else 1.0


@torch.no_grad()
def solve_working_set(plan: WorkingSetPlan, prox: Callable, x0: list[Tensor], *, tol: float,
                      max_iter: int = 100000, first: int = FIRST_SIZE) -> SolverResult:
    """Minimize ``phi(A x) + h(x)`` on a growing working set (the module docstring); the status
    and ``residuals`` are FISTA's certificate on the full problem at the returned x."""
    with _one_thread(plan.matrix.device):
        return _solve(plan, prox, x0, tol, max_iter, first)


def _solve(plan: WorkingSetPlan, prox: Callable, x0: list[Tensor], tol: float, max_iter: int, first: int
           ) -> SolverResult:
    eps = torch.finfo(x0[0].dtype).eps
    tol_eff = max(float(tol), 10.0 * eps)
    x = x0[0].detach().clone()
    outer = _Outer(plan.phi)
    z = torch.mv(plan.matrix, x) if bool(x.any()) else x.new_zeros(plan.matrix.shape[0])  # A 0 = 0: no pass
    grad = _full_grad(plan, outer, z)
    if not bool(torch.isfinite(grad).all()):
        raise FloatingPointError("the smooth objective is not finite at x0")
    g0_norm = float(torch.linalg.vector_norm(grad))
    hessian = _diagonal_hessian(outer, z)
    t = _ranking_step(x, grad)
    t_inner: float | None = None  # estimated by the first inner solve
    current = torch.zeros(plan.groups, dtype=torch.bool, device=x.device)
    columns = _Columns(plan.matrix)
    status, used, stuck, history, sizes, entries, inner_iters, models = USER_LIMIT, 0, 0, [], [], [], [], []
    log = _OuterLog()
    cert = _certify(x, grad, t, prox, g0_norm)
    while True:
        history.append({"iteration": float(used), "working_set": float(int(current.sum())), **cert.residuals})
        log.line(used, history[-1], inner_iters[-1] if inner_iters else 0)
        if not math.isfinite(cert.residuals["prox_grad"]):
            status = SOLVER_ERROR
            break
        if cert.rel <= tol_eff:
            status = OPTIMAL
            break
        if used >= max_iter:
            break
        current, inner_tol, stuck = _next_working_set(plan, x, cert, current, first, tol_eff, stuck)
        columns.update((current if plan.labels is None else current[plan.labels]).nonzero().squeeze(1))
        if hessian is not None and stuck >= 2:  # every violator inside twice: finish without the model
            hessian = None
        gram = hessian is not None and columns.gram_pays(max(inner_iters[-1] if inner_iters else 0, FIRST_EXPECTED))
        res, x_next, z, t, g_model = _inner(plan, outer, prox, x, z, grad, t_inner, columns, inner_tol,
                                            max_iter - used, hessian if gram else None)
        x, t_inner = x_next, t
        used += res.iterations
        sizes.append(int(current.sum()))
        entries.append(int(res.x.v.numel()))
        inner_iters.append(res.iterations)
        models.append("gram" if gram else "exact")
        if res.status not in (OPTIMAL, USER_LIMIT):  # unbounded along a restriction, or not finite
            status = res.status
            break
        grad = _full_grad(plan, outer, z)
        if g_model is not None and not _model_held(g_model, grad.index_select(0, columns.idx), tol_eff, g0_norm):
            hessian = None  # phi is not quadratic along the iterates after all: exact inner solves
        cert = _certify(x, grad, t, prox, g0_norm)
    info = {"step": t, "tol": float(tol), "tol_effective": tol_eff, "rule": RULE,
            "working_set": {"outer_iterations": len(sizes), "groups": plan.groups, "sizes": sizes,
                            "entries": entries, "inner_iterations": inner_iters, "inner_models": models,
                            "step": t, "structure": plan.describe()}}
    return SolverResult(x=[x], status=status, iterations=used, residuals={
        k: cert.residuals[k] for k in ("prox_grad", "prox_grad_rel", "grad_norm")},
        history=history, algorithm="fista-working-set", info=info)


class _OuterLog:
    """``regspec solve --verbose``: one line per full check (the inner iterations so far, the
    working set's size, the last inner solve's iterations, the certificate); silent without a log."""

    def __init__(self):
        self.write = iteration_log.writer()

    def line(self, used: int, entry: dict[str, float], inner: int) -> None:
        if self.write is not None:
            values = {"working_set": entry["working_set"], "inner_iterations": float(inner),
                      **{k: entry[k] for k in ("prox_grad", "prox_grad_rel")}}
            self.write(iteration_log.format_line(SOLVER_NAME, used, values))


def _diagonal_hessian(outer: _Outer, z: Tensor) -> Tensor | None:
    """``D`` when ``phi`` is quadratic with Hessian ``diag(D)`` around ``z`` as far as two probes
    tell (``grad phi(z + u) - grad phi(z) = D u`` and ``phi(z + u) - phi(z) = <g + D u / 2, u>`` for
    a second, independent ``u`` predicted from the first to within rounding), else None. A probe
    cannot prove a function quadratic: the solve checks the model against the exact gradient at
    every full check (``_model_held``)."""
    gen = torch.Generator(device=z.device).manual_seed(0)
    scale = max(1.0, float(z.abs().max()) if z.numel() else 1.0)
    u1, u2 = (scale * (0.5 + torch.rand(z.shape, generator=gen, dtype=z.dtype, device=z.device)) for _ in range(2))
    try:  # the probe points may leave phi's domain: no model then, never a failed solve
        f0, g0 = outer.value_and_grad(z.clone())
        _, g1 = outer.value_and_grad(z + u1)
        f2, g2 = outer.value_and_grad(z - u2)
    except (ArithmeticError, ValueError, RuntimeError):
        return None
    d = (g1 - g0) / u1
    du = d * u2
    g_err, g_ref, f_err, f_ref = torch.stack([
        torch.linalg.vector_norm(g2 - (g0 - du)),
        torch.linalg.vector_norm(g0) + torch.linalg.vector_norm(g1) + torch.linalg.vector_norm(g2),
        (f2 - f0 + torch.dot(g0 - 0.5 * du, u2)).abs(),
        f0.abs() + f2.abs() + torch.dot(g0.abs() + du.abs(), u2)]).tolist()
    if not (math.isfinite(g_err) and math.isfinite(f_err) and bool((d >= 0).all())):
        return None
    exact = g_err <= 1e3 * torch.finfo(z.dtype).eps * g_ref and f_err <= 1e3 * torch.finfo(z.dtype).eps * f_ref
    return d if exact else None


def _model_held(g_model: Tensor, g_exact: Tensor, tol: float, g0_norm: float) -> bool:
    """The quadratic model's gradient on W matches the exact one to ``MODEL_FRACTION x tol`` on the
    certificate's scale (the prox is nonexpansive, so the residual moves by at most that)."""
    err, ref = torch.stack([torch.linalg.vector_norm(g_model - g_exact), torch.linalg.vector_norm(g_exact)]).tolist()
    return math.isfinite(err) and err <= MODEL_FRACTION * tol * max(ref, g0_norm)


def _next_working_set(plan: WorkingSetPlan, x: Tensor, cert: _Certificate, current: Tensor, first: int,
                      tol: float, stuck: int) -> tuple[Tensor, float, int]:
    """The grown working set, the inner solve's tolerance and the count of checks in a row that
    found every violator already inside (then the inner solve must finish, and since its relative
    rule measures against the working set's own gradients, it tightens while the full check fails)."""
    nxt = grow(_group_sq(cert.d, plan).sqrt(), _group_sq(x, plan) > 0, current, first)
    if bool((nxt == current).all()):
        return nxt, INNER_FLOOR * tol * 0.1 ** stuck, stuck + 1
    return nxt, max(INNER_FLOOR * tol, INNER_FRACTION * cert.rel), 0


class _Columns:
    """The working set's entries in the order they joined, and ``A_W^T`` (|W| x n, contiguous) in a
    buffer whose capacity doubles, so a growth copies only the new columns. On the CPU a column of a
    row-major A is gathered by NumPy (row by row: 10-15x faster than torch's index_select along
    dim 1, which walks the matrix column-wise, a TLB miss per entry). ``gram(D)``: ``A_W^T D A_W``
    in the same order, its rows built once each (a growth adds the new rows and their transpose)."""

    def __init__(self, matrix: Tensor):
        self.matrix = matrix
        self.idx = torch.zeros(0, dtype=torch.long, device=matrix.device)
        self._buffer = matrix.new_empty((0, matrix.shape[0]))
        self._gram = matrix.new_empty((0, 0))
        self._gram_rows = 0  # leading rows (and columns) of _gram built

    @property
    def rows(self) -> Tensor:
        return self._buffer[:self.idx.numel()]

    def _gather(self, new: Tensor) -> Tensor:
        if self.matrix.device.type == "cpu":
            return torch.from_numpy(np.ascontiguousarray(self.matrix.numpy()[:, new.numpy()].T))
        return self.matrix.index_select(1, new).t().contiguous()

    def update(self, entries: Tensor) -> None:
        known = torch.zeros(self.matrix.shape[1], dtype=torch.bool, device=entries.device)
        known[self.idx] = True
        new = entries[~known[entries]]
        if not new.numel():
            return
        k, m = self.idx.numel(), new.numel()
        if k + m > self._buffer.shape[0]:
            grown = self.matrix.new_empty((min(self.matrix.shape[1], max(2 * (k + m), 64)), self.matrix.shape[0]))
            grown[:k] = self._buffer[:k]
            self._buffer = grown
        self._buffer[k:k + m] = self._gather(new)
        self.idx = torch.cat([self.idx, new])

    def gram_pays(self, expected_iterations: int) -> bool:
        """Whether building the Gram rows still missing costs less than the expected exact inner
        iterations (GRAM_ROWS_PER_ITERATION rows an iteration)."""
        return self.idx.numel() - self._gram_rows <= GRAM_ROWS_PER_ITERATION * expected_iterations

    def gram(self, diagonal: Tensor) -> Tensor:
        """``A_W^T diag(diagonal) A_W`` (|W| x |W|), the rows of entries that joined since the last
        call computed now."""
        k, m = self._gram_rows, self.idx.numel()
        if m > self._gram.shape[0]:
            grown = self.matrix.new_empty((self._buffer.shape[0], self._buffer.shape[0]))
            grown[:k, :k] = self._gram[:k, :k]
            self._gram = grown
        if m > k:
            rows = self.rows
            block = torch.mm(rows[k:m] * diagonal, rows.t())  # (m - k) x m
            self._gram[k:m, :m] = block
            self._gram[:k, k:m] = block[:, :k].t()
            self._gram_rows = m
        return self._gram[:m, :m]


def _inner(plan: WorkingSetPlan, outer: _Outer, prox: Callable, x: Tensor, z: Tensor, grad: Tensor,
           t: float | None, columns: _Columns, tol: float, max_iter: int, hessian: Tensor | None
           ) -> tuple["_InnerResult", Tensor, Tensor, float, Tensor | None]:
    """FISTA on the entries of the working set, the rest of x fixed, on ``phi(A_W v + c)`` or, with
    ``hessian``, on its quadratic model through the Gram matrix (anchored at x with the full
    check's exact ``grad``); returns the result, the new x, ``A x``, the last accepted step and the
    model's gradient at the result (None for the exact path)."""
    idx, a_w = columns.idx, columns.rows.t()
    x_w = x.index_select(0, idx)

    def prox_w(v: Tensor, step: float) -> Tensor:
        return prox([x.index_copy(0, idx, v)], step)[0].index_select(0, idx)

    if hessian is None:
        comp = _Composite(outer, a_w, z - torch.mv(a_w, x_w))
        res = _composite_fista(comp, prox_w, x_w, z, t, tol, max_iter)
        return res, x.index_copy(0, idx, res.x.v), res.x.z, res.step, None
    model = _Quadratic(outer.value(z), grad.index_select(0, idx), columns.gram(hessian), x_w)
    res = _composite_fista(model, prox_w, x_w, torch.zeros_like(x_w), t, tol, max_iter)
    z_next = torch.addmv(z, a_w, res.x.v - x_w)
    return res, x.index_copy(0, idx, res.x.v), z_next, res.step, model.grad(res.x)


# ------------------------------------------------------------------------------ inner FISTA
# solvers.fista's iteration, rule and backtracking, on f(v) = phi(A_W v + c) with z = A_W v + c
# carried along: the extrapolated point's z is the same combination of the iterates' z (A is
# linear), so an iteration reads A_W twice (the trial point's z, the gradient at y) instead of
# recomputing z at every point FISTA asks about.
BACKTRACK = 0.5
CHECK_EVERY = 50


@dataclass
class _Point:
    v: Tensor
    z: Tensor
    f: Tensor | None = None
    g: Tensor | None = None  # gradient in v


class _Composite:
    """Evaluations of ``phi(A_W v + c)`` at points that carry their z."""

    def __init__(self, outer: _Outer, a_w: Tensor, offset: Tensor):
        self.outer, self.a_w, self.offset = outer, a_w, offset

    def at(self, v: Tensor) -> _Point:
        return _Point(v, torch.addmv(self.offset, self.a_w, v))

    def value(self, p: _Point) -> Tensor:
        if p.f is None:
            p.f = self.outer.value(p.z)
        return p.f

    def grad(self, p: _Point) -> Tensor:
        if p.g is None:
            p.f, gz = self.outer.value_and_grad(p.z)
            p.g = torch.mv(self.a_w.t(), gz)
        return p.g


class _Quadratic:
    """``f(v) = f0 + <g0 + H (v - v0) / 2, v - v0>``: ``phi(A_W v + c)`` for a quadratic ``phi``
    (``H = A_W^T D A_W``), with the interface of ``_Composite``; a point carries ``H (v - v0)`` as
    its z (linear in v, so FISTA's extrapolated points combine it as they combine A x)."""

    def __init__(self, f0: Tensor, g0: Tensor, hessian: Tensor, v0: Tensor):
        self.f0, self.g0, self.hessian, self.v0 = f0, g0, hessian, v0

    def at(self, v: Tensor) -> _Point:
        return _Point(v, torch.mv(self.hessian, v - self.v0))

    def value(self, p: _Point) -> Tensor:
        if p.f is None:
            p.f = self.f0 + torch.dot(self.g0 + 0.5 * p.z, p.v - self.v0)
        return p.f

    def grad(self, p: _Point) -> Tensor:
        if p.g is None:
            self.value(p)  # as _Composite.grad, the value comes with the gradient
            p.g = self.g0 + p.z
        return p.g


@dataclass
class _InnerResult:
    x: _Point
    status: str
    iterations: int
    step: float


def _trial(comp: "_Composite | _Quadratic", prox_w: Callable, y: _Point, t: float
           ) -> tuple[_Point | None, float, float]:
    """The backtracked prox-gradient step from y (solvers.fista's tests: the quadratic upper model,
    or the gradient test once the model's curvature term is within rounding); ``(point, t, q)``
    with q the share of the allowed curvature used, or ``(None, t, 0)`` when nothing finite passes."""
    eps = torch.finfo(y.v.dtype).eps
    for _ in range(200):
        p = comp.at(prox_w(y.v - t * y.g, t))
        d = p.v - y.v
        err, dd, fabs, gg = torch.stack([comp.value(p) - y.f - torch.dot(y.g, d), torch.dot(d, d),
                                         p.f.abs() + y.f.abs(), torch.dot(y.g, y.g)]).tolist()
        quad, slack = dd / (2.0 * t), 10.0 * eps * fabs
        if not math.isfinite(err):
            t *= BACKTRACK
            continue
        if dd > 0 and quad <= 100.0 * slack:
            lg, gzz = torch.stack([torch.dot(comp.grad(p) - y.g, d), torch.dot(p.g, p.g)]).tolist()
            ok = lg <= 2.0 * quad + 10.0 * eps * (math.sqrt(max(gzz, 0.0)) + math.sqrt(max(gg, 0.0))) * math.sqrt(dd)
            q = t * lg / dd
        else:
            ok, q = err <= quad + slack, (2.0 * t * err / dd if dd > 0 else 0.0)
        if ok:
            return p, t, q
        t *= BACKTRACK
    return None, t, 0.0


def _inner_certificate(comp: "_Composite | _Quadratic", prox_w: Callable, x: _Point, t: float, g0_norm: float) -> float:
    """FISTA's relative gradient-mapping residual of the working-set problem at x."""
    g = comp.grad(x)
    d = (x.v - prox_w(x.v - t * g, t)) / t
    r, gn, un = torch.stack([torch.linalg.vector_norm(v) for v in (d, g, d - g)]).tolist()
    return r / max(gn, un, g0_norm, 1e-300)


def _first_step(comp: "_Composite | _Quadratic", x: _Point) -> float:
    """1 / the curvature along the gradient (a difference of gradients), as solvers.fista's first step."""
    g = comp.grad(x)
    gn = float(torch.linalg.vector_norm(g))
    if not (gn > 0 and math.isfinite(gn)):
        return 1.0
    h = 1e-3 * max(1.0, float(torch.linalg.vector_norm(x.v))) / gn
    curvature = float(torch.linalg.vector_norm(comp.grad(comp.at(x.v - h * g)) - g)) / (h * gn)
    return 1.0 / curvature if curvature > 0 and math.isfinite(curvature) else 1.0


def _composite_fista(comp: "_Composite | _Quadratic", prox_w: Callable, v0: Tensor, z0: Tensor, t: float | None,
                     tol: float, max_iter: int) -> _InnerResult:
    """FISTA with adaptive restart and step growth (solvers.fista) on the working set, to FISTA's
    relative rule at ``tol``; ``t=None``: the first step from the curvature along the gradient."""
    x = _Point(v0, z0)
    g0_norm = float(torch.linalg.vector_norm(comp.grad(x)))
    t = _first_step(comp, x) if t is None else t
    y, theta, grow, k, wait, cooldown = x, 1.0, False, 0, 1, 0
    while k < max_iter:
        comp.grad(y)
        if grow:
            t /= BACKTRACK
        xn, t, q = _trial(comp, prox_w, y, t)
        if xn is None:
            return _InnerResult(x, SOLVER_ERROR, k, t)
        k += 1
        grow = q < 0.5
        d, dx = xn.v - y.v, xn.v - x.v
        cheap, gy, rdot = torch.stack([torch.linalg.vector_norm(d), torch.linalg.vector_norm(y.g),
                                       -torch.dot(d, dx)]).tolist()
        if rdot > 0.0:  # O'Donoghue-Candes restart
            theta, y_next = 1.0, xn
        else:
            theta_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
            beta, theta = (theta - 1.0) / theta_next, theta_next
            y_next = _Point(xn.v + beta * dx, xn.z + beta * (xn.z - x.z))
        x, y = xn, y_next
        cooldown = max(cooldown - 1, 0)
        if (cheap / t <= tol * max(gy, g0_norm) and cooldown == 0) or k % CHECK_EVERY == 0:
            rel = _inner_certificate(comp, prox_w, x, t, g0_norm)
            if not math.isfinite(rel):
                return _InnerResult(x, SOLVER_ERROR, k, t)
            if rel <= tol:
                return _InnerResult(x, OPTIMAL, k, t)
            cooldown, wait = wait, min(2 * wait, CHECK_EVERY)
    return _InnerResult(x, USER_LIMIT, k, t)
