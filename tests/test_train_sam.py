"""Sharpness-aware minimisation (sam.py through optim.UpdateRule) against a hand-written
two-pass SAM step (Foret et al. 2021, Algorithm 1), float64, same seed."""
from __future__ import annotations

import copy

import pytest
import torch

from regspec.backends.torch.train.optim import UpdateRule
from regspec.backends.torch.train.sam import Sam
from regspec.diagnostics import RegspecError


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def _data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(20, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)


def _loss(net, x, y):
    return torch.nn.functional.cross_entropy(net(x), y)


def _hand_sam_step(net, x, y, lr, rho, momentum_buf=None, momentum=0.0):
    params = list(net.parameters())
    grads = torch.autograd.grad(_loss(net, x, y), params)
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    w0 = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(rho * g / norm)
    grads2 = torch.autograd.grad(_loss(net, x, y), params)
    with torch.no_grad():
        for i, (p, w, g) in enumerate(zip(params, w0, grads2)):
            if momentum:
                momentum_buf[i] = g.clone() if momentum_buf[i] is None else momentum * momentum_buf[i] + g
                g = momentum_buf[i]
            p.copy_(w - lr * g)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sam_step_equals_the_hand_written_two_pass_step(momentum):
    net, x, y = _net(), *_data()
    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=momentum)
    UpdateRule(net, opt, sam=Sam(rho=0.05))

    def closure():
        loss = _loss(net, x, y)
        loss.backward()
        return loss

    bufs = [None] * len(list(ref.parameters()))
    for _ in range(3):
        opt.zero_grad()
        _loss(net, x, y).backward()
        opt.step(closure)
        _hand_sam_step(ref, x, y, 0.1, 0.05, bufs, momentum)
        for (n, a), (_, b) in zip(net.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15, msg=n)
    # and it is not plain SGD
    plain = copy.deepcopy(_net())
    sgd = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=momentum)
    for _ in range(3):
        sgd.zero_grad()
        _loss(plain, x, y).backward()
        sgd.step()
    assert not torch.allclose(plain[0].weight, net[0].weight, atol=1e-6)


def test_sam_without_a_closure_is_a_clear_error():
    net, x, y = _net(), *_data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    UpdateRule(net, opt, sam=Sam(rho=0.05))
    _loss(net, x, y).backward()
    with pytest.raises(RegspecError, match="closure"):
        opt.step()


def test_adaptive_sam_step_equals_the_hand_written_asam_step():
    # ASAM (Kwon et al. 2021): e = rho * T^2 g / ||T g||, T = |w| + eta
    net, x, y = _net(), *_data()
    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    UpdateRule(net, opt, sam=Sam(rho=0.5, adaptive=True, eta=0.01))

    def closure():
        loss = _loss(net, x, y)
        loss.backward()
        return loss

    opt.zero_grad()
    _loss(net, x, y).backward()
    opt.step(closure)
    params = list(ref.parameters())
    grads = torch.autograd.grad(_loss(ref, x, y), params)
    scales = [p.detach().abs() + 0.01 for p in params]
    norm = torch.sqrt(sum(((s * g) ** 2).sum() for s, g in zip(scales, grads)))
    w0 = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s, g in zip(params, scales, grads):
            p.add_(0.5 * s * s * g / norm)
    grads2 = torch.autograd.grad(_loss(ref, x, y), params)
    for (n, a), w, g in zip(net.named_parameters(), w0, grads2):
        torch.testing.assert_close(a.detach(), w - 0.1 * g, rtol=1e-14, atol=1e-15, msg=n)
