"""Atoms that come from training (CATALOGUE §4): weight decay and its anchor form, soft
orthogonality, the FLOPs regularizer of activations, the Jacobian penalty.

They are catalogue entries like any other: a `problem` may use those that are functions of one
tensor (``l2sq``, ``orthogonality``, ``flops``), and ``lacks`` says which backend cannot lower
the others and why (an anchor needs the run's initial weights, a Jacobian needs the model).
``train`` says how a train block applies each directly (compiler/catalogue/base.TrainUse).
"""
from __future__ import annotations

from typing import Any

from regspec.compiler.catalogue.base import (Curvature, Prox, ScalarAtom, ShapeError, Sign, TrainUse,
                                             norm_of_abs_mono)

_NEEDS_A_RUN = "evaluated by the training runtime only"


def _as_matrix(x: Any) -> Any:
    """W as C_out x rest (conv filters flattened); a vector is one row."""
    return x.reshape(1, -1) if x.ndim <= 1 else x.reshape(x.shape[0], -1)


class L2Sq(ScalarAtom):
    name = "l2sq"
    doc = "(1/2) ||x||_2^2, half the sum of squared entries (the weight-decay penalty)"
    curvature = Curvature.CONVEX
    smooth = True
    prox = Prox("l2sq")
    torch_source = "(x * x).sum() / 2"
    train = TrainUse("l2sq", ("param", "act", "output"), separable=True, math="(1/2) ||x||^2")

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        return float((x * x).sum() / 2)

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum_squares(args[0]) / 2

    def torch(self, args, kw):
        return (args[0] * args[0]).sum() / 2


class WeightDecay(L2Sq):
    name = "weight_decay"
    doc = ("(1/2) ||x||_2^2 taken as the decoupled step x <- x / (1 + lr * lam) (AdamW): in a train block "
           "it is the proximal step unless `via grad`")
    train = TrainUse("weight_decay", separable=True, default="prox",
                     math="(1/2) ||x||^2 as the decoupled step x <- x / (1 + lr*lam) (AdamW)")


class AnchorL2(ScalarAtom):
    name = "anchor_l2"
    aliases = ("l2_sp",)
    doc = "(1/2) ||x - x_init||_2^2 (L2-SP: the anchor is the weights at the start of training)"
    curvature = Curvature.CONVEX
    smooth = True
    prox = Prox("anchor_l2")
    train = TrainUse("anchor_l2", separable=True, math="(1/2) ||x - x_init||^2 (L2-SP, anchor = the initial weights)")
    lacks = {"cvxpy": f"the anchor is the model's initial weights, known to a training run only ({_NEEDS_A_RUN})",
             "torch": "not a function of the tensor alone: the training runtime keeps the anchor it snapshots at the "
                      "start (backends/torch/train/penalties.anchor_l2)"}


class Orthogonality(ScalarAtom):
    name = "orthogonality"
    doc = ("soft orthogonality ||G - I||_F^2, G = W W^T or W^T W (the smaller side), W = x.reshape(C_out, -1); "
           "mode = offdiag drops the diagonal, mode = grouped sums over `groups` row blocks")
    static = {"mode": "full", "groups": None}
    curvature = Curvature.UNKNOWN   # quartic in W: neither convex nor concave
    smooth = True
    train = TrainUse("orthogonality", options=(("mode", "full"), ("groups", None)),
                     math="||G - I||_F^2, G = W W^T (or W^T W, the smaller side)")
    lacks = {"cvxpy": "nonconvex (quartic in W): CVXPY takes DCP terms only"}

    def shape(self, shapes, kw):
        mode, groups = kw.get("mode", "full"), kw.get("groups")
        if mode not in ("full", "offdiag", "grouped"):
            raise ShapeError(f"orthogonality: mode is full, offdiag or grouped, got {mode!r}")
        rows = shapes[0][0] if len(shapes[0]) > 1 else 1
        if mode == "grouped" and (not isinstance(groups, int) or groups < 1 or rows % groups):
            raise ShapeError(f"orthogonality(mode = grouped): `groups` must divide the {rows} rows, "
                             f"got {groups}", arg=0)
        return ()

    def sign(self, signs, kw):
        return Sign.NONNEG

    def dcp(self, curvs, signs, kw, texts):
        return Curvature.UNKNOWN, f"orthogonality({texts[0]}) is not convex (a quartic penalty)"

    @staticmethod
    def _deviation(w: Any, offdiag: bool, eye: Any) -> Any:
        g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        n = g.shape[0]
        e = eye(n)
        return (((g * (1 - e)) if offdiag else (g - e)) ** 2).sum()

    def _value(self, x: Any, kw: dict[str, Any], eye: Any) -> Any:
        w = _as_matrix(x)
        mode = kw.get("mode", "full")
        if mode != "grouped":
            return self._deviation(w, mode == "offdiag", eye)
        size = w.shape[0] // int(kw["groups"])
        return sum(self._deviation(w[i:i + size], False, eye) for i in range(0, w.shape[0], size))

    def numpy(self, args, kw):
        import numpy as np

        return float(self._value(np.asarray(args[0], dtype=float), kw, np.eye))

    def torch(self, args, kw):
        import torch

        x = args[0]
        return self._value(x, kw, lambda n: torch.eye(n, dtype=x.dtype, device=x.device))


