"""Convex prox and projection kernels of the torch backend against their definitions solved by CVXPY.

Each kernel is checked against ``argmin_z step*f(z) + 1/2||z - v||^2`` (or ``min ||z - v||^2, z in C``)
written directly in CVXPY, on random inputs for several shapes, groupings and steps, in float64 and
float32. Moreau-identity checks pair each norm's prox with the projection onto its dual-norm ball.

Solvers and tolerance. Clarabel (interior point) solves every problem without a PSD cone; the ones
whose CVXPY lowering needs a PSD cone (normNuc, sigma_max, log_det, X >> 0) use SCS at
eps_abs = eps_rel = 1e-9, because Clarabel's PSD/exp-cone path only reached argmins good to ~5e-6.
The prox objective is 1-strongly convex, so a feasible point that is eps-suboptimal lies within
sqrt(2*eps) of the argmin. At Clarabel's default gap tolerance (1e-8) that worst case, ~1e-4, is
what near-kink entries approach in practice (we saw 3e-6 on weighted l1), so we tighten Clarabel to
1e-10 (gap and feasibility). Both solvers then stop on small residuals as well as on the gap, and
the argmin errors we observe are <= ~1e-8 (float64 kernels vs solver) on these sizes. ATOL64 = 1e-6,
relative to max(1, |v|_inf), leaves a 100x margin over that, and a formula error (wrong constant or
branch) shows up at >= 1e-3 here. float32 kernels add rounding of order eps32 = 1.2e-7 times a small
factor (at most ~5e-7 observed, from SVD/eigh), hence ATOL32 = 5e-6.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import cvxpy as cp
import numpy as np
import pytest
import torch
from regspec.backends.torch.projections import (
    proj_affine,
    proj_box,
    proj_l1_ball,
    proj_l2_ball,
    proj_linf_ball,
    proj_nonneg,
    proj_nuclear_ball,
    proj_psd,
    proj_simplex,
    proj_spectral_ball,
    proj_transport,
    proj_transport_marginals,
)
from regspec.backends.torch.prox import (
    blocks,
    prox_anchor_l2,
    prox_elastic_net,
    prox_group_l2,
    prox_huber,
    prox_l1,
    prox_l1_nonneg,
    prox_l2,
    prox_l2sq,
    prox_linf,
    prox_neg_log_det,
    prox_nuclear,
    prox_spectral_norm,
    prox_sum_squares,
)

ATOL64 = 1e-6
ATOL32 = 5e-6
STEPS = (0.3, 1.7)
CLARABEL_SETTINGS = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8)
SCS_SETTINGS = dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=100_000)


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded from the test parameters, so every case is reproducible on its own."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def solve(objective: cp.Expression, constraints: Sequence[cp.Constraint] = (), sdp: bool = False) -> None:
    problem = cp.Problem(cp.Minimize(objective), list(constraints))
    if sdp:
        problem.solve(solver=cp.SCS, **SCS_SETTINGS)
    else:
        problem.solve(solver=cp.CLARABEL, **CLARABEL_SETTINGS)
    assert problem.status == cp.OPTIMAL, problem.status


def cvx_prox(
    v: np.ndarray, step: float, f: Callable[[cp.Variable], cp.Expression], sdp: bool = False, **variable_kw
) -> np.ndarray:
    """argmin_z step*f(z) + 1/2||z - v||^2 by CVXPY."""
    z = cp.Variable(v.shape, **variable_kw)
    solve(step * f(z) + 0.5 * cp.sum_squares(z - v), sdp=sdp)
    return z.value


def cvx_proj(
    v: np.ndarray, constraints: Callable[[cp.Variable], list], sdp: bool = False, **variable_kw
) -> np.ndarray:
    """argmin_z 1/2||z - v||^2 s.t. constraints(z) by CVXPY."""
    z = cp.Variable(v.shape, **variable_kw)
    solve(0.5 * cp.sum_squares(z - v), constraints(z), sdp=sdp)
    return z.value


def flat(z: cp.Expression) -> cp.Expression:
    return cp.vec(z, order="C") if len(z.shape) > 1 else z


def assert_kernel_matches(
    kernel: Callable[..., torch.Tensor], v: np.ndarray, step: float, reference: np.ndarray, **hyper
) -> None:
    """Run ``kernel`` in float64 and float32 on v (hyper arrays cast alike); compare with the reference."""
    scale = max(1.0, float(np.abs(v).max()))
    for dtype, atol in ((torch.float64, ATOL64), (torch.float32, ATOL32)):
        cast = {
            k: (torch.as_tensor(h, dtype=dtype) if isinstance(h, np.ndarray) and h.dtype.kind == "f" else h)
            for k, h in hyper.items()
        }
        out = kernel(torch.tensor(v, dtype=dtype), step, **cast)
        assert out.dtype == dtype and out.shape == v.shape
        np.testing.assert_allclose(
            out.double().numpy(), reference, rtol=0, atol=atol * scale, err_msg=f"{dtype}"
        )


# ---------------------------------------------------------------------------------------------------
# pointwise and whole-tensor proxes
# ---------------------------------------------------------------------------------------------------

SHAPES = ((7,), (3, 5))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("weighted", [False, True])
def test_l1(shape, step, weighted):
    rng = rng_for("l1", shape, step, weighted)
    v = rng.normal(size=shape) * 2
    lam = 0.8
    w = rng.uniform(0, 2, size=shape) if weighted else np.ones(shape)
    reference = cvx_prox(v, step, lambda z: lam * cp.sum(cp.multiply(w, cp.abs(z))))
    assert_kernel_matches(prox_l1, v, step, reference, lam=lam, weight=w if weighted else None)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_l1_nonneg(shape, step):
    rng = rng_for("l1_nonneg", shape, step)
    v = rng.normal(size=shape) * 2
    w = rng.uniform(0, 2, size=shape)
    z = cp.Variable(shape)
    solve(step * 0.7 * cp.sum(cp.multiply(w, cp.abs(z))) + 0.5 * cp.sum_squares(z - v), [z >= 0])
    assert_kernel_matches(prox_l1_nonneg, v, step, z.value, lam=0.7, weight=w)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", (0.3, 8.0))  # 8.0 shrinks the whole tensor to zero
def test_l2_norm(shape, step):
    v = rng_for("l2", shape, step).normal(size=shape)
    reference = cvx_prox(v, step, lambda z: 1.3 * cp.norm(flat(z), 2))
    assert_kernel_matches(prox_l2, v, step, reference, lam=1.3)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_linf(shape, step):
    v = rng_for("linf", shape, step).normal(size=shape)
    reference = cvx_prox(v, step, lambda z: 0.9 * cp.norm(flat(z), "inf"))
    assert_kernel_matches(prox_linf, v, step, reference, lam=0.9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_elastic_net(shape, step):
    v = rng_for("enet", shape, step).normal(size=shape) * 2
    reference = cvx_prox(v, step, lambda z: 0.6 * cp.sum(cp.abs(z)) + 0.5 * 1.5 * cp.sum_squares(z))
    assert_kernel_matches(prox_elastic_net, v, step, reference, lam_l1=0.6, lam_l2=1.5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_l2sq_and_sum_squares(shape, step):
    v = rng_for("l2sq", shape, step).normal(size=shape)
    reference = cvx_prox(v, step, lambda z: 0.5 * 0.4 * cp.sum_squares(z))
    assert_kernel_matches(prox_l2sq, v, step, reference, lam=0.4)
    reference = cvx_prox(v, step, lambda z: 0.4 * cp.sum_squares(z))
    assert_kernel_matches(prox_sum_squares, v, step, reference, lam=0.4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("with_fisher", [False, True])
def test_anchor_l2(shape, step, with_fisher):
    rng = rng_for("anchor", shape, step, with_fisher)
    v, anchor = rng.normal(size=shape), rng.normal(size=shape)
    fisher = rng.uniform(0, 3, size=shape) if with_fisher else np.ones(shape)
    reference = cvx_prox(v, step, lambda z: 0.5 * 0.9 * cp.sum(cp.multiply(fisher, cp.square(z - anchor))))
    assert_kernel_matches(
        prox_anchor_l2, v, step, reference, anchor=anchor, lam=0.9, fisher=fisher if with_fisher else None
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_huber(shape, step):
    # huber(x, M) = x^2 if |x| <= M else 2M|x| - M^2, CVXPY's definition too; inputs straddle both branches
    v = rng_for("huber", shape, step).normal(size=shape) * 3
    reference = cvx_prox(v, step, lambda z: 0.5 * cp.sum(cp.huber(z, 0.8)))
    assert_kernel_matches(prox_huber, v, step, reference, M=0.8, lam=0.5)


# ---------------------------------------------------------------------------------------------------
# group lasso, with an independent numpy enumeration of the groups
# ---------------------------------------------------------------------------------------------------


def groups_of_labels(labels: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(labels == g) for g in range(int(labels.max()) + 1)]


def groups_of_tiles(rows: int, cols: int, tile_rows: int, tile_cols: int) -> list[np.ndarray]:
    index = np.arange(rows * cols).reshape(rows, cols)
    return [
        index[r : r + tile_rows, c : c + tile_cols].ravel()
        for r in range(0, rows, tile_rows)
        for c in range(0, cols, tile_cols)
    ]


def cvx_group_prox(
    v: np.ndarray, step: float, lam: float, groups: list[np.ndarray], weights: np.ndarray | None
) -> np.ndarray:
    """argmin step*lam*sum_g w_g ||z_g|| + 1/2||z - v||^2 on the flattened v, groups as flat index arrays."""
    flat_v = v.ravel()
    w = weights if weights is not None else np.sqrt([len(g) for g in groups])
    reference = cvx_prox(
        flat_v, step, lambda z: lam * sum(w_g * cp.norm(z[g], 2) for w_g, g in zip(w, groups) if len(g))
    )
    return reference.reshape(v.shape)


GROUP_CASES = {
    "rows": ((4, 6), "rows", lambda: groups_of_tiles(4, 6, 1, 6)),
    "cols": ((4, 6), "cols", lambda: groups_of_tiles(4, 6, 4, 1)),
    "channels_conv": ((3, 2, 2, 2), "channels", lambda: groups_of_tiles(3, 8, 1, 8)),
    "all": ((3, 4), "all", lambda: [np.arange(12)]),
    "blocks": ((4, 6), blocks(2, 3), lambda: groups_of_tiles(4, 6, 2, 3)),
    "blocks_ragged": ((5, 6), "blocks(2, 4)", lambda: groups_of_tiles(5, 6, 2, 4)),
    "blocks_input_dim": ((3, 8), blocks(1, 4), lambda: groups_of_tiles(3, 8, 1, 4)),
    "labels_entries": ((9,), np.array([0, 1, 2, 0, 1, 2, 3, 3, 3]), None),
    "labels_entries_matrix": ((3, 4), np.array([[0, 1, 1, 0], [2, 2, 0, 1], [1, 0, 2, 2]]), None),
    "labels_rows": ((5, 3), np.array([0, 1, 0, 2, 1]), None),
}


@pytest.mark.parametrize("case", list(GROUP_CASES))
@pytest.mark.parametrize("step", (0.3, 1.2))
def test_group_l2(case, step):
    shape, grouping, enumerate_groups = GROUP_CASES[case]
    v = rng_for("group", case, step).normal(size=shape) * 1.5
    lam = 0.7
    if isinstance(grouping, np.ndarray):
        if grouping.shape == shape or grouping.ndim == len(shape):
            groups = groups_of_labels(grouping.ravel())
        else:  # one label per row: the row's entries join the row's group
            row_length = int(np.prod(shape[1:]))
            groups = groups_of_labels(np.repeat(grouping, row_length))
        hyper_groups = torch.as_tensor(grouping)
    else:
        groups = enumerate_groups()
        hyper_groups = grouping
    reference = cvx_group_prox(v, step, lam, groups, None)
    assert_kernel_matches(prox_group_l2, v, step, reference, lam=lam, groups=hyper_groups)


def test_group_l2_custom_weights_and_label_count():
    rng = rng_for("group_weights")
    v = rng.normal(size=(5, 4))
    weights = rng.uniform(0.2, 2.0, size=5)
    reference = cvx_group_prox(v, 0.8, 1.0, groups_of_tiles(5, 4, 1, 4), weights)
    assert_kernel_matches(prox_group_l2, v, 0.8, reference, groups="rows", weights=weights)
    # label ids need not all be used: a declared but empty group changes nothing
    labels = torch.tensor([0, 2, 0, 2, 3])
    out = prox_group_l2(torch.tensor(v), 0.8, groups=labels, num_groups=5)
    expected = cvx_group_prox(v, 0.8, 1.0, groups_of_labels(np.repeat(labels.numpy(), 4)), None)
    np.testing.assert_allclose(out.numpy(), expected, atol=ATOL64 * 2)


# ---------------------------------------------------------------------------------------------------
# spectral proxes
# ---------------------------------------------------------------------------------------------------

MATRIX_SHAPES = ((4, 3), (3, 5))


@pytest.mark.parametrize("shape", MATRIX_SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_nuclear(shape, step):
    v = rng_for("nuclear", shape, step).normal(size=shape) * 1.5
    reference = cvx_prox(v, step, lambda z: 0.8 * cp.normNuc(z), sdp=True)
    assert_kernel_matches(prox_nuclear, v, step, reference, lam=0.8)


@pytest.mark.parametrize("shape", MATRIX_SHAPES)
@pytest.mark.parametrize("step", STEPS)
def test_spectral_norm(shape, step):
    v = rng_for("spectral", shape, step).normal(size=shape) * 1.5
    reference = cvx_prox(v, step, lambda z: 0.8 * cp.sigma_max(z), sdp=True)
    assert_kernel_matches(prox_spectral_norm, v, step, reference, lam=0.8)


@pytest.mark.parametrize("n", (3, 4))
@pytest.mark.parametrize("step", STEPS)
def test_neg_log_det(n, step):
    # a nonsymmetric input: the kernel symmetrizes, CVXPY sees the same objective over symmetric Z
    v = rng_for("logdet", n, step).normal(size=(n, n))
    reference = cvx_prox(v, step, lambda z: -0.6 * cp.log_det(z), sdp=True, symmetric=True)
    assert_kernel_matches(prox_neg_log_det, v, step, reference, lam=0.6)


def test_spectral_kernels_batch_with_per_matrix_steps():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    steps = torch.tensor([0.2, 0.9, 2.5], dtype=torch.float64)
    for kernel in (prox_nuclear, prox_spectral_norm):
        batched = kernel(x, steps, lam=0.7)
        for i in range(3):
            torch.testing.assert_close(batched[i], kernel(x[i], float(steps[i]), lam=0.7))


# ---------------------------------------------------------------------------------------------------
# convex projections
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_nonneg_box_linf_ball(shape):
    rng = rng_for("boxes", shape)
    v = rng.normal(size=shape) * 2
    assert_kernel_matches(proj_nonneg, v, 1.0, cvx_proj(v, lambda z: [z >= 0]))
    assert_kernel_matches(proj_box, v, 1.0, cvx_proj(v, lambda z: [z >= -0.5, z <= 1.2]), lo=-0.5, hi=1.2)
    assert_kernel_matches(proj_box, v, 1.0, cvx_proj(v, lambda z: [z <= 0.3]), lo=None, hi=0.3)
    lo = rng.uniform(-2, 0, size=shape)
    hi = lo + rng.uniform(0, 2, size=shape)
    assert_kernel_matches(proj_box, v, 1.0, cvx_proj(v, lambda z: [z >= lo, z <= hi]), lo=lo, hi=hi)
    assert_kernel_matches(
        proj_linf_ball, v, 1.0, cvx_proj(v, lambda z: [cp.norm(flat(z), "inf") <= 0.7]), radius=0.7
    )


@pytest.mark.parametrize("radius", (1.0, 2.5))
def test_simplex_rows_whole_and_columns(radius):
    v = rng_for("simplex", radius).normal(size=(3, 5))
    rows = cvx_proj(v, lambda z: [z >= 0, cp.sum(z, axis=1) == radius])
    assert_kernel_matches(proj_simplex, v, 1.0, rows, radius=radius)
    whole = cvx_proj(v, lambda z: [z >= 0, cp.sum(z) == radius])
    assert_kernel_matches(proj_simplex, v, 1.0, whole, radius=radius, dim=None)
    columns = cvx_proj(v, lambda z: [z >= 0, cp.sum(z, axis=0) == radius])
    assert_kernel_matches(proj_simplex, v, 1.0, columns, radius=radius, dim=0)


@pytest.mark.parametrize("radius", (0.5, 3.0, 50.0))  # 50: the input is inside the ball
def test_l1_ball(radius):
    v = rng_for("l1ball", radius).normal(size=(3, 4)) * 1.5
    whole = cvx_proj(v, lambda z: [cp.norm(flat(z), 1) <= radius])
    assert_kernel_matches(proj_l1_ball, v, 1.0, whole, radius=radius)
    rows = cvx_proj(v, lambda z: [cp.norm(z, 1, axis=1) <= radius / 3])
    assert_kernel_matches(proj_l1_ball, v, 1.0, rows, radius=radius / 3, dim=1)


@pytest.mark.parametrize("radius", (0.5, 50.0))
def test_l2_ball(radius):
    v = rng_for("l2ball", radius).normal(size=(3, 4))
    whole = cvx_proj(v, lambda z: [cp.norm(flat(z), 2) <= radius])
    assert_kernel_matches(proj_l2_ball, v, 1.0, whole, radius=radius)
    rows = cvx_proj(v, lambda z: [cp.norm(z, 2, axis=1) <= radius])
    assert_kernel_matches(proj_l2_ball, v, 1.0, rows, radius=radius, dim=1)


@pytest.mark.parametrize("n", (3, 5))
def test_psd(n):
    v = rng_for("psd", n).normal(size=(n, n))  # nonsymmetric on purpose
    reference = cvx_proj(v, lambda z: [z >> 0], sdp=True, symmetric=True)
    assert_kernel_matches(proj_psd, v, 1.0, reference)


@pytest.mark.parametrize("shape", MATRIX_SHAPES)
def test_spectral_and_nuclear_balls(shape):
    v = rng_for("balls", shape).normal(size=shape) * 1.5
    assert_kernel_matches(
        proj_spectral_ball, v, 1.0, cvx_proj(v, lambda z: [cp.sigma_max(z) <= 1.1], sdp=True), radius=1.1
    )
    assert_kernel_matches(
        proj_nuclear_ball, v, 1.0, cvx_proj(v, lambda z: [cp.normNuc(z) <= 1.1], sdp=True), radius=1.1
    )


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_affine(rank_deficient):
    rng = rng_for("affine", rank_deficient)
    a_matrix = rng.normal(size=(3, 6))
    if rank_deficient:
        a_matrix = np.vstack([a_matrix, a_matrix[0] + a_matrix[1]])  # 4 rows of rank 3
    b = a_matrix @ rng.normal(size=6)  # consistent
    v = rng.normal(size=(2, 6))  # two points, projected independently
    reference = np.stack([cvx_proj(row, lambda z: [a_matrix @ z == b]) for row in v])
    assert_kernel_matches(proj_affine, v, 1.0, reference, A=a_matrix, b=b)


def transport_data(m: int, n: int, key: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = rng_for("transport", m, n, key)
    a = rng.uniform(0.5, 1.5, size=m)
    b = rng.uniform(0.5, 1.5, size=n)
    a, b = a / a.sum(), b / b.sum()
    return rng.normal(size=(m, n)) * 0.3, a, b


@pytest.mark.parametrize("shape", ((3, 4), (5, 5)))
def test_transport_marginals_closed_form(shape):
    v, a, b = transport_data(*shape, "cf")
    reference = cvx_proj(v, lambda z: [cp.sum(z, axis=1) == a, cp.sum(z, axis=0) == b])
    assert_kernel_matches(proj_transport_marginals, v, 1.0, reference, a=a, b=b)
    # the affine step is exact: marginals to rounding
    out = proj_transport_marginals(torch.tensor(v), a=torch.tensor(a), b=torch.tensor(b))
    np.testing.assert_allclose(out.sum(1).numpy(), a, atol=1e-14)
    np.testing.assert_allclose(out.sum(0).numpy(), b, atol=1e-14)


@pytest.mark.parametrize("shape", ((3, 4), (5, 5)))
def test_transport_polytope_dykstra(shape):
    v, a, b = transport_data(*shape, "dykstra")
    reference = cvx_proj(v, lambda z: [z >= 0, cp.sum(z, axis=1) == a, cp.sum(z, axis=0) == b])
    for dtype, atol, tol in ((torch.float64, ATOL64, 1e-12), (torch.float32, ATOL32, 1e-7)):
        out = proj_transport(
            torch.tensor(v, dtype=dtype),
            a=torch.tensor(a, dtype=dtype),
            b=torch.tensor(b, dtype=dtype),
            tol=tol,
            max_iter=20_000,
        )
        assert (out >= 0).all()
        np.testing.assert_allclose(out.double().numpy(), reference, atol=atol)


def test_transport_batched_and_max_iter():
    v, a, b = transport_data(3, 4, "batch")
    stack = torch.tensor(np.stack([v, -v]))
    a_t, b_t = torch.tensor(a), torch.tensor(b)
    out = proj_transport(stack, a=a_t, b=b_t, tol=1e-12)
    for i in range(2):
        torch.testing.assert_close(
            out[i], proj_transport(stack[i], a=a_t, b=b_t, tol=1e-12), atol=1e-10, rtol=0
        )
    # a single sweep is feasible for T >= 0 but not yet for the marginals
    one_sweep = proj_transport(torch.tensor(v), a=a_t, b=b_t, max_iter=1)
    assert (one_sweep >= 0).all()


# ---------------------------------------------------------------------------------------------------
# Moreau identity: prox_{step f}(v) + step * Π_{dual ball}(v / step) = v for f a norm (lam = ball radius)
# ---------------------------------------------------------------------------------------------------

MOREAU_PAIRS = {
    "l1/linf_ball": (prox_l1, lambda u, lam: proj_linf_ball(u, radius=lam), (4, 6)),
    "linf/l1_ball": (prox_linf, lambda u, lam: proj_l1_ball(u, radius=lam), (4, 6)),
    "l2/l2_ball": (prox_l2, lambda u, lam: proj_l2_ball(u, radius=lam), (4, 6)),
    "nuclear/spectral_ball": (prox_nuclear, lambda u, lam: proj_spectral_ball(u, radius=lam), (2, 4, 6)),
    "spectral_norm/nuclear_ball": (
        prox_spectral_norm,
        lambda u, lam: proj_nuclear_ball(u, radius=lam),
        (2, 6, 4),
    ),
    # group l2 over rows with unit weights: the dual ball is a per-row l2 ball
    "group_l2_rows/row_l2_balls": (
        lambda x, step, lam: prox_group_l2(x, step, lam=lam, weights=torch.ones(x.shape[0], dtype=x.dtype)),
        lambda u, lam: proj_l2_ball(u, radius=lam, dim=1),
        (5, 6),
    ),
}


@pytest.mark.parametrize("pair", list(MOREAU_PAIRS))
@pytest.mark.parametrize("step", (0.05, 0.7, 3.0))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_moreau_identity(pair, step, dtype):
    prox, dual_projection, shape = MOREAU_PAIRS[pair]
    generator = torch.Generator().manual_seed(zlib.crc32(repr((pair, step)).encode()))
    v = torch.randn(shape, generator=generator, dtype=dtype) * 2
    lam = 0.8
    recomposed = prox(v, step, lam=lam) + step * dual_projection(v / step, lam)
    # pure rounding: a few ulps of the largest entry (more for SVD in float32)
    tol = (1e-12 if dtype == torch.float64 else 2e-6) * float(v.abs().max())
    torch.testing.assert_close(recomposed, v, atol=tol, rtol=0)
