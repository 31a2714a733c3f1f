"""Data sets for training runs: built-ins from scikit-learn's bundled data, seeded synthetic
data, and user loaders by import path.

Determinism. Everything random is derived from ``seed``: the train/val split
(``sklearn.model_selection.train_test_split(random_state=seed)``, stratified for
classification), the synthetic generator (``numpy.random.default_rng(seed)``), and the order of
training batches. The training order of epoch ``e`` is a permutation drawn from a
``torch.Generator`` seeded with ``epoch_seed(seed, e)`` (a ``numpy.random.SeedSequence`` of
``(seed, e)``), so it depends on nothing but ``(seed, e)``: a run resumed at epoch ``k`` that
iterates ``bundle.epoch_loader(k)`` sees exactly the batches an uninterrupted run saw in epoch
``k``. Loaders never touch the global torch RNG (each ``DataLoader`` gets its own generator).

Standardization (``standardize=True``, default): each feature is shifted and scaled by the
mean and standard deviation of the *training* split only (``x' = (x − μ_train)/σ_train``;
features with ``σ_train = 0`` get ``σ = 1``); the statistics are kept in ``DataBundle.stats``.
For regression the target is standardized the same way by default (``standardize_target``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, TensorDataset

from regspec.compiler.train_plan import DATASET_NAMES, DATASET_OPTIONS, same_names
from regspec.diagnostics import RegspecError, Span, did_you_mean, error

from ._util import accepts_var_kwargs, check_kwargs, signature_params

__all__ = ["DataBundle", "EpochSampler", "build_data", "epoch_seed", "DATASETS"]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch)`` (``SeedSequence([seed, epoch])``)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch)]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


class EpochSampler(Sampler[int]):
    """Random permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    With ``epoch=None`` the sampler advances by itself: its k-th ``__iter__`` uses epoch
    ``start_epoch + k`` (``set_epoch`` moves it). With a fixed ``epoch`` every ``__iter__`` gives
    that epoch's order.
    """

    def __init__(self, n: int, seed: int, epoch: int | None = None, shuffle: bool = True):
        self.n, self.seed, self.shuffle = int(n), int(seed), shuffle
        self.fixed_epoch = epoch
        self.next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.next_epoch = int(epoch)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        if self.fixed_epoch is not None:
            epoch = self.fixed_epoch
        else:
            epoch = self.next_epoch
            self.next_epoch += 1
        return iter(self.order(epoch).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class DataBundle:
    """Train/validation loaders plus what the model and loss need to know about the data.

    ``train`` yields the epochs 0, 1, 2, ... in turn (an auto-advancing sampler); prefer
    ``epoch_loader(epoch)``, which gives epoch ``epoch``'s batches regardless of history.
    Batches are ``(x, y)`` (``(x, y, index)`` with ``indexed=True``); classification targets
    are ``int64`` of shape ``(B,)``, regression targets ``float32`` of shape ``(B, 1)``.
    Built-ins also keep the full split tensors (``tensors``: ``x_train``, ``y_train``,
    ``x_val``, ``y_val``), the row indices of each split into the raw data (``indices``) and
    the standardization statistics (``stats``: ``mean``, ``std``, ``target_mean``, ``target_std``).
    """

    train: Any
    val: Any
    in_features: int | None
    n_outputs: int | None
    task: str | None
    input_shape: tuple[int, ...] | None = None
    batch: int = 128
    seed: int = 0
    n_train: int | None = None
    n_val: int | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    resumable: bool = True
    _epoch_loader: Callable[[int], Any] | None = field(default=None, repr=False)

    def epoch_loader(self, epoch: int) -> Any:
        """The training loader for epoch ``epoch`` (0-based): same batches for the same
        ``(seed, epoch)`` whether or not the run was resumed."""
        if self._epoch_loader is None:
            return self.train
        return self._epoch_loader(int(epoch))


# ---------------------------------------------------------------------------------------------
# built-in arrays

def _sk_digits(images: bool = False) -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    shape = (1, 8, 8) if images else (64,)
    return d.data.astype(np.float32), d.target.astype(np.int64), "classification", shape


def _sk_breast_cancer() -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return d.data.astype(np.float32), d.target.astype(np.int64), "classification", (d.data.shape[1],)


def _sk_diabetes() -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()  # sklearn's `scaled` default; we re-standardize with train stats anyway
    return d.data.astype(np.float32), d.target.astype(np.float32), "regression", (d.data.shape[1],)


#: generated inputs larger than this are refused before allocating (n * d float32 values)
SYNTHETIC_MAX_VALUES = 10**9


def _synthetic(
    n: int = 1000,
    d: int = 20,
    classes: int | None = None,
    regression: bool = False,
    noise: float = 0.1,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]:
    """x ~ N(0, I_d); regression: y = x·w + noise·ε with w ~ N(0, I/d); classification
    (``classes`` = K, default 2): y = argmax_k (x W + noise·E)_k with W ~ N(0, I)."""
    if classes is not None and regression:
        raise error("synthetic: give `classes` or `regression = true`, not both")
    if int(n) < 4 or int(d) < 1:
        raise error(f"synthetic: need n >= 4 and d >= 1, got n={n}, d={d}")
    if int(n) * int(d) > SYNTHETIC_MAX_VALUES:
        raise error(f"synthetic: n * d = {int(n) * int(d):.3g} values is more than generated data may hold "
                    f"({SYNTHETIC_MAX_VALUES:.0e}, {SYNTHETIC_MAX_VALUES * 4 / 2**30:.1f} GiB in float32)")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(n), int(d))).astype(np.float32)
    if regression:
        w = rng.standard_normal(int(d)) / math.sqrt(int(d))
        y = (x @ w + noise * rng.standard_normal(int(n))).astype(np.float32)
        return x, y, "regression", (int(d),)
    k = 2 if classes is None else int(classes)
    if k < 2:
        raise error(f"synthetic: `classes` must be >= 2, got {classes}")
    w = rng.standard_normal((int(d), k))
    y = np.argmax(x @ w + noise * rng.standard_normal((int(n), k)), axis=1).astype(np.int64)
    return x, y, "classification", (int(d),)


#: built-in data set name -> loader of (X, y, task, input_shape); its kwargs are data options
DATASETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, str, tuple[int, ...]]]] = {
    "digits": _sk_digits,
    "breast_cancer": _sk_breast_cancer,
    "diabetes": _sk_diabetes,
    "synthetic": _synthetic,
}
same_names(DATASETS, DATASET_NAMES, "built-in data sets")
for _name, _fn in DATASETS.items():
    same_names([p for p in signature_params(_fn) if p != "seed"], DATASET_OPTIONS[_name], f"options of `{_name}`")


def _split(y: np.ndarray, split: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    strat = y if stratify else None
    if stratify and np.min(np.bincount(y)) < 2:
        strat = None  # a class with one sample cannot be stratified
    tr, va = train_test_split(idx, train_size=split, random_state=seed, shuffle=True, stratify=strat)
    return np.sort(tr), np.sort(va)


def _standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    mu = train.mean(axis=0)
    sd = train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return mu.astype(np.float32), sd.astype(np.float32), [((a - mu) / sd).astype(np.float32) for a in (train, *others)]


def _check_split(split: Any, n: int, span: Span | None) -> None:
    """The training fraction must be a number in (0, 1) leaving a row on each side."""
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not math.isfinite(split):
        raise error(f"`split` is the training fraction, a number in (0, 1), got {split!r}", span)
    if not 0.0 < split < 1.0:
        raise error(f"`split` is the training fraction and must lie in (0, 1), got {split}", span)
    n_train = math.floor(split * n)
    if n_train < 1 or n - n_train < 1:
        raise error(f"`split = {split:g}` leaves {n_train} training and {n - n_train} validation rows of {n}", span,
                    ["each side needs at least one row"])


def _builtin(
    name: str, split: float, batch: int, seed: int, span: Span | None, kw: dict[str, Any]
) -> DataBundle:
    standardize = bool(kw.pop("standardize", True))
    standardize_target = kw.pop("standardize_target", None)
    indexed = bool(kw.pop("indexed", False))
    drop_last = bool(kw.pop("drop_last", False))
    fn = DATASETS[name]
    check_kwargs(fn, kw, f"data set `{name}`", span)
    try:
        x, y, task, shape = fn(**kw, seed=seed) if name == "synthetic" else fn(**kw)
    except RegspecError as exc:
        raise error(exc.first.message, exc.first.span or span, exc.first.notes) from None
    except (TypeError, ValueError, OverflowError, MemoryError) as exc:  # e.g. n = 1e300, d = "x"
        raise error(f"data set `{name}` rejected its options: {type(exc).__name__}: {exc}", span) from None
    _check_split(split, len(y), span)
    try:
        tr, va = _split(y, float(split), seed, stratify=(task == "classification"))
    except ValueError as exc:  # e.g. fewer training rows than classes for a stratified split
        raise error(f"`split = {split}` cannot split {len(y)} rows: {exc}", span) from None
    stats: dict[str, torch.Tensor] = {}
    xtr, xva = x[tr], x[va]
    if standardize:
        mu, sd, (xtr, xva) = _standardize(xtr, xva)
        stats.update(mean=torch.from_numpy(mu), std=torch.from_numpy(sd))
    ytr, yva = y[tr], y[va]
    if task == "regression":
        if standardize_target is None or standardize_target:
            mu_y, sd_y, (ytr, yva) = _standardize(ytr[:, None], yva[:, None])
            stats.update(target_mean=torch.from_numpy(mu_y), target_std=torch.from_numpy(sd_y))
        else:
            ytr, yva = ytr[:, None], yva[:, None]
        n_outputs = 1
    else:
        n_outputs = int(y.max()) + 1
    tensors = {
        "x_train": torch.from_numpy(np.ascontiguousarray(xtr)).reshape(len(tr), *shape),
        "y_train": torch.from_numpy(np.ascontiguousarray(ytr)),
        "x_val": torch.from_numpy(np.ascontiguousarray(xva)).reshape(len(va), *shape),
        "y_val": torch.from_numpy(np.ascontiguousarray(yva)),
    }

    def dataset(xs: torch.Tensor, ys: torch.Tensor) -> Dataset:
        return TensorDataset(xs, ys, torch.arange(len(xs))) if indexed else TensorDataset(xs, ys)

    train_ds = dataset(tensors["x_train"], tensors["y_train"])
    val_ds = dataset(tensors["x_val"], tensors["y_val"])
    batch = int(batch)
    if batch < 1:
        raise error(f"`batch` must be a positive integer, got {batch}", span)

    def loader(ds: Dataset, sampler: Sampler[int], drop: bool) -> DataLoader:
        # a private generator: iterating never consumes the global torch RNG
        return DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=drop,
                          generator=torch.Generator().manual_seed(int(seed)))

    n_tr = len(tr)
    train = loader(train_ds, EpochSampler(n_tr, seed), drop_last)
    val = loader(val_ds, EpochSampler(len(va), seed, shuffle=False), False)
    return DataBundle(
        train=train,
        val=val,
        in_features=int(np.prod(shape)),
        n_outputs=n_outputs,
        task=task,
        input_shape=tuple(shape),
        batch=batch,
        seed=int(seed),
        n_train=n_tr,
        n_val=len(va),
        stats=stats,
        tensors=tensors,
        indices={"train": tr, "val": va},
        _epoch_loader=lambda e: loader(train_ds, EpochSampler(n_tr, seed, epoch=e), drop_last),
    )


def _reseed_user_loader(loader: Any, seed: int, epoch: int) -> bool:
    """Make a user loader's epoch order a function of (seed, epoch) where we can; True if so."""
    sampler = getattr(loader, "sampler", None)
    if sampler is None:
        return False
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
        return True
    if isinstance(sampler, RandomSampler):
        sampler.generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        return True
    # sequential samplers are trivially reproducible
    return type(sampler).__name__ == "SequentialSampler"


