"""`regspec.attach` on models shaped like torchvision's (without torchvision, whose wheel does not
import beside the CPU torch): convolutions in channels_last memory, depthwise convolutions
(groups = channels), BatchNorm, squeeze-excite, nn.MultiheadAttention, parameters on the root
module, modules called twice.

References are independent of regspec: the SVD written out (projection onto the spectral ball,
singular value thresholding), block soft thresholding per filter, and hand-computed penalties.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import regspec

torch.set_num_threads(1)


def _svd_map(w: torch.Tensor, f) -> torch.Tensor:
    """U diag(f(s)) V^T of W = w.reshape(C_out, -1), in float64, back in w's shape."""
    u, s, vh = torch.linalg.svd(w.double().reshape(w.shape[0], -1), full_matrices=False)
    return ((u * f(s)) @ vh).reshape(w.shape)


# ------------------------------------------------------------------ channels_last weights
def _conv_net(fmt: torch.memory_format) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 6, 1))
    return net.to(memory_format=fmt)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_spectral_steps_on_channels_last_conv_weights(fmt: torch.memory_format):
    """Spectral kernels act on W = x.reshape(C_out, -1); a channels_last conv weight has no such
    view, so the projection used to write into a copy and leave the weight as it was (sigma_max
    stayed 0.73 under a radius of 0.1). One SGD step, then W1 = U min(s, r) V^T (conv 0),
    U max(s - lr w, 0) V^T (the depthwise conv 1) and block soft thresholding of conv 2's filters."""
    net = _conv_net(fmt)
    lr, w, r = 0.1, 0.5, 0.1
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    reg = regspec.attach(f"""train t {{
  loss mse
  constrain param("0.weight") in spectral_ball({r})
  regularize nuclear_norm(param("1.weight")) * {w} via prox
  regularize group_l2(param("2.weight"), groups = channels) * {w} via prox
}}""", net, opt)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(memory_format=fmt)
    out = reg.module(x)
    loss = reg.loss(out, torch.zeros_like(out))
    opt.zero_grad()
    loss.backward()
    z = [p.detach().double() - lr * p.grad.double() for p in (net[0].weight, net[1].weight, net[2].weight)]
    opt.step()
    assert net[0].weight.is_contiguous(memory_format=fmt)
    expected0 = _svd_map(z[0], lambda s: s.clamp(max=r))
    expected1 = _svd_map(z[1], lambda s: (s - lr * w).clamp_min(0))
    rows = z[2].reshape(6, -1)
    norms = rows.norm(dim=1, keepdim=True)
    expected2 = (rows * (1 - lr * w * rows.shape[1] ** 0.5 / norms).clamp_min(0)).reshape(z[2].shape)
    for got, expected in zip((net[0].weight, net[1].weight, net[2].weight), (expected0, expected1, expected2)):
        assert torch.allclose(got.double(), expected, rtol=0, atol=1e-6)
    assert float(torch.linalg.matrix_norm(net[0].weight.detach().reshape(8, -1), 2)) <= r + 1e-6


# ------------------------------------------------------------------ the trainer's long statements
SAM_SPEC = """train sam_many_terms {
  model mlp(in = 64, hidden = [16, 16], out = 10, act = "relu")
  data digits(split = 0.8)
  loss cross_entropy
  optimizer sam(base = sgd(lr = 0.1, momentum = 0.9), rho = 0.05)
  epochs 1
  batch 256
  seed 0

  regularize l1(act("acts.0")) * 1e-4
  regularize l1(act("acts.1")) * linear(0 -> 1e-4)
  regularize orthogonality(param("layers.0.weight")) * 1e-3
  regularize sum_squares(param("head.weight")) * 1e-3
  constrain l1(act("acts.1")) <= 40.0 via lagrangian(lr = 1e-3)
}
"""


