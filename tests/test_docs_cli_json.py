"""`--json` on check / plan / explain: stdout is exactly one JSON document holding the same facts as
the text output; `regspec --version`; `regspec list`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regspec.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def _doc(r: subprocess.CompletedProcess):
    return json.loads(r.stdout)  # fails on anything but one JSON document


def test_check_json_matches_the_spec() -> None:
    r = _run("check", "--json", "specs/lasso.reg", "specs/train_prosparse.reg")
    assert r.returncode == 0, r.stderr
    doc = _doc(r)
    lasso, prosparse = doc["specs"]
    assert doc["ok"] and lasso["ok"] and prosparse["ok"]
    (p,) = lasso["problems"]
    decl = {d["name"]: d for d in p["declarations"]}
    assert decl["X"]["shape"] == [442, 10] and decl["w"]["shape"] == [10] and decl["lam"]["value"] == 1.0
    assert [t["role"] for t in p["objective"]["terms"]] == ["smooth", "prox"]
    assert set(p["backends"]) == {"cvxpy", "torch"}
    (t,) = prosparse["trains"]
    assert t["name"] == "prosparse_mlp" and t["rewrites"][0]["text"] == "rewrite GELU -> ReLU"
    assert t["terms"][0]["line"] == 16 and t["terms"][0]["lowering"] == "loss"


def test_check_json_bad_spec_is_located_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.reg"
    bad.write_text("problem p {\n  var x[\n}\n")
    r = _run("check", "--json", str(bad))
    assert r.returncode == 1
    err = _doc(r)["specs"][0]["errors"][0]
    assert (err["path"], err["line"], err["column"]) == (str(bad), 3, 1)
    assert f"{bad}:3:1: error" in r.stderr  # the rendered diagnostic still reaches the terminal


def test_explain_json_lists_every_pass() -> None:
    r = _run("explain", "--json", "specs/lasso.reg")
    assert r.returncode == 0, r.stderr
    (p,) = _doc(r)["problems"]
    assert [x["pass"] for x in p["passes"]][0] == "build" and "split_terms" in [x["pass"] for x in p["passes"]]
    assert p["cvxpy"]["dcp"] is True and any("fista" in line.lower() for line in p["torch"])


@pytest.mark.slow
def test_plan_json_matches_the_model() -> None:
    r = _run("plan", "--json", "specs/train_group_channels.reg")
    assert r.returncode == 0, r.stderr
    doc = _doc(r)
    assert doc["model_class"] == "CNN" and doc["parameters"] > 0
    first = doc["terms"][0]
    assert first["lowering"] == "prox" and [m["name"] for m in first["matches"]][:1] == ["layers.0.weight"]
    assert first["matches"][0]["shape"][0] == 16  # channels = [16, 32]


def test_version_and_list() -> None:
    from regspec import __version__

    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"regspec {__version__}"
    r = _run("list", "losses")
    assert r.returncode == 0 and "loss cross_entropy" in r.stdout


def test_emit_keeps_prints_from_python_and_from_compiled_code_off_stdout() -> None:
    code = ("import os\nfrom regspec.json_out import emit\n"
            "def build():\n    print('python noise')\n    os.write(1, b'fd noise\\n')\n    return {'a': float('nan'), 'b': [1, 2]}\n"
            "emit(build)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == {"a": None, "b": [1, 2]}
    assert "python noise" in r.stderr and "fd noise" in r.stderr


def test_solve_json_is_pure_with_a_verbose_solver() -> None:
    r = _run("solve", "specs/lasso.reg", "--backend", "cvxpy", "--json", "--solver-opt", "verbose=true")
    assert r.returncode == 0, r.stderr
    assert _doc(r)["status"] == "optimal"
    assert "CVXPY" in r.stderr  # the solver's log is kept, on stderr