def _user(path: str, split: float, batch: int, seed: int, span: Span | None, kw: dict[str, Any]) -> DataBundle:
    from .models import load_user_object

    task = kw.pop("task", None)
    n_outputs = kw.pop("n_outputs", None)
    fn = load_user_object(path, span, what="data loader")
    if not callable(fn):
        raise error(f"user data `{path}` is not callable", span)
    params = signature_params(fn)
    extra = {k: v for k, v in (("batch", batch), ("seed", seed), ("split", split))
             if (k in params or accepts_var_kwargs(fn)) and k not in kw}
    check_kwargs(fn, {**kw, **extra}, f"user data `{path}`", span)
    try:
        result = fn(**kw, **extra)
    except RegspecError:
        raise
    except Exception as exc:
        raise error(f"user data `{path}` raised {type(exc).__name__}: {exc}", span) from None
    if isinstance(result, DataBundle):
        return result
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise error(
            f"user data `{path}` must return (train_loader, val_loader), got {type(result).__name__}", span
        )
    train, val = result
    for role, obj in (("train", train), ("validation", val)):
        if not hasattr(obj, "__iter__"):
            raise error(f"user data `{path}`: the {role} loader is not iterable ({type(obj).__name__})", span)
    in_features = input_shape = None
    try:  # peek at one validation batch (cheap and leaves the train order untouched)
        first = next(iter(val))
        xb = first[0] if isinstance(first, (tuple, list)) else first
        if isinstance(xb, torch.Tensor) and xb.dim() >= 1:
            input_shape = tuple(xb.shape[1:])
            in_features = int(np.prod(input_shape)) if input_shape else 1
    except Exception:  # noqa: BLE001 - a loader we cannot peek at is still usable
        pass
    resumable = _reseed_user_loader(train, seed, 0)

    def epoch_loader(e: int) -> Any:
        _reseed_user_loader(train, seed, e)
        return train

    return DataBundle(
        train=train, val=val, in_features=in_features, n_outputs=n_outputs, task=task,
        input_shape=input_shape, batch=int(batch), seed=int(seed), resumable=resumable,
        _epoch_loader=epoch_loader,
    )


def build_data(
    name: str, *, split: float = 0.8, batch: int = 128, seed: int = 0, span: Span | None = None, **kw: Any
) -> DataBundle:
    """Build a ``DataBundle``.

    Built-ins: ``digits(images=False)`` (1797 × 64, 10 classes; ``images=True`` serves
    ``(N, 1, 8, 8)``), ``breast_cancer`` (569 × 30, 2 classes), ``diabetes`` (442 × 10,
    regression), ``synthetic(n=1000, d=20, classes=None | K, regression=False, noise=0.1)``
    (generated with ``seed``). Common options: ``standardize=True``, ``standardize_target``
    (regression only, default on), ``indexed=False`` (batches carry dataset indices),
    ``drop_last=False``. ``split`` is the training fraction (stratified for classification).

    User data: ``"pkg.mod:make_loaders"`` is called with the remaining keyword arguments (and
    ``batch``, ``seed``, ``split`` if its signature takes them) and must return
    ``(train_loader, val_loader)`` (or a ``DataBundle``); ``task`` and ``n_outputs`` may be
    given here since they cannot be inferred. Its epochs are made reproducible where the
    sampler allows (``set_epoch`` or a ``RandomSampler`` reseeded per epoch); otherwise
    ``bundle.resumable`` is False.
    """
    if ":" in name:
        return _user(name, split, batch, seed, span, dict(kw))
    key = name.lower()
    if key not in DATASETS:
        raise error(
            f"unknown data set `{name}`",
            span,
            did_you_mean(name, DATASETS) + ["built-in data sets: " + ", ".join(DATASETS) + '; user data: "pkg.mod:make_loaders"'],
        )
    return _builtin(key, split, batch, seed, span, dict(kw))
