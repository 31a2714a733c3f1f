"""Spectral kernels without a full SVD when few singular values are affected.

Both kernels here change only the singular values on one side of a threshold ``s``:

* spectral-ball projection (radius r): sigma -> min(sigma, r) touches sigma_i > r only, so
  Π(X) = X - U_k diag(1 - r/sigma_k) U_k^T X over the k triplets with sigma > r;
* nuclear prox (threshold tau): sigma -> (sigma - tau)_+ keeps sigma_i > tau only, so
  prox(X) = U_k diag(1 - tau/sigma_k) U_k^T X.

The top left singular subspace comes from the Gram matrix G = A A^T (A = X or X^T, whichever has
fewer rows), formed in float64: one m x m x n product, then subspace iteration on the small G
(each iteration is an m x m x b product, negligible beside the Gram, so a warm start from the
previous step would buy nothing measurable and is not kept). The result is *certified*, not
hoped for: with the top-d Ritz vectors Q_d (d >= k) and their residual R = G Q_d - Q_d diag(theta),
every eigenvalue of G lies within ||R||_F of {theta_1..d} ∪ eig(G'), G' = (I - Q_d Q_d^T) G (I - Q_d Q_d^T)
(Weyl, G written in the basis [Q_d, Q_d⊥]). An upper bound on lambda_max(G') comes from repeated
squaring, lambda_max <= ||G'^(2^j)||_F^(2^-j) (tight within a factor m^(2^-(j+1))). When that bound
plus ||R||_F stays below s^2 no singular value outside the block crosses the threshold; otherwise
the block grows. When more than ``max_rank`` values may cross, or the iteration stalls (a flat
spectrum around s), the full eigendecomposition of the m x m Gram decides instead: exact, and still
about 10x cheaper than the SVD of the m x n matrix for n = 9m (bench/bench_train_spectral.py).
Forming G squares the condition number, so the path is taken only in float64 arithmetic and only
while (sigma_max / s)^2 * eps64 stays far below the input's rounding (sigma_max / s <= 10 for
float64 inputs, <= ~2300 for float32), or, for a threshold below every singular value (a small
nuclear prox), while sigma_max / sigma_min obeys the same bound; otherwise, and on matrices under
64 on a side, the caller keeps the full SVD kernel.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["top_subspace_above", "spectral_ball_fast", "nuclear_prox_fast", "per_matrix", "FAST_MIN_SIDE"]

#: below this smaller side (or this many entries) a full SVD is cheap: the Gram path's Python-level
#: iteration would cost more than it saves
FAST_MIN_SIDE = 64
FAST_MIN_ENTRIES = 2 ** 15
_RESIDUAL_TOL = 1e-10      # relative residual ||G q - theta q|| / lambda_1 of the kept Ritz pairs
_MAX_ITERATIONS = 30
_MAX_CERTIFICATES = 3   # each costs a few m x m x m products
_SQUARINGS = 6             # lambda_max bound within m^(1/128) (< 5% for m <= 512)
_MAX_SCALE_RATIO = 1e4     # sigma_max / threshold beyond which G's rounding is not negligible


def _orthonormal(y: Tensor) -> Tensor:
    return torch.linalg.qr(y).Q


def _lambda_max_upper_bound(g: Tensor) -> float:
    """An upper bound on lambda_max of a symmetric PSD g: ||g^(2^j)||_F^(2^-j), by rescaled squaring."""
    scale = float(torch.linalg.matrix_norm(g))
    if scale == 0.0:
        return 0.0
    h = g / scale
    log_bound = math.log(scale)
    for i in range(1, _SQUARINGS + 1):
        h = h @ h
        norm = float(torch.linalg.matrix_norm(h))
        if norm == 0.0:
            return 0.0
        h = h / norm
        log_bound += math.log(norm) / 2 ** i
    return math.exp(log_bound) * (1 + 1e-12 * g.shape[0])   # float64 rounding of the products


def _ritz(g: Tensor, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values (descending), vectors and residual norms of g on span(q)."""
    theta, w = torch.linalg.eigh(q.mT @ g @ q)
    theta, w = theta.flip(-1), w.flip(-1)
    vectors = q @ w
    residual = torch.linalg.vector_norm(g @ vectors - vectors * theta, dim=0)
    return theta, vectors, residual


def _certified(g: Tensor, vectors: Tensor, residual: Tensor, d: int, level: float) -> bool:
    """Whether no eigenvalue of g outside the top-d Ritz pairs exceeds ``level`` (see module doc)."""
    q = vectors[:, :d]
    deflated = g - q @ (q.mT @ g)
    deflated = deflated - (deflated @ q) @ q.mT
    deflated = 0.5 * (deflated + deflated.mT)
    slack = float(torch.linalg.vector_norm(residual[:d]))
    return _lambda_max_upper_bound(deflated) + slack < level


