"""Sets for ``var x in SET``, domains (``>= 0``) and ``constrain T in SET``. One class per set.

Convex sets lower to CVXPY constraints and project with a torch kernel. Nonconvex sets
(``convex = False``: top_k, nm_sparse, low_rank, sphere, stiefel) are torch-only: the curvature
pass refuses them for CVXPY with a located reason.
"""
from __future__ import annotations

from typing import Any

from regspec.compiler.catalogue.base import SetEntry, ShapeError


def _fmt(shape) -> str:
    return "scalar" if tuple(shape) == () else str(tuple(shape))


def _flat(x):
    import cvxpy as cp

    return cp.vec(x, order="C") if len(x.shape) > 1 else x


def _matrix(shape, name: str, square: bool = False) -> None:
    if len(shape) != 2:
        raise ShapeError(f"{name} applies to matrices")
    if square and shape[0] != shape[1]:
        raise ShapeError(f"{name} applies to square matrices")


def _radius(kw: dict[str, Any], name: str, key: str = "r") -> float:
    r = kw.get(key)
    if r is None or isinstance(r, (list, tuple)) or getattr(r, "ndim", 0) != 0 or float(r) < 0:
        raise ShapeError(f"{name} needs a radius {key} >= 0, got {r}")
    return float(r)


def _positive_int(kw: dict[str, Any], key: str, name: str) -> int:
    v = kw.get(key)
    if v is None or isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) != 0 or float(v) != int(v) or int(v) < 0:
        raise ShapeError(f"{name} needs a nonnegative integer {key}, got {v}")
    return int(v)


class Nonneg(SetEntry):
    name = "nonneg"
    shrinks = ("entries",)
    doc = "x >= 0"
    projection = "nonneg"

    def cvxpy(self, x, kw):
        return [x >= 0]


class Nonpos(SetEntry):
    name = "nonpos"
    shrinks = ("entries",)
    doc = "x <= 0"
    projection = "box"

    def cvxpy(self, x, kw):
        return [x <= 0]

    def kernel_hyper(self, kw):
        return {"lo": float("-inf"), "hi": 0.0}


class Box(SetEntry):
    name = "box"
    shrinks = ("entries",)  # when the box holds 0 (compiler/train_plan.py checks the bounds)
    doc = "lo <= x <= hi (either bound may be omitted)"
    static = {"lo": None, "hi": None}
    positional = ("lo", "hi")
    projection = "box"

    def check_shape(self, shape, kw):
        import numpy as np

        lo, hi = kw.get("lo"), kw.get("hi")
        for key, bound in (("lo", lo), ("hi", hi)):
            if bound is not None and np.ndim(bound):
                try:
                    fits = np.broadcast_shapes(np.shape(bound), tuple(shape)) == tuple(shape)
                except ValueError:
                    fits = False
                if not fits:
                    raise ShapeError(f"the bound {key} has shape {_fmt(np.shape(bound))}, which does not fit "
                                     f"shape {_fmt(shape)}")
        if lo is not None and hi is not None and np.any(np.asarray(lo) > np.asarray(hi)):
            raise ShapeError(f"box is empty: lo = {lo} exceeds hi = {hi}")

    def cvxpy(self, x, kw):
        out = []
        if kw.get("lo") is not None:
            out.append(x >= kw["lo"])
        if kw.get("hi") is not None:
            out.append(x <= kw["hi"])
        return out

    def kernel_hyper(self, kw):
        # an omitted bound is an infinite one for the clip kernel
        lo, hi = kw.get("lo"), kw.get("hi")
        return {"lo": float("-inf") if lo is None else lo, "hi": float("inf") if hi is None else hi}


class Simplex(SetEntry):
    name = "simplex"
    arg_aliases = {"radius": "r"}
    doc = "x >= 0, sum(x) = r (r = 1 by default)"
    static = {"r": 1.0}
    positional = ("r",)
    projection = "simplex"

    def check_shape(self, shape, kw):
        if len(shape) != 1:
            raise ShapeError("simplex applies to vectors")
        _radius(kw, self.name)

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [x >= 0, cp.sum(x) == kw["r"]]

    def kernel_hyper(self, kw):
        return {"radius": float(kw["r"]), "dim": None}


