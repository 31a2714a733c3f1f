"""Groupings for group norms and pair lists for fusion terms, in one canonical form.

A grouping is the symbol ``rows`` / ``channels`` / ``cols`` / ``all`` or an integer label array.
Labels apply per entry (same number of entries as the argument) or, for a matrix, per row. The
canonical form is one contiguous label in ``0..G-1`` per entry, in C order: every backend works
from it, so a grouping means the same on CVXPY, numpy and torch.
"""
from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from regspec.compiler.catalogue.base import Shape, ShapeError

GROUP_SYMBOLS = ("rows", "channels", "cols", "all")


def as_int_array(value: Any, what: str, arg: int | None = None) -> np.ndarray:
    """An integer array from labels given as ints, integral floats or booleans."""
    arr = np.asarray(value)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if (arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
            and np.all(np.abs(arr) < 2 ** 53)):  # whole numbers int64 holds exactly; larger ones would wrap
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and arr.size == 0:
        return arr.astype(np.int64)
    raise ShapeError(f"{what} must be integer labels, got values of type {arr.dtype}", arg=arg)


def entry_labels(shape: Shape, groups: Any) -> tuple[np.ndarray, int]:
    """Per-entry labels (flat, C order, contiguous 0..G-1) and the number of groups G."""
    n = prod(shape) if shape else 1
    if groups is None:
        raise ShapeError("needs `groups = ...`: rows, cols, or an integer label array")
    if isinstance(groups, str):
        if groups not in GROUP_SYMBOLS:
            raise ShapeError(f"unknown grouping `{groups}`; use rows, cols, channels, all or integer labels")
        rows = shape[0] if shape else 1
        width = n // rows if rows else 0
        if groups in ("rows", "channels"):
            return np.repeat(np.arange(rows), width), rows
        if groups == "cols":
            return np.tile(np.arange(width), rows), width
        return np.zeros(n, dtype=np.int64), 1
    labels = as_int_array(groups, "groups")
    if labels.size == n and (labels.ndim <= 1 or tuple(labels.shape) == tuple(shape)):
        flat = labels.reshape(-1)
    elif len(shape) >= 2 and labels.ndim == 1 and labels.size == shape[0]:
        flat = np.repeat(labels, n // shape[0])
    else:
        raise ShapeError(f"{labels.size} group labels fit neither the {n} entries nor the "
                         f"{shape[0] if shape else 1} rows of an argument of shape {tuple(shape)}")
    uniq, inverse = np.unique(flat, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), len(uniq)


def group_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(labels, minlength=count).astype(float)


def check_pairs(pairs: Any, rows: int) -> np.ndarray:
    """A (P, 2) integer array of row pairs, each index in range."""
    if pairs is None:
        raise ShapeError("needs `pairs = ...`, e.g. pairs = same(labels)")
    arr = as_int_array(pairs, "pairs")
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ShapeError(f"pairs must be an array of shape (P, 2), got {tuple(arr.shape)}")
    if arr.min() < 0 or arr.max() >= rows:
        raise ShapeError(f"pair indices must lie in 0..{rows - 1} (the rows of the argument), "
                         f"got {arr.min()}..{arr.max()}")
    return arr


def incidence(pairs: np.ndarray, rows: int):
    """The sparse pair incidence B (P x rows): (B @ X)[p] = X[i_p] - X[j_p]."""
    import scipy.sparse as sp

    count = len(pairs)
    data = np.concatenate([np.ones(count), -np.ones(count)])
    rows_idx = np.concatenate([np.arange(count), np.arange(count)])
    cols_idx = np.concatenate([pairs[:, 0], pairs[:, 1]])
    return sp.csr_matrix((data, (rows_idx, cols_idx)), shape=(count, rows))


def torch_entry_labels(x: Any, groups: Any) -> tuple[Any, int]:
    """Canonical per-entry labels as a LongTensor on x's device (groups: symbol, tensor or array)."""
    import torch

    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    labels, count = entry_labels(tuple(x.shape), groups)
    return torch.as_tensor(labels, device=x.device), count
