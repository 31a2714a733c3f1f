"""Every training spec in specs/ runs one epoch on CPU, and its summary shows the regularizer's
effect (exact zeros, rank, spectral norm <= radius, an exact N:M pattern, ...). The lasso train
block converges to the CVXPY solution of the problem block on the same data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import regspec

torch.set_num_threads(1)

SPECS = Path(__file__).resolve().parent.parent / "specs"
TRAIN_SPECS = sorted(p.name for p in SPECS.glob("train_*.reg"))


def _run(name: str, tmp_path: Path, epochs: int = 1, text: str | None = None, **kw):
    spec = regspec.load(text) if text is not None else str(SPECS / name)
    return regspec.train(spec, out=tmp_path / name.removesuffix(".reg"), epochs=epochs, quiet=True, **kw)


def _term(summary, fragment: str):
    return next(t for t in summary["terms"] if fragment in t["term"])


def test_every_training_spec_names_its_paper():
    assert len(TRAIN_SPECS) >= 8
    for name in TRAIN_SPECS:
        header = "".join(ln for ln in (SPECS / name).read_text().splitlines(True) if ln.startswith("#"))
        assert re.search(r'"[^"]+"|\(\w+\)|[A-Z]\w+ et al\.', header), f"{name}: no paper named in the header"


def test_prosparse(tmp_path):
    s = _run("train_prosparse.reg", tmp_path)
    t = _term(s, "l1_acts")
    assert t["lowering"] == "loss" and set(t["act_zero_frac"]) == {"acts.0", "acts.1"}
    # GELU -> ReLU makes exact zeros possible; the l1 stage pushes activations to them
    assert min(t["act_zero_frac"].values()) > 0.2
    assert s["metrics"]["val_acc"] > 0.6


def test_group_channels(tmp_path):
    s = _run("train_group_channels.reg", tmp_path)
    conv = s["tensors"]["layers.1.weight"]
    assert conv["zero_rows"] > 0.1                      # whole filters are exactly zero
    assert conv["zero_frac"] == pytest.approx(conv["zero_rows"])   # ... and only whole filters
    assert _term(s, "spectral_ball")["satisfied"]
    assert s["tensors"]["head.weight"]["spectral_norm"] <= 2.0 + 1e-5


def test_nuclear(tmp_path):
    s = _run("train_nuclear.reg", tmp_path)
    w = s["tensors"]["layers.0.weight"]
    assert w["rank"] < 32                               # of 64: singular value thresholding
    t = _term(s, "nuclear")
    assert t["final"] < t["initial"]
    assert s["metrics"]["val_acc"] > 0.6


def test_spectral_ball(tmp_path):
    s = _run("train_spectral.reg", tmp_path)
    for name in ("layers.0.weight", "layers.1.weight", "head.weight"):
        assert s["tensors"][name]["spectral_norm"] <= 1.0 + 1e-5
    assert all(t["satisfied"] for t in s["terms"])


def test_nm_sparse_from_epoch(tmp_path):
    s1 = _run("train_nm_sparse.reg", tmp_path / "one", epochs=1)   # `from epoch 1`: not yet active
    assert s1["tensors"]["layers.0.weight"]["zero_frac"] == 0.0
    s = _run("train_nm_sparse.reg", tmp_path, epochs=2)
    t = _term(s, "nm_sparse")
    nm = t["nm"]["layers.0.weight"]
    assert nm["ok"] and nm["max_nonzeros_per_block"] == 2
    assert s["tensors"]["layers.0.weight"]["zero_frac"] == pytest.approx(0.5)


def test_orthogonality(tmp_path):
    s = _run("train_orthogonality.reg", tmp_path)
    t = _term(s, "orthogonality")
    assert t["lowering"] == "loss" and t["final"] < t["initial"]


def _without(name: str, pattern: str) -> str:
    text = (SPECS / name).read_text()
    return re.sub(pattern, lambda m: m.group(0).replace(m.group(1), "0"), text)


def test_adamw_prox(tmp_path):
    s = _run("train_adamw_prox.reg", tmp_path)
    t = _term(s, "weight_decay")
    assert t["lowering"] == "prox" and t["metric"] == "euclidean"
    plain = _run("train_adamw_prox.reg", tmp_path / "plain",
                 text=_without("train_adamw_prox.reg", r"\* (5e-2)"))
    assert t["final"] < _term(plain, "weight_decay")["final"]   # smaller weights with the decay


def test_l2sp(tmp_path):
    s = _run("train_l2sp.reg", tmp_path)
    plain = _run("train_l2sp.reg", tmp_path / "plain", text=_without("train_l2sp.reg", r"\) \* (1\.0)"))
    for frag in ("anchor_l2_layers", "anchor_l2_head"):
        anchored, free = _term(s, frag)["final"], _term(plain, frag)["final"]
        assert anchored < 0.8 * free                       # stays closer to the initial weights


def test_jacobian(tmp_path):
    s = _run("train_jacobian.reg", tmp_path)
    t = _term(s, "jacobian_fro")
    assert t["lowering"] == "loss" and t["final"] > 0
    assert s["metrics"]["val_acc"] > 0.6


def test_lasso_training_converges_to_the_problem_solution(tmp_path):
    """The cross-backend check of the training path: full-batch SGD (lr = 100 <= 1/L) plus the l1
    prox is ISTA on the lasso, so after k steps F(w_k) - F* <= ||w_0 - w*||^2 / (2 lr k)."""
    spec = regspec.load(str(SPECS / "train_lasso.reg"))
    ref = regspec.solve(spec, problem="lasso", backend="cvxpy")
    assert ref.ok
    w_star = np.asarray(ref.variables["w"])
    s = regspec.train(spec, "lasso_prox", out=tmp_path / "lasso", dtype="float64", quiet=True,
                      argv=["--checkpoint-every", "100000"])
    state = torch.load(tmp_path / "lasso" / "checkpoint.pt", weights_only=True)
    w = state["model"]["head.weight"].numpy()[0]
    k, lr, lam = 3000, 100.0, 1.0
    # objective of the training run = the problem's objective at w
    f_train = s["metrics"]["val_loss"] + lam * np.abs(w).sum()
    gap = f_train - ref.objective
    torch.manual_seed(0)
    init = torch.nn.Linear(10, 1, bias=False).weight.detach().numpy()[0]  # the seeded initial weights
    bound = np.sum((init - w_star) ** 2) / (2 * lr * k)
    assert gap <= bound + 1e-6 * abs(ref.objective)
    assert abs(gap) <= 1e-7 * ref.objective                             # observed: linear convergence
    # same support; the coefficients agree (strong convexity turns the gap into a distance)
    assert set(np.flatnonzero(w)) == set(np.flatnonzero(np.abs(w_star) > 1e-4 * np.abs(w_star).max()))
    np.testing.assert_allclose(w, w_star, atol=1e-3 * np.abs(w_star).max())
    assert ref.objective == pytest.approx(2586.943195, rel=1e-8)


def test_metrics_file(tmp_path):
    _run("train_group_channels.reg", tmp_path, epochs=2)
    lines = (tmp_path / "train_group_channels" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[1])
    assert rec["epoch"] == 1 and {"loss", "val_loss", "val_acc", "seconds"} <= set(rec)
    regs = [k for k in rec if k.startswith("reg/")]
    assert len(regs) == 4 and all(isinstance(rec[k], float) for k in regs)
    # short, stable names: the atom (or set) and the selector's module, not the source line
    assert sorted(regs) == ["reg/group_l2_layers", "reg/l1_acts", "reg/l1_head", "reg/spectral_ball_head"]
