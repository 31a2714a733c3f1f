"""Apply one prox or projection kernel to many tensors in place, fused across tensors.

``apply_prox_group(name, tensors, steps, **hyper)`` is what a training step calls after the optimizer
step (one call per parameter group of a ProxPlan). Strategy by kernel structure:

* pointwise kernels (l1, l1_nonneg, l2sq, sum_squares, elastic_net, anchor_l2, huber, nonneg, box,
  linf_ball): a handful of ``torch._foreach_*`` ops over the whole list, written with the same
  elementwise ops in the same order as the per-tensor kernels, so both paths agree bitwise; on CUDA each
  op is one multi-tensor launch instead of one launch per tensor;
* whole-tensor norms (l2, l2_ball with dim=None): ``torch._foreach_norm`` then one ``_foreach_mul_``;
* group, spectral and per-slice kernels: tensors of equal shape, dtype and device are stacked and run
  through the batched kernel once (one batched SVD/eigh, one group-norm reduction), then written back
  with ``torch._foreach_copy_``; large tensors skip the stack (it only adds memory traffic there);
* anything else (tensor-valued steps, affine, transport): the per-tensor loop.

Hyperparameters are shared by all tensors, except that a ``list`` of length ``len(tensors)`` gives one
value per tensor (e.g. ``anchor=[w0_a, w0_b]``, ``weight=[...]``). ``steps`` is a float or one per tensor.
``apply_prox_loop`` is the per-tensor reference with the same arguments, used by tests and the benchmark.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .projections import l1_ball_last_dim
from .prox import Kernel, get_kernel, group_l2_batched_, shrink_factor

__all__ = ["apply_prox_group", "apply_prox_loop", "STACK_MAX_NUMEL"]

# Stack same-shape tensors into one batched kernel call only up to this many entries per tensor, by
# device type. Stacking costs an extra read and write of each tensor (stack, then copy back) to save
# per-tensor dispatch: ~5-10 us per op from Python on CPU, ~5 us per launch on CUDA. On CPU that pays
# only for small tensors (16K floats ~ a few us of memory traffic); on a GPU, with ~100x the bandwidth,
# up to ~1M entries. Larger tensors are updated one by one, in place. Spectral kernels always stack
# (one batched SVD/eigh beats many small ones, and the SVD dwarfs the copy).
STACK_MAX_NUMEL: dict[str, int] = {"cpu": 1 << 14, "cuda": 1 << 20}
_STACK_MAX_NUMEL_OTHER = 1 << 16


def _stack_limit(device: torch.device) -> int:
    return STACK_MAX_NUMEL.get(device.type, _STACK_MAX_NUMEL_OTHER)


Steps = float | Tensor | Sequence[float | Tensor]
Hyper = dict[str, Any]


# ---------------------------------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------------------------------


def _step_list(steps: Steps, count: int) -> list[float | Tensor]:
    if isinstance(steps, (numbers.Real, Tensor)):
        return [steps] * count  # type: ignore[list-item]
    step_list = list(steps)
    if len(step_list) != count:
        raise ValueError(f"got {len(step_list)} steps for {count} tensors")
    return step_list


def _per_tensor_keys(hyper: Hyper, count: int) -> set[str]:
    keys = set()
    for key, value in hyper.items():
        if isinstance(value, list):
            if len(value) != count:
                raise ValueError(
                    f"hyperparameter {key!r} is a list of {len(value)} values for {count} tensors"
                )
            keys.add(key)
    return keys


def _hyper_at(hyper: Hyper, per_tensor: set[str], index: int) -> Hyper:
    return {key: (value[index] if key in per_tensor else value) for key, value in hyper.items()}


def _values(hyper: Hyper, per_tensor: set[str], key: str, default: Any, count: int) -> list[Any]:
    value = hyper.get(key, default)
    return list(value) if key in per_tensor else [value] * count


def _all_numbers(values: Sequence[Any]) -> bool:
    return all(isinstance(value, numbers.Real) and not isinstance(value, bool) for value in values)


def _all_tensors_like(values: Sequence[Any], xs: Sequence[Tensor]) -> bool:
    """All tensors, each on its x's dtype and device (else the loop path casts them per tensor)."""
    return all(
        isinstance(value, Tensor) and value.dtype == x.dtype and value.device == x.device
        for value, x in zip(values, xs)
    )


