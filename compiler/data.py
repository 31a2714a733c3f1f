"""Data sources for ``data NAME[, NAME...] = SOURCE``: files, scikit-learn's bundled sets, seeded
generators. Every source returns a tuple of numpy arrays; errors name the file and the declaration."""
from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from regspec.compiler.ir import size_error
from regspec.diagnostics import Span, did_you_mean, error

SOURCES: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {}


def source(fn: Callable[..., tuple[np.ndarray, ...]]) -> Callable[..., tuple[np.ndarray, ...]]:
    SOURCES[fn.__name__] = fn
    return fn


class SourceContext:
    """What a source needs besides its arguments: the spec's folder, the span to blame and the
    names the declaration binds (errors name the declaration as well as the file)."""

    def __init__(self, base_dir: Path, span: Span | None, names: list[str] | tuple[str, ...] = ()):
        self.base_dir = base_dir
        self.span = span
        self.names = tuple(names)

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.base_dir / p

    def fail(self, message: str, notes: list[str] | None = None) -> Exception:
        decl = [f"in the declaration `data {', '.join(self.names)} = ...`"] if self.names else []
        return error(message, self.span, (notes or []) + decl)


def _data_file(ctx: SourceContext, file: Any, source: str) -> Path:
    """The path of a data file, which must exist and be a regular file: a device (/dev/zero), a
    pipe or a folder never ends or never parses, so it is refused before anything is read."""
    if not isinstance(file, str):
        raise ctx.fail(f"{source}() takes a file name as a string, got {file!r}")
    path = ctx.path(file)
    if not path.exists():
        raise ctx.fail(f"data file not found: {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise ctx.fail(f"{path} is {kind}; {source}() reads regular files")
    return path


@source
def load(ctx: SourceContext, file: str, key: str | None = None) -> tuple[np.ndarray, ...]:
    """``load("f.npz", "key")``, ``load("f.npz")`` (all arrays, in file order), ``load("f.npy")``."""
    path = _data_file(ctx, file, "load")
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
    path = _data_file(ctx, file, "csv")
    try:
        arr = np.genfromtxt(path, delimiter=delimiter, skip_header=int(skip_header), dtype=float,
                            usecols=None if columns is None else [int(c) for c in np.atleast_1d(columns)])
    except ValueError as e:
        raise ctx.fail(f"cannot parse {path} as numbers: {e}") from None
    if np.isnan(arr).any():
        table = arr.reshape(-1, 1) if arr.ndim == 1 else np.atleast_2d(arr)
        row, col = (int(i) for i in np.argwhere(np.isnan(table))[0])
        line = row + 1 + int(skip_header)
        header = row == 0 and bool(np.isnan(table[0]).all()) and not np.isnan(table[1:]).any()
        raise ctx.fail(f"{path} has an empty or non-numeric cell in row {line}, column {col + 1}",
                       [f"a header line? skip it with skip_header = {int(skip_header) + 1}"] if header else [])
    return (arr,)


# scikit-learn's bundled sets, read from the files inside its package without importing it
# (importing sklearn costs 1-4 s through scipy.stats; `regspec check` must stay well under that)
_DATASETS = ("diabetes", "breast_cancer", "digits", "iris", "wine")


def _sklearn_data_dir(ctx: SourceContext, name: str) -> Path:
    """sklearn/datasets/data inside the installed package, located without importing it."""
    import importlib.util

    from regspec.extras import EXTRAS

    dist, extra = EXTRAS["sklearn"]
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ctx.fail(f"dataset(\"{name}\") reads the data bundled with {dist}, which is not installed",
                       [f"install it with: pip install 'regspec[{extra}]' (or pip install {dist})"])
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not folder.is_dir():
        raise ctx.fail(f"{dist}'s bundled data folder is missing: {folder}",
                       [f"reinstall it: pip install --force-reinstall {dist}"])
    return folder


def _sklearn_scale(X: np.ndarray) -> np.ndarray:
    """Columns to mean 0, standard deviation 1, in place, with the steps and float operations of
    ``sklearn.preprocessing.scale`` (so the result is bitwise the same): nan-aware mean and std,
    near-constant columns (std < 10 eps) left unscaled, the mean removed again when rounding
    left it visibly nonzero."""
    mean = np.nanmean(X, axis=0)
    std = np.nanstd(X, axis=0)
    X -= mean
    mean_1 = np.nanmean(X, axis=0)
    if not np.allclose(mean_1, 0):
        X -= mean_1
    std[std < 10 * np.finfo(std.dtype).eps] = 1.0
    X /= std
    mean_2 = np.nanmean(X, axis=0)
    if not np.allclose(mean_2, 0):
        X -= mean_2
    return X


def _labelled_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's small-set format: a header `n_samples,n_features,class names...`, then rows
    of features with the integer class last."""
    with path.open(encoding="utf-8") as f:
        n_samples, n_features = (int(v) for v in f.readline().split(",")[:2])
        table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape != (n_samples, n_features + 1):
        raise ValueError(f"expected {n_samples} rows of {n_features + 1} columns, found {table.shape}")
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(int)


def _bundled(ctx: SourceContext, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) exactly as ``sklearn.datasets.load_<name>(return_X_y=True)`` returns them (diabetes
    with its default ``scaled=True``: centred columns of unit norm)."""
    import gzip

    folder = _sklearn_data_dir(ctx, name)
    try:
        if name == "diabetes":
            with gzip.open(folder / "diabetes_data_raw.csv.gz", "rt") as f:
                X = np.loadtxt(f)
            with gzip.open(folder / "diabetes_target.csv.gz", "rt") as f:
                y = np.loadtxt(f)
            X = _sklearn_scale(X)
            X /= X.shape[0] ** 0.5
            return X, y
        if name == "digits":
            with gzip.open(folder / "digits.csv.gz", "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1], table[:, -1].astype(int)
        file = {"breast_cancer": "breast_cancer.csv", "iris": "iris.csv", "wine": "wine_data.csv"}[name]
        return _labelled_csv(folder / file)
    except (OSError, ValueError, EOFError) as e:
        raise ctx.fail(f"cannot read the bundled `{name}` data in {folder}: {e}",
                       ["reinstall scikit-learn: pip install --force-reinstall scikit-learn"]) from None


@source
def dataset(ctx: SourceContext, name: str, standardize: bool = False, center: bool = False,
            labels: str = "index", rows: int | None = None) -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled sets as (X, y). ``standardize`` z-scores the columns of X;
    ``center`` centres X's columns and y (regression); ``labels = "pm1"`` maps binary labels to
    -1/+1; ``rows = N`` keeps the first N rows."""
    if not isinstance(name, str) or name not in _DATASETS:
        what = f"unknown data set `{name}`" if isinstance(name, str) else f"dataset(...) takes a name, got {name!r}"
        raise ctx.fail(what, did_you_mean(str(name), _DATASETS) + [f"bundled data sets: {', '.join(_DATASETS)}"])
    X, y = _bundled(ctx, name)
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if rows is not None:
        rows = _dims(ctx, (rows,))[0]
        X, y = X[:rows], y[:rows]
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
    """A shape of nonnegative integers, refused (with its size) before anything is allocated
    when it has more entries than regspec accepts."""
    out = []
    for d in dims:
        if isinstance(d, float) and d.is_integer():
            d = int(d)
        if isinstance(d, np.integer):
            d = int(d)
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise ctx.fail(f"dimensions must be nonnegative integers, got {d!r}")
        out.append(d)
    _size(ctx, out)
    return tuple(out)


def _size(ctx: SourceContext, shape: Any) -> None:
    message = size_error(shape)
    if message:
        raise ctx.fail(f"refusing to generate data: {message}")


def _seed(ctx: SourceContext, seed: Any) -> int:
    """A seed for ``numpy.random.default_rng``: an integer in [0, 2**64)."""
    given = f"{seed:g}" if isinstance(seed, float) else repr(seed)
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, np.integer):
        seed = int(seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 64:
        raise ctx.fail(f"seed must be an integer from 0 to 2**64 - 1, got {given}")
    return seed


def _real(ctx: SourceContext, name: str, value: Any) -> float:
    """A finite real number argument (``scale``, ``low``, ``high``, ``density``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ctx.fail(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _shapes(ctx: SourceContext, dims: tuple[Any, ...]) -> list[tuple[int, ...]]:
    """``randn(50, 10)`` -> one shape; ``randn([50, 10], [10, 2])`` -> several shapes, drawn in
    order from one stream (so a spec reproduces a script that draws X, then G, ... from one rng)."""
    if dims and all(isinstance(d, (list, tuple, np.ndarray)) for d in dims):
        return [_dims(ctx, tuple(np.asarray(d).reshape(-1).tolist())) for d in dims]
    if any(isinstance(d, (list, tuple, np.ndarray)) for d in dims):
        raise ctx.fail("give either one shape as numbers, randn(50, 10), or several shapes as lists, "
                       "randn([50, 10], [10, 2])")
    return [_dims(ctx, dims)]


@source
def randn(ctx: SourceContext, *dims: Any, seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, ...]:
    """Standard normal entries (times ``scale``) from ``numpy.random.default_rng(seed)``; several
    list shapes give several arrays drawn in order from the one stream."""
    rng = np.random.default_rng(_seed(ctx, seed))
    scale = _real(ctx, "scale", scale)
    return tuple(rng.standard_normal(shape) * scale for shape in _shapes(ctx, dims))


@source
def rand(ctx: SourceContext, *dims: Any, seed: int = 0, low: float = 0.0, high: float = 1.0) -> tuple[np.ndarray, ...]:
    """Uniform entries on [low, high) from ``default_rng(seed)`` (several list shapes: one stream)."""
    rng = np.random.default_rng(_seed(ctx, seed))
    low, high = _real(ctx, "low", low), _real(ctx, "high", high)
    if not np.isfinite(high - low) or high < low:
        raise ctx.fail(f"rand needs finite low <= high, got low = {low}, high = {high}")
    return tuple(rng.uniform(low, high, shape) for shape in _shapes(ctx, dims))


@source
def randint(ctx: SourceContext, low: int, high: int, *dims: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Integers in [low, high) from ``default_rng(seed)``."""
    low, high = _int64(ctx, "low", low), _int64(ctx, "high", high)
    if high <= low:
        raise ctx.fail(f"randint needs low < high, got low = {low}, high = {high}")
    return (np.random.default_rng(_seed(ctx, seed)).integers(low, high, _dims(ctx, dims)),)


@source
def sparse_randn(ctx: SourceContext, *dims: int, density: float = 0.1, seed: int = 0, scale: float = 1.0,
                 values: str = "normal") -> tuple[np.ndarray, ...]:
    """Dense array with a ``density`` fraction of nonzero entries, the rest exactly 0. Nonzeros are
    standard normal, or +-1 with ``values = "sign"``; times ``scale``."""
    if not 0 <= _real(ctx, "density", density) <= 1:
        raise ctx.fail(f"density must lie in [0, 1], got {density}")
    if values not in ("normal", "sign"):
        raise ctx.fail(f"values must be \"normal\" or \"sign\", got {values!r}")
    rng = np.random.default_rng(_seed(ctx, seed))
    scale = _real(ctx, "scale", scale)
    shape = _dims(ctx, dims)
    entries = rng.standard_normal(shape)
    if values == "sign":
        entries = np.sign(entries)
    return (entries * (rng.uniform(size=shape) < density) * scale,)


@source
def zeros(ctx: SourceContext, *dims: int) -> tuple[np.ndarray, ...]:
    """An array of zeros."""
    return (np.zeros(_dims(ctx, dims)),)


@source
def ones(ctx: SourceContext, *dims: int) -> tuple[np.ndarray, ...]:
    """An array of ones (``ones(n) / n``: uniform weights)."""
    return (np.ones(_dims(ctx, dims)),)


@source
def eye(ctx: SourceContext, n: int) -> tuple[np.ndarray, ...]:
    """The n x n identity."""
    n = _dims(ctx, (n,))[0]
    _size(ctx, (n, n))
    return (np.eye(n),)


@source
def arange(ctx: SourceContext, n: int) -> tuple[np.ndarray, ...]:
    """The integers 0, 1, ..., n - 1."""
    return (np.arange(_dims(ctx, (n,))[0]),)


@source
def repeat(ctx: SourceContext, values: Any, times: Any) -> tuple[np.ndarray, ...]:
    """NumPy's repeat: ``repeat([0, 1, 2], 10)`` -> 10 zeros, 10 ones, 10 twos (class labels)."""
    vals = np.asarray(values)
    counts = np.asarray(times)
    if integral_array(counts):
        counts = counts.astype(np.int64)
    if counts.dtype.kind not in "iu" or np.any(counts < 0):
        raise ctx.fail(f"repeat counts must be nonnegative integers, got {times!r}")
    if counts.ndim and counts.shape != vals.reshape(-1).shape:
        raise ctx.fail(f"repeat needs one count or one count per value: {vals.size} values, {counts.size} counts")
    _size(ctx, (int(counts.sum()) if counts.ndim else vals.size * int(counts),))
    out = np.repeat(vals.reshape(-1), counts)
    if out.size and integral_array(out):
        out = out.astype(np.int64)
    return (out,)


def integral_array(arr: np.ndarray) -> bool:
    """A float array whose entries are all whole numbers that int64 holds exactly (|v| < 2**53)."""
    if arr.dtype.kind != "f":
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2 ** 53))


def _int64(ctx: SourceContext, name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 63:
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not -2 ** 63 <= value < 2 ** 63:
        raise ctx.fail(f"{name} must be a 64-bit integer, got {value!r}")
    return int(value)


def source_keywords(name: str) -> tuple[list[str], int | None]:
    """A source's keyword names and how many positional arguments it takes (None: any number),
    read from its signature, so the resolver checks calls against the function itself."""
    params = list(inspect.signature(SOURCES[name]).parameters.values())[1:]  # after ctx
    keywords = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return keywords, None
    return keywords, sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)


# Seconds spent in data sources by this process (reading files, generating arrays): callers
# take differences around a compile to report data loading apart from analysis.
CLOCK = {"seconds": 0.0}


def call_source(name: str, ctx: SourceContext, args: list[Any], kwargs: dict[str, Any]) -> tuple[np.ndarray, ...]:
    fn = SOURCES[name]
    t0 = time.perf_counter()
    try:
        return fn(ctx, *args, **kwargs)
    except TypeError as e:
        raise ctx.fail(f"bad arguments to {name}(...): {e}".replace(f"{fn.__name__}()", name)) from None
    except (ValueError, OverflowError) as e:  # numpy refusing an argument the checks above let through
        raise ctx.fail(f"bad arguments to {name}(...): {e}") from None
    except MemoryError:
        raise ctx.fail(f"{name}(...) needs more memory than this machine has") from None
    finally:
        CLOCK["seconds"] += time.perf_counter() - t0
