"""Parameter sweeps: one compiled (DPP) CVXPY problem re-solved along a list of parameter values
with warm starts, written as a JSON path and a PNG plot.

    regspec solve specs/lasso.reg --sweep "lam=logspace(-3,0,20)" [--out DIR]

Values: ``logspace(a, b, n)`` (10^a .. 10^b, n points, plotted on a log axis), ``linspace(a, b, n)``,
or an explicit list ``[0.1, 0.2, 0.5]``. CVXPY compiles the problem once (the parameters stay
symbolic, DPP) and every later solve only refills the parameter values; SCS also starts from the
previous solution. Heavy imports (cvxpy, matplotlib) happen inside the functions.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from regspec.diagnostics import error
from regspec.files import write_atomic

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(logspace|linspace)\(\s*({_NUM})\s*,\s*({_NUM})\s*,\s*(\d+)\s*\)\s*$")
# variables with more entries than this are not plotted entry by entry...
MAX_PLOTTED_ENTRIES = 30
# ...and then only their largest entries are drawn, labelled by index
PLOTTED_LARGEST = 8
# an entry counts as nonzero above this fraction of the variable's largest magnitude on the path
# (solvers leave small values, not exact zeros, where the exact answer is 0)
NONZERO_RTOL = 1e-5


@dataclass
class SweepSpec:
    """What ``--sweep NAME=VALUES`` asked for."""

    param: str
    values: list[float]
    scale: str  # "log" | "linear"


@dataclass
class SweepPoint:
    value: float
    status: str
    objective: float | None
    variables: dict[str, np.ndarray]
    iterations: int | None
    seconds: float
    solver: str = ""


@dataclass
class SweepResult:
    problem: str
    spec_path: str
    param: str
    scale: str
    backend: str
    solver: str
    points: list[SweepPoint] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(p.status == "optimal" for p in self.points)

    def to_json(self) -> dict[str, Any]:
        from regspec.result import json_number as num, json_safe

        return json_safe({
            "problem": self.problem,
            "spec": self.spec_path,
            "parameter": self.param,
            "scale": self.scale,
            "backend": self.backend,
            "solver": self.solver,
            "values": [p.value for p in self.points],
            "points": [{"value": p.value, "status": p.status, "objective": num(p.objective),
                        "solver": p.solver, "iterations": p.iterations, "seconds": round(p.seconds, 6),
                        "variables": {k: np.asarray(v).tolist() for k, v in p.variables.items()}}
                       for p in self.points],
            "times": {k: round(float(v), 6) for k, v in self.times.items()},
        })


def parse_sweep(text: str) -> SweepSpec:
    """``lam=logspace(-3,0,20)`` / ``lam=linspace(0,1,5)`` / ``lam=[0.1,0.2]`` -> SweepSpec."""
    if "=" not in text:
        raise error(f"--sweep expects NAME=VALUES, e.g. lam=logspace(-3,0,20), got `{text}`")
    name, spec = (s.strip() for s in text.split("=", 1))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name):
        raise error(f"--sweep: `{name}` is not a parameter name")
    m = _RANGE.match(spec)
    if m:
        kind, a, b, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4))
        if n < 1:
            raise error(f"--sweep: {kind} needs at least one point, got {n}")
        values = np.logspace(a, b, n) if kind == "logspace" else np.linspace(a, b, n)
        return SweepSpec(name, [float(v) for v in values], "log" if kind == "logspace" else "linear")
    try:
        values = json.loads(spec)
    except json.JSONDecodeError:
        values = None
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not (isinstance(values, list) and values and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise error(f"--sweep: cannot read the values `{spec}`; use logspace(a, b, n), linspace(a, b, n) "
                    "or a list such as [0.1, 0.2]")
    vals = [float(v) for v in values]
    scale = "log" if all(v > 0 for v in vals) and len(vals) > 2 and max(vals) / min(vals) >= 100 else "linear"
    return SweepSpec(name, vals, scale)


def run_sweep(spec: Any, sweep: SweepSpec, *, problem: str | None = None, params: dict[str, Any] | None = None,
              solver: str | None = None, solver_opts: dict[str, Any] | None = None,
              on_point: Callable[[SweepPoint], None] | None = None) -> SweepResult:
    """Solve ``problem`` of ``spec`` (a path or a loaded Spec) at every value of the sweep.

    ``params`` fixes the other parameters; ``on_point`` is called with each point as it is solved
    (progress). The CVXPY program is lowered once; CVXPY caches its
    DPP canonicalization after the first solve, so each later point only refills parameters."""
    from regspec.api import _as_spec, _cached
    from regspec.backends.cvxpy import lower as cvx_lower
    from regspec.backends.cvxpy import solve as cvx_solve
    from regspec.compiler.evaluate import validate_params

    spec = _as_spec(spec)
    t0 = time.perf_counter()
    ir = spec.compiled(problem).ir
    if sweep.param not in ir.params():
        from regspec.diagnostics import did_you_mean

        declared = list(ir.params())
        raise error(f"--sweep: problem `{ir.block_name}` has no parameter `{sweep.param}`",
                    notes=did_you_mean(sweep.param, declared) + [f"parameters: {', '.join(declared) or 'none'}"])
    fixed = validate_params(ir, params, "--set")
    per_point = [validate_params(ir, {sweep.param: v}, "--sweep")[sweep.param] for v in sweep.values]
    # lowering raises the located DCP errors of a nonconvex spec; it is cached on the spec
    program = _cached(spec, f"cvxpy:{ir.block_name}", lambda: cvx_lower.lower(ir))
    compile_s = time.perf_counter() - t0
    name = cvx_solve.choose_solver(program, solver)
    result = SweepResult(ir.block_name, spec.path, sweep.param, sweep.scale, "cvxpy", name)
    for value, arr in zip(sweep.values, per_point):
        r = cvx_solve.solve(program, solver=solver, solver_opts=solver_opts,
                            params={**fixed, sweep.param: arr}, warm_start=True)
        result.points.append(SweepPoint(value, r.status, r.objective, r.variables, r.iterations, r.times["solve"],
                                        r.solver))
        if on_point is not None:
            on_point(result.points[-1])
    result.times = {"parse": spec.parse_seconds, "compile": compile_s,
                    "solve": sum(p.seconds for p in result.points), "total": time.perf_counter() - t0}
    return result


def write_json(result: SweepResult, out_dir: Path) -> Path:
    path = Path(out_dir) / "path.json"
    write_atomic(path, (json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n").encode())
    return path


def path_series(result: SweepResult) -> dict[str, Any]:
    """What the path plot draws, from the points that have a solution: ``x`` (the parameter),
    ``objective``, per variable ``entries`` ({label: values}; for a variable with more than
    MAX_PLOTTED_ENTRIES entries, the PLOTTED_LARGEST entries of largest magnitude along the path,
    labelled by index) and ``nonzeros`` (entries with |x| > NONZERO_RTOL * max |x| over the path)."""
    solved = [p for p in result.points if p.variables and p.objective is not None]
    out: dict[str, Any] = {"x": [p.value for p in solved], "objective": [float(p.objective) for p in solved],
                           "status": [p.status for p in solved], "entries": {}, "nonzeros": {}, "sizes": {}}
    for name in (solved[0].variables if solved else {}):
        values = [np.asarray(p.variables[name], dtype=float) for p in solved]
        stack = np.array([v.reshape(-1) for v in values])
        shape = values[0].shape
        peak = np.abs(stack).max(axis=0)
        scale = float(peak.max()) if peak.size else 0.0
        out["nonzeros"][name] = [int(n) for n in (np.abs(stack) > NONZERO_RTOL * scale).sum(axis=1)] \
            if scale > 0 else [0] * len(solved)
        picked = (range(stack.shape[1]) if stack.shape[1] <= MAX_PLOTTED_ENTRIES
                  else np.sort(np.argsort(-peak, kind="stable")[:PLOTTED_LARGEST]))
        out["entries"][name] = {_entry_label(name, shape, int(i)): stack[:, i].tolist() for i in picked}
        out["sizes"][name] = int(stack.shape[1])
    return out


def _entry_label(name: str, shape: tuple[int, ...], flat: int) -> str:
    if len(shape) == 0:
        return name
    return f"{name}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"


def plot(result: SweepResult, out_dir: Path) -> Path:
    """``path.png``: per variable its entries (or its largest ones) against the parameter, then
    the objective and the nonzero count of every variable; non-optimal points are marked."""
    from regspec.plots import pyplot, write_png

    plt = pyplot()
    series = path_series(result)
    names = list(series["entries"])
    fig, axes = plt.subplots(len(names) + 2, 1, figsize=(7.5, 3.1 * (len(names) + 2)), squeeze=False)
    xs = np.array(series["x"])
    for ax, name in zip(axes[:, 0], names):
        _entries_panel(ax, name, series["entries"][name], xs, series["sizes"][name])
    _objective_panel(axes[len(names), 0], series, xs)
    ax = axes[len(names) + 1, 0]
    for name, counts in series["nonzeros"].items():
        ax.plot(xs, counts, marker=".", label=f"{name} ({series['sizes'][name]} entries)")
    ax.set_ylabel("nonzeros")
    ax.set_title(f"nonzero entries (|x| > {NONZERO_RTOL:g} max |x| on the path)", fontsize=9)
    if names:
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        if result.scale == "log" and xs.size and np.all(xs > 0):
            ax.set_xscale("log")
        ax.set_xlabel(result.param)
        ax.grid(True, alpha=0.3)
    if not names:
        axes[0, 0].text(0.5, 0.5, "no solved point to plot", ha="center", va="center", transform=axes[0, 0].transAxes)
    fig.suptitle(f"{result.problem}: path over {result.param} ({result.solver})")
    fig.tight_layout()
    return write_png(fig, Path(out_dir) / "path.png")


def _entries_panel(ax: Any, name: str, entries: dict[str, list[float]], xs: np.ndarray, size: int) -> None:
    for label, ys in entries.items():
        ax.plot(xs, ys, marker=".", linewidth=1, label=label)
    if len(entries) < size:
        ax.set_title(f"{name}: the {len(entries)} of {size} entries largest along the path", fontsize=9)
    else:
        ax.set_title(f"{name}: entries", fontsize=9)
    ax.set_ylabel(name)
    if len(entries) <= 12:
        ax.legend(fontsize=7, ncol=2 if len(entries) > 6 else 1)


def _objective_panel(ax: Any, series: dict[str, Any], xs: np.ndarray) -> None:
    obj = np.array(series["objective"])
    ax.plot(xs, obj, marker=".", color="black", label="objective")
    bad = np.array([s != "optimal" for s in series["status"]], dtype=bool)
    if bad.any():
        ax.plot(xs[bad], obj[bad], "x", color="red", label="not proved optimal")
    if obj.size and np.all(obj > 0) and obj.max() / obj.min() >= 100:
        ax.set_yscale("log")
    ax.set_ylabel("objective")
    ax.legend(fontsize=7)


def default_out_dir(problem: str) -> Path:
    return Path("runs") / f"sweep_{problem}"
