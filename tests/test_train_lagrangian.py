"""`constrain EXPR <= c via lagrangian(...)` (lagrangian.py, optim.UpdateRule, through
regspec.attach) against CVXPY: on a convex instance the trained weights and the multiplier reach
the solution and the constraint's dual value; multipliers are checkpointed and a resumed run is
bitwise the uninterrupted one."""
from __future__ import annotations

import copy

import cvxpy as cp
import numpy as np
import pytest
import torch

import regspec

torch.set_num_threads(1)

BUDGET = '''train budget {
  loss mse
  optimizer sgd(lr = 0.05)
  constrain norm1(param("weight")) <= RADIUS via lagrangian(lr = 0.5)
}'''


def _lasso_data(n: int = 60, d: int = 8):
    g = np.random.default_rng(0)
    x = g.standard_normal((n, d))
    y = x @ g.standard_normal(d) + 0.1 * g.standard_normal(n)
    return x, y


def _attach(text: str, d: int, lr: float = 0.05):
    model = torch.nn.Linear(d, 1, bias=False).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return model, opt, regspec.attach(regspec.load(text), model, opt, steps_per_epoch=1)


def _steps(reg, opt, x, y, k):
    for _ in range(k):
        loss = reg.loss(reg.module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def test_l1_budget_reaches_the_cvxpy_solution_and_its_dual_value():
    x, y = _lasso_data()
    n, d = x.shape
    r = 1.0
    w = cp.Variable(d)
    budget = cp.norm1(w) <= r
    cp.Problem(cp.Minimize(cp.sum_squares(x @ w - y) / n), [budget]).solve(solver=cp.CLARABEL)
    lam_star = float(budget.dual_value)
    assert lam_star > 1.0                                  # the budget binds

    model, opt, reg = _attach(BUDGET.replace("RADIUS", str(r)), d)
    xt, yt = torch.tensor(x), torch.tensor(y).reshape(-1, 1)
    _steps(reg, opt, xt, yt, 600)
    lam = reg.update_rule.multipliers[0]
    # Full-batch steps: the fixed point of (dual ascent, then prox-gradient step with weight lam)
    # is exactly the KKT point (no O(lr) bias), so what remains is the contraction of 600 steps
    # (the iterates stop moving at 1e-15 after ~400) plus CVXPY's own accuracy (Clarabel, ~1e-8).
    tol = 1e-6
    np.testing.assert_allclose(model.weight.detach().numpy().ravel(), w.value, atol=tol)
    assert lam.value == pytest.approx(lam_star, abs=tol)
    assert float(model.weight.detach().abs().sum()) <= r * (1 + 1e-9)
    # the prox lowering gives exact zeros where CVXPY's solution vanishes
    assert set(np.flatnonzero(model.weight.detach().numpy().ravel() == 0)) == set(np.flatnonzero(np.abs(w.value) < 1e-6))
    # logged as the term's weight (metrics.jsonl: weight/<term>)
    assert list(reg.weights().values()) == [lam.value]


def test_equality_constraint_takes_both_signs_and_holds():
    # ||w||^2 == c with c above the unconstrained optimum's: the multiplier goes negative
    x, y = _lasso_data()
    d = x.shape[1]
    xt, yt = torch.tensor(x), torch.tensor(y).reshape(-1, 1)
    ols = torch.linalg.lstsq(xt, yt).solution
    c = 1.1 * float((ols ** 2).sum())
    text = f'''train eq {{
  loss mse
  optimizer sgd(lr = 0.05)
  constrain sum_squares(param("weight")) == {c!r} via lagrangian(lr = 0.02)
}}'''
    model, opt, reg = _attach(text, d)
    _steps(reg, opt, xt, yt, 750)
    value = float((model.weight.detach() ** 2).sum())
    assert value == pytest.approx(c, rel=1e-6)
    assert reg.update_rule.multipliers[0].value < 0
    # stationarity: grad f + 2 lam w = 0 at the end
    wt = model.weight.detach().clone().requires_grad_(True)
    loss = torch.nn.functional.mse_loss(xt @ wt.T, yt)
    g, = torch.autograd.grad(loss, wt)
    resid = g + 2 * reg.update_rule.multipliers[0].value * wt.detach()
    assert float(resid.abs().max()) < 1e-6


def test_activation_budget_holds_the_mean_activation_l1_at_its_bound():
    # a linear two-layer classifier on separable data: cross-entropy alone grows the hidden
    # activations without limit; the budget (1/B) sum_i ||a_i||_1 <= 2 stops them at 2
    torch.manual_seed(0)
    text = '''train act_budget {
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  constrain l1(act("0")) <= 2.0 via lagrangian(lr = 0.01) every 2 steps
}'''
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = regspec.attach(regspec.load(text), model, opt, steps_per_epoch=1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 10, generator=g)
    y = (x @ torch.randn(10, 3, generator=g)).argmax(dim=1)
    free = copy.deepcopy(model)
    free_opt = torch.optim.SGD(free.parameters(), lr=0.1)
    for _ in range(600):
        free_opt.zero_grad()
        torch.nn.functional.cross_entropy(free(x), y).backward()
        free_opt.step()
    _steps(reg, opt, x, y, 600)
    m = reg.update_rule.multipliers[0]
    with torch.no_grad():
        free_l1 = float(free[0](x).abs().sum(dim=1).mean())
        after = float(model[0](x).abs().sum(dim=1).mean())
    assert free_l1 > 3.0
    assert m.value > 0 and after == pytest.approx(2.0, abs=0.05)
    assert m.last == pytest.approx(after, abs=0.05)     # the multiplier read the same quantity


def test_multipliers_and_transforms_resume_bitwise():
    text = '''train resumable {
  loss mse
  optimizer sgd(lr = 0.02, momentum = 0.9)
  transform orthogonalize(param("0.weight"), steps = 5, momentum = 0.9)
  transform clip_grad_norm(param("**"), max_norm = 0.5)
  constrain norm1(param("2.weight")) <= 0.5 via lagrangian(lr = 0.3)
}'''
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    y = torch.randn(40, 1, generator=torch.Generator().manual_seed(3))

    def build(state=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        reg = regspec.attach(regspec.load(text), model, opt, steps_per_epoch=5)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            reg.load_state_dict(state["reg"])
        return model, opt, reg

    model, opt, reg = build()
    _steps(reg, opt, x, y, 7)
    state = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict(), "reg": reg.state_dict()})
    assert state["optimizer"]["regspec_update"]["multipliers"][0]["value"] > 0
    _steps(reg, opt, x, y, 6)
    model2, opt2, reg2 = build(state)
    assert reg2.update_rule.multipliers[0].value == float(state["optimizer"]["regspec_update"]["multipliers"][0]["value"])
    _steps(reg2, opt2, x, y, 6)
    for (n, a), (_, b) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(a, b), n
    assert reg.update_rule.multipliers[0].value == reg2.update_rule.multipliers[0].value


