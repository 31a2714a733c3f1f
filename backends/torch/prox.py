"""Proximal kernels of the torch backend (CATALOGUE §1 and §3) and the kernel registry.

One signature for every kernel::

    prox_NAME(x: Tensor, step: float | Tensor, **hyper) -> Tensor
        = argmin_z step * f(z) + 1/2 ||z - x||^2

Projections (``projections.py``) are proxes of indicators and share the signature (step ignored).
Hyperparameters are keyword-only; ``lam`` always scales the penalty (f = lam * g), so the effective
threshold is tau = step * lam. Kernels run on x's device and dtype, never loop over entries in Python,
and are batched: group kernels reduce over reshaped views, spectral kernels use one batched SVD/eigh.

``step`` may be a tensor: for pointwise kernels any tensor broadcastable to x (per-entry steps, e.g.
lr * lam / (sqrt(v_hat) + eps) after Adam); for spectral kernels a tensor of x's batch shape
(``x.shape[:-2]``); for whole-tensor and group kernels a 0-d tensor.

``KERNELS`` maps each name to a :class:`Kernel` record; :func:`get_kernel` looks names up.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from . import projections as _proj
from .projections import (
    batch_scalar,
    eigh_map,
    l1_ball_last_dim,
    like,
    proj_affine,
    proj_box,
    proj_l1_ball,
    proj_l2_ball,
    proj_linf_ball,
    proj_low_rank,
    proj_nm_sparse,
    proj_nonneg,
    proj_nuclear_ball,
    proj_psd,
    proj_simplex,
    proj_soc,
    proj_spectral_ball,
    proj_sphere,
    proj_stiefel,
    proj_top_k,
    proj_transport,
    proj_transport_marginals,
    svd_map,
)
from .prox_scalar import (
    prox_hinge,
    prox_kl_div,
    prox_rel_entr,
    prox_inv_pos,
    prox_neg_entropy,
    prox_neg_log,
    prox_neg_power,
    prox_pinball,
    prox_pos,
    prox_power_abs,
    prox_deadzone,
    prox_power_nonneg,
)
from .spectral import nuclear_prox_fast, per_matrix

__all__ = [
    "Blocks",
    "blocks",
    "Kernel",
    "KERNELS",
    "get_kernel",
    "prox_l1",
    "prox_l1_nonneg",
    "prox_l2",
    "prox_group_l2",
    "prox_elastic_net",
    "prox_l2sq",
    "prox_anchor_l2",
    "prox_linf",
    "prox_huber",
    "prox_sum_squares",
    "prox_nuclear",
    "prox_spectral_norm",
    "prox_neg_log_det",
    "prox_pos",
    "prox_hinge",
    "prox_pinball",
    "prox_power_abs",
    "prox_deadzone",
    "prox_power_nonneg",
    "prox_neg_power",
    "prox_inv_pos",
    "prox_neg_entropy",
    "prox_neg_log",
    "prox_kl_div",
    "prox_rel_entr",
    *_proj.__all__,
]

Step = float | Tensor


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def soft_threshold(x: Tensor, threshold: float | Tensor) -> Tensor:
    """S_t(x) = sign(x) max(|x| - t, 0), written as x - clip(x, -t, t).

    The clip form is one fewer pass than abs/sub/clamp/mul-by-sign, and keeps exact zeros: an entry
    with |x| <= t gives x - x = +0 exactly. The fused path (fused.py) uses the same ops in the same
    order, so fused and per-tensor results agree bitwise.
    """
    if isinstance(threshold, Tensor):
        return x - torch.clamp(x, min=-threshold, max=threshold)
    return x - x.clamp(-threshold, threshold)


def _scaled_threshold(step: Step, lam: float | Tensor, weight: float | Tensor | None) -> float | Tensor:
    threshold = step * lam
    if weight is None:
        return threshold
    if isinstance(weight, Tensor):
        return weight * threshold
    return threshold * weight


def _scale_down(x: Tensor, denominator_minus_one: float | Tensor) -> Tensor:
    """x / (1 + c); multiplies by a reciprocal for a Python-float c so the foreach path matches bitwise."""
    if isinstance(denominator_minus_one, Tensor):
        return x / (1 + denominator_minus_one)
    return x * (1.0 / (1.0 + denominator_minus_one))


def shrink_factor(norm: Tensor, threshold: float | Tensor) -> Tensor:
    """Block soft-threshold factor (1 - t/||v||)_+ = max(||v|| - t, 0) / ||v||, safe at ||v|| = 0.

    Zero blocks get factor 0 (no 0/0); t = 0 gives factor exactly 1.
    """
    return (norm - threshold).clamp_min(0) / norm.clamp_min(torch.finfo(norm.dtype).tiny)


# ---------------------------------------------------------------------------------------------------
# pointwise proxes
# ---------------------------------------------------------------------------------------------------


def prox_l1(
    x: Tensor, step: Step, *, lam: float | Tensor = 1.0, weight: float | Tensor | None = None
) -> Tensor:
    """argmin_z step*lam*sum_i w_i|z_i| + 1/2||z - x||^2.

    S_{step*lam*w}(x), the soft threshold; ``weight`` w >= 0 is a number or a tensor (default 1).
    """
    return soft_threshold(x, _scaled_threshold(like(step, x), lam, like(weight, x)))


def prox_l1_nonneg(
    x: Tensor, step: Step, *, lam: float | Tensor = 1.0, weight: float | Tensor | None = None
) -> Tensor:
    """argmin_z step*lam*sum_i w_i|z_i| + 1/2||z - x||^2 s.t. z >= 0.

    max(x - step*lam*w, 0): a ReLU with a shifted bias.
    """
    return (x - _scaled_threshold(like(step, x), lam, like(weight, x))).clamp_min(0)


def prox_l2sq(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*(lam/2)||z||^2 + 1/2||z - x||^2 = x/(1 + step*lam) (decoupled weight decay)."""
    return _scale_down(x, step * lam)


