"""Euclidean projections onto sets (CATALOGUE §2), as proxes of indicator functions.

Every kernel has the one prox signature ``proj_NAME(x, step=1.0, **hyper) -> Tensor`` and solves
``argmin_z 1/2||z - x||^2 s.t. z in C``; ``step`` is accepted and ignored (the prox of an indicator
does not depend on the step). Kernels are device- and dtype-agnostic (they run wherever ``x`` lives)
and batched: vector sets act along ``dim`` (the whole tensor when ``dim`` is None), matrix sets act on
the last two dimensions and batch over the leading ones.

Nonconvex sets (top_k, nm_sparse, sphere, low_rank, stiefel) return one projection; ties are broken
by index (the lower index is kept) so results are deterministic.

This module depends on nothing else in the torch backend; ``prox.py`` builds on it (the ℓ∞, spectral
norm and nuclear-ball kernels use the sorted ℓ1-ball projection defined here).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from .spectral import per_matrix, spectral_ball_fast

__all__ = [
    "proj_nonneg",
    "proj_box",
    "proj_simplex",
    "proj_l1_ball",
    "proj_l2_ball",
    "proj_linf_ball",
    "proj_soc",
    "proj_psd",
    "proj_spectral_ball",
    "proj_nuclear_ball",
    "proj_affine",
    "proj_transport_marginals",
    "proj_transport",
    "proj_top_k",
    "proj_nm_sparse",
    "proj_sphere",
    "proj_low_rank",
    "proj_stiefel",
]

Step = float | Tensor


# ---------------------------------------------------------------------------------------------------
# shared helpers (also used by prox.py)
# ---------------------------------------------------------------------------------------------------


def along_dim(x: Tensor, dim: int | None, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply ``fn`` (which acts on the last dimension, batched over the others) along ``dim``.

    ``dim=None`` treats the whole tensor as one vector.
    """
    if dim is None:
        return fn(x.reshape(-1)).reshape(x.shape)
    if x.ndim == 0:
        return fn(x.reshape(1)).reshape(x.shape)
    moved = x.movedim(dim, -1)
    return fn(moved).movedim(-1, dim)


def batch_scalar(value: float | Tensor, extra_dims: int) -> float | Tensor:
    """Give a per-batch scalar (float, 0-d or batch-shaped tensor) ``extra_dims`` trailing 1-dims.

    Lets a step of shape ``batch`` broadcast against a tensor of shape ``batch + (k,) * extra_dims``.
    """
    if isinstance(value, Tensor) and value.ndim > 0:
        return value.reshape(value.shape + (1,) * extra_dims)
    return value


def simplex_last_dim(v: Tensor, radius: float | Tensor = 1.0) -> Tensor:
    """Project each slice along the last dim onto {z >= 0, sum z = radius} (sort-based, exact).

    ``radius`` is a float or a tensor broadcastable to ``v.shape[:-1] + (1,)``.
    z = max(v - theta, 0), theta = (sum_{i<=rho} u_i - radius) / rho with u sorted descending and
    rho the largest i with u_i > (sum_{j<=i} u_j - radius) / i.
    """
    n = v.shape[-1]
    if n == 0:
        return v.clone()
    sorted_desc = torch.sort(v, dim=-1, descending=True).values
    cumsum_minus_r = torch.cumsum(sorted_desc, dim=-1) - radius
    ranks = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    # u_i - (css_i - r)/i > 0, multiplied through by i > 0 to avoid a division
    active = sorted_desc * ranks > cumsum_minus_r
    rho = torch.where(active, ranks, torch.zeros_like(ranks)).amax(dim=-1, keepdim=True).clamp_min(1)
    theta = cumsum_minus_r.gather(-1, rho.long() - 1) / rho
    return (v - theta).clamp_min(0)


def l1_ball_last_dim(v: Tensor, radius: float | Tensor = 1.0) -> Tensor:
    """Project each slice along the last dim onto {||z||_1 <= radius}.

    v if inside, else sign(v) * Π_simplex(radius)(|v|).
    """
    magnitude = v.abs()
    inside = magnitude.sum(dim=-1, keepdim=True) <= radius
    # data-dependent branch as a select, so no host sync on CUDA
    return torch.where(inside, v, torch.sign(v) * simplex_last_dim(magnitude, radius))


