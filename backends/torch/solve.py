"""Solve a lowered torch program: FISTA with backtracking (stopping on the prox-gradient residual) or
PDHG (Chambolle-Pock, Condat-Vu with a smooth part; stopping on the primal and dual fixed-point
residuals), as the split pass chose. Both report their certificates in ``Result.residuals``."""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch.func import functional_call

from regspec.backends.torch import iteration_log
from regspec.backends.torch.lower import TorchProgram, step_hyper, term_weight
from regspec.backends.torch.prox import get_kernel
from regspec.backends.torch.solvers import fista
from regspec.backends.torch.tracing import smooth_evaluator
from regspec.diagnostics import Diagnostic, RegspecError
from regspec.result import Result

DTYPES = {"float64": torch.float64, "float32": torch.float32}

# Below this many entries in the largest tensor of an iteration, torch's intra-op threads cost more
# than they save (each op is microseconds; on a loaded 2-core machine a thread handoff can stall
# for milliseconds), so small CPU solves run on one thread.
SMALL_PROBLEM_ENTRIES = 1 << 16


@contextlib.contextmanager
def _threads_for(program: TorchProgram, largest: int):
    """One intra-op thread for small CPU problems, restored afterwards."""
    if program.device.type != "cpu" or largest >= SMALL_PROBLEM_ENTRIES:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_prox(program: TorchProgram, params: dict[str, np.ndarray]):
    """prox(vs, t) over the variable list: each variable gets its bound kernel(s) with step t * weight."""
    index = {name: i for i, name in enumerate(program.var_names)}
    bound = []
    for s in program.steps:
        kernel = get_kernel(s.kernel)
        weight = term_weight(program, s, params)
        pre = (get_kernel(s.pre.kernel).fn, s.pre.hyper) if s.pre is not None else None
        bound.append((index[s.var], kernel.fn, weight, step_hyper(program, s, params), pre))

    def prox(vs: list[torch.Tensor], t: float) -> list[torch.Tensor]:
        out = list(vs)
        for i, fn, weight, hyper, pre in bound:
            v = out[i] if pre is None else pre[0](out[i], t, **pre[1])
            out[i] = fn(v, t * weight, **hyper)
        return out

    return prox


# Default stopping tolerances (the rules: solvers._FISTA_RULE, restarted_pdhg.RULE), the loosest
# whose results agree with a tight CVXPY + Clarabel/SCS reference on every bundled spec to the
# accuracy docs/solvers.md states (objective 1e-6 relative, solution 1e-4 of max(1, |x|) where the
# minimizer is unique), measured by `bench/bench_tolerance.py sweep` (bench/RESULTS.md). PDHG at
# 1e-6: worst objective error 3.4e-7, solution 2.4e-6. FISTA needs 1e-7: at 1e-6 the objectives
# agree (8e-9) but the breast-cancer logistic weights are off by 1.2e-3 (flat directions); at 1e-7
# 1.6e-5. The previous defaults (1e-9, 1e-8) cost up to 2x the iterations for nothing measurable.
FISTA_TOL = 1e-7
PDHG_TOL = 1e-6


def start_point(program: TorchProgram, prox) -> list[torch.Tensor]:
    """The variables' current values (zeros unless initialized) mapped through the prox of the
    nonsmooth pieces with step 1: a start inside every set (the uniform point of a simplex, a
    positive definite matrix for -log det), so that smooth terms with a domain are finite there."""
    x0 = [v.detach().clone() for v in program.variables()]
    if prox is None:
        return x0
    with torch.no_grad():
        return [x.detach().clone() for x in prox(x0, 1.0)]