def _frozen(value: Any) -> Any:
    # bucket key component: tensors by identity, everything else by value
    return ("tensor", id(value)) if isinstance(value, Tensor) else value


# ---------------------------------------------------------------------------------------------------
# pointwise kernels via torch._foreach_* (same ops, same order as the kernels in prox.py)
# ---------------------------------------------------------------------------------------------------

FusedFn = Callable[[list[Tensor], list[float], Hyper, set[str]], bool]


def _soft_threshold_(xs: list[Tensor], thresholds: list[float], weights: list[Any]) -> bool:
    """In place x <- x - clip(x, -t*w, t*w).

    Returns False (declines) when the weights are neither all None/numbers nor all tensors like x.
    """
    if all(w is None for w in weights) or _all_numbers(weights):
        scaled = (
            thresholds if all(w is None for w in weights) else [t * w for t, w in zip(thresholds, weights)]
        )
        clipped = torch._foreach_clamp_min(xs, [-t for t in scaled])
        torch._foreach_clamp_max_(clipped, scaled)
        torch._foreach_sub_(xs, clipped)
        return True
    if _all_tensors_like(weights, xs):
        bound = torch._foreach_mul(weights, thresholds)
        clipped = torch._foreach_maximum(xs, torch._foreach_neg(bound))
        torch._foreach_minimum_(clipped, bound)
        torch._foreach_sub_(xs, clipped)
        return True
    return False


