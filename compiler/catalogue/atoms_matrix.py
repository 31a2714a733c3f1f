"""Matrix, spectral and structural atoms: nuclear_norm, spectral_norm, lambda_max, lambda_min,
lambda_sum_largest, lambda_sum_smallest, log_det, trace, diag, reshape, vec, hstack, vstack, inner, mean, cumsum, diff
(CATALOGUE §1c and the affine operators OT and imaging need).

Eigenvalue atoms and log_det act on the symmetric part (X + X^T)/2, which is X itself for the
symmetric matrices they are meant for; CVXPY needs that symmetry stated to build its PSD cones.
"""
from __future__ import annotations

from math import prod

from regspec.compiler.catalogue.atoms import _Product, fmt, reduce_shape
from regspec.compiler.catalogue.base import Atom, Curvature, Mono, Prox, ScalarAtom, ShapeError, Sign, TrainUse


def _matrix(shape, name: str, square: bool = False) -> tuple[int, int]:
    if len(shape) != 2:
        raise ShapeError(f"{name} needs a matrix, got shape {fmt(tuple(shape))}", arg=0)
    if square and shape[0] != shape[1]:
        raise ShapeError(f"{name} needs a square matrix, got shape {fmt(tuple(shape))}", arg=0)
    if 0 in shape:  # CVXPY's cones and LAPACK take no empty matrix (SCS: "1-dimensional array given")
        raise ShapeError(f"{name} of an empty matrix (shape {fmt(tuple(shape))})", arg=0)
    return tuple(shape)


def _cvx_sym(x):
    return x if x.is_symmetric() else (x + x.T) / 2


def _torch_sym(x):
    return (x + x.mT) / 2


def _np_sym(x):
    import numpy as np

    x = np.asarray(x, dtype=float)
    return (x + x.T) / 2


class NuclearNorm(ScalarAtom):
    name = "nuclear_norm"
    torch_source = 'torch.linalg.matrix_norm(x, ord="nuc")'
    aliases = ("normNuc", "nuclear")
    train = TrainUse("nuclear", matrix=True, math="sum_i sigma_i(W), W = x.reshape(C_out, -1)")
    doc = "sum of singular values ||X||_*"
    curvature = Curvature.CONVEX
    prox = Prox("nuclear")

    def shape(self, shapes, kw):
        _matrix(shapes[0], self.name)
        return ()

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.norm(np.asarray(args[0], dtype=float), "nuc"))

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.normNuc(args[0])

    def torch(self, args, kw):
        import torch

        return torch.linalg.matrix_norm(args[0], ord="nuc")


class SpectralNorm(ScalarAtom):
    name = "spectral_norm"
    torch_source = "torch.linalg.matrix_norm(x, ord=2)"
    aliases = ("sigma_max",)
    train = TrainUse("spectral_norm", matrix=True, math="sigma_max(W), W = x.reshape(C_out, -1)")
    doc = "largest singular value sigma_max(X)"
    curvature = Curvature.CONVEX
    prox = Prox("spectral_norm")

    def shape(self, shapes, kw):
        _matrix(shapes[0], self.name)
        return ()

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.norm(np.asarray(args[0], dtype=float), 2))

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sigma_max(args[0])

    def torch(self, args, kw):
        import torch

        return torch.linalg.matrix_norm(args[0], ord=2)


class LambdaMax(ScalarAtom):
    name = "lambda_max"
    doc = "largest eigenvalue of the symmetric matrix (X + X^T)/2 (convex)"
    curvature = Curvature.CONVEX

    def shape(self, shapes, kw):
        _matrix(shapes[0], self.name, square=True)
        return ()

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.eigvalsh(_np_sym(args[0]))[-1])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.lambda_max(_cvx_sym(args[0]))

    def torch(self, args, kw):
        import torch

        return torch.linalg.eigvalsh(_torch_sym(args[0]))[..., -1]