def test_lower_bound_constraint_pushes_the_norm_up():
    # ||w||^2 >= c above the unconstrained optimum's: the term is lam * (c - ||w||^2), lam >= 0
    x, y = _lasso_data()
    d = x.shape[1]
    xt, yt = torch.tensor(x), torch.tensor(y).reshape(-1, 1)
    c = 1.1 * float((torch.linalg.lstsq(xt, yt).solution ** 2).sum())
    text = f'''train lower {{
  loss mse
  optimizer sgd(lr = 0.05)
  constrain sum_squares(param("weight")) >= {c!r} via lagrangian(lr = 0.02)
}}'''
    model, opt, reg = _attach(text, d)
    _steps(reg, opt, xt, yt, 750)
    m = reg.update_rule.multipliers[0]
    assert m.value > 0 and m(0.0) == -m.value                # the term's weight is -lam
    assert float((model.weight.detach() ** 2).sum()) == pytest.approx(c, rel=1e-6)


def test_constraint_on_an_expression_of_atoms_reads_the_expression():
    # mean(abs(act(...))) goes through the expression terms (catalogue atoms' torch evaluations);
    # the multiplier reads the same value: per-sample means averaged over the batch = the mean
    torch.manual_seed(0)
    text = '''train e {
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  constrain mean(abs(act("0"))) <= 0.12 via lagrangian(lr = 0.05)
}'''
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Linear(16, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = regspec.attach(regspec.load(text), model, opt, steps_per_epoch=1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 10, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(10, 3, generator=g, dtype=torch.float64)).argmax(dim=1)
    m = reg.update_rule.multipliers[0]
    reg.module(x)
    with torch.no_grad():
        assert m.value_of(reg.module) == pytest.approx(float(model[0](x).abs().mean()), rel=1e-12)
    _steps(reg, opt, x, y, 300)
    with torch.no_grad():
        after = float(model[0](x).abs().mean())
    assert m.value > 0 and after == pytest.approx(0.12, abs=0.01)
