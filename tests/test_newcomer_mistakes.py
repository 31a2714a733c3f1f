"""Mistakes a new user makes on the command line and in the API: each is a clear error naming what
and why (exit 2 for bad usage, 1 for bad input), never an internal error or a traceback, and
nothing already written is lost (no silent overwrite; files appear whole or not at all)."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from conftest import SPECS

import regspec
from regspec.cli import main
from regspec.files import write_atomic

LASSO = str(SPECS / "lasso.reg")


def usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    return err


def input_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


@pytest.mark.parametrize("argv,named", [
    (["solve", LASSO, "--max-iter", "0"], "--max-iter"),
    (["solve", LASSO, "--max-iter", "-5"], "--max-iter"),
    (["solve", LASSO, "--tol", "-1"], "--tol"),
    (["solve", LASSO, "--tol", "nan"], "--tol"),
    (["solve", LASSO, "--tol", "abc"], "--tol"),
    (["crosscheck", LASSO, "--rtol", "0"], "--rtol"),
    (["compile", "x.reg", "--epochs", "0"], "--epochs"),
    (["train", "x.reg", "--epochs", "-1"], "--epochs"),
    (["train", "x.reg", "--stop-after", "0"], "--stop-after"),
    (["train", "x.reg", "--checkpoint-every", "0"], "--checkpoint-every"),
])
def test_out_of_range_numbers_are_usage_errors_naming_the_option(capsys, argv: list[str], named: str) -> None:
    # before: --max-iter 0 was an internal error (exit 70), --tol nan ran to the iteration budget,
    # --epochs 0 reached the spec's schedule and blamed its line
    err = usage_error(capsys, argv)
    assert f"argument {named}" in err


@pytest.mark.parametrize("kwargs,says", [
    ({"max_iter": 0, "backend": "torch"}, "max_iter"),
    ({"max_iter": 2.5, "backend": "torch"}, "max_iter"),
    ({"tol": -1.0, "backend": "torch"}, "tol"),
    ({"tol": float("nan")}, "tol"),
    ({"device": "gpu"}, "unknown device `gpu`"),
    ({"dtype": "float16"}, "unknown dtype `float16`"),
    ({"params": "lam=0.3"}, "params must be a mapping"),   # was AttributeError
    ({"problem": 3}, "problem must be a block name"),      # was AttributeError
])
def test_api_refuses_bad_solver_settings_with_regspec_error(kwargs: dict, says: str) -> None:
    with pytest.raises(regspec.RegspecError, match=says):
        regspec.solve(LASSO, **kwargs)


def test_unwritable_outputs_name_the_path_and_why(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    err = input_error(capsys, ["solve", LASSO, "--sweep", "lam=[0.1,0.2]", "--quiet", "--out", str(blocker / "run")])
    assert f"cannot write {blocker / 'run' / 'path.json'}: {blocker} is a file, not a folder" in err
    assert blocker.read_text() == "mine"


def test_write_atomic_gives_new_files_the_default_mode_and_keeps_an_existing_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        new = write_atomic(tmp_path / "a" / "new.png", b"png")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # a bare temporary file would stay 0o600
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        write_atomic(kept, "new")
        assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "kept.txt"]  # no temporary left
    finally:
        os.umask(mask)


def test_compile_replaces_only_its_own_unedited_trainer(capsys, tmp_path: Path) -> None:
    spec = str(SPECS / "train_prosparse.reg")
    out = tmp_path / "trainer.py"
    assert main(["compile", spec, "-o", str(out)]) == 0
    first = out.read_text()
    assert main(["compile", spec, "-o", str(out)]) == 0          # compiling twice: same file
    assert out.read_text() == first
    out.write_text(first + "# my change\n")                      # edited: kept
    err = input_error(capsys, ["compile", spec, "-o", str(out)])
    assert "already exists" in err and "--overwrite" in err
    assert out.read_text().endswith("# my change\n")
    assert main(["compile", spec, "-o", str(out), "--overwrite"]) == 0
    assert out.read_text() == first
    mine = tmp_path / "model.py"                                  # a file of the user's own
    mine.write_text("class Net: ...\n")
    input_error(capsys, ["compile", spec, "-o", str(mine)])
    assert mine.read_text() == "class Net: ...\n"
    err = input_error(capsys, ["compile", spec, "-o", str(tmp_path)])
    assert "it is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.py", "trainer.py"]


def test_interrupted_train_says_how_to_resume(capsys, monkeypatch) -> None:
    import regspec.train_api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(regspec.train_api, "train", interrupted)
    assert main(["train", "specs/x.reg", "--out", "runs/x"]) == 130
    assert "interrupted; continue with: regspec train specs/x.reg --out runs/x --resume" in capsys.readouterr().err


def test_spec_and_result_print_as_summaries() -> None:
    spec = regspec.load(LASSO)
    assert repr(spec) == f"Spec({LASSO!r}, problems=['lasso'], trains=[])"  # not the syntax tree
    result = regspec.solve(spec, backend="cvxpy")
    assert repr(result).startswith("Result(problem='lasso', status='optimal', objective=2586.94")
    assert "variables={'w': shape (10,)}" in repr(result)
    text = str(result)  # what `regspec solve` prints
    assert text.splitlines()[0] == "problem lasso: optimal (cvxpy, CLARABEL, " + f"{result.iterations} iterations)"
    assert "objective: 2586.94" in text and "w (10,): [" in text and text.splitlines()[-1].startswith("times (s): ")


def test_a_name_off_by_underscores_is_the_first_suggestion() -> None:
    with pytest.raises(regspec.RegspecError) as e:
        regspec.load("problem p {\n  var w[3]\n  minimize norm_1(w) + sumsquares(w)\n}\n").compiled()
    assert e.value.first.notes[0].startswith("did you mean `norm1`")  # before: `norm_21` came first
    from regspec.diagnostics import suggest

    assert suggest("sumsquares", ["square", "sum_squares", "sum_largest"])[0] == "sum_squares"


@pytest.mark.parametrize("kwargs", [{"tol": 1e-9}, {"max_iter": 500}, {"dtype": "float32"}])
def test_auto_honours_a_torch_only_setting(kwargs: dict) -> None:
    # before: auto chose CVXPY for the lasso and the setting was silently ignored
    assert regspec.solve(LASSO, **kwargs).backend == "torch"
    assert regspec.solve(LASSO, solver="CLARABEL").backend == "cvxpy"


def test_train_keeps_a_users_trainer_py_in_a_fresh_out_folder(capsys, tmp_path: Path) -> None:
    # before: `regspec train SPEC --out proj` replaced proj/trainer.py, whatever it was
    (tmp_path / "trainer.py").write_text("print('mine')\n")
    err = input_error(capsys, ["train", str(SPECS / "train_prosparse.reg"), "--out", str(tmp_path), "--epochs", "1"])
    assert "trainer.py already exists" in err
    assert (tmp_path / "trainer.py").read_text() == "print('mine')\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer.py"]


def test_a_write_refused_by_the_system_names_the_file_and_the_reason(tmp_path: Path, monkeypatch) -> None:
    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)  # as in a folder without write permission (tests run as root)
    target = tmp_path / "out" / "path.json"
    with pytest.raises(regspec.RegspecError, match=f"cannot write {re.escape(str(target))}: Permission denied"):
        write_atomic(target, "{}")
    assert list((tmp_path / "out").iterdir()) == []  # no temporary file left behind


def test_compile_hint_names_a_python_that_has_regspec() -> None:
    # before: "run it with: python trainer.py": in a fresh shell `python` has no regspec
    import subprocess

    from regspec.train_cli import _this_python

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    r = subprocess.run(f"{_this_python()} -c 'import regspec'", shell=True, env=env, capture_output=True)
    assert r.returncode == 0, r.stderr


TRAIN_HEAD = """train t {
  model mlp(in = 64, hidden = [64], out = 10)
  data digits(split = 0.8)
  loss cross_entropy
  optimizer adamw(lr = 3e-3)
  epochs 4
"""


@pytest.mark.parametrize("weight,caret", [("cosine(1e-3 -> 0)", "cosine(1e-3 -> 0)"),
                                          ("step(1e-3, milestones = [2])", "step(1e-3, milestones = [2])")])
def test_a_schedule_inside_a_sum_says_to_split_the_statement(capsys, tmp_path: Path, weight: str, caret: str) -> None:
    # before: "schedules ... belong in `train` blocks" (it was in one) or "unknown regularizer `step`"
    path = tmp_path / "t.reg"
    path.write_text(TRAIN_HEAD + f'  regularize l1(param("head.weight")) * {weight} + l1(param("head.bias"))\n}}\n')
    err = input_error(capsys, ["check", str(path)])
    line = f'  regularize l1(param("head.weight")) * {weight} + l1(param("head.bias"))'
    assert f"t.reg:7:{line.index(caret) + 1}: error: a schedule weights a whole statement" in err
    assert "give each scheduled part its own `regularize` statement" in err
    path.write_text(TRAIN_HEAD + f'  regularize l1(param("head.weight")) * {weight}\n  regularize l1(param("head.bias"))\n}}\n')
    assert main(["check", str(path)]) == 0


def test_argument_lists_spell_keywords_as_a_spec_does(capsys, tmp_path: Path) -> None:
    path = tmp_path / "t.reg"
    path.write_text(TRAIN_HEAD + '  regularize l1(param("head.weight")) * warmup(1, thn = 1e-3)\n}\n')
    err = input_error(capsys, ["check", str(path)])
    assert "accepted arguments: `w`, `then`, `from`" in err  # not Python's `from_`


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
    assert "did you mean" not in input_error(capsys, ["check", "specs/nosuch.reg"])  # `.reg` alone is no likeness
    assert "did you mean specs/lasso.reg?" in input_error(capsys, ["check", "specs/lasso.rg"])


def test_fmt_into_a_folder_without_write_permission_is_an_error_not_a_bug(capsys, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "messy.reg"
    path.write_text("problem p {\n  var w[3]\n    minimize   sum_squares(w)\n}\n")
    before = path.read_text()

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    err = input_error(capsys, ["fmt", str(path)])  # was exit 70, "internal error: PermissionError"
    assert f"cannot write {path}: Permission denied" in err and path.read_text() == before


def test_the_wrong_command_for_a_block_names_the_right_one(capsys) -> None:
    err = input_error(capsys, ["solve", str(SPECS / "train_prosparse.reg")])
    assert "has no `problem` block" in err and "run with `regspec train`" in err
    err = input_error(capsys, ["train", LASSO])
    assert "has no `train` block" in err and "its problem blocks (lasso) run with `regspec solve`" in err


def test_api_epochs_below_one_is_named() -> None:
    spec = str(SPECS / "train_prosparse.reg")
    for call in (lambda: regspec.compile_trainer(spec, epochs=0), lambda: regspec.train(spec, epochs=0, out="unused")):
        with pytest.raises(regspec.RegspecError, match="epochs must be a whole number >= 1, got 0"):
            call()
    assert not Path("unused").exists()


USER_MODEL = """import torch


class Net(torch.nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(64, width)])
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x):
        return self.head(torch.relu(self.layers[0](x)))