class L1Ball(SetEntry):
    name = "l1_ball"
    arg_aliases = {"radius": "r"}
    shrinks = ("entries",)
    doc = "||x||_1 <= r (all entries; r = 1 by default)"
    static = {"r": 1.0}
    positional = ("r",)
    projection = "l1_ball"

    def check_shape(self, shape, kw):
        _radius(kw, self.name)

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [cp.norm1(_flat(x)) <= kw["r"]]

    def kernel_hyper(self, kw):
        return {"radius": float(kw["r"])}


class L2Ball(L1Ball):
    name = "l2_ball"
    shrinks = ("entries", "spectrum")  # the Frobenius ball of a matrix
    doc = "||x||_2 <= r (Frobenius for a matrix; r = 1 by default)"
    projection = "l2_ball"

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [cp.norm(_flat(x), 2) <= kw["r"]]


class LinfBall(L1Ball):
    name = "linf_ball"
    shrinks = ("entries",)
    doc = "|x_i| <= r for every entry (r = 1 by default)"
    projection = "linf_ball"

    def cvxpy(self, x, kw):
        return [x <= kw["r"], x >= -kw["r"]]


class SOC(SetEntry):
    name = "soc"
    doc = ("the second-order cone of a vector [z; t]: ||z||_2 <= t (t the last entry); norm2(e) <= t "
           "with t affine is [e; t] in soc")
    projection = "soc"

    def check_shape(self, shape, kw):
        if len(shape) != 1 or shape[0] < 2:
            raise ShapeError(f"soc applies to a vector [z; t] of length >= 2, got shape {_fmt(shape)}")

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [cp.SOC(x[-1], x[:-1])]


class PSD(SetEntry):
    name = "psd"
    matrix_view = True
    doc = "X symmetric positive semidefinite"
    projection = "psd"

    def check_shape(self, shape, kw):
        _matrix(shape, self.name, square=True)

    def cvxpy(self, x, kw):
        if x.is_symmetric():
            return [x >> 0]
        return [x == x.T, (x + x.T) / 2 >> 0]


class SpectralBall(SetEntry):
    name = "spectral_ball"
    arg_aliases = {"radius": "r", "c": "r"}
    matrix_view = True
    shrinks = ("spectrum",)
    doc = "sigma_max(X) <= r (r = 1 by default)"
    static = {"r": 1.0}
    positional = ("r",)
    projection = "spectral_ball"

    def check_shape(self, shape, kw):
        _matrix(shape, self.name)
        _radius(kw, self.name)

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [cp.sigma_max(x) <= kw["r"]]

    def kernel_hyper(self, kw):
        return {"radius": float(kw["r"])}


class NuclearBall(SpectralBall):
    name = "nuclear_ball"
    arg_aliases = {"radius": "r", "c": "r"}
    shrinks = ("spectrum",)
    doc = "||X||_* <= r (r = 1 by default)"
    projection = "nuclear_ball"

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [cp.normNuc(x) <= kw["r"]]


class Transport(SetEntry):
    name = "transport"
    doc = "transport plans U(a, b): T >= 0, T 1 = a (row sums), T^T 1 = b (column sums), sum a = sum b"
    static = {"a": None, "b": None}
    positional = ("a", "b")
    projection = "transport"

    def check_shape(self, shape, kw):
        import numpy as np

        _matrix(shape, self.name)
        a, b = kw.get("a"), kw.get("b")
        if a is None or b is None:
            raise ShapeError("transport needs both marginals: transport(a, b)")
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape not in ((), (shape[0],)):
            raise ShapeError(f"the row marginal a has shape {_fmt(a.shape)}, the plan has {shape[0]} rows")
        if b.shape not in ((), (shape[1],)):
            raise ShapeError(f"the column marginal b has shape {_fmt(b.shape)}, the plan has {shape[1]} columns")
        if np.any(a < 0) or np.any(b < 0):
            raise ShapeError("transport marginals must be nonnegative")
        total_a = float(np.broadcast_to(a, (shape[0],)).sum())
        total_b = float(np.broadcast_to(b, (shape[1],)).sum())
        if abs(total_a - total_b) > 1e-9 * max(1.0, abs(total_a)):
            raise ShapeError(f"transport needs equal masses: sum(a) = {total_a:.10g}, sum(b) = {total_b:.10g}")

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [x >= 0, cp.sum(x, axis=1) == kw["a"], cp.sum(x, axis=0) == kw["b"]]

    def kernel_hyper(self, kw):
        import numpy as np

        return {"a": np.asarray(kw["a"], dtype=float), "b": np.asarray(kw["b"], dtype=float)}


