"""Atoms: operators, reductions and the starter convex atoms. One class per atom.

Each class states its math (shape, sign, curvature, monotonicity) and its lowerings. Torch and
CVXPY are imported inside the lowering methods only.
"""
from __future__ import annotations

from typing import Any, Sequence

from regspec.compiler.catalogue.base import (Atom, Curvature, Elementwise, Mono, Prox, ScalarAtom, Shape,
                                             ShapeError, Sign, TrainUse, norm_of_abs_mono)
from regspec.compiler.catalogue.dcp import scale


def broadcast(shapes: Sequence[Shape]) -> Shape:
    """NumPy broadcasting of shapes; ShapeError names the first argument that does not fit."""
    out: list[int] = []
    for i, s in enumerate(shapes):
        a, b = list(out), list(s)
        n = max(len(a), len(b))
        a = [1] * (n - len(a)) + a
        b = [1] * (n - len(b)) + b
        merged = []
        for x, y in zip(a, b):
            if x != y and 1 not in (x, y):
                raise ShapeError(f"shapes {fmt(tuple(out))} and {fmt(tuple(s))} do not broadcast", arg=i)
            merged.append(y if x == 1 else x)  # 1 against 0 is 0, as in NumPy
        out = merged
    return tuple(out)


def cvxpy_broadcast(args: Sequence[Any]) -> list[Any]:
    """The operands of an elementwise CVXPY operator expanded to their broadcast shape: constants
    by NumPy, a row or column expression by a product with a vector of ones (CVXPY's own
    broadcasting of a (k,) against an (m, k) goes through broadcast_to, which its C++
    canonicalization lacks: a UserWarning on the user's terminal and the slow SciPy path)."""
    import numpy as np

    shapes = [tuple(getattr(a, "shape", ())) for a in args]
    out = broadcast(shapes)
    if len(out) != 2 or all(s == out or s == () for s in shapes):
        return list(args)
    import cvxpy as cp

    expanded = []
    for a, s in zip(args, shapes):
        if s == out or s == ():
            expanded.append(a)
        elif not isinstance(a, cp.Expression):
            expanded.append(np.broadcast_to(np.asarray(a), out))
        else:
            row = cp.reshape(a, (1, s[-1]) if len(s) == 1 else s, order="C")
            if row.shape[0] != out[0]:
                row = np.ones((out[0], 1)) @ row
            if row.shape[1] != out[1]:
                row = row @ np.ones((1, out[1]))
            expanded.append(row)
    return expanded


def fmt(shape: Shape) -> str:
    return "scalar" if shape == () else str(tuple(shape))


def reduce_shape(shape: Shape, axis: int | None) -> Shape:
    if axis is None:
        return ()
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(f"axis {axis} is out of range for an argument of shape {fmt(shape)}", arg=0)
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1:]


def axis_norm_shape(name: str, shape: Shape, axis: int | None) -> Shape:
    """Shape of a norm over all entries (scalar) or along an axis of a vector or matrix."""
    if axis is not None and len(shape) > 2:
        raise ShapeError(f"{name} takes an axis for a vector or a matrix, got shape {fmt(shape)}", arg=0)
    return reduce_shape(shape, axis)


# ------------------------------------------------------------------ operators
class Add(Atom):
    name = "add"
    torch_source = "x + y"
    doc = "a + b, elementwise with broadcasting"
    nargs = (2, 2)
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        return broadcast(shapes)

    def sign(self, signs, kw):
        return signs[0] + signs[1]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        return args[0] + args[1]

    torch = numpy

    def cvxpy(self, args, kw):
        return self.numpy(cvxpy_broadcast(args), kw)


class Sub(Add):
    name = "sub"
    torch_source = "x - y"
    doc = "a - b, elementwise with broadcasting"

    def sign(self, signs, kw):
        return signs[0] + (-signs[1])

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING if i == 0 else Mono.DECREASING

    def numpy(self, args, kw):
        return args[0] - args[1]

    torch = numpy

    def cvxpy(self, args, kw):
        return self.numpy(cvxpy_broadcast(args), kw)


class Neg(Atom):
    name = "neg"
    torch_source = "-x"
    doc = "-a"
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        return shapes[0]

    def sign(self, signs, kw):
        return -signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.DECREASING

    def numpy(self, args, kw):
        return -args[0]

    cvxpy = torch = numpy


