"""Every catalogue atom means the same on its three evaluations: numpy (constant folding), CVXPY
(the lowering, evaluated on constants) and torch (the forward evaluation), on one example each.
Also the shape rules, signs and DCP composition of a few atoms, and the sets' CVXPY lowering
against their torch projections (a projection is a fixed point on the set: Π(x) = x for x in C)."""
from __future__ import annotations

import numpy as np
import pytest

from regspec.compiler.catalogue import ATOMS, SETS, Curvature, ShapeError, Sign

rng = np.random.default_rng(0)
V = rng.standard_normal(6)
M = rng.standard_normal((4, 5))
S = rng.standard_normal((4, 4))
SPD = S @ S.T + np.eye(4)
POS = rng.uniform(0.5, 2.0, 6)
POS2 = rng.uniform(0.5, 2.0, 6)
IMG = rng.standard_normal((5, 6))
LABELS = np.array([0, 0, 1, 1, 1, 2])

# name -> list of (args, static/tensor keywords): each case is evaluated by all three lowerings.
EXAMPLES: dict[str, list[tuple[list, dict]]] = {
    "add": [([M, M[0]], {})], "sub": [([V, 2.0], {})], "neg": [([M], {})],
    "multiply": [([M, M], {}), ([2.0, V], {})], "divide": [([V, 3.0], {})],
    "matmul": [([M, M.T], {}), ([M, M[0]], {})], "power": [([POS, 2.0], {"_exponent": 2.0})],
    "transpose": [([M], {})], "sum": [([M], {"axis": None}), ([M], {"axis": 0})],
    "sum_squares": [([M], {})], "norm1": [([V], {}), ([V], {"w": POS}), ([M], {"axis": 0}),
                                          ([M], {"axis": 1, "w": np.abs(M)})],
    "norm2": [([M], {}), ([M], {"axis": 1}), ([M], {"axis": -2}), ([V], {"axis": 0})],
    "sqrt": [([POS], {})], "max": [([M], {"axis": None}), ([M], {"axis": 1}), ([V, 0.2], {"axis": None})],
    "min": [([M], {"axis": None}), ([V, POS], {"axis": None})],
    "index": [([M], {"_key": (slice(0, 2), 1)}), ([M], {"_key": (M > 0,)}),
              ([M], {"_key": (np.array([0, 2]), np.array([1, 3]))})],
    "abs": [([V], {})], "pos": [([V], {})], "exp": [([V], {})], "log": [([POS], {})],
    "logistic": [([V * 30], {})], "log_sum_exp": [([M], {"axis": None}), ([M], {"axis": 1})],
    "entropy": [([POS], {}), ([np.array([0.0, 0.5, 0.5]), ], {})], "kl_div": [([POS, POS2], {})],
    "norm_inf": [([M], {})], "huber": [([V], {"M": 0.5})], "quad_form": [([S[0]], {"P": SPD})],
    "elastic_net": [([V], {"a": 0.3, "b": 0.7})],
    "group_norm": [([V], {"groups": LABELS}), ([M], {"groups": "rows"}), ([M], {"groups": "cols"}),
                   ([M], {"groups": np.array([0, 1, 0, 1])}), ([V], {"groups": LABELS, "w": np.array([1.0, 2, 3])}),
                   ([M], {"groups": np.arange(20).reshape(4, 5) % 3})],
    "group_l2": [([V], {"groups": LABELS})],
    "norm_21": [([M], {"axis": 1}), ([M], {"axis": 0})],
    "sum_of_norms": [([M], {"pairs": np.array([[0, 1], [1, 3], [0, 2]])}),
                     ([V], {"pairs": np.array([[0, 5], [2, 3]]), "w": np.array([0.5, 2.0])})],
    "class_group_l2": [([M], {"labels": np.array([0, 1, 1, 0])})],
    "tv": [([V], {"mode": "iso"}), ([V], {"mode": "iso", "w": POS[:5]}), ([IMG], {"mode": "iso"}),
           ([IMG], {"mode": "aniso"}), ([IMG], {"mode": "iso", "w": np.abs(IMG) + 0.1}),
           ([IMG], {"mode": "aniso", "w": np.abs(IMG) + 0.1})],
    "nuclear_norm": [([M], {})], "spectral_norm": [([M], {})], "lambda_max": [([SPD - 3 * np.eye(4)], {})],
    "lambda_min": [([SPD], {})], "lambda_sum_largest": [([S + S.T], {"k": 2})], "lambda_sum_smallest": [([S + S.T], {"k": 2})], "log_det": [([SPD], {})],
    "trace": [([S], {})], "diag": [([V], {}), ([S], {})], "reshape": [([M], {"shape": np.array([2, -1])})],
    "vec": [([M], {})], "hstack": [([V, POS], {}), ([M, M], {}), ([1.0, V], {})],
    "vstack": [([V, POS], {}), ([M, M[:1]], {})], "inner": [([M, M + 1], {})], "mean": [([M], {"axis": None}),
                                                                                         ([M], {"axis": 0})],
    "cumsum": [([V], {"axis": 0}), ([M], {"axis": 1})], "diff": [([V], {"k": 1, "axis": 0}),
                                                                  ([M], {"k": 2, "axis": 1})],
    "hinge": [([V], {})], "square": [([M], {})], "inv_pos": [([POS], {})],
    "entr": [([np.array([0.0, 0.5, 2.0])], {})], "rel_entr": [([POS, POS2], {}), ([np.array([0.0, 1.0]), 2.0], {})],
    "log1p": [([V * 0.5], {})], "sum_largest": [([M], {"k": 3})], "geo_mean": [([POS], {}), ([POS], {"p": list(range(1, np.size(POS) + 1))})],
    "sum_smallest": [([M], {"k": 3})], "convolve": [([POS[:3], V], {})], "harmonic_mean": [([POS], {}), ([np.array([0.0, 1.0, 2.0])], {})],
    "pnorm": [([M], {"p": 3}), ([M], {"p": 1.5, "axis": 1}), ([M], {"p": 2, "axis": 0})],
    "quad_over_lin": [([V, 2.5], {})],
    "l2sq": [([M], {})], "weight_decay": [([V], {})], "flops": [([M], {}), ([V], {})],
    "orthogonality": [([M], {}), ([M.T], {"mode": "offdiag"}), ([M], {"mode": "grouped", "groups": 2})],
}


