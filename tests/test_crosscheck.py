"""The cross-backend agreement suite: every problem of every spec in specs/ that both backends
accept is solved by CVXPY and by the torch backend, and the objectives must agree.

Threshold (regspec.crosscheck): relative objective gap <= 1e-5 in float64 unless the spec states
another value with its reason (``# crosscheck: rtol = ... -- why``). The solvers stop at a
relative duality gap of 1e-8 (Clarabel; SCS at eps 1e-9), a relative prox-gradient residual of
1e-9 (FISTA) and relative primal/dual residuals of 1e-8 (PDHG), which leave the objectives within
~1e-7 of each other; 1e-5 keeps two orders of margin and still catches any modelling difference.
A problem that one backend refuses is skipped, and the refusal must carry a located reason.
"""
from __future__ import annotations

import pytest

import regspec
from regspec.crosscheck import check_problem, default_specs, read_directives, table
from regspec.diagnostics import RegspecError

from conftest import SPECS

CASES = [(path, name) for path in default_specs(SPECS) for name in regspec.load(path).problems]


@pytest.mark.parametrize("path,problem", CASES, ids=[f"{p.stem}:{n}" for p, n in CASES])
def test_backends_agree(path, problem):
    spec = regspec.load(path)
    check = check_problem(spec, problem, directives=read_directives(path))
    if check.verdict == "skipped":
        assert check.reason, "a skipped problem must say why"
        if check.reason.startswith("torch refuses") or "torch refuses" in check.reason:
            # the refusal is a located error, never a wrong answer
            with pytest.raises(RegspecError) as info:
                regspec.solve(spec, problem=problem, backend="torch")
            assert f"{path}:" in str(info.value)
            assert "cannot lower" in str(info.value) or "cannot start" in str(info.value)
        return
    assert check.verdict == "agree", table([check])
    assert check.cvxpy.ok and check.torch.status == "optimal"
    assert check.gap <= check.rtol
    # the torch run certifies its own answer: its stopping residuals are in the result
    res = check.torch.residuals
    assert ("prox_grad_rel" in res) or ("primal_rel" in res and "dual_rel" in res and "infeasibility" in res)


def test_every_spec_runs_on_both_backends():
    """Issue 11: no torch refusals left in specs/ (a spec nonconvex by design says so in a
    ``# crosscheck: skip -- nonconvex ...`` header), and the suite is not vacuous."""
    from regspec.crosscheck import accepts

    for path, name in CASES:
        directives = read_directives(path)
        if directives.skip:
            assert "nonconvex" in directives.reason, (path, directives.reason)
            continue
        cvx, cvx_why, tor, tor_why = accepts(regspec.load(path), name)
        assert cvx and tor, f"{path.name}:{name}: cvxpy {cvx_why or 'accepts'}; torch {tor_why or 'accepts'}"
    assert len(CASES) >= 15


def test_folders_expand_to_their_specs(tmp_path):
    from regspec.crosscheck import expand_specs

    for name in ("b.reg", "a.reg", "notes.txt"):
        (tmp_path / name).write_text("problem p { var x[2]\n minimize sum_squares(x - 1) }\n")
    lone = SPECS / "lasso.reg"
    assert expand_specs([tmp_path, lone]) == [tmp_path / "a.reg", tmp_path / "b.reg", lone]
    assert expand_specs(None) == default_specs()


def test_directives_parse(tmp_path):
    p = tmp_path / "x.reg"
    p.write_text("# crosscheck: rtol = 1e-4, tol = 1e-9 -- entropic terms: SCS exp cones reach 1e-6 only\n"
                 "problem p { var x[2]\n minimize sum_squares(x) }\n")
    d = read_directives(p)
    assert d.rtol == 1e-4 and d.tol == 1e-9 and "exp cones" in d.reason and not d.skip
    p.write_text("# crosscheck: skip -- nonconvex set: torch-only\nproblem p { var x[2]\n minimize sum_squares(x) }\n")
    d = read_directives(p)
    assert d.skip and "torch-only" in d.reason


def test_disagreement_is_detected(tmp_path):
    """A wrong answer fails the check: the same spec with a tolerance too loose for 1e-5 (the torch
    run stopped after 3 iterations) is reported, and the CLI exits 1."""
    spec = regspec.load(SPECS / "tv_denoise.reg")
    check = check_problem(spec, "tv_denoise", max_iter=3)
    assert check.verdict == "disagree" and not check.ok
    from regspec.cli import main

    assert main(["crosscheck", str(SPECS / "tv_denoise.reg"), "--max-iter", "3"]) == 1
    assert main(["crosscheck", str(SPECS / "lasso.reg")]) == 0


def test_a_refusal_when_torch_starts_is_reported_with_its_location(tmp_path, monkeypatch):
    """A torch refusal raised when the run starts (not in the analysis) makes a skipped check with
    the located reason, and the cvxpy result is kept (the refusal is simulated: every DCP problem
    the analysis passes has a torch path today)."""
    from regspec.diagnostics import error

    p = tmp_path / "ls.reg"
    p.write_text("problem ls {\n  data A, b = randn([8, 3], [8], seed = 0)\n  var x[3]\n\n"
                 "  minimize sum_squares(A @ x - b)\n}\n")
    spec = regspec.load(p)
    ir = spec.compiled("ls").ir
    solve = regspec.solve

    def refusing(spec, *, backend="auto", **kw):
        if backend == "torch":
            raise error("the torch backend cannot start: simulated", ir[ir.objective()]["span"])
        return solve(spec, backend=backend, **kw)

    monkeypatch.setattr(regspec, "solve", refusing)
    check = check_problem(spec, "ls")
    assert check.verdict == "skipped" and check.ok and check.cvxpy.ok and check.torch is None
    assert check.reason.startswith(f"torch refuses: {p}:5:3: error: the torch backend cannot start: simulated")