def _symmetric_part(x: Tensor) -> Tensor:
    # the symmetric-matrix sets live in S^n; ||Z - X||^2 = ||Z - sym(X)||^2 + const for symmetric Z
    return 0.5 * (x + x.mT)


def svd_map(x: Tensor, singular_value_map: Callable[[Tensor], Tensor]) -> Tensor:
    """U diag(g(sigma)) V^T for x = U diag(sigma) V^T, batched over the leading dims."""
    u, sigma, vh = torch.linalg.svd(x, full_matrices=False)
    return (u * singular_value_map(sigma).unsqueeze(-2)) @ vh


def eigh_map(x: Tensor, eigenvalue_map: Callable[[Tensor], Tensor]) -> Tensor:
    """Q diag(g(lambda)) Q^T for sym(x) = Q diag(lambda) Q^T, batched over the leading dims."""
    eigenvalues, q = torch.linalg.eigh(_symmetric_part(x))
    return (q * eigenvalue_map(eigenvalues).unsqueeze(-2)) @ q.mT


def like(value: float | Tensor | None, x: Tensor) -> float | Tensor | None:
    """A tensor hyperparameter on x's device and dtype (a no-op when it already is); numbers pass through."""
    if isinstance(value, Tensor) and (value.dtype != x.dtype or value.device != x.device):
        return value.to(dtype=x.dtype, device=x.device)
    return value


