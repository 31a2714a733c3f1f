"""Data sources for ``data NAME[, NAME...] = SOURCE``: files, scikit-learn's bundled sets, seeded
generators. Every source returns a tuple of numpy arrays; errors name the file and the declaration."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from regspec.diagnostics import Span, did_you_mean, error

SOURCES: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {}


def source(fn: Callable[..., tuple[np.ndarray, ...]]) -> Callable[..., tuple[np.ndarray, ...]]:
    SOURCES[fn.__name__] = fn
    return fn


class SourceContext:
    """What a source needs besides its arguments: the spec's folder and the span to blame."""

    def __init__(self, base_dir: Path, span: Span | None):
        self.base_dir = base_dir
        self.span = span

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.base_dir / p

    def fail(self, message: str, notes: list[str] | None = None) -> Exception:
        return error(message, self.span, notes or [])


@source
def load(ctx: SourceContext, file: str, key: str | None = None) -> tuple[np.ndarray, ...]:
    """``load("f.npz", "key")``, ``load("f.npz")`` (all arrays, in file order), ``load("f.npy")``."""
    path = ctx.path(file)
    if not path.exists():
        raise ctx.fail(f"data file not found: {path}")
    try:
        if path.suffix == ".npy":
            if key is not None:
                raise ctx.fail(f"{path} is a .npy file with one array; it takes no key")
            return (np.load(path, allow_pickle=False),)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key is None:
                    return tuple(z[k] for k in z.files)
                if key not in z.files:
                    raise ctx.fail(f"no array `{key}` in {path}", did_you_mean(key, z.files) +
                                   [f"the file holds: {', '.join(z.files)}"])
                return (z[key],)
    except (ValueError, OSError) as e:
        raise ctx.fail(f"cannot read {path}: {e}") from None
    raise ctx.fail(f"load() reads .npz and .npy files, not `{path.suffix}`; use csv(...) for text")


@source
def csv(ctx: SourceContext, file: str, delimiter: str = ",", skip_header: int = 0,
        columns: Any = None) -> tuple[np.ndarray, ...]:
    """``csv("f.csv", delimiter = ",", skip_header = 1, columns = [0, 2])`` -> one float array."""
    path = ctx.path(file)
    if not path.exists():
        raise ctx.fail(f"data file not found: {path}")
    try:
        arr = np.genfromtxt(path, delimiter=delimiter, skip_header=int(skip_header), dtype=float,
                            usecols=None if columns is None else [int(c) for c in np.atleast_1d(columns)])
    except ValueError as e:
        raise ctx.fail(f"cannot parse {path} as numbers: {e}") from None
    if np.isnan(arr).any():
        raise ctx.fail(f"{path} has empty or non-numeric cells (NaN after parsing)")
    return (arr,)


_DATASETS = ("diabetes", "breast_cancer", "digits")


@source
def dataset(ctx: SourceContext, name: str, standardize: bool = False, center: bool = False,
            labels: str = "index", rows: int | None = None) -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled sets as (X, y). ``standardize`` z-scores the columns of X;
    ``center`` centres X's columns and y (regression); ``labels = "pm1"`` maps binary labels to
    -1/+1; ``rows = N`` keeps the first N rows."""
    import sklearn.datasets as skd

    if name not in _DATASETS:
        raise ctx.fail(f"unknown data set `{name}`", did_you_mean(name, _DATASETS) +
                       [f"bundled data sets: {', '.join(_DATASETS)}"])
    X, y = getattr(skd, f"load_{name}")(return_X_y=True)
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if rows is not None:
        X, y = X[: int(rows)], y[: int(rows)]
    if standardize:
        sd = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if center:
        X = X - X.mean(axis=0)
        if name == "diabetes":
            y = y - y.mean()
    if labels == "pm1":
        classes = np.unique(y)
        if len(classes) != 2:
            raise ctx.fail(f"labels = \"pm1\" needs two classes; {name} has {len(classes)}")
        y = np.where(y == classes[1], 1.0, -1.0)
    elif labels != "index":
        raise ctx.fail(f"labels must be \"index\" or \"pm1\", not {labels!r}")
    return X, y


def _dims(ctx: SourceContext, dims: tuple[Any, ...]) -> tuple[int, ...]:
    out = []
    for d in dims:
        if isinstance(d, float) and d.is_integer():
            d = int(d)
        if not isinstance(d, (int, np.integer)) or d < 0:
            raise ctx.fail(f"dimensions must be nonnegative integers, got {d!r}")
        out.append(int(d))
    return tuple(out)


@source
def randn(ctx: SourceContext, *dims: int, seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, ...]:
    """Standard normal entries from ``numpy.random.default_rng(seed)``."""
    return (np.random.default_rng(int(seed)).standard_normal(_dims(ctx, dims)) * scale,)


@source
def rand(ctx: SourceContext, *dims: int, seed: int = 0, low: float = 0.0, high: float = 1.0) -> tuple[np.ndarray, ...]:
    """Uniform entries on [low, high) from ``default_rng(seed)``."""
    return (np.random.default_rng(int(seed)).uniform(low, high, _dims(ctx, dims)),)


@source
def randint(ctx: SourceContext, low: int, high: int, *dims: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Integers in [low, high) from ``default_rng(seed)``."""
    return (np.random.default_rng(int(seed)).integers(int(low), int(high), _dims(ctx, dims)),)


@source
def sparse_randn(ctx: SourceContext, *dims: int, density: float = 0.1, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Dense array with a ``density`` fraction of standard normal entries, the rest exactly 0."""
    if not 0 <= density <= 1:
        raise ctx.fail(f"density must lie in [0, 1], got {density}")
    rng = np.random.default_rng(int(seed))
    shape = _dims(ctx, dims)
    return (rng.standard_normal(shape) * (rng.uniform(size=shape) < density),)


def call_source(name: str, ctx: SourceContext, args: list[Any], kwargs: dict[str, Any]) -> tuple[np.ndarray, ...]:
    fn = SOURCES[name]
    try:
        return fn(ctx, *args, **kwargs)
    except TypeError as e:
        raise ctx.fail(f"bad arguments to {name}(...): {e}".replace(f"{fn.__name__}()", name)) from None