def test_trainer_breaks_a_long_sam_loss_inside_parentheses(tmp_path):
    """The SAM closure's `loss2 = task_loss(out, y) + ...` with five weighted terms is longer than
    a line: it was broken between words outside brackets (a SyntaxError in trainer.py). The file
    parses, keeps lines under 100 characters, and trains like the runtime (regspec.attach)."""
    import ast

    from regspec.train_api import compile_trainer, load_trainer
    from test_codegen_readable import _reference

    spec = tmp_path / "sam.reg"
    spec.write_text(SAM_SPEC)
    src = compile_trainer(str(spec), out=tmp_path / "trainer.py")
    ast.parse(src)
    assert [ln for ln in src.splitlines() if len(ln) >= 100 and not ln.startswith("# regspec compile:")] == []
    assert "loss2 = (task_loss(out, y) +" in src
    out = tmp_path / "run"
    assert load_trainer(tmp_path / "trainer.py").main(["--out", str(out), "--quiet", "--dtype", "float64"]) == 0
    trained = torch.load(out / "model.pt", weights_only=True)
    weights, _ = _reference(spec, 1)
    for k, v in weights.items():
        assert torch.allclose(trained[k], v, rtol=0, atol=1e-9 * float(v.abs().max())), k


# ------------------------------------------------------------------ frozen tensors, root parameters
ROOT_PARAM_MODULE = """
import torch
from torch import nn


class RootScaled(nn.Module):
    '''A frozen parameter on the root module (no submodule holds it) and a trained layer.'''

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((10,), 3.0), requires_grad=False)
        self.fc = nn.Linear(10, 1)

    def forward(self, x):
        return self.fc(x * self.scale)
"""


