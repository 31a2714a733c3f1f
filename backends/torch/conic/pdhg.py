"""Restarted, preconditioned PDHG on a conic program ``min c^T x  s.t.  b - A x in K`` (PDLP /
cuPDLP's method, with cone projections in place of bounds).

Saddle point: ``min_x max_{y in K*} c^T x + y^T (A x - b)``; the dual is ``max -b^T y  s.t.
A^T y + c = 0, y in K*``. One iteration from ``(x, y)`` with steps ``tau = eta / w``, ``sigma = eta w``
(``w`` the primal weight):

    x+ = x - tau (c + A^T y)
    y+ = P_{K*}(y + sigma (A (2 x+ - x) - b))

The named steps:

- ``precondition`` (``precondition.py``): Ruiz + Pock-Chambolle diagonal scaling, cone-preserving;
- ``adaptive_step``: PDLP's adaptive step size: a step is accepted when
  ``eta <= ||dz||_w^2 / (2 |dy^T A dx|)`` (``||dz||_w^2 = w ||dx||^2 + ||dy||^2 / w``), and the next
  trial is ``min((1 - (k+1)^-0.3) eta_bar, (1 + (k+1)^-0.6) eta)``;
- ``restart_test``: every ``check_every`` iterations, the candidate is the current iterate or the
  step-weighted average since the last restart, whichever has the smaller weighted KKT error
  ``sqrt(w ||r_p||^2 + ||r_d||^2 / w + gap^2)`` (cuPDLP's rule); restart to it when its error is
  <= 0.2 times the error at the last restart (sufficient), or <= 0.8 times and larger than the
  previous candidate's (no more progress), or when the run since the last restart is >= 36% of all
  iterations (artificial); at a restart the primal weight moves halfway, in log scale, towards
  ``||dy|| / ||dx||`` (the distances moved since the previous restart);
- ``convergence_check``: PDLP's relative criteria in the original (unscaled) space, for both the
  current and the average point:
  ``||r_p|| <= tol (1 + ||b||)``, ``||r_d|| <= tol (1 + ||c||)``,
  ``|c^T x + b^T y| <= tol (1 + |c^T x| + |b^T y|)``, with ``r_p = (b - A x) - P_K(b - A x)`` and
  ``r_d = c + A^T y`` (``y`` is in ``K*`` by construction);
- ``infeasibility_check``: certificates from the iterates: the change since the previous check
  and the current iterate, as rays. ``y`` in ``K*`` (projected) with ``b^T y < 0`` and
  ``||A^T y|| ||b|| <= eps ||A||_F |b^T y|`` proves the primal infeasible (Farkas); ``x`` with
  ``c^T x < 0`` and ``dist(-A x, K) ||c|| <= eps ||A||_F |c^T x|`` proves it unbounded. Both
  ratios are invariant to scaling ``A``, ``b``, ``c`` or the ray, and a feasible (bounded) problem
  cannot pass them unless every feasible point (dual point) has norm >= ||b|| / (eps ||A||)
  (>= ||c|| / (eps ||A||)).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from regspec.backends.torch import iteration_log
from regspec.backends.torch.conic.cones import ConeLayout, ConeProjector
from regspec.backends.torch.conic.precondition import Scaling, precondition

TOL = 1e-7
INFEASIBLE_TOL = 1e-8
CHECK_EVERY = 64
# dense storage below this many entries of A, or above this density (torch's CSR kernels lose to a
# dense matrix-vector product there); one intra-op thread below SMALL_ENTRIES (each op takes
# microseconds, and a thread handoff costs more than it saves)
DENSE_ENTRIES, DENSE_DENSITY = 1 << 20, 0.1
SMALL_ENTRIES = 1 << 16
SUFFICIENT, NECESSARY, ARTIFICIAL = 0.2, 0.8, 0.36
PRIMAL_WEIGHT_SMOOTHING = 0.5


def _norm(v: np.ndarray) -> float:
    """||v||_2 without overflow: entries near 1e308 (finite data) square to inf in NumPy's dot."""
    top = float(np.abs(v).max(initial=0.0))
    return top * float(np.linalg.norm(v / top)) if top > 0 else 0.0


@dataclass
class ConicSolution:
    status: str                      # optimal | infeasible | unbounded | user_limit
    x: np.ndarray
    y: np.ndarray
    iterations: int
    residuals: dict[str, float]
    info: dict = field(default_factory=dict)


