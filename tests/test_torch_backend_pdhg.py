"""The torch backend's PDHG path: affine extraction (operators and their autograd adjoints), the
lowering of transport marginals, L + S == M, total variation and sum-of-norms fusion against
CVXPY and known values, located refusals, the CLI flags, explain, and CUDA (skipped without it).

Tolerances: PDHG stops on per-block relative residuals <= tol (default 1e-6, docs/solvers.md;
the tests that compare at 1e-8 pass tol = 1e-8); at the default the bundled problems' objectives
are within 3.4e-7 relative of the conic solvers, so objectives are compared at 1e-6 relative; minimizers are compared only where they are
unique (strongly convex TV denoising, the planted RPCA recovery).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import regspec
from regspec.diagnostics import RegspecError

from conftest import ROOT, SPECS

CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


def both(text_or_path, problem=None, params=None, **torch_kw):
    spec = regspec.load(text_or_path)
    t = regspec.solve(spec, problem=problem, backend="torch", params=params, **torch_kw)
    c = regspec.solve(spec, problem=problem, backend="cvxpy", params=params)
    return t, c


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


# ------------------------------------------------------------------------------ affine extraction

ADJOINT_SPEC = """
problem adj {
  data A = randn(7, 5, seed = 0)
  data R = rand(6, 5, seed = 1)
  var X[6, 5]
  var z[5]
  minimize norm1(A @ z - 1) + norm2(X[R <= 0.5] - 2) + norm_inf(sum(X, axis = 0) + z)
           + norm1(A @ X.T) + tv(X[:, 0] - z[0]) + sum_of_norms(X, pairs = [[0, 1], [2, 5], [1, 4]])
           + group_norm(X.T - 0.5, groups = rows)
  subject to {
    X[0:3, :] == 0.5 * X[3:6, :]
    sum(z) <= 1
  }
}
"""


@pytest.mark.parametrize("mode", ["trace", "eager"])
def test_operators_have_exact_adjoints(mode, monkeypatch):
    """<K x, y> = <x, K^T y> for every block (adjoints by autograd, as traced aten graphs and as
    the eager closures a first solve runs), and K(0) = 0 (the offset c is removed): the blocks
    are linear maps."""
    from regspec.backends.torch import lower as tl
    from regspec.backends.torch import tracing
    from regspec.backends.torch.pdhg_lowering import build_block

    monkeypatch.setattr(tracing, "MODE", mode)

    spec = regspec.load(ADJOINT_SPEC)
    ir = spec.compiled().ir
    assert ir.meta["split"].algorithm == "pdhg"
    program = tl.lower(ir)
    assert len(program.operators) == 9
    xs = [torch.zeros(6, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)]
    index = {n: i for i, n in enumerate(program.var_names)}
    gen = torch.Generator().manual_seed(0)
    eager_blocks = 0
    for lo in program.operators:
        block = build_block(ir, lo, xs, index, {})
        assert block.info["traced"] or mode == "eager"
        eager_blocks += not block.info["traced"]
        x = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in xs]
        kx = block.apply(x)
        assert torch.count_nonzero(block.apply([torch.zeros_like(v) for v in xs])) == 0
        y = torch.randn(kx.shape, generator=gen, dtype=torch.float64)
        kty = block.adjoint(y)
        lhs = float((kx * y).sum())
        rhs = sum(float((a * b).sum()) for a, b in zip(x, kty) if b is not None)
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), lo.text
    assert (eager_blocks > 0) is (mode == "eager")  # the eager closures were the ones checked


def test_adjoint_spec_agrees_with_cvxpy():
    t, c = both(ADJOINT_SPEC)
    assert t.status == "optimal" and t.solver == "PDHG"
    assert rel(t.objective, c.objective) <= 1e-6


# ------------------------------------------------------------------------------ the four problems

OT_SPEC = """
problem ot {
  data C = rand(20, 20, seed = 0)
  data r = rand(20, seed = 1, low = 0.5, high = 1.5)
  data q = rand(20, seed = 2, low = 0.5, high = 1.5)
  var P[20, 20] >= 0
  minimize sum(C * P)
  subject to {
    sum(P, axis = 1) == r / sum(r)
    sum(P, axis = 0) == q / sum(q)
  }
}
"""


def test_transport_marginals_lp():
    """A transport LP (two marginal blocks, P >= 0 in g): objective as Clarabel's, the plan
    exactly nonnegative and its marginals met to the reported infeasibility."""
    spec = regspec.load(OT_SPEC)
    t = regspec.solve(spec, backend="torch", tol=1e-8)  # tighter than the default 1e-6 (docs/solvers.md)
    c = regspec.solve(spec, backend="cvxpy", solver_opts=CLARABEL_TIGHT)
    assert t.status == "optimal"
    assert rel(t.objective, c.objective) <= 1e-6
    P = t.variables["P"]
    assert P.min() >= 0.0
    r = np.random.default_rng(1).uniform(0.5, 1.5, 20)
    q = np.random.default_rng(2).uniform(0.5, 1.5, 20)
    assert np.abs(P.sum(1) - r / r.sum()).max() <= 1e-7
    assert np.abs(P.sum(0) - q / q.sum()).max() <= 1e-7
    assert t.residuals["infeasibility"] <= 1e-7
    # the step-size condition held: tau (L/2 + sigma ||K||^2) < 1 with the reported numbers
    info = t.info
    assert info["tau"] * (info["lipschitz"] / 2 + info["sigma"] * info["norm_K"] ** 2) < 1


def test_robust_pca_recovers_the_planted_split():
    """L + S == M with nuclear_norm(L) + lam norm1(S) (CATALOGUE X13 shape, specs/robust_pca.reg):
    exact recovery of L0 = A B, to the solver's accuracy."""
    t = regspec.solve(SPECS / "robust_pca.reg", backend="torch", tol=1e-10)
    assert t.status == "optimal"
    A = np.random.default_rng(0).standard_normal((30, 2))
    from regspec.compiler.data import SourceContext, call_source

    A, B = call_source("randn", SourceContext(ROOT, None), [[30, 2], [2, 30]], {"seed": 0})
    L0 = A @ B
    err = np.linalg.norm(t.variables["L"] - L0) / np.linalg.norm(L0)
    assert err <= 1e-7
    assert np.linalg.matrix_rank(t.variables["L"], tol=1e-6 * np.linalg.norm(L0)) == 2