def _cvxpy_value(atom, args, kw):
    import cvxpy as cp

    cargs = [cp.Constant(a) if isinstance(a, np.ndarray) else a for a in args]
    out = atom.cvxpy(cargs, dict(kw))
    return np.asarray(out.value if hasattr(out, "value") else out, dtype=float)


def _torch_value(atom, args, kw):
    import torch

    targs = [torch.as_tensor(a, dtype=torch.float64) if isinstance(a, np.ndarray) and a.dtype != bool else a
             for a in args]
    tkw = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) and k in atom.tensor_kwargs else v)
           for k, v in kw.items()}
    if atom.name == "index":
        tkw = kw
    return np.asarray(atom.torch(targs, tkw).detach().numpy(), dtype=float)


CASES = [(name, i) for name, cases in EXAMPLES.items() for i in range(len(cases))]


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_three_lowerings_agree(name, i):
    atom = ATOMS[name]
    args, kw = EXAMPLES[name][i]
    kw = {**atom.static, **kw}
    shapes = [np.shape(a) for a in args]
    ref = np.asarray(atom.numpy(args, kw), dtype=float)
    assert tuple(ref.shape) == tuple(atom.shape(shapes, kw)), "the shape rule disagrees with numpy"
    if "cvxpy" not in atom.lacks:  # orthogonality is nonconvex: no CVXPY lowering
        np.testing.assert_allclose(_cvxpy_value(atom, args, kw), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_torch_value(atom, args, kw), ref, rtol=1e-9, atol=1e-9)


def test_every_atom_has_an_example():
    # atoms evaluated only by the training runtime (anchor_l2, jacobian_fro) have no value of their own
    missing = [n for n, a in ATOMS.items() if not a.constant_only and n not in EXAMPLES and n != "compare"
               and not {"cvxpy", "torch"} <= set(a.lacks)]
    assert not missing, f"atoms without a value example: {missing}"


def test_same_builds_pairs_of_equal_labels():
    pairs = ATOMS["same"].numpy([np.array([2, 0, 2, 1, 0])], {})
    assert pairs.tolist() == [[0, 2], [1, 4]]
    assert pairs.dtype == np.int64
    assert ATOMS["same"].numpy([np.array([0, 1, 2])], {}).shape == (0, 2)


@pytest.mark.parametrize("name,shapes,kw,message", [
    ("nuclear_norm", [(5,)], {}, "needs a matrix"),
    ("log_det", [(3, 4)], {}, "square"),
    ("quad_form", [(3,)], {"P": np.eye(4)}, "needs P of shape (3, 3)"),
    ("group_norm", [(6,)], {"groups": np.array([0, 1])}, "fit neither"),
    ("group_norm", [(6,)], {"groups": None}, "needs `groups"),
    ("sum_of_norms", [(4, 2)], {"pairs": np.array([[0, 4]])}, "0..3"),
    ("tv", [(5,)], {"mode": "iso", "w": np.ones(5)}, "(4,)"),
    ("reshape", [(4, 5)], {"shape": np.array([3, -1])}, "cannot reshape"),
    ("lambda_sum_largest", [(3, 3)], {"k": 5}, "1..3"),
    ("class_group_l2", [(4, 3)], {"labels": np.array([0, 1])}, "one label per row"),
])
def test_shape_rules_reject(name, shapes, kw, message):
    atom = ATOMS[name]
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        atom.shape(shapes, {**atom.static, **kw})


