"""The Python API for embedding: ``load``, ``check``, ``solve``. Backends are imported lazily."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regspec import ast
from regspec.compiler import data as data_sources
from regspec.diagnostics import RegspecError, error
from regspec.parser import parse, parse_file
from regspec.result import Result

BACKENDS = ("auto", "cvxpy", "torch")


@dataclass
class Spec:
    """A parsed spec. ``ast`` is the syntax tree; ``path`` is where it came from."""

    ast: ast.Spec
    path: str
    parse_seconds: float = 0.0
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def problems(self) -> list[str]:
        return [b.name for b in self.ast.problems]

    @property
    def trains(self) -> list[str]:
        return [b.name for b in self.ast.trains]

    def compiled(self, problem: str | None = None, record: bool = False):
        """Run the pass pipeline for one problem block (cached per block)."""
        from regspec.compiler.pipeline import compile_problem, select_problem

        block = select_problem(self.ast, problem)
        key = f"{block.name}:{record}"
        if key not in self._compiled:
            self._compiled[key] = compile_problem(self.ast, block, record=record)
        return self._compiled[key]


def load(path_or_text: str | Path) -> Spec:
    """Parse a spec from a file path or from `.reg` text (text is anything containing a newline
    or a brace). Raises ``RegspecError`` with located diagnostics."""
    t0 = time.perf_counter()
    s = str(path_or_text)
    if isinstance(path_or_text, Path) or ("\n" not in s and "{" not in s):
        tree = parse_file(s)
        path = s
    else:
        tree = parse(s)
        path = "<string>"
    return Spec(tree, path, time.perf_counter() - t0)


def _as_spec(spec: Spec | str | Path) -> Spec:
    return spec if isinstance(spec, Spec) else load(spec)


# The auto choice's cost model (bench/RESULTS.md, lasso n = p = 2000 on the 2-core dev machine):
# CVXPY's time is dominated by canonicalization, ~4 us per entry of the data the problem reads
# (SCS 18 s end to end at 4e6 entries, 2.7 s of it in the solver), plus ~50 ms of fixed cost; the
# torch backend's first-order path pays ~0.5 s up front (torch import, tracing) and then ~1 ns per
# data entry per iteration, ~200 iterations at its default tolerance. The break-even is near 1.2e5
# entries; below it CVXPY's interior-point answer is also the more accurate one.
CVXPY_FIXED_S, CVXPY_PER_ENTRY_S = 0.05, 4e-6
TORCH_FIXED_S, TORCH_PER_ENTRY_ITER_S, TORCH_ITERATIONS = 0.5, 1e-9, 200


@dataclass
class BackendChoice:
    """The backend ``auto`` picked and why (``regspec explain`` prints ``reason``)."""

    backend: str
    reason: str


def data_entries(ir) -> int:
    """Entries of the constant arrays (data, lets, parameters) that feed an expression of the
    variables: the size CVXPY canonicalizes."""
    fed: set[int] = set()
    for n in ir.topological():
        d = ir[n]
        if "value" in d or d["kind"] not in ("call",):
            continue
        fed.update(a for a in d.get("args", ()) if isinstance(a, int) and "value" in ir[a])
    return sum(_numel(ir[a].get("shape")) for a in fed)


def _numel(shape) -> int:
    out = 1
    for s in shape or ():
        out *= int(s)
    return out


def explain_choice(spec: Spec, problem: str | None) -> BackendChoice:
    """``auto``'s choice from the problem's structure and size (see the cost model above): a
    problem the torch backend takes with FISTA (smooth + separable prox, no coupling constraints)
    goes to torch when its estimated CVXPY time exceeds the torch estimate; every other DCP problem
    goes to CVXPY (its interior-point solvers certify the answer); a non-DCP problem goes to torch."""
    from regspec.compiler.passes.curvature import dcp_errors

    ir = spec.compiled(problem).ir
    if dcp_errors(ir):
        return BackendChoice("torch", "not DCP: CVXPY refuses it; the torch backend's first-order methods take it")
    algorithm = ir.meta["split"].algorithm
    entries = data_entries(ir)
    cvxpy_s = CVXPY_FIXED_S + CVXPY_PER_ENTRY_S * entries
    torch_s = TORCH_FIXED_S + TORCH_PER_ENTRY_ITER_S * TORCH_ITERATIONS * entries
    sizes = f"{entries} data entries: CVXPY ~{cvxpy_s:.2g} s, torch ~{torch_s:.2g} s (estimates)"
    if algorithm == "fista" and torch_s < cvxpy_s:
        return BackendChoice("torch", f"smooth + separable prox without coupling constraints (FISTA), {sizes}")
    if algorithm == "fista":
        return BackendChoice("cvxpy", f"DCP and small: {sizes}; CVXPY's interior point certifies to ~1e-8")
    return BackendChoice("cvxpy", f"DCP; the torch path would be {algorithm.upper() if algorithm != 'none' else 'none'}"
                                  f" (PDHG converges more slowly than interior point on coupled problems); {sizes}")


def choose_backend(spec: Spec, problem: str | None, backend: str) -> str:
    """``auto``: :func:`explain_choice`; otherwise the named backend."""
    if backend not in BACKENDS:
        raise error(f"unknown backend `{backend}`; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return explain_choice(spec, problem).backend


def solve(spec: Spec | str | Path, *, problem: str | None = None, backend: str = "auto",
          params: dict[str, Any] | None = None, solver: str | None = None,
          solver_opts: dict[str, Any] | None = None, tol: float | None = None, max_iter: int | None = None,
          device: str = "cpu", dtype: str = "float64") -> Result:
    """Compile and solve one problem block. Raises ``RegspecError`` for a bad spec or bad params, or
    when the chosen backend refuses the problem (its note names a backend that accepts it, or says
    none does); a solver that fails returns a Result whose ``status`` says so (check ``result.ok``).

    ``status``: ``optimal`` (proved), ``optimal_inaccurate`` (with ``info["inaccurate"]`` or the
    solver's own verdict), ``stationary`` when the problem is not proved convex (torch backend:
    ``result.local`` is True, a local answer), or a failure (``infeasible``, ``unbounded``,
    ``user_limit``, ``solver_error``, with ``info["message"]``). Objectives and variables of a
    solved status are finite."""
    from regspec.compiler.evaluate import validate_params

    spec = _as_spec(spec)
    t0 = time.perf_counter()
    loaded = data_sources.CLOCK["seconds"]
    compiled = spec.compiled(problem)
    data_s = data_sources.CLOCK["seconds"] - loaded  # data loading, reported apart from analysis
    ir = compiled.ir
    values = validate_params(ir, params)
    backend = choose_backend(spec, problem, backend)
    analyse = time.perf_counter() - t0 - data_s
    import_s = _import_backend(backend)
    t1 = time.perf_counter()
    traced = 0.0
    if backend == "cvxpy":
        from regspec.backends.cvxpy import lower as cvx_lower
        from regspec.backends.cvxpy import solve as cvx_solve

        program = _cached(spec, f"cvxpy:{ir.block_name}", lambda: cvx_lower.lower(ir))
        lower_s = time.perf_counter() - t1
        result = cvx_solve.solve(program, solver=solver, solver_opts=solver_opts, params=values)
    else:
        from regspec.backends.torch import lower as torch_lower
        from regspec.backends.torch import solve as torch_solve

        algorithm = ir.meta["split"].algorithm
        if solver is not None and solver.lower() != algorithm:
            raise error(f"the torch backend's solver is chosen from the spec ({algorithm.upper()} here); "
                        f"`--solver {solver}` applies to the cvxpy backend")
        if dtype not in torch_solve.DTYPES:
            raise error(f"unknown dtype `{dtype}`; choose float64 or float32")
        program = torch_lower.lower(ir, dtype=torch_solve.DTYPES[dtype], device=_device(device))
        lower_s = time.perf_counter() - t1
        kwargs = {k: v for k, v in (("tol", tol), ("max_iter", max_iter)) if v is not None}
        from regspec.backends.torch import tracing

        traced = tracing.CLOCK["seconds"]
        result = torch_solve.solve(program, params=values, **kwargs)
        traced = tracing.CLOCK["seconds"] - traced  # graph capture during the solve, reported apart
    result.problem = ir.block_name
    times = {"parse": spec.parse_seconds, "data": data_s, "analyse": analyse, "import": import_s,
             "lower": lower_s, **result.times}
    if traced > 0 and "solve" in times:
        times["solve"] -= traced
        times["trace"] = traced
    result.times = times
    return result


_BACKEND_MODULES = {"cvxpy": ("regspec.backends.cvxpy.lower", "regspec.backends.cvxpy.solve"),
                    "torch": ("regspec.backends.torch.lower", "regspec.backends.torch.solve")}


def _import_backend(backend: str) -> float:
    """Seconds spent importing the backend (CVXPY or torch and regspec's modules over it): what
    a first solve in a fresh process pays before lowering; 0 once imported."""
    import importlib

    t0 = time.perf_counter()
    for module in _BACKEND_MODULES[backend]:
        importlib.import_module(module)
    return time.perf_counter() - t0


def _device(device: str) -> str:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise error("--device cuda: no CUDA device is available on this machine")
    elif device != "cpu":
        raise error(f"unknown device `{device}`; choose cpu or cuda")
    return device


def _cached(spec: Spec, key: str, build):
    if key not in spec._compiled:
        spec._compiled[key] = build()
    return spec._compiled[key]


__all__ = ["Spec", "load", "solve", "choose_backend", "RegspecError", "Result"]
