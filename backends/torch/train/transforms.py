"""Update transforms: what happens to a gradient before the optimizer step, or to the update it makes.

``transform FORM(SELECTOR, options)`` in a train block binds one of these to named parameters
(``UpdateRule`` in optim.py runs them from hooks on ``optimizer.step()``):

* ``clip_grad_norm(max_norm = c)`` (gradient): g <- g * min(1, c / ||g||), ||g|| the Euclidean
  norm over all the statement's tensors together: the projection of g onto the l2 ball of radius
  c (CATALOGUE §4 ``grad_clip``; torch.nn.utils.clip_grad_norm_ without its 1e-6 in the divisor).
* ``orthogonalize(steps, coefficients, momentum, nesterov, eps, scale, dtype)`` (gradient):
  the Muon update direction. B <- momentum * B + (1 - momentum) g (torch's ``lerp``), then
  X = g + momentum (B - g) with ``nesterov`` (else X = B), then ``steps`` Newton-Schulz
  iterations X <- a X + (b A + c A^2) X, A = X X^T, from X / ||X||_F (the coefficients (a, b, c);
  the transpose when the matrix is tall), times the shape factor ``scale``: ``original``
  sqrt(max(1, rows / cols)), ``match_rms_adamw`` 0.2 sqrt(max(rows, cols)), ``none`` 1. The base
  optimizer then steps along the result: with ``sgd(lr, weight_decay)`` this is
  torch.optim.Muon. Each singular value s of X / ||X||_F is mapped by the scalar iteration
  s <- a s + b s^3 + c s^5 (the iteration preserves singular vectors), so the update's singular
  values lie in the image of [s_min, 1] under that map (about 0.7..1.2 for Muon's coefficients).
* ``spectral_clip(c, soft)`` (update; SPECTRA): X <- (1 - lr lam) X - lr clip_c(U), U the base
  optimizer's direction (the step it would take, divided by the learning rate, weight decay
  excluded), clip_c(U) = P diag(min(sigma, c)) Q^T, the projection of U onto the spectral ball
  of radius c; ``soft = true``: sigma -> sigma / sqrt(1 + sigma^2 / c^2) (by an SVD, exact).
  Matrices are ``W.reshape(rows, -1)``; rows are outputs, so for a weight stored (in, out)
  (transformers' Conv1D, ``bind.weight_layout``) the shape factor reads the transposed shape.

Gradient transforms rewrite ``p.grad`` before the base step. An update transform reads the
base optimizer's update exactly: the parameter is set to 0 for the base step (SGD, Adam and
AdamW read a parameter's value only through weight decay, which the rule applies itself), so
the base step writes -lr * U into it; the rule then restores the parameter and applies the
transformed update. That needs a built-in optimizer (sgd, adam, adamw).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from regspec.compiler.train_plan import same_names
from regspec.compiler.update_plan import TRANSFORM_FORMS
from regspec.diagnostics import did_you_mean, error

from ._util import is_low_precision

__all__ = ["MUON_COEFFICIENTS", "newton_schulz", "ns_scalar_map", "spectral_clip", "shape_scale",
           "Transform", "ClipGradNorm", "Orthogonalize", "SpectralClip", "TRANSFORMS", "build_transform"]

#: Muon's quintic coefficients (Keller Jordan's post; torch.optim.Muon's defaults)
MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
_DTYPES = {"param": None, "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
SCALES = ("original", "match_rms_adamw", "none")


def newton_schulz(x: torch.Tensor, coefficients: Sequence[float] = MUON_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``steps`` iterations X <- a X + (b A + c A^2) X, A = X X^T, from X / max(||X||_F, eps),
    on the short side (a tall matrix is transposed and back), in ``dtype`` (default: x's)."""
    if x.dim() != 2:
        raise ValueError("newton_schulz needs a matrix")
    a, b, c = (float(v) for v in coefficients)
    y = x.to(dtype) if dtype is not None else x.clone()
    tall = x.shape[0] > x.shape[1]
    if tall:
        y = y.T
    y = y / y.norm().clamp(min=eps)
    for _ in range(int(steps)):
        gram = y @ y.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)   # b A + c A^2
        y = torch.addmm(y, poly, y, beta=a)                     # a X + (b A + c A^2) X
    return y.T if tall else y


def ns_scalar_map(s: torch.Tensor, coefficients: Sequence[float] = MUON_COEFFICIENTS, steps: int = 5
                  ) -> torch.Tensor:
    """The scalar iteration s <- a s + b s^3 + c s^5, ``steps`` times: what Newton-Schulz does to
    each singular value of X / ||X||_F."""
    a, b, c = (float(v) for v in coefficients)
    for _ in range(int(steps)):
        s = a * s + b * s ** 3 + c * s ** 5
    return s