def test_tv_1d_denoising_minimizer():
    """1-D TV denoising (strongly convex: the minimizer is unique): torch's x equals Clarabel's."""
    spec = regspec.load(SPECS / "tv_denoise.reg")
    t = regspec.solve(spec, backend="torch", tol=1e-8)  # tighter than the default 1e-6 (docs/solvers.md)
    c = regspec.solve(spec, backend="cvxpy", solver_opts=CLARABEL_TIGHT)
    assert t.status == "optimal"
    assert rel(t.objective, c.objective) <= 1e-8
    assert np.abs(t.variables["x"] - c.variables["x"]).max() <= 1e-6


@pytest.mark.parametrize("rho,value", [(0.01, 0.11319305), (0.1, 0.13281850)])
def test_sum_of_norms_class_ot_known_values(rho, value):
    """CATALOGUE X17 (specs/class_ot.reg): the PDHG blocks are the two marginals and the pair
    differences B P; the values are the catalogue's (8 digits)."""
    t = regspec.solve(SPECS / "class_ot.reg", backend="torch", params={"rho": rho})
    assert t.status == "optimal"
    assert abs(t.objective - value) <= 1e-8 + 1e-7 * value
    if rho == 0.1:  # fully fused: rows of one class coincide
        P = t.variables["P"]
        labels = np.repeat([0, 1, 2], 10)
        for k in range(3):
            rows = P[labels == k]
            assert np.abs(rows - rows.mean(0)).max() <= 1e-6


def test_inequalities_and_a_second_piece_on_a_variable():
    """A @ x <= b (a nonpos block) and x in simplex plus norm_inf(x) (a second nonsmooth piece on
    x: simplex projection in g, norm_inf as a block with K = identity), against Clarabel."""
    text = """
    problem p {
      data A = randn(8, 10, seed = 3)
      data b = rand(8, seed = 4)
      data y = randn(12, seed = 5)
      data G = randn(12, 10, seed = 6)
      var x[10] in simplex
      minimize sum_squares(G @ x - y) + 0.5 * norm_inf(x)
      subject to A @ x <= b
    }
    """
    spec = regspec.load(text)
    split = spec.compiled().ir.meta["split"]
    kinds = sorted((op.kind, op.identity) for op in split.operators)
    assert kinds == [("nonpos", False), ("prox", True)]
    t, c = both(text)
    assert t.status == "optimal" and rel(t.objective, c.objective) <= 1e-6
    assert t.variables["x"].min() >= 0 and abs(t.variables["x"].sum() - 1) <= 1e-12