class LambdaMin(LambdaMax):
    name = "lambda_min"
    doc = "smallest eigenvalue of the symmetric matrix (X + X^T)/2 (concave)"
    curvature = Curvature.CONCAVE

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.eigvalsh(_np_sym(args[0]))[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.lambda_min(_cvx_sym(args[0]))

    def torch(self, args, kw):
        import torch

        return torch.linalg.eigvalsh(_torch_sym(args[0]))[..., 0]


class LambdaSumLargest(LambdaMax):
    name = "lambda_sum_largest"
    doc = "sum of the k largest eigenvalues of (X + X^T)/2 (convex)"
    static = {"k": 1}
    positional_kw = ("k",)

    def shape(self, shapes, kw):
        n, _ = _matrix(shapes[0], self.name, square=True)
        k = kw["k"]
        if not (float(k) == int(k) and 1 <= int(k) <= n):
            raise ShapeError(f"{self.name} needs an integer k in 1..{n}, got {k}")
        return ()

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.eigvalsh(_np_sym(args[0]))[::-1][: int(kw["k"])].sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.lambda_sum_largest(_cvx_sym(args[0]), int(kw["k"]))

    def torch(self, args, kw):
        import torch

        return torch.linalg.eigvalsh(_torch_sym(args[0]))[..., -int(kw["k"]):].sum(-1)


class LambdaSumSmallest(LambdaSumLargest):
    """sum of the k smallest eigenvalues = -lambda_sum_largest(-X, k) (concave)."""

    name = "lambda_sum_smallest"
    doc = "sum of the k smallest eigenvalues of (X + X^T)/2 (concave)"
    curvature = Curvature.CONCAVE

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.eigvalsh(_np_sym(args[0]))[: int(kw["k"])].sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.lambda_sum_smallest(_cvx_sym(args[0]), int(kw["k"]))

    def torch(self, args, kw):
        import torch

        return torch.linalg.eigvalsh(_torch_sym(args[0]))[..., :int(kw["k"])].sum(-1)


class LogDet(ScalarAtom):
    name = "log_det"
    doc = "log det X for symmetric positive definite X (concave); -inf outside the domain"
    curvature = Curvature.CONCAVE
    smooth = True
    prox = Prox("neg_log_det", negated=True)

    def shape(self, shapes, kw):
        _matrix(shapes[0], self.name, square=True)
        return ()

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def numpy(self, args, kw):
        import numpy as np

        sign, logdet = np.linalg.slogdet(_np_sym(args[0]))
        if sign <= 0 or np.linalg.eigvalsh(_np_sym(args[0]))[0] <= 0:
            return -np.inf
        return float(logdet)

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.log_det(_cvx_sym(args[0]))

    def torch(self, args, kw):
        import torch

        factor, info = torch.linalg.cholesky_ex(_torch_sym(args[0]))
        value = 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
        return torch.where(info == 0, value, torch.full_like(value, -torch.inf))


class Trace(ScalarAtom):
    name = "trace"
    doc = "sum of the diagonal"
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        _matrix(shapes[0], self.name, square=True)
        return ()

    def sign(self, signs, kw):
        return signs[0] if signs[0] in (Sign.NONNEG, Sign.NONPOS, Sign.ZERO) else Sign.UNKNOWN

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return float(np.trace(args[0]))

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.trace(args[0])

    def torch(self, args, kw):
        return args[0].diagonal(dim1=-2, dim2=-1).sum(-1)


class Diag(Atom):
    name = "diag"
    doc = "diag(v): the diagonal matrix of a vector; diag(X): the diagonal of a square matrix"
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        s = tuple(shapes[0])
        if len(s) == 1:
            return (s[0], s[0])
        _matrix(s, self.name, square=True)
        return (s[0],)

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.diag(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.diag(args[0])

    def torch(self, args, kw):
        import torch

        return torch.diag(args[0])


def _target_shape(shape, n: int) -> tuple[int, ...]:
    import numpy as np

    dims = [int(d) for d in np.atleast_1d(np.asarray(shape)).tolist()]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ShapeError(f"reshape takes nonnegative dimensions and at most one -1, got {dims}")
    if -1 in dims:
        known = prod(d for d in dims if d != -1)
        if known == 0 or n % known:
            raise ShapeError(f"cannot reshape {n} entries into {dims}")
        dims[dims.index(-1)] = n // known
    if prod(dims) != n:
        raise ShapeError(f"cannot reshape {n} entries into shape {tuple(dims)}")
    return tuple(dims)


class Reshape(Atom):
    name = "reshape"
    doc = "reshape(x, [m, n]): the entries in row-major (C) order, as NumPy and torch; one -1 allowed"
    static = {"shape": None}
    positional_kw = ("shape",)
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        if kw["shape"] is None:
            raise ShapeError("reshape needs a target shape: reshape(x, [m, n])")
        return _target_shape(kw["shape"], prod(shapes[0]))

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0])
        return x.reshape(_target_shape(kw["shape"], x.size))

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        return cp.reshape(x, _target_shape(kw["shape"], prod(x.shape)), order="C")

    def torch(self, args, kw):
        x = args[0]
        return x.reshape(_target_shape(kw["shape"], x.numel()))


