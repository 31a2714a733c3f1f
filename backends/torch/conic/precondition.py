"""Diagonal preconditioning of ``b - A x in K``: ``A~ = D_r A D_c``, ``b~ = D_r b``, ``c~ = D_c c``
(so ``x = D_c x~``, ``y = D_r y~``), as PDLP does it: a few Ruiz passes (equilibrate the
infinity norms of rows and columns), then one Pock-Chambolle pass with alpha = 1 (rows and columns
divided by the square roots of their l1 norms). A row scaling keeps ``K`` only if it is one positive
number per cone block for the second-order, PSD and exponential cones (the zero and nonnegative
parts take any positive diagonal), so those rows share the largest of their blocks' norms."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

RUIZ_PASSES = 10


@dataclass
class Scaling:
    row: np.ndarray   # D_r
    col: np.ndarray   # D_c


def _block_max(values: np.ndarray, block_ids: np.ndarray) -> np.ndarray:
    out = np.zeros(int(block_ids.max()) + 1 if block_ids.size else 0)
    np.maximum.at(out, block_ids, values)
    return out[block_ids]


def _inverse_sqrt(norms: np.ndarray) -> np.ndarray:
    """1 / sqrt(norm), 1 where the norm is zero (an empty row or column stays as it is)."""
    out = np.ones_like(norms)
    nz = norms > 0
    out[nz] = 1.0 / np.sqrt(norms[nz])
    return out


def precondition(A: sp.csr_matrix, block_ids: np.ndarray, ruiz_passes: int = RUIZ_PASSES) -> Scaling:
    """Row and column scalings for ``A`` (rows grouped by ``block_ids``, see the module docstring)."""
    m, n = A.shape
    row, col = np.ones(m), np.ones(n)
    absA = abs(A).tocsr()
    for _ in range(ruiz_passes):
        S = sp.diags(row) @ absA @ sp.diags(col)
        r = _block_max(np.asarray(S.max(axis=1).todense()).ravel(), block_ids)
        c = np.asarray(S.max(axis=0).todense()).ravel()
        row *= _inverse_sqrt(r)
        col *= _inverse_sqrt(c)
    S = sp.diags(row) @ absA @ sp.diags(col)
    r = _block_max(np.asarray(S.sum(axis=1)).ravel(), block_ids)
    c = np.asarray(S.sum(axis=0)).ravel()
    row *= _inverse_sqrt(r)
    col *= _inverse_sqrt(c)
    return Scaling(row, col)
