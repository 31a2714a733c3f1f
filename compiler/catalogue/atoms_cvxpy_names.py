"""Atoms CVXPY users know by these names: hinge, square, inv_pos, entr, rel_entr, log1p (elementwise)
and sum_largest, sum_smallest, geo_mean, harmonic_mean, pnorm, quad_over_lin (reductions). Each has CVXPY's meaning; where
regspec already had the same function under another name, that entry carries the CVXPY spelling in
its ``aliases`` instead of a class here.
"""
from __future__ import annotations

from regspec.compiler.catalogue.atoms import axis_norm_shape, broadcast, fmt
from regspec.compiler.catalogue.base import (Curvature, Elementwise, Mono, Prox, ScalarAtom, ShapeError, Sign,
                                             norm_of_abs_mono)


def _as_tensor_like(x, like):
    """A numpy/Python operand as a tensor on ``like``'s dtype and device (mixed data/variable args)."""
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device)


class Hinge(Elementwise):
    name = "hinge"
    doc = "max(0, 1 - x), elementwise (convex, decreasing): the hinge loss of a margin y * z"
    curvature = Curvature.CONVEX
    prox = Prox("hinge")

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.DECREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.maximum(1 - np.asarray(args[0], dtype=float), 0)

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.pos(1 - args[0])

    def torch(self, args, kw):
        return (1 - args[0]).clamp_min(0)


