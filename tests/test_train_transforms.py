"""Update transforms (transforms.py, optim.UpdateRule) against independent references:
torch.optim.Muon, the scalar Newton-Schulz map, torch.nn.utils.clip_grad_norm_, and a
hand-written SPECTRA step (AdamW direction clipped by an SVD)."""
from __future__ import annotations

import copy

import pytest
import torch

from regspec.backends.torch.train.optim import UpdateRule
from regspec.backends.torch.train.transforms import (MUON_COEFFICIENTS, ClipGradNorm, Orthogonalize, SpectralClip,
                                                     newton_schulz, ns_scalar_map)

EPS32 = torch.finfo(torch.float32).eps


def _problem(rows: int, cols: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(cols, rows, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.randn(rows, cols, generator=g, dtype=dtype) * 0.3)
    x = torch.randn(32, cols, generator=g, dtype=dtype)
    y = torch.randn(32, rows, generator=g, dtype=dtype)
    return model, x, y


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


def _run(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        _loss(model, x, y).backward()
        opt.step()


def test_newton_schulz_maps_each_singular_value_by_the_scalar_iteration():
    # the iteration is a matrix polynomial of X X^T: singular vectors stay, each singular value
    # s of X / ||X||_F follows s <- a s + b s^3 + c s^5 (float64: exact to roundoff)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 20, generator=g, dtype=torch.float64)
    s_in = torch.linalg.svdvals(x) / torch.linalg.norm(x)
    out = newton_schulz(x, MUON_COEFFICIENTS, 5)
    expected = ns_scalar_map(s_in, MUON_COEFFICIENTS, 5)
    got = torch.linalg.svdvals(out)
    torch.testing.assert_close(torch.sort(got).values, torch.sort(expected).values, rtol=1e-10, atol=1e-12)
    # and the band: the scalar map's image of [s_min, 1] on a fine grid (its extremes), in float32
    out32 = newton_schulz(x.float(), MUON_COEFFICIENTS, 5)
    grid = torch.linspace(float(s_in.min()), 1.0, 200001, dtype=torch.float64)
    image = ns_scalar_map(grid, MUON_COEFFICIENTS, 5)
    sv = torch.linalg.svdvals(out32.double())
    slack = 1e-4   # float32 iteration: a few eps times the growth of 5 quintic steps
    assert float(sv.min()) >= float(image.min()) - slack
    assert float(sv.max()) <= float(image.max()) + slack
    assert 0.6 < float(image.min()) and float(image.max()) < 1.25


@pytest.mark.parametrize("rows,cols", [(8, 24), (16, 16)])
def test_orthogonalize_with_sgd_equals_torch_muon_over_several_steps(rows, cols):
    # wide or square (Muon's shape factor is 1) and no weight decay: the same momentum, the same
    # bfloat16 Newton-Schulz, the same p.add_(update, alpha=-lr): equal to float32 rounding
    assert hasattr(torch.optim, "Muon")
    model, x, y = _problem(rows, cols)
    ref = copy.deepcopy(model)
    muon = torch.optim.Muon(ref.parameters(), lr=0.02, weight_decay=0.0, momentum=0.9, nesterov=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    UpdateRule(model, opt, transforms=[Orthogonalize(["weight"], momentum=0.9, nesterov=True, dtype="bfloat16")])
    _run(ref, muon, x, y, 6)
    _run(model, opt, x, y, 6)
    tol = 6 * 4 * EPS32 * float(ref.weight.detach().abs().max())
    torch.testing.assert_close(model.weight, ref.weight, rtol=0, atol=tol)
    assert not torch.equal(model.weight, _problem(rows, cols)[0].weight)   # it moved


def test_orthogonalize_tall_with_weight_decay_one_step_equals_muon():
    # Muon scales by sqrt(rows / cols) and decays decoupled; SGD's coupled decay after the
    # transform is the same step: x (1 - lr wd) - lr s O, up to float32 rounding of each product
    model, x, y = _problem(24, 8, seed=2)
    ref = copy.deepcopy(model)
    muon = torch.optim.Muon(ref.parameters(), lr=0.05, weight_decay=0.1, momentum=0.95, nesterov=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.1)
    UpdateRule(model, opt, transforms=[Orthogonalize(["weight"], momentum=0.95, nesterov=False, dtype="bfloat16")])
    _run(ref, muon, x, y, 1)
    _run(model, opt, x, y, 1)
    tol = 8 * EPS32 * float(ref.weight.detach().abs().max())
    torch.testing.assert_close(model.weight, ref.weight, rtol=0, atol=tol)


def test_clip_grad_norm_is_the_projection_onto_the_l2_ball():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)).double()
    ref = copy.deepcopy(model)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    names = ["0.weight", "0.bias", "1.weight"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    UpdateRule(model, opt, transforms=[ClipGradNorm(names, max_norm=0.05)])
    opt.zero_grad()
    _loss(model, x, y).backward()
    opt.step()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    _loss(ref, x, y).backward()
    sel = [dict(ref.named_parameters())[n] for n in names]
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in sel))
    assert float(norm) > 0.05                          # the clip is active
    for p in sel:
        p.grad *= 0.05 / norm
    ref_opt.step()
    for (n, a), (_, b) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15, msg=n)


