"""Smooth training penalties as differentiable functions of tensors (CATALOGUE §4).

Activations ``a`` have the batch on dim 0; a tap of shape ``(B, d_1, ..., d_k)`` is seen as
``B`` samples of ``d_1···d_k`` features. A 0-/1-D tap counts as a single sample. The penalty
weight λ (and any schedule) is applied by the caller, not here.

    act_l1(a_1..a_L)       Σ_l (1/B) Σ_i ‖a_l[i]‖₁               (batch mean of per-sample ℓ1)
    flops(a_1..a_L)        Σ_l Σ_j ((1/B) Σ_i |a_l[i, j]|)²
    orthogonality(W)       full    ‖G − I‖_F²,   G = W Wᵀ if C_out ≤ rest else Wᵀ W
                           offdiag ‖G ⊙ (1 − I)‖_F²
                           grouped Σ_g ‖G_g − I‖_F² over `groups` contiguous blocks of rows
    jacobian_fro(f, x)     (1/B) Σ_i ‖J_f(x_i)‖_F²  by Hutchinson: E_v ‖vᵀ J‖², v ~ N(0, I)
    anchor_l2(θ, θ_ref)    ½ Σ_k ‖θ_k − θ_ref,k‖²   (EWC: ½ Σ F_k ⊙ (θ_k − θ_ref,k)²)
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import torch
from torch import nn

from regspec.diagnostics import Span, error

__all__ = ["act_l1", "flops", "orthogonality", "jacobian_fro", "anchor_l2", "snapshot"]

Tensors = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]


def _tensors(x: Any) -> list[torch.Tensor]:
    """A list of tensors from a tensor, a sequence of tensors or ``(name, tensor)`` pairs, or a dict."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        x = list(x.values())
    out = []
    for item in x:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            item = item[1]
        if not isinstance(item, torch.Tensor):
            raise error(f"expected tensors, got {type(item).__name__}")
        out.append(item)
    if not out:
        raise error("penalty applied to an empty selection")
    return out