def test_parameters_change_without_relowering():
    spec = regspec.load(SPECS / "tv_denoise.reg")
    a = regspec.solve(spec, backend="torch", params={"lam": 0.2})
    b = regspec.solve(spec, backend="cvxpy", params={"lam": 0.2})
    assert rel(a.objective, b.objective) <= 1e-6


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("body,needle,line", [
    ("var x[3]\n  minimize norm1(sqrt(x))", "not affine", 3),
    # DCP problems that no fast path takes go to the conic fallback (tests/test_conic_fallback.py);
    # these are not DCP, so they stay refused
    ("var x[3]\n  minimize sum_squares(x)\n  subject to norm2(x) >= 1", "nonlinear side", 4),
    ("data A = randn(4, 3, seed = 0)\n  var x[3]\n  minimize sum_squares(x)\n  subject to A @ x in top_k(1)",
     "nonconvex", 5),
    ("var X[4, 4] in metric_cone\n  minimize -sum_squares(X)", "no projection kernel", 2),
    ("param c = 1\n  var x[3]\n  minimize sum_squares(x - 1) + c * norm1(x)", "unknown sign", 4),
])
def test_unsupported_specs_are_refused_with_a_location(tmp_path, body, needle, line):
    path = tmp_path / "bad.reg"
    path.write_text("problem bad {\n  " + body + "\n}\n")
    with pytest.raises(RegspecError) as info:
        regspec.solve(path, backend="torch")
    text = str(info.value)
    assert f"{path}:{line}:" in text and needle in text and "^" in text and "cannot lower" in text
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "solve", str(path), "--backend", "torch"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and "Traceback" not in out.stderr and needle in out.stderr


# ------------------------------------------------------------------------------ CLI, explain


def run(*args):
    return subprocess.run([sys.executable, "-m", "regspec.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_flags_apply_to_pdhg():
    out = run("solve", str(SPECS / "tv_denoise.reg"), "--backend", "torch", "--tol", "1e-5", "--dtype", "float32",
              "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["solver"] == "PDHG" and r["info"]["dtype"] == "float32"
    assert r["residuals"]["primal_rel"] <= 1e-5 and r["residuals"]["dual_rel"] <= 1e-5
    out = run("solve", str(SPECS / "tv_denoise.reg"), "--backend", "torch", "--max-iter", "5", "--json")
    assert out.returncode == 3  # user_limit: the residuals say how far it got
    r = json.loads(out.stdout)
    assert r["status"] == "user_limit" and r["iterations"] == 5 and r["residuals"]["primal_rel"] > 1e-5


def test_explain_shows_the_split_and_why():
    out = run("explain", str(SPECS / "class_ot.reg"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "torch: algorithm pdhg" in text and "sum_of_norms" in text
    assert text.count("dual block:") == 3 and "g (prox per variable)" in text and "steps:" in text
    out = run("check", str(SPECS / "robust_pca.reg"))
    assert "torch (PDHG)" in out.stdout


# ------------------------------------------------------------------------------ CUDA


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cpu = regspec.solve(SPECS / "class_ot.reg", backend="torch")
    gpu = regspec.solve(SPECS / "class_ot.reg", backend="torch", device="cuda")
    assert gpu.status == "optimal" and gpu.info["device"].startswith("cuda")
    assert rel(cpu.objective, gpu.objective) <= 1e-6


def test_parameter_weights_of_a_prox_follow_set_values():
    """A prox weight given as a parameter (norm1(x, w = wt)) takes the value passed at solve time,
    on the FISTA path (g steps) and on the PDHG path (a dual block)."""
    text = """
    problem wp {
      data y = randn(6, seed = 0)
      data A = randn(5, 6, seed = 1)
      param wt[6] = 1 >= 0
      var x[6]
      minimize 0.5 * sum_squares(x - y) + norm1(x, w = wt) + OTHER
    }
    """
    w = [0.0, 0.5, 1.0, 2.0, 0.1, 0.3]
    for other in ("0", "0.1 * norm1(A @ x - 1)"):
        spec = regspec.load(text.replace("OTHER", other))
        t = regspec.solve(spec, backend="torch", params={"wt": w})
        c = regspec.solve(spec, backend="cvxpy", params={"wt": w})
        assert t.solver == ("FISTA" if other == "0" else "PDHG")
        assert rel(t.objective, c.objective) <= 1e-7
        assert np.abs(t.variables["x"] - c.variables["x"]).max() <= 1e-6