def _check_matrix(x: Tensor, name: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{name} needs a matrix (or a batch of matrices), got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------
# convex sets
# ---------------------------------------------------------------------------------------------------


def proj_nonneg(x: Tensor, step: Step = 1.0) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. z >= 0: max(x, 0)."""
    return x.clamp_min(0)


def proj_box(
    x: Tensor, step: Step = 1.0, *, lo: float | Tensor | None = 0.0, hi: float | Tensor | None = 1.0
) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. lo <= z <= hi: clip(x, lo, hi).

    ``lo`` and ``hi`` are numbers, tensors broadcastable to x, or None (no bound on that side).
    """
    lo, hi = like(lo, x), like(hi, x)
    # max then min, each bound a number or a tensor (torch.clamp rejects a number mixed with a tensor)
    out = x
    if lo is not None:
        out = torch.maximum(out, lo) if isinstance(lo, Tensor) else out.clamp_min(lo)
    if hi is not None:
        out = torch.minimum(out, hi) if isinstance(hi, Tensor) else out.clamp_max(hi)
    return out.clone() if out is x else out


def proj_simplex(x: Tensor, step: Step = 1.0, *, radius: float = 1.0, dim: int | None = -1) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. z >= 0, sum(z) = radius, for each slice along ``dim`` (sort-based).

    ``dim=-1`` (default) projects every row of a batch; ``dim=None`` projects the whole tensor.
    """
    return along_dim(x, dim, lambda v: simplex_last_dim(v, radius))


def proj_l1_ball(x: Tensor, step: Step = 1.0, *, radius: float = 1.0, dim: int | None = None) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. ||z||_1 <= radius.

    x if inside, else S_theta(x) with ||S_theta(x)||_1 = radius (theta from a sort).

    ``dim=None`` (default) uses the whole tensor; an int projects each slice along that dim.
    """
    return along_dim(x, dim, lambda v: l1_ball_last_dim(v, radius))


def proj_l2_ball(x: Tensor, step: Step = 1.0, *, radius: float = 1.0, dim: int | None = None) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. ||z||_2 <= radius: x * min(1, radius/||x||).

    ``dim=None`` (default) uses the whole tensor; an int projects each slice along that dim.
    """

    def project(v: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        # norm > radius >= 0 in the selected branch, so the division is safe where it is used
        return torch.where(norm > radius, v * (radius / norm), v)

    return along_dim(x, dim, project)


def proj_linf_ball(x: Tensor, step: Step = 1.0, *, radius: float = 1.0) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. ||z||_inf <= radius: clip(x, -radius, radius)."""
    return x.clamp(-radius, radius)


def proj_soc(x: Tensor, step: Step = 1.0) -> Tensor:
    """argmin_w 1/2||w - x||^2 s.t. ||w[..., :-1]||_2 <= w[..., -1] (second-order cones along the last dim).

    Each slice x = [z; t]: x inside; 0 when ||z|| <= -t (the polar cone); else ((||z|| + t)/2) [z/||z||; 1].
    """
    z, t = x[..., :-1], x[..., -1:]
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    half = 0.5 * (norm + t)
    scale = half / norm.clamp_min(torch.finfo(x.dtype).tiny)
    boundary = torch.cat([z * scale, half], dim=-1)
    return torch.where(norm <= t, x, torch.where(norm <= -t, torch.zeros_like(x), boundary))


def proj_psd(x: Tensor, step: Step = 1.0) -> Tensor:
    """argmin_Z 1/2||Z - X||_F^2 s.t. Z symmetric PSD.

    Q diag(max(lambda, 0)) Q^T with sym(X) = Q diag(lambda) Q^T (eigh, batched over leading dims).
    """
    _check_matrix(x, "psd")
    return eigh_map(x, lambda eigenvalues: eigenvalues.clamp_min(0))


def proj_spectral_ball(x: Tensor, step: Step = 1.0, *, radius: float = 1.0) -> Tensor:
    """argmin_Z 1/2||Z - X||_F^2 s.t. sigma_max(Z) <= radius.

    U diag(min(sigma, radius)) V^T (SVD, batched over leading dims); on matrices with both sides
    >= 64 the SVD is replaced by a certified top-subspace computation when few sigma exceed the radius.
    """
    _check_matrix(x, "spectral_ball")
    # few singular values above the radius on a large matrix: certified top-subspace update (spectral.py)
    fast = per_matrix(x, radius, spectral_ball_fast,
                      lambda matrix, r: svd_map(matrix, lambda sigma: sigma.clamp_max(r)))
    if fast is not None:
        return fast
    return svd_map(x, lambda sigma: sigma.clamp_max(radius))


def proj_nuclear_ball(x: Tensor, step: Step = 1.0, *, radius: float = 1.0) -> Tensor:
    """argmin_Z 1/2||Z - X||_F^2 s.t. ||Z||_* <= radius: U diag(Π_{B1(radius)}(sigma)) V^T (SVD, batched)."""
    _check_matrix(x, "nuclear_ball")
    return svd_map(x, lambda sigma: l1_ball_last_dim(sigma, radius))


class _AffineFactor:
    """Cached solve for r -> A^T (A A^T)^{-1} r.

    Cholesky of A A^T, or the pseudo-inverse of A if A is rank-deficient.
    """

    def __init__(self, a_matrix: Tensor) -> None:
        rows = a_matrix.shape[0]
        self.a_matrix = a_matrix
        rank = int(torch.linalg.matrix_rank(a_matrix))
        self.cholesky: Tensor | None = None
        self.pinv: Tensor | None = None
        if rank == rows:
            factor, info = torch.linalg.cholesky_ex(a_matrix @ a_matrix.mT)
            if int(info) == 0:
                self.cholesky = factor
        if self.cholesky is None:
            # rank-deficient rows: A^+ gives the least-norm correction (the projection if Az = b is solvable)
            self.pinv = torch.linalg.pinv(a_matrix)

    def correction(self, residual: Tensor) -> Tensor:
        """A^T (A A^T)^{-1} residual for residual of shape (..., m); returns (..., n)."""
        if self.cholesky is not None:
            flat = residual.reshape(-1, residual.shape[-1]).mT
            solved = torch.cholesky_solve(flat, self.cholesky)
            return (self.a_matrix.mT @ solved).mT.reshape(residual.shape[:-1] + (self.a_matrix.shape[1],))
        assert self.pinv is not None
        return residual @ self.pinv.mT


# keyed by id(A); a weak reference and A's version counter guard against reuse of ids and in-place edits
_AFFINE_CACHE: OrderedDict[tuple, tuple[weakref.ref, int, _AffineFactor]] = OrderedDict()
_AFFINE_CACHE_SIZE = 32


def _affine_factor(a_matrix: Tensor, dtype: torch.dtype, device: torch.device) -> _AffineFactor:
    key = (id(a_matrix), dtype, device)
    hit = _AFFINE_CACHE.get(key)
    if hit is not None:
        ref, version, factor = hit
        if ref() is a_matrix and version == a_matrix._version:
            _AFFINE_CACHE.move_to_end(key)
            return factor
    factor = _AffineFactor(a_matrix.detach().to(dtype=dtype, device=device))
    _AFFINE_CACHE[key] = (weakref.ref(a_matrix), a_matrix._version, factor)
    while len(_AFFINE_CACHE) > _AFFINE_CACHE_SIZE:
        _AFFINE_CACHE.popitem(last=False)
    return factor


def proj_affine(x: Tensor, step: Step = 1.0, *, A: Tensor, b: Tensor) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. A z = b, for each slice along the last dim.

    z = x - A^T (A A^T)^{-1} (A x - b).

    ``A`` is (m, n), ``b`` is (m,) or broadcastable to ``x.shape[:-1] + (m,)``. The Cholesky factor of
    A A^T (or A's pseudo-inverse when A is rank-deficient) is cached per ``A`` tensor.
    """
    factor = _affine_factor(A, x.dtype, x.device)
    residual = x @ factor.a_matrix.mT - like(b, x)
    return x - factor.correction(residual)


def proj_transport_marginals(x: Tensor, step: Step = 1.0, *, a: Tensor, b: Tensor) -> Tensor:
    """argmin_T 1/2||T - X||_F^2 s.t. T 1 = a, T^T 1 = b (closed form, CATALOGUE §2; needs sum a = sum b).

    T = X + u 1^T + 1 v^T with r = a - X1, s = b - X^T 1, rho = 1^T r, u = r/n - rho/(2mn),
    v = s/m - rho/(2mn). X is (..., m, n), a (..., m), b (..., n).
    """
    _check_matrix(x, "transport_marginals")
    m, n = x.shape[-2], x.shape[-1]
    row_gap = like(a, x) - x.sum(dim=-1)
    col_gap = like(b, x) - x.sum(dim=-2)
    total_gap = row_gap.sum(dim=-1, keepdim=True)
    u = row_gap / n - total_gap / (2 * m * n)
    v = col_gap / m - total_gap / (2 * m * n)
    return x + u.unsqueeze(-1) + v.unsqueeze(-2)


def proj_transport(
    x: Tensor,
    step: Step = 1.0,
    *,
    a: Tensor,
    b: Tensor,
    tol: float = 1e-9,
    max_iter: int = 10_000,
    check_every: int = 10,
) -> Tensor:
    """argmin_T 1/2||T - X||_F^2 s.t. T >= 0, T 1 = a, T^T 1 = b (the transport polytope U(a, b)), by Dykstra.

    Alternates the closed-form marginal projection and the nonnegative clamp with Dykstra's correction
    (plain alternation only finds a feasible point, not the projection). The affine set needs no
    correction term. Stops when the two iterates differ by at most ``tol`` (sup norm) and the iterate
    moved by at most ``tol``; convergence is checked every ``check_every`` sweeps to limit host syncs.
    Returns the nonnegative iterate (exactly >= 0, marginals within ~tol).
    """
    _check_matrix(x, "transport")
    a, b = like(a, x), like(b, x)
    z = x.clone()
    correction = torch.zeros_like(x)
    for sweep in range(1, max_iter + 1):
        y = proj_transport_marginals(z, a=a, b=b)
        shifted = y + correction
        z_next = shifted.clamp_min(0)
        correction = shifted - z_next
        if sweep % check_every == 0 or sweep == max_iter:
            change = torch.maximum((z_next - y).abs().amax(), (z_next - z).abs().amax())
            z = z_next
            if float(change) <= tol:
                break
        else:
            z = z_next
    return z


# ---------------------------------------------------------------------------------------------------
# nonconvex sets (convex=False in the registry); ties broken by index
# ---------------------------------------------------------------------------------------------------


def _keep_largest_last_dim(magnitude: Tensor, keep: int) -> Tensor:
    """Boolean mask of the ``keep`` largest entries along the last dim, lower index first among ties."""
    # a stable descending sort keeps equal magnitudes in index order, which is the tie rule
    order = torch.sort(magnitude, dim=-1, descending=True, stable=True).indices
    mask = torch.zeros_like(magnitude, dtype=torch.bool)
    return mask.scatter_(-1, order[..., :keep], True)


def proj_top_k(x: Tensor, step: Step = 1.0, *, k: int, dim: int | None = None) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. ||z||_0 <= k: keep the k largest |x_i| (ties: lower index), zero the rest.

    ``dim=None`` (default) selects over the whole tensor; an int selects within each slice along ``dim``.
    """

    def project(v: Tensor) -> Tensor:
        keep = max(0, min(int(k), v.shape[-1]))
        return torch.where(_keep_largest_last_dim(v.abs(), keep), v, torch.zeros_like(v))

    return along_dim(x, dim, project)


def proj_nm_sparse(x: Tensor, step: Step = 1.0, *, n: int, m: int, dim: int = -1) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. at most n nonzeros in every block of m consecutive entries along ``dim``.

    Per block, keeps the n largest |x_i| (ties: lower index). ``dim`` is the input dimension (the last
    one for a Linear weight; pass ``dim=1`` for a conv weight's input channels). A last, shorter block
    (length not divisible by m) keeps its n largest.
    """
    if n >= m:
        return x.clone()

    def project(v: Tensor) -> Tensor:
        length = v.shape[-1]
        padded_length = -(-length // m) * m
        magnitude = v.abs()
        if padded_length != length:
            # padding magnitude -1 sorts after every real entry, so pads are never kept over real ones
            pad = magnitude.new_full(v.shape[:-1] + (padded_length - length,), -1.0)
            magnitude = torch.cat([magnitude, pad], dim=-1)
        blocks = magnitude.reshape(v.shape[:-1] + (padded_length // m, m))
        mask = _keep_largest_last_dim(blocks, n).reshape(v.shape[:-1] + (padded_length,))[..., :length]
        return torch.where(mask, v, torch.zeros_like(v))

    return along_dim(x, dim, project)


def proj_sphere(x: Tensor, step: Step = 1.0, *, radius: float = 1.0, dim: int | None = None) -> Tensor:
    """argmin_z 1/2||z - x||^2 s.t. ||z||_2 = radius: radius * x/||x|| (x = 0: radius * e_1, a valid choice).

    ``dim=None`` (default) uses the whole tensor; an int projects each slice along that dim.
    """

    def project(v: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        first_axis = torch.zeros_like(v)
        first_axis[..., :1] = radius
        return torch.where(norm > 0, v * (radius / norm), first_axis)

    return along_dim(x, dim, project)


def proj_low_rank(x: Tensor, step: Step = 1.0, *, k: int) -> Tensor:
    """argmin_Z 1/2||Z - X||_F^2 s.t. rank(Z) <= k.

    U_k diag(sigma_1..sigma_k) V_k^T (Eckart-Young; batched over leading dims).
    """
    _check_matrix(x, "low_rank")
    u, sigma, vh = torch.linalg.svd(x, full_matrices=False)
    keep = max(0, min(int(k), sigma.shape[-1]))
    return (u[..., :keep] * sigma[..., :keep].unsqueeze(-2)) @ vh[..., :keep, :]


def proj_stiefel(x: Tensor, step: Step = 1.0) -> Tensor:
    """argmin_Z 1/2||Z - X||_F^2 s.t. Z^T Z = I (rows orthonormal if X is wide): the polar factor U V^T."""
    _check_matrix(x, "stiefel")
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh
