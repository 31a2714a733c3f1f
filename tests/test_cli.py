"""The command line: exit codes, JSON output, and `check` staying free of torch and cvxpy."""
import json
import subprocess
import sys

from conftest import ROOT, SPECS

from regspec.cli import main


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regspec.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_check_does_not_import_torch_or_cvxpy():
    code = ("import sys\nfrom regspec.cli import main\nrc = main(['check', 'specs/lasso.reg'])\n"
            "print('IMPORTED', 'torch' in sys.modules, 'cvxpy' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "IMPORTED False False 0" in out.stdout, out.stdout + out.stderr
    assert "norm1(w)" in out.stdout and "convex" in out.stdout and "(442, 10)" in out.stdout


def test_solve_json_has_the_contracted_fields():
    out = run("solve", str(SPECS / "lasso.reg"), "--json", "--set", "lam=0.5")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"status", "objective", "variables", "backend", "solver", "iterations", "times"}
    assert result["status"] == "optimal" and result["backend"] == "cvxpy"
    assert set(result["times"]) >= {"parse", "analyse", "lower", "solve"}
    assert len(result["variables"]["w"]) == 10


def test_solve_torch_backend_json():
    out = run("solve", str(SPECS / "lasso.reg"), "--backend", "torch", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["solver"] == "FISTA" and result["residuals"]["prox_grad_rel"] <= result["tol"] <= 1e-6


def test_bad_spec_exits_1_with_located_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.reg"
    bad.write_text("problem p {\n  var x[3]\n  minimize nrom1(x)\n}\n")
    out = run("check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:3:12: error: unknown atom `nrom1`" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("solve", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_usage_errors_exit_2(capsys):
    assert main(["solve", str(SPECS / "lasso.reg"), "--set", "lam"]) == 2
    out = run("solve")
    assert out.returncode == 2


def test_missing_spec_file_exits_1():
    out = run("check", "no/such/file.reg")
    assert out.returncode == 1 and "no such spec file" in out.stderr


def test_explain_prints_each_pass_and_the_lowering():
    out = run("explain", str(SPECS / "lasso.reg"))
    assert out.returncode == 0, out.stderr
    for name in ("build", "resolve_names", "evaluate_constants", "infer_shapes", "analyse_curvature", "split_terms"):
        assert f"--- after {name}" in out.stdout
    assert "torch: algorithm fista" in out.stdout and "prox" in out.stdout
