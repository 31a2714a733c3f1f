"""Entropic optimal transport on the torch backend (backends/torch/sinkhorn.py): the split sends
``<C, P> - eps * entropy(P)`` over ``P in transport(a, b)`` to log-domain Sinkhorn, whose status is
``optimal`` only when the duality gap of the plan rounded onto U(a, b) meets tol. Checked against a
hand-written CVXPY + Clarabel reference (objective within 1e-6 relative at default settings),
CATALOGUE §6 X16's known value, weak duality, and the rounding's exact feasibility."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from regspec.api import load, solve  # noqa: E402
from regspec.backends.torch.sinkhorn import round_to_transport  # noqa: E402


def lit(a) -> str:
    return repr(np.asarray(a).tolist())


def _x16(m: int = 20, n: int = 20, seed: int = 0):
    """CATALOGUE X16: points U[0,1]^2, C = squared distances / max."""
    rng = np.random.default_rng(seed)
    xs, xt = rng.uniform(size=(m, 2)), rng.uniform(size=(n, 2))
    C = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    return C / C.max()


C20 = _x16()
UNIFORM = np.full(20, 1 / 20)
C_RECT = _x16(12, 7, seed=3)
A_RECT = np.random.default_rng(5).uniform(0.5, 1.5, size=12)
A_RECT /= A_RECT.sum()
B_RECT = np.random.default_rng(6).uniform(0.5, 1.5, size=7)
B_RECT /= B_RECT.sum()


def _spec(C, a, b, eps, form: str = "minimize") -> str:
    m, n = C.shape
    objective = {"minimize": f"minimize sum(C * P) - {eps} * entropy(P)",
                 "maximize": f"maximize {eps} * sum(entr(P)) - sum(C * P) + 1",
                 "constraint": f"minimize sum(C * P) - {eps} * entropy(P)"}[form]
    domain = "" if form == "constraint" else f" in transport({lit(a)}, {lit(b)})"
    cons = f"\n  subject to {{\n    P in transport({lit(a)}, {lit(b)})\n  }}" if form == "constraint" else ""
    return f"problem ot {{\n  let C = {lit(C)}\n  var P[{m}, {n}]{domain}\n  {objective}{cons}\n}}\n"


def _reference(C, a, b, eps, form: str = "minimize") -> tuple[float, np.ndarray]:
    import cvxpy as cp

    P = cp.Variable(C.shape, nonneg=True)
    cons = [cp.sum(P, axis=1) == a, cp.sum(P, axis=0) == b]
    if form == "maximize":
        prob = cp.Problem(cp.Maximize(eps * cp.sum(cp.entr(P)) - cp.sum(cp.multiply(C, P)) + 1), cons)
    else:
        prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(C, P)) - eps * cp.sum(cp.entr(P))), cons)
    prob.solve(solver="CLARABEL")
    assert prob.status == "optimal"
    return float(prob.value), P.value


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


CASES = {
    "x16": (C20, UNIFORM, UNIFORM, 0.05, "minimize"),
    "rectangular": (C_RECT, A_RECT, B_RECT, 0.1, "minimize"),
    "maximize_entr": (C_RECT, A_RECT, B_RECT, 0.02, "maximize"),
    "constraint": (C20, UNIFORM, UNIFORM, 0.2, "constraint"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_entropic_ot_goes_to_sinkhorn_and_explain_says_so(name):
    from regspec.compiler.passes.split import explain_lines

    ir = load(_spec(*CASES[name])).compiled(None).ir
    split = ir.meta["split"]
    assert split.algorithm == "sinkhorn", split.why_algorithm
    text = "\n".join(explain_lines(ir, split))
    assert "log-domain Sinkhorn" in text and "duality gap" in text and "entropic OT" in text


@pytest.mark.parametrize("name", sorted(CASES))
def test_sinkhorn_matches_hand_written_cvxpy(name):
    pytest.importorskip("cvxpy")
    C, a, b, eps, form = CASES[name]
    ref, plan = _reference(C, a, b, eps, form)
    spec = _spec(C, a, b, eps, form)
    res = solve(spec, backend="torch")
    assert res.status == "optimal" and res.solver == "Sinkhorn"
    # the certified gap is <= 1e-6 of the terms' size; Clarabel's exp-cone answer is within ~1e-8
    assert rel(res.objective, ref) <= 1e-6, (res.objective, ref)
    P = res.variables["P"]
    assert np.all(P >= 0)
    assert np.allclose(P.sum(axis=1), a, rtol=1e-12, atol=1e-15) and np.allclose(P.sum(axis=0), b, rtol=1e-12,
                                                                                    atol=1e-15)
    # the entropic plan is unique: Clarabel's agrees to its accuracy (CATALOGUE X16: 1.2e-6)
    assert np.abs(P - plan).max() <= 1e-5
    tight = solve(spec, backend="torch", tol=1e-10)
    assert tight.status == "optimal" and rel(tight.objective, ref) <= 1e-7
    assert solve(spec, backend="cvxpy").objective == pytest.approx(ref, rel=1e-6)


def test_x16_known_value_and_weak_duality():
    res = solve(_spec(*CASES["x16"]), backend="torch", tol=1e-10)
    assert res.objective == pytest.approx(-0.18089385, abs=1e-8)  # CATALOGUE §6 X16
    gap = res.residuals["gap"]
    assert 0 <= gap <= 1e-10 * abs(res.objective) * 10
    assert res.residuals["marginal_rel"] <= 1e-12


def test_a_run_stopped_early_reports_no_answer():
    res = solve(_spec(*CASES["maximize_entr"]), backend="torch", max_iter=10)
    assert res.status == "user_limit" and res.objective is None and res.variables == {}
    assert res.info["last_iterate"]["gap_rel"] > 1e-6


def test_a_parameter_entropy_weight_is_read_at_solve_time():
    pytest.importorskip("cvxpy")
    text = _spec(*CASES["rectangular"]).replace("- 0.1 * entropy(P)", "- eps * entropy(P)").replace(
        "let C", "param eps = 0.1 in box(0.01, 1)\n  let C")
    assert load(text).compiled(None).ir.meta["split"].algorithm == "sinkhorn"
    for eps in (0.1, 0.3):
        ref, _ = _reference(C_RECT, A_RECT, B_RECT, eps)
        res = solve(text, backend="torch", params={"eps": eps})
        assert res.status == "optimal" and rel(res.objective, ref) <= 1e-6


def test_other_terms_keep_the_pdhg_path():
    # a quadratic term is not part of the entropic form: the problem stays with PDHG
    text = _spec(*CASES["rectangular"]).replace("entropy(P)", "entropy(P) + sum_squares(P)")
    assert load(text).compiled(None).ir.meta["split"].algorithm == "pdhg"


def test_rounding_lands_exactly_on_the_transport_polytope():
    rng = np.random.default_rng(1)
    for _ in range(5):
        P = torch.tensor(rng.uniform(size=(6, 4)))
        a = torch.tensor(rng.dirichlet(np.ones(6)))
        b = torch.tensor(rng.dirichlet(np.ones(4)))
        R = round_to_transport(P, a, b)
        assert torch.all(R >= 0)
        assert torch.allclose(R.sum(dim=1), a, atol=1e-15) and torch.allclose(R.sum(dim=0), b, atol=1e-15)


def test_marginals_written_as_equalities_take_the_same_path():
    pytest.importorskip("cvxpy")
    C, a, b, eps, _ = CASES["rectangular"]
    text = (f"problem ot {{\n  let C = {lit(C)}\n  var P[{C.shape[0]}, {C.shape[1]}]\n"
            f"  minimize sum(C * P) - {eps} * entropy(P)\n"
            f"  subject to {{\n    sum(P, axis = 1) == {lit(a)}\n    {lit(b)} == sum(P, axis = 0)\n  }}\n}}\n")
    assert load(text).compiled(None).ir.meta["split"].algorithm == "sinkhorn"
    ref, _ = _reference(C, a, b, eps)
    res = solve(text, backend="torch")
    assert res.status == "optimal" and rel(res.objective, ref) <= 1e-6


def test_a_zero_marginal_entry_is_an_empty_row():
    a = np.array([0.5, 0.0, 0.5])
    b = np.array([0.25, 0.75])
    C = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    res = solve(_spec(C, a, b, 0.1), backend="torch")
    assert res.status == "optimal" and np.all(res.variables["P"][1] == 0)
    assert np.allclose(res.variables["P"].sum(axis=0), b, atol=1e-14)
