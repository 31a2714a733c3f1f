"""Restarted PDHG (averaged iterates, adaptive restarts, primal-weight updates) for the problem
backend, after Applegate et al., "Practical large-scale linear programming using primal-dual
hybrid gradient" (PDLP) and "Faster first-order primal-dual methods for linear programming using
restarts and sharpness". Written against the conventions of ``solvers.pdhg`` (same closures,
same step-size condition, same residuals and stopping rule), which it reuses; what it adds is the
restart loop, which the plain method lacks and which makes PDHG converge linearly on sharp
problems (LPs such as transport, l1 fits, polyhedral norms) instead of at its O(1/k) ergodic rate.

Problem: ``min_x s(x) + g(x) + sum_k f_k(K_k x)``. One iteration from ``z = (x, y)``:

    x+ = prox_{tau g}(x - tau (grad s(x) + K^T y))
    y+_k = prox_{sigma f_k*}(y_k + sigma K_k (2 x+ - x))

with ``tau = eta / w``, ``sigma = eta w``, ``tau (L/2 + sigma ||K||^2) < 1`` (``pdhg_step_sizes``).
Write ``T(z)`` for one iteration. Since the restart point ``z_0``, the running average
``zbar = mean(z_1..z_t)`` is kept next to the current iterate ``z_t``.

Certificate (as in ``solvers.pdhg``): the step ``z -> T(z)`` gives residuals ``p`` (primal) and ``d``
(dual) that vanish exactly at saddle points and certify ``T(z)``. Every ``check_every``
iterations both ``T(z_t)`` (free: it is the next iterate) and ``T(zbar)`` (one extra iteration)
are certified; ``kkt(z) = max(p_rel, d_rel)`` of that step. The run stops (``"optimal"``) as soon
as a certified point passes ``RULE`` (residuals, objective error and duality gap), and returns it.

Duality gap. The step's subgradients give the dual objective without a conjugate formula:
``u+ in dg(x+)`` and ``v_k in df_k*(y+_k)``, so ``g*(u+) = <u+, x+> - g(x+)`` and
``f_k*(y+_k) = <y+_k, v_k> - f_k(v_k)`` (Fenchel-Young, equality). With
``D = s(x+) - <grad s(x+), x+> - g*(u+) - sum_k f_k*(y+_k)`` (the Lagrangian dual at ``y+`` with the
stationarity residual ``p = grad s(x+) + u+ + K^T y+`` left out, as PDLP leaves out the reduced
costs' infeasible part),

    P(x+) - D = <p, x+> + sum_k [f_k(K_k x+) - f_k(v_k) + <y+_k, v_k - K_k x+>].

For an indicator block (a constraint) the bracket is ``sigma_S(y+_k) - <y+_k, K_k x+>``, the
complementarity of the block (``f_k(K_k x+)`` counts as 0: the violation is test (1)'s); it is
computed with ``v_k`` projected onto S, so rounding cannot take it out of the set. For a term
block the bracket is ``f_k(K_k x+) + f_k*(y+_k) - <y+_k, K_k x+> >= 0``: computed exactly for the
weighted norms (l1, row-group l2: TV, fusion, l1 fits), whose conjugate is the indicator of the
dual ball (``y+_k`` is in it) minus ``<c_k, y+_k>`` (``BlockCheck.conjugate_gap``); for other terms a
Bregman remainder in ``[0, 2 L_k(d_k)]``, left to test (3). A
restarted run on second-order cones used to stop with ``<y+_k, v_k - K_k x+>`` of the order of the
objective times 10 tol (a feasible point strictly inside the cone while ``y+_k != 0``): residuals
of 1e-9 and an objective error of 8e-9 (bench/RESULTS.md).

Restarts (PDLP's rules, with kkt in place of the normalized duality gap): the candidate is
``T(zbar)`` or ``T(z_t)``, whichever has the smaller kkt. Restart to it when
(sufficient) ``kkt(cand) <= 0.2 kkt(z_0)``, or (necessary) ``kkt(cand) <= 0.8 kkt(z_0)`` and
``kkt(cand) > kkt`` of the previous candidate, or (artificial) the run since the last restart is
at least 36% of all iterations. At a restart the primal weight moves halfway (in log scale)
towards ``||Delta y|| / ||Delta x||``, the distances travelled since the previous restart, and the
steps are recomputed for the new weight: the condition holds at every iteration.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from regspec.backends.torch.solvers import (OPTIMAL, SOLVER_ERROR, USER_LIMIT, LinearOperator, SolverResult,
                                            _adjoint_sum, _maxabs, _pdhg_primal_terms, _pdhg_residuals_from,
                                            _Smooth, _sqnorm, _sqnorm1,
                                            check_pdhg_steps, pdhg_step_sizes)

__all__ = ["restarted_pdhg", "BlockCheck", "INFEASIBLE", "UNBOUNDED"]

INFEASIBLE = "infeasible"
UNBOUNDED = "unbounded"

RULE = ("stop at a certified point T(z) (z = the current iterate or the average since the last restart; "
        "p, d the fixed-point residuals of the step z -> T(z), d = v - K x+ with v in df*(y+)) when "
        "(1) every constraint block k has ||d_k||_inf <= tol * max(||K_k x+||_inf, ||v_k||_inf) (its violation "
        "relative to the size of its own terms; blocks whose terms vanish: sqrt(eps) ||x+||_inf); "
        "(2) every variable i has ||p_i||_inf <= tol * max(||(K^T y+)_i||_inf, ||u_i||_inf, ||grad_i s||_inf) "
        "(stationarity relative to the objective's gradient scale; a variable whose scale is below sqrt(eps) of the largest "
        "any variable had in the run, from the start, is judged against that largest); (3) the first-order objective error "
        "sum_k L_k(d_k) (L_k the Lipschitz bound of term k: its dual-ball radius; |<y_k, d_k>| for a "
        "constraint) is <= tol * max(|P(x+)|, the terms' sizes); (4) the duality gap (PDLP's rule) "
        "|P(x+) - D| <= tol * (1 + |P(x+)| + |D|), D the dual objective at the step's subgradients: "
        "P - D = <p, x+> + sum over constraint blocks of sigma_S(y+_k) - <y+_k, K_k x+> (sigma_S the support "
        "function, <y+_k, proj_S(v_k)>) + sum over weighted-norm terms of f_k(K_k x+) + f_k*(y+_k) - "
        "<y+_k, K_k x+> (other terms' Bregman remainders are bounded by (3))")


@dataclass
class BlockCheck:
    """What the certificate needs to know about one dual block (in the scaled coordinates PDHG runs in).

    ``constraint``: the block is the indicator of a set S (``lhs == rhs``, ``lhs <= rhs``, ``in SET``);
    its residual is a violation, measured relative to the block's own terms. Otherwise it is a term
    ``f(K x + c)`` of the objective, whose residual matters through the objective: ``term_bound(d)``
    bounds ``|f(z + d) - f(z)|`` (the Lipschitz bound of f, e.g. ``sum |r * d|`` for a weighted l1 of dual
    radius r); None: estimated by ``||y|| ||d||``. ``project(z)``: the projection onto S (constraint
    blocks), used to verify infeasibility and unboundedness certificates. ``conjugate_gap(K x, y)``:
    ``f(K x) + f*(y) - <y, K x>`` (>= 0) for a term whose value and conjugate are known in closed
    form (a weighted norm: f* is the indicator of its dual ball minus ``<c, y>``), the block's part of
    the duality gap; None: that part is left to the objective-error test. ``name``: for reports."""

    name: str
    constraint: bool
    term_bound: Callable[[Tensor], Tensor] | None = None
    project: Callable[[Tensor], Tensor] | None = None
    conjugate_gap: Callable[[Tensor, Tensor], Tensor] | None = None


def _norm_lists(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return math.sqrt(max(float(_sqnorm([ai - bi for ai, bi in zip(a, b)])), 0.0)) if a else 0.0


class _DualWork:
    """Named dual-shaped work tensors, allocated once per solve: on fusion problems a dual tensor
    is the size of the whole problem, and a fresh one costs more than a pass over it (new pages
    are faulted in and zeroed), so the checks, the running average, the restart point and the
    best point live in these and are overwritten in place."""

    def __init__(self, like: list[Tensor]):
        self._like = like
        self._bufs: dict[str, list[Tensor]] = {}

    def __getitem__(self, name: str) -> list[Tensor]:
        if name not in self._bufs:
            self._bufs[name] = [torch.empty_like(t) for t in self._like]
        return self._bufs[name]


def _copy_into(dst: list[Tensor], src: list[Tensor]) -> list[Tensor]:
    for d, s_ in zip(dst, src):
        if d is not s_:
            d.copy_(s_)
    return dst


@torch.no_grad()
def restarted_pdhg(
    prox_g: Callable[[list[Tensor], float], list[Tensor]] | None,
    operators: Sequence[LinearOperator],
    prox_fconj: Sequence[Callable[[Tensor, float], Tensor]],
    x0: list[Tensor],
    *,
    norm_K: float,
    smooth: Callable[[list[Tensor]], Tensor] | None = None,
    smooth_grad: Callable[[list[Tensor]], list[Tensor]] | None = None,
    lipschitz: float = 0.0,
    primal_weight: float | None = None,
    tol: float = 1e-8,
    max_iter: int = 100000,
    check_every: int = 32,
    restart: bool = True,
    time_limit: float | None = None,
    axpy: Sequence[Callable[[Tensor, list[Tensor], float, Tensor | None], Tensor] | None] | None = None,
    average: bool = True,
    checks: Sequence[BlockCheck] | None = None,
    objective: Callable[[list[Tensor]], Tensor | float] | None = None,
    detect: bool = True,
    callback: Callable[[int, list[Tensor], dict[str, float]], bool | None] | None = None,
) -> SolverResult:
    """Restarted averaged PDHG; see the module docstring for the math and restarts, ``RULE`` for
    the stopping rule. ``history`` holds the residuals of the current iterate at each check;
    ``callback(n, x, residuals)`` runs at each check that does not end the run (True stops it).

    ``norm_K`` must bound the stacked operator norm; ``lipschitz`` the Lipschitz constant of
    ``grad s`` (0 without s). The smooth part's constant is checked at every check against the
    secant ``||grad s(x+) - grad s(x)|| / ||x+ - x||`` of the step just taken; a larger secant (an
    estimate made where s was locally flatter, e.g. Huber beyond its knee) doubles it and the
    steps are recomputed. ``time_limit`` (seconds) stops with ``"user_limit"``.

    ``checks``: one :class:`BlockCheck` per block (default: every block a term). ``objective(x)``:
    the primal objective P, for the objective-error test (3) of the rule and for unboundedness;
    without it test (3) is skipped. ``detect``: look for infeasibility and unboundedness
    certificates in the iterates (:func:`_rays`); a verified one ends the run ``"infeasible"``
    or ``"unbounded"``.

    Memory traffic. On fusion problems the dual tensors are much larger than the primal ones, so
    the loop touches them as few times as it can: the extrapolated point is formed as
    ``y + sigma K (2 x+ - x)``, one application of K to a (small) primal difference instead of
    carrying ``K x`` (``axpy[k](y, d, alpha, out)``, when given, writes ``y + alpha K_k d`` in one
    pass, e.g. a sparse ``addmm``); it is written into the buffer of the dual iterate of two
    iterations ago (allocating a large tensor costs more than a pass over it: fresh pages), and
    the conjugate proxes may work in place on it (they receive a temporary). ``K x`` is
    not kept at all (the checks form K(x+ - x) and K x+ in work buffers). Dual tensors kept beyond
    one iteration (running sum, average, restart point, best point) live in work buffers
    allocated once per solve (``_DualWork``) and are overwritten in place.

    Returns a ``SolverResult`` whose ``x``, ``y`` are the certified point (the best one seen when
    not optimal), ``residuals`` its ``primal``, ``dual``, ``primal_rel``, ``dual_rel`` (2-norm
    forms, which drive the restarts), ``feasibility_rel``, ``stationarity_rel``,
    ``objective_error_rel`` (the rule's three tests) and ``info`` the steps, weight, restart counts,
    per-block ``violations`` and, for an infeasible or unbounded end, the ``certificate``.
    """
    t_start = time.perf_counter()
    ops = list(operators)
    conjs = list(prox_fconj)
    axpys = list(axpy) if axpy is not None else [None] * len(ops)
    block_checks = list(checks) if checks is not None else [BlockCheck(f"block {k}", False) for k in range(len(ops))]
    if len(block_checks) != len(ops):
        raise ValueError("one BlockCheck per operator is required")
    like = x0[0]
    eps = torch.finfo(like.dtype).eps
    tol_eff = max(float(tol), 50.0 * eps)
    floor_rel = math.sqrt(eps)
    scale_seen = [0.0]  # the largest stationarity scale of any variable at any check so far
    prox = prox_g if prox_g is not None else (lambda vs, t: list(vs))
    has_smooth = smooth is not None or smooth_grad is not None
    sm = _Smooth(smooth, smooth_grad, x0) if has_smooth else None
    Ls = float(lipschitz) if has_smooth else 0.0
    lipschitz_raised = 0
    nK = float(norm_K)
    w = float(primal_weight) if primal_weight is not None else \
        _initial_primal_weight(sm, x0, conjs, ops, block_checks)
    tau, sigma = pdhg_step_sizes(nK, Ls, w)
    check_pdhg_steps(tau, sigma, nK, Ls)

    def grad(xs: list[Tensor]) -> list[Tensor] | None:
        return sm.value_and_grad(xs, need_value=False)[1] if sm is not None else None

    def apply_all(xs: list[Tensor]) -> list[Tensor]:
        return [o.apply(xs) for o in ops]

    def step(x, y, KTy, gs, spare_y=None):
        """One iteration from (x, y); KTy = K^T y and gs = grad s(x) are carried."""
        v = torch._foreach_add(x, KTy, alpha=-tau)
        if gs is not None:
            torch._foreach_add_(v, gs, alpha=-tau)
        x_new = list(prox(v, tau))
        d = torch._foreach_lerp(x, x_new, 2.0)  # 2 x+ - x in one pass: K(2x+ - x) = 2 K x+ - K x
        y_new = []
        for k, (yk, o, ax, pf) in enumerate(zip(y, ops, axpys, conjs)):
            buf = spare_y[k] if spare_y is not None else None
            if ax is not None:
                wk = ax(yk, d, sigma, buf)
            elif buf is not None:
                wk = torch.add(yk, o.apply(d), alpha=sigma, out=buf)
            else:
                wk = torch.add(yk, o.apply(d), alpha=sigma)
            y_new.append(pf(wk, sigma))
        KTy_new = _adjoint_sum(ops, y_new, x_new)
        return x_new, y_new, KTy_new, grad(x_new)

    def copy(ts: list[Tensor]) -> list[Tensor]:
        return [t.clone() for t in ts]

    def kkt(res: dict[str, float]) -> float:
        return max(res["primal_rel"], res["dual_rel"])

    def k_into(k: int, xs: list[Tensor], out: Tensor, alpha: float = 1.0, y: Tensor | None = None) -> Tensor:
        """y + alpha K_k xs, written into ``out`` when the block has a one-pass form."""
        if axpys[k] is not None:
            return axpys[k](y, xs, alpha, out)
        kx = ops[k].apply(xs)  # may be an input (an identity block): never written to
        if y is None:
            return kx if alpha == 1.0 else kx * alpha
        return torch.add(y, kx, alpha=alpha)

    def certify(x, x_new, y, y_new, KTy, KTy_new, gs, gs_new) -> dict[str, float]:
        """solvers.pdhg's residuals of the step z -> T(z) (2-norm forms, for the restarts) and the
        per-block and per-variable max-norm measures of ``RULE``. The dual residual without K x or
        K x+ kept around: sigma d = (y - y+) + sigma K(x+ - x) (the difference taken first, exactly
        where y+ is close to y), then K x+ and v+ = d + K x+ (in df*(y+)); one host sync."""
        per_var: list[Tensor] = []
        gap_parts: list[Tensor] = []  # <p, x+>, then each block's part (see the module docstring)
        primal = _pdhg_primal_terms(x, x_new, KTy, KTy_new, gs, gs_new, tau, per_variable=per_var,
                                    p_dot_x=gap_parts)
        r1, r2 = work["res1"], work["res2"]
        dx = torch._foreach_sub(x_new, x)
        zero = torch.zeros_like(primal[0])
        dd = kk = dk = zero
        per_block: list[Tensor] = []
        for k, (yk, ynk) in enumerate(zip(y, y_new)):
            diff = torch.sub(yk, ynk, out=r1[k])
            d = k_into(k, dx, r2[k], sigma, diff).div_(sigma)  # d_k
            kxn = k_into(k, x_new, r1[k])  # K x+ (r1 is free again)
            dd = dd + _sqnorm1(d)
            kk = kk + _sqnorm1(kxn)
            dk = dk + torch.vdot(d.reshape(-1), kxn.reshape(-1))
            bc = block_checks[k]
            if bc.constraint:
                # the gap's part of an indicator block: sigma_S(y+) - <y+, K x+>, with the support
                # function sigma_S(y+) = <y+, v+> (y+ is normal to S at the step's v+ = d + K x+);
                # v+ projected onto S, so that rounding in v+ cannot leave S
                v_step = torch.add(d, kxn)
                if bc.project is not None:
                    v_step = bc.project(v_step)
                gap_parts.append(torch.vdot(ynk.reshape(-1), v_step.sub_(kxn).reshape(-1)))
            if bc.constraint and bc.project is not None:
                # the violation itself, K x+ - proj_S(K x+): d's v+ comes from (y - y+) / sigma, which
                # rounding erases when sigma |K x + c| is below eps |y| (badly scaled data)
                d = torch.sub(kxn, bc.project(kxn), out=d)
            if bc.constraint:
                err = torch.vdot(ynk.reshape(-1), d.reshape(-1)).abs()
            elif bc.term_bound is not None:
                err = bc.term_bound(d)
            else:
                err = torch.sqrt(_sqnorm1(ynk) * _sqnorm1(d))
            if bc.conjugate_gap is not None:  # a term's part of the gap, when its conjugate is known
                gap_parts.append(bc.conjugate_gap(kxn, ynk))
            d_inf, kx_inf = _maxabs(d), _maxabs(kxn)
            if bc.constraint:
                kx_inf = torch.maximum(kx_inf, _term_size(ops[k].apply, x_new, signs))
            v = d.neg_().add_(kxn) if bc.constraint and bc.project is not None else d.add_(kxn)  # v+ (or proj_S)
            if bc.constraint:
                size = torch.vdot(ynk.reshape(-1), v.reshape(-1)).abs()
            elif bc.term_bound is not None:
                size = bc.term_bound(kxn) + bc.term_bound(v)
            else:
                size = torch.sqrt(_sqnorm1(ynk) * _sqnorm1(v))
            per_block += [d_inf, kx_inf, _maxabs(v), err, size]
        # per variable, the largest single block's K_k^T y_k: the blocks' parts of K^T y cancel at a
        # saddle point of a problem made of norms only, so their sum is not the scale; nor is one
        # block's K_k^T y_k without a smooth part: its own terms cancel (A^T y = 0 at the optimum of
        # ||A x - b||_1, where 0 = K^T y is the whole condition), so the size ||K|| ||y_k||_inf of
        # one of those terms joins it
        adj_scale: list[Tensor | None] = [None] * len(x_new)
        for o, ynk in zip(ops, y_new):
            y_size = _maxabs(ynk) * nK if sm is None else None
            for i, part in enumerate(o.adjoint(ynk)):
                if part is not None:
                    m = _maxabs(part) if y_size is None else torch.maximum(_maxabs(part), y_size)
                    adj_scale[i] = m if adj_scale[i] is None else torch.maximum(adj_scale[i], m)
        for i, a_i in enumerate(adj_scale):
            if a_i is not None:
                per_var[2 * i + 1] = torch.maximum(per_var[2 * i + 1], a_i)
        extra = [sum(gap_parts), torch.stack([_maxabs(t) for t in x_new]).max()]
        if sm is not None:
            extra += [_sqnorm(torch._foreach_sub(gs_new, gs)), _sqnorm(dx)]
        vals = torch.stack(primal + [dd, kk, dd + kk + 2.0 * dk] + per_var + per_block + extra).tolist()
        res = _residuals_from_values(vals[:7])
        nv = len(per_var)
        at = 7 + nv + len(per_block)
        scale_seen[0] = max(scale_seen[0], max(vals[8:7 + nv:2], default=0.0))
        res.update(_rule_measures(vals[7:7 + nv], vals[7 + nv:at], vals[at + 1], block_checks, floor_rel,
                                  scale_seen[0]))
        res["_gap"] = vals[at]
        if sm is not None:
            gdiff, xdiff = vals[-2], vals[-1]
            res["secant"] = math.sqrt(max(gdiff, 0.0) / xdiff) if xdiff > 0 else 0.0
        return res

    def accepts(res: dict[str, float], xs: list[Tensor]) -> bool:
        """The rule's tests (1)-(4) at a certified point; P(x) is evaluated only when (1) and (2) hold."""
        if not (res["feasibility_rel"] <= tol_eff and res["stationarity_rel"] <= tol_eff):
            return False
        if objective is None:
            res["objective_error_rel"] = 0.0
            return True
        P = _float_of(objective(xs))
        if not math.isfinite(P):
            return False
        scale = max(abs(P), res["_size"], 1e-300)
        res["objective_error_rel"] = res["_err"] / scale
        res["objective"] = P
        D = P - res["_gap"]
        res["dual_objective"] = D
        res["gap_rel"] = abs(res["_gap"]) / (1.0 + abs(P) + abs(D))
        return res["objective_error_rel"] <= tol_eff and res["gap_rel"] <= tol_eff

    def dual_distance(a: list[Tensor], b: list[Tensor]) -> float:
        r1 = work["res1"]
        total = sum((_sqnorm1(torch.sub(ak, bk, out=r1[k])) for k, (ak, bk) in enumerate(zip(a, b))),
                    torch.zeros((), dtype=like.dtype, device=like.device))
        return math.sqrt(max(float(total), 0.0))

    def detect_rays(n: int, x_new: list[Tensor], y_new: list[Tensor], snap) -> dict[str, object] | None:
        """Certificates from the iterates: (x_n - x_m, y_n - y_m) since the snapshot taken at check
        m (no restart in between) approximates the infimal displacement of the PDHG map, which is
        zero when a saddle point exists; its dual part is checked as a Farkas ray, its primal part
        as a recession direction of decrease."""
        if snap is None or snap[0] != restarts:
            return None
        _, n_m, xs_m, ys_m = snap
        # only a displacement that keeps pace with the iterates' growth (z_n ~ n v) is a candidate:
        # on a converging run it shrinks, and the verification is not paid
        pace = 0.5 * (n - n_m) / n
        dy = [a - b for a, b in zip(y_new, ys_m)]
        cert = None
        if _norm2(dy) > pace * _norm2(y_new):
            cert = _infeasibility_certificate(dy, ops, block_checks, prox, x_new)
        if cert is None and objective is not None:
            dx = [a - b for a, b in zip(x_new, xs_m)]
            if _norm2(dx) > pace * _norm2(x_new):
                cert = _unboundedness_certificate(dx, x_new, ops, block_checks, prox, objective)
        return cert

    signs = _random_signs(x0)
    x = [t.detach().clone() for t in x0]
    y = [torch.zeros_like(k) for k in apply_all(x)]
    KTy = _adjoint_sum(ops, y, x)
    gs = grad(x)
    if gs is not None:  # the problem's gradient scale at the start: the floor for terms that vanish later
        scale_seen[0] = max((float(_maxabs(g)) for g in gs), default=0.0)
    work = _DualWork(y)

    # restart bookkeeping: the restart point, its kkt, and sums for the average since then
    x_r, y_r = copy(x), _copy_into(work["restart_y"], y) if restart else y
    kkt_r = math.inf
    kkt_prev_cand = math.inf
    n_since = 0
    sums: list[list[Tensor]] | None = None
    restarts = 0
    status = USER_LIMIT
    best: tuple[float, list[Tensor], list[Tensor], dict[str, float]] = (math.inf, x, y, {})
    cand: tuple = (math.inf, x, y, {}, KTy, gs)
    n = 0
    extra = 0
    checks_done = 0
    snapshot: tuple[int, list[Tensor], list[Tensor]] | None = None
    certificate: dict[str, object] | None = None
    spare_y: list[Tensor | None] | None = None
    history: list[dict[str, float]] = []
    while n < max_iter:
        n += 1
        n_since += 1
        x_new, y_new, KTy_new, gs_new = step(x, y, KTy, gs, spare_y)
        if restart and average:
            # running sums of x and y since the restart (K xbar and K^T ybar are computed at checks)
            if sums is None:
                sums = [copy(x_new), _copy_into(work["sum_y"], y_new)]
            else:
                torch._foreach_add_(sums[0], x_new)
                torch._foreach_add_(sums[1], y_new)
        if n % check_every == 0 or n == max_iter:
            checks_done += 1
            res = certify(x, x_new, y, y_new, KTy, KTy_new, gs, gs_new)
            if not all(math.isfinite(v) for v in res.values() if isinstance(v, float)):
                status = SOLVER_ERROR
                x, y = x_new, y_new
                break
            cand = (kkt(res), x_new, y_new, res, KTy_new, gs_new)
            logged = {k: v for k, v in res.items() if isinstance(v, float) and not k.startswith("_")}
            history.append({"iteration": float(n), **logged})
            if accepts(res, x_new):
                status = OPTIMAL
                break
            if callback is not None and callback(n, x_new, dict(logged)):
                break  # status stays user_limit
            secant = res.get("secant", 0.0)
            if restart and sums is not None and n_since > 1:
                # T(zbar): one extra iteration from the average since the last restart
                inv = 1.0 / n_since
                xb = [t * inv for t in sums[0]]
                yb = [torch.mul(t, inv, out=o) for t, o in zip(sums[1], work["avg_y"])]
                KTyb = _adjoint_sum(ops, yb, xb)
                gb = grad(xb)
                xb2, yb2, KTyb2, gb2 = step(xb, yb, KTyb, gb, work["avg_y2"])
                extra += 1
                res_b = certify(xb, xb2, yb, yb2, KTyb, KTyb2, gb, gb2)
                k_avg = kkt(res_b)
                secant = max(secant, res_b.get("secant", 0.0))
                if math.isfinite(k_avg) and k_avg < cand[0]:
                    cand = (k_avg, xb2, yb2, res_b, KTyb2, gb2)
                    if accepts(res_b, xb2):
                        status = OPTIMAL
                        break
            if cand[0] < best[0]:
                best = (cand[0], copy(cand[1]), _copy_into(work["best_y"], cand[2]), cand[3])
            if time_limit is not None and time.perf_counter() - t_start > time_limit:
                break
            if sm is not None and secant > Ls:
                # the Lipschitz estimate was local (made where s is flatter): steps for twice the secant
                Ls = 2.0 * secant
                lipschitz_raised += 1
                tau, sigma = pdhg_step_sizes(nK, Ls, w)
            if detect and checks_done % 4 == 3 and n >= 8 * check_every:
                # every 4th check: the displacement since the previous such check (no restart between)
                certificate = detect_rays(n, x_new, y_new, snapshot)
                if certificate is not None:
                    status = str(certificate["status"])
                    break
                snapshot = (restarts, n, copy(x_new), _copy_into(work["ray_y"], y_new))
            if restart:
                k_c = cand[0]
                do = (k_c <= 0.2 * kkt_r or (k_c <= 0.8 * kkt_r and k_c > kkt_prev_cand)
                      or n_since >= 0.36 * n)
                kkt_prev_cand = k_c
                if do:
                    _, xc, yc, _, KTyc, gc = cand
                    dx = _norm_lists(xc, x_r)
                    dy = dual_distance(yc, y_r)
                    if dx > 1e-10 and dy > 1e-10 and math.isfinite(dx) and math.isfinite(dy):
                        w = math.exp(0.5 * math.log(dy / dx) + 0.5 * math.log(w))
                        tau, sigma = pdhg_step_sizes(nK, Ls, w)
                    # the average's dual lives in a work buffer the next check overwrites: the
                    # current iterate's buffers (given up for the candidate) take it
                    x_new, y_new, KTy_new, gs_new = xc, _copy_into(y_new, yc), KTyc, gc
                    x_r, y_r, kkt_r = copy(xc), _copy_into(y_r, yc), k_c
                    kkt_prev_cand = math.inf
                    n_since = 0
                    sums = None
                    restarts += 1
                    snapshot = None
        # the previous dual iterate is free now: its buffers serve the next iteration's
        # extrapolated point (never aliased by y_new or by the kept copies)
        spare_y = [t if all(t is not z for z in y_new) else None for t in y]
        x, y, KTy, gs = x_new, y_new, KTy_new, gs_new

    if status == OPTIMAL:
        _, x_out, y_out, res_out = cand[0], cand[1], cand[2], cand[3]
    elif status in (SOLVER_ERROR, INFEASIBLE, UNBOUNDED):
        x_out, y_out, res_out = x, y, {}
    else:
        _, x_out, y_out, res_out = best
        if not res_out:
            x_out, y_out = x, y
    keys = ("primal", "dual", "primal_rel", "dual_rel", "feasibility_rel", "stationarity_rel", "objective_error_rel",
            "gap_rel")
    residuals = {k: res_out[k] for k in keys if k in res_out}
    info = {"tau": tau, "sigma": sigma, "norm_K": nK, "lipschitz": Ls, "lipschitz_raised": lipschitz_raised,
            "primal_weight": w, "restarts": restarts, "extra_iterations": extra,
            "step_condition": tau * (0.5 * Ls + sigma * nK * nK), "tol": float(tol), "tol_effective": tol_eff,
            "rule": RULE, "time_s": time.perf_counter() - t_start,
            "violations": res_out.get("_violations", {}), "objective": res_out.get("objective"),
            "dual_objective": res_out.get("dual_objective")}
    if certificate is not None:
        info["certificate"] = {k: v for k, v in certificate.items() if k != "status"}
    return SolverResult(x=x_out, status=status, iterations=n, residuals=residuals, objective=None, history=history,
                        algorithm="restarted-pdhg" if sm is None else "restarted-condat-vu", y=y_out, info=info)


def _initial_primal_weight(sm, x0: list[Tensor], conjs, ops, block_checks: Sequence[BlockCheck]) -> float:
    """PDLP's starting primal weight ||cost|| / ||right-hand side||: the gradient of the smooth part at
    x0 against the constraints' offsets (``prox_{f*}(0)`` with step 1 is c for an equality, its
    positive part for an inequality). Without it, data scaled by 1e4 leaves the dual step ~1e-14 and
    the weight's own updates (driven by the distances travelled) shrink it further. 1 when either
    side is zero."""
    if sm is None:
        return 1.0
    g = sm.value_and_grad([t.detach() for t in x0], need_value=False)[1]
    cost = math.sqrt(max(float(_sqnorm(g)), 0.0))
    rhs2 = 0.0
    for conj, o, bc in zip(conjs, ops, block_checks):
        if bc.constraint:
            rhs2 += float(_sqnorm1(conj(torch.zeros_like(o.apply(x0)), 1.0)))
    rhs = math.sqrt(rhs2)
    if cost > 0 and rhs > 0 and math.isfinite(cost / rhs):
        return cost / rhs
    return 1.0


def _norm2(ts: list[Tensor]) -> float:
    return math.sqrt(max(sum(float(_sqnorm1(t)) for t in ts), 0.0))


def _random_signs(like: list[Tensor], seed: int = 0) -> list[Tensor]:
    """A fixed pattern of +-1 shaped like the variables (for ``_term_size``)."""
    gen = torch.Generator(device=like[0].device)
    gen.manual_seed(seed)
    return [torch.randint(0, 2, t.shape, generator=gen, device=t.device).to(t.dtype).mul_(2).sub_(1) for t in like]


def _term_size(apply: Callable[[list[Tensor]], Tensor], xs: list[Tensor], signs: list[Tensor]) -> Tensor:
    """The size of the terms of ``lhs - rhs = K x`` rather than of their difference, which vanishes
    on a feasible point of ``A x == B x``: ``max(|K |x||, |K (s |x|)|)`` with s a fixed random sign
    pattern (``K |x|`` is exactly ``|K| |x|`` for sums and marginals; the signed one keeps rows like
    ``x_i - 0.5 x_j`` from cancelling on ``|x_i| = 0.5 |x_j|``)."""
    ax = [t.abs() for t in xs]
    return torch.maximum(_maxabs(apply(ax)), _maxabs(apply([a * s for a, s in zip(ax, signs)])))


def _float_of(v: Tensor | float) -> float:
    return float(v.item()) if isinstance(v, Tensor) else float(v)


def _residuals_from_values(vals: list[float]) -> dict[str, float]:
    """solvers.pdhg's 2-norm residuals from the squared norms [p, K^T y+, u+, grad s, d, K x+, v+]."""
    pn, kty, un, gn, dn, kxn, vn = [math.sqrt(max(t, 0.0)) for t in vals]
    return {"primal": pn, "dual": dn, "primal_rel": pn / max(1.0, kty, gn, un), "dual_rel": dn / max(1.0, kxn, vn)}


def _rule_measures(per_var: list[float], per_block: list[float], x_inf: float, block_checks: Sequence[BlockCheck],
                   floor_rel: float, scale_seen: float = 0.0) -> dict[str, object]:
    """The per-variable stationarity and per-block feasibility measures of ``RULE`` and the
    objective-error sums, from the certificate's max-norms (``per_var``: [||p_i||, scale_i] per
    variable; ``per_block``: [||d_k||, ||K_k x+||, ||v_k||, err_k, size_k] per block).
    ``scale_seen``: the largest scale_i of the run so far (from the gradient at the start). Where
    every term of a variable's condition vanishes at the solution (min ||A x - b||_1 with A
    invertible: y = 0 and A x = b; a variable only a slack equality names, its multiplier 0), its
    scale goes to 0 with p and their ratio does not: a scale below sqrt(eps) of the problem's scale
    as the run saw it is replaced by that scale (such runs ended user_limit at residuals of 1e-9 to
    1e-16)."""
    scales = per_var[1::2]
    problem_scale = max(max(scales, default=0.0), scale_seen)
    floor_p = floor_rel * problem_scale
    stat = max((p / (sc if sc >= floor_p and sc > 0 else max(problem_scale, 1e-300))
                for p, sc in zip(per_var[0::2], scales)), default=0.0)
    feas = 0.0
    violations: dict[str, float] = {}
    err = size = 0.0
    for k, bc in enumerate(block_checks):
        d_inf, kx_inf, v_inf, e_k, s_k = per_block[5 * k:5 * k + 5]
        err += e_k
        size += s_k
        if bc.constraint:
            rel = d_inf / max(kx_inf, v_inf, floor_rel * x_inf, 1e-300)
            violations[bc.name] = max(violations.get(bc.name, 0.0), rel)
            feas = max(feas, rel)
    return {"feasibility_rel": feas, "stationarity_rel": stat, "_err": err, "_size": size,
            "_violations": violations}


# Certificates of infeasibility and unboundedness are accepted at this relative accuracy (PDLP's
# eps_infeasible is 1e-8 with exact LP data; here the support functions are evaluated through
# projections, so a looser, stated level).
RAY_TOL = 1e-6


def _support(project: Callable[[Tensor], Tensor], w: Tensor, T: float) -> float:
    """<w, proj_S(T w)>: for T past the set's extent in direction w this is its support function
    sigma_S(w) (exact for polyhedra and balls); it grows like T where sigma_S(w) = +inf."""
    return float(torch.vdot(w.reshape(-1), project(w * T).reshape(-1)))


def _domain_support(prox, ws: list[Tensor], T: float) -> float:
    """<w, proj_D(T w)> over the variable list, D the domain of g: its prox with a vanishing step is
    the projection onto D for indicators and (almost) the identity for finite functions."""
    pts = prox([w * T for w in ws], 1e-12)
    return sum(float(torch.vdot(w.reshape(-1), p.reshape(-1))) for w, p in zip(ws, pts))


def _infeasibility_certificate(dy: list[Tensor], ops, block_checks, prox, like: list[Tensor]) -> dict | None:
    """Farkas: if sigma_D(-K^T dy) + sum_k sigma_{S_k}(dy_k) < 0, no x in D has K_k x in S_k for all
    k (for such x the two sums would be >= <-K^T dy, x> and <dy, K x>, which add to 0). dy must
    vanish on term blocks (their f is finite everywhere). Evaluated at T and 2T: the value must be
    stable (finite support functions) and negative beyond rounding."""
    norm = math.sqrt(sum(float(_sqnorm1(t)) for t in dy))
    if not (norm > 0 and math.isfinite(norm)):
        return None
    dy = [t / norm for t in dy]
    for bc, t in zip(block_checks, dy):
        if not bc.constraint and float(_sqnorm1(t)) > RAY_TOL ** 2:
            return None
        if bc.constraint and bc.project is None:
            return None
    w = [-t for t in _adjoint_sum(ops, dy, like)]
    scale = max([float(_maxabs(t)) for t in like] + [1.0])
    T = 1e4 * scale
    vals = []
    for TT in (T, 2 * T):
        parts = [_domain_support(prox, w, TT)] + [_support(bc.project, t, TT) for bc, t in zip(block_checks, dy)
                                                    if bc.constraint]
        vals.append((sum(parts), sum(abs(p) for p in parts)))
    (v1, a1), (v2, _) = vals
    if not (math.isfinite(v1) and math.isfinite(v2)):
        return None
    if v1 < -RAY_TOL * max(a1, 1e-300) and v2 < 0 and abs(v2 - v1) <= 1e-3 * abs(v1):
        return {"status": "infeasible", "farkas_value": v1, "ray_norm": norm,
                "reason": "a Farkas ray of the constraints from the dual iterates' growth: "
                          "sigma_D(-K^T dy) + sum sigma_S(dy) < 0"}
    return None


def _unboundedness_certificate(dx: list[Tensor], x: list[Tensor], ops, block_checks, prox, objective) -> dict | None:
    """A recession direction of decrease from a feasible x: x (within RAY_TOL of its scale) and
    x + t dx stay in the domain of g and in every constraint set (the distance grows sublinearly
    in t) while P(x + t dx) decreases linearly."""
    norm = math.sqrt(sum(float(_sqnorm1(t)) for t in dx))
    if not (norm > 0 and math.isfinite(norm)):
        return None
    dx = [t / norm for t in dx]
    scale = max([float(_maxabs(t)) for t in x] + [1.0])
    T = 1e3 * scale

    def point(t: float) -> list[Tensor]:
        return [a + t * b for a, b in zip(x, dx)]

    def distances(pt: list[Tensor]) -> float:
        dom = math.sqrt(sum(float(_sqnorm1(a - b)) for a, b in zip(prox(pt, 1e-12), pt)))
        cons = 0.0
        for o, bc in zip(ops, block_checks):
            if bc.constraint:
                if bc.project is None:
                    return math.inf
                z = o.apply(pt)
                cons += math.sqrt(float(_sqnorm1(z - bc.project(z))))
        return dom + cons

    d0, d1, d2 = distances(x), distances(point(T)), distances(point(2 * T))
    # a ray proves the objective unbounded only from a feasible point: beside constraints with no
    # common point the iterates keep a fixed distance to them while the objective falls along a
    # ray, and that is an infeasible problem, not an unbounded one
    if not d0 <= RAY_TOL * scale:
        return None
    if not (d1 <= d0 + RAY_TOL * T and d2 <= d0 + 2 * RAY_TOL * T):
        return None
    P0, P1, P2, P3 = (_float_of(objective(pt)) for pt in (x, point(T), point(2 * T), point(4 * T)))
    if not all(math.isfinite(v) for v in (P0, P1, P2, P3)):
        return None
    s1, s2, s3 = (P1 - P0) / T, (P2 - P1) / T, (P3 - P2) / (2 * T)
    # convex along the ray: slopes are nondecreasing; equal negative slopes far out are the
    # recession slope, and a negative recession slope means P -> -inf along the ray
    if s3 < 0 and s2 < 0 and abs(s3 - s2) <= 1e-3 * abs(s2) and -s3 > RAY_TOL * max(abs(P0) / T, 1e-300):
        return {"status": "unbounded", "recession_slope": s3, "ray_norm": norm,
                "reason": "a feasible direction of the primal iterates along which the objective decreases linearly"}
    return None
