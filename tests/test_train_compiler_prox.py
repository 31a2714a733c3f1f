"""The fused prox engine: bucketing, fused == per-tensor loop, exact zeros, gates, the step-size
rule (the lr the optimizer used; Adam's metric for separable kernels) and its fixed points."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from regspec.backends.torch.train.proxstep import Clock, ProxEngine, ProxGroup, When

torch.set_num_threads(1)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4),
                         nn.Conv2d(3, 8, 3))


GROUPS = [
    ProxGroup("l1", ["0.weight", "2.weight"], 0.3),
    ProxGroup("l1", ["4.weight"], 0.05),                                  # same kernel: same fused call
    ProxGroup("group_l2", ["5.weight"], 0.2, {"groups": "channels"}),
    ProxGroup("l2sq", ["0.bias", "2.bias"], 0.5),
    ProxGroup("nuclear", ["2.weight"], 0.1, matrix=True),
    ProxGroup("elastic_net", ["4.bias"], 1.0, {"lam_l1": 0.1, "lam_l2": 0.2}),
    ProxGroup("anchor_l2", ["4.weight"], 2.0, {"anchor": "init"}),
    ProxGroup("spectral_ball", ["0.weight", "2.weight"], hyper={"radius": 0.5}, matrix=True),
    ProxGroup("nm_sparse", ["5.weight"], hyper={"n": 2, "m": 4}, matrix=True),
    ProxGroup("top_k", ["4.weight"], hyper={"k": 10}),
]


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    out = model[:5](x).sum() + model[5](torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2))).sum()
    opt.zero_grad()
    out.backward()
    opt.step()


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.0)])
def test_fused_equals_per_tensor_loop(make_opt):
    a = _net()
    b = copy.deepcopy(a)
    oa, ob = make_opt(a.parameters()), make_opt(b.parameters())
    metric = "adaptive" if isinstance(oa, torch.optim.Adam) else "euclidean"
    groups = [ProxGroup(g.kernel, g.params, g.weight, dict(g.hyper),
                        metric if g.kernel in ("l1", "l2sq", "elastic_net", "anchor_l2") else "euclidean",
                        g.when, g.matrix) for g in GROUPS]
    ea, eb = ProxEngine(a, oa, groups), ProxEngine(b, ob, copy.deepcopy(groups))
    assert len(ea.buckets) == len(GROUPS) - 1   # the two l1 statements share one call
    for _ in range(3):
        _step(a, oa)
        _step(b, ob)
        ea.after_step()
        eb.apply_loop()
        eb.clock.tick()
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_step_follows_the_lr_the_optimizer_used():
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.5, 0.02, 0.0]] * 3))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    eng = ProxEngine(lin, opt, [ProxGroup("l1", ["weight"], 0.3)])
    opt.zero_grad()
    (lin.weight * 0).sum().backward()   # zero gradient: only the prox moves the weights
    opt.step()
    sched.step()                         # lr is now 0.05, but the step used 0.1
    eng.after_step()
    expected = torch.tensor([1.0 - 0.03, -0.5 + 0.03, 0.0, 0.0])
    torch.testing.assert_close(lin.weight[0], expected)
    assert torch.all(lin.weight[:, 2:] == 0)   # exact zeros (the soft threshold of |x| <= tau)


def test_exact_zeros_stay_zero():
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    with torch.no_grad():
        lin.weight[:, :3] = 0.0
        lin.weight[2] = 0.0
    opt = torch.optim.SGD(lin.parameters(), lr=0.01)
    eng = ProxEngine(lin, opt, [ProxGroup("l1", ["weight"], 1e-3), ProxGroup("group_l2", ["weight"], 1e-3)])
    for _ in range(5):
        opt.zero_grad()
        (lin.weight[:, 3:] ** 2).sum().backward()  # zero gradient on the zero block
        opt.step()
        eng.after_step()
    assert torch.all(lin.weight[:, :3] == 0) and torch.all(lin.weight[2] == 0)


def test_adaptive_metric_is_adams_per_coordinate_step():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    eng = ProxEngine(lin, opt, [ProxGroup("l1", ["weight"], 0.2, metric="adaptive"),
                                ProxGroup("l2sq", ["bias"], 3.0, metric="adaptive")])
    for k in range(3):
        opt.zero_grad()
        (lin(torch.randn(7, 5)) ** 2).mean().backward()
        opt.step()
        w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
        st_w, st_b = opt.state[lin.weight], opt.state[lin.bias]
        bc2 = 1 - 0.99 ** float(st_w["step"])
        dw = 1 / ((st_w["exp_avg_sq"] / bc2).sqrt() + 1e-8)
        db = 1 / ((st_b["exp_avg_sq"] / bc2).sqrt() + 1e-8)
        eng.after_step()
        tau = 0.01 * 0.2 * dw
        torch.testing.assert_close(lin.weight.detach(), torch.sign(w) * (w.abs() - tau).clamp_min(0))
        torch.testing.assert_close(lin.bias.detach(), b / (1 + 0.01 * 3.0 * db))


def test_adaptive_rule_keeps_the_lasso_fixed_points():
    """Adam + the adaptive l1 prox solves the lasso exactly (its fixed points satisfy the lasso KKT
    conditions); Adam + the Euclidean prox does not (documented rule, proxstep module doc)."""
    from sklearn.linear_model import Lasso

    g = torch.Generator().manual_seed(0)
    n, d = 80, 12
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.zeros(d, dtype=torch.float64)
    w_true[:3] = torch.tensor([2.0, -3.0, 1.5])
    y = X @ w_true + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    lam = 0.2
    ref = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X.numpy(), y.numpy()).coef_
    errors = {}
    for metric in ("adaptive", "euclidean"):
        torch.manual_seed(0)
        m = nn.Linear(d, 1, bias=False).double()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2500, eta_min=1e-4)
        eng = ProxEngine(m, opt, [ProxGroup("l1", ["weight"], lam, metric=metric)])
        for _ in range(2500):
            opt.zero_grad()
            (((m(X).squeeze(1) - y) ** 2).mean() / 2).backward()
            opt.step()
            eng.after_step()
            sched.step()
        w = m.weight.detach().numpy()[0]
        errors[metric] = (np.abs(w - ref).max(), int((w == 0).sum()))
    assert errors["adaptive"][0] < 1e-4 and errors["adaptive"][1] == int((ref == 0).sum())
    assert errors["euclidean"][0] > 1e-2


def test_decoupled_weight_decay_prox_matches_adamw_to_second_order():
    """CATALOGUE X26: Adam + the l2sq prox x/(1 + lr lam) equals AdamW's (1 - lr lam) x to O(lr^2)."""
    lam, steps = 0.5, 20
    diffs = []
    for lr in (1e-2, 5e-3):
        torch.manual_seed(0)
        a = nn.Linear(6, 3)
        b = copy.deepcopy(a)
        oa = torch.optim.Adam(a.parameters(), lr=lr)
        ob = torch.optim.AdamW(b.parameters(), lr=lr, weight_decay=lam)
        eng = ProxEngine(a, oa, [ProxGroup("l2sq", ["weight", "bias"], lam, metric="euclidean")])
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
        for _ in range(steps):
            for m, o in ((a, oa), (b, ob)):
                o.zero_grad()
                (m(x) - 1.0).pow(2).mean().backward()
                o.step()
            eng.after_step()
        diffs.append(max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters())))
    assert diffs[0] < steps * (1e-2) ** 2 * 2        # O(steps * lr^2) with O(1) constants
    assert 2.5 < diffs[0] / diffs[1] < 5.5           # halving lr divides the gap by ~4