class Square(Elementwise):
    name = "square"
    doc = "x^2, elementwise (convex; increasing for x >= 0); sum_squares(x) is its sum"
    curvature = Curvature.CONVEX
    smooth = True
    prox = Prox("sum_squares")

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        return np.square(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.square(args[0])

    def torch(self, args, kw):
        return args[0] * args[0]


class InvPos(Elementwise):
    name = "inv_pos"
    doc = "1 / x, elementwise, for x > 0 (convex, decreasing)"
    curvature = Curvature.CONVEX
    smooth = True
    prox = Prox("inv_pos")

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.DECREASING

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        # CVXPY's value outside the domain is +inf; never a negative reciprocal
        return np.where(x > 0, 1 / np.where(x > 0, x, 1), np.inf)

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.inv_pos(args[0])

    def torch(self, args, kw):
        import torch

        x = args[0]
        return torch.where(x > 0, 1 / torch.where(x > 0, x, torch.ones_like(x)), torch.full_like(x, float("inf")))


class Entr(Elementwise):
    name = "entr"
    doc = "-x log x, elementwise, for x >= 0 (concave; 0 log 0 = 0); entropy(x) is its sum"
    curvature = Curvature.CONCAVE
    smooth = True
    prox = Prox("neg_entropy", negated=True)

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def numpy(self, args, kw):
        from scipy.special import entr

        return entr(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.entr(args[0])

    def torch(self, args, kw):
        import torch

        x = args[0]
        inside = x.clamp_min(0)  # keeps the gradient of the branch not taken finite
        return torch.where(x >= 0, -torch.special.xlogy(inside, inside), torch.full_like(x, float("-inf")))


class RelEntr(Elementwise):
    name = "rel_entr"
    doc = "x log(x / y), elementwise, for x >= 0, y > 0 (jointly convex); kl_div adds - x + y and sums"
    curvature = Curvature.CONVEX
    nargs = (2, 2)
    smooth = True
    prox = Prox("rel_entr")  # in x, for a constant y

    def shape(self, shapes, kw):
        return broadcast(shapes)

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def monotonicity(self, i, signs, kw):
        return Mono.DECREASING if i == 1 else Mono.NONMONOTONE

    def numpy(self, args, kw):
        from scipy.special import rel_entr

        return rel_entr(args[0], args[1])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.rel_entr(args[0], args[1])

    def torch(self, args, kw):
        import torch

        x, y = args
        x = _as_tensor_like(x, y) if isinstance(y, torch.Tensor) else x
        y = _as_tensor_like(y, x)
        inside = (x >= 0) & (y > 0)
        xc, yc = x.clamp_min(0), torch.where(y > 0, y, torch.ones_like(y))  # finite gradients outside
        value = torch.special.xlogy(xc, xc) - torch.special.xlogy(xc, yc)
        return torch.where(inside, value, torch.full_like(value, float("inf")))


class Log1p(Elementwise):
    name = "log1p"
    doc = "log(1 + x), elementwise, for x > -1 (concave, increasing)"
    curvature = Curvature.CONCAVE
    smooth = True

    def sign(self, signs, kw):
        return signs[0]  # log(1 + x) has the sign of x

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.log1p(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.log1p(args[0])

    def torch(self, args, kw):
        return args[0].log1p()


class SumLargest(ScalarAtom):
    name = "sum_largest"
    doc = "sum of the k largest entries (convex, increasing)"
    curvature = Curvature.CONVEX
    static = {"k": 1}
    positional_kw = ("k",)

    def shape(self, shapes, kw):
        size = 1
        for n in shapes[0]:
            size *= n
        k = kw["k"]
        if not (float(k) == int(k) and 1 <= int(k) <= size):
            raise ShapeError(f"{self.name} needs an integer k in 1..{size}, got {k}")
        return ()

    def sign(self, signs, kw):
        return signs[0] if signs[0] in (Sign.NONNEG, Sign.NONPOS, Sign.ZERO) else Sign.UNKNOWN

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        flat = np.sort(np.asarray(args[0], dtype=float).reshape(-1))
        return float(flat[-int(kw["k"]):].sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum_largest(args[0], int(kw["k"]))

    def torch(self, args, kw):
        return args[0].reshape(-1).topk(int(kw["k"])).values.sum()


class SumSmallest(SumLargest):
    """sum of the k smallest entries = -sum_largest(-x, k) (concave, increasing)."""

    name = "sum_smallest"
    doc = "sum of the k smallest entries (concave, increasing)"
    curvature = Curvature.CONCAVE

    def numpy(self, args, kw):
        import numpy as np

        flat = np.sort(np.asarray(args[0], dtype=float).reshape(-1))
        return float(flat[:int(kw["k"])].sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum_smallest(args[0], int(kw["k"]))

    def torch(self, args, kw):
        return args[0].reshape(-1).topk(int(kw["k"]), largest=False).values.sum()


class _MeanOfVector(ScalarAtom):
    """A mean of the entries of a vector x >= 0 (geo_mean, harmonic_mean): concave, increasing, >= 0."""

    curvature = Curvature.CONCAVE

    def shape(self, shapes, kw):
        if len(shapes[0]) > 1 and sum(n > 1 for n in shapes[0]) > 1:
            raise ShapeError(f"{self.name} takes a vector, got shape {fmt(shapes[0])}; use vec(...) to "
                             "flatten a matrix", arg=0)
        return ()

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING


class GeoMean(_MeanOfVector):
    """(prod_i x_i^{p_i})^{1 / sum p}: CVXPY's geo_mean(x, p), weights p >= 0 (default all 1)."""

    name = "geo_mean"
    doc = ("(prod_i x_i^p_i)^(1/sum p), the (weighted) geometric mean of a vector x >= 0; weights p >= 0, "
           "default all 1 (concave, increasing)")
    static = {"p": None}
    positional_kw = ("p",)

    def shape(self, shapes, kw):
        import numpy as np

        super().shape(shapes, kw)
        if kw["p"] is not None:
            p, n = np.asarray(kw["p"], dtype=float), int(np.prod(shapes[0], dtype=int))
            if p.shape != (n,) or np.any(p < 0) or not p.sum() > 0:
                raise ShapeError(f"geo_mean's weights p must be {n} numbers >= 0, not all 0, got {kw['p']}")
        return ()

    @staticmethod
    def _weights(kw, n: int):
        import numpy as np

        p = np.ones(n) if kw["p"] is None else np.asarray(kw["p"], dtype=float)
        return p / p.sum()

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float).reshape(-1)
        w = self._weights(kw, x.size)
        if np.any(x < 0):
            return -np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.exp(np.where(w > 0, w * np.log(x), 0.0).sum()))  # 0 when a weighted entry is 0

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.geo_mean(cp.vec(args[0], order="C"), None if kw["p"] is None else list(map(float, kw["p"])))

    def torch(self, args, kw):
        import torch

        x = args[0].reshape(-1)
        w = torch.as_tensor(self._weights(kw, x.numel()), dtype=x.dtype, device=x.device)
        logs = torch.where(w > 0, w * x.clamp_min(0).log(), torch.zeros_like(x))
        value = logs.sum().exp()  # exp(-inf) = 0 when a weighted entry is 0
        return torch.where((x >= 0).all(), value, torch.full_like(value, float("-inf")))


class HarmonicMean(_MeanOfVector):
    """n / sum_i (1 / x_i) for a vector x >= 0 (concave, increasing; 0 when an entry is 0)."""

    name = "harmonic_mean"
    doc = "n / sum_i 1/x_i, the harmonic mean of a vector x >= 0 (concave, increasing; 0 if an entry is 0)"

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float).reshape(-1)
        if np.any(x < 0):
            return -np.inf
        return float(x.size / (1 / x).sum()) if np.all(x > 0) else 0.0

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.harmonic_mean(cp.vec(args[0], order="C"))

    def torch(self, args, kw):
        import torch

        x = args[0].reshape(-1)
        value = x.numel() / x.clamp_min(0).reciprocal().sum()  # 1/0 = inf: the mean is 0
        return torch.where((x >= 0).all(), value, torch.full_like(value, float("-inf")))


class PNorm(ScalarAtom):
    name = "pnorm"
    doc = "(sum_i |x_i|^p)^(1/p), p >= 1, over all entries or along an axis (convex)"
    curvature = Curvature.CONVEX
    static = {"p": 2, "axis": None}
    positional_kw = ("p",)
    cvxpy_notes = {"norm": "CVXPY's norm(x, p) is norm1(x), norm2(x), norm_inf(x) or pnorm(x, p) here "
                           "(pnorm(x, p, axis = 1) along an axis); a matrix's norm(X, 2) is spectral_norm(X), "
                           "norm(X, 'nuc') is nuclear_norm(X), norm(X, 'fro') is norm2(X), and its induced "
                           "norm(X, 1) is max(sum(abs(X), axis = 0)), norm(X, 'inf') is max(sum(abs(X), axis = 1)) "
                           "(norm1(X) sums every |X_ij|, as CVXPY's norm1)"}

    def shape(self, shapes, kw):
        p = kw["p"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p < float("inf"):
            raise ShapeError(f"pnorm needs a number p >= 1, got {p!r}; use norm_inf(x) for p = inf")
        return axis_norm_shape(self.name, shapes[0], kw["axis"])

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        x, p = np.abs(np.asarray(args[0], dtype=float)), float(kw["p"])
        return (x ** p).sum(axis=kw["axis"]) ** (1 / p)

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x, axis = args[0], kw["axis"]
        if axis is None:
            return cp.pnorm(cp.vec(x, order="C") if len(x.shape) > 1 else x, float(kw["p"]))
        axis, p = axis % len(x.shape), float(kw["p"])
        if len(x.shape) == 1:
            return cp.pnorm(x, p)
        if p in (1.0, 2.0):
            return cp.norm(x, p, axis=axis)
        # CVXPY's pnorm takes an axis for p = 2 only: one norm per row (axis 1) or column (axis 0)
        slices = [x[i, :] for i in range(x.shape[0])] if axis == 1 else [x[:, j] for j in range(x.shape[1])]
        return cp.hstack([cp.pnorm(v, p) for v in slices])

    def torch(self, args, kw):
        import torch

        x, axis = args[0], kw["axis"]
        if axis is None:
            return torch.linalg.vector_norm(x.reshape(-1), ord=float(kw["p"]))
        return torch.linalg.vector_norm(x, ord=float(kw["p"]), dim=axis)


class QuadOverLin(ScalarAtom):
    name = "quad_over_lin"
    doc = "sum_i x_i^2 / y for a scalar y > 0 (jointly convex; decreasing in y)"
    curvature = Curvature.CONVEX
    nargs = (2, 2)
    smooth = True

    def shape(self, shapes, kw):
        if tuple(shapes[1]) != ():
            raise ShapeError(f"quad_over_lin needs a scalar denominator, got shape {fmt(shapes[1])}", arg=1)
        return ()

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs, 0) if i == 0 else Mono.DECREASING

    def numpy(self, args, kw):
        import numpy as np

        x, y = np.asarray(args[0], dtype=float), float(args[1])
        return float((x ** 2).sum() / y) if y > 0 else np.inf

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.quad_over_lin(args[0], args[1])

    def torch(self, args, kw):
        import torch

        x, y = args
        x = _as_tensor_like(x, y) if isinstance(y, torch.Tensor) else x
        y = _as_tensor_like(y, x).reshape(())
        value = (x * x).sum() / torch.where(y > 0, y, torch.ones_like(y))
        return torch.where(y > 0, value, torch.full_like(value, float("inf")))


CVXPY_NAME_CLASSES = [Hinge, Square, InvPos, Entr, RelEntr, Log1p, SumLargest, SumSmallest, GeoMean, HarmonicMean,
                      PNorm, QuadOverLin]