def test_a_constraint_on_frozen_tensors_only_claims_no_distance(tmp_path, monkeypatch):
    """`constrain param("scale") in l2_ball(1.0)` on a frozen root parameter: it is never projected
    (||scale|| = 3 sqrt(10) stays), so neither the runtime's values() nor the trainer's
    metrics and summary report a distance of 0 for it (they did: an empty sum); the trained
    layer's constraint has its true distance."""
    (tmp_path / "tv_root_param.py").write_text(ROOT_PARAM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tv_root_param

    torch.manual_seed(0)
    model = tv_root_param.RootScaled()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    body = """
  constrain param("scale") in l2_ball(1.0) as scale_ball
  constrain param("fc.weight") in l2_ball(0.01) every 100 steps as fc_ball
"""
    reg = regspec.attach(f"train t {{ loss mse\n{body} }}", model, opt)
    x, y = torch.randn(8, 10), torch.randn(8, 1)
    loss = reg.loss(reg.module(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    values = reg.values()
    assert "scale_ball" not in values
    w = model.fc.weight.detach().double()
    assert values["fc_ball"] == pytest.approx(float(w.norm() - 0.01), rel=1e-6)   # ||x - P(x)|| outside the ball
    assert torch.equal(model.scale, torch.full((10,), 3.0))

    spec = tmp_path / "root.reg"
    spec.write_text(f"""train root {{
  model "tv_root_param:RootScaled"()
  data dataset("diabetes", center = true)
  loss mse
  optimizer sgd(lr = 1e-3)
  batch full
  epochs 2
{body}}}
""")
    summary = regspec.train(str(spec), out=tmp_path / "run", quiet=True)
    scale, fc = summary["terms"]
    assert scale["frozen"] == ["scale"] and scale["final"] is None and scale["satisfied"] is None
    import json

    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("reg/scale_ball" not in ln and ln["reg/fc_ball"] > 0 for ln in lines)
    # the fc constraint's gate never opens in 2 steps, but it is applied once after the last step
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert float(trained["fc.weight"].norm()) == pytest.approx(0.01, rel=1e-5)
    assert fc["final"] == pytest.approx(0.0, abs=1e-7) and fc["satisfied"] is True
    assert any("fc_ball" in w and "applied only once, after the last step" in w for w in summary["warnings"])


def test_gate_warnings_say_what_happens_at_the_end(tmp_path, capsys):
    """A gate that never opens: a projection whose window is still open is applied once after
    the last step (ProxEngine.finalize), so the warning says so (it said "not applied at the
    end either"); a prox term, or a projection whose window has closed, is never applied."""
    spec = tmp_path / "gates.reg"
    spec.write_text("""train gates {
  model linear(in = 10, out = 1)
  data dataset("diabetes", center = true)
  loss mse
  optimizer sgd(lr = 1e-3)
  batch full
  epochs 2
  constrain param("head.weight") in l2_ball(0.01) every 100 steps as late_ball
  regularize l1(param("head.weight")) * 1.0 every 100 steps as late_l1
  constrain param("head.bias") in box(lo = -1, hi = 1) until step 1 as shut_box
}
""")
    summary = regspec.train(str(spec), out=tmp_path / "run", quiet=True)
    err = capsys.readouterr().err
    assert ":8:3: warning: this constrain never applies during training" in err
    assert "it is applied only once, after the last step" in err.split(":9:3:")[0]
    assert ":9:3: warning: this regularize never applies during training" in err
    assert "not applied at the end either" in err.split(":9:3:")[1]
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert float(trained["head.weight"].norm()) == pytest.approx(0.01, rel=1e-5)
    assert not bool((trained["head.weight"] == 0).any())          # the l1 prox never ran
    warnings = " | ".join(summary["warnings"])
    assert "late_ball" in warnings and "late_l1: the gate" in warnings


# ------------------------------------------------------------------ selectors by module type
def test_type_selector_leaves_parametrized_weights_out_and_says_why():
    """param(type = Linear) selects the `weight` parameters of Linear modules; a GAN-style layer
    under torch's spectral_norm has a computed weight and is left out (its `original` is selected
    by name). When every module of the type is like that, or holds no `weight` at all
    (nn.MultiheadAttention's in_proj_weight), the error says which tensors it holds."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4)), nn.Linear(4, 2))
    lr, lam = 0.1, 0.05
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    reg = regspec.attach(f"train t {{ loss mse\n regularize l1(param(type = Linear)) * {lam} via prox }}", net, opt)
    assert reg.engine.buckets[0].names == ["0.weight", "2.weight"]
    original = net[1].parametrizations.weight.original
    before = original.detach().clone()
    x, y = torch.randn(5, 6), torch.randn(5, 2)
    reg.loss(reg.module(x), y).backward()
    z = before - lr * original.grad
    opt.step()
    assert torch.allclose(original.detach(), z, rtol=0, atol=1e-7)      # a plain SGD step, no prox
    assert bool((net[0].weight == 0).any())

    with pytest.raises(regspec.RegspecError, match="no module of type `Linear` has a `weight` parameter") as info:
        regspec.attach('train t { reparametrize param(type = Linear) as low_rank(rank = 1)\n'
                       ' regularize l1(param(type = Linear)) * 1e-3 }', nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))
    assert "`0`: its weight is parametrized (LowRank" in str(info.value)
    assert "0.parametrizations.weight.original, 0.parametrizations.weight.0.A" in str(info.value)
    attention = nn.Sequential(nn.MultiheadAttention(4, 2), nn.MultiheadAttention(4, 2))
    with pytest.raises(regspec.RegspecError, match='holds in_proj_weight, in_proj_bias; select by name, e.g. '
                                                   r'param\("\*\*.in_proj_weight"\) \(and 1 more'):
        regspec.attach("train t { regularize l1(param(type = MultiheadAttention)) * 1e-3 }", attention)


def test_terms_on_parameters_the_optimizer_does_not_step_are_errors():
    """An optimizer over the heads only (a common fine-tuning setup): a transform on the backbone
    used to rewrite gradients the optimizer never applies (silently nothing); it is an error
    naming the statement and tensor, as the prox step on such a tensor is (which now says why)."""
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(net[2].parameters(), lr=0.1)
    with pytest.raises(regspec.RegspecError, match=r"transform `line 1: transform orthogonalize\(param\(\"0.weight\"\)\)`: "
                                                   "0.weight is not in the optimizer's parameter groups"):
        regspec.attach('train t { transform orthogonalize(param("0.weight")) }', net, opt)
    with pytest.raises(regspec.RegspecError, match="`l1_all` on `0.weight`: the parameter is not in the optimizer's "
                                                   r"parameter groups, so no step size \(learning rate\)"):
        regspec.attach('train t { regularize l1(param("0.weight")) * 1e-3 via prox }', net, opt)
    regspec.attach('train t { transform orthogonalize(param("2.weight")) }', net, opt)   # a stepped tensor


# ------------------------------------------------------------------ one layer at several places
class SharedLayers(nn.Module):
    """ALBERT's cross-layer sharing: one Linear + Tanh registered at blocks.0, blocks.1, blocks.2."""

    def __init__(self):
        super().__init__()
        layer = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.inp = nn.Linear(6, 8)
        self.blocks = nn.ModuleList([layer, layer, layer])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


@pytest.mark.parametrize("selector", ['param("blocks.0.0.weight")', 'param("blocks.2.0.weight")'])
def test_low_rank_on_a_layer_shared_across_positions(selector: str):
    """LoRA on the weight of a layer registered three times (by its first name or another): the
    tie logic parametrized that one module once per name, and the second registration recursed
    forever. Each pass through the layer reads W0 + (alpha / r) B A; the merged state_dict gives
    the plain model the same outputs."""
    from regspec.backends.torch.train.reparam import merged_state_dict

    torch.manual_seed(0)
    model = SharedLayers()
    w0 = model.blocks[0][0].weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = regspec.attach(f"train t {{ loss cross_entropy\n reparametrize {selector} as low_rank(rank = 2, alpha = 4) }}",
                         model, opt)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    for _ in range(2):
        loss = reg.loss(reg.module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lora = model.blocks[0][0].parametrizations.weight[0]
    assert float(lora.B.detach().abs().max()) > 0
    weight = w0 + 2.0 * lora.B.detach() @ lora.A.detach()
    with torch.no_grad():
        h = model.inp(x)
        for _ in range(3):
            h = torch.tanh(h @ weight.T + model.blocks[0][0].bias)
        assert torch.allclose(model(x), model.head(h), rtol=0, atol=1e-6)
        plain = SharedLayers()
        plain.load_state_dict(merged_state_dict(model))
        assert torch.allclose(plain(x), model(x), rtol=0, atol=1e-6)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "blocks" in n]
    assert trainable == ["blocks.0.0.bias", "blocks.0.0.parametrizations.weight.0.A",
                         "blocks.0.0.parametrizations.weight.0.B"]


class Twice(nn.Module):
    """One module applied twice in a forward; ``untraceable`` branches on a value (hooks path)."""

    def __init__(self, untraceable: bool):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.untraceable = untraceable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.untraceable and bool(x.sum() > 1e9):
            x = x * 2
        return self.head(self.shared(self.shared(x)))


@pytest.mark.parametrize("untraceable", [False, True])
def test_a_module_called_twice_contributes_both_outputs(untraceable: bool):
    """act("shared") on a module applied twice: the term is (1/B) (||a1||_1 + ||a2||_1) over its two
    outputs, the same on the fx and the hooks paths (as the docs now say)."""
    torch.manual_seed(0)
    model, x = Twice(untraceable), torch.randn(3, 4)
    reg = regspec.attach('train t { regularize l1(act("shared")) * 1.0 }', model)
    assert reg.module.tap_path == ("hooks" if untraceable else "fx")
    value = float(reg.penalty(reg.module(x)).detach())
    with torch.no_grad():
        a1 = model.shared(x)
        a2 = model.shared(a1)
    assert value == pytest.approx(float(a1.abs().sum() + a2.abs().sum()) / 3, rel=1e-6)


def test_orthogonal_reparametrization_of_bfloat16_weights_is_a_clear_error():
    """torch's orthogonal parametrization runs a QR in the weight's dtype, which has no bfloat16
    kernel (a raw NotImplementedError from orgqr); the error names the tensor and the way out."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).to(torch.bfloat16)
    with pytest.raises(regspec.RegspecError, match=r"`orthogonal` needs float32 or float64 weights.*0.weight \(bfloat16\)"):
        regspec.attach('train t { reparametrize param("0.weight") as orthogonal }', net)


class AudioFrontEnd(nn.Module):
    """Like transformers' Wav2Vec2 feature encoder: a view of the waveform gets requires_grad set
    in training mode (for gradient checkpointing), which torch refuses on a non-leaf."""

    def __init__(self, set_requires_grad: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, stride=2)
        self.head = nn.Linear(4, 3)
        self.set_requires_grad = set_requires_grad

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        h = input_values[:, None]
        if self.set_requires_grad and self.training:
            h.requires_grad = True
        return self.head(self.conv(h).mean(-1))


def test_jacobian_penalty_on_a_forward_that_refuses_a_grad_input_is_located():
    """jacobian_fro needs the input to require grad; a forward that then fails (Wav2Vec2's front
    end) raised torch's bare RuntimeError; it is a RegspecError that names the term and the way
    out. Without the quirk, the value is (1/B) sum_i ||J_i||_F^2 estimated by one VJP."""
    x = torch.randn(2, 20)
    reg = regspec.attach("train t { regularize jacobian_fro(output) * 1.0 }", AudioFrontEnd())
    with pytest.raises(regspec.RegspecError, match="jacobian_fro: the model's forward failed on an input that "
                                                   "requires grad .*leaf variables"):
        reg.penalty(reg.module(x))
    torch.manual_seed(0)
    model = AudioFrontEnd(set_requires_grad=False)
    reg = regspec.attach("train t { regularize jacobian_fro(output, n_proj = 2000) * 1.0 }", model)
    value = float(reg.penalty(reg.module(x)).detach())
    jac = torch.autograd.functional.jacobian(lambda v: model(v), x)          # (2, 3, 2, 20)
    exact = sum(float(jac[i, :, i].pow(2).sum()) for i in range(2)) / 2 / 2   # (1/2) mean_i ||J_i||_F^2
    # 2000 Gaussian draws on 2 samples: relative standard deviation <= sqrt(2 / 4000) = 2.2%
    assert value == pytest.approx(exact, rel=0.12)


def test_selecting_a_reparametrized_tensor_by_its_old_name_says_what_to_select():
    """Reparametrizations apply before the terms bind, so a term naming the tensor a
    `reparametrize` replaced matches nothing; the error now says so and names its tensors."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(regspec.RegspecError, match=r"`0.weight` is reparametrized \(its value is computed, not "
                                                   r"trained\): select the tensors it is computed from, "
                                                   r"`0.parametrizations.weight.\*` or `0.parametrizations.weight.0.\*`"):
        regspec.attach('train t { regularize l1(param("0.weight")) * 1e-3 via prox\n'
                       ' reparametrize param("0.weight") as low_rank(rank = 1) }', net)


# ------------------------------------------------------------------ activation terms in a user's loop
@pytest.mark.parametrize("untraceable", [False, True])
def test_activation_terms_refuse_a_forward_of_the_model_itself(untraceable: bool):
    """act(...) terms read what `reg.module` records. Calling the model itself (a common slip:
    `model(x)`) left the term out (fx: nothing recorded) or summed stale activations of earlier
    forwards (hooks); both are errors now, and the right call gives the hand-computed value."""
    torch.manual_seed(0)
    model, x, y = Twice(untraceable), torch.randn(3, 4), torch.tensor([0, 1, 0])
    reg = regspec.attach('train t { loss cross_entropy\n regularize l1(act("shared")) * 1.0 }', model)
    with pytest.raises(regspec.RegspecError, match=r"(?s)`reg.module` records, but it has not run yet: no activations "
                                                   r"of `shared`.*out = reg.module\(x\)"):
        reg.penalty(torch.zeros(3, 2))
    with pytest.raises(regspec.RegspecError, match="but the last forward called the model itself"):
        reg.loss(model(x), y)
    reg.loss(reg.module(x), y)
    with pytest.raises(regspec.RegspecError, match="but the last forward called the model itself"):
        reg.loss(model(2 * x), y)
    value = reg.loss(reg.module(2 * x), y)
    with torch.no_grad():
        a1 = model.shared(2 * x)
        a2 = model.shared(a1)
        expected = float(torch.nn.functional.cross_entropy(model(2 * x), y)) + float(a1.abs().sum() + a2.abs().sum()) / 3
    assert float(value.detach()) == pytest.approx(expected, rel=1e-6)


def test_activation_term_on_a_module_the_forward_never_calls_is_an_error():
    """A ModuleDict head the forward does not use (an auxiliary head): its act(...) term did
    nothing under regspec.attach (regspec plan's probe already refused it)."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.heads = nn.ModuleDict({"main": nn.Linear(4, 2), "aux": nn.Linear(4, 3)})

        def forward(self, x):
            return self.heads["main"](self.body(x))

    reg = regspec.attach('train t { regularize l1(act("heads.*")) * 1.0 }', TwoHeads())
    with pytest.raises(regspec.RegspecError, match="`heads.aux` did not run as a module in the forward pass"):
        reg.penalty(reg.module(torch.randn(2, 4)))


def test_a_buffer_named_as_a_parameter_is_explained():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(regspec.RegspecError, match="`1.running_mean` is a buffer"):
        regspec.attach('train t { regularize l1(param("1.running_mean")) * 1e-3 }', net)


def test_init_from_a_training_checkpoint_names_the_state_dict_inside(tmp_path):
    """`init` of a {'model': state_dict, 'epoch': ...} checkpoint (torchvision's reference scripts
    save those): the error says which key holds the weights."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(regspec.RegspecError, match=r"does not hold a state_dict(?s:.*)whose `model` holds a state_dict"):
        regspec.attach(f'train t {{ init "{tmp_path / "ckpt.pt"}" }}', net)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    regspec.attach(f'train t {{ init "{tmp_path / "weights.pt"}" }}', nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))


def test_a_tuple_output_is_read_at_its_first_element_that_is_not_none():
    """(None, logits) (an optional loss slot left empty): `output` and the task loss read the
    logits (the None was taken and `.dim()` raised an AttributeError)."""

    class OptionalLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return None, self.lin(x)

    torch.manual_seed(0)
    model, x, y = OptionalLoss(), torch.randn(2, 4), torch.tensor([0, 2])
    reg = regspec.attach("train t { loss cross_entropy\n regularize l1(output) * 0.5 }", model)
    value = reg.loss(reg.module(x), y)
    with torch.no_grad():
        z = model.lin(x)
        expected = float(torch.nn.functional.cross_entropy(z, y)) + 0.5 * float(z.abs().sum()) / 2
    assert float(value.detach()) == pytest.approx(expected, rel=1e-6)


class Checkpointed(nn.Module):
    """A block under torch.utils.checkpoint, as transformers' gradient_checkpointing_enable() does."""

    def __init__(self, reentrant: bool):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.block = nn.Sequential(nn.Linear(6, 6), nn.Tanh())
        self.head = nn.Linear(6, 2)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        if bool(x.isnan().any()):   # data-dependent, as transformers' forwards are: the hooks path
            raise ValueError("NaN input")
        h = checkpoint(self.block, self.inp(x), use_reentrant=self.reentrant)
        return self.head(h)


def test_activation_term_without_gradient_is_an_error():
    """Reentrant checkpointing runs the block under no_grad, so a tap inside it has no gradient
    and the term trained nothing (its value was still reported); that is an error naming the
    way out, and the non-reentrant form gives the term's true gradient."""
    x = torch.randn(3, 4)
    torch.manual_seed(0)
    reg = regspec.attach('train t { regularize l1(act("block.1")) * 1.0 }', Checkpointed(reentrant=True))
    with pytest.raises(regspec.RegspecError, match="carry no gradient.*(?s:.*)use_reentrant"):
        reg.penalty(reg.module(x))
    torch.manual_seed(0)
    model = Checkpointed(reentrant=False)
    reg = regspec.attach('train t { regularize l1(act("block.1")) * 1.0 }', model)
    (grad,) = torch.autograd.grad(reg.penalty(reg.module(x)), model.inp.weight)
    ref = model.block(model.inp(x)).abs().sum() / 3
    (ref_grad,) = torch.autograd.grad(ref, model.inp.weight)
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


class BagOfWords(nn.Module):
    def __init__(self, sparse: bool):
        super().__init__()
        self.emb = nn.Embedding(20, 6, sparse=sparse)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x).mean(1))


