"""Entropic optimal transport on the torch backend: log-domain Sinkhorn, certified by a duality gap.

The split pass (``split._entropic_ot``) sends here a problem of the form

    minimize  c0 + <C, P> - eps * entropy(P)    s.t. P in transport(a, b)

(``entropy(P) = -sum P log P``, eps > 0; any affine objective terms in P make up <C, P> + c0). Its
Lagrange dual is

    maximize  D(f, g) = c0 + <f, a> + <g, b> - eps sum_ij exp((f_i + g_j - C_ij)/eps - 1),

maximized by alternating exact maximizations over f and g (Sinkhorn's iteration), written with
log-sum-exp so that small eps does not underflow:

    f_i = eps (log a_i - logsumexp_j((g_j - C_ij)/eps - 1)),   g likewise with b.

Certificate. Every few iterations the plan P_ij = exp((f_i + g_j - C_ij)/eps - 1) (columns exact
after a g-update) is rounded onto U(a, b) (Altschuler, Weed and Rigollet's rounding: scale the rows
down to a, the columns down to b, add the rank-one correction of the remaining mass), a feasible
plan. By weak duality D(f, g) <= optimum <= primal(P_round), so ``gap = primal(P_round) - D(f, g)``
bounds the objective error of the returned plan; the status is ``optimal`` only when the gap is
at most ``tol`` relative to the size of the objective's terms and the rounded plan's marginals
meet tol, else ``user_limit`` (no objective, no plan) after ``max_iter`` iterations.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from regspec.result import Result

CHECK_EVERY = 10


@dataclass
class EntropicOT:
    """The problem's data at the current parameter values."""

    cost: Tensor      # C (m x n)
    offset: float     # c0
    eps: float
    a: Tensor
    b: Tensor


def entropic_data(program, params: dict[str, np.ndarray]) -> EntropicOT:
    """C and c0 from the (affine) smooth part by autograd at P = 0, eps from the entropy term's
    weight, (a, b) from the transport set."""
    from regspec.backends.torch.pdhg_lowering import term_weight_of
    from regspec.compiler.catalogue import SETS

    ir, split = program.ir, program.split
    (name,) = program.var_names
    var = getattr(program.module, f"var_{name}")
    zero = torch.zeros_like(var, requires_grad=True)
    with torch.enable_grad():
        value = functional_call(program.smooth, {f"var_{name}": zero}, ())
        value = torch.as_tensor(value, dtype=var.dtype)
        grad = torch.autograd.grad(value, zero, allow_unused=True)[0] if value.requires_grad else None
    cost = grad.detach() if grad is not None else torch.zeros_like(var)
    entropy_term = next(t for t in split.terms if t.prox is not None and t.prox.kernel == "neg_entropy")
    eps = -term_weight_of(ir, entropy_term, params)  # the term is w * entropy(P) with w = -eps < 0
    if split.marginals is not None:  # sum(P, axis = 1) == a, sum(P, axis = 0) == b
        from regspec.compiler.evaluate import evaluate

        hyper = {k: np.asarray(evaluate(ir, node, params), dtype=float) for k, node in zip("ab", split.marginals)}
    else:
        hyper = SETS["transport"].kernel_hyper(ir[split.projections[0].set_node]["static"])
    m, n = var.shape
    a = torch.as_tensor(np.broadcast_to(hyper["a"], (m,)).copy(), dtype=var.dtype, device=var.device)
    b = torch.as_tensor(np.broadcast_to(hyper["b"], (n,)).copy(), dtype=var.dtype, device=var.device)
    return EntropicOT(cost, float(value.detach()), float(eps), a, b)


def _plan(f: Tensor, g: Tensor, data: EntropicOT) -> Tensor:
    return torch.exp((f[:, None] + g[None, :] - data.cost) / data.eps - 1.0)


def _update_f(g: Tensor, data: EntropicOT, log_a: Tensor) -> Tensor:
    return data.eps * (log_a - torch.logsumexp((g[None, :] - data.cost) / data.eps - 1.0, dim=1))


def _update_g(f: Tensor, data: EntropicOT, log_b: Tensor) -> Tensor:
    return data.eps * (log_b - torch.logsumexp((f[:, None] - data.cost) / data.eps - 1.0, dim=0))


