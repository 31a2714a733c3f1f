"""The Python API for embedding: ``load``, ``check``, ``solve``. Backends are imported lazily."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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

    def __repr__(self) -> str:
        return f"Spec({self.path!r}, problems={self.problems}, trains={self.trains})"

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


# The auto choice's cost model: seconds of CPU for `regspec solve` to finish on each backend, the
# sum of the parts a run pays. Constants measured on the 2-core dev machine (bench/RESULTS.md,
# "Auto backend choice": bench/bench_auto_choice.py in fresh processes, bench/bench_pdhg_small.py
# and bench_lasso in one process); CPU seconds, since wall time there measured the other jobs.
# - common: the interpreter, NumPy and regspec's front end, ~0.35 s in a fresh process (both sides);
# - fixed: importing the backend (CVXPY ~1.0 s; torch and regspec's solver modules ~1.8 s), paid
#   only when the module is not imported yet (a second solve in one process does not pay it);
# - CVXPY: canonicalization ~4 us per entry of the data the problem reads (lasso 2000 x 2000: SCS
#   18 s end to end at 4e6 entries), plus the interior-point work on second-order cones, which
#   grows with count x dim^2 of the cones (class OT's sum-of-norms: 135 cones of dim 31 cost
#   Clarabel ~1.3 s, 570 of dim 61 ~20 s: ~1.1e-5 s per unit);
# - torch FISTA: ~1 ns per data entry per iteration, ~200 iterations at its default tolerance;
# - torch PDHG: ~60 us per iteration of fixed overhead (tens of small kernel calls) plus ~15 ns per
#   primal and dual entry, ~1500 iterations (the bundled transport and TV problems take 300-2500),
#   and ~1.5 s of setup in a fresh process (SciPy's import for the Lanczos norm estimate, the block
#   maps' graph capture: fresh PDHG runs of the bundled specs cost 3.1-4.7 s CPU, FISTA ones 1.9-2.5).
# A problem both backends take goes to torch only when its estimate is below CVXPY's by
# TORCH_MARGIN: within that margin either finishes within 1.5x of the other, and CVXPY's
# interior-point answer is the more accurate one (~1e-8).
FRONT_END_S, CVXPY_IMPORT_S, TORCH_IMPORT_S = 0.35, 1.0, 1.8
CVXPY_PER_ENTRY_S = 4e-6
CVXPY_CONE_S = 1.1e-5
TORCH_PER_ENTRY_ITER_S, TORCH_ITERATIONS = 1e-9, 200
PDHG_ITER_S, PDHG_PER_ENTRY_ITER_S, PDHG_ITERATIONS, PDHG_SETUP_S = 60e-6, 15e-9, 1500, 1.5
TORCH_MARGIN = 1.5


@dataclass
class BackendChoice:
    """The backend ``auto`` picked and why (``regspec explain`` and ``check`` print ``reason``)."""

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


def _operator_size(ir, op) -> tuple[int, int]:
    """(entries of the dual block, count x dim^2 of the second-order cones CVXPY makes of it) for
    one PDHG block: a norm of pair differences (sum_of_norms) is one cone per pair over a row; a
    constraint or an elementwise term is its expression's size with no cone work."""
    d = ir[op.source]
    args = d.get("args") or ()
    node = op.expr if op.expr is not None else (args[0] if args and isinstance(args[0], int) else None)
    shape = ir[node].get("shape") if node is not None else ()
    pairs = (d.get("static") or {}).get("pairs")
    if pairs is not None and hasattr(pairs, "shape") and shape:
        count, dim = int(pairs.shape[0]), _numel(shape[1:])
        return count * dim, count * dim * dim
    return _numel(shape), 0


def cost_features(spec: Spec, problem: str | None) -> dict[str, Any]:
    """What the auto choice's cost model reads from a compiled problem (no backend imported):
    the torch algorithm, the entries of the data CVXPY canonicalizes, of the variables and of
    PDHG's dual blocks, and the second-order-cone work CVXPY's interior point pays."""
    ir = spec.compiled(problem).ir
    split = ir.meta["split"]
    sizes = [_operator_size(ir, op) for op in split.operators]
    return {"algorithm": split.algorithm, "data_entries": data_entries(ir),
            "var_entries": sum(_numel(ir[v].get("shape")) for v in ir.nodes_of("var")),
            "dual_entries": sum(e for e, _ in sizes), "cone_work": sum(c for _, c in sizes)}


def estimate_seconds(features: dict[str, Any], imported: set[str] | None = None) -> dict[str, float]:
    """The cost model's estimate per backend (see the constants above). ``imported``: the backends
    whose import is already paid (default: those in ``sys.modules``, this process)."""
    import sys

    if imported is None:
        imported = {m for m in ("cvxpy", "torch") if m in sys.modules}
    base = 0.0 if imported else FRONT_END_S  # a process that imported a backend has the front end too
    cvxpy_s = base + (0.0 if "cvxpy" in imported else CVXPY_IMPORT_S) + CVXPY_PER_ENTRY_S * features["data_entries"] \
        + CVXPY_CONE_S * features["cone_work"]
    torch_s = base + (0.0 if "torch" in imported else TORCH_IMPORT_S)
    if features["algorithm"] == "fista":
        torch_s += TORCH_PER_ENTRY_ITER_S * TORCH_ITERATIONS * max(features["data_entries"], features["var_entries"])
    else:
        per_iter = PDHG_ITER_S + PDHG_PER_ENTRY_ITER_S * (features["var_entries"] + features["dual_entries"])
        torch_s += PDHG_ITERATIONS * per_iter + (0.0 if "torch" in imported else PDHG_SETUP_S)
    return {"cvxpy": cvxpy_s, "torch": torch_s}


