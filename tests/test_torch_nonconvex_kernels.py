"""Nonconvex projections against brute force, and property tests (hypothesis) of the sorted projections."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from regspec.backends.torch.projections import (
    proj_l1_ball,
    proj_low_rank,
    proj_nm_sparse,
    proj_simplex,
    proj_sphere,
    proj_stiefel,
    proj_top_k,
)

DTYPES = (torch.float32, torch.float64)


def best_support(values: np.ndarray, supports: list[tuple[int, ...]]) -> np.ndarray:
    """Brute force: keep the support maximizing the kept energy sum(v_S^2) = minimizing ||v - v_S||^2.

    Supports are visited in lexicographic order and only a strict improvement replaces the incumbent,
    so among equal energies the lexicographically smallest support (lowest indices) wins: the tie rule.
    """
    best, best_energy = None, -1.0
    for support in supports:
        energy = float(np.sum(values[list(support)] ** 2))
        if energy > best_energy:
            best, best_energy = support, energy
    kept = np.zeros_like(values)
    kept[list(best)] = values[list(best)]
    return kept


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_ties", [False, True])
def test_top_k_brute_force(dtype, seed, with_ties):
    rng = np.random.default_rng(seed)
    # integer magnitudes with random signs create ties, which must go to the lower index
    v = rng.integers(-3, 4, size=8).astype(float) if with_ties else rng.normal(size=8)
    expected = best_support(v, list(itertools.combinations(range(8), 3)))
    out = proj_top_k(torch.tensor(v, dtype=dtype), k=3)
    np.testing.assert_array_equal(
        out.double().numpy(), expected.astype(np.float32 if dtype == torch.float32 else float)
    )


def test_top_k_per_row_and_edge_counts():
    x = torch.tensor([[3.0, -1.0, 2.0, -3.0], [0.5, 0.5, -0.5, 0.1]])
    rows = proj_top_k(x, k=2, dim=1)
    assert torch.equal(rows, torch.tensor([[3.0, 0.0, 0.0, -3.0], [0.5, 0.5, 0.0, 0.0]]))
    assert torch.equal(proj_top_k(x, k=0), torch.zeros_like(x))
    assert torch.equal(proj_top_k(x, k=100), x)


def nm_brute_force(row: np.ndarray, n: int, m: int) -> np.ndarray:
    """Enumerate every support with <= n nonzeros per block of m along the row (product over blocks)."""
    block_starts = range(0, len(row), m)
    per_block = [
        list(
            itertools.combinations(
                range(start, min(start + m, len(row))), min(n, min(start + m, len(row)) - start)
            )
        )
        for start in block_starts
    ]
    supports = [tuple(itertools.chain(*choice)) for choice in itertools.product(*per_block)]
    return best_support(row, supports)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "m", "length"), [(2, 4, 8), (1, 4, 8), (2, 4, 10), (1, 3, 7)])
@pytest.mark.parametrize("with_ties", [False, True])
def test_nm_sparse_brute_force(dtype, n, m, length, with_ties):
    rng = np.random.default_rng(n * 100 + m * 10 + length)
    x = rng.integers(-2, 3, size=(3, length)).astype(float) if with_ties else rng.normal(size=(3, length))
    expected = np.stack([nm_brute_force(row, n, m) for row in x])
    out = proj_nm_sparse(torch.tensor(x, dtype=dtype), n=n, m=m)
    np.testing.assert_array_equal(
        out.double().numpy(), expected.astype(np.float32 if dtype == torch.float32 else float)
    )


def test_nm_sparse_conv_input_channels():
    # a conv weight (out, in, kh, kw): 2:4 along the input channels, dim=1
    x = torch.randn(3, 8, 2, 2, dtype=torch.float64)
    out = proj_nm_sparse(x, n=2, m=4, dim=1)
    moved = proj_nm_sparse(x.movedim(1, -1), n=2, m=4).movedim(-1, 1)
    assert torch.equal(out, moved)
    assert ((out.reshape(3, 2, 4, 2, 2) != 0).sum(dim=2) <= 2).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", (1, 2, 4))
def test_low_rank_eckart_young(dtype, k):
    x = torch.randn(3, 6, 4, dtype=torch.float64)  # a batch of three 6x4 matrices
    out = proj_low_rank(x.to(dtype), k=k).double()
    for i in range(3):
        u, sigma, vt = np.linalg.svd(x[i].numpy(), full_matrices=False)
        truncated = (u[:, :k] * sigma[:k]) @ vt[:k]
        atol = 1e-12 if dtype == torch.float64 else 5e-6
        np.testing.assert_allclose(out[i].numpy(), truncated, atol=atol * float(sigma[0]))
        # Eckart-Young: the error is the discarded singular energy
        np.testing.assert_allclose(
            np.sum((x[i].numpy() - out[i].numpy()) ** 2), np.sum(sigma[k:] ** 2), atol=1e-4
        )
        assert np.linalg.matrix_rank(out[i].numpy(), tol=1e-5) <= k


@pytest.mark.parametrize("dtype", DTYPES)
def test_sphere(dtype):
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(6, generator=generator, dtype=dtype)
    out = proj_sphere(v, radius=2.0)
    torch.testing.assert_close(torch.linalg.vector_norm(out), torch.tensor(2.0, dtype=dtype))
    # no sampled point of the sphere is closer to v than the projection
    samples = torch.randn(2000, 6, generator=generator, dtype=dtype)
    samples = 2.0 * samples / torch.linalg.vector_norm(samples, dim=1, keepdim=True)
    assert torch.linalg.vector_norm(v - out) <= torch.linalg.vector_norm(samples - v, dim=1).min()
    # every point of the sphere is a projection of 0; the kernel returns radius * e_1
    zero = proj_sphere(torch.zeros(2, 3, dtype=dtype), radius=1.5, dim=1)
    assert torch.equal(zero, torch.tensor([[1.5, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=dtype))


@pytest.mark.parametrize("shape", ((5, 3), (3, 5)))
def test_stiefel_is_the_polar_factor(shape):
    x = torch.randn(shape, dtype=torch.float64)
    out = proj_stiefel(x).numpy()
    if shape[0] >= shape[1]:
        polar, _ = scipy.linalg.polar(x.numpy(), side="right")
    else:
        polar, _ = scipy.linalg.polar(x.numpy(), side="left")
    np.testing.assert_allclose(out, polar, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)
vectors = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=finite)
radii = st.floats(0.05, 5.0)


@settings(max_examples=80, deadline=None)
@given(v=vectors, radius=radii)
def test_simplex_projection_optimality(v, radius):
    """Π_simplex(v) is in the simplex and satisfies KKT: z = max(v - theta, 0) for one theta per row."""
    z = proj_simplex(torch.tensor(v), radius=radius).numpy()
    tol = 1e-9 * max(1.0, float(np.abs(v).max()))
    assert (z >= 0).all()
    np.testing.assert_allclose(z.sum(axis=1), radius, atol=tol * v.shape[1])
    for row_v, row_z in zip(v, z):
        support = row_z > 0
        assert support.any()
        theta = row_v[support] - row_z[support]
        assert np.ptp(theta) <= tol * 10  # the shift is the same on the support
        assert (row_v[~support] <= theta.mean() + tol * 10).all()  # and dominates the entries set to 0


@settings(max_examples=80, deadline=None)
@given(v=vectors, radius=radii)
def test_l1_ball_projection_optimality(v, radius):
    """Π_{B1}(v) is v inside the ball; outside it is a soft threshold landing on the boundary."""
    z = proj_l1_ball(torch.tensor(v), radius=radius).numpy()
    tol = 1e-9 * max(1.0, float(np.abs(v).max())) * v.size
    if np.abs(v).sum() <= radius:
        np.testing.assert_array_equal(z, v)
        return
    np.testing.assert_allclose(np.abs(z).sum(), radius, atol=tol)
    assert (z * v >= 0).all()  # signs kept
    shrink = np.abs(v) - np.abs(z)
    kept = np.abs(z) > 0
    assert np.ptp(shrink[kept]) <= tol  # one threshold for every kept entry
    assert (np.abs(v[~kept]) <= shrink[kept].mean() + tol).all()
