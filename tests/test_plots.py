"""Plots (issue 14 item 2): each picture is a valid PNG of sensible size, written next to the
results it depicts, and its data are the run's own records (the drawn series are returned and
compared with metrics.jsonl / path.json)."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from regspec import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk; fails unless the file starts as a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"      # written whole (atomic write, no truncation)
    return struct.unpack(">II", data[16:24])


def _records() -> list[dict]:
    rec = []
    for e in range(4):
        rec.append({"epoch": e, "loss": 2.0 / (e + 1), "val_loss": 2.2 / (e + 1), "val_acc": 0.5 + 0.1 * e,
                    "reg/l1_head": 10.0 - e, "weight/l1_head": 1e-3 * (e + 1),
                    "tensor/head.weight/zero_frac": 0.2 * e, "tensor/head.weight/rank": 10 - e,
                    "tensor/head.weight/spectral_norm": 2.0 if e else None, "seconds": 0.1 * e})
    return rec


def test_training_series_groups_keys_and_keeps_gaps():
    series = plots.training_series(_records())
    assert list(series) == ["loss", "validation", "regularizer values", "regularizer weights",
                            "sparsity (fraction of exact zeros)", "rank", "spectral norm"]
    assert set(series["loss"]) == {"loss", "val_loss"} and set(series["validation"]) == {"val_acc"}
    xs, ys = series["spectral norm"]["tensor/head.weight/spectral_norm"]
    assert xs == [1.0, 2.0, 3.0, 4.0] and math.isnan(ys[0]) and ys[1:] == [2.0, 2.0, 2.0]
    assert "seconds" not in {k for panel in series.values() for k in panel}


def test_training_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    series = plots.training_curves(_records(), path)
    w, h = png_size(path)
    assert 600 <= w <= 2000 and 300 <= h <= 2500
    assert series["loss"]["loss"][1][-1] == _records()[-1]["loss"]


def test_a_training_run_draws_its_curves(tmp_path):
    """A real (tiny) run: curves.png is listed in summary.json and its last points are the last
    logged epoch, including the per-epoch tensor statistics of the constrained tensor."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    import regspec

    spec = tmp_path / "s.reg"
    spec.write_text("""
train tiny {
  model mlp(in = 64, hidden = [16], out = 10, act = "relu")
  data  digits(split = 0.8)
  loss  cross_entropy
  optimizer adamw(lr = 1e-2, weight_decay = 0)
  batch 256
  epochs 3
  seed 0
  regularize l1(param("head.weight")) * 1e-2 via prox
  constrain param("layers.0.weight") in spectral_ball(1.0)
}
""")
    out = tmp_path / "run"
    summary = regspec.train(str(spec), out=out, quiet=True)
    assert summary["plots"] == ["curves.png"]
    assert json.loads((out / "summary.json").read_text())["plots"] == ["curves.png"]
    png_size(out / "curves.png")
    records = plots.read_metrics(out / "metrics.jsonl")
    assert len(records) == 3
    last = records[-1]
    # the constraint holds after each epoch's projection: spectral norm <= 1 (up to rounding)
    assert last["tensor/layers.0.weight/spectral_norm"] <= 1.0 + 1e-5
    assert last["tensor/head.weight/zero_frac"] == summary["tensors"]["head.weight"]["zero_frac"]
    series = plots.training_series(records)
    drawn = {k: ys[-1] for panel in series.values() for k, (_, ys) in panel.items()}
    for key in ("loss", "val_loss", "tensor/layers.0.weight/spectral_norm", "tensor/head.weight/zero_frac"):
        assert drawn[key] == last[key]
    assert any(k.startswith("reg/") for k in drawn) and any(k.startswith("weight/") for k in drawn)
    assert summary["metrics"]["loss"] == last["loss"]
    assert not any(k.startswith("tensor/") for k in summary["metrics"])


def test_missing_matplotlib_is_a_note(monkeypatch):
    monkeypatch.setattr(plots.importlib.util, "find_spec", lambda name: None)
    assert not plots.available()
    assert "regspec[plot]" in plots.missing_note("training curves")


# ------------------------------------------------------------------ sweep paths
SPECS = Path(__file__).resolve().parent.parent / "specs"


def _sweep(spec: str, text: str):
    pytest.importorskip("cvxpy")
    import regspec
    from regspec.sweep import parse_sweep, run_sweep

    return run_sweep(regspec.load(SPECS / spec), parse_sweep(text))


def test_lasso_path_plot_draws_the_solutions(tmp_path):
    from regspec.sweep import NONZERO_RTOL, path_series, plot

    result = _sweep("lasso.reg", "lam=logspace(-3,0,5)")
    series = path_series(result)
    w = np.array([p.variables["w"] for p in result.points])
    assert series["x"] == [p.value for p in result.points]
    assert series["objective"][-1] == result.points[-1].objective
    assert series["entries"]["w"]["w[3]"] == w[:, 3].tolist()       # every entry of a small vector
    assert series["nonzeros"]["w"] == [int(n) for n in (np.abs(w) > NONZERO_RTOL * np.abs(w).max()).sum(axis=1)]
    # more penalty, fewer nonzeros (the lasso at lam = 1 keeps strictly fewer than at 1e-3)
    assert series["nonzeros"]["w"][-1] < series["nonzeros"]["w"][0]
    w_px, h_px = png_size(plot(result, tmp_path))
    assert 500 <= w_px <= 1500 and 600 <= h_px <= 3000


