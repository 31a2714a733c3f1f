"""Compile-time builders: pair lists for fusion terms (``same(labels)``). They fold to integer
arrays before any backend sees them, so they have no CVXPY or torch lowering."""
from __future__ import annotations

from regspec.compiler.catalogue.base import Atom, Curvature, ShapeError
from regspec.compiler.catalogue.groups import as_int_array


class Same(Atom):
    name = "same"
    doc = "all row pairs (i, j), i < j, with equal labels: an (npairs, 2) integer array (compile time)"
    constant_only = True
    curvature = Curvature.CONSTANT
    lacks = {"cvxpy": "compile-time only: folded to a pair array", "torch": "compile-time only: folded to a pair array"}

    def shape(self, shapes, kw):
        # the number of pairs depends on the labels' values; constant folding always supplies them
        raise ShapeError("same(labels) is evaluated at compile time from data labels")

    def numpy(self, args, kw):
        import numpy as np

        labels = as_int_array(args[0], "same(labels)").reshape(-1)
        i, j = np.triu_indices(labels.size, k=1)
        keep = labels[i] == labels[j]
        return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


BUILDER_CLASSES = [Same]
