"""A spec path that names no file: the error says what was probably meant."""
from __future__ import annotations

from pathlib import Path

from conftest import SPECS
from test_newcomer_mistakes import input_error


def test_a_wrong_spec_path_says_what_was_probably_meant(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "lasso.reg").write_text((SPECS / "lasso.reg").read_text())
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    assert "note: did you mean specs/lasso.reg?" in input_error(capsys, ["check", "specs/lasso"])
    assert "note: did you mean specs/lasso.reg?" in input_error(capsys, ["solve", "specs/laso.reg"])
    assert "there is no folder spec " in input_error(capsys, ["check", "spec/lasso.reg"])
    err = input_error(capsys, ["solve", "specs"])
    assert "error: specs is a folder, not a spec file" in err and "e.g. specs/lasso.reg" in err
    assert "it holds no .reg file" in input_error(capsys, ["check", "empty"])