class MetricCone(SetEntry):
    name = "metric_cone"
    doc = ("X a distance matrix: symmetric, zero diagonal, X_ij <= X_ik + X_kj for all distinct i, j, k "
           "(hence X >= 0)")
    projection = None
    lacks = {"torch": "no projection kernel yet: Project-and-Forget / Hildreth over triangles is not in the "
                      "torch registry"}

    def check_shape(self, shape, kw):
        _matrix(shape, self.name, square=True)

    @staticmethod
    def triangles(n: int):
        """Index arrays (I, J, K) of every inequality X_ij <= X_ik + X_kj, i < j, k not in {i, j}."""
        import numpy as np

        i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
        keep = (i < j) & (k != i) & (k != j)
        return i[keep], j[keep], k[keep]

    def cvxpy(self, x, kw):
        import cvxpy as cp

        n = x.shape[0]
        i, j, k = self.triangles(n)
        out = [x == x.T, cp.diag(x) == 0]
        if len(i):
            out.append(x[i, j] <= x[i, k] + x[k, j])
        return out


class _Nonconvex(SetEntry):
    convex = False
    lacks = {"cvxpy": "nonconvex set: CVXPY takes convex (DCP) constraints only"}

    def cvxpy(self, x, kw):
        raise NotImplementedError(f"{self.name} is not convex; CVXPY cannot take it")


class TopK(_Nonconvex):
    name = "top_k"
    integer_args = ("k",)
    shrinks = ("entries",)
    doc = "at most k nonzero entries (||x||_0 <= k)"
    static = {"k": None}
    positional = ("k",)
    projection = "top_k"

    def check_shape(self, shape, kw):
        _positive_int(kw, "k", self.name)

    def kernel_hyper(self, kw):
        return {"k": int(kw["k"])}


class NMSparse(_Nonconvex):
    name = "nm_sparse"
    arg_aliases = {"N": "n", "M": "m"}
    integer_args = ("n", "m")
    matrix_view = True
    shrinks = ("entries",)
    doc = "at most n nonzeros in every block of m consecutive entries along the last dimension"
    static = {"n": None, "m": None}
    positional = ("n", "m")
    projection = "nm_sparse"

    def check_shape(self, shape, kw):
        n, m = _positive_int(kw, "n", self.name), _positive_int(kw, "m", self.name)
        if m < 1 or n > m:
            raise ShapeError(f"nm_sparse needs 0 <= n <= m and m >= 1, got n = {n}, m = {m}")

    def kernel_hyper(self, kw):
        return {"n": int(kw["n"]), "m": int(kw["m"])}


class LowRank(_Nonconvex):
    name = "low_rank"
    integer_args = ("k",)
    matrix_view = True
    shrinks = ("spectrum",)
    doc = "rank X <= k"
    static = {"k": None}
    positional = ("k",)
    projection = "low_rank"

    def check_shape(self, shape, kw):
        _matrix(shape, self.name)
        _positive_int(kw, "k", self.name)

    def kernel_hyper(self, kw):
        return {"k": int(kw["k"])}


class Sphere(_Nonconvex):
    name = "sphere"
    arg_aliases = {"radius": "r"}
    doc = "||x||_2 = r (r = 1 by default)"
    static = {"r": 1.0}
    positional = ("r",)
    projection = "sphere"

    def check_shape(self, shape, kw):
        _radius(kw, self.name)

    def kernel_hyper(self, kw):
        return {"radius": float(kw["r"])}


class Stiefel(_Nonconvex):
    name = "stiefel"
    matrix_view = True
    doc = "X^T X = I (orthonormal columns; rows if X is wide)"
    projection = "stiefel"

    def check_shape(self, shape, kw):
        _matrix(shape, self.name)


SET_CLASSES: list[type[SetEntry]] = [Nonneg, Nonpos, Box, Simplex, L1Ball, L2Ball, LinfBall, SOC, PSD, SpectralBall,
                                     NuclearBall, Transport, MetricCone, TopK, NMSparse, LowRank, Sphere, Stiefel]