class _Product(Atom):
    """Shared DCP rule for products: one factor must be constant (a parameter counts as constant)."""

    nargs = (2, 2)
    curvature = Curvature.AFFINE
    smooth = True
    symbol = "*"

    def dcp(self, curvs, signs, kw, texts):
        a, b = curvs
        if a is Curvature.CONSTANT:
            return scale(b, signs[0]), (None if scale(b, signs[0]) is not Curvature.UNKNOWN else
                                        f"`{texts[1]}` is {b.value} and is multiplied by `{texts[0]}`, "
                                        "whose sign is unknown")
        if b is Curvature.CONSTANT:
            return scale(a, signs[1]), (None if scale(a, signs[1]) is not Curvature.UNKNOWN else
                                        f"`{texts[0]}` is {a.value} and is multiplied by `{texts[1]}`, "
                                        "whose sign is unknown")
        return Curvature.UNKNOWN, (f"the product `{texts[0]} {self.symbol} {texts[1]}` of two non-constant "
                                   "expressions is not DCP (one factor must be a constant or a parameter)")

    def sign(self, signs, kw):
        return signs[0] * signs[1]


class Multiply(_Product):
    name = "multiply"
    torch_source = "x * y"
    doc = "a * b, elementwise with broadcasting"

    def shape(self, shapes, kw):
        return broadcast(shapes)

    def numpy(self, args, kw):
        return args[0] * args[1]

    torch = numpy

    def cvxpy(self, args, kw):
        import cvxpy as cp

        a, b = cvxpy_broadcast(args)
        if getattr(a, "shape", ()) == () or getattr(b, "shape", ()) == ():
            return a * b
        return cp.multiply(a, b)


class Divide(_Product):
    name = "divide"
    torch_source = "x / y"
    doc = "a / b, b constant"
    symbol = "/"

    def shape(self, shapes, kw):
        return broadcast(shapes)

    def dcp(self, curvs, signs, kw, texts):
        if curvs[1] is not Curvature.CONSTANT:
            return Curvature.UNKNOWN, (f"division by `{texts[1]}`, which is not a constant, is not DCP "
                                       f"(for 1 / {texts[1]} with {texts[1]} > 0 write inv_pos({texts[1]}), as in CVXPY)")
        return super().dcp(curvs, signs, kw, texts)

    def sign(self, signs, kw):
        return signs[0] * signs[1]

    def numpy(self, args, kw):
        return args[0] / args[1]

    torch = numpy

    def cvxpy(self, args, kw):
        return self.numpy(cvxpy_broadcast(args), kw)


class MatMul(_Product):
    name = "matmul"
    torch_source = "x @ y"
    doc = "a @ b, matrix product"
    symbol = "@"

    def shape(self, shapes, kw):
        a, b = shapes
        if a == () or b == ():
            raise ShapeError("`@` needs arrays, not scalars (use `*` to scale)", arg=0 if a == () else 1)
        ka = a[-1]
        kb = b[0] if len(b) == 1 else b[-2]
        if ka != kb:
            raise ShapeError(f"`@` of shapes {fmt(a)} and {fmt(b)}: inner dimensions {ka} and {kb} differ", arg=1)
        if len(a) > 2 or len(b) > 2:
            raise ShapeError("`@` supports vectors and matrices only", arg=0 if len(a) > 2 else 1)
        return a[:-1] + b[1:] if len(b) == 2 else a[:-1]

    def sign(self, signs, kw):
        s = signs[0] * signs[1]
        return s if s is not Sign.NONPOS else Sign.UNKNOWN  # sums of nonpositive products flip

    def numpy(self, args, kw):
        return args[0] @ args[1]

    torch = cvxpy = numpy


