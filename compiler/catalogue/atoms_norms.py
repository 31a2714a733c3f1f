"""Norms and regularizers: norm_inf, huber, quad_form, elastic_net, group norms, sum-of-norms
fusion, class group lasso and total variation (CATALOGUE §1a, §1b)."""
from __future__ import annotations

from regspec.compiler.catalogue.atoms import fmt
from regspec.compiler.catalogue.base import (Curvature, Prox, ScalarAtom, ShapeError, Sign, TrainUse,
                                             norm_of_abs_mono)
from regspec.compiler.catalogue.groups import (as_int_array, check_pairs, entry_labels, group_sizes, incidence,
                                               torch_entry_labels)


def _weights_shape_ok(w, count: int, what: str) -> None:
    import numpy as np

    if w is not None and np.ndim(w) != 0 and np.size(w) != count:
        raise ShapeError(f"{what} needs {count} weights (one per group), got shape {np.shape(w)}")


def _cvx_weighted_sum(norms, w, default):
    """sum_g w_g * norms_g; w may be a cvxpy Parameter (DPP: parameter times expression)."""
    import cvxpy as cp

    weights = default if w is None else w
    if getattr(weights, "shape", ()) == ():
        return weights * cp.sum(norms)
    return cp.sum(cp.multiply(weights, norms))


class NormInf(ScalarAtom):
    name = "norm_inf"
    aliases = ("linf",)
    train = TrainUse("linf", math="max_i |x_i|")
    torch_source = "x.abs().max()"
    doc = "max_i |x_i| over all entries"
    curvature = Curvature.CONVEX
    prox = Prox("linf")

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        return float(np.max(np.abs(args[0])))

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        return cp.norm_inf(cp.vec(x, order="C") if len(x.shape) > 1 else x)

    def torch(self, args, kw):
        return args[0].abs().max()