"""


def test_a_model_module_beside_the_spec_is_found_by_the_console_script(tmp_path: Path) -> None:
    # docs/security.md: "a module under the spec's folder or the current directory (your own code)":
    # `regspec` is a console script, so neither folder is on sys.path; it said "is it on PYTHONPATH?"
    import subprocess
    import sys

    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mymodels.py").write_text(USER_MODEL)
    (tmp_path / "proj" / "ft.reg").write_text(TRAIN_HEAD.replace('mlp(in = 64, hidden = [64], out = 10)',
                                                                 '"mymodels:Net"(width = 16)') + "}\n")
    regspec_exe = str(Path(sys.executable).parent / "regspec")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([regspec_exe, "plan", "proj/ft.reg"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f'user code  model "mymodels:Net" runs {tmp_path / "proj" / "mymodels.py"}' in r.stdout
    source = regspec.compile_trainer(str(tmp_path / "proj" / "ft.reg"))
    assert "    allow_imports(dirs=[spec_dir])" in source  # the trainer finds it from any folder


def test_resume_without_a_run_writes_nothing(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    err = input_error(capsys, ["train", str(SPECS / "train_prosparse.reg"), "--out", str(out), "--resume"])
    assert f"cannot resume: no checkpoint at {out / 'checkpoint.pt'}" in err
    assert not out.exists()  # was: a folder holding a trainer.py


@pytest.mark.parametrize("argv,hint", [
    (["solve", LASSO, "--backnd", "torch"], "`--backnd`: did you mean `--backend`?"),
    (["solve", LASSO, "-p", "lam=0.3"], "`lam=0.3`: a parameter's value is given as `--set lam=0.3`"),
    (["train", "x.reg", "--outt", "runs/x"], "`--outt`: did you mean `--out`?"),
])
def test_an_unknown_word_gets_the_closest_option(capsys, argv: list[str], hint: str) -> None:
    err = usage_error(capsys, argv)
    assert "unrecognized arguments" in err and hint in err


def test_train_options_that_cannot_apply_are_refused_before_anything_is_written(capsys, tmp_path: Path) -> None:
    spec = str(SPECS / "train_prosparse.reg")
    out = tmp_path / "run"
    assert "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'" in usage_error(
        capsys, ["train", spec, "--out", str(out), "--device", "gpu"])
    assert main(["train", spec, "--out", str(out), "--change-epochs"]) == 2  # silently ignored before
    assert "it goes with --resume" in capsys.readouterr().err
    with pytest.raises(regspec.RegspecError, match="it goes with resume=True"):
        regspec.train(spec, out=out, change_epochs=True)
    assert not out.exists()


def test_check_of_an_empty_file_warns(capsys, tmp_path: Path) -> None:
    path = tmp_path / "empty.reg"
    path.write_text("")
    assert main(["check", str(path)]) == 0  # valid: a file of `let`s alone is a spec
    assert "warning: no `problem` or `train` block: nothing to solve or train" in capsys.readouterr().out


def test_an_attached_regularizer_prints_what_it_does() -> None:
    import torch

    model = torch.nn.Sequential()
    model.add_module("layers", torch.nn.ModuleList([torch.nn.Linear(64, 128), torch.nn.Linear(128, 64)]))
    model.add_module("head", torch.nn.Linear(64, 10))
    reg = regspec.attach(str(SPECS / "train_spectral.reg"), model, torch.optim.SGD(model.parameters(), lr=0.1),
                         steps_per_epoch=8)
    assert repr(reg) == ("Regularizer(loss terms=[], steps after optimizer.step()=['spectral_ball(layers.0.weight, "
                         "layers.1.weight)', 'spectral_ball(head.weight)'], steps_per_epoch=8)")


@pytest.mark.parametrize("text,where,header", [("a,b\n1,2\n3,4\n", "row 1, column 1", True),
                                                ("1,2\n3,\n", "row 2, column 2", False)])
def test_a_csv_cell_that_is_not_a_number_is_located(tmp_path: Path, text: str, where: str, header: bool) -> None:
    (tmp_path / "d.csv").write_text(text)
    (tmp_path / "p.reg").write_text('problem p {\n  data A = csv("d.csv")\n  var x[2]\n'
                                    '  minimize sum_squares(A @ x - 1)\n}\n')
    with pytest.raises(regspec.RegspecError) as e:
        regspec.load(str(tmp_path / "p.reg")).compiled()
    assert f"has an empty or non-numeric cell in {where}" in str(e.value)
    assert ("skip it with skip_header = 1" in str(e.value)) == header  # a header line: the usual cause
