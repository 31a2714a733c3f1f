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
as a certified point has ``kkt <= tol``, and returns that point.

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
from typing import Callable, Sequence

import torch
from torch import Tensor

from regspec.backends.torch.solvers import (OPTIMAL, SOLVER_ERROR, USER_LIMIT, LinearOperator, SolverResult,
                                            _adjoint_sum, _pdhg_primal_terms, _pdhg_residuals_from, _Smooth,
                                            _sqnorm, _sqnorm1,
                                            check_pdhg_steps, pdhg_step_sizes)

__all__ = ["restarted_pdhg"]

RULE = ("stop when a certified point T(z) (z = the current iterate or the average since the last "
        "restart) has max(p_rel, d_rel) <= tol, with p, d the primal and dual fixed-point residuals "
        "of the step z -> T(z) (solvers.pdhg's definitions and scalings)")


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
    primal_weight: float = 1.0,
    tol: float = 1e-8,
    max_iter: int = 100000,
    check_every: int = 32,
    restart: bool = True,
    time_limit: float | None = None,
    axpy: Sequence[Callable[[Tensor, list[Tensor], float, Tensor | None], Tensor] | None] | None = None,
    average: bool = True,
) -> SolverResult:
    """Restarted averaged PDHG; see the module docstring for the math, restarts and certificate.

    ``norm_K`` must bound the stacked operator norm; ``lipschitz`` the Lipschitz constant of
    ``grad s`` (0 without s). ``time_limit`` (seconds) stops with ``"user_limit"``.

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

    Returns a ``SolverResult`` whose ``x``, ``y`` are the certified point, ``residuals`` its
    ``primal``, ``dual``, ``primal_rel``, ``dual_rel``, and ``info`` the steps, weight and restart
    counts.
    """
    t_start = time.perf_counter()
    ops = list(operators)
    conjs = list(prox_fconj)
    axpys = list(axpy) if axpy is not None else [None] * len(ops)
    like = x0[0]
    eps = torch.finfo(like.dtype).eps
    tol_eff = max(float(tol), 50.0 * eps)
    prox = prox_g if prox_g is not None else (lambda vs, t: list(vs))
    has_smooth = smooth is not None or smooth_grad is not None
    sm = _Smooth(smooth, smooth_grad, x0) if has_smooth else None
    Ls = float(lipschitz) if has_smooth else 0.0
    nK = float(norm_K)
    w = float(primal_weight)
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
        d = torch._foreach_mul(x_new, 2.0)
        torch._foreach_sub_(d, x)  # 2 x+ - x: K is linear, so K(2x+ - x) = 2 K x+ - K x
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
        """solvers.pdhg's residuals of the step z -> T(z); the dual ones without K x or K x+
        kept around: sigma d = (y - y+) + sigma K(x+ - x) (the difference taken first, exactly
        where y+ is close to y), then K x+, and ||v+||^2 = ||d||^2 + ||K x+||^2 + 2 <d, K x+>."""
        primal = _pdhg_primal_terms(x, x_new, KTy, KTy_new, gs, gs_new, tau)
        r1, r2 = work["res1"], work["res2"]
        dx = torch._foreach_sub(x_new, x)
        dd = kk = dk = torch.zeros_like(primal[0])
        for k, (yk, ynk) in enumerate(zip(y, y_new)):
            diff = torch.sub(yk, ynk, out=r1[k])
            sd = k_into(k, dx, r2[k], sigma, diff)  # sigma d_k
            kxn = k_into(k, x_new, r1[k])  # K x+ (r1 is free again)
            dd = dd + _sqnorm1(sd)
            kk = kk + _sqnorm1(kxn)
            dk = dk + torch.vdot(sd.reshape(-1), kxn.reshape(-1))
        dd = dd / (sigma * sigma)
        vv = dd + kk + (2.0 / sigma) * dk
        return _pdhg_residuals_from(primal, [dd, kk, vv])

    def dual_distance(a: list[Tensor], b: list[Tensor]) -> float:
        r1 = work["res1"]
        total = sum((_sqnorm1(torch.sub(ak, bk, out=r1[k])) for k, (ak, bk) in enumerate(zip(a, b))),
                    torch.zeros((), dtype=like.dtype, device=like.device))
        return math.sqrt(max(float(total), 0.0))

    x = [t.detach().clone() for t in x0]
    y = [torch.zeros_like(k) for k in apply_all(x)]
    KTy = _adjoint_sum(ops, y, x)
    gs = grad(x)
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
    spare_y: list[Tensor | None] | None = None
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
            res = certify(x, x_new, y, y_new, KTy, KTy_new, gs, gs_new)
            if not all(math.isfinite(v) for v in res.values()):
                status = SOLVER_ERROR
                x, y = x_new, y_new
                break
            cand = (kkt(res), x_new, y_new, res, KTy_new, gs_new)
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
                if math.isfinite(k_avg) and k_avg < cand[0]:
                    cand = (k_avg, xb2, yb2, res_b, KTyb2, gb2)
            if cand[0] <= tol_eff:
                status = OPTIMAL
                break
            if cand[0] < best[0]:
                best = (cand[0], copy(cand[1]), _copy_into(work["best_y"], cand[2]), cand[3])
            if time_limit is not None and time.perf_counter() - t_start > time_limit:
                break
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
        # the previous dual iterate is free now: its buffers serve the next iteration's
        # extrapolated point (never aliased by y_new or by the kept copies)
        spare_y = [t if all(t is not z for z in y_new) else None for t in y]
        x, y, KTy, gs = x_new, y_new, KTy_new, gs_new

    if status == OPTIMAL:
        _, x_out, y_out, res_out = cand[0], cand[1], cand[2], cand[3]
    elif status == SOLVER_ERROR:
        x_out, y_out, res_out = x, y, {}
    else:
        _, x_out, y_out, res_out = best
        if not res_out:
            x_out, y_out = x, y
    residuals = {k: res_out[k] for k in ("primal", "dual", "primal_rel", "dual_rel") if k in res_out}
    info = {"tau": tau, "sigma": sigma, "norm_K": nK, "lipschitz": Ls, "primal_weight": w, "restarts": restarts,
            "extra_iterations": extra, "step_condition": tau * (0.5 * Ls + sigma * nK * nK),
            "tol": float(tol), "tol_effective": tol_eff, "rule": RULE, "time_s": time.perf_counter() - t_start}
    return SolverResult(x=x_out, status=status, iterations=n, residuals=residuals, objective=None,
                        algorithm="restarted-pdhg" if sm is None else "restarted-condat-vu", y=y_out, info=info)
