"""Progress bars (issue 14 item 1): drawn on stderr only on a terminal (or when forced), never
with --quiet or --json, never on stdout; the work and its results are the same with or without."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from regspec import progress
from regspec.cli import main as cli

pytest.importorskip("tqdm")
SPECS = Path(__file__).resolve().parent.parent / "specs"


class _Recorded(progress.Bar):
    made: list["_Recorded"] = []

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        _Recorded.made.append(self)


@pytest.fixture
def bars(monkeypatch):
    _Recorded.made = []
    monkeypatch.setattr(progress, "Bar", _Recorded)
    return _Recorded.made


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wanted_follows_terminals_quiet_and_the_override(monkeypatch):
    monkeypatch.delenv("REGSPEC_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stdout", _Tty())
    monkeypatch.setattr("sys.stderr", _Tty())
    assert progress.wanted() and not progress.wanted(quiet=True)
    monkeypatch.setattr("sys.stdout", io.StringIO())          # piped: no bar
    assert not progress.wanted()
    monkeypatch.setenv("REGSPEC_PROGRESS", "1")
    assert progress.wanted() and not progress.wanted(quiet=True)
    monkeypatch.setenv("REGSPEC_PROGRESS", "0")
    monkeypatch.setattr("sys.stdout", _Tty())
    assert not progress.wanted()


def test_bar_passes_items_through_and_draws_on_stderr_only(capsys):
    assert list(progress.bar(iter(range(5)), 5, "work", enabled=True)) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == "" and "work" in captured.err and "5/5" in captured.err
    assert list(progress.bar(range(3), 3, "work", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_sweep_bar_counts_points_and_json_stays_pure(tmp_path, monkeypatch, capsys, bars):
    pytest.importorskip("cvxpy")
    monkeypatch.setenv("REGSPEC_PROGRESS", "1")
    args = ["solve", str(SPECS / "lasso.reg"), "--sweep", "lam=[0.01, 0.1, 1]", "--out", str(tmp_path)]
    assert cli(args) == 0
    captured = capsys.readouterr()
    assert "sweep lam" in captured.err and "3/3" in captured.err and "\r" not in captured.out
    assert (bars[0].drawn, bars[0].total, bars[0].count, bars[0].note) == (True, 3, 3, "lam=1: optimal")
    assert cli(args[:-1] + [str(tmp_path / "j"), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["points"]) == 3 and "sweep lam" not in captured.err
    assert not bars[1].drawn and bars[1].count == 3
    assert cli(args[:-1] + [str(tmp_path / "q"), "--quiet"]) == 0
    assert "sweep lam" not in capsys.readouterr().err


def test_crosscheck_reports_each_spec_as_it_finishes(monkeypatch, capsys, bars):
    pytest.importorskip("cvxpy")
    from regspec import crosscheck as cc

    seen: list[tuple[str, list[str]]] = []
    checks = cc.crosscheck([SPECS / "lasso.reg", SPECS / "elastic_net.reg"],
                           on_spec=lambda path, done: seen.append((Path(path).name, [c.problem for c in done])))
    assert seen == [("lasso.reg", ["lasso"]), ("elastic_net.reg", ["elastic_net"])]
    assert [c.problem for c in checks] == ["lasso", "elastic_net"]
    monkeypatch.setenv("REGSPEC_PROGRESS", "1")
    assert cli(["crosscheck", str(SPECS / "lasso.reg")]) == 0
    captured = capsys.readouterr()
    assert "crosscheck" in captured.err and "1/1" in captured.err and "lasso.reg: agree" in captured.err
    assert (bars[0].drawn, bars[0].total, bars[0].count, bars[0].note) == (True, 1, 1, "lasso.reg: agree")
    assert "\r" not in captured.out and "1 agree" in captured.out


def test_trainer_batches_bar_only_when_wanted(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from regspec.backends.torch.train.runtime import Run

    batches = [1, 2, 3]
    monkeypatch.setenv("REGSPEC_PROGRESS", "1")
    run = Run(tmp_path / "r", quiet=True)
    assert run.progress(batches, 0, 2, 3) is batches               # --quiet: the batches as they are
    run = Run(tmp_path / "r", quiet=False)
    assert list(run.progress(batches, 0, 2, 3)) == batches
    assert "epoch 1/2" in capsys.readouterr().err
    monkeypatch.setenv("REGSPEC_PROGRESS", "0")
    assert run.progress(batches, 0, 2, 3) is batches


def test_status_line_is_erased_and_silent_when_off(capsys):
    with progress.status("building", enabled=True):
        pass
    err = capsys.readouterr().err
    assert err.startswith("building ...") and err.endswith("\r") and err.rstrip("\r").endswith(" ")
    with progress.status("building", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_plan_shows_a_status_line_on_stderr_and_the_same_plan_on_stdout(monkeypatch, capsys):
    spec = str(SPECS / "train_lasso.reg")
    monkeypatch.setenv("REGSPEC_PROGRESS", "0")
    assert cli(["plan", spec]) == 0
    quiet = capsys.readouterr()
    monkeypatch.setenv("REGSPEC_PROGRESS", "1")
    assert cli(["plan", spec]) == 0
    shown = capsys.readouterr()
    assert quiet.err == "" and "planning" in shown.err
    assert shown.out == quiet.out and "planning" not in shown.out