def shape_scale(shape: Sequence[int], scale: str) -> float:
    """Muon's learning-rate factor for a (rows, cols) update."""
    rows, cols = int(shape[0]), int(shape[1])
    if scale == "original":
        return math.sqrt(max(1.0, rows / cols))
    if scale == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def spectral_clip(u: torch.Tensor, c: float, soft: bool = False) -> torch.Tensor:
    """P diag(min(sigma, c)) Q^T of ``u`` (a matrix): its projection onto the spectral ball of
    radius c; ``u`` itself when sigma_max <= c. ``soft``: sigma / sqrt(1 + sigma^2 / c^2) instead
    (SPECTRA's smooth clip, (I + U U^T / c^2)^(-1/2) U; below c everywhere, ~sigma for small sigma)."""
    p, s, qt = torch.linalg.svd(u, full_matrices=False)
    if soft:
        return (p * (s / torch.sqrt(1 + (s / c) ** 2))) @ qt
    if float(s.max()) <= c:
        return u
    return (p * s.clamp(max=c)) @ qt


def _matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1) if t.dim() != 2 else t


@dataclass
class Transform:
    """One ``transform`` statement bound to parameter names. ``when``: a proxstep.When (from /
    until gates) or None; option values may be schedules of t (epochs)."""

    params: list[str]
    label: str = ""
    when: Any = None
    position = "grad"          # "grad": rewrites p.grad; "update": transforms the base update
    stateful = False           # whether a resumed run needs its state

    def active(self, step: int, t: float) -> bool:
        return self.when is None or self.when.active(step, t)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _value(v: Any, t: float) -> float:
    return float(v(t)) if callable(v) else float(v)


@dataclass
class ClipGradNorm(Transform):
    """g <- g * min(1, max_norm / ||g||) over the statement's tensors together."""

    max_norm: Any = 1.0

    def apply_grads(self, named: dict[str, torch.nn.Parameter], t: float) -> None:
        grads = [named[n].grad for n in self.params if named[n].grad is not None]
        if not grads:
            return
        # a sparse gradient (nn.Embedding(sparse=True)): the norm of its coalesced values
        norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g) for g in grads]
        factor = (_value(self.max_norm, t) / torch.linalg.vector_norm(torch.stack(norms))).clamp(max=1.0)
        dense = [g for g in grads if not g.is_sparse]
        if dense:
            torch._foreach_mul_(dense, factor)
        for g in grads:
            if g.is_sparse:
                g.mul_(factor)


@dataclass
class Orthogonalize(Transform):
    """The Muon direction (momentum, Newton-Schulz, shape factor) in place of each gradient."""

    steps: int = 5
    coefficients: Sequence[float] = MUON_COEFFICIENTS
    momentum: float = 0.95
    nesterov: bool = True
    eps: float = 1e-7
    scale: str = "original"
    dtype: str = "param"
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    #: tensors stored (in, out) (transformers' Conv1D): the shape factor reads (out, in)
    transposed: Sequence[str] = ()
    stateful = True

    def apply_grads(self, named: dict[str, torch.nn.Parameter], t: float) -> None:
        for n in self.params:
            p = named[n]
            if p.grad is None:
                continue
            g = p.grad.to_dense() if p.grad.is_sparse else p.grad   # Newton-Schulz needs the whole matrix
            buf = self.buffers.get(n)
            if buf is None:
                buf = self.buffers[n] = torch.zeros_like(g)
            buf.lerp_(g, 1 - self.momentum)
            x = g.lerp(buf, self.momentum) if self.nesterov else buf
            o = newton_schulz(_matrix(x), self.coefficients, self.steps, self.eps, _DTYPES[self.dtype])
            rows, cols = _matrix(g).shape   # Newton-Schulz commutes with the transpose; the factor does not
            factor = shape_scale((cols, rows) if n in self.transposed else (rows, cols), self.scale)
            out = o.to(g.dtype).reshape(g.shape)
            p.grad = out if factor == 1.0 else out * factor

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": {k: v.clone() for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffers = {k: v.clone() for k, v in state.get("buffers", {}).items()}


@dataclass
class SpectralClip(Transform):
    """SPECTRA: the base direction U replaced by clip_c(U) (see the module doc)."""

    c: Any = 1.0
    soft: bool = False
    position = "update"

    def transform_update(self, u: torch.Tensor, lr: float, t: float) -> torch.Tensor:
        """``u`` = -lr * U (what the base step added); returns -lr * clip_c(U)."""
        if lr == 0:
            return u
        m = _matrix(u)
        if is_low_precision(m):   # torch has no SVD in these: float32, rounded once
            return (spectral_clip(m.float() / -lr, _value(self.c, t), self.soft) * -lr).to(u.dtype).reshape(u.shape)
        return (spectral_clip(m / -lr, _value(self.c, t), self.soft) * -lr).reshape(u.shape)


TRANSFORMS: dict[str, type[Transform]] = {
    "clip_grad_norm": ClipGradNorm, "orthogonalize": Orthogonalize, "spectral_clip": SpectralClip,
}
same_names(TRANSFORMS, TRANSFORM_FORMS, "update transforms")


def build_transform(name: str, params: list[str], *, label: str = "", when: Any = None, **options: Any) -> Transform:
    """A transform by name (the names `regspec plan` and the grammar use)."""
    if name not in TRANSFORMS:
        raise error(f"unknown transform `{name}`", None, did_you_mean(name, TRANSFORMS))
    cls = TRANSFORMS[name]
    if "dtype" in options and options["dtype"] not in _DTYPES:
        raise error(f"orthogonalize: unknown dtype {options['dtype']!r}", None, did_you_mean(options["dtype"], _DTYPES))
    return cls(params=list(params), label=label, when=when, **options)