def round_to_transport(P: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """A plan in U(a, b) near P >= 0 (Altschuler et al. 2017, Algorithm 2): rows scaled down to at
    most a, columns to at most b, then the missing mass err_a err_b^T / |err_a|_1 added."""
    tiny = torch.finfo(P.dtype).tiny
    rows = torch.clamp(a / P.sum(dim=1).clamp_min(tiny), max=1.0)
    P = P * rows[:, None]
    cols = torch.clamp(b / P.sum(dim=0).clamp_min(tiny), max=1.0)
    P = P * cols[None, :]
    err_a = (a - P.sum(dim=1)).clamp_min(0)
    err_b = (b - P.sum(dim=0)).clamp_min(0)
    mass = err_a.sum()
    if float(mass) > 0:
        P = P + torch.outer(err_a, err_b) / mass
    return P


def _primal_parts(P: Tensor, data: EntropicOT) -> tuple[float, float]:
    """(<C, P>, eps sum P log P) of a plan (0 log 0 = 0)."""
    return float((data.cost * P).sum()), data.eps * float(torch.special.xlogy(P, P).sum())


def _dual(f: Tensor, g: Tensor, data: EntropicOT) -> float:
    # -inf potentials sit on zero marginal entries: their product counts 0
    fa = torch.where(data.a > 0, f, torch.zeros_like(f)) @ data.a
    gb = torch.where(data.b > 0, g, torch.zeros_like(g)) @ data.b
    return data.offset + float(fa + gb) - data.eps * float(_plan(f, g, data).sum())


def _certify(f: Tensor, g: Tensor, data: EntropicOT) -> tuple[Tensor, dict[str, float]]:
    """The rounded plan and its certificate: gap, the gap relative to the objective's terms, and
    the rounded plan's largest marginal error relative to the marginals' largest entry."""
    P = round_to_transport(_plan(f, g, data), data.a, data.b)
    linear, neg_entropy = _primal_parts(P, data)
    primal = data.offset + linear + neg_entropy
    dual = _dual(f, g, data)
    scale = max(abs(primal), abs(linear), abs(neg_entropy), abs(data.offset), 1e-300)
    gap = primal - dual
    marg = max(float((P.sum(dim=1) - data.a).abs().max()), float((P.sum(dim=0) - data.b).abs().max()))
    size = max(float(data.a.abs().max()), float(data.b.abs().max()), 1e-300)
    return P, {"gap": gap, "gap_rel": max(gap, 0.0) / scale, "primal": primal, "dual": dual,
               "marginal_rel": marg / size}


def sinkhorn(data: EntropicOT, *, tol: float, max_iter: int, time_limit: float | None = None):
    """Log-domain Sinkhorn until the certified gap meets ``tol`` (see the module docstring).
    Returns (status, P, certificate, iterations)."""
    eps_mach = torch.finfo(data.cost.dtype).eps
    tol_eff = max(float(tol), 50.0 * eps_mach)
    log_a, log_b = torch.log(data.a), torch.log(data.b)
    f = torch.zeros_like(data.a)
    g = _update_g(f, data, log_b)
    t0 = time.perf_counter()
    best: tuple[Tensor, dict[str, float]] | None = None
    k = 0
    while k < max_iter:
        f = _update_f(g, data, log_a)
        g = _update_g(f, data, log_b)
        k += 1
        if k % CHECK_EVERY and k < max_iter:
            continue
        # a zero marginal entry has potential -inf (an empty row or column), not an error
        if not (bool(torch.isfinite(f[data.a > 0]).all()) and bool(torch.isfinite(g[data.b > 0]).all())):
            return "solver_error", None, {}, k
        P, cert = _certify(f, g, data)
        best = (P, cert)
        if cert["gap_rel"] <= tol_eff and cert["marginal_rel"] <= tol_eff:
            return "optimal", P, cert, k
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    return "user_limit", None if best is None else best[0], {} if best is None else best[1], k


def solve_sinkhorn(program, *, params: dict[str, np.ndarray] | None = None, tol: float | None = None,
                   max_iter: int = 100000) -> Result:
    """Solve an entropic OT program (``split.algorithm == "sinkhorn"``) and report it."""
    from regspec.backends.torch.pdhg_lowering import NOT_SOLVED_MESSAGES
    from regspec.backends.torch.solve import PDHG_TOL, _threads_for, with_curvature

    params = params or {}
    tol = PDHG_TOL if tol is None else tol
    with torch.no_grad():
        program.set_params(params)
    t0 = time.perf_counter()
    data = entropic_data(program, params)
    if not (math.isfinite(data.eps) and data.eps > 0):
        raise ValueError(f"entropic OT needs a positive entropy weight, got {data.eps}")
    with torch.no_grad(), _threads_for(program, data.cost.numel()):  # one thread for small plans
        status, P, cert, iterations = sinkhorn(data, tol=tol, max_iter=max_iter)
    seconds = time.perf_counter() - t0
    info: dict[str, Any] = {"device": str(program.device), "dtype": str(program.dtype).replace("torch.", ""),
                            "path": "entropic OT (log-domain Sinkhorn)", "eps": data.eps,
                            "rule": "duality gap of the rounded plan <= tol x the size of the objective's terms, "
                                    "and its marginals within tol"}
    residuals = {k: v for k, v in cert.items() if k in ("gap", "gap_rel", "marginal_rel")}
    objective, values = None, {}
    (name,) = program.var_names
    if status == "optimal":
        var = getattr(program.module, f"var_{name}")
        with torch.no_grad():
            var.copy_(P)
            objective = float(program.objective())
        values = {name: P.detach().cpu().numpy()}
    else:
        info["message"] = NOT_SOLVED_MESSAGES.get(status, status)
        if cert:
            info["last_iterate"] = {"objective": cert["primal"], "gap_rel": cert["gap_rel"]}
    return with_curvature(program, Result(
        status=status, objective=objective, variables=values, backend="torch", solver="Sinkhorn",
        tol=tol, iterations=iterations, times={"solve": seconds}, residuals=residuals, info=info))
