"""Transport problems shared by the stopping-rule and auto-choice tests: seeded data written to
``ot.npz`` beside a spec that loads it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import regspec

EXACT_OT = """problem exact_ot {
  data C = load("ot.npz", "C")
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  var P[rows(C), cols(C)] in transport(a, b)
  minimize sum(C * P)
}
"""

CLASS_OT = """problem class_ot {
  data C = load("ot.npz", "C")
  data a = load("ot.npz", "a")
  data b = load("ot.npz", "b")
  data labels = load("ot.npz", "labels")
  param rho = 0.01 >= 0
  var P[rows(C), cols(C)] >= 0
  minimize sum(C * P) + rho * sum_of_norms(P, pairs = same(labels))
  subject to {
    sum(P, axis = 1) == a
    sum(P, axis = 0) == b
  }
}
"""


def ot_data(n: int, seed: int = 0, classes: int = 3) -> dict[str, np.ndarray]:
    """Squared distances between two seeded point clouds (scaled to max 1), uniform marginals,
    ``classes`` contiguous source classes."""
    rng = np.random.default_rng(seed)
    xs, xt = rng.standard_normal((n, 2)), rng.standard_normal((n, 2)) + 1.0
    C = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    return {"C": C / C.max(), "a": np.full(n, 1.0 / n), "b": np.full(n, 1.0 / n),
            "labels": np.repeat(np.arange(classes), -(-n // classes))[:n].astype(np.int64)}


def write_ot(folder: Path, n: int, text: str, classes: int = 3) -> tuple[regspec.Spec, dict[str, np.ndarray]]:
    """``text`` as ``folder/p.reg`` with its data in ``folder/ot.npz``; the loaded spec and the data."""
    d = ot_data(n, classes=classes)
    np.savez(folder / "ot.npz", **d)
    (folder / "p.reg").write_text(text)
    return regspec.load(folder / "p.reg"), d
