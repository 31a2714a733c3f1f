"""Training runtime safety (issue 9 items 2, 3, 6, 7, 8, 9, 10): non-finite values stop a run at
the first bad step and never reach disk; frozen tensors are never touched by prox steps or
projections; attach's optimizer hooks drive the prox steps, the clock and the schedules; gates
that never open are warned about and --resume cannot silently change the schedules; a run's
model can be rebuilt with its rewrites; an existing run is never overwritten silently."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import regspec
from regspec.backends.torch.train.finite import NonFiniteError, finite_flag
from regspec.backends.torch.train.models import build_model
from regspec.backends.torch.train.proxstep import ProxGroup, When
from regspec.backends.torch.train.regularizer import Penalty, Regularizer
from regspec.backends.torch.train.runtime import Run, guard, summarize
from regspec.cli import main as cli
from regspec.diagnostics import RegspecError

torch.set_num_threads(1)

SPECS = Path(__file__).resolve().parent.parent / "specs"

# a small, fast run: digits through a 2-layer GELU MLP, 6 steps per epoch
MLP = """
train tiny {{
  model mlp(in = 64, hidden = [16], out = 10, act = "gelu")
  data  digits(split = 0.8)
  loss  cross_entropy
  optimizer {opt}
  batch 256
  epochs {epochs}
  seed 0
{body}
}}
"""


def _spec(tmp_path: Path, *, opt: str = "adamw(lr = 1e-2, weight_decay = 0)", epochs: int = 2, body: str = "",
          name: str = "s.reg") -> Path:
    path = tmp_path / name
    path.write_text(MLP.format(opt=opt, epochs=epochs, body=body))
    return path


def _linear(seed: int = 0, n_in: int = 6, n_out: int = 4) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out)


def _batches(n: int, seed: int = 1, n_in: int = 6, n_out: int = 4):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, n_in, generator=g), torch.randn(8, n_out, generator=g)) for _ in range(n)]


# ------------------------------------------------------------------ item 2: non-finite values
def test_huge_lr_on_a_bundled_spec_stops_with_exit_1(tmp_path, capsys):
    text = (SPECS / "train_lasso.reg").read_text().replace("sgd(lr = 100)", "sgd(lr = 1e9)")
    spec = tmp_path / "lasso_lr.reg"
    spec.write_text(text)
    out = tmp_path / "run"
    code = cli(["train", str(spec), "--train", "lasso_prox", "--out", str(out), "--epochs", "50", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "non-finite loss at step" in err and "the task loss" in err
    assert "learning rate is 1e+09" in err
    assert "internal error" not in err and "Traceback" not in err
    # the step and its epoch (full batch: one step per epoch); the checkpoint named is the last
    # epoch before the bad step, and it holds finite weights; no model.pt was written
    step = int(err.split("non-finite loss at step ")[1].split()[0])
    assert f"(epoch {step})" in err
    assert f"last good checkpoint: {out / 'checkpoint.pt'} (after epoch {step - 1})" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == step - 2
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    assert not (out / "model.pt").exists() and not (out / "summary.json").exists()


def test_first_bad_step_names_the_last_good_checkpoint(tmp_path):
    """Epoch 1 is fine and checkpointed; the learning rate then overflows the weights: the error
    names the step and the checkpoint, and the checkpoint on disk still holds epoch 1."""
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    reg = Regularizer(model, opt, loss="mse", steps_per_epoch=4)
    run = Run(tmp_path / "run", epochs=3, resume=False, quiet=True)
    run.fresh(reg)
    data = _batches(4)
    for epoch in range(2):
        if epoch == 1:
            for g in opt.param_groups:
                g["lr"] = 1e37
        try:
            for x, y in data:
                loss = reg.loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()            # the hook checks the loss and the touched tensors
        except NonFiniteError as caught:
            message, step = str(caught), caught.step
            assert epoch == 1 and step is not None and 5 <= step <= 8
            break
        run.end_epoch(epoch, 3, {"loss": float(loss)}, reg, model, opt)
    else:
        pytest.fail("the overflow was not detected")
    assert f"at step {step} (epoch 2)" in message
    assert f"last good checkpoint: {run.checkpoint_path} (after epoch 1)" in message
    state = torch.load(run.checkpoint_path, weights_only=True)
    assert state["epoch"] == 0
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_the_term_that_produced_the_value_is_named():
    # a loss-side penalty that overflows in float32 (1e30 * |w| sums past 3.4e38)
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reg = Regularizer(model, opt, loss="mse",
                      penalties=[Penalty("l1", params=["weight"], weight=1e38, label="line 7: l1(param(\"weight\"))")])
    x, y = _batches(1)[0]
    loss = reg.loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    with pytest.raises(NonFiniteError, match=r"step 1 .*line 7: l1\(param\(\"weight\"\)\) = inf") as info:
        opt.step()
    assert info.value.term == 'line 7: l1(param("weight"))'
    # a projection that writes NaN (a NaN bound): named as the projection, with its tensor
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reg = Regularizer(model, opt, loss="mse",
                      prox_groups=[ProxGroup("linf_ball", ["weight"], hyper={"radius": float("nan")},
                                             label="line 9: constrain")])
    loss = reg.loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    with pytest.raises(NonFiniteError, match="projection `linf_ball` of `line 9: constrain` wrote them") as info:
        opt.step()
    assert "`weight` (24 of 24 entries)" in str(info.value) and info.value.step == 1
    assert info.value.term == "projection `line 9: constrain`"
    # NaN targets: the data, not the model
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reg = Regularizer(model, opt, loss="mse")
    bad_y = y.clone()
    bad_y[0, 0] = float("nan")
    loss = reg.loss(model(x), bad_y)
    loss.backward()
    with pytest.raises(NonFiniteError, match="targets hold NaN") as info:
        opt.step()
    assert info.value.term == "the data"
    # NaN inputs: the data again, named as the inputs
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reg = Regularizer(model, opt, loss="mse")
    bad_x = x.clone()
    bad_x[3, 1] = float("inf")
    reg.loss(reg.module(bad_x), y).backward()
    with pytest.raises(NonFiniteError, match="the batch's inputs hold NaN/inf") as info:
        opt.step()
    assert info.value.term == "the data" and "targets" not in str(info.value)


def test_json_outputs_hold_numbers_or_null():
    from regspec.backends.torch.train.runtime import _clean

    assert _clean({"a": float("nan"), "b": [float("inf"), 1.5], "c": "text"}) == {"a": None, "b": [None, 1.5],
                                                                                 "c": "text"}


def test_a_kernel_failing_on_nan_weights_is_reported_as_non_finite():
    """Non-finite gradients (finite loss) reach an SVD-based projection: the SVD fails; the error
    says where the NaN came from instead of an internal error."""
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reg = Regularizer(model, opt, prox_groups=[ProxGroup("spectral_ball", ["weight"], hyper={"radius": 1.0},
                                                         matrix=True, label="line 3: spectral")])
    model.weight.grad = torch.full_like(model.weight, float("nan"))
    model.bias.grad = torch.zeros_like(model.bias)
    with pytest.raises(NonFiniteError, match="gradient of `weight`") as info:
        opt.step()
    assert info.value.term == "the gradient (optimizer step)"


def test_an_overflowing_update_is_not_blamed_on_the_prox_after_it():
    """Finite gradients, lr * gradient beyond float32: the optimizer step made the inf, and the l1
    prox that ran after it is not named as the cause."""
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e10)
    reg = Regularizer(model, opt, prox_groups=[ProxGroup("l1", ["weight"], weight=1e-3, label="line 4: l1")])
    model.weight.grad = torch.full_like(model.weight, 1e30)
    model.bias.grad = torch.zeros_like(model.bias)
    with pytest.raises(NonFiniteError, match="the optimizer step overflowed them") as info:
        opt.step()
    assert info.value.term == "the optimizer update" and "line 4" not in str(info.value).split("\n")[0]


def test_checkpoints_and_models_with_nan_weights_are_never_written(tmp_path):
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    reg = Regularizer(model, opt, loss="mse", steps_per_epoch=1)
    run = Run(tmp_path / "run", epochs=2, resume=False, quiet=True)
    run.fresh(reg)
    run.end_epoch(0, 2, {"loss": 1.0}, reg, model, opt)
    before = run.checkpoint_path.read_bytes()
    with torch.no_grad():
        model.weight[1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"the weights after epoch 2 .*`weight` \(1 of 24 entries\)"):
        run.end_epoch(1, 2, {"loss": 1.0}, reg, model, opt, final=True)
    with pytest.raises(NonFiniteError, match="the final weights"):
        run.finish(reg, {})
    assert run.checkpoint_path.read_bytes() == before
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_large_finite_values_are_not_reported():
    """The fast flag is a fused 2-norm: it sees every NaN/inf, and a norm overflowing float32 is
    confirmed entry by entry before anything is reported."""
    from regspec.backends.torch.train.finite import check_tensors_finite

    big = torch.full((1000,), 3e38)             # finite entries, ||big||^2 overflows float32
    assert not bool(finite_flag([big]))          # the fast flag alone would be a false alarm
    check_tensors_finite({"w": big}, "the weights")            # confirmed finite: no error
    assert bool(finite_flag([torch.ones(3), torch.zeros(2)]))
    assert not bool(finite_flag([torch.ones(3), torch.tensor([1.0, float("nan")])]))
    assert not bool(finite_flag([torch.tensor([-float("inf")])]))
    assert finite_flag([]) is None
    # a training step whose projection leaves huge finite weights goes on
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    box = ProxGroup("box", ["weight"], hyper={"lo": 1e38, "hi": 2e38})
    reg = Regularizer(model, opt, loss="mse", prox_groups=[box])
    x, y = _batches(1)[0]
    reg.loss(model(x), y).backward()
    opt.step()
    assert float(model.weight.detach().min()) >= 0.99e38 and reg.clock.step == 1


# ------------------------------------------------------------------ item 3: frozen tensors
class Adapted(nn.Module):
    """A frozen base layer plus a trainable low-rank adapter (the LoRA layout)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.base = nn.Linear(6, 4)
        self.down = nn.Linear(6, 2, bias=False)
        self.up = nn.Linear(2, 4, bias=False)
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.up(self.down(x))


