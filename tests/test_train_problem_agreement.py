"""Problem/training agreement (issue 10): the cross-check, extended to training.

For lasso, elastic net, group lasso, Huber regression, nonnegative least squares and
l1-ball-constrained least squares, one spec holds a ``problem`` and a ``train`` block over the
same arrays (``load("xy.npz")``) with the same expression. The train block (``model linear``,
no bias, full batch) runs in float64 through ``regspec.attach`` (its loss, its terms lowered by
the one split: prox steps, projections, loss terms) with plain SGD, i.e. proximal or projected
gradient descent with step 1/L; its objective must come within a relative gap of 1e-5 of the
CVXPY (Clarabel) optimum of the problem, and its weights must be feasible.

The data (200 x 8 standard normal inputs) has XᵀX/n close to the identity, so 1/L steps contract
fast: 200 steps reach the gap (each test takes about a second).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cvxpy")

import regspec  # noqa: E402

N, D = 200, 8
W_TRUE = np.array([1.5, -2.0, 0.0, 0.0, 0.7, 0.0, -0.3, 0.05])
GROUPS = [0, 0, 1, 1, 2, 2, 3, 3]

# name -> (problem objective and constraints, train statements, numpy objective of w)
CASES = {
    "lasso": (
        "minimize sum_squares(X @ w - y) / (2 * rows(X)) + 0.1 * norm1(w)",
        'loss mean((output - target) ** 2) / 2\n  regularize 0.1 * norm1(param("head.weight"))',
        lambda X, y, w: ((X @ w - y) ** 2).sum() / (2 * N) + 0.1 * np.abs(w).sum()),
    "elastic_net": (
        "minimize sum_squares(X @ w - y) / (2 * rows(X)) + 0.1 * norm1(w) + 0.05 * sum_squares(w)",
        'loss mean((output - target) ** 2) / 2\n'
        '  regularize 0.1 * norm1(param("head.weight")) + 0.05 * sum_squares(param("head.weight"))',
        lambda X, y, w: ((X @ w - y) ** 2).sum() / (2 * N) + 0.1 * np.abs(w).sum() + 0.05 * (w ** 2).sum()),
    "group_lasso": (
        f"minimize sum_squares(X @ w - y) / (2 * rows(X)) + 0.3 * group_norm(w, groups = {GROUPS})",
        f'loss mean((output - target) ** 2) / 2\n  regularize group_norm(param("head.weight"), groups = {GROUPS}) * 0.3',
        lambda X, y, w: ((X @ w - y) ** 2).sum() / (2 * N) + 0.3 * sum(
            np.sqrt(2) * np.linalg.norm(w[2 * g: 2 * g + 2]) for g in range(4))),
    "huber": (
        "minimize sum(huber(X @ w - y, M = 0.5)) / rows(X)",
        f"loss sum(huber(output - target, M = 0.5)) / {N}",
        lambda X, y, w: _huber(X @ w - y, 0.5).sum() / N),
    "nnls": (
        "minimize sum_squares(X @ w - y) / (2 * rows(X))",
        'loss mean((output - target) ** 2) / 2\n  constrain param("head.weight") in nonneg',
        lambda X, y, w: ((X @ w - y) ** 2).sum() / (2 * N)),
    "l1_ball_ls": (
        "minimize sum_squares(X @ w - y) / (2 * rows(X))",
        'loss mean((output - target) ** 2) / 2\n  constrain param("head.weight") in l1_ball(1.5)',
        lambda X, y, w: ((X @ w - y) ** 2).sum() / (2 * N)),
}
DOMAINS = {"nnls": " >= 0", "l1_ball_ls": " in l1_ball(1.5)"}  # the problem's variable domain
FEASIBLE = {"nnls": lambda w: w.min() >= 0, "l1_ball_ls": lambda w: np.abs(w).sum() <= 1.5 * (1 + 1e-12)}


def _huber(r: np.ndarray, m: float) -> np.ndarray:
    """CVXPY's huber: r^2 for |r| <= M, else 2M|r| - M^2."""
    a = np.abs(r)
    return np.where(a <= m, r ** 2, 2 * m * a - m ** 2)


def _spec(tmp_path: Path, name: str) -> Path:
    gen = np.random.default_rng(0)
    x = gen.standard_normal((N, D))
    y = x @ W_TRUE + 0.5 * gen.standard_normal(N)
    np.savez(tmp_path / "xy.npz", X=x, y=y)
    objective, statements, _ = CASES[name]
    text = f"""problem p {{
  data X, y = load("xy.npz")
  var w[cols(X)]{DOMAINS.get(name, "")}
  {objective}
}}

train t {{
  model linear(in = {D}, out = 1, bias = false)
  data load("xy.npz")
  batch full
  optimizer sgd(lr = 0.5)
  {statements}
}}
"""
    path = tmp_path / f"{name}.reg"
    path.write_text(text)
    return path


def _train(path: Path, lr: float, steps: int) -> np.ndarray:
    """Full-batch SGD in float64 through the train block's own loss and terms."""
    from regspec.backends.torch.train.assemble import make_data
    from regspec.compiler.train_plan import plan_train

    spec = regspec.load(path)
    plan = plan_train(spec.ast, "t")
    (x, y), = list(make_data(plan).epoch_loader(0))
    x, y = x.to(torch.float64), y.to(torch.float64)
    model = torch.nn.Sequential()
    model.add_module("head", torch.nn.Linear(D, 1, bias=False, dtype=torch.float64))
    torch.nn.init.zeros_(model.head.weight)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    reg = regspec.attach(spec, model, opt, train="t", steps_per_epoch=1, epochs=steps)
    for _ in range(steps):
        loss = reg.loss(reg.module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    reg.finalize()
    reg.close()
    return model.head.weight.detach().numpy().reshape(-1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_block_converges_to_the_problem_solution(tmp_path, name):
    path = _spec(tmp_path, name)
    reference = regspec.solve(path, problem="p", backend="cvxpy")
    assert reference.ok, reference.status
    data = np.load(tmp_path / "xy.npz")
    x, y = data["X"], data["y"]
    # L = lambda_max(X^T X / n) for the least-squares losses (2 L for huber's r^2 branch): step 1/L
    lipschitz = np.linalg.eigvalsh(x.T @ x / N).max() * (2.0 if name == "huber" else 1.0)
    w = _train(path, lr=1.0 / lipschitz, steps=200)
    objective = CASES[name][2]
    p_star = objective(x, y, np.asarray(reference.variables["w"], dtype=float).reshape(-1))
    # the solver's objective and ours at its point agree (the numpy objective is the spec's)
    assert p_star == pytest.approx(reference.objective, rel=1e-7, abs=1e-9)
    gap = (objective(x, y, w) - p_star) / max(1.0, abs(p_star))
    # below the optimum only by the solver's own accuracy (Clarabel: ~1e-8 relative)
    assert -1e-7 <= gap <= 1e-5, (name, gap, w)
    if name in FEASIBLE:
        assert FEASIBLE[name](w), w