class Power(Atom):
    name = "power"
    torch_source = "x ** y"
    doc = "x ** p, p a constant; convex for p >= 1 (p even or x >= 0), concave for 0 <= p <= 1"
    nargs = (2, 2)
    smooth = True

    def shape(self, shapes, kw):
        if shapes[1] != ():
            raise ShapeError("the exponent of `**` must be a scalar", arg=1)
        return shapes[0]

    def dcp(self, curvs, signs, kw, texts):
        if curvs[1] is not Curvature.CONSTANT:
            return Curvature.UNKNOWN, f"the exponent `{texts[1]}` must be a constant"
        if curvs[0] is Curvature.CONSTANT:
            return Curvature.CONSTANT, None
        p = kw.get("_exponent")
        if p is None:
            return Curvature.UNKNOWN, f"the exponent `{texts[1]}` must be a number known at compile time"
        if p == 1:
            return curvs[0], None
        if p == 0:
            return Curvature.CONSTANT, None
        from regspec.compiler.catalogue.dcp import compose

        if p > 1 or p < 0:
            even = float(p).is_integer() and int(p) % 2 == 0
            mono = norm_of_abs_mono(signs) if even else (Mono.INCREASING if p > 1 else Mono.DECREASING)
            if not even and not signs[0].nonneg and p > 1:
                return Curvature.UNKNOWN, (f"`{texts[0]} ** {p:g}` is convex only for a nonnegative base; "
                                           "use abs(...) or declare the variable >= 0")
            return compose("power", Curvature.CONVEX, [mono], curvs[:1], texts[:1])
        return compose("power", Curvature.CONCAVE, [Mono.INCREASING], curvs[:1], texts[:1])

    def prox_for(self, kw) -> Prox | None:
        """The prox of sum(x ** p) by exponent: p < 0 on x > 0, |x|^p for an even p, x^p on x >= 0
        for another p > 1; none for 0 <= p <= 1 (affine or concave)."""
        p = kw.get("_exponent")
        if p is None or 0 <= float(p) <= 1:
            return None
        if float(p) < 0:
            return Prox("neg_power", (("p", "_exponent"),))
        even = float(p).is_integer() and int(p) % 2 == 0
        return Prox("power_abs" if even else "power_nonneg", (("p", "_exponent"),))

    def sign(self, signs, kw):
        p = kw.get("_exponent")
        if p is not None and float(p).is_integer() and int(p) % 2 == 0:
            return Sign.NONNEG
        return signs[0] if signs[0].nonneg else Sign.UNKNOWN

    def numpy(self, args, kw):
        return args[0] ** args[1]

    torch = numpy

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x, p = args
        if isinstance(x, cp.Expression):
            return cp.power(x, float(kw["_exponent"]))
        return x ** p


class Transpose(Atom):
    name = "transpose"
    torch_source = "x.T if x.dim() == 2 else x"
    doc = "X.T"
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        return tuple(reversed(shapes[0]))

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        return args[0].T

    cvxpy = numpy

    def torch(self, args, kw):
        x = args[0]
        return x.T if x.dim() == 2 else x


class Sum(Atom):
    name = "sum"
    torch_source = "x.sum()"
    cvxpy_notes = {"sum_entries": "CVXPY's old sum_entries(x) is sum(x)"}
    doc = "sum of entries, or along an axis"
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
        return args[0].sum(axis=kw["axis"])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum(args[0], axis=kw["axis"])

    def torch(self, args, kw):
        return args[0].sum() if kw["axis"] is None else args[0].sum(dim=kw["axis"])


class SumSquares(ScalarAtom):
    name = "sum_squares"
    train = TrainUse("sum_squares", ("param", "act", "output"), separable=True,
                     math="||x||^2 (activations: the batch mean of per-sample values)")
    torch_source = "(x * x).sum()"
    doc = "||x||_2^2 = sum of squared entries"
    curvature = Curvature.CONVEX
    smooth = True
    prox = Prox("sum_squares")

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        return float((args[0] ** 2).sum())

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sum_squares(args[0])

    def torch(self, args, kw):
        return (args[0] * args[0]).sum()


class Norm1(ScalarAtom):
    name = "norm1"
    aliases = ("l1",)
    train = TrainUse("l1", ("param", "act", "output"), separable=True,
                     math="sum_i |x_i| (activations: the batch mean of per-sample values)")
    torch_source = "x.abs().sum()"
    doc = "sum_i w_i |x_i| (w >= 0, default 1), over all entries or along an axis"
    curvature = Curvature.CONVEX
    static = {"axis": None}
    tensor_kwargs = ("w",)
    # the prox is the whole-tensor one; with an axis the atom is not scalar, so never a term's core
    prox = Prox("l1", (("weight", "w"),))

    def shape(self, shapes, kw):
        return axis_norm_shape(self.name, shapes[0], kw.get("axis"))

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        w = kw.get("w")
        value = (np.abs(args[0]) * (1 if w is None else w)).sum(axis=kw.get("axis"))
        return float(value) if kw.get("axis") is None else value

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        w = kw.get("w")
        x = x if w is None else cp.multiply(w, x)
        if kw.get("axis") is None:
            return cp.norm1(x)
        return cp.sum(cp.abs(x), axis=kw["axis"] % len(x.shape))

    def torch(self, args, kw):
        x = args[0]
        w = kw.get("w")
        value = x.abs() if w is None else w * x.abs()
        return value.sum() if kw.get("axis") is None else value.sum(dim=kw["axis"])