def test_quad_form_curvature_follows_P():
    qf = ATOMS["quad_form"]
    assert qf.curvature_of({"P": np.eye(3)}) is Curvature.CONVEX
    assert qf.curvature_of({"P": -np.eye(3)}) is Curvature.CONCAVE
    curv, why = qf.dcp([Curvature.AFFINE], [Sign.UNKNOWN], {"P": np.diag([1.0, -1, 1])}, ["x"])
    assert curv is Curvature.UNKNOWN and "indefinite" in why


def test_dcp_reason_wording():
    # a concave argument of unknown sign: norm1 is neither increasing nor decreasing in it
    curv, why = ATOMS["norm1"].dcp([Curvature.CONCAVE], [Sign.UNKNOWN], {}, ["sqrt(x)"])
    assert curv is Curvature.UNKNOWN
    assert why == "norm1 is convex, but its argument `sqrt(x)` is concave and norm1 is not monotone"
    # a nonnegative concave argument: norm1 is increasing there, and DCP needs decreasing
    curv, why = ATOMS["norm1"].dcp([Curvature.CONCAVE], [Sign.NONNEG], {}, ["sqrt(x)"])
    assert why == ("norm1 is convex, but its argument `sqrt(x)` is concave and norm1 is increasing "
                   "(it would need to be decreasing)")
    curv, why = ATOMS["log"].dcp([Curvature.CONVEX], [Sign.NONNEG], {}, ["exp(x)"])
    assert why.startswith("log is concave, but its argument `exp(x)` is convex")


# ---------------------------------------------------------------- sets
SET_POINTS = {
    # set -> (a point inside, static keywords)
    "nonneg": (np.abs(V), {}), "nonpos": (-np.abs(V), {}), "box": (np.clip(V, -0.5, 0.5), {"lo": -0.5, "hi": 0.5}),
    "simplex": (np.abs(V) / np.abs(V).sum(), {"r": 1.0}), "l1_ball": (V / np.abs(V).sum(), {"r": 1.0}),
    "l2_ball": (M / np.linalg.norm(M) * 2, {"r": 2.0}), "linf_ball": (np.clip(V, -1, 1), {"r": 1.0}),
    "psd": (SPD, {}), "spectral_ball": (M / np.linalg.norm(M, 2), {"r": 1.0}),
    "nuclear_ball": (M / np.linalg.norm(M, "nuc") * 3, {"r": 3.0}),
    "transport": (np.outer([0.2, 0.3, 0.5], [0.5, 0.5]), {"a": np.array([0.2, 0.3, 0.5]), "b": np.array([0.5, 0.5])}),
}


@pytest.mark.parametrize("name", sorted(SET_POINTS))
def test_set_point_is_feasible_in_cvxpy_and_fixed_by_projection(name):
    import cvxpy as cp
    import torch

    from regspec.backends.torch.prox import get_kernel

    entry = SETS[name]
    point, kw = SET_POINTS[name]
    kw = {**entry.static, **kw}
    entry.check_shape(point.shape, kw)
    x = cp.Variable(point.shape, PSD=(name == "psd"))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - point)), entry.cvxpy(x, kw))
    prob.solve(solver="CLARABEL")
    assert prob.value <= 1e-7, f"{name}: the inside point is not feasible for the CVXPY constraints"
    hyper = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in entry.kernel_hyper(kw).items()}
    projected = get_kernel(entry.projection).fn(torch.as_tensor(point), 1.0, **hyper).numpy()
    np.testing.assert_allclose(projected, point, atol=1e-7)


@pytest.mark.parametrize("name", ["simplex", "l1_ball", "l2_ball", "linf_ball", "box", "spectral_ball",
                                  "nuclear_ball", "psd", "transport"])
def test_projection_matches_cvxpy(name):
    """Π_C(v) from the torch kernel = argmin ||x - v||^2 over the CVXPY constraints (CATALOGUE X24)."""
    import cvxpy as cp
    import torch

    from regspec.backends.torch.prox import get_kernel

    entry = SETS[name]
    point, kw = SET_POINTS[name]
    kw = {**entry.static, **kw}
    v = point + np.random.default_rng(1).standard_normal(point.shape)
    if name == "psd":
        v = (v + v.T) / 2
    x = cp.Variable(v.shape, PSD=(name == "psd"))
    cp.Problem(cp.Minimize(cp.sum_squares(x - v)), entry.cvxpy(x, kw)).solve(
        solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    hyper = {k: (torch.as_tensor(w) if isinstance(w, np.ndarray) else w) for k, w in entry.kernel_hyper(kw).items()}
    projected = get_kernel(entry.projection).fn(torch.as_tensor(v), 1.0, **hyper).numpy()
    # interior-point accuracy ~1e-9 on the argmin; Dykstra (transport) stops at 1e-9 sup-norm
    np.testing.assert_allclose(projected, x.value, atol=1e-6)


def test_metric_cone_triangles():
    i, j, k = SETS["metric_cone"].triangles(12)
    assert len(i) == 660  # C(12, 3) triples, three inequalities each (CATALOGUE X15)
