"""`regspec.attach`: the spec's rewrites and regularizers on a user's model, optimizer and loop."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import regspec
from regspec.backends.torch.train.data import build_data
from regspec.backends.torch.train.models import build_model
from regspec.diagnostics import RegspecError
from regspec.train_api import load_trainer

torch.set_num_threads(1)

SPEC = """
train reg {
  loss cross_entropy
  rewrite GELU -> ReLU
  regularize l1(act("acts.*")) * 1e-4
  regularize group_l2(param("layers.*.weight"), groups = rows) * 1e-3
  regularize l1(param("head.weight")) * 1e-3 via prox
  regularize orthogonality(param(type = Linear)) * 1e-4
  regularize anchor_l2(param("layers.0.bias")) * 0.1 via prox
  constrain param("head.weight") in spectral_ball(0.8) every 5 steps
}
"""


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("mlp", **{"in": 64, "hidden": [32, 32], "out": 10, "act": "gelu"})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    return model, opt


def test_attach_in_a_user_loop():
    model, opt = _setup()
    reg = regspec.attach(SPEC, model, opt, steps_per_epoch=12)
    assert isinstance(model.acts[0], nn.ReLU)                        # rewritten in place
    assert dict(reg.module.named_parameters()).keys() == dict(model.named_parameters()).keys()
    assert all(p is q for p, q in zip(reg.module.parameters(), model.parameters()))
    data = build_data("digits", split=0.8, batch=128, seed=0)
    first = None
    for epoch in range(2):
        reg.start_epoch(epoch)
        for x, y in data.epoch_loader(epoch):
            out = reg.module(x)
            assert set(reg.module.taps) == {"acts.0", "acts.1"}
            loss = reg.loss(out, y)
            plain = nn.functional.cross_entropy(out, y)
            assert float(loss.detach()) > float(plain.detach())    # penalties are in the loss
            first = float(loss.detach()) if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
            reg.after_step()
    assert float(loss.detach()) < first
    # step 24 ran the l1 prox but not the projection (every 5 steps): exact zeros
    assert float((model.head.weight == 0).float().mean()) > 0.0
    reg.finalize()                                                  # the constraint holds at the end
    assert float(torch.linalg.matrix_norm(model.head.weight.detach(), 2)) <= 0.8 + 1e-5
    values = reg.values()
    assert len(values) == 6 and all(v >= 0 for v in values.values())


def test_attach_matches_the_generated_trainer(tmp_path):
    """The same spec through attach + a hand-written loop and through the trainer: same weights."""
    spec_path = tmp_path / "s.reg"
    spec_path.write_text(SPEC.replace("train reg {", """train reg {
  model mlp(in = 64, hidden = [32, 32], out = 10, act = "gelu")
  data digits(split = 0.8)
  optimizer adamw(lr = 3e-3, weight_decay = 0)
  batch 128
  epochs 2
  seed 0"""))
    regspec.compile_trainer(str(spec_path), out=tmp_path / "t.py")
    mod = load_trainer(tmp_path / "t.py")
    assert mod.main(["--out", str(tmp_path / "run"), "--quiet", "--dtype", "float64"]) == 0
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)

    model, opt = _setup()
    data = build_data("digits", split=0.8, batch=128, seed=0)
    reg = regspec.attach(str(spec_path), model, opt, steps_per_epoch=len(data.epoch_loader(0)), epochs=2)
    model.to(torch.float64)   # in place: the optimizer and the hooks keep the same parameters
    for epoch in range(2):
        reg.start_epoch(epoch)
        for x, y in data.epoch_loader(epoch):
            loss = reg.loss(reg.module(x.to(torch.float64)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            reg.after_step()
    reg.finalize()
    # the trainer spells the math out (its own summation order), the runtime fuses it: float64
    # differences of ~1e-16 grow over 24 AdamW steps; 1e-9 of the weights' scale leaves decades
    for k, v in model.state_dict().items():
        assert torch.allclose(v, trained[k], rtol=0, atol=1e-9 * float(v.abs().max())), k


def test_attach_untraceable_model_uses_hooks():
    from train_fixtures import Branchy

    torch.manual_seed(0)
    model = Branchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = regspec.attach("""
train t {
  rewrite GELU -> ReLU
  regularize l1(act("act")) * 1e-3
  regularize l1(param("inp.weight")) * 1e-2
}""", model, opt)
    assert reg.module.tap_path == "hooks" and "tracing failed" in reg.module.tap_reason
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    loss = reg.loss(reg.module(x), y)
    assert "act" in reg.module.taps
    opt.zero_grad()
    loss.backward()
    opt.step()
    reg.after_step()
    assert float((model.inp.weight == 0).float().mean()) > 0


def test_attach_errors_are_located():
    model, opt = _setup()
    with pytest.raises(RegspecError) as info:
        regspec.attach('train t {\n  regularize l1(param("layer.0.weight")) * 1e-3\n}', model, opt)
    d = info.value.first
    assert d.span.line == 2 and "layers.0.weight" in " ".join(d.notes)
    with pytest.raises(RegspecError, match="steps per epoch"):
        regspec.attach('train t {\n  constrain param("head.weight") in nonneg every 2 epochs\n}', model, opt)


def test_jacobian_penalty_matches_the_exact_jacobian():
    """jacobian_fro on a linear model: J = W for every sample, so the term is (1/2)||W||_F^2."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 3, bias=False)
    reg = regspec.attach("train t {\n  loss mse\n  regularize jacobian_fro(output, n_proj = 400) * 1.0\n}", lin)
    x = torch.randn(8, 5)
    pen = reg.penalty(reg.module(x))
    exact = 0.5 * float(lin.weight.detach().pow(2).sum())
    assert float(pen.detach()) == pytest.approx(exact, rel=0.15)
    pen.backward()
    assert lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) > 0