def test_matrix_path_plot_shows_largest_entries_not_a_constant_norm(tmp_path):
    """A transport plan sums to 1 at every point: its largest entries (by index) and its nonzero
    count are drawn instead of ||P||_1."""
    from regspec.sweep import PLOTTED_LARGEST, path_series, plot

    result = _sweep("group_lasso_ot.reg", "rho=[0.001, 0.1, 1]")
    series = path_series(result)
    P = np.array([p.variables["P"] for p in result.points])
    entries = series["entries"]["P"]
    assert len(entries) == PLOTTED_LARGEST and series["sizes"]["P"] == P[0].size
    peak = np.abs(P).max(axis=0)
    for label, ys in entries.items():
        i, j = (int(k) for k in label[2:-1].split(","))
        assert ys == P[:, i, j].tolist()
        assert peak[i, j] >= np.sort(peak.reshape(-1))[-PLOTTED_LARGEST]
    assert len(set(series["nonzeros"]["P"])) > 1          # informative, unlike ||P||_1 = 1
    png_size(plot(result, tmp_path))


def test_sweep_cli_lists_the_plot_and_skips_it_without_matplotlib(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cvxpy")
    from regspec.cli import main as cli

    assert cli(["solve", str(SPECS / "lasso.reg"), "--sweep", "lam=[0.1, 1]", "--out", str(tmp_path / "a"),
                "--json"]) == 0
    data = json.loads(capsys.readouterr().out)        # pure JSON, the files listed in it
    assert data["files"] == {"path": str(tmp_path / "a" / "path.json"), "plot": str(tmp_path / "a" / "path.png")}
    png_size(tmp_path / "a" / "path.png")
    monkeypatch.setattr(plots, "available", lambda: False)
    assert cli(["solve", str(SPECS / "lasso.reg"), "--sweep", "lam=[0.1, 1]", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "path plot (path.png) not drawn: matplotlib is not installed" in out
    assert sorted(f.name for f in (tmp_path / "b").iterdir()) == ["path.json"]


TINY = """
train tiny {
  model mlp(in = 64, hidden = [8], out = 10, act = "relu")
  data  digits(split = 0.8)
  loss  cross_entropy
  optimizer adamw(lr = 1e-2, weight_decay = 0)
  batch 512
  epochs 3
  seed 0
  regularize l1(param("head.weight")) * 1e-2 via prox
}
"""


def test_a_run_stopped_early_has_its_curves(tmp_path):
    pytest.importorskip("torch")
    import regspec

    spec = tmp_path / "s.reg"
    spec.write_text(TINY)
    out = tmp_path / "run"
    assert regspec.train(str(spec), out=out, quiet=True, argv=["--stop-after", "1"]) == {}
    png_size(out / "curves.png")
    assert not (out / "summary.json").exists()
    assert len(plots.read_metrics(out / "metrics.jsonl")) == 1


def test_curves_are_redrawn_during_a_long_run(tmp_path, monkeypatch):
    """Every epoch once CURVES_EVERY_S has passed (0 s here), then once more at the end."""
    pytest.importorskip("torch")
    import regspec
    from regspec.backends.torch.train import runtime

    drawn: list[int] = []
    real = plots.training_curves
    monkeypatch.setattr(plots, "training_curves", lambda records, path, title="": (
        drawn.append(len(records)), real(records, path, title))[1])
    spec = tmp_path / "s.reg"
    spec.write_text(TINY)
    regspec.train(str(spec), out=tmp_path / "a", quiet=True)
    assert drawn == [3]                       # a short run: drawn once, at the end
    monkeypatch.setattr(runtime, "CURVES_EVERY_S", 0.0)
    drawn.clear()
    regspec.train(str(spec), out=tmp_path / "b", quiet=True)
    assert drawn == [1, 2, 3]


# ------------------------------------------------------------------ solver convergence
def test_convergence_plot_draws_the_solver_history(tmp_path):
    pytest.importorskip("torch")
    import regspec

    result = regspec.solve(str(SPECS / "sparse_logistic.reg"), backend="torch")
    assert result.status == "optimal" and len(result.history) >= 2
    path = tmp_path / "conv.png"
    series = plots.convergence(result.history, path, tol=result.tol, keys=result.residuals)
    png_size(path)
    assert set(series) <= set(result.residuals) and "prox_grad_rel" in series
    xs, ys = series["prox_grad_rel"]
    assert xs[-1] == result.iterations and ys[-1] == result.residuals["prox_grad_rel"]
    assert ys[-1] <= result.tol < ys[0]        # it drew the descent to the stopping tolerance
    assert "history" not in result.to_json()


def test_solve_plot_cli(tmp_path, capsys):
    pytest.importorskip("torch")
    from regspec.cli import main as cli

    png = tmp_path / "c.png"
    assert cli(["solve", str(SPECS / "sparse_logistic.reg"), "--backend", "torch", "--plot", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == {"plot": str(png)}
    png_size(png)
    assert cli(["solve", str(SPECS / "lasso.reg"), "--backend", "cvxpy", "--plot", str(tmp_path / "n.png")]) == 0
    assert "no convergence plot: CLARABEL (cvxpy backend) recorded no residual history" in capsys.readouterr().err
    assert not (tmp_path / "n.png").exists()
    assert cli(["solve", str(SPECS / "lasso.reg"), "--sweep", "lam=[1]", "--plot"]) == 2