@torch.no_grad()
def stack_norm(ops: list, x0: list[torch.Tensor], *, bound: float, exact: bool = False,
               maxiter: int = 300) -> tuple[float, str]:
    """An upper bound on ||K|| for stacked blocks (or one block, ``bound = inf``): 1.01 sqrt(lambda), lambda the
    largest eigenvalue of K^T K = sum_k K_k^T K_k by Lanczos (ARPACK ``eigsh``, relative tolerance
    1e-6, at most ``maxiter`` restarts' worth of products; Ritz values approach lambda_max from
    below, and a converged one is within far less than the 1% margin), capped by ``bound`` (the
    sqrt of the number of unit-norm blocks, always valid) and replaced by it when Lanczos does
    not converge. ``exact``: a larger budget."""
    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator as SciOp, eigsh

    from regspec.backends.torch.solvers import _adjoint_sum

    if not ops:
        return 0.0, "no operators"
    if len(ops) == 1 and bound <= 1.0 + 1e-12:
        return bound, "single normalized block"
    shapes = [x.shape for x in x0]
    sizes = [x.numel() for x in x0]
    total = sum(sizes)
    like = x0[0]

    def matvec(v: np.ndarray) -> np.ndarray:
        flat = torch.as_tensor(np.ascontiguousarray(v, dtype=np.float64).reshape(-1), device=like.device)
        parts = [t.reshape(s).to(like.dtype) for t, s in zip(torch.split(flat, sizes), shapes)]
        out = _adjoint_sum(ops, [o.apply(parts) for o in ops], parts)
        return torch.cat([t.reshape(-1) for t in out]).to(torch.float64).cpu().numpy()

    if total <= 8:
        lam = float(np.linalg.eigvalsh(np.stack([matvec(e) for e in np.eye(total)], axis=1))[-1])
        return min(bound, 1.0000001 * math.sqrt(max(lam, 0.0))), "dense eigenvalue"
    rng = np.random.default_rng(0)
    try:
        lam = float(eigsh(SciOp((total, total), matvec=matvec, dtype=np.float64), k=1, which="LA", tol=1e-6,
                          maxiter=(20 if not exact else 200) * maxiter // 20, v0=rng.standard_normal(total),
                          return_eigenvectors=False)[0])
    except ArpackNoConvergence:
        return bound, "sqrt(#blocks) bound (Lanczos did not converge)"
    if not math.isfinite(lam):
        raise FloatingPointError("non-finite value in the operator norm estimate")
    return min(bound, 1.01 * math.sqrt(max(lam, 0.0))), "Lanczos"


def _not_finite_term(program: TorchProgram, x0: list[torch.Tensor]) -> tuple[int, str] | None:
    """The first smooth term whose value or gradient is not finite at the start point, and which
    (value or gradient); None when each term alone is finite there."""
    import torch.fx as fx

    from regspec.backends.torch.pdhg_lowering import _emitter_class, _vars_of

    ir, emitter = program.ir, _emitter_class()
    for term in program.split.smooth:
        names = _vars_of(ir, [term.core], program.var_names)
        em = emitter(program.module, ir, program.dtype, program.device, names)
        em.graph.output(em.emit(term.core))
        fn = fx.GraphModule(program.module, em.graph, class_name="Term")
        xs = [x0[program.var_names.index(n)].detach().clone().requires_grad_(True) for n in names]
        with torch.enable_grad():
            value = fn(*xs)
            if not bool(torch.isfinite(value).all()):
                return term.core, "its value"
            grads = torch.autograd.grad(value.sum(), xs, allow_unused=True) if value.requires_grad else ()
        if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
            return term.core, "its gradient"
    return None


def _not_finite(program: TorchProgram, e: Exception, x0: list[torch.Tensor] | None = None) -> StartNotFinite:
    from regspec.hints import refusal_hint

    ir = program.ir
    obj = ir.objective()
    why = "the smooth part of the objective is not finite at the start point"
    try:
        culprit = _not_finite_term(program, x0) if x0 is not None else None
    except Exception:  # the search only sharpens the message; the refusal stands without it
        culprit = None
    if culprit is None:
        message, span = f"the torch backend cannot start: {why} ({e}); a term's domain excludes it", \
            ir[ir[obj]["args"][0]]["span"]
    else:
        node, what = culprit
        start = ", ".join(f"{n} = {_start_text(x)}" for n, x in zip(program.var_names, x0))
        message = (f"the torch backend cannot start: the smooth term `{ir.text(node)}` is not finite at the start "
                   f"point ({what}; start {start}): its domain excludes it")
        span = ir[node]["span"]
    return StartNotFinite([Diagnostic(message, span,
                                      notes=["give the variable a domain that keeps the term finite (e.g. `in simplex`)",
                                             refusal_hint(ir, "torch", why)])])


def _start_text(x: torch.Tensor) -> str:
    """A start value in words: `0` when all zero, else its range."""
    if x.numel() and bool((x == 0).all()):
        return "0"
    return f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]" if x.numel() else "empty"


class StartNotFinite(RegspecError):
    """A fast path cannot start: a smooth term is not finite at its start point."""



def sense_sign(program: Any) -> float:
    """1 for `minimize`, -1 for `maximize`: the solvers minimize sign * objective."""
    ir = program.ir
    return -1.0 if ir[ir.objective()]["sense"] == "maximize" else 1.0