def test_spectral_clip_is_spectra_with_adamw():
    # X <- (1 - lr wd) X - lr clip_c(U), U = AdamW's direction m_hat / (sqrt(v_hat) + eps)
    model, x, y = _problem(6, 9, seed=3, dtype=torch.float64)
    w0 = model.weight.detach().clone()
    lr, wd, c = 0.1, 0.01, 0.5
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    UpdateRule(model, opt, transforms=[SpectralClip(["weight"], c=c)])
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for k in range(1, 4):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
        wr = w.clone().requires_grad_(True)
        g, = torch.autograd.grad(((x @ wr.T - y) ** 2).mean(), wr)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1 ** k)) / ((v / (1 - b2 ** k)).sqrt() + eps)
        p_, s_, qt = torch.linalg.svd(u, full_matrices=False)
        assert float(s_.max()) > c                     # the clip is active
        w = (1 - lr * wd) * w - lr * (p_ * s_.clamp(max=c)) @ qt
        torch.testing.assert_close(model.weight.detach(), w, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.svdvals((model.weight.detach() - w0)).max()) <= 3 * lr * c + 3 * lr * wd * float(
        torch.linalg.svdvals(w0).max())


def test_update_rule_state_travels_in_the_optimizer_state_dict():
    model, x, y = _problem(8, 12, seed=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    rule = UpdateRule(model, opt, transforms=[Orthogonalize(["weight"])])
    _run(model, opt, x, y, 2)
    state = opt.state_dict()
    assert "regspec_update" in state
    clone, _, _ = _problem(8, 12, seed=4)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.SGD(clone.parameters(), lr=0.02)
    rule2 = UpdateRule(clone, opt2, transforms=[Orthogonalize(["weight"])])
    opt2.load_state_dict(state)
    assert torch.equal(rule2.transforms[0].buffers["weight"], rule.transforms[0].buffers["weight"])
    _run(model, opt, x, y, 2)
    _run(clone, opt2, x, y, 2)
    assert torch.equal(model.weight, clone.weight)


def test_update_transform_refuses_a_user_optimizer():
    model, _, _ = _problem(4, 4)

    class MyOpt(torch.optim.SGD):
        pass

    from regspec.diagnostics import RegspecError

    with pytest.raises(RegspecError, match="built-in optimizer"):
        UpdateRule(model, MyOpt(model.parameters(), lr=0.1), transforms=[SpectralClip(["weight"], c=1.0)])


def test_applied_orthogonalized_update_has_singular_values_in_the_band():
    # SGD without momentum applies -lr * s * NS_5(X): (w_old - w_new) / lr has the singular values
    # of NS_5, inside the scalar map's image of [s_min, 1] (s = sigma / ||X||_F of the momentum X)
    model, x, y = _problem(12, 20, seed=5, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    UpdateRule(model, opt, transforms=[Orthogonalize(["weight"], momentum=0.0, nesterov=False)])
    w0 = model.weight.detach().clone()
    opt.zero_grad()
    _loss(model, x, y).backward()
    g = model.weight.grad.detach().clone()
    opt.step()
    sv = torch.linalg.svdvals((w0 - model.weight.detach()) / 0.01)
    s_in = torch.linalg.svdvals(g) / torch.linalg.norm(g)
    grid = torch.linspace(float(s_in.min()), 1.0, 200001, dtype=torch.float64)
    image = ns_scalar_map(grid, MUON_COEFFICIENTS, 5)
    slack = 1e-9 * 5   # float64: the division by lr and the subtraction, far below the band's width
    assert float(sv.min()) >= float(image.min()) - slack and float(sv.max()) <= float(image.max()) + slack
    torch.testing.assert_close(torch.sort(sv).values, torch.sort(ns_scalar_map(s_in)).values, rtol=1e-8, atol=1e-10)


def test_gated_and_scheduled_transform_through_attach():
    # `from epoch 1`: the first epoch (2 steps) is plain AdamW, then SPECTRA clips; the
    # radius follows its schedule (linear 4 -> 0.5 over the 2 epochs, evaluated at each step's t)
    import regspec

    text = '''train g {
  loss mse
  optimizer adamw(lr = 0.1)
  transform spectral_clip(param("weight"), c = linear(4.0 -> 0.5)) from epoch 1
}'''
    model, x, y = _problem(6, 9, seed=6, dtype=torch.float64)
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.1)
    regspec.attach(regspec.load(text), model, opt, steps_per_epoch=2, epochs=2)
    _run(model, opt, x, y, 2)
    _run(ref, ref_opt, x, y, 2)
    assert torch.equal(model.weight, ref.weight)          # not active in epoch 0
    before = model.weight.detach().clone()
    _run(model, opt, x, y, 1)                              # step 3 starts at t = 1.0: c = 4 - 3.5 * 0.5
    step = torch.linalg.svdvals(before - model.weight.detach())
    assert float(step.max()) <= 0.1 * 2.25 * (1 + 1e-9) + 0.1 * 0.01 * float(torch.linalg.svdvals(before).max())
    _run(ref, ref_opt, x, y, 1)
    assert float(torch.linalg.svdvals(before - ref.weight.detach()).max()) > 0.1 * 2.25 * 1.2   # AdamW alone: larger


def test_soft_spectral_clip_maps_each_singular_value():
    # soft clip: sigma -> sigma / sqrt(1 + sigma^2 / c^2), singular vectors kept
    from regspec.backends.torch.train.transforms import spectral_clip

    g = torch.Generator().manual_seed(7)
    u = torch.randn(7, 11, generator=g, dtype=torch.float64) * 3
    c = 2.0
    out = spectral_clip(u, c, soft=True)
    s = torch.linalg.svdvals(u)
    torch.testing.assert_close(torch.linalg.svdvals(out), s / torch.sqrt(1 + (s / c) ** 2), rtol=1e-12, atol=1e-12)
    # same singular vectors: out = u V diag(f(s)/s) V^T
    _, _, vt = torch.linalg.svd(u, full_matrices=False)
    torch.testing.assert_close(out, u @ vt.T @ torch.diag(1 / torch.sqrt(1 + (s / c) ** 2)) @ vt, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.svdvals(out).max()) < c
