"""Losses (named, callables, expression trees) and optimizers with checked arguments."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from regspec.backends.torch.train.losses import build_loss, cross_entropy, mse
from regspec.backends.torch.train.optim import build_optimizer, current_lrs, set_hparam
from regspec.diagnostics import RegspecError


def test_named_losses():
    z = torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, 1, 0])
    assert torch.allclose(build_loss("cross_entropy")(z, y), F.cross_entropy(z, y))
    out, tgt = torch.randn(4, 1), torch.randn(4)
    assert torch.allclose(mse(out, tgt), ((out[:, 0] - tgt) ** 2).mean())  # (B,1) vs (B,) no broadcast bug
    assert torch.allclose(build_loss("MSE")(out, tgt[:, None]), mse(out, tgt))
    with pytest.raises(RegspecError, match="does not match"):
        mse(torch.randn(4, 2), torch.randn(4))
    with pytest.raises(RegspecError) as e:
        build_loss("cross_entropi")
    assert "did you mean `cross_entropy`" in str(e.value)
    soft = F.one_hot(y, 3).float()
    assert torch.allclose(cross_entropy(z, soft), F.cross_entropy(z, y))


def test_loss_callable_and_tree():
    out, tgt = torch.randn(6, 2), torch.randn(6, 2)
    fn = build_loss(lambda o, t: (o - t) ** 2)  # non-scalar -> mean
    assert torch.allclose(fn(out, tgt), F.mse_loss(out, tgt))
    tree = ("add", ("mse", "output", "target"), ("mul", 0.1, ("mean", ("abs", "output"))))
    assert torch.allclose(build_loss(tree)(out, tgt), F.mse_loss(out, tgt) + 0.1 * out.abs().mean())
    with pytest.raises(RegspecError, match="unknown operation `sqr`"):
        build_loss(("sqr", "output"))
    with pytest.raises(RegspecError, match="did you mean `output`"):
        build_loss(("abs", "outptu"))


def test_build_optimizer_and_lrs():
    w = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer("adamw", [w], lr=1e-2, weight_decay=0, betas=[0.9, 0.99])
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert current_lrs(opt) == [1e-2]
    set_hparam(opt, "lr", 5e-3)
    assert current_lrs(opt) == [5e-3]
    groups = [{"params": [w], "lr": 0.1}, {"params": [torch.nn.Parameter(torch.zeros(2))]}]
    assert current_lrs(build_optimizer("sgd", groups, lr=0.5, momentum=0.9)) == [0.1, 0.5]
    assert isinstance(build_optimizer("torch.optim:RMSprop", [w], lr=0.1), torch.optim.RMSprop)


def test_optimizer_errors():
    w = [torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(RegspecError) as e:
        build_optimizer("adamw", w, lr=1e-3, wd=0.1)
    assert "`wd`" in str(e.value) and "weight_decay" in str(e.value)
    with pytest.raises(RegspecError) as e:
        build_optimizer("sgd", w, lr=0.1, momentun=0.9)
    assert "did you mean `momentum`" in str(e.value)
    with pytest.raises(RegspecError) as e:
        build_optimizer("adan", w)
    assert "did you mean `adam`" in str(e.value)
    with pytest.raises(RegspecError, match="rejected"):
        build_optimizer("sgd", w, lr=-1.0)
    with pytest.raises(RegspecError, match="no parameters"):
        build_optimizer("sgd", [], lr=0.1)
    with pytest.raises(RegspecError, match="no hyperparameter `momentun`"):
        set_hparam(build_optimizer("sgd", w, lr=0.1), "momentun", 0.9)
