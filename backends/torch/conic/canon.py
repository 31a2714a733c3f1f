"""CVXPY's own canonicalisation to conic form, and the map of a conic solution back to the spec's
variables by CVXPY's inverse reductions.

``get_problem_data(SCS, use_quad_obj=False)`` gives ``min c^T x + offset  s.t.  b - A x in K`` with
``K`` in SCS order (see ``cones``) and the solving chain's inverse data. A solution ``(x, y)`` of
that form goes back through the chain's reductions (all but the solver's own, whose work, building a
``Solution`` from its raw output, is done here the way SCS's interface does it), so each variable of
the spec comes back under its name, in its shape, with maximisation's sign flip undone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from regspec.backends.torch.conic.cones import ConeLayout


class UnsupportedCone(ValueError):
    """The canonical form needs a cone the conic fallback has no projection for."""


@dataclass
class ConicForm:
    """``min c^T x + offset  s.t.  b - A x in K(layout)`` and what maps its solution back."""

    c: np.ndarray
    A: sp.csr_matrix
    b: np.ndarray
    offset: float
    layout: ConeLayout
    chain: Any
    inverse_data: list
    variables: dict[str, Any]   # spec name -> cvxpy Variable

    @property
    def shape(self) -> tuple[int, int]:
        return self.A.shape

    def recover(self, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """The spec's variables and the objective (in the spec's sense) at the conic point (x, y)."""
        from cvxpy.reductions.solution import Solution
        from cvxpy.reductions.solvers import utilities

        solver_inv = self.inverse_data[-1]
        zero = self.layout.zero
        duals = utilities.get_dual_values(y[:zero], utilities.extract_dual_value, solver_inv["eq_constr"])
        duals.update(utilities.get_dual_values(y[zero:], utilities.extract_dual_value, solver_inv["other_constr"]))
        solution = Solution("optimal", float(self.c @ x) + float(solver_inv["offset"]),
                            {solver_inv["var_id"]: x}, duals, {})
        for reduction, inv in reversed(list(zip(self.chain.reductions[:-1], self.inverse_data[:-1]))):
            solution = reduction.invert(solution, inv)
        values = {}
        for name, var in self.variables.items():
            value = solution.primal_vars.get(var.id)
            # a variable the canonical form dropped appears in no term and no constraint: any value is optimal
            values[name] = np.zeros(var.shape) if value is None else np.asarray(value, dtype=float).reshape(var.shape)
        return values, float(solution.opt_val)


def layout_of(dims: Any) -> ConeLayout:
    """The cone layout of CVXPY's ``ConeDims``; power cones have no projection here."""
    if getattr(dims, "p3d", None) or getattr(dims, "pnd", None):
        raise UnsupportedCone("the conic form needs power cones, which the torch conic fallback does not project onto")
    return ConeLayout(zero=int(dims.zero), nonneg=int(dims.nonneg), soc=tuple(int(n) for n in dims.soc),
                      psd=tuple(int(n) for n in dims.psd), exp=int(dims.exp), exp_dual=0)


def conic_form(problem: Any, variables: dict[str, Any]) -> ConicForm:
    """The conic form of a CVXPY problem (current parameter values), in SCS's format without a
    quadratic objective term (sum_squares becomes a second-order cone)."""
    import cvxpy as cp

    if not problem.constraints:
        # CVXPY decides whether SCS can take a problem before canonicalising it, and SCS needs a
        # constraint: `minimize norm_inf(x - 1)` was refused. One vacuous row on an extra scalar.
        problem = cp.Problem(problem.objective, [cp.Variable() == 0])
    data, chain, inverse_data = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": False})
    if data.get("P") is not None:
        raise UnsupportedCone("CVXPY kept a quadratic objective term in the conic form")
    layout = layout_of(data["dims"])
    A = sp.csr_matrix(data["A"], dtype=float)
    if A.shape[0] != layout.size:
        raise UnsupportedCone(f"the conic form has {A.shape[0]} rows but its cones cover {layout.size}")
    return ConicForm(np.asarray(data["c"], dtype=float), A, np.asarray(data["b"], dtype=float),
                     float(inverse_data[-1]["offset"]), layout, chain, inverse_data, dict(variables))
