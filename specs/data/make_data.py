"""Regenerate the small data files of specs/ that the .reg language cannot build from seeded
generators. Run from anywhere: ``python specs/data/make_data.py``; the outputs are committed.

metric_nearness.npz (CATALOGUE X15, "Project and Forget"): 12 points uniform in the unit square
(default_rng(1)); their distances times (1 + 0.5 N(0, 1)) noise from the same stream, in absolute
value; the upper triangle is kept and mirrored, so D is symmetric with a zero diagonal but
generally violates the triangle inequality.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def metric_nearness(n: int = 12, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.uniform(size=(n, 2))
    dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    noisy = np.abs(dist * (1 + 0.5 * rng.standard_normal((n, n))))
    upper = np.triu(noisy, 1)
    return upper + upper.T


def main() -> None:
    np.savez(HERE / "metric_nearness.npz", D=metric_nearness())


if __name__ == "__main__":
    main()
