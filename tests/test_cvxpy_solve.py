"""The CVXPY backend's solver policy, option pass-through, and non-optimal statuses."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import regspec
from regspec.diagnostics import RegspecError

from conftest import SPECS

INFEASIBLE = "problem infeasible {\n  var x[2] >= 0\n  minimize sum(x)\n  subject to sum(x) <= -1\n}\n"
UNBOUNDED = "problem unbounded {\n  var x[2]\n  minimize sum(x)\n  subject to x <= 1\n}\n"


def program_of(text_or_path):
    from regspec.backends.cvxpy.lower import lower

    spec = regspec.load(text_or_path)
    return lower(spec.compiled().ir)


@pytest.mark.parametrize("name,solver", [
    ("lasso", "CLARABEL"), ("group_lasso", "CLARABEL"), ("class_ot", "CLARABEL"), ("tv_denoise_2d", "CLARABEL"),
    ("metric_nearness", "CLARABEL"),                      # LP, QP, SOCP: interior point
    ("sparse_logistic", "SCS"),                           # exponential cones
    ("d_optimal_design", "SCS"), ("maxcut_sdp", "SCS"),   # PSD cones (and exp for log_det)
    ("matrix_completion", "SCS"), ("robust_pca", "SCS"), ("nuclear_regression", "SCS"), ("ggm_totpos", "SCS"),
])
def test_default_solver_policy(name, solver):
    from regspec.backends.cvxpy.solve import choose_solver

    assert choose_solver(program_of(SPECS / f"{name}.reg"), None) == solver


def test_large_problems_go_to_scs():
    from regspec.backends.cvxpy.solve import LARGE_NNZ, choose_solver, problem_features

    program = program_of("problem big {\n  data A = randn(1001, 1000, seed = 0)\n  data b = randn(1001, seed = 1)\n"
                         "  var x[1000]\n  minimize sum_squares(A @ x - b)\n}\n")
    assert problem_features(program.problem)["nnz"] > LARGE_NNZ
    assert choose_solver(program, None) == "SCS"


def test_requested_solver_overrides_and_unknown_solver_is_an_error():
    from regspec.backends.cvxpy.solve import choose_solver

    program = program_of(SPECS / "lasso.reg")
    assert choose_solver(program, "scs") == "SCS"
    with pytest.raises(RegspecError, match="not installed; installed: .*CLARABEL"):
        choose_solver(program, "no_such_solver")


def test_solver_options_pass_through():
    r = regspec.solve(SPECS / "d_optimal_design.reg", backend="cvxpy", solver_opts={"max_iters": 5})
    assert r.solver == "SCS" and r.iterations == 5
    assert r.status == "optimal_inaccurate"
    assert r.info["solver_opts"] == {"max_iters": 5}
    r = regspec.solve(SPECS / "d_optimal_design.reg", backend="cvxpy")  # automatic SCS runs at 1e-6
    assert r.info["solver_opts"]["eps_abs"] == 1e-6 and r.status == "optimal"
    with pytest.raises(RegspecError, match="rejected its options"):
        regspec.solve(SPECS / "lasso.reg", solver_opts={"not_an_option": 1})


@pytest.mark.parametrize("text,status", [(INFEASIBLE, "infeasible"), (UNBOUNDED, "unbounded")])
@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
def test_non_optimal_status_is_reported(text, status, solver):
    r = regspec.solve(regspec.load(text), solver=solver)
    assert r.status == status
    assert not r.ok and r.objective is None and r.variables == {}
    assert r.info["message"]


@pytest.mark.parametrize("text,status", [(INFEASIBLE, "infeasible"), (UNBOUNDED, "unbounded")])
def test_cli_exit_code_3_for_non_optimal(tmp_path, text, status):
    path = tmp_path / "p.reg"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(path)], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines()[0].startswith(f"problem {text.split()[1]}: {status} (cvxpy")
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(path), "--json", "--solver", "SCS",
                          "--solver-opt", "eps_abs=1e-7"], capture_output=True, text=True)
    assert out.returncode == 3
    data = json.loads(out.stdout)
    assert data["status"] == status and data["objective"] is None and data["solver"] == "SCS"
    assert data["info"]["solver_opts"] == {"eps_abs": 1e-7}


def test_psd_domain_makes_a_symmetric_variable():
    program = program_of(SPECS / "maxcut_sdp.reg")
    X = program.variables["X"]
    assert X.is_symmetric() and X.attributes["PSD"]
    r = regspec.solve(SPECS / "maxcut_sdp.reg")
    assert np.linalg.eigvalsh(r.variables["X"]).min() >= -1e-6


def test_parameters_stay_symbolic_dpp():
    program = program_of(SPECS / "class_ot.reg")
    assert program.problem.is_dpp()
    assert set(program.params) == {"rho"}


def test_automatic_scs_falls_back_to_clarabel(monkeypatch):
    """An automatic SCS run that stops short of optimal (here: an iteration budget of 5) is re-solved
    by Clarabel; a requested SCS, or one with options, is left as it ended."""
    from regspec.backends.cvxpy import solve as cvx_solve

    monkeypatch.setitem(cvx_solve.SCS_DEFAULTS, "max_iters", 5)
    r = regspec.solve(SPECS / "d_optimal_design.reg", backend="cvxpy")
    assert r.status == "optimal" and r.solver == "CLARABEL"
    assert r.info["fallback"] == "SCS stopped at `optimal_inaccurate` after 5 iterations; re-solved with CLARABEL"
    assert r.objective == pytest.approx(3.1125686, abs=1e-6)
    r = regspec.solve(SPECS / "d_optimal_design.reg", solver="SCS", solver_opts={"max_iters": 5})
    assert r.status == "optimal_inaccurate" and "fallback" not in r.info
    # SCS's infeasibility certificate stands: no fallback
    monkeypatch.undo()
    r = regspec.solve(regspec.load(INFEASIBLE.replace("x[2] >= 0", "x[2, 2] in psd").replace("sum(x) <= -1",
                                                                                              "trace(x) <= -1")))
    assert r.status == "infeasible" and r.solver == "SCS" and "fallback" not in r.info


def test_naming_a_cvxpy_solver_or_its_options_selects_the_cvxpy_backend():
    """auto never sends a problem to the torch backend when the user named a CVXPY solver or its
    options; the torch backend refuses options it would otherwise ignore."""
    r = regspec.solve(SPECS / "lasso.reg", solver="CLARABEL")
    assert r.backend == "cvxpy" and r.solver == "CLARABEL"
    r = regspec.solve(SPECS / "lasso.reg", solver_opts={"max_iter": 500})
    assert r.backend == "cvxpy"
    with pytest.raises(RegspecError, match="apply to the cvxpy backend"):
        regspec.solve(SPECS / "lasso.reg", backend="torch", solver_opts={"verbose": True})


LOG_UNBOUNDED = """problem p {
  var x[4]
  maximize sum(log1p(x + 0.5))
  subject to -sum(log(x + 2)) <= 10
}
"""


def test_optimal_point_on_an_improving_ray_is_reported_probably_unbounded():
    """sum(log1p(x)) grows without bound but only like a logarithm: Clarabel and SCS both report
    `optimal` at huge points (CVXPY alone: x ~ 7.5e13). The objective improves at 2x and 4x (each
    feasible), so the point is no optimum: the status says probably unbounded, with no number."""
    result = regspec.solve(regspec.load(LOG_UNBOUNDED), backend="cvxpy")
    assert result.status == "unbounded_inaccurate" and result.objective is None
    assert "ray" in result.info["message"] and "probably unbounded" in result.info["message"]


def test_a_large_bounded_optimum_stays_optimal():
    """The ray check runs on large points (entries >= 1e3) but a true optimum does not improve
    along its ray: min ||x - 1e7||^2 + |x| keeps `optimal` and its closed form (x = 1e7 - 1/2)."""
    text = "problem p {\n  var x[3]\n  minimize sum_squares(x - 10000000) + norm1(x)\n}\n"
    result = regspec.solve(regspec.load(text), backend="cvxpy")
    assert result.status == "optimal"
    np.testing.assert_allclose(result.variables["x"], 1e7 - 0.5, rtol=1e-9)


def test_canonicalisation_notes_are_kept_in_info_not_printed(recwarn):
    """CVXPY's "is being approximated" note (advice a spec cannot take: approx=False) is not printed;
    a nonzero stated error goes into info["approximation"]; any other warning passes through."""
    import warnings

    from regspec.backends.cvxpy.lower import canonicalising

    info: dict = {}
    with canonicalising(info):
        warnings.warn("geo_mean is being approximated (error: 0.00e+00) using 6 SOC constraints. Consider "
                      "using approx=False to use power cones instead.", UserWarning)
    assert info == {} and len(recwarn) == 0
    with canonicalising(info):
        warnings.warn("power is being approximated (error: 1.50e-03) using 4 SOC constraints. Consider x.",
                      UserWarning)
        warnings.warn("something else", RuntimeWarning)
    assert info["approximation"] == "power is being approximated (error: 1.50e-03) using 4 SOC constraints."
    assert [str(w.message) for w in recwarn] == ["something else"]


def test_an_exact_geo_mean_prints_no_cvxpy_warning():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(SPECS.parent / "tests" / "classics" /
                          "geo_mean_budget.reg"), "--backend", "cvxpy"], capture_output=True, text=True)
    assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr
