"""Data bundles: split sizes, stratification, train-only standardization, batch determinism."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from regspec.backends.torch.train.data import build_data, epoch_seed
from regspec.diagnostics import RegspecError


def _batches(loader):
    return [tuple(t.clone() for t in b) for b in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(all(torch.equal(x, y) for x, y in zip(p, q)) for p, q in zip(a, b))


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", split=0.8, batch=128, seed=0)


def test_digits_split_sizes_and_stratification(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    n = len(raw.target)
    assert digits.n_train + digits.n_val == n
    assert digits.n_train == int(0.8 * n)
    assert (digits.in_features, digits.n_outputs, digits.task) == (64, 10, "classification")
    assert set(digits.indices["train"]).isdisjoint(digits.indices["val"])
    # stratified: each class's validation count is its share of the validation set, to within 1
    val_counts = np.bincount(raw.target[digits.indices["val"]], minlength=10)
    expected = np.bincount(raw.target, minlength=10) * digits.n_val / n
    assert np.all(np.abs(val_counts - expected) <= 1.0)
    assert sum(len(b[0]) for b in digits.epoch_loader(0)) == digits.n_train
    assert sum(len(b[0]) for b in digits.val) == digits.n_val


def test_standardization_uses_train_statistics(digits):
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    tr, va = digits.indices["train"], digits.indices["val"]
    mu, sd = x[tr].mean(axis=0), x[tr].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    np.testing.assert_allclose(digits.stats["mean"].numpy(), mu, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(digits.stats["std"].numpy(), sd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(digits.tensors["x_val"].numpy(), (x[va] - mu) / sd, rtol=1e-5, atol=1e-5)
    xt = digits.tensors["x_train"].numpy()
    varying = x[tr].std(axis=0) > 0
    np.testing.assert_allclose(xt.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(xt.std(axis=0)[varying], 1, atol=1e-4)
    # the validation split was not used: its own mean is not zero
    assert np.abs(digits.tensors["x_val"].numpy().mean(axis=0)).max() > 1e-2


def test_batches_deterministic_and_resumable(digits):
    again = build_data("digits", split=0.8, batch=128, seed=0)
    for e in range(3):
        assert _same(_batches(digits.epoch_loader(e)), _batches(again.epoch_loader(e)))
    # an uninterrupted run iterating `train` sees epochs 0, 1, 2; a run resumed at 2 sees epoch 2
    fresh = build_data("digits", split=0.8, batch=128, seed=0)
    uninterrupted = [_batches(fresh.train) for _ in range(3)]
    resumed = build_data("digits", split=0.8, batch=128, seed=0)
    assert _same(uninterrupted[2], _batches(resumed.epoch_loader(2)))
    assert _same(uninterrupted[0], _batches(resumed.epoch_loader(0)))
    assert not _same(uninterrupted[0], uninterrupted[1])  # epochs are reshuffled
    other = build_data("digits", split=0.8, batch=128, seed=1)
    assert not _same(_batches(other.epoch_loader(0)), uninterrupted[0])
    # validation order is fixed
    assert _same(_batches(digits.val), _batches(again.val))
    assert epoch_seed(0, 1) != epoch_seed(1, 0)


def test_loaders_leave_global_rng_alone(digits):
    state = torch.get_rng_state()
    for _ in digits.epoch_loader(5):
        pass
    for _ in digits.train:
        pass
    assert torch.equal(state, torch.get_rng_state())


def test_digits_images_and_indexed():
    b = build_data("digits", images=True, batch=32, indexed=True)
    x, y, idx = next(iter(b.epoch_loader(0)))
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64 and idx.shape == (32,)
    assert b.input_shape == (1, 8, 8) and b.in_features == 64
    assert torch.equal(b.tensors["x_train"][idx], x)


def test_breast_cancer_and_diabetes():
    bc = build_data("breast_cancer", split=0.75, batch=64, seed=3)
    assert (bc.in_features, bc.n_outputs, bc.task) == (30, 2, "classification")
    assert bc.n_train + bc.n_val == 569
    db = build_data("diabetes", batch=50)
    x, y = next(iter(db.epoch_loader(0)))
    assert x.shape == (50, 10) and y.shape == (50, 1) and y.dtype == torch.float32
    assert db.task == "regression" and db.n_outputs == 1
    yt = db.tensors["y_train"]
    assert abs(float(yt.mean())) < 1e-5 and abs(float(yt.std(unbiased=False)) - 1) < 1e-4
    raw = build_data("diabetes", standardize_target=False)
    assert float(raw.tensors["y_train"].mean()) > 100


def test_synthetic():
    a = build_data("synthetic", n=300, d=5, classes=3, seed=7)
    b = build_data("synthetic", n=300, d=5, classes=3, seed=7)
    assert torch.equal(a.tensors["x_train"], b.tensors["x_train"])
    assert (a.in_features, a.n_outputs, a.n_train) == (5, 3, 240)
    c = build_data("synthetic", n=300, d=5, classes=3, seed=8)
    assert not torch.equal(a.tensors["x_train"], c.tensors["x_train"])
    r = build_data("synthetic", n=100, d=4, regression=True)
    assert r.task == "regression" and r.tensors["y_train"].shape == (80, 1)
    with pytest.raises(RegspecError, match="not both"):
        build_data("synthetic", classes=2, regression=True)


def test_data_errors():
    with pytest.raises(RegspecError) as e:
        build_data("digit")
    assert "did you mean `digits`" in str(e.value)
    with pytest.raises(RegspecError, match="split"):
        build_data("digits", split=1.5)
    with pytest.raises(RegspecError) as e:
        build_data("digits", imgs=True)
    assert "did you mean `images`" in str(e.value)


USER_DATA = """
import torch
from torch.utils.data import DataLoader, TensorDataset