def prox_sum_squares(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*||z||^2 + 1/2||z - x||^2 = x/(1 + 2*step*lam)."""
    return _scale_down(x, 2 * (step * lam))


def prox_elastic_net(
    x: Tensor, step: Step, *, lam_l1: float | Tensor = 1.0, lam_l2: float | Tensor = 1.0
) -> Tensor:
    """argmin_z step*(lam_l1||z||_1 + (lam_l2/2)||z||^2) + 1/2||z - x||^2.

    S_{step*lam_l1}(x) / (1 + step*lam_l2).
    """
    return _scale_down(soft_threshold(x, step * lam_l1), step * lam_l2)


def prox_anchor_l2(
    x: Tensor,
    step: Step,
    *,
    anchor: Tensor,
    lam: float | Tensor = 1.0,
    fisher: Tensor | None = None,
) -> Tensor:
    """argmin_z step*(lam/2)sum_i F_i(z_i - a_i)^2 + 1/2||z - x||^2 = (x + step*lam*F*a)/(1 + step*lam*F).

    ``anchor`` is a (e.g. the pretrained weights); ``fisher`` F >= 0 is the EWC diagonal (default 1).
    """
    coefficient = like(step, x) * lam
    if fisher is not None:
        coefficient = like(fisher, x) * coefficient
    return _scale_down(x + coefficient * like(anchor, x), coefficient)


def prox_huber(x: Tensor, step: Step, *, M: float = 1.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i huber(z_i, M) + 1/2||z - x||^2, huber(t, M) = t^2 if |t| <= M else 2M|t| - M^2.

    With tau = step*lam: x/(1 + 2tau) if |x| <= M(1 + 2tau), else x - 2tau*M*sign(x); written as
    x - clip(x*2tau/(1 + 2tau), -2tau*M, 2tau*M), one expression for both branches.
    """
    tau2 = 2 * (step * lam)
    if isinstance(tau2, Tensor):
        return x - torch.clamp(x * (tau2 / (1 + tau2)), min=-tau2 * M, max=tau2 * M)
    return x - (x * (tau2 / (1.0 + tau2))).clamp(-tau2 * M, tau2 * M)


# ---------------------------------------------------------------------------------------------------
# whole-tensor norms
# ---------------------------------------------------------------------------------------------------


def prox_l2(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*||z||_2 + 1/2||z - x||^2 = x * (1 - step*lam/||x||)_+ (norm of the whole tensor)."""
    return x * shrink_factor(torch.linalg.vector_norm(x), step * lam)


def prox_linf(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*||z||_inf + 1/2||z - x||^2.

    x - Π_{B1(step*lam)}(x): Moreau's identity with the ℓ1-ball projection.

    The max is over the whole tensor. Uses x - Π_{B1(tau)}(x), equal to x - tau*Π_{B1(1)}(x/tau) without
    dividing by tau (tau = 0 gives x).
    """
    tau = step * lam
    return x - l1_ball_last_dim(x.reshape(-1), tau).reshape(x.shape)


# ---------------------------------------------------------------------------------------------------
# group lasso
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocks:
    """Grouping into tiles of ``n`` rows by ``m`` consecutive input entries of W.reshape(shape[0], -1).

    ``Blocks(1, m)`` groups m consecutive inputs of each output row (the N:M block layout). Tiles at the
    bottom and right edges may be smaller when the sizes do not divide.
    """

    n: int
    m: int

    def __post_init__(self) -> None:
        if self.n < 1 or self.m < 1:
            raise ValueError(f"blocks({self.n}, {self.m}): sizes must be positive")


def blocks(n: int, m: int) -> Blocks:
    """The ``blocks(n, m)`` grouping for :func:`prox_group_l2`."""
    return Blocks(int(n), int(m))


Grouping = str | Blocks | Tensor
_BLOCKS_PATTERN = re.compile(r"^\s*blocks\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$")


def parse_grouping(groups: Grouping) -> Grouping:
    """Normalize a grouping.

    Accepts 'rows' | 'channels' | 'cols' | 'all' | Blocks | 'blocks(n, m)' | an integer tensor of labels.
    """
    if isinstance(groups, (Blocks, Tensor)):
        if isinstance(groups, Tensor) and groups.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"label groups must be an integer tensor, got {groups.dtype}")
        return groups
    if isinstance(groups, str):
        match = _BLOCKS_PATTERN.match(groups)
        if match:
            return Blocks(int(match.group(1)), int(match.group(2)))
        if groups == "channels":
            return "rows"  # conv filters are the rows of W.reshape(C_out, -1)
        if groups in ("rows", "cols", "all"):
            return groups
    raise ValueError(
        f"unknown grouping {groups!r}; expected 'rows', 'cols', 'channels', 'all', blocks(n, m) "
        "or a LongTensor of labels"
    )


def _default_weights(counts: Tensor) -> Tensor:
    return counts.sqrt()


def _grouped_with_factor(
    xb: Tensor,
    threshold: Tensor | float,
    groups: Grouping,
    weights: Tensor | None,
    num_groups: int | None,
) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
    """For a stack ``xb`` (B, *shape): (grouped, factor, restore) with restore(grouped * factor) the prox.

    ``grouped`` is a view of ``xb`` whenever a reshape allows it (everything but ragged blocks of a
    contiguous stack), so ``grouped.mul_(factor)`` updates ``xb`` in place.
    """
    groups = parse_grouping(groups)
    batch = xb.shape[0]
    shape = xb.shape[1:]
    rows = shape[0] if len(shape) >= 1 else 1
    matrix = xb.reshape(batch, rows, -1)  # W.reshape(shape[0], -1) per tensor
    row_length = matrix.shape[-1]
    thr = threshold.reshape(batch, 1) if isinstance(threshold, Tensor) else threshold

    def weights_for(counts: Tensor, group_shape: tuple[int, ...]) -> Tensor:
        if weights is None:
            return _default_weights(counts)
        return weights.to(dtype=xb.dtype, device=xb.device).reshape(group_shape)

    def back_to_shape(result: Tensor) -> Tensor:
        return result.reshape(xb.shape)

    if isinstance(groups, Tensor):
        labels = groups.to(device=xb.device, dtype=torch.int64)
        count = int(labels.max()) + 1 if num_groups is None and labels.numel() else (num_groups or 0)
        ones = torch.ones(labels.numel(), dtype=xb.dtype, device=xb.device)
        per_row = labels.ndim == 1 and labels.shape[0] == rows and row_length != 1
        if not per_row and labels.numel() == xb[0].numel():
            # one label per entry (labels shaped like x, or flattened): segment sums by index_add
            flat = xb.reshape(batch, -1)
            labels = labels.reshape(-1)
            squares = flat.new_zeros(batch, count).index_add_(1, labels, flat * flat)
            sizes = ones.new_zeros(count).index_add_(0, labels, ones)
            factor = shrink_factor(squares.sqrt(), thr * weights_for(sizes, (count,)))
            return flat, factor[:, labels], back_to_shape
        if per_row:
            # one label per row of W.reshape(shape[0], -1)
            squares = matrix.new_zeros(batch, count).index_add_(1, labels, (matrix * matrix).sum(dim=-1))
            sizes = ones.new_zeros(count).index_add_(0, labels, ones) * row_length
            factor = shrink_factor(squares.sqrt(), thr * weights_for(sizes, (count,)))
            return matrix, factor[:, labels].unsqueeze(-1), back_to_shape
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} fit neither every entry "
            f"nor every row of shape {tuple(shape)}"
        )

    if groups == "rows":
        counts = matrix.new_full((rows,), float(row_length))
        factor = shrink_factor(torch.linalg.vector_norm(matrix, dim=-1), thr * weights_for(counts, (rows,)))
        return matrix, factor.unsqueeze(-1), back_to_shape
    if groups == "cols":
        counts = matrix.new_full((row_length,), float(rows))
        factor = shrink_factor(
            torch.linalg.vector_norm(matrix, dim=-2), thr * weights_for(counts, (row_length,))
        )
        return matrix, factor.unsqueeze(-2), back_to_shape
    if groups == "all":
        flat = xb.reshape(batch, -1)
        counts = flat.new_full((1,), float(flat.shape[-1]))
        factor = shrink_factor(
            torch.linalg.vector_norm(flat, dim=-1, keepdim=True), thr * weights_for(counts, (1,))
        )
        return flat, factor, back_to_shape

    assert isinstance(groups, Blocks)
    tile_rows, tile_cols = groups.n, groups.m
    grid_rows, grid_cols = -(-rows // tile_rows), -(-row_length // tile_cols)
    pad_rows, pad_cols = grid_rows * tile_rows - rows, grid_cols * tile_cols - row_length
    # zero padding changes no norm; edge tiles get their true sizes for the default weights
    padded = torch.nn.functional.pad(matrix, (0, pad_cols, 0, pad_rows)) if pad_rows or pad_cols else matrix
    tiles = padded.reshape(batch, grid_rows, tile_rows, grid_cols, tile_cols)
    row_sizes = (rows - torch.arange(grid_rows, device=xb.device) * tile_rows).clamp_max(tile_rows)
    col_sizes = (row_length - torch.arange(grid_cols, device=xb.device) * tile_cols).clamp_max(tile_cols)
    counts = (row_sizes[:, None] * col_sizes[None, :]).to(xb.dtype)
    group_thr = batch_scalar(thr, 1) if isinstance(thr, Tensor) else thr
    factor = shrink_factor(
        torch.linalg.vector_norm(tiles, dim=(2, 4)), group_thr * weights_for(counts, (grid_rows, grid_cols))
    )

    def crop_to_shape(result: Tensor) -> Tensor:
        result = result.reshape(batch, grid_rows * tile_rows, grid_cols * tile_cols)[:, :rows, :row_length]
        return result.reshape(xb.shape)

    return tiles, factor[:, :, None, :, None], crop_to_shape


def group_l2_batched(
    xb: Tensor,
    threshold: Tensor | float,
    groups: Grouping,
    weights: Tensor | None = None,
    num_groups: int | None = None,
) -> Tensor:
    """Block soft threshold of a stack ``xb`` of B same-shape tensors, (B, *shape) -> (B, *shape).

    ``threshold`` is step*lam: a float or a (B,) tensor (one per stacked tensor). The grouping applies to
    each ``xb[i]`` as in :func:`prox_group_l2`; weights default to sqrt(group size).
    """
    grouped, factor, restore = _grouped_with_factor(xb, threshold, groups, weights, num_groups)
    return restore(grouped * factor)


def group_l2_batched_(
    xb: Tensor,
    threshold: Tensor | float,
    groups: Grouping,
    weights: Tensor | None = None,
    num_groups: int | None = None,
) -> None:
    """In-place :func:`group_l2_batched`.

    One norm pass and one in-place scaling pass when ``xb`` can be viewed grouped; else a copy back.
    """
    grouped, factor, restore = _grouped_with_factor(xb, threshold, groups, weights, num_groups)
    if grouped.untyped_storage().data_ptr() == xb.untyped_storage().data_ptr():
        grouped.mul_(factor)
    else:  # ragged blocks or a non-contiguous input: the grouped tensor is a copy
        xb.copy_(restore(grouped * factor))


def prox_group_l2(
    x: Tensor,
    step: Step,
    *,
    lam: float | Tensor = 1.0,
    groups: Grouping = "rows",
    weights: Tensor | None = None,
    num_groups: int | None = None,
) -> Tensor:
    """argmin_z step*lam*sum_g w_g||z_g||_2 + 1/2||z - x||^2 = x_g (1 - step*lam*w_g/||x_g||)_+ per group g.

    Groups (disjoint), on W = x.reshape(x.shape[0], -1):
      'rows' / 'channels': each row (an output unit; a conv filter for a 4-D weight);
      'cols': each column (an input feature); 'all': the whole tensor;
      blocks(n, m) (or 'blocks(n, m)'): n x m tiles of W, edge tiles smaller if sizes do not divide;
      a LongTensor of group ids: per entry (same numel as x) or per row of W (length x.shape[0]).
    ``weights`` w_g default to sqrt(|g|); their shape is (num_groups,) ((grid_rows, grid_cols) or flat for
    blocks). ``num_groups`` avoids a host sync (labels.max()) for label groups on CUDA.
    """
    threshold = step * lam
    if isinstance(threshold, Tensor):
        threshold = threshold.reshape(1)
    return group_l2_batched(x.unsqueeze(0), threshold, groups, weights, num_groups)[0]


# ---------------------------------------------------------------------------------------------------
# spectral proxes (batched over leading dims; step may have the batch shape)
# ---------------------------------------------------------------------------------------------------


def prox_nuclear(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_Z step*lam*||Z||_* + 1/2||Z - X||_F^2 = U diag((sigma - step*lam)_+) V^T (SVT, batched)."""
    # few singular values above tau on a large matrix: certified top-subspace update (spectral.py)
    fast = per_matrix(x, step * lam, nuclear_prox_fast,
                      lambda matrix, t: svd_map(matrix, lambda sigma: (sigma - t).clamp_min(0)))
    if fast is not None:
        return fast
    tau = batch_scalar(step * lam, 1)
    return svd_map(x, lambda sigma: (sigma - tau).clamp_min(0))


def prox_spectral_norm(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_Z step*lam*sigma_max(Z) + 1/2||Z - X||_F^2.

    U diag(min(sigma, theta)) V^T with sum(sigma - theta)_+ = step*lam (theta = 0 if sum sigma <= step*lam).

    In sigma-space this is sigma - Π_{B1(step*lam)}(sigma) (Moreau; sigma >= 0), batched.
    """
    tau = batch_scalar(step * lam, 1)
    return svd_map(x, lambda sigma: sigma - l1_ball_last_dim(sigma, tau))


def prox_neg_log_det(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_Z -step*lam*log det Z + 1/2||Z - X||_F^2 over symmetric positive definite Z.

    Q diag((l + sqrt(l^2 + 4 step*lam))/2) Q^T with sym(X) = Q diag(l) Q^T.

    X is symmetrized first (the domain is symmetric matrices); batched via eigh.
    """
    tau4 = batch_scalar(4 * (step * lam), 1)
    return eigh_map(x, lambda eigenvalues: 0.5 * (eigenvalues + torch.sqrt(eigenvalues * eigenvalues + tau4)))


# ---------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------

KernelKind = Literal["prox", "projection"]
# pointwise: entrywise, fusable with torch._foreach_*; group: group norms over reshaped views;
# spectral: one batched SVD/eigh over the last two dims; tensor: couples the whole tensor (or a dim)
KernelStructure = Literal["pointwise", "group", "spectral", "tensor"]


@dataclass(frozen=True)
class Kernel:
    """A prox or projection kernel: ``fn(x, step, **hyper)`` solves argmin_z step*f(z) + 1/2||z - x||^2."""

    name: str
    fn: Callable[..., Tensor]
    kind: KernelKind
    convex: bool
    hyper: tuple[str, ...]
    math: str
    structure: KernelStructure = "pointwise"


def _hyper_names(fn: Callable[..., Tensor]) -> tuple[str, ...]:
    parameters = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _kernel(
    name: str,
    fn: Callable[..., Tensor],
    math: str,
    structure: KernelStructure,
    *,
    convex: bool = True,
) -> Kernel:
    kind: KernelKind = "projection" if fn.__name__.startswith("proj_") else "prox"
    return Kernel(name, fn, kind, convex, _hyper_names(fn), math, structure)


_KERNEL_LIST: tuple[Kernel, ...] = (
    # proxes
    _kernel("l1", prox_l1, "lam*sum w|z| -> S_{tau w}(x)", "pointwise"),
    _kernel("l1_nonneg", prox_l1_nonneg, "lam*sum w|z| + i{z>=0} -> max(x - tau w, 0)", "pointwise"),
    _kernel("l2", prox_l2, "lam*||z||_2 -> x (1 - tau/||x||)_+", "tensor"),
    _kernel("group_l2", prox_group_l2, "lam*sum_g w_g||z_g|| -> x_g (1 - tau w_g/||x_g||)_+", "group"),
    _kernel(
        "elastic_net", prox_elastic_net, "a||z||_1 + (b/2)||z||^2 -> S_{step a}(x)/(1 + step b)", "pointwise"
    ),
    _kernel("l2sq", prox_l2sq, "(lam/2)||z||^2 -> x/(1 + tau)", "pointwise"),
    _kernel("anchor_l2", prox_anchor_l2, "(lam/2)sum F(z - a)^2 -> (x + tau F a)/(1 + tau F)", "pointwise"),
    _kernel("linf", prox_linf, "lam*||z||_inf -> x - Π_{B1(tau)}(x)", "tensor"),
    _kernel("huber", prox_huber, "lam*sum huber(z, M) -> x - clip(2tau x/(1 + 2tau), ±2tau M)", "pointwise"),
    _kernel("sum_squares", prox_sum_squares, "lam*||z||^2 -> x/(1 + 2tau)", "pointwise"),
    _kernel("nuclear", prox_nuclear, "lam*||Z||_* -> U diag((sigma - tau)_+) V^T", "spectral"),
    _kernel(
        "spectral_norm",
        prox_spectral_norm,
        "lam*sigma_max(Z) -> U diag(sigma - Π_{B1(tau)}(sigma)) V^T",
        "spectral",
    ),
    _kernel(
        "neg_log_det", prox_neg_log_det, "-lam*log det Z -> Q diag((l + sqrt(l^2 + 4tau))/2) Q^T", "spectral"
    ),
    # separable proxes by closed forms, Lambert W or a safeguarded scalar Newton (prox_scalar.py)
    _kernel("pos", prox_pos, "lam*sum max(z, 0) -> x - clip(x, 0, tau)", "pointwise"),
    _kernel("hinge", prox_hinge, "lam*sum max(0, 1 - z) -> x + clip(1 - x, 0, tau)", "pointwise"),
    _kernel("pinball", prox_pinball, "lam*sum max(q z, (q - 1) z) -> x - clip(x, -(1 - q)tau, q tau)", "pointwise"),
    _kernel("deadzone", prox_deadzone, "lam*sum max(|z| - a, 0) -> sign(x) max(min(|x|, a), |x| - tau)",
            "pointwise"),
    _kernel("power_abs", prox_power_abs, "lam*sum |z|^p (p >= 1) -> sign(x) root of z + tau p z^(p-1) = |x|",
            "pointwise"),
    _kernel("power_nonneg", prox_power_nonneg, "lam*sum z^p, z >= 0 (p >= 1) -> power_abs prox of max(x, 0)",
            "pointwise"),
    _kernel("neg_power", prox_neg_power, "lam*sum z^p, z > 0 (p < 0) -> root of z - x + tau p z^(p-1) = 0",
            "pointwise"),
    _kernel("inv_pos", prox_inv_pos, "lam*sum 1/z, z > 0 -> positive root of z^3 - x z^2 = tau", "pointwise"),
    _kernel("neg_entropy", prox_neg_entropy, "lam*sum z log z -> tau W(e^(x/tau - 1)/tau) (Lambert W)",
            "pointwise"),
    _kernel("neg_log", prox_neg_log, "-lam*sum log z -> (x + sqrt(x^2 + 4tau))/2", "pointwise"),
    _kernel("rel_entr", prox_rel_entr, "lam*sum z log(z/y) -> neg_entropy prox at x + tau log y", "pointwise"),
    _kernel("kl_div", prox_kl_div, "lam*sum z log(z/y) - z + y -> neg_entropy prox at x + tau (log y + 1)",
            "pointwise"),
    # projections onto convex sets
    _kernel("nonneg", proj_nonneg, "z >= 0 -> max(x, 0)", "pointwise"),
    _kernel("box", proj_box, "lo <= z <= hi -> clip(x, lo, hi)", "pointwise"),
    _kernel("simplex", proj_simplex, "z >= 0, sum z = r -> (x - theta)_+ (sort)", "tensor"),
    _kernel("l1_ball", proj_l1_ball, "||z||_1 <= r -> S_theta(x), ||S_theta(x)||_1 = r (sort)", "tensor"),
    _kernel("l2_ball", proj_l2_ball, "||z||_2 <= r -> x min(1, r/||x||)", "tensor"),
    _kernel("linf_ball", proj_linf_ball, "||z||_inf <= r -> clip(x, -r, r)", "pointwise"),
    _kernel("soc", proj_soc, "||z[:-1]||_2 <= z[-1] -> ((||x'|| + t)/2)[x'/||x'||; 1] outside", "tensor"),
    _kernel("psd", proj_psd, "Z >= 0 (PSD) -> Q diag(max(l, 0)) Q^T", "spectral"),
    _kernel(
        "spectral_ball", proj_spectral_ball, "sigma_max(Z) <= r -> U diag(min(sigma, r)) V^T", "spectral"
    ),
    _kernel("nuclear_ball", proj_nuclear_ball, "||Z||_* <= r -> U diag(Π_{B1(r)}(sigma)) V^T", "spectral"),
    _kernel("affine", proj_affine, "Az = b -> x - A^T(AA^T)^{-1}(Ax - b)", "tensor"),
    _kernel(
        "transport_marginals", proj_transport_marginals, "T1 = a, T^T1 = b -> T + u1^T + 1v^T (CF)", "tensor"
    ),
    _kernel("transport", proj_transport, "T >= 0, T1 = a, T^T1 = b -> Dykstra(marginals, nonneg)", "tensor"),
    # projections onto nonconvex sets
    _kernel(
        "top_k", proj_top_k, "||z||_0 <= k -> keep k largest |x| (ties: lower index)", "tensor", convex=False
    ),
    _kernel(
        "nm_sparse",
        proj_nm_sparse,
        "<= n nonzeros per m consecutive -> per-block top-n",
        "tensor",
        convex=False,
    ),
    _kernel("sphere", proj_sphere, "||z||_2 = r -> r x/||x||", "tensor", convex=False),
    _kernel("low_rank", proj_low_rank, "rank Z <= k -> U_k diag(sigma_1..k) V_k^T", "spectral", convex=False),
    _kernel("stiefel", proj_stiefel, "Z^T Z = I -> U V^T (polar factor)", "spectral", convex=False),
)

KERNELS: dict[str, Kernel] = {kernel.name: kernel for kernel in _KERNEL_LIST}


def get_kernel(name: str) -> Kernel:
    """The kernel registered under ``name`` (a 'prox_' or 'proj_' prefix is accepted).

    Raises KeyError naming the closest registered names.
    """
    for candidate in (name, name.removeprefix("prox_"), name.removeprefix("proj_")):
        if candidate in KERNELS:
            return KERNELS[candidate]
    close = difflib.get_close_matches(name, list(KERNELS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"no prox or projection kernel named {name!r}{hint}")