class Norm2(ScalarAtom):
    name = "norm2"
    aliases = ("l2",)
    train = TrainUse("l2", math="||x||_2 (whole tensor)")
    torch_source = "x.square().sum().sqrt()"
    doc = "||x||_2 (Frobenius norm for a matrix), or the 2-norms along an axis"
    curvature = Curvature.CONVEX
    static = {"axis": None}
    prox = Prox("l2")  # whole-tensor; with an axis the atom is not scalar, so never a term's core

    def shape(self, shapes, kw):
        return axis_norm_shape(self.name, shapes[0], kw.get("axis"))

    def monotonicity(self, i, signs, kw):
        return norm_of_abs_mono(signs)

    def numpy(self, args, kw):
        import numpy as np

        value = np.sqrt((np.asarray(args[0]) ** 2).sum(axis=kw.get("axis")))
        return float(value) if kw.get("axis") is None else value

    def cvxpy(self, args, kw):
        import cvxpy as cp

        x = args[0]
        if kw.get("axis") is None or len(x.shape) == 1:
            return cp.norm(cp.vec(x, order="C") if len(x.shape) > 1 else x, 2)
        return cp.norm(x, 2, axis=kw["axis"] % len(x.shape))

    def torch(self, args, kw):
        x = args[0]
        if kw.get("axis") is None:
            return x.square().sum().sqrt()
        return x.square().sum(dim=kw["axis"]).sqrt()


# ------------------------------------------------------------------ compile-time helpers
class Rows(Atom):
    name = "rows"
    doc = "number of rows of a data array (compile time)"
    constant_only = True
    curvature = Curvature.CONSTANT
    lacks = {"cvxpy": "compile-time only: folded to a number", "torch": "compile-time only: folded to a number"}

    def numpy(self, args, kw):
        a = args[0]
        return int(a.shape[0]) if getattr(a, "ndim", 0) >= 1 else 1


class Cols(Rows):
    name = "cols"
    doc = "number of columns of a data array (1 for a vector; compile time)"

    def numpy(self, args, kw):
        a = args[0]
        return int(a.shape[1]) if getattr(a, "ndim", 0) >= 2 else 1


class Sqrt(Elementwise):
    name = "sqrt"
    doc = "elementwise square root, concave and increasing on x >= 0"
    curvature = Curvature.CONCAVE
    smooth = True

    def sign(self, signs, kw):
        return Sign.NONNEG

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        return np.sqrt(args[0])

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.sqrt(args[0])

    def torch(self, args, kw):
        return args[0].sqrt()


class Max(Atom):
    name = "max"
    cvxpy_notes = {"maximum": "CVXPY's maximum(a, b) is max(a, b) here (max(x) alone is the largest entry)",
                   "max_entries": "CVXPY's old max_entries(x) is max(x)"}
    doc = "max(x): largest entry (convex, increasing); max(a, b, ...): elementwise maximum"
    curvature = Curvature.CONVEX
    nargs = (1, 16)
    static = {"axis": None}

    def shape(self, shapes, kw):
        return reduce_shape(shapes[0], kw["axis"]) if len(shapes) == 1 else broadcast(shapes)

    def sign(self, signs, kw):
        if any(s is Sign.NONNEG for s in signs):
            return Sign.NONNEG
        return signs[0] if len(signs) == 1 else Sign.UNKNOWN

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        import numpy as np

        if len(args) == 1:
            return np.max(args[0], axis=kw["axis"])
        out = args[0]
        for a in args[1:]:
            out = np.maximum(out, a)
        return out

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.max(args[0], axis=kw["axis"]) if len(args) == 1 else cp.maximum(*args)

    def torch(self, args, kw):
        import torch

        if len(args) == 1:
            return args[0].max() if kw["axis"] is None else args[0].amax(dim=kw["axis"])
        ref = next(a for a in args if isinstance(a, torch.Tensor))
        out = torch.as_tensor(args[0], dtype=ref.dtype, device=ref.device)
        for a in args[1:]:
            out = torch.maximum(out, torch.as_tensor(a, dtype=ref.dtype, device=ref.device))
        return out