def _numel(shape) -> int:
    out = 1
    for s in shape or ():
        out *= int(s)
    return out


def explain_choice(spec: Spec, problem: str | None, imported: set[str] | None = None) -> BackendChoice:
    """``auto``'s choice from the problem's structure and size (see the cost model above): a
    problem only one backend takes goes there (not DCP: torch; no torch splitting: CVXPY); else
    torch when its estimate is below CVXPY's by ``TORCH_MARGIN``, CVXPY otherwise. ``imported``:
    see :func:`estimate_seconds`."""
    from regspec.compiler.passes.curvature import cvxpy_refusals, dcp_errors

    ir = spec.compiled(problem).ir
    refused = cvxpy_refusals(ir)
    if refused:
        return BackendChoice("torch", "not DCP: CVXPY refuses it; the torch backend's first-order methods take it"
                             if dcp_errors(ir) else refused[0][0] + "; the torch backend takes it")
    f = cost_features(spec, problem)
    algorithm = f["algorithm"]
    if algorithm == "none":
        return BackendChoice("cvxpy", "DCP; the torch backend has no splitting for it")
    if algorithm == "conic":
        return BackendChoice("cvxpy", "DCP; the torch backend would run PDHG on CVXPY's conic form, which CVXPY's "
                                      "own solvers finish sooner (bench/bench_conic.py)")
    est = estimate_seconds(f, imported)
    sizes = (f"{f['data_entries']} data entries, {f['var_entries'] + f['dual_entries']} primal + dual entries"
             + (f", cone work {f['cone_work']:.2g}" if f["cone_work"] else "")
             + f": CVXPY ~{est['cvxpy']:.2g} s, torch ({algorithm.upper()}) ~{est['torch']:.2g} s (estimates)")
    if est["torch"] * TORCH_MARGIN < est["cvxpy"]:
        return BackendChoice("torch", f"the torch backend is estimated to finish first: {sizes}")
    return BackendChoice("cvxpy", f"CVXPY is estimated to finish first or about as soon, and its interior point "
                                  f"certifies to ~1e-8: {sizes}")


def choose_backend(spec: Spec, problem: str | None, backend: str, solver: str | None = None,
                   solver_opts: dict[str, Any] | None = None, torch_settings: bool = False) -> str:
    """``auto``: the cvxpy backend when a CVXPY solver or its options are named (the user chose
    it); the torch backend when ``torch_settings`` (a tolerance, an iteration budget, CUDA or
    float32 were asked for: settings only it reads) and it takes the problem; else
    :func:`explain_choice`. Otherwise the named backend."""
    if backend not in BACKENDS:
        raise error(f"unknown backend `{backend}`; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    split = spec.compiled(problem).ir.meta.get("split")
    if solver_opts or (solver is not None and (split is None or solver.lower() != split.algorithm)):
        return "cvxpy"
    if torch_settings and split is not None and split.algorithm != "none":
        return "torch"
    return explain_choice(spec, problem).backend


def asks_for_torch(*, tol: float | None = None, max_iter: int | None = None, device: str = "cpu",
                   dtype: str = "float64") -> bool:
    """Whether a solve's settings are ones only the torch backend reads (``choose_backend``'s
    ``torch_settings``): a tolerance, an iteration budget, CUDA or float32."""
    return tol is not None or max_iter is not None or device != "cpu" or dtype != "float64"


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

    _check_solver_settings(tol=tol, max_iter=max_iter, device=device, dtype=dtype, problem=problem, params=params)
    spec = _as_spec(spec)
    t0 = time.perf_counter()
    loaded = data_sources.CLOCK["seconds"]
    compiled = spec.compiled(problem)
    data_s = data_sources.CLOCK["seconds"] - loaded  # data loading, reported apart from analysis
    ir = compiled.ir
    values = validate_params(ir, params)
    backend = choose_backend(spec, problem, backend, solver, solver_opts,
                             asks_for_torch(tol=tol, max_iter=max_iter, device=device, dtype=dtype))
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
        if solver_opts:
            raise error(f"solver options ({', '.join(sorted(solver_opts))}) apply to the cvxpy backend's "
                        "solvers; the torch backend takes `tol` and `max_iter` (--tol, --max-iter)")
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


def _check_solver_settings(*, tol: Any, max_iter: Any, device: Any, dtype: Any, problem: Any = None,
                           params: Any = None) -> None:
    """The arguments of ``solve`` that are not the spec, refused by name whichever backend runs (a
    value the chosen backend ignores is still a mistake): 0 < tol < inf, an integer max_iter >= 1,
    a known device and dtype, a block name, a mapping of params."""
    import math
    import numbers

    if tol is not None and not (isinstance(tol, numbers.Real) and not isinstance(tol, bool)
                                and math.isfinite(tol) and tol > 0):
        raise error(f"tol must be a positive finite number, got {tol!r}")
    if max_iter is not None and not (isinstance(max_iter, numbers.Integral) and not isinstance(max_iter, bool)
                                     and max_iter >= 1):
        raise error(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    if device not in ("cpu", "cuda"):
        raise error(f"unknown device `{device}`; choose cpu or cuda")
    if problem is not None and not isinstance(problem, str):
        raise error(f"problem must be a block name (a string), got {problem!r}")
    if params is not None and not isinstance(params, Mapping):
        raise error(f"params must be a mapping of parameter names to values, e.g. {{'lam': 0.3}}; got {params!r}")
    if dtype not in ("float64", "float32"):
        raise error(f"unknown dtype `{dtype}`; choose float64 or float32")


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