def _per_sample(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(1, -1) if a.dim() <= 1 else a.reshape(a.shape[0], -1)


def act_l1(acts: Tensors) -> torch.Tensor:
    """Σ_l (1/B) Σ_i ‖a_l[i]‖₁: per-sample ℓ1 norm (a sum over features, so it grows with the
    layer's width), averaged over the batch, summed over taps."""
    return sum(_per_sample(a).abs().sum(dim=1).mean() for a in _tensors(acts))  # type: ignore[return-value]


def flops(acts: Tensors) -> torch.Tensor:
    """FLOPs regularizer Σ_l Σ_j (mean_i |a_l[i, j]|)² (features j after flattening)."""
    return sum((_per_sample(a).abs().mean(dim=0) ** 2).sum() for a in _tensors(acts))  # type: ignore[return-value]


def _gram_dev(w: torch.Tensor, offdiag: bool) -> torch.Tensor:
    w = w.reshape(w.shape[0], -1) if w.dim() != 1 else w.reshape(1, -1)
    g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    return ((g * (1 - eye)) if offdiag else (g - eye)).pow(2).sum()


def orthogonality(W: Tensors, mode: str = "full", groups: int | None = None, span: Span | None = None) -> torch.Tensor:
    """Soft orthogonality, summed over the given weights.

    W is reshaped to ``C_out × rest`` (conv filters flattened); the Gram matrix is taken on the
    smaller side (``W Wᵀ`` if ``C_out ≤ rest``, else ``Wᵀ W``), so the target is reachable:
    rows orthonormal for wide W, columns orthonormal for tall W.

    - ``full``: ‖G − I‖_F²
    - ``offdiag``: ‖G ⊙ (1 − I)‖_F² (decorrelation only, norms free)
    - ``grouped`` (``groups=g``): the rows are split into g contiguous groups (C_out divisible
      by g) and Σ_g ‖G_g − I‖_F², each G_g on its own smaller side.
    """
    if mode not in ("full", "offdiag", "grouped"):
        raise error(f"orthogonality: mode must be full, offdiag or grouped, got `{mode}`", span)
    total: torch.Tensor | int = 0
    for w in _tensors(W):
        if mode == "grouped":
            if not groups or w.shape[0] % int(groups):
                raise error(f"orthogonality(grouped): `groups` must divide C_out = {w.shape[0]}, got {groups}", span)
            total = total + sum(_gram_dev(part, False) for part in w.reshape(w.shape[0], -1).chunk(int(groups), dim=0))
        else:
            total = total + _gram_dev(w, mode == "offdiag")
    return total  # type: ignore[return-value]


def jacobian_fro(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n_proj: int = 1,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    create_graph: bool = True,
) -> torch.Tensor:
    """Hutchinson estimate of (1/B) Σ_i ‖J_f(x_i)‖_F² with vector–Jacobian products.

    For v ~ N(0, I) in output space, E‖vᵀJ‖² = E vᵀ J Jᵀ v = tr(J Jᵀ) = ‖J‖_F². With y = f(x)
    of shape (B, ...), one draw V ~ N(0, I) of y's shape and g = ∂⟨V, y⟩/∂x (one VJP) gives
    ‖g_i‖² = ‖v_iᵀ J_i‖² for every sample i at once, provided f treats samples independently
    (no batch-norm in training mode, no attention across the batch). The estimate averages
    ``n_proj`` draws and the batch; its variance per draw is 2‖J_iJ_iᵀ‖_F² (Gaussian v).

    ``create_graph=True`` keeps it differentiable in f's parameters (double backprop). Draws
    come from ``generator`` (pass one persistent generator so projections change across
    steps) or, if none, from a fresh generator seeded with ``seed``.
    """
    if int(n_proj) < 1:
        raise error(f"jacobian_fro: n_proj must be >= 1, got {n_proj}")
    if not x.is_floating_point():
        raise error(f"jacobian_fro differentiates the output with respect to the input, but the input is "
                    f"{str(x.dtype).replace('torch.', '')} (token ids have no derivative)",
                    notes=["penalise an activation or the output instead, e.g. sum_squares(act(...))"])
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ._util import primary_tensor

    # the penalty is differentiated twice: attention's fused kernels (flash, memory-efficient)
    # have no second derivative, its math form has; a tuple / ModelOutput is read as its logits
    with sdpa_kernel([SDPBackend.MATH]):
        try:
            y = primary_tensor(f(x))
        except RuntimeError as exc:   # the plain forward ran: what differs is an input that requires grad
            raise error(f"jacobian_fro: the model's forward failed on an input that requires grad "
                        f"(RuntimeError: {str(exc).splitlines()[0] if str(exc) else ''})",
                        notes=["jacobian_fro differentiates the output with respect to the input, so the "
                               "forward must accept a leaf input with requires_grad=True (transformers' "
                               "Wav2Vec2 feature encoder, for one, sets requires_grad on a view of its input "
                               "in training mode: model.freeze_feature_encoder() turns that off)"]) from None
    batch = x.shape[0] if x.dim() > 0 else 1
    total = x.new_zeros(())
    for k in range(int(n_proj)):
        v = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        (g,) = torch.autograd.grad(y, x, v, create_graph=create_graph, retain_graph=True)
        total = total + g.pow(2).sum() / batch
    return total / int(n_proj)


def anchor_l2(
    params: Tensors | Iterable[tuple[str, torch.Tensor]],
    refs: Tensors,
    weights: Tensors | None = None,
) -> torch.Tensor:
    """L2-SP anchor ½ Σ_k ‖θ_k − θ_ref,k‖² (EWC: ½ Σ_k Σ F_k ⊙ (θ_k − θ_ref,k)² with ``weights``).

    ``params`` and ``refs`` (and ``weights``) are matched by name when ``params`` is a list of
    ``(name, tensor)`` pairs (as from ``select_params``) and ``refs`` a dict (as from
    ``snapshot``); otherwise by position. References are constants (no gradient flows to them).
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params) if not isinstance(params, torch.Tensor) else [params]
    named = all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    if named and isinstance(refs, Mapping):
        missing = [n for n, _ in pairs if n not in refs]
        if missing:
            raise error(f"anchor_l2: no reference for {', '.join(missing[:3])}")
        thetas = [p for _, p in pairs]
        ref_list = [refs[n] for n, _ in pairs]
        w_list = [weights[n] for n, _ in pairs] if isinstance(weights, Mapping) else (
            None if weights is None else _tensors(weights))
    else:
        thetas, ref_list = _tensors(pairs), _tensors(refs)
        w_list = None if weights is None else _tensors(weights)
    if len(thetas) != len(ref_list) or (w_list is not None and len(w_list) != len(thetas)):
        raise error(f"anchor_l2: {len(thetas)} parameters but {len(ref_list)} references")
    total: torch.Tensor | int = 0
    for i, (p, r) in enumerate(zip(thetas, ref_list)):
        if p.shape != r.shape:
            raise error(f"anchor_l2: parameter shape {tuple(p.shape)} does not match reference {tuple(r.shape)}")
        d2 = (p - r.detach().to(p.dtype)).pow(2)
        if w_list is not None:
            d2 = d2 * w_list[i].detach()
        total = total + 0.5 * d2.sum()
    return total  # type: ignore[return-value]


def snapshot(params: Iterable[tuple[str, torch.Tensor]] | nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies ``{name: θ.clone()}`` (of a model's parameters or selected pairs): the
    reference for ``anchor_l2`` at init or before a new task."""
    items = params.named_parameters() if isinstance(params, nn.Module) else params
    return {n: p.detach().clone() for n, p in items}