@pytest.mark.parametrize("transform", ['clip_grad_norm(param("**"), max_norm = 0.05)',
                                       'orthogonalize(param("emb.weight"), momentum = 0)'])
def test_transforms_on_sparse_embedding_gradients(transform: str):
    """nn.Embedding(sparse=True) gives a sparse gradient: clip_grad_norm's norm and Muon's
    Newton-Schulz raised NotImplementedError on it. One SGD step equals that of the same model
    with a dense embedding gradient."""
    x, y = torch.randint(0, 20, (4, 5), generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 0])
    weights = []
    for sparse in (True, False):
        torch.manual_seed(0)
        model = BagOfWords(sparse)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        reg = regspec.attach(f"train t {{ loss cross_entropy\n transform {transform} }}", model, opt)
        loss = reg.loss(reg.module(x), y)
        opt.zero_grad()
        loss.backward()
        assert model.emb.weight.grad.is_sparse == sparse
        opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_selectors_on_a_torch_compiled_model_say_why_nothing_matches():
    """torch.compile wraps the model: its names gain `_orig_mod.`; the error says so (compiling
    is lazy, so wrapping alone costs nothing here)."""
    compiled = torch.compile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    for spec in ('train t { regularize l1(param("0.weight")) * 1e-3 }', 'train t { regularize l1(act("1")) * 1e-3 }'):
        with pytest.raises(regspec.RegspecError, match="wrapped by torch.compile.*attach to the model before compiling"):
            regspec.attach(spec, compiled)


