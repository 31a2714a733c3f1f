"""The result of solving a problem, the same shape for every backend.

What a Result reports is true by construction:

- ``status`` uses CVXPY's vocabulary (a first-order run that stops on its iteration budget is
  ``user_limit``), plus ``stationary`` / ``stationary_inaccurate`` for a problem whose convexity is not
  proved (DCP): the solver's stopping rule certifies a stationary point, not a global optimum, and
  ``local`` is True;
- a non-finite value is never a result: a solved status with a non-finite objective or variable
  entry becomes ``solver_error`` (``info["message"]`` says which value), and its numbers are dropped;
- ``to_json`` gives numbers or null, never strings or the non-standard ``Infinity``/``NaN`` tokens
  (``json_safe``), for every field: variables, objective, residuals, times and info.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Statuses whose variables are an answer. "stationary": a nonconvex (or not proved convex) problem
# whose first-order stopping rule was met; the point is stationary, not proved globally optimal.
SOLVED = ("optimal", "optimal_inaccurate", "stationary", "stationary_inaccurate")
LOCAL_STATUS = {"optimal": "stationary", "optimal_inaccurate": "stationary_inaccurate"}
# A solved point with an entry this large is checked for a ray of improvement before its status
# is reported (``backends/cvxpy/solve.py: unbounded_ray``, both backends); ordinary points are not.
RAY_CHECK_SIZE = 1e3


def json_number(x: Any) -> float | int | None:
    """A finite JSON number, or None (null) for None, inf and nan."""
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def json_safe(value: Any) -> Any:
    """``value`` with every number a finite JSON number or None (arrays become nested lists),
    recursively through dicts, lists and tuples; strings and None pass; anything else becomes its
    ``str`` (a device, a dtype)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return json_number(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # a torch tensor
        return json_safe(np.asarray(value.detach().cpu() if hasattr(value, "detach") else value))
    return str(value)


def _non_finite(objective: float | None, variables: dict[str, np.ndarray]) -> str | None:
    """Which reported value is not finite (None when all are)."""
    if objective is not None and not math.isfinite(float(objective)):
        return f"the objective is {float(objective)}"
    for name, value in variables.items():
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            return f"the variable `{name}` has no value"
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            return f"the variable `{name}` has {bad} non-finite entr{'y' if bad == 1 else 'ies'}"
    return None


@dataclass
class Result:
    status: str
    objective: float | None
    variables: dict[str, np.ndarray]
    backend: str
    solver: str
    iterations: int | None = None
    times: dict[str, float] = field(default_factory=dict)
    residuals: dict[str, float] = field(default_factory=dict)
    problem: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    local: bool = False  # True: the problem is not proved convex; a solved status is a stationary point
    # first-order backends: the stopping tolerance applied, and each constraint's largest relative
    # violation at the returned point (`line N: <constraint>` -> value; docs/solvers.md)
    tol: float | None = None
    violations: dict[str, float] = field(default_factory=dict)
    # first-order backends: the residuals at each check ({"iteration": k, ...}), drawn by
    # `solve --plot`; not part of to_json (it can be long)
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.enforce_finite()

    def enforce_finite(self) -> None:
        """A solved status with a non-finite objective or variable is not a result: it becomes
        ``solver_error`` and its numbers are dropped (the guard every backend passes through)."""
        if self.status not in SOLVED:
            return
        why = _non_finite(self.objective, self.variables)
        if why is None:
            return
        self.info["message"] = (f"the solver reported `{self.status}`, but {why}: "
                                "a non-finite value is not a result")
        self.status = "solver_error"
        self.objective = None
        self.variables = {}

    def mark_local(self, reason: str) -> None:
        """The problem's convexity is not proved (``reason``, from the curvature pass): a solved
        status certifies a stationary point only."""
        self.local = True
        self.status = LOCAL_STATUS.get(self.status, self.status)
        self.info["local"] = ("a stationary point of a problem not proved convex (DCP): a local answer, "
                              f"not a proved global optimum ({reason})")

    @property
    def ok(self) -> bool:
        return self.status in SOLVED

    def __repr__(self) -> str:
        shapes = {k: tuple(np.shape(v)) for k, v in self.variables.items()}
        objective = f"{self.objective:.10g}" if self.objective is not None else None
        return (f"Result(problem={self.problem!r}, status={self.status!r}, objective={objective}, "
                f"backend={self.backend!r}, solver={self.solver!r}, iterations={self.iterations}, "
                f"variables={{{', '.join(f'{k!r}: shape {s}' for k, s in shapes.items())}}})")

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """What `regspec solve` prints: status, objective, each variable (abridged), residuals,
        violations and times."""
        lines = [f"problem {self.problem}: {self.status} ({self.backend}, {self.solver}"
                 + (f", {self.iterations} iterations" if self.iterations is not None else "") + ")"]
        if self.local:
            lines.append(f"  local: {self.info.get('local', 'a stationary point of a problem not proved convex')}")
        if not self.ok and self.info.get("message"):
            lines.append(f"  {self.info['message']}")
        lines += [f"  {self.info[key]}" for key in ("inaccurate", "fallback", "unused") if self.info.get(key)]
        if self.objective is not None:
            lines.append(f"objective: {self.objective:.10g}")
        for name, value in self.variables.items():
            v = np.asarray(value)
            with np.printoptions(precision=6, suppress=True, threshold=20, edgeitems=3):
                lines.append(f"{name} {tuple(v.shape)}: {v}")
        if self.residuals:
            lines.append("residuals: " + ", ".join(f"{k}={v:.3g}" for k, v in self.residuals.items()))
        if self.violations:
            lines.append(f"constraint violations (relative, tol {self.tol:.1g}): "
                         + "; ".join(f"{k} = {v:.2g}" for k, v in self.violations.items()))
        lines.append("times (s): " + ", ".join(f"{k}={v:.4f}" for k, v in self.times.items()))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "status": self.status,
            "local": self.local,
            "objective": json_number(self.objective),
            "variables": {k: json_safe(np.asarray(v)) for k, v in self.variables.items()},
            "backend": self.backend,
            "solver": self.solver,
            "iterations": json_number(self.iterations),
            "residuals": {k: json_number(v) for k, v in self.residuals.items()},
            "tol": json_number(self.tol),
            "violations": {k: json_number(v) for k, v in self.violations.items()},
            "times": {k: (round(t, 6) if t is not None else None)
                      for k, t in ((k, json_number(v)) for k, v in self.times.items())},
            **({"info": json_safe(self.info)} if self.info else {}),
        }
