"""Elementwise atoms and smooth losses: abs, pos, exp, log, logistic, log_sum_exp, entropy, kl_div.

``abs pos exp log logistic`` keep their argument's shape (as in CVXPY); ``entropy`` and ``kl_div``
are sums (CATALOGUE §1a), ``log_sum_exp`` reduces over all entries or one axis.
"""
from __future__ import annotations

from regspec.compiler.catalogue.atoms import broadcast, fmt, reduce_shape
from regspec.compiler.catalogue.base import (Curvature, Elementwise, Mono, Prox, ScalarAtom, ShapeError, Sign,
                                             norm_of_abs_mono)


class Abs(Elementwise):
    name = "abs"
    torch_source = "x.abs()"
    doc = "|x|, elementwise"
    curvature = Curvature.CONVEX
    prox = Prox("l1")  # of sum(abs(x)): elementwise atoms declare the prox of their sum over the entries

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        return np.abs(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.abs(args[0])

    def torch(self, args, kw):
        return args[0].abs()


class Pos(Elementwise):
    name = "pos"
    torch_source = "x.clamp_min(0)"
    doc = "max(x, 0), elementwise"
    curvature = Curvature.CONVEX
    prox = Prox("pos")

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.maximum(args[0], 0)

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.pos(args[0])

    def torch(self, args, kw):
        return args[0].clamp_min(0)


class Exp(Elementwise):
    name = "exp"
    torch_source = "x.exp()"
    doc = "e^x, elementwise (convex, increasing)"
    curvature = Curvature.CONVEX
    smooth = True

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.exp(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.exp(args[0])

    def torch(self, args, kw):
        return args[0].exp()


class Log(Elementwise):
    name = "log"
    torch_source = "x.log()"
    doc = "natural log, elementwise (concave, increasing; x > 0)"
    curvature = Curvature.CONCAVE
    smooth = True
    prox = Prox("neg_log", negated=True)

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.log(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.log(args[0])

    def torch(self, args, kw):
        return args[0].log()


class Logistic(Elementwise):
    name = "logistic"
    torch_source = "torch.logaddexp(torch.zeros_like(x), x)"
    doc = "log(1 + e^x), elementwise (convex, increasing): the logistic loss of a margin -y*z"
    curvature = Curvature.CONVEX
    smooth = True

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.logaddexp(0.0, args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.logistic(args[0])

    def torch(self, args, kw):
        import torch

        x = args[0]
        # logaddexp is exact for large |x|; softplus switches to x past a threshold
        return torch.logaddexp(torch.zeros_like(x), x)


class LogSumExp(ScalarAtom):
    name = "log_sum_exp"
    torch_source = "torch.logsumexp(x.reshape(-1), dim=0)"
    doc = "log sum_i e^{x_i}, over all entries or along an axis (convex, increasing)"
    curvature = Curvature.CONVEX
    static = {"axis": None}
    smooth = True

    def shape(self, shapes, kw):
        return reduce_shape(shapes[0], kw["axis"])

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        from scipy.special import logsumexp

        return logsumexp(args[0], axis=kw["axis"])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.log_sum_exp(args[0], axis=kw["axis"])

    def torch(self, args, kw):
        import torch

        x = args[0]
        if kw["axis"] is None:
            return torch.logsumexp(x.reshape(-1), dim=0)
        return torch.logsumexp(x, dim=kw["axis"])


class Entropy(ScalarAtom):
    name = "entropy"
    doc = "-sum_i x_i log x_i (concave; x >= 0, 0 log 0 = 0)"
    curvature = Curvature.CONCAVE
    smooth = True
    prox = Prox("neg_entropy", negated=True)

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def numpy(self, args, kw):
        from scipy.special import entr

        return float(entr(args[0]).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum(cp.entr(args[0]))

    def torch(self, args, kw):
        import torch

        x = args[0]
        return -torch.special.xlogy(x, x).sum()


class KLDiv(ScalarAtom):
    name = "kl_div"
    doc = "sum_i x_i log(x_i / y_i) - x_i + y_i (jointly convex, >= 0; x >= 0, y > 0)"
    curvature = Curvature.CONVEX
    nargs = (2, 2)
    smooth = True
    prox = Prox("kl_div")  # in x, for a constant y (the y keyword of the kernel)
    sums_cvxpy_elementwise = ("kl_div(x, y) is the sum over the entries here (CVXPY's kl_div is elementwise); "
                              "entry by entry, write rel_entr(x, y) - x + y")

    def shape(self, shapes, kw):
        if tuple(shapes[0]) != tuple(shapes[1]) and () not in (tuple(shapes[0]), tuple(shapes[1])):
            try:
                broadcast(shapes)
            except ShapeError:
                raise ShapeError(f"kl_div needs arguments of one shape, got {fmt(shapes[0])} and "
                                 f"{fmt(shapes[1])}", arg=1) from None
        return ()

    def sign(self, signs, kw):
        return Sign.NONNEG

    def numpy(self, args, kw):
        from scipy.special import kl_div

        return float(kl_div(args[0], args[1]).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum(cp.kl_div(args[0], args[1]))

    def torch(self, args, kw):
        import torch

        x, y = args
        y = torch.as_tensor(y, dtype=x.dtype, device=x.device) if not isinstance(y, torch.Tensor) else y
        x = torch.as_tensor(x, dtype=y.dtype, device=y.device) if not isinstance(x, torch.Tensor) else x
        return (torch.special.xlogy(x, x) - torch.special.xlogy(x, y) - x + y).sum()


ELEMENTWISE_CLASSES = [Abs, Pos, Exp, Log, Logistic, LogSumExp, Entropy, KLDiv]
