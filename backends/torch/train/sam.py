"""Sharpness-aware minimisation (Foret et al., 2021, "Sharpness-Aware Minimization for
Efficiently Improving Generalization"): the two-pass step, as an optimizer wrapper.

``optimizer sam(base = sgd(lr = 0.1), rho = 0.05)`` in a train block. With g = grad L(w) from
the loop's own backward pass:

    e = rho * g / ||g||          (||.|| over every perturbed tensor together; ``adaptive``:
                                  e = rho * T^2 g / ||T g||, T = |w|, ASAM, Kwon et al. 2021)
    g' = grad L(w + e)           (the closure: a second forward and backward at w + e)
    w <- base step from w along g'

The weights are restored by copying (not by subtracting e), so the base step starts from w
exactly. ``params`` limits the perturbation to some tensors (SAM-ON perturbs only the
normalisation layers); the step itself updates every parameter with its g'.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from regspec.diagnostics import error

__all__ = ["Sam"]


@dataclass
class Sam:
    """The SAM perturbation; ``UpdateRule`` runs ``two_pass`` before the base step."""

    rho: float = 0.05
    adaptive: bool = False
    eta: float = 0.01           # ASAM's T = |w| + eta keeps zero weights perturbable
    params: list[str] | None = None   # None: every trainable parameter
    label: str = ""
    perturbed: list[str] = field(default_factory=list)

    def two_pass(self, named: dict[str, torch.nn.Parameter], closure: Callable[[], Any] | None,
                 zero_grad: Callable[[], None]) -> Any:
        """Perturb, recompute the gradients through ``closure`` at w + e, restore w. Returns the
        closure's loss (at the perturbed weights)."""
        if closure is None:
            raise error("sam: the optimizer step needs a closure that recomputes the loss and calls backward "
                        "(optimizer.step(closure)); the second pass of SAM runs it at the perturbed weights")
        names = self.params if self.params is not None else [n for n, p in named.items() if p.requires_grad]
        tensors = [(n, named[n]) for n in names if named[n].grad is not None]
        self.perturbed = [n for n, _ in tensors]
        if not tensors:
            return closure()
        with torch.no_grad():
            saved = [p.detach().clone() for _, p in tensors]
            if self.adaptive:
                scales = [p.abs() + self.eta for _, p in tensors]
                dirs = [s * p.grad for s, (_, p) in zip(scales, tensors)]
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in dirs]))
                steps = [s * d for s, d in zip(scales, dirs)]
            else:
                steps = [p.grad for _, p in tensors]
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in steps]))
            factor = self.rho / norm.clamp(min=torch.finfo(norm.dtype).tiny)
            for (_, p), d in zip(tensors, steps):
                p.add_(d * factor)
        zero_grad()
        with torch.enable_grad():
            loss = closure()
        with torch.no_grad():
            for (_, p), w in zip(tensors, saved):
                p.copy_(w)
        return loss