class Min(Max):
    name = "min"
    cvxpy_notes = {"minimum": "CVXPY's minimum(a, b) is min(a, b) here (min(x) alone is the smallest entry)",
                   "min_entries": "CVXPY's old min_entries(x) is min(x)"}
    doc = "min(x): smallest entry (concave, increasing); min(a, b, ...): elementwise minimum"
    curvature = Curvature.CONCAVE

    def sign(self, signs, kw):
        if any(s is Sign.NONPOS for s in signs):
            return Sign.NONPOS
        return Sign.NONNEG if all(s.nonneg for s in signs) else Sign.UNKNOWN

    def numpy(self, args, kw):
        import numpy as np

        if len(args) == 1:
            return np.min(args[0], axis=kw["axis"])
        out = args[0]
        for a in args[1:]:
            out = np.minimum(out, a)
        return out

    def cvxpy(self, args, kw):
        import cvxpy as cp

        return cp.min(args[0], axis=kw["axis"]) if len(args) == 1 else cp.minimum(*args)

    def torch(self, args, kw):
        import torch

        if len(args) == 1:
            return args[0].min() if kw["axis"] is None else args[0].amin(dim=kw["axis"])
        ref = next(a for a in args if isinstance(a, torch.Tensor))
        out = torch.as_tensor(args[0], dtype=ref.dtype, device=ref.device)
        for a in args[1:]:
            out = torch.minimum(out, torch.as_tensor(a, dtype=ref.dtype, device=ref.device))
        return out


ATOM_CLASSES: list[type[Atom]] = [Add, Sub, Neg, Multiply, Divide, MatMul, Power, Transpose, Sum, SumSquares,
                                  Norm1, Norm2, Rows, Cols, Sqrt, Max, Min]


class Index(Atom):
    """``x[key]``: the key (ints, slices, boolean masks, integer arrays) is folded at compile time
    into the static keyword ``_key``, a tuple NumPy, CVXPY and torch all understand."""

    name = "index"
    doc = "x[i, j], slices and boolean masks"
    static = {"_key": ()}
    curvature = Curvature.AFFINE
    smooth = True

    def shape(self, shapes, kw):
        import numpy as np

        try:
            return tuple(np.empty(shapes[0], dtype=np.int8)[kw["_key"]].shape)
        except IndexError as e:
            raise ShapeError(f"index out of range for shape {fmt(shapes[0])}: {e}", arg=0) from None

    def sign(self, signs, kw):
        return signs[0]

    def monotonicity(self, i, signs, kw):
        return Mono.INCREASING

    def numpy(self, args, kw):
        return args[0][kw["_key"]]

    def cvxpy(self, args, kw):
        # CVXPY follows NumPy's indexing: slices, integer arrays (several of them broadcast
        # together) and boolean masks of any rank, so the folded key passes through unchanged.
        return args[0][kw["_key"]]

    def torch(self, args, kw):
        import numpy as np
        import torch

        key = tuple(torch.as_tensor(k, device=args[0].device) if isinstance(k, np.ndarray) else k
                    for k in kw["_key"])
        return args[0][key]


ATOM_CLASSES.append(Index)


class Compare(Atom):
    """``a == b``, ``a != b``, ``a <= b``, ``a >= b``, ``a < b``, ``a > b`` between data, folded at
    compile time to a boolean mask (``P[labels == k, :]``, ``let known = K > 0.4``); comparisons
    of variables are constraints, not atoms."""

    name = "compare"
    doc = "elementwise comparison of constants (masks)"
    nargs = (2, 2)
    static = {"op": "=="}
    constant_only = True
    curvature = Curvature.CONSTANT
    lacks = {"cvxpy": "compile-time only: folded to a mask", "torch": "compile-time only: folded to a mask"}

    def shape(self, shapes, kw):
        return broadcast(shapes)

    def numpy(self, args, kw):
        import numpy as np

        a, b = np.asarray(args[0]), np.asarray(args[1])
        return {"==": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b}[kw["op"]]


ATOM_CLASSES.append(Compare)
