"""Penalties against closed forms; Hutchinson with a derived statistical tolerance."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from regspec.backends.torch.train.models import build_model
from regspec.backends.torch.train.penalties import act_l1, anchor_l2, flops, jacobian_fro, orthogonality, snapshot
from regspec.backends.torch.train.selectors import select_params
from regspec.diagnostics import RegspecError

torch.set_default_dtype(torch.float32)


def test_act_l1_and_flops_closed_forms():
    a = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, -3.0]])  # B = 2
    b = torch.arange(8.0).reshape(2, 2, 2) - 4                 # per-sample features flattened
    # mean over batch of per-sample l1: (3 + 4)/2 = 3.5; b: (|−4|+|−3|+|−2|+|−1| + 0+1+2+3)/2 = 8
    assert act_l1([a]).item() == pytest.approx(3.5)
    assert act_l1({"x": a, "y": b}).item() == pytest.approx(11.5)
    # flops: column means of |a| = (0.75, 1.25, 1.5) -> 0.5625 + 1.5625 + 2.25
    assert flops(a).item() == pytest.approx(4.375)


def _orthogonal(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=g, dtype=torch.float64))
    return q if rows >= cols else q.T  # orthonormal columns (tall) or rows (wide)


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthogonality_zero_on_orthogonal(shape):
    w = _orthogonal(*shape)
    assert orthogonality(w).item() == pytest.approx(0.0, abs=1e-20)
    assert orthogonality(w, mode="offdiag").item() == pytest.approx(0.0, abs=1e-20)
    # scaling keeps off-diagonals zero but moves the diagonal: full = k·(s² − 1)²
    k = min(shape)
    assert orthogonality(2 * w).item() == pytest.approx(k * 9.0, rel=1e-10)
    assert orthogonality(2 * w, mode="offdiag").item() == pytest.approx(0.0, abs=1e-20)


def test_orthogonality_conv_and_closed_form():
    conv = _orthogonal(4, 18).reshape(4, 2, 3, 3)  # C_out x (C_in k k) rows orthonormal
    assert orthogonality(conv).item() == pytest.approx(0.0, abs=1e-20)
    w = torch.randn(3, 5, dtype=torch.float64)
    g = w @ w.T
    assert orthogonality(w).item() == pytest.approx(((g - torch.eye(3, dtype=torch.float64)) ** 2).sum().item())
    off = g - torch.diag(torch.diag(g))
    assert orthogonality(w, "offdiag").item() == pytest.approx((off ** 2).sum().item())
    tall = torch.randn(7, 2, dtype=torch.float64)
    gt = tall.T @ tall
    assert orthogonality(tall).item() == pytest.approx(((gt - torch.eye(2, dtype=torch.float64)) ** 2).sum().item())
    # grouped: two 3x5 blocks, each with orthonormal rows -> 0 even though the blocks overlap
    blocks = torch.cat([_orthogonal(3, 5, 1), _orthogonal(3, 5, 2)])
    assert orthogonality(blocks, "grouped", groups=2).item() == pytest.approx(0.0, abs=1e-20)
    assert orthogonality(blocks).item() > 1e-3
    with pytest.raises(RegspecError):
        orthogonality(blocks, "grouped", groups=4)
    with pytest.raises(RegspecError):
        orthogonality(blocks, "diag")


def test_orthogonality_on_selected_params_is_differentiable():
    m = build_model("mlp", **{"in": 6, "hidden": [5], "out": 3})
    pen = orthogonality(select_params(m, type="Linear"))
    pen.backward()
    assert m.layers[0].weight.grad is not None and m.head.weight.grad is not None


def test_hutchinson_linear_map_converges_to_frobenius_norm():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64)
    f = lambda x: x @ a.T  # J_f(x_i) = A for every sample
    x = torch.randn(4, 5, dtype=torch.float64, generator=g)
    n_proj = 500
    est = jacobian_fro(f, x, n_proj=n_proj, generator=torch.Generator().manual_seed(1), create_graph=False)
    exact = (a ** 2).sum().item()
    # one draw ‖Aᵀv‖², v ~ N(0, I): mean ‖A‖_F², variance 2‖AAᵀ‖_F²; the estimate averages
    # B·n_proj independent draws, so 5 standard deviations is a ~6e-7 two-sided tail
    sigma = math.sqrt(2 * ((a @ a.T) ** 2).sum().item() / (x.shape[0] * n_proj))
    assert abs(est.item() - exact) < 5 * sigma
    assert sigma < 0.05 * exact  # and the tolerance is tight enough to mean something
    # one projection is a noisy but unbiased single draw; seeded draws repeat
    one = jacobian_fro(f, x, seed=3, create_graph=False)
    assert one.item() == pytest.approx(jacobian_fro(f, x, seed=3, create_graph=False).item())


def test_hutchinson_nonlinear_matches_exact_jacobian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(net))(x)  # (B, 3, 4)
    per_sample = (jac ** 2).sum(dim=(1, 2))
    exact = per_sample.mean().item()
    n_proj = 400
    var = sum(2 * ((j @ j.T) ** 2).sum().item() for j in jac) / (x.shape[0] ** 2 * n_proj)
    est = jacobian_fro(net, x, n_proj=n_proj, generator=torch.Generator().manual_seed(5))
    assert abs(est.item() - exact) < 5 * math.sqrt(var)
    est.backward()  # double backprop reaches the weights
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_anchor_l2():
    m = build_model("mlp", **{"in": 4, "hidden": [3], "out": 2})
    ref = snapshot(m)
    sel = select_params(m, "**")
    assert anchor_l2(sel, ref).item() == 0.0
    with torch.no_grad():
        m.head.weight.add_(0.5)  # 2x3 entries moved by 0.5 -> ½·6·0.25
    assert anchor_l2(sel, ref).item() == pytest.approx(0.75)
    assert anchor_l2([m.head.weight], [ref["head.weight"]]).item() == pytest.approx(0.75)
    weights = {n: torch.full_like(p, 2.0) for n, p in ref.items()}
    assert anchor_l2(sel, ref, weights).item() == pytest.approx(1.5)
    loss = anchor_l2(sel, ref)
    loss.backward()
    assert torch.allclose(m.head.weight.grad, torch.full_like(m.head.weight, 0.5))
    with pytest.raises(RegspecError, match="no reference"):
        anchor_l2(sel, {"head.weight": ref["head.weight"]})