def _fused_l1(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    if not _all_numbers(lams):
        return False
    weights = _values(hyper, per_tensor, "weight", None, len(xs))
    return _soft_threshold_(xs, [s * lam for s, lam in zip(steps, lams)], weights)


def _fused_l1_nonneg(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    weights = _values(hyper, per_tensor, "weight", None, len(xs))
    if not _all_numbers(lams):
        return False
    thresholds = [s * lam for s, lam in zip(steps, lams)]
    if all(w is None for w in weights):
        torch._foreach_sub_(xs, thresholds)
    elif _all_numbers(weights):
        torch._foreach_sub_(xs, [t * w for t, w in zip(thresholds, weights)])
    elif _all_tensors_like(weights, xs):
        torch._foreach_sub_(xs, torch._foreach_mul(weights, thresholds))
    else:
        return False
    torch._foreach_clamp_min_(xs, 0.0)
    return True


def _fused_l2sq(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    if not _all_numbers(lams):
        return False
    torch._foreach_mul_(xs, [1.0 / (1.0 + s * lam) for s, lam in zip(steps, lams)])
    return True


def _fused_sum_squares(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    if not _all_numbers(lams):
        return False
    torch._foreach_mul_(xs, [1.0 / (1.0 + 2 * (s * lam)) for s, lam in zip(steps, lams)])
    return True


def _fused_elastic_net(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lam_l1 = _values(hyper, per_tensor, "lam_l1", 1.0, len(xs))
    lam_l2 = _values(hyper, per_tensor, "lam_l2", 1.0, len(xs))
    if not (_all_numbers(lam_l1) and _all_numbers(lam_l2)):
        return False
    _soft_threshold_(xs, [s * a for s, a in zip(steps, lam_l1)], [None] * len(xs))
    torch._foreach_mul_(xs, [1.0 / (1.0 + s * b) for s, b in zip(steps, lam_l2)])
    return True


def _fused_anchor_l2(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    anchors = _values(hyper, per_tensor, "anchor", None, len(xs))
    fishers = _values(hyper, per_tensor, "fisher", None, len(xs))
    if not (_all_numbers(lams) and _all_tensors_like(anchors, xs)):
        return False
    coefficients = [s * lam for s, lam in zip(steps, lams)]
    if all(f is None for f in fishers):
        torch._foreach_add_(xs, torch._foreach_mul(anchors, coefficients))
        torch._foreach_mul_(xs, [1.0 / (1.0 + c) for c in coefficients])
        return True
    if _all_tensors_like(fishers, xs):
        weighted = torch._foreach_mul(fishers, coefficients)
        torch._foreach_add_(xs, torch._foreach_mul(weighted, anchors))
        torch._foreach_div_(xs, torch._foreach_add(weighted, 1.0))
        return True
    return False


def _fused_huber(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    thresholds = _values(hyper, per_tensor, "M", 1.0, len(xs))
    if not (_all_numbers(lams) and _all_numbers(thresholds)):
        return False
    tau2 = [2 * (s * lam) for s, lam in zip(steps, lams)]
    clipped = torch._foreach_mul(xs, [t / (1.0 + t) for t in tau2])
    torch._foreach_clamp_min_(clipped, [-t * m for t, m in zip(tau2, thresholds)])
    torch._foreach_clamp_max_(clipped, [t * m for t, m in zip(tau2, thresholds)])
    torch._foreach_sub_(xs, clipped)
    return True


def _fused_nonneg(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    torch._foreach_clamp_min_(xs, 0.0)
    return True


def _fused_box(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lows = _values(hyper, per_tensor, "lo", 0.0, len(xs))
    highs = _values(hyper, per_tensor, "hi", 1.0, len(xs))

    def kind(bounds: list[Any]) -> str | None:
        if all(b is None for b in bounds):
            return "none"
        return "number" if _all_numbers(bounds) else "tensor" if _all_tensors_like(bounds, xs) else None

    kinds = kind(lows), kind(highs)
    if None in kinds:
        return False  # bounds mixing numbers, tensors and None, or of another dtype: the loop handles them
    # proj_box is max(x, lo) then min(., hi): the same two ops in the same order
    if kinds[0] == "number":
        torch._foreach_clamp_min_(xs, lows)
    elif kinds[0] == "tensor":
        torch._foreach_maximum_(xs, lows)
    if kinds[1] == "number":
        torch._foreach_clamp_max_(xs, highs)
    elif kinds[1] == "tensor":
        torch._foreach_minimum_(xs, highs)
    return True


def _fused_linf_ball(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    radii = _values(hyper, per_tensor, "radius", 1.0, len(xs))
    if not _all_numbers(radii):
        return False
    torch._foreach_clamp_min_(xs, [-r for r in radii])
    torch._foreach_clamp_max_(xs, radii)
    return True


# ---------------------------------------------------------------------------------------------------
# whole-tensor norms via torch._foreach_norm
# ---------------------------------------------------------------------------------------------------


def _by_dtype_device(xs: list[Tensor]) -> dict[tuple, list[int]]:
    buckets: dict[tuple, list[int]] = {}
    for index, x in enumerate(xs):
        buckets.setdefault((x.dtype, x.device), []).append(index)
    return buckets


def _scale_by_norms_(xs: list[Tensor], factor_of_norms: Callable[[Tensor, list[int]], Tensor]) -> None:
    for (dtype, _), indices in _by_dtype_device(xs).items():
        group = [xs[i] for i in indices]
        norms = torch.stack(torch._foreach_norm(group))
        factors = factor_of_norms(norms, indices).to(dtype)
        torch._foreach_mul_(group, list(factors.unbind(0)))


def _fused_l2(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
    if not _all_numbers(lams):
        return False

    def factor(norms: Tensor, indices: list[int]) -> Tensor:
        thresholds = torch.tensor(
            [steps[i] * lams[i] for i in indices], dtype=norms.dtype, device=norms.device
        )
        return shrink_factor(norms, thresholds)

    _scale_by_norms_(xs, factor)
    return True


def _fused_l2_ball(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
    radii = _values(hyper, per_tensor, "radius", 1.0, len(xs))
    if hyper.get("dim") is not None or not _all_numbers(radii):
        return False

    def factor(norms: Tensor, indices: list[int]) -> Tensor:
        radius = torch.tensor([radii[i] for i in indices], dtype=norms.dtype, device=norms.device)
        return torch.where(norms > radius, radius / norms, torch.ones_like(norms))

    _scale_by_norms_(xs, factor)
    return True


# ---------------------------------------------------------------------------------------------------
# group, spectral and per-slice kernels: stack equal shapes, run the batched kernel once
# ---------------------------------------------------------------------------------------------------

# (stacked tensors (B, *shape), per-tensor steps, per-tensor lam values, shared hyper) -> (B, *shape)
BatchedFn = Callable[[Tensor, list[float], list[Any], Hyper], Tensor]


def _batched_group_l2(stack: Tensor, steps: list[float], lams: list[Any], hyper: Hyper) -> Tensor:
    thresholds = torch.tensor(
        [s * lam for s, lam in zip(steps, lams)], dtype=stack.dtype, device=stack.device
    )
    # the stack is ours (or a view of one tensor being updated): shrink it in place, no output copy
    group_l2_batched_(
        stack, thresholds, hyper.get("groups", "rows"), hyper.get("weights"), hyper.get("num_groups")
    )
    return stack


def _batched_linf(stack: Tensor, steps: list[float], lams: list[Any], hyper: Hyper) -> Tensor:
    flat = stack.reshape(stack.shape[0], -1)
    radius = torch.tensor([s * lam for s, lam in zip(steps, lams)], dtype=stack.dtype, device=stack.device)
    return (flat - l1_ball_last_dim(flat, radius.unsqueeze(-1))).reshape(stack.shape)


def _batched_by_kernel(kernel: Kernel) -> BatchedFn:
    """Run a kernel that batches over leading dims (spectral) on a stack, with one step per tensor."""

    def run(stack: Tensor, steps: list[float], lams: list[Any], hyper: Hyper) -> Tensor:
        arguments = dict(hyper)
        if "lam" in kernel.hyper:
            arguments["lam"] = torch.tensor(lams, dtype=stack.dtype, device=stack.device).reshape(
                (stack.shape[0],) + (1,) * (stack.ndim - 3)
            )
        step = torch.tensor(steps, dtype=stack.dtype, device=stack.device).reshape(
            (stack.shape[0],) + (1,) * (stack.ndim - 3)
        )
        return kernel.fn(stack, step, **arguments)

    return run


def _batched_along_dim(kernel: Kernel) -> BatchedFn:
    """Per-slice projections with a ``dim`` hyper: dim=None becomes the flattened last dim of the stack."""

    def run(stack: Tensor, steps: list[float], lams: list[Any], hyper: Hyper) -> Tensor:
        arguments = dict(hyper)
        dim = arguments.get("dim", _default_of(kernel, "dim"))
        if dim is None:
            arguments["dim"] = -1
            return kernel.fn(stack.reshape(stack.shape[0], -1), 1.0, **arguments).reshape(stack.shape)
        arguments["dim"] = dim + 1 if dim >= 0 else dim
        return kernel.fn(stack, 1.0, **arguments)

    return run


def _default_of(kernel: Kernel, name: str) -> Any:
    return inspect.signature(kernel.fn).parameters[name].default


def _stacked(batched: BatchedFn, limit_stacking: bool) -> FusedFn:
    """Bucket tensors by (shape, dtype, device, per-tensor hyper); run ``batched`` once per bucket."""

    def fused(xs: list[Tensor], steps: list[float], hyper: Hyper, per_tensor: set[str]) -> bool:
        lams = _values(hyper, per_tensor, "lam", 1.0, len(xs))
        if not _all_numbers(lams):
            return False
        shared = {key: value for key, value in hyper.items() if key not in per_tensor and key != "lam"}
        buckets: dict[tuple, list[int]] = {}
        for index, x in enumerate(xs):
            varying = tuple((key, _frozen(hyper[key][index])) for key in sorted(per_tensor) if key != "lam")
            buckets.setdefault((tuple(x.shape), x.dtype, x.device, varying), []).append(index)
        for (_, _, device, varying), indices in buckets.items():
            bucket_hyper = {**shared, **{key: hyper[key][indices[0]] for key, _ in varying}}
            group = [xs[i] for i in indices]
            bucket_steps = [steps[i] for i in indices]
            bucket_lams = [lams[i] for i in indices]
            if len(group) == 1 or (limit_stacking and group[0].numel() > _stack_limit(device)):
                # no stack: each tensor is a batch of one (a view, so in-place kernels update it directly)
                for x, step, lam in zip(group, bucket_steps, bucket_lams):
                    view = x.unsqueeze(0)
                    result = batched(view, [step], [lam], bucket_hyper)
                    if result is not view:
                        x.copy_(result[0])
                continue
            stack = torch.stack(group)
            torch._foreach_copy_(
                group, list(batched(stack, bucket_steps, bucket_lams, bucket_hyper).unbind(0))
            )
        return True

    return fused


# ---------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------

_POINTWISE: dict[str, FusedFn] = {
    "l1": _fused_l1,
    "l1_nonneg": _fused_l1_nonneg,
    "l2sq": _fused_l2sq,
    "sum_squares": _fused_sum_squares,
    "elastic_net": _fused_elastic_net,
    "anchor_l2": _fused_anchor_l2,
    "huber": _fused_huber,
    "nonneg": _fused_nonneg,
    "box": _fused_box,
    "linf_ball": _fused_linf_ball,
    "l2": _fused_l2,
    "l2_ball": _fused_l2_ball,
}

_STACKED_NAMES = (
    "nuclear",
    "spectral_norm",
    "neg_log_det",
    "psd",
    "spectral_ball",
    "nuclear_ball",
    "low_rank",
    "stiefel",
)
_ALONG_DIM_NAMES = ("simplex", "l1_ball", "l2_ball", "sphere", "top_k", "nm_sparse")


def _fused_for(kernel: Kernel) -> list[FusedFn]:
    """Fused implementations to try in order; an implementation returns False to decline."""
    fused: list[FusedFn] = []
    if kernel.name in _POINTWISE:
        fused.append(_POINTWISE[kernel.name])
    if kernel.name == "group_l2":
        fused.append(_stacked(_batched_group_l2, limit_stacking=True))
    elif kernel.name == "linf":
        fused.append(_stacked(_batched_linf, limit_stacking=True))
    elif kernel.name in _STACKED_NAMES:
        fused.append(_stacked(_batched_by_kernel(kernel), limit_stacking=False))
    elif kernel.name in _ALONG_DIM_NAMES:
        fused.append(_stacked(_batched_along_dim(kernel), limit_stacking=True))
    return fused


def apply_prox_loop(name: str, tensors: Sequence[Tensor], steps: Steps, **hyper: Any) -> None:
    """Per-tensor reference: ``x.copy_(kernel(x, step_i, **hyper_i))`` for each tensor, in place, no grad."""
    kernel = get_kernel(name)
    tensors = list(tensors)
    step_list = _step_list(steps, len(tensors))
    per_tensor = _per_tensor_keys(hyper, len(tensors))
    with torch.no_grad():
        for index, x in enumerate(tensors):
            x.copy_(kernel.fn(x, step_list[index], **_hyper_at(hyper, per_tensor, index)))


def apply_prox_group(name: str, tensors: Sequence[Tensor], steps: Steps, **hyper: Any) -> None:
    """Apply kernel ``name`` to every tensor in place (no grad), fused across tensors.

    x_i <- prox_{steps_i f}(x_i) = argmin_z steps_i*f(z) + 1/2||z - x_i||^2 for every tensor x_i.

    ``steps``: one float for all tensors or one per tensor (tensor-valued steps use the per-tensor loop).
    ``hyper``: the kernel's hyperparameters, shared; a list of len(tensors) gives one value per tensor.
    Exact zeros stay exactly zero for the shrinkage kernels (soft threshold of 0 is +0).
    """
    kernel = get_kernel(name)
    tensors = list(tensors)
    if not tensors:
        return
    step_list = _step_list(steps, len(tensors))
    per_tensor = _per_tensor_keys(hyper, len(tensors))
    unknown = set(hyper) - set(kernel.hyper)
    if unknown:
        raise TypeError(
            f"kernel {kernel.name!r} has no hyperparameter(s) {sorted(unknown)}; it takes {kernel.hyper}"
        )
    if _all_numbers(step_list):
        with torch.no_grad():
            for fused in _fused_for(kernel):
                if fused(tensors, [float(s) for s in step_list], hyper, per_tensor):
                    return
    apply_prox_loop(kernel.name, tensors, step_list, **hyper)
