"""`regspec solve --verbose`: the torch solvers' residuals at log-spaced checks and at the end on
stderr (the values the solver records in Result.history), the cvxpy backend's solver log on
stderr; stdout stays one JSON document with --json."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

import regspec
from regspec.cli import main

pytest.importorskip("torch")
from regspec.backends.torch.iteration_log import iteration_log  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"
LINE = re.compile(r"^(?P<solver>.+?)\s+iter\s+(?P<k>\d+)\s+(?P<cols>.*?)(?:\s+-> (?P<status>\w+))?$")
# values are printed with 5 significant digits: relative rounding error below 5e-5
REL = 1e-4


def _parse(text: str) -> list[tuple[int, dict[str, float], str | None]]:
    out = []
    for line in text.strip().splitlines():
        m = LINE.match(line)
        assert m, line
        words = m["cols"].split()
        out.append((int(m["k"]), {words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}, m["status"]))
    return out


def _logged_solve(name: str) -> tuple[regspec.Result, list]:
    buf = io.StringIO()
    with iteration_log(buf):
        result = regspec.solve(str(SPECS / name), backend="torch")
    return result, _parse(buf.getvalue())


def _assert_matches_history(result, lines) -> None:
    history = {int(h["iteration"]): h for h in result.history}
    assert len(lines) >= 2
    ks = [k for k, _, _ in lines]
    assert ks == sorted(ks) and len(set(ks)) == len(ks)
    for k, values, _ in lines:
        assert k in history, (k, sorted(history))
        for key, v in values.items():
            assert v == pytest.approx(history[k][key], rel=REL, abs=1e-300), (k, key)
    # log-spaced: at most nine lines a decade, not one per check
    assert len(lines) <= 9 * (len(str(max(ks))) + 1)


@pytest.mark.parametrize("name, solver", [("sparse_logistic.reg", "FISTA"), ("tv_denoise.reg", "PDHG")])
def test_iteration_lines_are_the_recorded_residuals(name, solver):
    result, lines = _logged_solve(name)
    assert result.status == "optimal" and result.solver == solver
    assert all(line_solver is None for _, _, line_solver in lines)  # the end line is the CLI's
    _assert_matches_history(result, lines)


def test_cli_verbose_keeps_json_pure_and_ends_with_the_final_residuals(capfd):
    assert main(["solve", str(SPECS / "tv_denoise.reg"), "--backend", "torch", "--verbose", "--json"]) == 0
    out, err = capfd.readouterr()
    doc = json.loads(out)                               # stdout: the one JSON document
    lines = _parse(err)
    *checks, (k_end, final, status) = lines
    assert checks and all(s is None for _, _, s in checks)
    assert status == doc["status"] == "optimal" and k_end == doc["iterations"]
    for key, v in doc["residuals"].items():
        assert final[key] == pytest.approx(v, rel=REL, abs=1e-300), key
    # the same run in-process logs the same lines: they are the recorded history
    result, logged = _logged_solve("tv_denoise.reg")
    assert [k for k, _, _ in logged] == [k for k, _, _ in checks]
    _assert_matches_history(result, checks)


def test_cli_without_verbose_prints_no_log(capfd):
    assert main(["solve", str(SPECS / "tv_denoise.reg"), "--backend", "torch", "--json"]) == 0
    out, err = capfd.readouterr()
    json.loads(out)
    assert "iter" not in err


def test_cvxpy_verbose_goes_to_stderr(capfd):
    pytest.importorskip("cvxpy")
    assert main(["solve", str(SPECS / "lasso.reg"), "--backend", "cvxpy", "--verbose", "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["status"] == "optimal"
    assert "CVXPY" in err and "CLARABEL" in err.upper()
    # without --json the result stays on stdout and the log on stderr
    assert main(["solve", str(SPECS / "lasso.reg"), "--backend", "cvxpy", "--verbose"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("problem lasso: optimal") and "CVXPY" not in out and "CVXPY" in err


def test_conic_fallback_logs_its_checks():
    """The conic fallback records no history: its lines are its checks, in order, then the end."""
    spec = """problem p {
  data X, e = randn([30, 10], [30], seed = 0)
  param L = 0.5 >= 0
  var w[10]
  minimize sum_squares(X @ w - e)
  subject to norm1(w) <= L
}"""
    buf = io.StringIO()
    with iteration_log(buf):
        result = regspec.solve(spec, backend="torch")
    assert result.info.get("path") == "conic fallback" and result.status == "optimal"
    lines = _parse(buf.getvalue())
    ks = [k for k, _, _ in lines]
    assert len(lines) >= 2 and ks == sorted(ks) and ks[-1] < result.iterations
    assert all(set(v) == {"primal_rel", "dual_rel", "gap_rel"} for _, v, _ in lines)