def minimized_objective(program: Any, names: list[str]) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """P(x), the function the solvers minimize: the spec's objective, negated for `maximize`. Their
    certificates and duality gap read it (a maximize problem's objective, taken as P, made a
    bounded problem look unbounded: it decreases along the rays where the true P grows)."""
    sign = sense_sign(program)

    def objective(xs: list[torch.Tensor]) -> torch.Tensor:
        value = functional_call(program.objective, dict(zip(names, xs)), ())
        return value if sign > 0 else -value

    return objective


def solve(program: TorchProgram, *, params: dict[str, np.ndarray] | None = None, tol: float | None = None,
          max_iter: int = 100000, working_set: bool | None = None) -> Result:
    """Solve with the algorithm the split chose; ``tol`` defaults to ``FISTA_TOL`` / ``PDHG_TOL``.
    ``working_set``: FISTA on a growing working set (``working_set.py``) where the structure allows;
    ``None`` decides by size (``working_set.worth_it``), ``False`` never. A DCP problem whose fast
    path cannot start (a smooth term not finite at the start point) goes to the conic fallback,
    as a DCP problem without a fast path does; any other problem is refused there."""
    from regspec.backends.torch.ray_check import without_improving_ray

    try:
        result = _solve_chosen(program, params=params, tol=tol, max_iter=max_iter, working_set=working_set)
    except StartNotFinite as e:
        result = _conic_instead(program, e, params=params, tol=tol, max_iter=max_iter)
    return without_improving_ray(program.ir, result, params)


def _conic_instead(program: TorchProgram, refusal: StartNotFinite, *, params: dict[str, np.ndarray] | None,
                   tol: float | None, max_iter: int) -> Result:
    from regspec.backends.torch.conic.program import lower_conic, solve_conic
    from regspec.compiler.passes.curvature import dcp_errors

    if dcp_errors(program.ir):
        raise refusal
    result = solve_conic(lower_conic(program.ir, dtype=program.dtype, device=program.device),
                         params=params, tol=tol, max_iter=max_iter)
    result.info["fast_path_refused"] = str(refusal).splitlines()[0]
    return result


def _solve_chosen(program: TorchProgram, *, params: dict[str, np.ndarray] | None, tol: float | None,
                  max_iter: int, working_set: bool | None) -> Result:
    if program.algorithm == "conic":  # the conic fallback (backends/torch/conic)
        from regspec.backends.torch.conic.program import solve_conic

        return solve_conic(program, params=params, tol=tol, max_iter=max_iter)
    if program.algorithm == "sinkhorn":  # entropic OT (backends/torch/sinkhorn.py)
        from regspec.backends.torch.sinkhorn import solve_sinkhorn

        return solve_sinkhorn(program, params=params, tol=tol, max_iter=max_iter)
    if program.algorithm == "pdhg":
        return solve_pdhg(program, params=params, tol=PDHG_TOL if tol is None else tol, max_iter=max_iter)
    tol = FISTA_TOL if tol is None else tol
    params = params or {}
    with torch.no_grad():
        program.set_params(params)
    variables = program.variables()
    prox = make_prox(program, params)
    x0 = start_point(program, prox)

    names = [f"var_{n}" for n in program.var_names]

    objective = minimized_objective(program, names)
    t0 = time.perf_counter()
    largest = max([x.numel() for x in x0] + [b.numel() for b in program.module.buffers()], default=0)
    with _threads_for(program, largest):
        plan = _working_set_plan(program, working_set)
        try:
            if plan is not None:
                from regspec.backends.torch.working_set import solve_working_set

                res = solve_working_set(plan, prox, x0, tol=tol, max_iter=max_iter)
            else:
                fused = smooth_evaluator(program.smooth, names, x0)  # eager first; traced when it pays
                res = fista(fused.value, prox, x0, tol=tol, max_iter=max_iter, objective=objective, grad=fused.grad,
                            callback=iteration_log.callback("FISTA"))
        except FloatingPointError as e:
            raise _not_finite(program, e, x0) from None
    if program.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for v, x in zip(variables, res.x):
            v.copy_(x)
        obj = float(program.objective())
    values = {name: x.detach().cpu().numpy() for name, x in zip(program.var_names, res.x)}
    info = {"device": str(program.device), "dtype": str(program.dtype).replace("torch.", ""),
            "rule": res.info.get("rule", "")}
    if "working_set" in res.info:
        info["working_set"] = res.info["working_set"]
    if res.status != "optimal":  # the last iterate is not a solution: no objective, no variables
        from regspec.backends.torch.pdhg_lowering import NOT_SOLVED_MESSAGES

        info["message"] = NOT_SOLVED_MESSAGES.get(res.status, res.status)
        if math.isfinite(obj):
            info["last_iterate"] = {"objective": obj}
        obj, values = None, {}
    return with_curvature(program, Result(
        status=res.status, objective=obj, variables=values, backend="torch",
        solver="FISTA (working sets)" if "working_set" in res.info else "FISTA",
        tol=res.info.get("tol_effective"),
        iterations=res.iterations, times={"solve": seconds}, residuals=dict(res.residuals), info=info,
        history=list(res.history)))