class Vec(Atom):
    name = "vec"
    doc = "the entries as a vector, row-major (C) order as NumPy's ravel"
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        return (prod(shapes[0]),)

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.ravel(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        return cp.vec(x, order="C") if len(x.shape) != 1 else x

    def torch(self, args, kw):
        return args[0].reshape(-1)


class HStack(Atom):
    name = "hstack"
    doc = "horizontal concatenation with NumPy's rules (vectors join end to end; matrices side by side)"
    nargs = (1, 64)
    sequence_args = True
    curvature = Curvature.AFFINE
    smooth = True
    _numpy_fn = "hstack"

    def shape(self, shapes, kw):
        import numpy as np

        try:
            return tuple(getattr(np, self._numpy_fn)([np.empty(s, dtype=np.int8) for s in shapes]).shape)
        except ValueError as e:
            raise ShapeError(f"{self.name} of shapes {', '.join(fmt(tuple(s)) for s in shapes)}: {e}") from None

    def sign(self, signs, kw):
        out = signs[0]
        for s in signs[1:]:
            out = out + s
        return out

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return getattr(np, self._numpy_fn)(args)

    @staticmethod
    def _promote(args):
        """CVXPY's stacks want one rank: scalars become length-1 vectors (NumPy's atleast_1d)."""
        import cvxpy as cp

        return [cp.reshape(a, (1,), order="C") if len(getattr(a, "shape", ())) == 0 else a for a in args]

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.hstack(self._promote([cp.Constant(a) if not isinstance(a, cp.Expression) else a
                                        for a in args]))

    def torch(self, args, kw):
        import torch

        ref = next(a for a in args if isinstance(a, torch.Tensor))
        ts = [torch.as_tensor(a, dtype=ref.dtype, device=ref.device) for a in args]
        return getattr(torch, self._numpy_fn)([t.reshape(1) if t.dim() == 0 else t for t in ts])


class VStack(HStack):
    name = "vstack"
    doc = "vertical concatenation with NumPy's rules (vectors become rows; matrices stack)"
    cvxpy_notes = {"bmat": "CVXPY's bmat([[A, B], [C, D]]) is vstack([hstack([A, B]), hstack([C, D])]) here"}
    _numpy_fn = "vstack"

    def cvxpy(self, args, kw):
        import cvxpy as cp

        exprs = self._promote([cp.Constant(a) if not isinstance(a, cp.Expression) else a for a in args])
        exprs = [cp.reshape(e, (1, e.shape[0]), order="C") if len(e.shape) == 1 else e for e in exprs]
        return cp.vstack(exprs)


class Inner(_Product):
    name = "inner"
    doc = "<A, B> = sum of A * B (one side constant)"

    def shape(self, shapes, kw):
        a, b = tuple(shapes[0]), tuple(shapes[1])
        if a != b:
            raise ShapeError(f"inner needs arguments of one shape, got {fmt(a)} and {fmt(b)}", arg=1)
        return ()

    def sign(self, signs, kw):
        return signs[0] * signs[1]

    def monotonicity(self, i, signs, kw):
        other = signs[1 - i]
        return Mono.INCREASING if other.nonneg else Mono.DECREASING if other.nonpos else Mono.NONMONOTONE

    def numpy(self, args, kw):
        import numpy as np

        return float(np.sum(np.asarray(args[0]) * np.asarray(args[1])))

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum(cp.multiply(args[0], args[1]))

    def torch(self, args, kw):
        return (args[0] * args[1]).sum()


class Convolve(_Product):
    """(c * x)_k = sum_j c_j x_{k-j}: the full 1-D convolution of two vectors (NumPy's convolve),
    length n + m - 1, linear in either argument when the other is constant."""

    name = "convolve"
    doc = "full 1-D convolution of two vectors, one constant (numpy.convolve; length n + m - 1)"
    aliases = ("conv",)  # CVXPY's older name

    def shape(self, shapes, kw):
        for i, s in enumerate(shapes):
            if len(s) > 1 and sum(n > 1 for n in s) > 1:
                raise ShapeError(f"convolve takes vectors, got shape {fmt(s)}", arg=i)
        n, m = (max(1, prod(s)) for s in shapes)
        return (n + m - 1,)

    def dcp(self, curvs, signs, kw, texts):
        if Curvature.CONSTANT not in curvs:
            return Curvature.UNKNOWN, (f"convolve({texts[0]}, {texts[1]}) of two non-constant vectors is not DCP "
                                       "(one must be a constant or a parameter)")
        return super().dcp(curvs, signs, kw, texts)

    def sign(self, signs, kw):
        s = signs[0] * signs[1]
        return s if s is not Sign.NONPOS else Sign.UNKNOWN  # sums of nonpositive products flip

    def numpy(self, args, kw):
        import numpy as np

        return np.convolve(np.ravel(args[0]), np.ravel(args[1]))

    def cvxpy(self, args, kw):
        import cvxpy as cp
        import numpy as np

        return cp.convolve(*(cp.vec(a, order="C") if isinstance(a, cp.Expression) else np.ravel(a) for a in args))

    def torch(self, args, kw):
        import torch

        like = next(a for a in args if isinstance(a, torch.Tensor))
        c, x = (torch.as_tensor(a, dtype=like.dtype, device=like.device).reshape(-1) for a in args)
        return torch.nn.functional.conv1d(x.view(1, 1, -1), c.flip(0).view(1, 1, -1), padding=c.numel() - 1).view(-1)


class Mean(Atom):
    name = "mean"
    doc = "mean of all entries, or along an axis"
    static = {"axis": None}
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        return reduce_shape(shapes[0], kw["axis"])

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.mean(args[0], axis=kw["axis"])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        count = prod(x.shape) if kw["axis"] is None else x.shape[kw["axis"]]
        return cp.sum(x, axis=kw["axis"]) / count

    def torch(self, args, kw):
        x = args[0]
        return x.mean() if kw["axis"] is None else x.mean(dim=kw["axis"])


class Cumsum(Atom):
    name = "cumsum"
    doc = "cumulative sum along an axis (default 0)"
    static = {"axis": 0}
    positional_kw = ("axis",)  # CVXPY's cumsum(x, axis)
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        reduce_shape(shapes[0], kw["axis"])  # validates the axis
        return tuple(shapes[0])

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.cumsum(args[0], axis=kw["axis"])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.cumsum(args[0], axis=kw["axis"])

    def torch(self, args, kw):
        return args[0].cumsum(dim=kw["axis"])


class Diff(Atom):
    name = "diff"
    doc = "forward differences x[i+1] - x[i] along an axis (default 0), k times"
    static = {"k": 1, "axis": 0}
    positional_kw = ("k", "axis")  # CVXPY's diff(x, k, axis): diff(x, 2) is the second difference
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        s = list(shapes[0])
        reduce_shape(tuple(s), kw["axis"])
        axis = kw["axis"] % len(s)
        if s[axis] <= int(kw["k"]):
            raise ShapeError(f"diff of order {kw['k']} needs more than {kw['k']} entries along axis {kw['axis']}")
        s[axis] -= int(kw["k"])
        return tuple(s)

    def sign(self, signs, kw):
        return Sign.UNKNOWN

    def numpy(self, args, kw):
        import numpy as np

        return np.diff(args[0], n=int(kw["k"]), axis=kw["axis"])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.diff(args[0], int(kw["k"]), axis=kw["axis"])

    def torch(self, args, kw):
        import torch

        return torch.diff(args[0], n=int(kw["k"]), dim=kw["axis"])


MATRIX_CLASSES = [NuclearNorm, SpectralNorm, LambdaMax, LambdaMin, LambdaSumLargest, LambdaSumSmallest, LogDet, Trace, Diag, Reshape,
                  Vec, HStack, VStack, Inner, Convolve, Mean, Cumsum, Diff]