def make_loaders(n=64, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch, shuffle=True), DataLoader(ds, batch_size=batch)

def bad():
    return 3
"""


def test_user_loaders(tmp_path, monkeypatch):
    (tmp_path / "rs_userdata.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.syspath_prepend(str(tmp_path))
    b = build_data("rs_userdata:make_loaders", n=40, batch=8, seed=2, task="classification", n_outputs=2)
    assert b.in_features == 6 and b.n_outputs == 2 and b.resumable
    first = _batches(b.epoch_loader(3))
    again = build_data("rs_userdata:make_loaders", n=40, batch=8, seed=2)
    _batches(again.epoch_loader(0))
    assert _same(first, _batches(again.epoch_loader(3)))
    with pytest.raises(RegspecError, match=r"must return \(train_loader, val_loader\)"):
        build_data("rs_userdata:bad")
    with pytest.raises(RegspecError, match="did you mean `make_loaders`"):
        build_data("rs_userdata:make_loader")


def test_plan_text_with_user_loaders_names_no_unknown_counts(tmp_path, monkeypatch):
    """A user's loaders need not expose their row counts: plan says so instead of printing None."""
    from regspec.train_api import plan_text

    (tmp_path / "rs_userdata_plan.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "user.reg"
    spec.write_text(
        'train t {\n'
        '  model linear(out = 2)\n'
        '  data "rs_userdata_plan:make_loaders"(n = 40)\n'
        '  batch 8\n'
        '  loss cross_entropy\n'
        '  optimizer sgd(lr = 0.1)\n'
        '  epochs 1\n'
        '}\n')
    text = plan_text(str(spec))
    data_line = next(line for line in text.splitlines() if line.strip().startswith("data"))
    assert "None" not in data_line
    assert "steps per epoch" in data_line


def test_loader_keyword_repeating_a_block_statement_is_located(tmp_path, monkeypatch):
    from regspec.diagnostics import RegspecError
    from regspec.train_api import plan_text

    (tmp_path / "rs_userdata_dup.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "dup.reg"
    spec.write_text('train t {\n  model linear(out = 2)\n  data "rs_userdata_dup:make_loaders"(batch = 8)\n'
                    '  loss cross_entropy\n  optimizer sgd(lr = 0.1)\n  epochs 1\n}\n')
    with pytest.raises(RegspecError) as e:
        plan_text(str(spec))
    first = e.value.first
    assert first.span is not None and first.span.line == 3
    assert "`batch N` statement" in first.message


def test_train_in_process_gives_back_the_floating_point_mode(tmp_path):
    """The trainer flushes subnormals for speed; regspec.train must not leave that set for the
    caller's process (it breaks code that relies on IEEE subnormals, e.g. hypothesis)."""
    import sys

    from regspec.train_api import train

    assert sys.float_info.min / 2 > 0.0
    spec = tmp_path / "tiny.reg"
    spec.write_text('train t {\n  model linear(out = 2)\n  data synthetic(n = 40, d = 4, classes = 2)\n'
                    '  loss cross_entropy\n  optimizer sgd(lr = 0.1)\n  epochs 1\n}\n')
    train(str(spec), out=tmp_path / "run", quiet=True)
    assert sys.float_info.min / 2 > 0.0