def _working_set_plan(program: TorchProgram, wanted: bool | None):
    """The working-set plan when asked for (or, by default, when the structure allows and there are
    enough groups to skip), else None: plain FISTA."""
    if wanted is False:
        return None
    from regspec.backends.torch.working_set import plan_working_set, worth_it

    plan, _ = plan_working_set(program)
    if plan is None or (wanted is None and not worth_it(plan)):
        return None
    return plan


def solve_pdhg(program: TorchProgram, *, params: dict[str, np.ndarray] | None = None, tol: float = PDHG_TOL,
               max_iter: int = 100000, check_every: int | None = None, restart: bool = True,
               time_limit: float | None = None, stack_bound: bool = True, average: bool = True) -> Result:
    """PDHG on ``s(x) + g(x) + sum_k f_k(K_k x + c_k)``: blocks from ``pdhg_lowering``, each
    normalized to unit norm (``||K_k||`` in closed form where the block knows it, else by Lanczos
    with power iteration as fallback, inflated 1%); ``||K||`` of the stack by ``stack_norm``
    (Lanczos, capped by the sqrt(#blocks) bound); ``L`` of the smooth part by Hessian power
    iteration at the start point (exact for quadratics; a linear s has a constant gradient,
    computed once). Steps
    ``tau (L/2 + sigma ||K||^2) < 1`` (``solvers.pdhg_step_sizes``), primal weight adapted.

    Stops by ``restarted_pdhg.RULE`` (feasibility per constraint, stationarity per variable, the
    objective error and the duality gap, each ``<= tol`` relative; ``solvers.pdhg``'s residual rule
    when ``restart=False``). ``residuals``: ``primal``, ``dual``, ``primal_rel``, ``dual_rel``, the
    rule's measures (``feasibility_rel``, ``stationarity_rel``, ``objective_error_rel``, ``gap_rel``)
    and ``infeasibility``, the largest relative distance of a constraint's ``lhs - rhs`` to its
    target set.
    """
    from regspec.backends.torch.pdhg_lowering import block_check, build_block, pdhg_report, scaled
    from regspec.backends.torch.restarted_pdhg import restarted_pdhg
    from regspec.backends.torch.solvers import LinearOperator, estimate_operator_norm, pdhg, smooth_lipschitz

    params = params or {}
    with torch.no_grad():
        program.set_params(params)
    variables = program.variables()
    prox_g = make_prox(program, params) if program.steps else None
    x0 = start_point(program, prox_g)
    names = [f"var_{n}" for n in program.var_names]
    index = {n: i for i, n in enumerate(program.var_names)}

    t0 = time.perf_counter()
    blocks = [build_block(program.ir, lo, x0, index, params) for lo in program.operators]
    largest = max([x.numel() for x in x0] + [b.offset.numel() for b in blocks] +
                  [t.numel() for t in program.module.buffers()], default=0)
    try:
        with _threads_for(program, largest):
            ops, conjs, norms, outs, checks = [], [], [], [], []
            for b in blocks:
                # ||K_k||: closed form when known (a bare variable, differences, pair incidences),
                # else power iteration, inflated by 1% (it converges from below)
                n = b.norm
                if n is None:
                    single = [LinearOperator(b.apply, b.adjoint, None)]
                    n, _ = stack_norm(single, x0, bound=math.inf)
                    if not math.isfinite(n):  # Lanczos failed: power iteration (solvers), +1%
                        n = 1.01 * estimate_operator_norm(single, x0)
                b.norm = n
                b.scale = 1.0 / n if n > 0 else 1.0
                apply, adjoint, conj, apply_out = scaled(b, b.scale)
                ops.append(LinearOperator(apply, adjoint, None))
                conjs.append(conj)
                outs.append(apply_out)
                norms.append(n)
                checks.append(block_check(program.ir, b, b.scale))
            # ||[K_1/n_1; ...; K_k/n_k]|| <= sqrt(k); power iteration on the stack is usually much
            # tighter (the blocks' top directions differ) and worth its cost, so it is used when it
            # converges within a budget, else the bound
            norm_K, norm_how = stack_norm(ops, x0, bound=math.sqrt(len(ops)), exact=not stack_bound)

            smooth_fn = smooth_grad = None
            lipschitz = 0.0
            if program.split.smooth:
                def smooth_fn(xs: list[torch.Tensor]) -> torch.Tensor:
                    return functional_call(program.smooth, dict(zip(names, xs)), ())

                lipschitz, linear = smooth_lipschitz(smooth_fn, x0)
                if linear:
                    # a linear smooth part: its gradient is a constant, computed once
                    with torch.enable_grad():
                        leaves = [x.detach().requires_grad_(True) for x in x0]
                        value = smooth_fn(leaves)
                        grads = torch.autograd.grad(value, leaves, allow_unused=True) if value.requires_grad else \
                            [None] * len(leaves)
                    g0 = [g.detach() if g is not None else torch.zeros_like(x) for g, x in zip(grads, x0)]

                    def smooth_grad(xs: list[torch.Tensor]) -> list[torch.Tensor]:
                        return g0

                    smooth_fn = None
                else:
                    fused = smooth_evaluator(program.smooth, names, x0)  # eager first; traced when it pays
                    smooth_grad, smooth_fn = fused.grad, None

            objective = minimized_objective(program, names)
            setup = time.perf_counter() - t0
            if check_every is None:
                check_every = (64 if program.device.type == "cuda" else 32) if restart else 10
            if restart:
                res = restarted_pdhg(prox_g, ops, conjs, x0, smooth=smooth_fn, smooth_grad=smooth_grad,
                                     lipschitz=lipschitz, norm_K=norm_K, tol=tol, max_iter=max_iter,
                                     check_every=check_every, time_limit=time_limit, axpy=outs, average=average,
                                     checks=checks, objective=objective, callback=iteration_log.callback("PDHG"))
            else:
                res = pdhg(prox_g, ops, conjs, x0, smooth=smooth_fn, smooth_grad=smooth_grad, lipschitz=lipschitz,
                           norm_K=norm_K, tol=tol, max_iter=max_iter, check_every=check_every,
                           callback=iteration_log.callback("PDHG"))
    except FloatingPointError as e:
        raise _not_finite(program, e, x0) from None
    if program.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for v, x in zip(variables, res.x):
            v.copy_(x)
        obj = float(program.objective())
    report = pdhg_report(program.ir, blocks, res, obj)
    residuals = {**res.residuals, **report.residuals}
    values = {name: x.detach().cpu().numpy() for name, x in zip(program.var_names, res.x)} if report.solved else {}
    obj = obj if report.solved else None
    info = {"device": str(program.device), "dtype": str(program.dtype).replace("torch.", ""),
            "variant": "Condat-Vu" if program.split.smooth else "Chambolle-Pock",
            "rule": res.info.get("rule", ""), "tau": res.info["tau"], "sigma": res.info["sigma"],
            "norm_K": norm_K, "norm_K_from": norm_how, "block_norms": norms, "lipschitz": lipschitz,
            "primal_weight": res.info.get("primal_weight"), "restarts": res.info.get("restarts"),
            "setup_s": setup, **report.info}
    if report.solved and res.info.get("dual_objective") is not None:
        # D of the rule's duality gap (test 4), in the spec's sense
        info["dual_objective"] = sense_sign(program) * res.info["dual_objective"]
    tol_used, violations = info.pop("tol"), info.pop("violations")
    return with_curvature(program, Result(status=report.status, objective=obj, variables=values, backend="torch",
                                          tol=tol_used, violations=violations,
                                          solver="PDHG", iterations=res.iterations, times={"solve": seconds},
                                          residuals=residuals, info=info, history=list(res.history)))


def with_curvature(program: TorchProgram, result: Result) -> Result:
    """A problem whose convexity the curvature pass does not prove (a DCP rule fails: a nonconvex
    set, a concave term minimized, ...) has first-order stopping rules that certify a stationary
    point only: the result is marked ``local`` and ``optimal`` becomes ``stationary``."""
    from regspec.compiler.passes.curvature import dcp_errors

    errors = dcp_errors(program.ir)
    if errors:
        result.mark_local(errors[0][0])
    return result
