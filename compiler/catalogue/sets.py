"""Sets for ``var x in SET``, domains (``>= 0``) and ``constrain T in SET``. One class per set."""
from __future__ import annotations

from typing import Any

from regspec.compiler.catalogue.base import SetEntry, ShapeError


class Nonneg(SetEntry):
    name = "nonneg"
    doc = "x >= 0"
    projection = "nonneg"

    def cvxpy(self, x, kw):
        return [x >= 0]


class Nonpos(SetEntry):
    name = "nonpos"
    doc = "x <= 0"
    projection = "box"

    def cvxpy(self, x, kw):
        return [x <= 0]

    def kernel_hyper(self, kw):
        return {"lo": None, "hi": 0.0}


class Box(SetEntry):
    name = "box"
    doc = "lo <= x <= hi (either bound may be omitted)"
    static = {"lo": None, "hi": None}
    positional = ("lo", "hi")
    projection = "box"

    def cvxpy(self, x, kw):
        out = []
        if kw.get("lo") is not None:
            out.append(x >= kw["lo"])
        if kw.get("hi") is not None:
            out.append(x <= kw["hi"])
        return out


class Simplex(SetEntry):
    name = "simplex"
    doc = "x >= 0, sum(x) = r (r = 1 by default)"
    static = {"r": 1.0}
    positional = ("r",)
    projection = "simplex"

    def check_shape(self, shape, kw):
        if len(shape) != 1:
            raise ShapeError("simplex applies to vectors")

    def cvxpy(self, x, kw):
        import cvxpy as cp

        return [x >= 0, cp.sum(x) == kw["r"]]


SET_CLASSES: list[type[SetEntry]] = [Nonneg, Nonpos, Box, Simplex]
