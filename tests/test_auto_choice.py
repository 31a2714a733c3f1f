"""auto's backend choice: the cost model's features are read from the compiled problem (no backend
imported), the choice follows the estimates, and `check` / `explain` print it with the reason.
The constants themselves come from bench/bench_auto_choice.py (no timing is asserted here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import regspec
from regspec.api import CVXPY_IMPORT_S, FRONT_END_S, TORCH_IMPORT_S, cost_features, explain_choice

from ot_fixtures import CLASS_OT, write_ot

ROOT = Path(__file__).resolve().parents[1]


def class_ot(tmp_path: Path, n: int, k: int = 3) -> regspec.Spec:
    return write_ot(tmp_path, n, CLASS_OT, classes=k)[0]


def test_features_count_the_pairs_cones_and_dual_entries(tmp_path):
    n, k = 60, 3
    f = cost_features(class_ot(tmp_path, n, k), None)
    pairs = k * (n // k) * (n // k - 1) // 2  # same-class pairs
    assert f["algorithm"] == "pdhg" and f["var_entries"] == n * n
    # the fusion block (pairs x n) and the two marginal blocks (n each)
    assert f["dual_entries"] == pairs * n + 2 * n
    assert f["cone_work"] == pairs * n * n  # one cone of dim n per pair, counted count x dim^2


def test_many_fusion_cones_go_to_torch_few_to_cvxpy(tmp_path):
    """Clarabel's work on the sum-of-norms cones grows like count x dim^2 (~20 s at n = 60 in
    bench_pdhg_small, against well under a second for restarted PDHG); at n = 12 CVXPY's smaller
    import wins."""
    fresh = set()  # a fresh process: neither backend imported yet (the CLI's case)
    big = explain_choice(class_ot(tmp_path, 60), None, fresh)
    assert big.backend == "torch" and "PDHG" in big.reason and "cone work" in big.reason
    (tmp_path / "small").mkdir()
    assert explain_choice(class_ot(tmp_path / "small", 12), None, fresh).backend == "cvxpy"


def test_estimates_drop_an_import_already_paid():
    """A second solve in one process does not pay the backend's import again."""
    code = ("import json; from regspec.api import estimate_seconds as e; "
            "f = dict(algorithm='fista', data_entries=1000, var_entries=10, dual_entries=0, cone_work=0); "
            "a = e(f); import torch, cvxpy; print(json.dumps([a, e(f)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    before, after = json.loads(out.stdout)
    # the front end (interpreter, NumPy, regspec) and the backend's import are paid once
    assert before["torch"] - after["torch"] == pytest.approx(FRONT_END_S + TORCH_IMPORT_S)
    assert before["cvxpy"] - after["cvxpy"] == pytest.approx(FRONT_END_S + CVXPY_IMPORT_S)


def test_non_dcp_goes_to_torch_and_no_splitting_goes_to_cvxpy():
    nonconvex = regspec.load("""problem nc {
  var x[3]
  minimize sum_squares(x) - norm2(x)
}
""")
    c = explain_choice(nonconvex, None)
    assert c.backend == "torch" and "not DCP" in c.reason
    conic = regspec.load(ROOT / "specs" / "metric_nearness.reg")
    assert cost_features(conic, None)["algorithm"] == "conic"
    assert explain_choice(conic, None, set()).backend == "cvxpy"


def test_check_prints_the_choice_without_importing_a_backend():
    code = ("import sys; from regspec.cli import main; rc = main(['check', 'specs/class_ot.reg']); "
            "heavy = [m for m in ('torch', 'cvxpy', 'scipy', 'sklearn') if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "  auto: cvxpy (" in out.stdout and "estimates" in out.stdout
    assert "HEAVY []" in out.stdout


def test_check_json_carries_the_choice_features_and_estimates():
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "check", "--json", "specs/class_ot.reg"],
                         capture_output=True, text=True, cwd=ROOT)
    doc = json.loads(out.stdout)
    auto = next(p for s in doc["specs"] for p in s["problems"])["auto"]
    assert auto["backend"] in ("cvxpy", "torch") and auto["reason"]
    assert auto["features"]["algorithm"] == "pdhg" and auto["features"]["cone_work"] > 0
    assert set(auto["estimates_s"]) == {"cvxpy", "torch"}