def _subspace_iteration(g: Tensor, level: float, max_rank: int, gen: torch.Generator
                        ) -> tuple[Tensor, Tensor] | None:
    """Certified top eigenpairs of g above ``level`` by block subspace iteration; None when more than
    ``max_rank`` may exceed it or the certificate does not close within the iteration budget."""
    m = g.shape[0]
    block = min(m, 8)
    q = _orthonormal(torch.randn(m, block, dtype=g.dtype, device=g.device, generator=gen))
    certificates = 0
    for _ in range(_MAX_ITERATIONS):
        q = _orthonormal(g @ q)
        theta, vectors, residual = _ritz(g, q)
        k = int((theta > level).sum())
        if k >= block - 1:                                  # keep one Ritz value below the level in the block
            if 2 * block > max_rank:
                return None
            extra = torch.randn(m, block, dtype=g.dtype, device=g.device, generator=gen)
            block *= 2
            q = _orthonormal(torch.cat([vectors, extra], dim=1))
            continue
        converged = (residual <= _RESIDUAL_TOL * float(theta[0])).tolist()
        d = converged.index(False) if False in converged else block   # deflate every converged leading pair
        if d >= k and d > 0:
            if _certified(g, vectors, residual, d, level):
                return vectors[:, :k], theta[:k].sqrt()
            certificates += 1
            if certificates >= _MAX_CERTIFICATES:
                return None
        q = vectors
    return None


def _eigenpairs_above(g: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """All eigenpairs of g above ``level`` from its full eigendecomposition (exact, m^3)."""
    theta, vectors = torch.linalg.eigh(g)
    above = theta > level
    return vectors[:, above], theta[above].sqrt()


def top_subspace_above(a: Tensor, threshold: float, max_rank: int,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor] | None:
    """(U_k, sigma_k) in float64 for all singular values of ``a`` (m x n, m <= n) above ``threshold``:
    certified subspace iteration when at most ``max_rank`` exceed it, else the eigendecomposition of
    the Gram matrix; None when sigma_max / threshold is too large for the Gram's rounding."""
    a64 = a.to(torch.float64)
    g = a64 @ a64.mT
    level = threshold * threshold
    lambda_1 = _lambda_max_upper_bound(g)
    if lambda_1 < level:
        return a64.new_zeros(a.shape[0], 0), a64.new_zeros(0)      # nothing above: certified at once
    if threshold <= 0:
        return None
    # the Gram's rounding, eps64 * sigma_max^2, must stay far below the input's rounding: the
    # update is a function of G whose slope is largest at the singular values nearest the threshold
    ratio_limit = max(10.0, math.sqrt(torch.finfo(a.dtype).eps / torch.finfo(torch.float64).eps) / 10)
    if math.sqrt(lambda_1) / threshold <= ratio_limit:
        gen = generator if generator is not None else torch.Generator(device=a.device).manual_seed(0)
        found = _subspace_iteration(g, level, max_rank, gen)
        return found if found is not None else _eigenpairs_above(g, level)
    # a threshold far below sigma_max: still exact when every singular value is above it and the
    # spectrum itself is well conditioned (the function is then smooth on all of it)
    theta, vectors = torch.linalg.eigh(g)
    if float(theta[0]) > level and math.sqrt(lambda_1 / float(theta[0])) <= ratio_limit:
        return vectors, theta.sqrt()
    return None


def _oriented(x: Tensor) -> tuple[Tensor, bool]:
    return (x.mT, True) if x.shape[-2] > x.shape[-1] else (x, False)


def _low_rank_update(a: Tensor, u: Tensor, factors: Tensor) -> Tensor:
    """U diag(factors) U^T a in a's dtype (a: m x n, u: m x k float64)."""
    u_a = u.to(a.dtype)
    return (u_a * factors.to(a.dtype)) @ (u_a.mT @ a)


def spectral_ball_fast(x: Tensor, radius: float, max_rank_fraction: float = 0.25) -> Tensor | None:
    """Π_{sigma_max <= radius}(x) for one matrix, or None when the full SVD should be used."""
    a, flipped = _oriented(x)
    if a.shape[0] < FAST_MIN_SIDE:
        return None
    found = top_subspace_above(a, float(radius), max(1, int(max_rank_fraction * a.shape[0])))
    if found is None:
        return None
    u, sigma = found
    out = a - _low_rank_update(a, u, 1 - radius / sigma) if sigma.numel() else a.clone()
    return out.mT if flipped else out


def nuclear_prox_fast(x: Tensor, tau: float, max_rank_fraction: float = 0.25) -> Tensor | None:
    """prox_{tau ||.||_*}(x) for one matrix, or None when the full SVD should be used."""
    a, flipped = _oriented(x)
    if a.shape[0] < FAST_MIN_SIDE or tau <= 0:
        return None
    found = top_subspace_above(a, float(tau), max(1, int(max_rank_fraction * a.shape[0])))
    if found is None:
        return None
    u, sigma = found
    out = _low_rank_update(a, u, 1 - tau / sigma) if sigma.numel() else torch.zeros_like(a)
    return out.mT if flipped else out


def per_matrix(x: Tensor, thresholds: float | Tensor, fast: Callable[[Tensor, float], Tensor | None],
               full: Callable[[Tensor, float], Tensor]) -> Tensor | None:
    """Run ``fast`` on every matrix of a batch (``full`` where it declines), with the threshold of
    each; None when the matrices are too small for the fast path to pay."""
    m, n = x.shape[-2:]
    if min(m, n) < FAST_MIN_SIDE or m * n < FAST_MIN_ENTRIES:
        return None
    batch = x.shape[:-2]
    flat_thresholds = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
    if flat_thresholds.numel() not in (1, math.prod(batch)):
        return None
    flat_thresholds = flat_thresholds.expand(math.prod(batch)).tolist()
    outs = []
    for matrix, threshold in zip(x.reshape(-1, m, n), flat_thresholds):
        out = fast(matrix, threshold)
        outs.append(full(matrix, threshold) if out is None else out)
    return torch.stack(outs).reshape(x.shape)
