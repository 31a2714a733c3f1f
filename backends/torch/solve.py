"""Solve a lowered torch program by FISTA with backtracking, stopping on the prox-gradient residual."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from regspec.backends.torch.lower import TorchProgram, term_weight
from regspec.backends.torch.prox import get_kernel
from regspec.backends.torch.solvers import fista
from regspec.result import Result

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def make_prox(program: TorchProgram, params: dict[str, np.ndarray]):
    """prox(vs, t) over the variable list: each variable gets its bound kernel(s) with step t * weight."""
    index = {name: i for i, name in enumerate(program.var_names)}
    bound = []
    for s in program.steps:
        kernel = get_kernel(s.kernel)
        weight = term_weight(program, s, params)
        bound.append((index[s.var], kernel.fn, weight, s.hyper))

    def prox(vs: list[torch.Tensor], t: float) -> list[torch.Tensor]:
        out = list(vs)
        for i, fn, weight, hyper in bound:
            out[i] = fn(out[i], t * weight, **hyper)
        return out

    return prox


def solve(program: TorchProgram, *, params: dict[str, np.ndarray] | None = None, tol: float = 1e-9,
          max_iter: int = 100000) -> Result:
    params = params or {}
    with torch.no_grad():
        program.set_params(params)
    variables = program.variables()
    x0 = [v.detach().clone() for v in variables]

    names = [f"var_{n}" for n in program.var_names]

    def smooth(xs: list[torch.Tensor]) -> torch.Tensor:
        return functional_call(program.smooth, dict(zip(names, xs)), ())

    def objective(xs: list[torch.Tensor]) -> torch.Tensor:
        return functional_call(program.objective, dict(zip(names, xs)), ())

    t0 = time.perf_counter()
    res = fista(smooth, make_prox(program, params), x0, tol=tol, max_iter=max_iter, objective=objective)
    if program.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for v, x in zip(variables, res.x):
            v.copy_(x)
        obj = float(program.objective())
    values = {name: x.detach().cpu().numpy() for name, x in zip(program.var_names, res.x)}
    return Result(status=res.status, objective=obj, variables=values, backend="torch", solver="FISTA",
                  iterations=res.iterations, times={"solve": seconds}, residuals=dict(res.residuals),
                  info={"device": str(program.device), "dtype": str(program.dtype).replace("torch.", ""),
                        "rule": res.info.get("rule", "")})