CONV_TRANSPOSE_MODULE = """
from torch import nn


class Gen(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 4, 4, stride=2, padding=1)
        self.head = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        return self.head(self.up(x.reshape(-1, 1, 8, 8)).flatten(1))
"""


def test_plan_says_how_a_transposed_convolution_weight_is_grouped(tmp_path, monkeypatch):
    """nn.ConvTranspose2d stores (C_in, C_out, k, k): its `channels` groups and matrix view are
    over input channels; plan says so for every structured term (it said nothing: `channels`
    is documented as conv filters)."""
    (tmp_path / "tv_convt.py").write_text(CONV_TRANSPOSE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tmp_path / "ct.reg"
    spec.write_text("""train ct {
  model "tv_convt:Gen"()
  data digits(split = 0.8)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  epochs 1
  batch 128
  regularize group_l2(param("up.weight"), groups = channels) * 1e-3
  constrain param("up.weight") in spectral_ball(1.0)
}
""")
    text = regspec.train_api.plan_text(str(spec))
    assert text.count("up.weight: stored (C_in, C_out, k...) like nn.ConvTranspose2d; rows, channels and the "
                      "matrix view x.reshape(C_in, -1) follow its input channels") == 2
    assert "up.weight: 1 groups (channels) of 64 entries" in text


def test_a_lagrangian_constraint_on_frozen_tensors_only_is_an_error():
    """Nothing can move a frozen tensor, so the multiplier of such a constraint grew every step
    and its penalty trained nothing; the statement is refused. On an activation after a trained
    layer it stands."""
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    net[2].requires_grad_(False)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises(regspec.RegspecError, match=r"on frozen tensors only \(2.weight\)"):
        regspec.attach('train t { constrain norm2(param("2.weight")) <= 1.0 via lagrangian(lr = 0.1) }', net, opt)
    with pytest.raises(regspec.RegspecError, match="on frozen tensors only"):
        regspec.attach('train t { freeze param("0.**")\n constrain l1(param("0.weight")) <= 1.0 via lagrangian(lr = 0.1) }',
                       nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
                       torch.optim.SGD(net.parameters(), lr=0.1))
    regspec.attach('train t { constrain l1(act("2")) <= 1.0 via lagrangian(lr = 0.1) }', net, opt)
