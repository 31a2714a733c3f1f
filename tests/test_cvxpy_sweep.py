"""Parameter sweeps: one compiled DPP problem re-solved along the values (no recompilation), the
path written atomically as JSON and plotted as PNG."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError
from regspec.sweep import parse_sweep, plot, run_sweep, write_json

from conftest import SPECS


@pytest.mark.parametrize("text,values,scale", [
    ("lam=logspace(-3,0,4)", [1e-3, 1e-2, 1e-1, 1.0], "log"),
    ("lam = linspace(0, 1, 3)", [0.0, 0.5, 1.0], "linear"),
    ("lam=[0.1, 0.2]", [0.1, 0.2], "linear"),
    ("rho=[0.001,0.01,0.1,1]", [0.001, 0.01, 0.1, 1.0], "log"),
    ("lam=0.5", [0.5], "linear"),
    ("lam=linspace(-1e-1, 2.5e0, 2)", [-0.1, 2.5], "linear"),
])
def test_parse_sweep(text, values, scale):
    plan = parse_sweep(text)
    assert plan.param == text.split("=")[0].strip()
    np.testing.assert_allclose(plan.values, values, rtol=1e-12)
    assert plan.scale == scale


@pytest.mark.parametrize("text", ["lam", "lam=logspace(1,2)", "lam=[]", "lam=['a']", "1x=[1]", "lam=range(3)"])
def test_parse_sweep_rejects(text):
    with pytest.raises(RegspecError):
        parse_sweep(text)


def test_sweep_reuses_one_compiled_problem_and_matches_single_solves(monkeypatch):
    import cvxpy.reductions.chain as chain

    calls = {"apply": 0}
    original = chain.Chain.apply

    def counting(self, *args, **kwargs):
        calls["apply"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(chain.Chain, "apply", counting)
    spec = regspec.load(SPECS / "lasso.reg")
    result = run_sweep(spec, parse_sweep("lam=logspace(-2,0.5,6)"))
    # CVXPY canonicalizes once (the DPP problem); later points only refill the parameter
    assert calls["apply"] == 1
    assert result.ok and len(result.points) == 6
    for point in result.points[::2]:
        single = regspec.solve(regspec.load(SPECS / "lasso.reg"), backend="cvxpy", params={"lam": point.value})
        assert point.objective == pytest.approx(single.objective, rel=1e-7)
        np.testing.assert_allclose(point.variables["w"], single.variables["w"], atol=1e-4)
    # the path is monotone: a larger penalty never lowers the optimum of this objective
    objectives = [p.objective for p in result.points]
    assert objectives == sorted(objectives)


def test_sweep_warm_starts_scs():
    result = run_sweep(regspec.load(SPECS / "class_ot.reg"),
                       parse_sweep("rho=[0.05, 0.1]"), solver="SCS", solver_opts={"eps_abs": 1e-7, "eps_rel": 1e-7})
    assert result.solver == "SCS" and result.ok
    # the second point starts from the first's solution: fewer iterations than the cold start
    assert result.points[1].iterations < result.points[0].iterations


def test_sweep_errors_are_located_or_named():
    spec = regspec.load(SPECS / "lasso.reg")
    with pytest.raises(RegspecError, match="no parameter `lamb`.*\n.*did you mean `lam`"):
        run_sweep(spec, parse_sweep("lamb=[1]"))
    with pytest.raises(RegspecError, match="outside its declared domain"):
        run_sweep(spec, parse_sweep("lam=[-1, 1]"))


def test_write_json_and_plot(tmp_path):
    result = run_sweep(regspec.load(SPECS / "group_lasso.reg"), parse_sweep("lam=logspace(-2,0,3)"))
    path = write_json(result, tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["problem"] == "group_lasso" and data["parameter"] == "lam" and data["scale"] == "log"
    assert len(data["points"]) == 3 and all(p["status"] == "optimal" for p in data["points"])
    assert len(data["points"][0]["variables"]["w"]) == 40
    assert [f.name for f in (tmp_path / "out").iterdir()] == ["path.json"]  # no temporary left behind
    png = plot(result, tmp_path / "out")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sweep(tmp_path):
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(SPECS / "lasso.reg"), "--sweep",
                          "lam=logspace(-3,0,5)", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "sweep over lam (5 points, cvxpy, CLARABEL)" in out.stdout
    data = json.loads((tmp_path / "path.json").read_text())
    assert data["values"] == pytest.approx(list(np.logspace(-3, 0, 5)))
    assert (tmp_path / "path.png").exists()
    # default output folder: runs/sweep_<problem> under the working directory
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(SPECS / "group_lasso.reg"), "--sweep",
                          "lam=[0.05,0.1]"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "runs" / "sweep_group_lasso" / "path.json").exists()
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(SPECS / "lasso.reg"), "--sweep",
                          "lam=[1]", "--set", "lam=2"], capture_output=True, text=True)
    assert out.returncode == 2 and "both swept and fixed" in out.stderr


def test_sweep_of_a_nonconvex_spec_is_a_located_dcp_error():
    spec = regspec.load("problem p {\n  param lam = 1 >= 0\n  var x[3]\n  minimize lam * norm1(log(x))\n}\n")
    with pytest.raises(RegspecError) as info:
        run_sweep(spec, parse_sweep("lam=[1, 2]"))
    d = info.value.first
    assert (d.span.line, d.span.column) == (4, 18)
    assert "norm1 is convex, but its argument `log(x)` is concave" in d.message