class ScaledProblem:
    """The preconditioned data on the solve's device, with the scalings to undo it."""

    def __init__(self, A: sp.csr_matrix, b: np.ndarray, c: np.ndarray, layout: ConeLayout,
                 dtype: torch.dtype, device: torch.device):
        self.layout = layout
        self.projector = ConeProjector(layout, device)
        scaling: Scaling = precondition(A, self.projector.block_ids().numpy())
        As = (sp.diags(scaling.row) @ A @ sp.diags(scaling.col)).tocsr()

        def tensor(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        m, n = A.shape
        if m * n <= DENSE_ENTRIES or A.nnz >= DENSE_DENSITY * m * n:
            self.A = tensor(As.toarray())
            self.AT = self.A.T.contiguous()
        else:
            self.A, self.AT = _csr(As, dtype, device), _csr(As.T.tocsr(), dtype, device)
        # on the CPU a sparse product goes through SciPy's CSR kernel, on the tensors' own memory
        # (torch's CPU CSR matrix-vector product is several times slower); CUDA uses torch's
        self.host_sparse = None
        if self.A.layout != torch.strided and device.type == "cpu":
            np_dtype = np.float64 if dtype == torch.float64 else np.float32
            self.host_sparse = (As.astype(np_dtype), As.T.tocsr().astype(np_dtype))
        self.storage = "dense" if self.A.layout == torch.strided else \
            ("sparse CSR (SciPy kernel)" if self.host_sparse else "sparse CSR")
        self.b, self.c = tensor(scaling.row * b), tensor(scaling.col * c)
        self.row, self.col = tensor(scaling.row), tensor(scaling.col)
        self.norm_b, self.norm_c = _norm(b), _norm(c)
        self.norm_A = float(sp.linalg.norm(A)) if A.nnz else 0.0
        self.max_entry = float(abs(As).max()) if As.nnz else 0.0

    def matvec(self, x: Tensor) -> Tensor:
        if self.host_sparse is not None:
            return torch.from_numpy(self.host_sparse[0] @ x.numpy())
        return torch.mv(self.A, x)  # (for CSR, `A @ x` with a 1-D x takes a far slower path)

    def rmatvec(self, y: Tensor) -> Tensor:
        if self.host_sparse is not None:
            return torch.from_numpy(self.host_sparse[1] @ y.numpy())
        return torch.mv(self.AT, y)


def _csr(M: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> Tensor:
    import warnings

    with warnings.catch_warnings():  # "sparse CSR support is in beta": the one kernel used here is mv
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.as_tensor(M.indptr, dtype=torch.int64),
                                       torch.as_tensor(M.indices, dtype=torch.int64),
                                       torch.as_tensor(M.data, dtype=dtype), size=M.shape,
                                       check_invariants=True).to(device)


@dataclass
class Point:
    """A primal-dual point in the scaled space with its two products (kept to avoid recomputing)."""

    x: Tensor
    y: Tensor
    Ax: Tensor
    ATy: Tensor

    def copy(self) -> "Point":
        return Point(self.x.clone(), self.y.clone(), self.Ax.clone(), self.ATy.clone())


class Average:
    """The step-weighted running average of the iterates since the last restart."""

    def __init__(self, like: Point):
        self.sums = Point(*(torch.zeros_like(t) for t in (like.x, like.y, like.Ax, like.ATy)))
        self.weight = 0.0

    def add(self, z: Point, eta: float) -> None:
        for s, t in zip((self.sums.x, self.sums.y, self.sums.Ax, self.sums.ATy), (z.x, z.y, z.Ax, z.ATy)):
            s.add_(t, alpha=eta)
        self.weight += eta

    def point(self) -> Point:
        w = 1.0 / self.weight
        return Point(self.sums.x * w, self.sums.y * w, self.sums.Ax * w, self.sums.ATy * w)


# ------------------------------------------------------------------------------------------ steps
def adaptive_step(P: ScaledProblem, z: Point, eta: float, omega: float, k: int) -> tuple[Point, float, float, int]:
    """One accepted PDHG step with PDLP's adaptive step size: (new point, step used, next trial
    step, number of trials)."""
    trials = 0
    while True:
        trials += 1
        tau, sigma = eta / omega, eta * omega
        x = z.x - tau * (P.c + z.ATy)
        Ax = P.matvec(x)
        y = P.projector.project(z.y + sigma * (2.0 * Ax - z.Ax - P.b), dual=True)
        ATy = P.rmatvec(y)
        dx, dy = x - z.x, y - z.y
        interaction = abs(float(torch.dot(dx, ATy - z.ATy)))
        movement = 0.5 * (omega * float(torch.dot(dx, dx)) + float(torch.dot(dy, dy)) / omega)
        eta_bar = movement / interaction if interaction > 0 else math.inf
        kk = k + trials
        eta_next = min((1.0 - (kk + 1) ** -0.3) * eta_bar, (1.0 + (kk + 1) ** -0.6) * eta)
        if eta <= eta_bar:
            return Point(x, y, Ax, ATy), eta, eta_next, trials
        eta = eta_next


@dataclass
class Residuals:
    primal: float       # ||r_p|| (original space)
    dual: float         # ||r_d||
    pobj: float         # c^T x
    dobj: float         # -b^T y
    primal_rel: float
    dual_rel: float
    gap_rel: float
    kkt_scaled: float   # the weighted KKT error in the scaled space (restarts)

    def worst(self) -> float:
        return max(self.primal_rel, self.dual_rel, self.gap_rel)


def residuals(P: ScaledProblem, z: Point, omega: float) -> Residuals:
    """The residuals of ``z`` in the original space (convergence) and its weighted KKT error in the
    scaled space (restarts)."""
    s = P.b - z.Ax
    rp = s - P.projector.project(s)
    rd = P.c + z.ATy
    pobj, dobj = float(torch.dot(P.c, z.x)), -float(torch.dot(P.b, z.y))
    primal = float(torch.linalg.vector_norm(rp / P.row))
    dual = float(torch.linalg.vector_norm(rd / P.col))
    gap = abs(pobj - dobj)
    kkt = math.sqrt(omega * float(torch.dot(rp, rp)) + float(torch.dot(rd, rd)) / omega + gap * gap)
    return Residuals(primal, dual, pobj, dobj, primal / (1.0 + P.norm_b), dual / (1.0 + P.norm_c),
                     gap / (1.0 + abs(pobj) + abs(dobj)), kkt)


def convergence_check(res: Residuals, tol: float) -> bool:
    return res.primal_rel <= tol and res.dual_rel <= tol and res.gap_rel <= tol


def infeasibility_check(P: ScaledProblem, rays: list[tuple[Tensor, Tensor]],
                        eps: float) -> tuple[str, float, Tensor] | None:
    """``("infeasible" | "unbounded", ratio, ray)`` when a ray (scaled-space ``(dx, dy)``) certifies
    it; ``ray`` is the certificate (``y`` in ``K*`` or ``x``), scaled space."""
    if P.norm_A == 0.0:
        return None
    for dx, dy in rays:
        y = P.projector.project(dy, dual=True)            # in K*; y_orig = D_r y
        bty = float(torch.dot(P.b, y))                      # = b_orig^T y_orig
        if bty < 0 and P.norm_b > 0:
            aty = float(torch.linalg.vector_norm(P.rmatvec(y) / P.col))
            ratio = aty * P.norm_b / (P.norm_A * -bty)
            if ratio <= eps:
                return "infeasible", ratio, y
        ctx = float(torch.dot(P.c, dx))                     # = c_orig^T x_orig
        if ctx < 0 and P.norm_c > 0:
            w = -P.matvec(dx)
            dist = float(torch.linalg.vector_norm((w - P.projector.project(w)) / P.row))
            ratio = dist * P.norm_c / (P.norm_A * -ctx)
            if ratio <= eps:
                return "unbounded", ratio, dx
    return None


def primal_weight_update(omega: float, new: Point, old: Point) -> float:
    """PDLP's update at a restart: halfway, in log scale, towards ||dy|| / ||dx|| (the distances moved
    since the previous restart); unchanged when either distance is negligible."""
    dx = float(torch.linalg.vector_norm(new.x - old.x))
    dy = float(torch.linalg.vector_norm(new.y - old.y))
    if dx <= 1e-10 or dy <= 1e-10:
        return omega
    return math.exp(PRIMAL_WEIGHT_SMOOTHING * math.log(dy / dx) + (1 - PRIMAL_WEIGHT_SMOOTHING) * math.log(omega))


# ------------------------------------------------------------------------------------------ the loop
@dataclass
class _RestartState:
    start: Point              # the point the current run started from
    start_kkt: float
    previous_candidate_kkt: float
    since: int                # iteration of the last restart
    count: int = 0


def restart_test(cand_kkt: float, state: _RestartState, iteration: int) -> bool:
    """cuPDLP's restart conditions on the weighted KKT error (module docstring)."""
    run = iteration - state.since
    if cand_kkt <= SUFFICIENT * state.start_kkt:
        return True
    if cand_kkt <= NECESSARY * state.start_kkt and cand_kkt > state.previous_candidate_kkt:
        return True
    return run >= ARTIFICIAL * iteration


def solve_conic_pdhg(A: sp.csr_matrix, b: np.ndarray, c: np.ndarray, layout: ConeLayout, *,
                     tol: float = TOL, max_iter: int = 100000, infeasible_tol: float = INFEASIBLE_TOL,
                     check_every: int = CHECK_EVERY, time_limit: float | None = None,
                     dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> ConicSolution:
    """Solve ``min c^T x  s.t.  b - A x in K`` (module docstring); x and y are returned in the
    original space as float64 arrays."""
    device = torch.device(device)
    if device.type != "cpu" or A.shape[0] * A.shape[1] >= SMALL_ENTRIES:
        return _solve(A, b, c, layout, tol, max_iter, infeasible_tol, check_every, time_limit, dtype, device)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _solve(A, b, c, layout, tol, max_iter, infeasible_tol, check_every, time_limit, dtype, device)
    finally:
        torch.set_num_threads(before)


def _solve(A: sp.csr_matrix, b: np.ndarray, c: np.ndarray, layout: ConeLayout, tol: float, max_iter: int,
           infeasible_tol: float, check_every: int, time_limit: float | None, dtype: torch.dtype,
           device: torch.device) -> ConicSolution:
    t0 = time.perf_counter()
    P = ScaledProblem(A, b, c, layout, dtype, device)
    setup = time.perf_counter() - t0
    m, n = A.shape
    zeros = Point(P.c.new_zeros(n), P.c.new_zeros(m), P.c.new_zeros(m), P.c.new_zeros(n))
    cn, bn = float(torch.linalg.vector_norm(P.c)), float(torch.linalg.vector_norm(P.b))
    omega = cn / bn if cn > 1e-10 and bn > 1e-10 else 1.0
    eta = 1.0 / P.max_entry if P.max_entry > 0 else 1.0
    z, avg = zeros, Average(zeros)
    first = residuals(P, z, omega)
    state = _RestartState(z.copy(), first.kkt_scaled, math.inf, 0)
    last_check = z.copy()
    iteration = trials = 0
    status, best, best_res = "user_limit", z, first
    log = iteration_log.callback("conic")  # `regspec solve --verbose`
    while iteration < max_iter:
        z, used, eta, tried = adaptive_step(P, z, eta, omega, trials)
        trials += tried
        iteration += 1
        avg.add(z, used)
        if iteration % check_every and iteration < max_iter:
            continue
        z_avg = avg.point()
        r_cur, r_avg = residuals(P, z, omega), residuals(P, z_avg, omega)
        best, best_res = (z, r_cur) if r_cur.worst() <= r_avg.worst() else (z_avg, r_avg)
        if convergence_check(best_res, tol):
            status = "optimal"
            break
        if log is not None:
            log(iteration, None, {k: getattr(best_res, k) for k in ("primal_rel", "dual_rel", "gap_rel")})
        found = infeasibility_check(P, [(z.x - last_check.x, z.y - last_check.y), (z.x, z.y)], infeasible_tol)
        if found is not None:
            status, ratio, ray = found
            break
        last_check = z.copy()
        if not (math.isfinite(r_cur.kkt_scaled) and math.isfinite(eta)):
            status = "solver_error"
            break
        cand, cand_kkt = (z, r_cur.kkt_scaled) if r_cur.kkt_scaled <= r_avg.kkt_scaled else (z_avg, r_avg.kkt_scaled)
        if restart_test(cand_kkt, state, iteration):
            omega = primal_weight_update(omega, cand, state.start)
            z = cand.copy()
            state = _RestartState(z.copy(), residuals(P, z, omega).kkt_scaled, math.inf, iteration, state.count + 1)
            avg = Average(z)
        else:
            state.previous_candidate_kkt = cand_kkt
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    info = {"primal_weight": omega, "step": eta, "restarts": state.count, "step_trials": trials,
            "setup_s": setup, "rows": m, "cols": n, "nnz": int(A.nnz), "storage": P.storage}
    if status in ("infeasible", "unbounded"):
        info["certificate_ratio"] = ratio
        return _solution(P, status, best, best_res, iteration, info, ray)
    return _solution(P, status, best, best_res, iteration, info)


def _solution(P: ScaledProblem, status: str, best: Point, res: Residuals, iterations: int, info: dict,
              ray: Tensor | None = None) -> ConicSolution:
    """The answer in the original space: the best certified point, or for a certificate of
    infeasibility (unboundedness) the ray as y (x), the other part zero."""
    x, y = best.x, best.y
    if status == "infeasible":
        x, y = torch.zeros_like(best.x), ray
    elif status == "unbounded":
        x, y = ray, torch.zeros_like(best.y)
    residual_dict = {"primal": res.primal, "dual": res.dual, "primal_rel": res.primal_rel, "dual_rel": res.dual_rel,
                     "gap_rel": res.gap_rel, "pobj": res.pobj, "dobj": res.dobj}
    return ConicSolution(status, (x * P.col).double().cpu().numpy(), (y * P.row).double().cpu().numpy(),
                         iterations, residual_dict, info)
    return ConicSolution(status, x, y, iteration, res, info)