class Flops(ScalarAtom):
    name = "flops"
    doc = ("the FLOPs regularizer sum_j (mean_i |a[i, j]|)^2 of a batch a (samples on dim 0, features "
           "flattened): sparse activations that are zero for most samples")
    curvature = Curvature.CONVEX    # the square of a nonnegative convex function
    train = TrainUse("flops", ("act", "output"), math="sum_l sum_j (mean_i |a_l[i, j]|)^2")

    def sign(self, signs, kw):
        return Sign.NONNEG

    @staticmethod
    def _per_sample(x: Any) -> Any:
        return x.reshape(1, -1) if x.ndim <= 1 else x.reshape(x.shape[0], -1)

    def numpy(self, args, kw):
        import numpy as np

        a = self._per_sample(np.asarray(args[0], dtype=float))
        return float((np.abs(a).mean(axis=0) ** 2).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        if len(x.shape) > 2:
            raise NotImplementedError("flops takes a vector or a matrix in a problem")
        rows = x.shape[0] if len(x.shape) == 2 else 1
        a = x if len(x.shape) == 2 else cp.reshape(x, (1, x.shape[0]), order="C")
        return cp.sum_squares(cp.sum(cp.abs(a), axis=0) / rows)

    def torch(self, args, kw):
        a = self._per_sample(args[0])
        return (a.abs().mean(dim=0) ** 2).sum()


class JacobianFro(ScalarAtom):
    name = "jacobian_fro"
    doc = "(1/2) mean_i ||J_f(x_i)||_F^2, the model's input Jacobian (Hutchinson estimate with n_proj draws)"
    static = {"n_proj": 1}
    curvature = Curvature.UNKNOWN   # a function of the model, not of the output tensor
    smooth = True
    train = TrainUse("jacobian_fro", ("output",), options=(("n_proj", 1),),
                     math="(1/2) mean_i ||J_f(x_i)||_F^2 (Hutchinson, n_proj draws)")
    lacks = {"cvxpy": "a function of the model (its input Jacobian), not of a variable",
             "torch": "not a function of one tensor: the training runtime estimates it by vector-Jacobian "
                      "products (backends/torch/train/penalties.jacobian_fro)"}

    def shape(self, shapes, kw):
        if not isinstance(kw.get("n_proj"), int) or kw["n_proj"] < 1:
            raise ShapeError(f"jacobian_fro: n_proj must be an integer >= 1, got {kw.get('n_proj')}")
        return ()

    def sign(self, signs, kw):
        return Sign.NONNEG

    def dcp(self, curvs, signs, kw, texts):
        return Curvature.UNKNOWN, "jacobian_fro is a function of the model, not of its argument"


TRAINING_CLASSES: list[type] = [L2Sq, WeightDecay, AnchorL2, Orthogonality, Flops, JacobianFro]