class Huber(ScalarAtom):
    name = "huber"
    torch_source = "torch.where(x.abs() <= M, x * x, 2 * M * x.abs() - M * M).sum()"
    doc = "sum_i huber(x_i, M): x^2 for |x| <= M, else 2M|x| - M^2 (M > 0, default 1)"
    curvature = Curvature.CONVEX
    static = {"M": 1.0}
    positional_kw = ("M",)
    smooth = True
    prox = Prox("huber", (("M", "M"),))
    sums_cvxpy_elementwise = ("huber(x, M) is the sum over the entries of x here (CVXPY's huber is elementwise); "
                              "weights per entry have no spelling yet: split the residual into groups of equal "
                              "weight, c_1 * huber(r[g_1], M) + c_2 * huber(r[g_2], M)")

    def shape(self, shapes, kw):
        if not float(kw["M"]) > 0:
            raise ShapeError(f"huber needs M > 0, got {kw['M']}")
        return ()

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        a, m = np.abs(args[0]), float(kw["M"])
        return float(np.where(a <= m, a * a, 2 * m * a - m * m).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum(cp.huber(args[0], float(kw["M"])))

    def torch(self, args, kw):
        import torch

        a, m = args[0].abs(), float(kw["M"])
        return torch.where(a <= m, a * a, 2 * m * a - m * m).sum()


class QuadForm(ScalarAtom):
    name = "quad_form"
    doc = "x^T P x for a constant symmetric P (convex if P is PSD, concave if NSD)"
    static = {"P": None}
    positional_kw = ("P",)
    smooth = True
    static_notes = {"P": "P decides the curvature, so it is data; for a covariance that changes between solves, "
                         "declare a factor `param F[k, n]` (P = F.T @ F) and write sum_squares(F @ x), which keeps "
                         "the parameter symbolic (CVXPY's DPP form)"}

    def shape(self, shapes, kw):
        import numpy as np

        x = tuple(shapes[0])
        if kw["P"] is None:
            raise ShapeError("quad_form needs a matrix P: quad_form(x, P)")
        p = np.shape(kw["P"])
        if len(x) != 1:
            raise ShapeError(f"quad_form needs a vector x, got shape {fmt(x)}", arg=0)
        if p != (x[0], x[0]):
            raise ShapeError(f"quad_form of a vector of length {x[0]} needs P of shape {(x[0], x[0])}, got {fmt(p)}")
        return ()

    @staticmethod
    def definiteness(P) -> str:
        """'psd', 'nsd' or 'indefinite' (symmetric part, relative tolerance 1e-10). The signs of
        the eigenvalues do not change with a positive scale: P / max|P_ij| keeps entries near
        1e308 from overflowing in P + P^T (and LAPACK from failing on them)."""
        import numpy as np

        P = np.asarray(P, dtype=float)
        top = float(np.abs(P).max(initial=0.0))
        if top == 0.0:
            return "psd"
        P = P / top
        eig = np.linalg.eigvalsh((P + P.T) / 2)
        tol = 1e-10 * max(1.0, float(np.abs(eig).max(initial=0.0)))
        if eig.min(initial=0.0) >= -tol:
            return "psd"
        if eig.max(initial=0.0) <= tol:
            return "nsd"
        return "indefinite"

    def curvature_of(self, kw):
        kind = self.definiteness(kw["P"])
        return {"psd": Curvature.CONVEX, "nsd": Curvature.CONCAVE}.get(kind, Curvature.UNKNOWN)

    def dcp(self, curvs, signs, kw, texts):
        if self.curvature_of(kw) is Curvature.UNKNOWN:
            return Curvature.UNKNOWN, "quad_form needs a positive (or negative) semidefinite P; this P is indefinite"
        return super().dcp(curvs, signs, kw, texts)

    def sign(self, signs, kw):
        kind = self.definiteness(kw["P"])
        return {"psd": Sign.NONNEG, "nsd": Sign.NONPOS}.get(kind, Sign.UNKNOWN)

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        return float(x @ np.asarray(kw["P"], dtype=float) @ x)

    def cvxpy(self, args, kw):
        import cvxpy as cp
        import numpy as np

        P = np.asarray(kw["P"], dtype=float)
        P = P / 2 + P.T / 2  # the symmetric part, without overflow for entries near 1e308
        if self.definiteness(P) == "nsd":
            return -cp.quad_form(args[0], cp.psd_wrap(-P))
        return cp.quad_form(args[0], cp.psd_wrap(P))

    def torch(self, args, kw):
        import torch

        x = args[0]
        P = torch.as_tensor(kw["P"], dtype=x.dtype, device=x.device)
        return x @ (P / 2 + P.T / 2) @ x


class ElasticNet(ScalarAtom):
    name = "elastic_net"
    train = TrainUse("elastic_net", options=(("a", 1.0), ("b", 1.0)), separable=True,
                     math="a ||x||_1 + (b/2) ||x||^2")
    torch_source = "a * x.abs().sum() + b / 2 * (x * x).sum()"
    doc = "a ||x||_1 + (b/2) ||x||_2^2 (a, b >= 0)"
    curvature = Curvature.CONVEX
    static = {"a": 1.0, "b": 1.0}
    prox = Prox("elastic_net", (("lam_l1", "a"), ("lam_l2", "b")))

    def shape(self, shapes, kw):
        if float(kw["a"]) < 0 or float(kw["b"]) < 0:
            raise ShapeError(f"elastic_net needs a, b >= 0, got a = {kw['a']}, b = {kw['b']}")
        return ()

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        return float(kw["a"] * np.abs(x).sum() + kw["b"] / 2 * (x * x).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        return float(kw["a"]) * cp.norm1(x) + float(kw["b"]) / 2 * cp.sum_squares(x)

    def torch(self, args, kw):
        x = args[0]
        return float(kw["a"]) * x.abs().sum() + float(kw["b"]) / 2 * (x * x).sum()


class GroupNorm(ScalarAtom):
    name = "group_norm"
    # training groups (rows, cols, channels, all, blocks(n, m)) of W.reshape(C_out, -1)
    train = TrainUse("group_l2", options=(("groups", "rows"),), math="sum_g sqrt(|g|) ||x_g||_2")
    doc = ("sum_g w_g ||x_g||_2 over disjoint groups: groups = rows | cols | labels (per entry, or per "
           "row of a matrix); weights w default to sqrt(|g|)")
    curvature = Curvature.CONVEX
    static = {"groups": None}
    tensor_kwargs = ("w",)
    positional_kw = ("groups", "w")
    prox = Prox("group_l2", (("groups", "groups"), ("weights", "w")))

    def shape(self, shapes, kw):
        labels, count = entry_labels(tuple(shapes[0]), kw["groups"])
        _weights_shape_ok(kw.get("w"), count, self.name)
        return ()

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def torch_source_for(self, kw):
        """Row (channel) or column groups of a matrix, default weights sqrt(|g|): the groupings
        training applies to W.reshape(C_out, -1); labels and blocks have no one-line form."""
        if kw.get("w") is not None:
            return None
        if kw.get("groups") in ("rows", "channels"):
            return "(x.shape[1] ** 0.5 * torch.linalg.vector_norm(x, dim=1)).sum()"
        if kw.get("groups") == "cols":
            return "(x.shape[0] ** 0.5 * torch.linalg.vector_norm(x, dim=0)).sum()"
        return None

    def prox_hyper(self, kw, shapes=()):
        groups = kw["groups"]
        hyper = {}
        if isinstance(groups, str):
            hyper["groups"] = groups
        else:
            labels, count = entry_labels(tuple(shapes[0]), groups)
            hyper["groups"] = labels.reshape(tuple(shapes[0]) or (1,))
            hyper["num_groups"] = count
        if kw.get("w") is not None:
            hyper["weights"] = kw["w"]
        return hyper

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        labels, count = entry_labels(x.shape, kw["groups"])
        norms = np.sqrt(np.bincount(labels, weights=(x * x).reshape(-1), minlength=count))
        w = np.sqrt(group_sizes(labels, count)) if kw.get("w") is None else np.asarray(kw["w"], dtype=float)
        return float((w * norms).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp
        import numpy as np

        x = args[0]
        shape = tuple(x.shape)
        groups = kw["groups"]
        if isinstance(groups, str) and len(shape) == 2 and groups in ("rows", "channels", "cols"):
            axis = 0 if groups == "cols" else 1
            norms = cp.norm(x, 2, axis=axis)
            # axis = 1: one norm per row, each over shape[1] entries; axis = 0: per column
            return _cvx_weighted_sum(norms, kw.get("w"), np.sqrt(shape[axis]) * np.ones(shape[1 - axis]))
        labels, count = entry_labels(shape, groups)
        sizes = group_sizes(labels, count)
        flat = cp.vec(x, order="C") if len(shape) > 1 else (x if shape else cp.reshape(x, (1,), order="C"))
        order = np.argsort(labels, kind="stable")
        if np.all(sizes == sizes[0]):
            # equal sizes: one gather and one reshape, then row norms (a single SOC block)
            blocks = cp.reshape(flat[order], (count, int(sizes[0])), order="C")
            norms = cp.norm(blocks, 2, axis=1)
        else:
            starts = np.concatenate([[0], np.cumsum(sizes).astype(int)])
            norms = cp.hstack([cp.norm(flat[order[starts[g]:starts[g + 1]]], 2) for g in range(count)])
        return _cvx_weighted_sum(norms, kw.get("w"), np.sqrt(sizes))

    def torch(self, args, kw):
        import torch

        x = args[0]
        labels, count = torch_entry_labels(x, kw["groups"])
        squares = torch.zeros(count, dtype=x.dtype, device=x.device).index_add_(0, labels, (x * x).reshape(-1))
        norms = squares.sqrt()
        w = kw.get("w")
        if w is None:
            sizes = torch.zeros(count, dtype=x.dtype, device=x.device).index_add_(
                0, labels, torch.ones_like(labels, dtype=x.dtype))
            w = sizes.sqrt()
        return (torch.as_tensor(w, dtype=x.dtype, device=x.device) * norms).sum()


class GroupL2(GroupNorm):
    name = "group_l2"
    doc = "alias of group_norm: sum_g w_g ||x_g||_2"


class Norm21(ScalarAtom):
    name = "norm_21"
    doc = "sum_i ||X[i, :]||_2 (axis = 1, rows; axis = 0 sums column norms)"
    curvature = Curvature.CONVEX
    static = {"axis": 1}
    prox = Prox("group_l2")

    def shape(self, shapes, kw):
        if len(shapes[0]) != 2:
            raise ShapeError(f"norm_21 needs a matrix, got shape {fmt(tuple(shapes[0]))}", arg=0)
        if kw["axis"] not in (0, 1):
            raise ShapeError(f"norm_21 takes axis = 1 (rows) or 0 (columns), got {kw['axis']}")
        return ()

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def prox_hyper(self, kw, shapes=()):
        import numpy as np

        rows, cols = shapes[0]
        return {"groups": "rows" if kw["axis"] == 1 else "cols",
                "weights": np.ones(rows if kw["axis"] == 1 else cols)}

    def numpy(self, args, kw):
        import numpy as np

        return float(np.linalg.norm(np.asarray(args[0], dtype=float), axis=kw["axis"]).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum(cp.norm(args[0], 2, axis=kw["axis"]))

    def torch(self, args, kw):
        import torch

        return torch.linalg.vector_norm(args[0], dim=kw["axis"]).sum()


class SumOfNorms(ScalarAtom):
    name = "sum_of_norms"
    doc = ("sum_(i,j) w_ij ||X[i, :] - X[j, :]||_2 over row pairs (P x 2 integer array, e.g. "
           "pairs = same(labels)); for a vector, sum w_ij |x_i - x_j|")
    curvature = Curvature.CONVEX
    static = {"pairs": None}
    tensor_kwargs = ("w",)
    positional_kw = ("pairs", "w")

    def shape(self, shapes, kw):
        x = tuple(shapes[0])
        if len(x) not in (1, 2):
            raise ShapeError(f"sum_of_norms needs a vector or a matrix, got shape {fmt(x)}", arg=0)
        pairs = check_pairs(kw["pairs"], x[0])
        _weights_shape_ok(kw.get("w"), len(pairs), "sum_of_norms (pairs)")
        return ()

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        pairs = check_pairs(kw["pairs"], x.shape[0])
        d = x[pairs[:, 0]] - x[pairs[:, 1]]
        norms = np.abs(d) if x.ndim == 1 else np.linalg.norm(d, axis=1)
        w = 1.0 if kw.get("w") is None else np.asarray(kw["w"], dtype=float)
        return float((w * norms).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        pairs = check_pairs(kw["pairs"], x.shape[0])
        if len(pairs) == 0:
            return cp.Constant(0.0)
        diffs = incidence(pairs, x.shape[0]) @ x
        norms = cp.abs(diffs) if len(x.shape) == 1 else cp.norm(diffs, 2, axis=1)
        return _cvx_weighted_sum(norms, kw.get("w"), 1.0)

    def torch(self, args, kw):
        import torch

        x = args[0]
        pairs = torch.as_tensor(kw["pairs"], device=x.device).long().reshape(-1, 2)
        d = x[pairs[:, 0]] - x[pairs[:, 1]]
        norms = d.abs() if x.dim() == 1 else torch.linalg.vector_norm(d, dim=1)
        w = kw.get("w")
        return norms.sum() if w is None else (torch.as_tensor(w, dtype=x.dtype, device=x.device) * norms).sum()


class ClassGroupL2(ScalarAtom):
    name = "class_group_l2"
    doc = "sum_j sum_c ||T[I_c, j]||_2: the group lasso of each class's block of each column (labels per row)"
    curvature = Curvature.CONVEX
    static = {"labels": None}
    positional_kw = ("labels",)
    prox = Prox("group_l2", (("groups", "labels"),))

    def _labels(self, shape, labels):
        if len(shape) != 2:
            raise ShapeError(f"class_group_l2 needs a matrix (rows = sources), got shape {fmt(tuple(shape))}", arg=0)
        if labels is None:
            raise ShapeError("class_group_l2 needs the row labels: class_group_l2(T, labels)")
        lab = as_int_array(labels, "labels").reshape(-1)
        if lab.size != shape[0]:
            raise ShapeError(f"class_group_l2 needs one label per row: {shape[0]} rows, {lab.size} labels")
        return lab

    def _entry_labels(self, shape, labels):
        import numpy as np

        lab = self._labels(shape, labels)
        _, rows = np.unique(lab, return_inverse=True)
        return (rows.reshape(-1, 1) * shape[1] + np.arange(shape[1])).reshape(-1)  # (class, column) groups

    def shape(self, shapes, kw):
        self._labels(tuple(shapes[0]), kw["labels"])
        return ()

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def prox_hyper(self, kw, shapes=()):
        import numpy as np

        labels, count = entry_labels(tuple(shapes[0]), self._entry_labels(tuple(shapes[0]), kw["labels"]))
        return {"groups": labels.reshape(tuple(shapes[0])), "weights": np.ones(count), "num_groups": count}

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        lab = self._labels(x.shape, kw["labels"])
        return float(sum(np.linalg.norm(x[lab == c], axis=0).sum() for c in np.unique(lab)))

    def cvxpy(self, args, kw):
        import cvxpy as cp
        import numpy as np

        x = args[0]
        lab = self._labels(tuple(x.shape), kw["labels"])
        return cp.sum(cp.hstack([cp.norm(x[np.flatnonzero(lab == c), :], 2, axis=0) for c in np.unique(lab)]))

    def torch(self, args, kw):
        import torch

        x = args[0]
        lab = kw["labels"]
        lab = lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else lab
        groups = torch.as_tensor(self._entry_labels(tuple(x.shape), lab), device=x.device)
        count = int(groups.max()) + 1 if groups.numel() else 0
        squares = torch.zeros(count, dtype=x.dtype, device=x.device).index_add_(0, groups, (x * x).reshape(-1))
        return squares.sqrt().sum()


class TV(ScalarAtom):
    name = "tv"
    doc = ("total variation. 1-D: sum_i w_i |x_{i+1} - x_i| (w: n-1 weights). 2-D: mode = \"iso\" "
           "(default, CVXPY's tv: sum over the (m-1) x (n-1) grid of ||(dx, dy)||_2) or \"aniso\" "
           "(sum |dx| + sum |dy| over all forward differences); 2-D weights are per pixel (m x n)")
    curvature = Curvature.CONVEX
    static = {"mode": "iso"}
    tensor_kwargs = ("w",)
    positional_kw = ("w",)

    def shape(self, shapes, kw):
        import numpy as np

        x = tuple(shapes[0])
        if len(x) not in (1, 2):
            raise ShapeError(f"tv needs a vector or a matrix (image), got shape {fmt(x)}", arg=0)
        if min(x) < 2:  # no neighbours to difference; a 1 x n image is written as a vector
            raise ShapeError(f"tv needs at least 2 entries along each axis (it sums differences of neighbours), "
                             f"got shape {fmt(x)}", arg=0)
        if kw["mode"] not in ("iso", "aniso"):
            raise ShapeError(f"tv takes mode = \"iso\" or \"aniso\", got {kw['mode']!r}")
        w = kw.get("w")
        if w is not None and np.ndim(w) != 0:
            want = (x[0] - 1,) if len(x) == 1 else x
            if tuple(np.shape(w)) != want:
                raise ShapeError(f"tv weights for an argument of shape {fmt(x)} have shape {want}, "
                                 f"got {fmt(tuple(np.shape(w)))}")
        return ()

    def numpy(self, args, kw):
        import numpy as np

        x = np.asarray(args[0], dtype=float)
        w = kw.get("w")
        if x.ndim == 1:
            return float(((1.0 if w is None else np.asarray(w)) * np.abs(np.diff(x))).sum())
        w = np.ones_like(x) if w is None else np.broadcast_to(np.asarray(w, dtype=float), x.shape)
        if kw["mode"] == "iso":
            dx, dy = x[1:, :-1] - x[:-1, :-1], x[:-1, 1:] - x[:-1, :-1]
            return float((w[:-1, :-1] * np.sqrt(dx * dx + dy * dy)).sum())
        return float((w[:-1, :] * np.abs(np.diff(x, axis=0))).sum() + (w[:, :-1] * np.abs(np.diff(x, axis=1))).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        w = kw.get("w")
        if len(x.shape) == 1:
            d = cp.diff(x)
            return cp.norm1(d) if w is None else cp.norm1(cp.multiply(w, d))
        if kw["mode"] == "iso":
            if w is None:
                return cp.tv(x)
            dx, dy = x[1:, :-1] - x[:-1, :-1], x[:-1, 1:] - x[:-1, :-1]
            grad = cp.vstack([cp.vec(dx, order="C"), cp.vec(dy, order="C")])
            wi = w[:-1, :-1]
            return cp.sum(cp.multiply(cp.vec(wi, order="C"), cp.norm(grad, 2, axis=0)))
        dv, dh = x[1:, :] - x[:-1, :], x[:, 1:] - x[:, :-1]
        if w is None:
            return cp.sum(cp.abs(dv)) + cp.sum(cp.abs(dh))
        return cp.sum(cp.abs(cp.multiply(w[:-1, :], dv))) + cp.sum(cp.abs(cp.multiply(w[:, :-1], dh)))

    def torch(self, args, kw):
        import torch

        x = args[0]
        w = kw.get("w")
        w = None if w is None else torch.as_tensor(w, dtype=x.dtype, device=x.device)
        if x.dim() == 1:
            d = (x[1:] - x[:-1]).abs()
            return d.sum() if w is None else (w * d).sum()
        if w is None:
            w = torch.ones_like(x)
        w = w.expand_as(x)
        if kw["mode"] == "iso":
            dx, dy = x[1:, :-1] - x[:-1, :-1], x[:-1, 1:] - x[:-1, :-1]
            return (w[:-1, :-1] * torch.sqrt(dx * dx + dy * dy)).sum()
        return (w[:-1, :] * (x[1:, :] - x[:-1, :]).abs()).sum() + (w[:, :-1] * (x[:, 1:] - x[:, :-1]).abs()).sum()


NORM_CLASSES = [NormInf, Huber, QuadForm, ElasticNet, GroupNorm, GroupL2, Norm21, SumOfNorms, ClassGroupL2, TV]
