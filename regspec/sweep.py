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
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regspec.diagnostics import error

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(logspace|linspace)\(\s*({_NUM})\s*,\s*({_NUM})\s*,\s*(\d+)\s*\)\s*$")
# variables with more entries than this are plotted as norms rather than entry by entry
MAX_PLOTTED_ENTRIES = 30


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
              solver: str | None = None, solver_opts: dict[str, Any] | None = None) -> SweepResult:
    """Solve ``problem`` of ``spec`` (a path or a loaded Spec) at every value of the sweep.

    ``params`` fixes the other parameters. The CVXPY program is lowered once; CVXPY caches its
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
    result.times = {"parse": spec.parse_seconds, "compile": compile_s,
                    "solve": sum(p.seconds for p in result.points), "total": time.perf_counter() - t0}
    return result


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path`` (atomic on POSIX),
    so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(result: SweepResult, out_dir: Path) -> Path:
    path = Path(out_dir) / "path.json"
    _atomic_write(path, (json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n").encode())
    return path


def plot(result: SweepResult, out_dir: Path) -> Path:
    """One panel per variable: its entries against the parameter (norms for big variables)."""
    import io

    from regspec.extras import require

    matplotlib = require("matplotlib", "the sweep plot (path.png)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    solved = [p for p in result.points if p.variables]
    names = list(solved[0].variables) if solved else []
    panels = max(1, len(names))
    fig, axes = plt.subplots(panels, 1, figsize=(7, 3.2 * panels), squeeze=False)
    xs = np.array([p.value for p in solved])
    for ax, name in zip(axes[:, 0], names):
        stack = np.array([np.asarray(p.variables[name], dtype=float).reshape(-1) for p in solved])
        if stack.shape[1] <= MAX_PLOTTED_ENTRIES:
            ax.plot(xs, stack, marker=".", linewidth=1)
            ax.set_ylabel(f"{name} entries")
        else:
            ax.plot(xs, np.linalg.norm(stack, axis=1), marker=".", label=f"||{name}||_2")
            ax.plot(xs, np.abs(stack).sum(axis=1), marker=".", label=f"||{name}||_1")
            ax.set_ylabel(f"norms of {name} ({stack.shape[1]} entries)")
            ax.legend()
        if result.scale == "log" and np.all(xs > 0):
            ax.set_xscale("log")
        ax.set_xlabel(result.param)
        ax.grid(True, alpha=0.3)
    if not names:
        axes[0, 0].text(0.5, 0.5, "no optimal point to plot", ha="center", va="center")
    fig.suptitle(f"{result.problem}: path over {result.param}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = Path(out_dir) / "path.png"
    _atomic_write(path, buf.getvalue())
    return path


def default_out_dir(problem: str) -> Path:
    return Path("runs") / f"sweep_{problem}"
