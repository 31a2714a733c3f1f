"""The torch backend's conic fallback (issue 11 item 2): cone projections checked by Moreau's
decomposition and against Clarabel, each cone's problems against Clarabel through CVXPY, infeasible
and unbounded LPs detected, honest `user_limit`, and specs through the public API against the cvxpy
backend. CUDA runs skip without a GPU."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import torch

import regspec
from regspec.backends.torch.conic.canon import conic_form
from regspec.backends.torch.conic.cones import (ConeLayout, ConeProjector, mat_to_svec, project_exp,
                                                project_exp_dual, project_psd, project_soc, svec_to_mat)
from regspec.backends.torch.conic.pdhg import solve_conic_pdhg
from regspec.diagnostics import RegspecError

ROOT = Path(__file__).resolve().parents[1]
# Clarabel's own accuracy (interior point, default tolerances 1e-8) bounds what a comparison can show
DEFAULT_GAP, TIGHT_GAP, TIGHT_TOL = 1e-4, 1e-6, 1e-9


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


def solve_torch(problem: cp.Problem, variables: dict, **kw):
    form = conic_form(problem, variables)
    sol = solve_conic_pdhg(form.A, form.b, form.c, form.layout, **kw)
    values, objective = form.recover(sol.x, sol.y) if sol.status == "optimal" else ({}, None)
    return sol, values, objective


# ------------------------------------------------------------------------------------ projections
def moreau_parts(project, project_dual, v: torch.Tensor):
    """p = P_K(v) and d = P_{K*}(-v), each computed by its own projection."""
    return project(v), project_dual(-v)


def test_soc_projection_moreau():
    v = torch.randn(500, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    p, d = moreau_parts(project_soc, project_soc, v)  # self-dual
    assert torch.allclose(p - d, v, atol=1e-12)
    assert (p * d).sum(1).abs().max() <= 1e-12 * (1 + v.norm(dim=1) ** 2).max()
    assert (p[:, 1:].norm(dim=1) - p[:, 0]).max() <= 1e-12 and (d[:, 1:].norm(dim=1) - d[:, 0]).max() <= 1e-12


def test_psd_svec_is_the_scs_format_and_projection_clips_eigenvalues():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    m = a + a.transpose(1, 2)
    v = mat_to_svec(m)
    # SCS/CVXPY format: lower triangle by columns, off-diagonal times sqrt(2) (trace inner product)
    assert torch.allclose(v[0, :4], m[0, :, 0] * torch.tensor([1, 2 ** 0.5, 2 ** 0.5, 2 ** 0.5], dtype=torch.float64))
    assert torch.allclose((v * v).sum(1), (m * m).sum((1, 2)))
    assert torch.allclose(svec_to_mat(v, 4), m)
    p, d = moreau_parts(lambda x: project_psd(x, 4), lambda x: project_psd(x, 4), v)
    assert torch.allclose(p - d, v, atol=1e-12) and (p * d).sum(1).abs().max() <= 1e-10
    w, q = np.linalg.eigh(m.numpy())
    ref = np.einsum("kij,kj,klj->kil", q, np.clip(w, 0, None), q)
    assert np.allclose(svec_to_mat(p, 4).numpy(), ref, atol=1e-12)


def _in_exp(p: torch.Tensor) -> torch.Tensor:
    r, s, t = p.unbind(1)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, safe * torch.exp(r / safe) <= t, (r <= 0) & (t >= 0))


def _in_exp_dual(d: torch.Tensor) -> torch.Tensor:
    u, v, w = d.unbind(1)
    safe = torch.where(u < 0, u, -torch.ones_like(u))
    return torch.where(u < 0, -safe * torch.exp(v / safe) <= math.e * w, (v >= 0) & (w >= 0))


def _near(member, x: torch.Tensor, inward: tuple[float, float, float], eta: float) -> bool:
    """Every row of x is within eta * (1 + ||row||) of the cone: moving it by that much along
    ``inward`` (a direction in the cone's recession, so the move goes inside) lands in the cone.
    Testing x itself would ask more digits than the data have: near u = 0 the dual cone's
    inequality -u exp(v / u) <= e w amplifies a rounding error in u by exp(v / u) v / u."""
    step = eta * (1.0 + x.norm(dim=1, keepdim=True)) * torch.tensor(inward, dtype=x.dtype)
    return bool(member(x + step).all())


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
def test_exp_projection_moreau_with_the_dual_cone(scale):
    """P_K(v) in K, P_{K*}(-v) in K* (the dual cone, computed through the primal projection of v),
    v = P_K(v) - P_{K*}(-v) and the two parts orthogonal, on random points and points on the
    coordinate planes (the cone's nonsmooth boundary pieces)."""
    g = torch.Generator().manual_seed(2)
    v = torch.randn(1200, 3, generator=g, dtype=torch.float64) * scale
    v[:200, 1] = 0.0
    v[200:400, 0] = 0.0
    v[400:600, 2] = 0.0
    p, _ = project_exp(v)
    d, _ = project_exp_dual(-v)
    size = 1.0 + v.norm(dim=1)
    assert torch.allclose(p - d, v, atol=1e-12 * scale)
    assert ((p * d).sum(1).abs() / size ** 2).max() <= 1e-8
    # (-1, 0, 1) is in K and (0, 1, 1) in K* (their recession directions)
    assert _near(_in_exp, p, (-1.0, 0.0, 1.0), 1e-12) and _near(_in_exp_dual, d, (0.0, 1.0, 1.0), 1e-12)


def test_exp_projection_matches_clarabel():
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((12, 3)) * np.array([1.0, 2.0, 1.0])
    p, _ = project_exp(torch.as_tensor(pts))
    for v, mine in zip(pts, p.numpy()):
        z = cp.Variable(3)
        cp.Problem(cp.Minimize(cp.sum_squares(z - v)), [cp.constraints.ExpCone(z[0], z[1], z[2])]).solve(
            solver=cp.CLARABEL)
        assert np.linalg.norm(mine - v) <= np.linalg.norm(z.value - v) + 1e-7  # no farther than Clarabel's
        assert np.linalg.norm(mine - z.value) <= 1e-5 * (1 + np.linalg.norm(v))


def test_projector_handles_a_mixed_layout_and_the_zero_cone():
    layout = ConeLayout(zero=2, nonneg=3, soc=(3, 4, 3), psd=(2,), exp=2)
    proj = ConeProjector(layout)
    v = torch.randn(layout.size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    p, d = proj.project(v), proj.project(-v, dual=True)
    assert torch.allclose(p - d, v, atol=1e-12)
    assert torch.all(p[:2] == 0) and torch.equal(d[:2], -v[:2])  # {0} and its dual, the whole space
    assert abs(float(p @ d)) <= 1e-10


# ------------------------------------------------------------------------------------ each cone vs Clarabel
def _lp():
    rng = np.random.default_rng(10)
    A = rng.standard_normal((12, 20))
    b = A @ rng.random(20)
    c = rng.random(20)
    x = cp.Variable(20)
    return cp.Problem(cp.Minimize(c @ x), [A @ x == b, x >= 0]), {"x": x}


def _socp():
    rng = np.random.default_rng(11)
    A, b, c = rng.standard_normal((10, 6)), rng.standard_normal(10), rng.standard_normal(6)
    x = cp.Variable(6)
    return cp.Problem(cp.Minimize(c @ x), [cp.norm2(A @ x + b) <= np.ones(6) @ x + 5, cp.abs(x) <= 1]), {"x": x}


def _norm1():
    rng = np.random.default_rng(12)
    X, y = rng.standard_normal((25, 8)), rng.standard_normal(25)
    w = cp.Variable(8)
    return cp.Problem(cp.Minimize(cp.sum_squares(X @ w - y)), [cp.norm1(w) <= 0.5]), {"w": w}


def _sdp():
    rng = np.random.default_rng(13)
    C = rng.standard_normal((4, 4))
    S = cp.Variable((4, 4), symmetric=True)
    return cp.Problem(cp.Minimize(cp.trace((C + C.T) @ S)), [S >> 0, cp.trace(S) == 1]), {"S": S}


def _entropy():
    a = np.random.default_rng(14).random(6)
    p = cp.Variable(6)
    return cp.Problem(cp.Maximize(cp.sum(cp.entr(p)) + a @ p), [cp.sum(p) == 1]), {"p": p}


PROBLEMS = {"lp": _lp, "socp": _socp, "norm1_ball": _norm1, "sdp": _sdp, "entropy": _entropy}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_each_cone_against_clarabel(name):
    problem, variables = PROBLEMS[name]()
    ref = problem.solve(solver=cp.CLARABEL)
    ref_values = {k: v.value.copy() for k, v in variables.items()}
    sol, values, objective = solve_torch(problem, variables)
    assert sol.status == "optimal" and rel(objective, ref) <= DEFAULT_GAP
    assert max(sol.residuals["primal_rel"], sol.residuals["dual_rel"], sol.residuals["gap_rel"]) <= 1e-7
    assert set(values) == set(ref_values) and all(values[k].shape == ref_values[k].shape for k in values)
    sol, values, objective = solve_torch(problem, variables, tol=TIGHT_TOL)
    assert sol.status == "optimal" and rel(objective, ref) <= TIGHT_GAP


def test_infeasible_lp_is_detected():
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [x >= 1, cp.sum(x) <= 2])
    sol, values, objective = solve_torch(problem, {"x": x})
    assert sol.status == "infeasible" and objective is None and values == {}
    assert problem.solve(solver=cp.CLARABEL) == math.inf


def test_unbounded_lp_is_detected():
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(x[0] - x[1]), [x >= 0, x[2] <= 1, x[0] + x[2] == 1])
    sol, values, objective = solve_torch(problem, {"x": x})
    assert sol.status == "unbounded" and objective is None
    assert problem.solve(solver=cp.CLARABEL) == -math.inf


def test_iteration_limit_reports_no_solution():
    problem, variables = _lp()
    sol, values, objective = solve_torch(problem, variables, max_iter=20)
    assert sol.status == "user_limit" and sol.iterations == 20 and objective is None
    assert sol.residuals["primal_rel"] > 1e-7 or sol.residuals["dual_rel"] > 1e-7 or sol.residuals["gap_rel"] > 1e-7


# ------------------------------------------------------------------------------------ specs, public API
SPECS = {
    "norm1_constraint": """problem p {
  data X, e = randn([30, 10], [30], seed = 0)
  param L = 0.5 >= 0
  var w[10]
  minimize sum_squares(X @ w - e)
  subject to norm1(w) <= L
}""",
    "soc_affine_rhs": """problem p {
  data A = randn(8, 5, seed = 1)
  data b = randn(8, seed = 2)
  data c = rand(5, seed = 3)
  var x[5]
  minimize sum(x) + sum_squares(x)
  subject to norm2(A @ x + b) + norm1(x) <= c @ x + 5
}""",
    "log_sum_exp_constraint": """problem p {
  data Z = randn(6, 3, seed = 4)
  var z[3]
  minimize sum_squares(z - 1)
  subject to log_sum_exp(Z @ z) <= 2
}""",
}


@pytest.mark.parametrize("name", list(SPECS))
def test_specs_through_the_public_api(name):
    spec = regspec.load(SPECS[name])
    assert spec.compiled().ir.meta["split"].algorithm == "conic"
    ref = regspec.solve(spec, backend="cvxpy", solver="CLARABEL")
    got = regspec.solve(spec, backend="torch")
    assert got.status == "optimal" and got.solver == "conic PDHG" and got.info["path"] == "conic fallback"
    assert got.info["no_fast_path"] and "residuals" not in got.info and "infeasibility" in got.residuals
    assert rel(got.objective, ref.objective) <= DEFAULT_GAP
    for k, v in ref.variables.items():
        assert got.variables[k].shape == v.shape
    if name != "log_sum_exp_constraint":  # exp cones at tight tol: test_each_cone_against_clarabel[entropy]
        tight = regspec.solve(spec, backend="torch", tol=TIGHT_TOL)
        assert tight.status == "optimal" and rel(tight.objective, ref.objective) <= TIGHT_GAP


def test_parameters_reach_the_conic_form():
    spec = regspec.load(SPECS["norm1_constraint"])
    for L in (0.2, 1.0):
        ref = regspec.solve(spec, backend="cvxpy", solver="CLARABEL", params={"L": L})
        got = regspec.solve(spec, backend="torch", params={"L": L})
        assert got.status == "optimal" and rel(got.objective, ref.objective) <= DEFAULT_GAP
        assert np.abs(got.variables["w"]).sum() <= L * (1 + 1e-6)


def test_infeasible_spec_reports_no_objective():
    text = "problem p {\n  var x[3]\n  minimize sum(x)\n  subject to norm1(x) + norm2(x) <= 1\n  subject to x >= 1\n}\n"
    got = regspec.solve(text, backend="torch")
    assert got.status == "infeasible" and got.objective is None and got.variables == {}
    assert "Farkas" in got.info["message"]


def test_explain_names_the_conic_fallback_and_nonconvex_stays_refused(tmp_path):
    path = tmp_path / "p.reg"
    path.write_text(SPECS["norm1_constraint"] + "\n")
    out = subprocess.run([sys.executable, "-m", "regspec.cli", "explain", str(path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "torch: algorithm conic: conic fallback" in out.stdout and "no fast path:" in out.stdout
    bad = tmp_path / "bad.reg"
    bad.write_text("problem bad {\n  var x[3]\n  minimize sum_squares(x)\n  subject to norm1(x) >= 1\n}\n")
    with pytest.raises(RegspecError) as info:
        regspec.solve(bad, backend="torch")
    assert f"{bad}:4:" in str(info.value) and "cannot lower" in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    spec = regspec.load(SPECS["soc_affine_rhs"])
    cpu = regspec.solve(spec, backend="torch")
    gpu = regspec.solve(spec, backend="torch", device="cuda")
    assert gpu.status == "optimal" and gpu.info["device"].startswith("cuda")
    assert rel(gpu.objective, cpu.objective) <= 1e-6


# ------------------------------------------------------------------------------------ preconditioning, storage
def test_preconditioning_keeps_each_cone_and_equilibrates():
    """Rows of one second-order / PSD / exponential cone share one factor (so the scaled cone is the
    same cone); zero and nonnegative rows are scaled freely; the scaled rows and columns are
    closer to unit size than the raw ones."""
    import scipy.sparse as sp

    from regspec.backends.torch.conic.precondition import precondition

    layout = ConeLayout(zero=2, nonneg=3, soc=(4, 3), psd=(2,), exp=1)
    rng = np.random.default_rng(5)
    A = sp.csr_matrix(rng.standard_normal((layout.size, 6)) * np.exp(rng.normal(0, 2, (layout.size, 1))))
    scaling = precondition(A, ConeProjector(layout).block_ids().numpy())
    for kind, start, stop in layout.blocks():
        if kind not in ("zero", "nonneg"):
            assert np.ptp(scaling.row[start:stop]) <= 1e-12 * scaling.row[start]
    scaled = abs(sp.diags(scaling.row) @ A @ sp.diags(scaling.col)).toarray()
    raw = abs(A).toarray()
    spread = lambda M: np.log(M.max(axis=1)).std()  # noqa: E731
    assert spread(scaled) < spread(raw)


def test_sparse_storage_matches_the_dense_products():
    import scipy.sparse as sp

    from regspec.backends.torch.conic import pdhg

    rng = np.random.default_rng(6)
    A = sp.random(1500, 800, density=0.01, random_state=6, format="csr")
    layout = ConeLayout(zero=500, nonneg=1000)
    P = pdhg.ScaledProblem(A, np.ones(1500), np.ones(800), layout, torch.float64, torch.device("cpu"))
    assert P.storage.startswith("sparse")
    x, y = torch.as_tensor(rng.standard_normal(800)), torch.as_tensor(rng.standard_normal(1500))
    dense = P.A.to_dense()
    assert torch.allclose(P.matvec(x), dense @ x) and torch.allclose(P.rmatvec(y), dense.T @ y)
    assert torch.allclose(torch.mv(P.A, x), dense @ x)  # torch's own CSR kernel (the CUDA path)


def test_exp_projection_torch_namespace_matches_numpy():
    """CUDA tensors take the torch spelling of the exponential-cone projection, CPU tensors NumPy's:
    the two agree (checked here on the CPU)."""
    from regspec.backends.torch.conic.cones import _project_exp

    v = torch.randn(500, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 5
    v[:50, 1] = 0.0
    p_t, rho_t = _project_exp(torch, v, None)
    with np.errstate(all="ignore"):
        p_n, rho_n = _project_exp(np, v.numpy(), None)
    assert np.allclose(p_t.numpy(), p_n, rtol=1e-12, atol=1e-12)
    p_warm, _ = _project_exp(torch, v + 1e-3, rho_t)  # warm start from the previous roots
    assert torch.allclose(p_warm, project_exp(v + 1e-3)[0], atol=1e-10)


def test_an_unconstrained_problem_reaches_the_conic_fallback():
    """CVXPY checks whether SCS can take a problem before canonicalising it and refuses one
    without constraints (`norm_inf` and `sum_largest` leave none in that check): the fallback adds
    a vacuous row. Reference: the same spec through the cvxpy backend (Clarabel, ~1e-8)."""
    text = ("problem p {\n  data A = randn(3, 2, seed = 649)\n  var x[2]\n"
            "  maximize -(0.5 * norm_inf(x - 1) + 0.1 * sum_largest(A @ x, 2))\n}\n")
    spec = regspec.load(text)
    got = regspec.solve(spec, backend="torch")
    ref = regspec.solve(spec, backend="cvxpy")
    assert got.solver == "conic PDHG" and got.status == "optimal"
    assert rel(got.objective, ref.objective) <= 1e-6