FROZEN_SPEC = """
train adapters {
  loss mse
  regularize weight_decay(param("**.weight")) * 0.5
  regularize l1(param("**.weight")) * 1e-2 via prox
  constrain param("base.weight") in linf_ball(0.05)
}
"""


def test_prox_and_projection_never_touch_frozen_tensors():
    model = Adapted()
    base = model.base.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    reg = regspec.attach(FROZEN_SPEC, model, opt)
    assert sorted(n for _, n in reg.engine.frozen) == ["base.weight", "base.weight", "base.weight"]
    down = model.down.weight.detach().clone()
    for x, y in _batches(5):
        loss = reg.loss(reg.module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    reg.finalize()
    assert torch.equal(model.base.weight, base)                  # not shrunk, not projected
    assert not torch.equal(model.down.weight, down)              # the adapter trained and shrank
    summary = summarize(reg, {}, {})
    constraint = next(t for t in summary["terms"] if t["lowering"] == "projection")
    assert constraint["frozen"] == ["base.weight"] and constraint["distance"] == {}
    # a tensor frozen after the engine was built is skipped from then on
    model.down.weight.requires_grad_(False)
    down = model.down.weight.detach().clone()
    opt.zero_grad()
    reg.loss(reg.module(x), y).backward()
    opt.step()
    assert torch.equal(model.down.weight, down)


FROZEN_MODULE = """
from torch import nn

class Adapted(nn.Module):
    def __init__(self, width=10, out=1):
        super().__init__()
        self.base = nn.Linear(width, out)
        self.down = nn.Linear(width, 2, bias=False)
        self.up = nn.Linear(2, out, bias=False)
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))
"""


def test_plan_and_summary_name_frozen_matched_tensors(tmp_path, monkeypatch):
    (tmp_path / "rs_h3_frozen.py").write_text(FROZEN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "f.reg"
    spec.write_text("""train adapters {
  model "rs_h3_frozen:Adapted"(width = 10, out = 1)
  data  dataset("diabetes", center = true)
  loss  mse
  optimizer sgd(lr = 1e-3)
  batch full
  epochs 2
  regularize l1(param("**.weight")) * 1e-2 via prox
  constrain param("base.weight") in linf_ball(0.05)
}
""")
    text = regspec.train_api.plan_text(str(spec))
    assert text.count("frozen    base.weight (requires_grad=False): skipped") == 2
    assert "no fused call: every matched tensor is frozen" in text
    assert "prox l1(), euclidean: down.weight, up.weight" in text
    summary = regspec.train(str(spec), out=tmp_path / "run", quiet=True)
    l1, box = summary["terms"]
    assert l1["frozen"] == ["base.weight"] and box["frozen"] == ["base.weight"]
    assert box["distance"] == {} and box["satisfied"] is None      # nothing was constrained
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    torch.manual_seed(0)                                             # the trainer's initial weights
    import rs_h3_frozen

    assert torch.equal(trained["base.weight"], rs_h3_frozen.Adapted().base.weight.detach())


# ------------------------------------------------------------------ item 6: attach hooks
SCHEDULED = """
train sched {
  loss mse
  constrain param("weight") in spectral_ball(cosine(2.0 -> 1.0))
}
"""


def test_readme_attach_loop_advances_schedules_and_clock():
    """The README's loop (no after_step, no start_epoch): the clock and the cosine radius move."""
    model = _linear(n_in=6, n_out=6)
    with torch.no_grad():
        model.weight.mul_(20.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 6), torch.randn(40, 6)),
                                         batch_size=10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    reg = regspec.attach(SCHEDULED, model, opt, loader=loader, epochs=2)
    assert reg.clock.steps_per_epoch == 4 and reg.hooked
    radii = []
    for _epoch in range(2):
        for x, y in loader:
            loss = reg.loss(reg.module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            radii.append(float(torch.linalg.matrix_norm(model.weight.detach(), 2)))
    reg.finalize()
    assert reg.clock.step == 8 and reg.clock.epoch == 2
    # step s projects at t = (s-1)/4 onto radius 1.5 + 0.5 cos(pi t / 2)
    for s, r in enumerate(radii, 1):
        t = (s - 1) / 4
        assert math.isclose(r, 1.5 + 0.5 * math.cos(math.pi * t / 2), rel_tol=1e-5)
    assert float(torch.linalg.matrix_norm(model.weight.detach(), 2)) <= 1.0 * (1 + 1e-5)


def test_after_step_is_idempotent_with_the_hooks():
    spec = 'train p { loss mse\n regularize l1(param("weight")) * 0.5 via prox }'
    results = []
    for call_after_step in (False, True):
        model = _linear()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        reg = regspec.attach(spec, model, opt)
        for x, y in _batches(3):
            loss = reg.loss(reg.module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if call_after_step:
                reg.after_step()
                reg.after_step()
        assert reg.clock.step == 3
        results.append(model.weight.detach().clone())
    assert torch.equal(results[0], results[1])
    # without an optimizer there are no hooks: after_step does the work
    model = _linear()
    reg = regspec.attach(spec, model)
    w = model.weight.detach().clone()
    reg.after_step()
    assert not reg.hooked and reg.clock.step == 1
    assert torch.equal(model.weight.detach(), torch.sign(w) * (w.abs() - 0.5).clamp_min(0))


def test_a_schedule_without_steps_per_epoch_is_a_clear_error():
    model = _linear(n_in=6, n_out=6)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    located = r"<string>:4:3: error: attach: .* is scheduled over the training epochs"
    with pytest.raises(RegspecError, match=located) as info:
        regspec.attach(SCHEDULED, model, opt)
    assert "loader=" in str(info.value)
    with pytest.raises(RegspecError, match="has no len"):
        regspec.attach(SCHEDULED, model, opt, loader=iter([]))
    gated = 'train g { loss mse\n constrain param("weight") in linf_ball(1.0) from epoch 1 }'
    with pytest.raises(RegspecError, match="gated by epochs"):
        regspec.attach(gated, model, opt)
    reg = regspec.attach(gated, model, opt, steps_per_epoch=3)
    assert reg.clock.steps_per_epoch == 3


def test_readme_attach_snippet_is_the_hooked_loop():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme[readme.index("regspec.attach("):]
    block = block[:block.index("```")]
    assert "loader=" in block and "optimizer.step()" in block and "after_step" not in block


# ------------------------------------------------------------------ item 7: gates and --resume
def test_gate_that_never_opens_is_a_warning_kept_in_the_summary(tmp_path, capsys):
    spec = _spec(tmp_path, epochs=1, body='  constrain param("layers.0.weight") in linf_ball(0.01) from epoch 5')
    summary = regspec.train(str(spec), out=tmp_path / "run", quiet=True)
    err = capsys.readouterr().err
    assert "warning:" in err and "never opens in this run (1 epochs, 6 steps)" in err
    assert any("from_epoch=5" in w and "never applied" in w for w in summary["warnings"])
    term = next(t for t in summary["terms"] if t["lowering"] == "projection")
    assert term["satisfied"] is False          # reported as it is, not projected behind the user's back


def test_resume_with_other_epochs_is_refused_unless_asked(tmp_path, capsys):
    spec = _spec(tmp_path, epochs=3, body='  regularize l1(param("head.weight")) * 1e-3 via prox')
    out = tmp_path / "run"
    assert regspec.train(str(spec), out=out, quiet=True, argv=["--stop-after", "1"]) == {}
    with pytest.raises(RegspecError, match="belongs to a run of 3 epochs, and --epochs is 5") as info:
        regspec.train(str(spec), out=out, epochs=5, resume=True, quiet=True)
    assert "--change-epochs" in str(info.value)
    summary = regspec.train(str(spec), out=out, epochs=4, resume=True, change_epochs=True, quiet=True)
    assert summary["epochs"] == 4
    # past the end: 4 trained epochs cannot become 2
    with pytest.raises(RegspecError, match="past the end of this run: it holds 4 trained epochs"):
        regspec.train(str(spec), out=out, epochs=2, resume=True, change_epochs=True, quiet=True)
    # a finished run resumed as it is: an explicit "nothing to train", exit 0, files kept
    capsys.readouterr()
    assert cli(["train", str(spec), "--out", str(out), "--epochs", "4", "--resume", "--quiet"]) == 0
    assert "nothing to train" in capsys.readouterr().err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


# ------------------------------------------------------------------ item 8: rebuild the trained network
def test_load_trained_rebuilds_rewrites(tmp_path):
    spec = _spec(tmp_path, epochs=1, body="  rewrite GELU -> ReLU")
    out = tmp_path / "run"
    regspec.train(str(spec), out=out, quiet=True)
    meta = json.loads((out / "model.json").read_text())
    assert [(r["src"], r["dst"].lower(), r["kwargs"]) for r in meta["rewrites"]] == [("GELU", "relu", {})]
    net = regspec.load_trained(out)
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    assert not any(isinstance(m, nn.GELU) for m in net.modules())
    # the reference: the network the run trained is the declared MLP with ReLU, holding model.pt
    state = torch.load(out / "model.pt", weights_only=True)
    trained = build_model("mlp", **{"in": 64, "hidden": [16], "out": 10, "act": "relu"})
    trained.load_state_dict(state)
    declared = build_model("mlp", **{"in": 64, "hidden": [16], "out": 10, "act": "gelu"})
    declared.load_state_dict(state)
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(3)) * 4
    with torch.no_grad():
        assert torch.equal(net(x), trained.eval()(x))
        assert not torch.allclose(declared.eval()(x), trained(x))   # why the rewrite must be recorded
    (out / "model.json").unlink()
    with pytest.raises(RegspecError, match="no model.json"):
        regspec.load_trained(out)


# ------------------------------------------------------------------ item 9: runs are never overwritten
def test_default_out_is_the_train_name_and_runs_are_not_overwritten(tmp_path, monkeypatch, capsys):
    spec = _spec(tmp_path, epochs=1)
    monkeypatch.chdir(tmp_path)
    assert cli(["train", str(spec), "--quiet"]) == 0
    run = tmp_path / "runs" / "tiny"
    metrics = (run / "metrics.jsonl").read_bytes()
    ckpt = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert cli(["train", str(spec), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "Traceback" not in err
    assert (run / "metrics.jsonl").read_bytes() == metrics and (run / "checkpoint.pt").read_bytes() == ckpt
    assert cli(["train", str(spec), "--quiet", "--overwrite"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_generated_trainer_refuses_an_existing_run(tmp_path, monkeypatch, capsys):
    spec = _spec(tmp_path, epochs=1)
    regspec.compile_trainer(str(spec), out=tmp_path / "t.py")
    from regspec.train_api import load_trainer

    mod = load_trainer(tmp_path / "t.py")
    monkeypatch.chdir(tmp_path)
    assert guard(lambda: mod.main(["--quiet"])) == 0
    assert (tmp_path / "runs" / "tiny" / "summary.json").exists()
    summary = (tmp_path / "runs" / "tiny" / "summary.json").read_bytes()
    capsys.readouterr()
    assert guard(lambda: mod.main(["--quiet"])) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "runs" / "tiny" / "summary.json").read_bytes() == summary
    with pytest.raises(SystemExit):
        mod.main(["--resume", "--overwrite"])   # argparse: the two exclude each other


# ------------------------------------------------------------------ item 10: bad checkpoints
def test_checkpoint_with_nan_weights_is_a_located_error(tmp_path, capsys):
    spec = _spec(tmp_path, epochs=2)
    out = tmp_path / "run"
    assert cli(["train", str(spec), "--out", str(out), "--quiet", "--stop-after", "1"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["model"]["layers.0.weight"][0, 0] = float("nan")
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert cli(["train", str(spec), "--out", str(out), "--quiet", "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"cannot resume: {out / 'checkpoint.pt'} (model state) holds non-finite values" in err
    assert "`layers.0.weight` (1 of 1024 entries)" in err and "Traceback" not in err


def test_optimizer_state_nan_blocks_the_checkpoint_but_an_infinite_moment_does_not(tmp_path):
    """Adam's second moment overflowing to inf only zeroes that coordinate's update (the run goes
    on, the checkpoint is written); a NaN would poison the next update: refused, by name."""
    model = _linear()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    reg = Regularizer(model, opt, loss="mse", steps_per_epoch=1)
    run = Run(tmp_path / "run", epochs=2, resume=False, quiet=True)
    run.fresh(reg)
    x, y = _batches(1)[0]
    reg.loss(model(x), y).backward()
    opt.step()
    opt.state[model.weight]["exp_avg_sq"][0, 0] = float("inf")
    run.end_epoch(0, 2, {"loss": 1.0}, reg, model, opt)
    assert run.checkpoint_path.exists()
    opt.state[model.bias]["exp_avg"][1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"optimizer state after epoch 2 holds NaN: `bias: exp_avg`"):
        run.end_epoch(1, 2, {"loss": 1.0}, reg, model, opt)
    assert torch.load(run.checkpoint_path, weights_only=True)["epoch"] == 0
