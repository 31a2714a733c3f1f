"""Each atom's ``prox`` entry, with the hyperparameters ``prox_hyper`` gives, is the prox of the
atom as the catalogue defines it: the torch kernel's output equals CVXPY's
argmin_z tau * f(z) + 1/2 ||z - v||^2 (CATALOGUE X25). This ties the catalogue's math (default
group weights, label canonicalization, norm_21's unit weights) to the kernels the torch backend runs."""
from __future__ import annotations

import numpy as np
import pytest

from regspec.compiler.catalogue import ATOMS

rng = np.random.default_rng(3)
VEC = rng.standard_normal(7) * 2
MAT = rng.standard_normal((4, 5)) * 2
SYM = (lambda a: a + a.T)(rng.standard_normal((4, 4)))

CASES = [
    ("sum_squares", VEC, {}), ("norm1", VEC, {}), ("norm1", VEC, {"w": rng.uniform(0.2, 2, 7)}),
    ("norm2", MAT, {}), ("norm_inf", VEC, {}), ("huber", VEC, {"M": 0.7}), ("elastic_net", VEC, {"a": 0.6, "b": 0.8}),
    ("group_norm", VEC, {"groups": np.array([5, 5, 9, 9, 9, 1, 1])}), ("group_norm", MAT, {"groups": "rows"}),
    ("group_norm", MAT, {"groups": "cols"}), ("group_norm", MAT, {"groups": np.array([0, 1, 1, 0])}),
    ("group_norm", VEC, {"groups": np.array([0, 0, 1, 1, 1, 2, 2]), "w": np.array([1.0, 0.5, 2.0])}),
    ("group_l2", VEC, {"groups": np.array([0, 0, 1, 1, 1, 2, 2])}),
    ("norm_21", MAT, {"axis": 1}), ("norm_21", MAT, {"axis": 0}),
    ("class_group_l2", MAT, {"labels": np.array([2, 0, 2, 0])}),
    ("nuclear_norm", MAT, {}), ("spectral_norm", MAT, {}), ("log_det", SYM, {}),
]
TAU = 0.8


def _to_torch(value):
    import torch

    if isinstance(value, np.ndarray):
        return torch.as_tensor(value) if value.dtype.kind in "iub" else torch.as_tensor(value, dtype=torch.float64)
    return value


@pytest.mark.parametrize("name,v,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_prox_kernel_is_the_prox_of_the_atom(name, v, kw):
    import cvxpy as cp
    import torch

    from regspec.backends.torch.prox import get_kernel

    atom = ATOMS[name]
    assert atom.prox is not None
    kw = {**atom.static, **kw}
    hyper = {k: _to_torch(h) for k, h in atom.prox_hyper(kw, [v.shape]).items()}
    z_torch = get_kernel(atom.prox.kernel).fn(torch.as_tensor(v), TAU, **hyper).numpy()

    z = cp.Variable(v.shape, symmetric=atom.prox.negated)
    f = atom.cvxpy([z], kw)
    # negated: the kernel is the prox of -f (f concave, e.g. log_det)
    term = -TAU * f if atom.prox.negated else TAU * f
    cp.Problem(cp.Minimize(term + 0.5 * cp.sum_squares(z - v))).solve(
        solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    # interior-point argmin accuracy ~1e-8 at these tolerances (strongly convex objective)
    np.testing.assert_allclose(z_torch, z.value, atol=2e-6)
