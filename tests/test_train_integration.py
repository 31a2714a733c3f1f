"""The building blocks composed into a small training loop, and bitwise-equal resume."""
from __future__ import annotations

import copy

import torch

from regspec.backends.torch.train.data import build_data
from regspec.backends.torch.train.fx import insert_taps, rewrite_activations
from regspec.backends.torch.train.losses import build_loss
from regspec.backends.torch.train.models import build_model
from regspec.backends.torch.train.optim import build_optimizer, current_lrs, set_hparam
from regspec.backends.torch.train.penalties import act_l1, orthogonality
from regspec.backends.torch.train.schedules import Gate, build_schedule
from regspec.backends.torch.train.selectors import select_params

EPOCHS = 3


def _setup():
    torch.manual_seed(0)
    data = build_data("digits", split=0.8, batch=128, seed=0)
    model = build_model("mlp", **{"in": data.in_features, "hidden": [64, 64], "out": data.n_outputs, "act": "gelu"})
    model, n = rewrite_activations(model, "GELU", "ReLU")
    assert n == 2
    tapped = insert_taps(model, "acts.*")
    opt = build_optimizer("adamw", tapped.parameters(), lr=1e-2, weight_decay=0)
    return data, model, tapped, opt


def _run_epochs(data, model, tapped, opt, first, last):
    loss_fn = build_loss("cross_entropy")
    lam = build_schedule("sine_stages", 0.0, 1e-3, stages=2, total=EPOCHS)
    lr = build_schedule("cosine", 1e-2, 1e-3, total=EPOCHS)
    ortho = select_params(model, type="Linear")
    clip = Gate(every=5, from_epoch=1)
    steps_per_epoch = len(data.epoch_loader(0))
    tapped.train()
    for epoch in range(first, last):
        for i, (x, y) in enumerate(data.epoch_loader(epoch)):
            step = epoch * steps_per_epoch + i
            t = step / steps_per_epoch
            set_hparam(opt, "lr", lr(t))
            out = tapped(x)
            loss = loss_fn(out, y) + lam(t) * act_l1(tapped.taps) + 1e-4 * orthogonality(ortho)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if clip.active(step + 1, epoch):
                with torch.no_grad():
                    model.head.weight.clamp_(-1.0, 1.0)  # stands in for a projection step


def test_train_and_resume_bitwise():
    data, model, tapped, opt = _setup()
    _run_epochs(data, model, tapped, opt, 0, 2)
    ckpt = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict())}
    _run_epochs(data, model, tapped, opt, 2, EPOCHS)
    assert current_lrs(opt)[0] < 1e-2
    tapped.eval()
    with torch.no_grad():
        acc = (tapped(data.tensors["x_val"]).argmax(1) == data.tensors["y_val"]).float().mean().item()
    assert acc > 0.9
    assert set(tapped.taps) == {"acts.0", "acts.1"}

    # a fresh process-like restart from the epoch-2 checkpoint reaches the same weights
    data2, model2, tapped2, opt2 = _setup()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    _run_epochs(data2, model2, tapped2, opt2, 2, EPOCHS)
    for (n, p), (_, q) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(p, q), n
