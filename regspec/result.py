"""The result of solving a problem, the same shape for every backend."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# CVXPY's status vocabulary; a first-order run that stops on its iteration budget is "user_limit".
SOLVED = ("optimal", "optimal_inaccurate")


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

    @property
    def ok(self) -> bool:
        return self.status in SOLVED

    def to_json(self) -> dict[str, Any]:
        def num(x: Any) -> Any:
            if x is None:
                return None
            x = float(x)
            return x if math.isfinite(x) else str(x)

        return {
            "problem": self.problem,
            "status": self.status,
            "objective": num(self.objective),
            "variables": {k: np.asarray(v).tolist() for k, v in self.variables.items()},
            "backend": self.backend,
            "solver": self.solver,
            "iterations": self.iterations,
            "residuals": {k: num(v) for k, v in self.residuals.items()},
            "times": {k: round(float(v), 6) for k, v in self.times.items()},
            **({"info": self.info} if self.info else {}),
        }