def test_gates_every_from_until():
    w = When(every=3, from_epoch=1, until_epoch=2)
    spe = 4
    active = [s for s in range(1, 13) if w.active(s, (s - 1) / spe)]
    assert active == [6]  # steps 5..8 are epoch 1; multiples of 3 there: 6
    w2 = When(from_step=3, until_step=5)
    assert [s for s in range(1, 8) if w2.active(s, 0.0)] == [3, 4]
    # an engine applies a gated projection only at the gate's steps, and finalize() applies it once more
    lin = nn.Linear(3, 3, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    clock = Clock(steps_per_epoch=4)
    eng = ProxEngine(lin, opt, [ProxGroup("box", ["weight"], hyper={"lo": -0.1, "hi": 0.1}, when=When(every=5))],
                     clock)
    hits = []
    for epoch in range(2):
        clock.start_epoch(epoch)
        for _ in range(4):
            with torch.no_grad():
                lin.weight.fill_(1.0)
            opt.step()
            eng.after_step()
            hits.append(bool(lin.weight.max() <= 0.1 + 1e-6))
    assert hits == [False, False, False, False, True, False, False, False]
    eng.finalize()
    assert float(lin.weight.max()) == pytest.approx(0.1)


def test_scheduled_weight_and_radius():
    from regspec.backends.torch.train.schedules import linear

    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2) * 3)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    clock = Clock(steps_per_epoch=2)
    eng = ProxEngine(lin, opt, [ProxGroup("spectral_ball", ["weight"], hyper={"radius": linear(2.0, 1.0, total=1)},
                                          matrix=True)], clock)
    clock.start_epoch(0)
    opt.step()
    eng.after_step()           # t = 0: radius 2
    assert math.isclose(float(torch.linalg.matrix_norm(lin.weight, 2)), 2.0, rel_tol=1e-6)
    opt.step()
    eng.after_step()           # t = 0.5: radius 1.5
    assert math.isclose(float(torch.linalg.matrix_norm(lin.weight, 2)), 1.5, rel_tol=1e-6)
    eng.finalize()             # end of training, t = 1: radius 1
    assert math.isclose(float(torch.linalg.matrix_norm(lin.weight, 2)), 1.0, rel_tol=1e-6)
