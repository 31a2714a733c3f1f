"""Regularizers as expressions of the language (issue 10 item 1): values against hand-written
torch/numpy, the per-tensor and per-sample rules, the split into parts and what `plan` says."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import regspec  # noqa: E402
from regspec.compiler.train_plan import plan_train  # noqa: E402


class AutoEncoder(torch.nn.Module):
    """enc (3 x 6), dec (6 x 3): tied-weight penalties compare enc.weight with dec.weight.T."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(6, 3, dtype=torch.float64)
        self.act = torch.nn.ReLU()
        self.dec = torch.nn.Linear(3, 6, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.act(self.enc(x)))


def _attach(body: str, lr: float = 0.1):
    torch.manual_seed(0)
    model = AutoEncoder()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    spec = regspec.load("train t {\n  loss mse\n  " + body + "\n}\n")
    return model, opt, regspec.attach(spec, model, opt)


def test_tied_weights_mix_two_selectors_and_train_towards_each_other():
    model, opt, reg = _attach('regularize sum_squares(param("enc.weight") - param("dec.weight").T) * 0.5')
    enc, dec = model.enc.weight, model.dec.weight
    value = float(reg.penalty().detach())
    assert value == pytest.approx(0.5 * float(((enc - dec.T) ** 2).sum().detach()), rel=1e-12)
    gap0 = float(((enc - dec.T) ** 2).sum().detach())
    for _ in range(20):
        loss = reg.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(((enc - dec.T) ** 2).sum().detach()) < 1e-3 * gap0   # the gradient reaches both tensors


def test_a_selector_matching_several_tensors_sums_the_term_per_tensor():
    model, _, reg = _attach('regularize pos(norm2(param("**.weight")) - 1) via grad')
    expected = sum(max(float(torch.linalg.vector_norm(w.detach())) - 1.0, 0.0) for w in (model.enc.weight, model.dec.weight))
    assert float(reg.penalty().detach()) == pytest.approx(expected, rel=1e-12)


def test_batch_selectors_are_taken_per_sample_and_averaged():
    model, _, reg = _attach('regularize log_sum_exp(output) + 0.5 * sum_squares(act("act"))')
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = reg.module(x)
    value = float(reg.penalty(out).detach())
    acts = torch.relu(model.enc(x))
    expected = float((torch.logsumexp(out, dim=1).mean() + 0.5 * (acts ** 2).sum(dim=1).mean()).detach())
    assert value == pytest.approx(expected, rel=1e-12)


def test_target_and_input_selectors():
    model, _, reg = _attach("regularize norm1(output - target) + 0.1 * sum_squares(input)")
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = reg.module(x)
    loss = reg.loss(out, y)
    expected = float((((out - y) ** 2).mean() + (out - y).abs().sum(dim=1).mean() + 0.1 * (x ** 2).sum(dim=1).mean()).detach())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)


def test_a_sum_splits_into_a_prox_part_and_a_loss_part():
    spec = regspec.load('train t {\n  regularize 0.2 * norm1(param("enc.weight")) + 0.05 * sum_squares(param("enc.weight"))'
                        ' + pos(norm2(param("dec.weight")) - 1)\n}\n')
    terms = plan_train(spec.ast, attach_only=True).terms
    assert [t.part for t in terms] == ["1 of 3", "2 of 3", "3 of 3"]
    assert [t.lowering for t in terms] == ["prox", "loss", "loss"]
    assert terms[0].kernel == "l1" and terms[0].weight == pytest.approx(0.2)
    assert terms[1].weight == pytest.approx(0.05)
    # a nonsmooth term without a prox is a subgradient, and the plan says so
    assert "nonsmooth (norm2, pos)" in terms[2].why and "subgradient" in terms[2].why
    assert terms[2].expr.curvature == "convex"


def test_prox_of_a_catalogue_atom_with_array_options():
    """group_norm with per-entry labels: the atom's prox (group_l2 kernel on those groups)."""
    from regspec.backends.torch.prox import KERNELS

    model, opt, reg = _attach('regularize group_norm(param("enc.weight"), groups = '
                              '[[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 3, 4, 4, 4]]) * 0.7', lr=0.5)
    w0 = model.enc.weight.detach().clone()
    labels = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 3, 4, 4, 4]])
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    expected = KERNELS["group_l2"].fn(w0, 0.35, groups=labels, num_groups=5)
    torch.testing.assert_close(model.enc.weight.detach(), expected, rtol=1e-12, atol=1e-12)
    # groups of 4 entries are scaled by sqrt(4) = 2, as the catalogue's group_norm weighs them
    norms = np.array([float(torch.linalg.vector_norm(w0[labels == g])) for g in range(5)])
    shrunk = np.array([float(torch.linalg.vector_norm(model.enc.weight.detach()[labels == g])) for g in range(5)])
    sizes = np.array([4, 4, 4, 3, 3])
    np.testing.assert_allclose(shrunk, np.maximum(norms - 0.35 * np.sqrt(sizes), 0), rtol=1e-12, atol=1e-12)


def test_plan_text_shows_typed_expression_matches_and_lowering(tmp_path):
    from regspec.train_api import plan_text

    spec = regspec.load("""train t {
  model mlp(in = 8, hidden = [6], out = 1)
  data synthetic(n = 40, d = 8, regression = true)
  batch 20
  epochs 1
  regularize sum_squares(param("layers.0.weight")[:, 0:6] - param("head.weight")) * 1e-3
  regularize huber(param("head.weight"), M = 0.1) * 1e-3 via prox
}
""")
    text = plan_text(spec)
    assert "typed     sum_squares(" in text and ": scalar, convex, smooth" in text
    assert 'param("layers.0.weight") -> layers.0.weight [6, 8]; param("head.weight") -> head.weight [1, 6]' in text
    assert "lowered   prox `huber`" in text and "prox huber(M=0.1)" in text
