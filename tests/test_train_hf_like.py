"""`regspec.attach` on models shaped like Hugging Face transformers and torchvision CNNs, without
transformers: outputs that are tuples and ModelOutput-like dicts, Conv1D weights stored (in, out),
tied input/output embeddings, RMSNorm, keyword-only calls (``model(input_ids=..., labels=...)``),
forwards torch.fx cannot trace, and in-place activations after a tapped module.

References are independent of regspec: hand-computed penalties, the closed-form prox of l1
(soft thresholding), and the same model written with nn.Linear weights (layout invariance).
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import regspec
from regspec.diagnostics import RegspecError
from train_fixtures import lm_steps

torch.set_num_threads(1)

VOCAB, D, T, B = 40, 16, 6, 4


class ModelOutput(OrderedDict):
    """Like transformers' ModelOutput: an OrderedDict whose fields are also attributes."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Conv1D(nn.Module):
    """Like transformers' Conv1D (GPT-2): y = x W + b with W stored (in, out) = (nx, nf)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Llama's RMSNorm: a weight, no bias)."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Block(nn.Module):
    """A pre-norm block returning a tuple (hidden, attention-like weights), as HF blocks do."""

    def __init__(self, linear: bool = False):
        super().__init__()
        self.ln = RMSNorm(D)
        self.c_fc = nn.Linear(D, 2 * D) if linear else Conv1D(2 * D, D)
        self.c_proj = nn.Linear(2 * D, D) if linear else Conv1D(D, 2 * D)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.c_fc(self.ln(h))
        return h + self.c_proj(F.gelu(z)), z.softmax(-1)


class Backbone(nn.Module):
    """Embeddings and blocks; returns a ModelOutput-like dict (last_hidden_state first)."""

    def __init__(self, linear: bool = False):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D)
        self.h = nn.ModuleList([Block(linear) for _ in range(2)])
        self.ln_f = RMSNorm(D)

    def forward(self, input_ids: torch.Tensor) -> ModelOutput:
        if not bool((input_ids >= 0).all()):  # data-dependent control flow: torch.fx cannot trace it
            raise ValueError("negative token ids")
        h = self.wte(input_ids)
        for block in self.h:
            h = block(h)[0]
        return ModelOutput(last_hidden_state=self.ln_f(h), hidden_states=None)


class TinyLM(nn.Module):
    """A GPT-2-shaped causal LM: lm_head tied to the input embedding, called with keywords,
    returning ModelOutput(loss, logits) with the loss computed from ``labels``."""

    def __init__(self, linear: bool = False):
        super().__init__()
        self.transformer = Backbone(linear)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        logits = self.lm_head(self.transformer(input_ids=input_ids).last_hidden_state)
        out = ModelOutput()
        if labels is not None:
            out["loss"] = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
        out["logits"] = logits
        return out


def _model(linear: bool = False, seed: int = 0) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(linear)


def _tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ outputs that are not tensors
def test_model_output_dict_gives_the_loss_and_the_output_term():
    """`output` reads the logits of a ModelOutput; without a `loss` statement the model's own
    loss is the task loss: reg.loss(out) = out.loss + w (1/B) sum_i ||logits_i||_1."""
    model, x = _model(), _tokens()
    w = 1e-3
    reg = regspec.attach(f"train t {{ regularize l1(output) * {w} }}", model)
    out = reg.module(input_ids=x, labels=x)
    got = reg.loss(out)
    with torch.no_grad():
        ref = model(input_ids=x, labels=x)
        expected = float(ref["loss"]) + w * float(ref["logits"].abs().sum()) / B
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    got.backward()  # a differentiable total


def test_penalty_of_a_model_output_without_loss_side_terms_is_zero():
    """Only a prox term: reg.penalty(out) is 0 on the parameters' device and dtype (it used to
    read `.device` from the ModelOutput)."""
    model, x = _model(), _tokens()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = regspec.attach('train t { regularize l1(param(type = Conv1D)) * 1e-3 via prox }', model, opt)
    out = reg.module(input_ids=x, labels=x)
    pen = reg.penalty(out)
    assert pen.dim() == 0 and float(pen) == 0.0 and pen.dtype == torch.float32
    (out.loss + pen).backward()
    opt.step()


def test_loss_without_target_needs_the_models_own_loss():
    model, x = _model(), _tokens()
    reg = regspec.attach("train t { regularize l1(output) * 1e-3 }", model)
    with pytest.raises(RegspecError, match="target is missing"):
        reg.loss(reg.module(input_ids=x))   # no labels: no own loss, no target
    # with a target, the spec's (automatic) task loss reads the logits: cross-entropy of (B, K)
    pooled = nn.Sequential(nn.Flatten(), nn.Linear(T, 3))
    reg2 = regspec.attach("train t { regularize l1(output) * 0 }", pooled)
    xs, ys = torch.randn(B, T), torch.tensor([0, 1, 2, 0])
    logits = pooled(xs)
    value = reg2.loss(ModelOutput(logits=reg2.module(xs)), ys)
    assert float(value) == pytest.approx(float(F.cross_entropy(logits, ys)), rel=1e-6)


def test_activation_terms_on_tuple_and_dict_outputs():
    """act("transformer.h.*") taps each block's tuple output as its hidden state, and
    act("transformer") the dict's last_hidden_state: values equal hand-computed l1 norms."""
    model, x = _model(), _tokens()
    reg = regspec.attach("""train t {
  regularize l1(act("transformer.h.*")) * 1.0 as blocks
  regularize sum_squares(act("transformer")) * 1.0 as backbone
}""", model)
    assert reg.module.tap_path == "hooks"   # data-dependent control flow
    out = reg.module(input_ids=x)
    total = reg.penalty(out)
    with torch.no_grad():
        h = model.transformer.wte(x)
        blocks = 0.0
        for block in model.transformer.h:
            h = block(h)[0]
            blocks += float(h.abs().sum()) / B
        last = model.transformer.ln_f(h)
        backbone = float(last.pow(2).sum()) / B
    assert float(total.detach()) == pytest.approx(blocks + backbone, rel=1e-5)
    assert reg.values() == pytest.approx({"blocks": blocks, "backbone": backbone}, rel=1e-5)


def test_kwargs_only_call_keeps_the_input():
    """model(input_ids=...) has no positional input: the first tensor keyword is the batch input
    (the finite check traces a NaN loss back to it)."""
    model, x = _model(), _tokens()
    reg = regspec.attach("train t { regularize l1(output) * 1e-3 }", model)
    reg.module(input_ids=x)
    assert reg._input is x


# ------------------------------------------------------------------ tied weights and layouts
def test_tied_alias_selects_the_shared_tensor_and_prox_is_soft_thresholding():
    """param("lm_head.weight") names the tensor tied to transformer.wte.weight (named_parameters
    lists it once); one SGD step then the l1 prox: w1 = soft(w0 - lr g, lr lam), still tied."""
    model, x = _model(), _tokens()
    lr, lam = 0.1, 2e-2
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    reg = regspec.attach(f'train t {{ regularize l1(param("lm_head.weight")) * {lam} via prox }}', model, opt)
    w = model.transformer.wte.weight
    w0 = w.detach().clone()
    loss = reg.loss(reg.module(input_ids=x, labels=x))
    opt.zero_grad()
    loss.backward()
    z = w0 - lr * w.grad.detach()
    opt.step()
    expected = torch.sign(z) * (z.abs() - lr * lam).clamp_min(0)
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-6)
    assert model.lm_head.weight is w and bool((w == 0).any())


def test_tied_alias_no_match_lists_names():
    model = _model()
    with pytest.raises(RegspecError, match="lm_head.bias") as info:
        regspec.attach('train t { regularize l1(param("lm_head.bias")) * 1e-3 via prox }', model)
    assert "closest parameter names" in str(info.value)


def test_rmsnorm_selected_by_type():
    """param(type = RMSNorm): every norm's weight (a user class, matched by name)."""
    model = _model()
    reg = regspec.attach("train t { regularize sum_squares(param(type = RMSNorm)) * 1.0 }", model)
    expected = sum(float(m.weight.pow(2).sum()) for m in model.modules() if isinstance(m, RMSNorm))
    assert reg.values()["sum_squares_rmsnorm"] == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(3 * D)   # two blocks and the final norm, weights at 1


def _one_muon_step(linear: bool) -> dict[str, torch.Tensor]:
    model, x = _model(linear), _tokens()
    if linear:   # the same network: nn.Linear stores W^T of Conv1D's (in, out) weight
        conv = _model(False)
        with torch.no_grad():
            for mine, theirs in zip(model.transformer.h, conv.transformer.h):
                for name in ("c_fc", "c_proj"):
                    getattr(mine, name).weight.copy_(getattr(theirs, name).weight.T)
                    getattr(mine, name).bias.copy_(getattr(theirs, name).bias)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    regspec.attach('train t { transform orthogonalize(param("transformer.h.*.c_fc.weight"), momentum = 0, '
                   'nesterov = false) }', model, opt)
    loss = model(input_ids=x, labels=x).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def test_muon_update_of_a_conv1d_weight_is_the_transpose_of_the_linear_one():
    """Muon's factor sqrt(max(1, out / in)) reads the (out, in) shape: Conv1D's (in, out) storage
    gets exactly the transposed nn.Linear update (it used sqrt(max(1, in / out)) = 1 before)."""
    conv, lin = _one_muon_step(False), _one_muon_step(True)
    for i in range(2):
        name = f"transformer.h.{i}.c_fc.weight"
        assert torch.allclose(conv[name], lin[name].T, rtol=1e-4, atol=1e-6), name
        # the factor: (out, in) = (32, 16), so the update's singular values are about sqrt(2) * lr
        s = torch.linalg.svdvals(conv[name])
        assert 0.6 * 2 ** 0.5 * 0.05 < float(s.max()) < 1.3 * 2 ** 0.5 * 0.05


# ------------------------------------------------------------------ in-place ops after a tap
class ResBlock(nn.Module):
    """torchvision's BasicBlock pattern: conv -> bn -> ReLU(inplace=True), `out += identity`."""

    def __init__(self, c: int = 4, untraceable: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.untraceable = untraceable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.untraceable and not bool(torch.isfinite(x).all()):
            raise ValueError("non-finite input")
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


@pytest.mark.parametrize("untraceable", [False, True])
def test_tap_before_an_inplace_relu_reads_the_modules_output(untraceable: bool):
    """l1(act("bn1")) is (1/B) sum |bn1(conv1(x))|, not of the ReLU that overwrites it in place
    (fx: a clone node before the in-place op; hooks: the hook keeps a copy); the gradient too."""
    torch.manual_seed(0)
    block = ResBlock(untraceable=untraceable)
    reg = regspec.attach('train t { regularize l1(act("bn1")) * 1.0\n regularize l1(act("bn2")) * 1.0 }', block)
    assert reg.module.tap_path == ("hooks" if untraceable else "fx")
    x = torch.randn(3, 4, 5, 5)
    value = reg.penalty(reg.module(x))
    (grad,) = torch.autograd.grad(value, block.conv1.weight)
    a1 = block.bn1(block.conv1(x))
    a2 = block.bn2(block.conv2(torch.relu(a1)))
    ref = (a1.abs().sum() + a2.abs().sum()) / 3
    (ref_grad,) = torch.autograd.grad(ref, block.conv1.weight)
    assert float(value.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ reparametrizing a tied tensor
@pytest.mark.parametrize("selector", ['param("lm_head.weight")', 'param(type = Linear)',
                                      'param("transformer.wte.weight")'])
def test_low_rank_on_a_tied_weight_keeps_the_tie(selector: str):
    """LoRA on the tied embedding/head (selected by either name, or lm_head by type): both modules
    read W0 + (alpha / r) B A with the same factors (before, only the embedding was parametrized
    and the head kept W0: the tie was silently broken). The state_dict round-trips, and the merged
    state_dict loads into the plain model."""
    from regspec.backends.torch.train.reparam import merged_state_dict

    spec = f"train t {{ reparametrize {selector} as low_rank(rank = 2, alpha = 4) }}"
    model, x = _model(), _tokens()
    w0 = model.transformer.wte.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = regspec.attach(spec, model, opt)
    lm_steps(reg, opt, x)
    lora = model.transformer.wte.parametrizations.weight[0]
    expected = w0 + 2.0 * lora.B.detach() @ lora.A.detach()
    assert float(lora.B.detach().abs().max()) > 0          # the update moved
    with torch.no_grad():
        assert torch.allclose(model.transformer.wte.weight, expected, rtol=0, atol=1e-6)
        assert torch.allclose(model.lm_head.weight, expected, rtol=0, atol=1e-6)
        ref = model(input_ids=x).logits
        again = _model()
        regspec.attach(spec, again)
        again.load_state_dict(model.state_dict())
        plain = _model(seed=5)
        plain.load_state_dict(merged_state_dict(model))
        assert torch.allclose(again(input_ids=x).logits, ref, rtol=0, atol=1e-6)
        assert torch.allclose(plain(input_ids=x).logits, ref, rtol=0, atol=1e-6)
        assert plain.lm_head.weight is plain.transformer.wte.weight
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad and ("wte" in n or "lm_head" in n))
    assert trainable == ["transformer.wte.parametrizations.weight.0.A", "transformer.wte.parametrizations.weight.0.B"]


def test_weight_norm_on_a_tied_weight_freezes_the_tensor_it_replaces():
    """weight_norm replaces the tensor by g and v: the head follows the embedding's value, and the
    old tensor it held (no longer read by anything) does not train."""
    model = _model()
    regspec.attach('train t { reparametrize param("lm_head.weight") as weight_norm }', model)
    named = dict(model.named_parameters())
    assert not named["lm_head.parametrizations.weight.original"].requires_grad
    with torch.no_grad():
        model.transformer.wte.parametrizations.weight.original0.mul_(2.0)   # g: rows scale by 2
        assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)


# ------------------------------------------------------------------ LoRA factors under Adam
def test_lora_factor_without_gradient_takes_the_euclidean_prox_step_under_adam():
    """LoRA on an attention-like Conv1D, l1 on A via prox, Adam: at step 1 B = 0, so A's gradient
    and Adam's second moment are exactly 0 and Adam leaves A where it is; its prox step is then
    the Euclidean soft threshold A1 = soft(A0, lr w) (the adaptive step lr w / eps zeroed all of A
    at the first step, discarding its random start; with A = 0, B's gradient (grad W) A^T is 0, and
    on train_lora_l1.reg's MLP without its init both factors were all zero by step 10)."""
    model, x = _model(), _tokens()
    lr, w = 1e-2, 2e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    reg = regspec.attach(f"""train t {{
  reparametrize param("transformer.h.0.c_fc.weight") as low_rank(rank = 2, alpha = 4)
  regularize l1(param("**.weight.0.A")) * {w} via prox
}}""", model, opt)
    lora = model.transformer.h[0].c_fc.parametrizations.weight[0]
    a0 = lora.A.detach().clone()
    loss = reg.loss(reg.module(input_ids=x, labels=x))
    opt.zero_grad()
    loss.backward()
    assert float(lora.A.grad.abs().max()) == 0.0 and float(lora.B.grad.abs().max()) > 0
    opt.step()
    expected = torch.sign(a0) * (a0.abs() - lr * w).clamp_min(0)
    assert torch.allclose(lora.A.detach(), expected, rtol=0, atol=1e-7)
    assert bool((lora.A != 0).all())
    # the next steps train both factors
    for _ in range(3):
        loss = reg.loss(reg.module(input_ids=x, labels=x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(lora.A.detach().abs().max()) > 0 and float(lora.B.detach().abs().max()) > 0


# ------------------------------------------------------------------ bfloat16 weights
def test_svd_based_steps_on_bfloat16_weights():
    """A model cast to bfloat16 (as LLMs are trained): torch has no SVD in bfloat16, so the
    spectral-ball projection, the nuclear prox and spectral_clip run in float32 and round once.
    References in float64: W1 = U min(s, 1) V^T, W1 = U max(s - tau, 0) V^T (bfloat16's 8-bit
    mantissa: relative error about 2^-8 per entry)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4)).to(torch.bfloat16)
    lr, tau_w = 0.05, 0.5
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    reg = regspec.attach(f"""train t {{
  loss mse
  constrain param("0.weight") in spectral_ball(1.0)
  regularize nuclear(param("2.weight")) * {tau_w} via prox
  transform spectral_clip(param("0.weight"), c = 0.1)
}}""", model, opt)
    x, y = torch.randn(16, 12, dtype=torch.bfloat16), torch.randn(16, 4, dtype=torch.bfloat16)
    loss = reg.loss(reg.module(x), y)
    opt.zero_grad()
    loss.backward()
    w2 = model[2].weight.detach().double() - lr * model[2].weight.grad.double()
    opt.step()
    w0 = model[0].weight.detach().double()
    u, s, vh = torch.linalg.svd(w2, full_matrices=False)
    nuclear = (u * (s - lr * tau_w).clamp_min(0)) @ vh
    assert torch.allclose(model[2].weight.double(), nuclear, rtol=0, atol=2 ** -7 * float(w2.abs().max()))
    assert float(torch.linalg.matrix_norm(w0, 2)) <= 1.0 + 2 ** -6
    assert model[0].weight.dtype == torch.bfloat16
    values = reg.values()
    assert all(v == v for v in values.values())          # finite reports (svdvals ran in float32)


# ------------------------------------------------------------------ the trainer on such a model
class DictClassifier(nn.Module):
    """digits -> Linear -> ReLU -> Linear, returning ModelOutput(logits, hidden_states)."""

    def __init__(self, as_dict: bool = True):
        super().__init__()
        self.inp = nn.Linear(64, 16)
        self.act = nn.ReLU()
        self.head = nn.Linear(16, 10)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor):
        h = self.act(self.inp(x.flatten(1)))
        logits = self.head(h)
        return ModelOutput(logits=logits, hidden_states=(h,)) if self.as_dict else logits


def test_plan_and_trainer_read_the_logits_of_a_model_output(tmp_path):
    """`regspec plan` / `train` with a user model returning a ModelOutput: the probe and the
    trainer read its logits, and the run gives the weights of the same model returning them."""
    from regspec.train_api import plan_text

    def run(as_dict: bool) -> dict[str, torch.Tensor]:
        spec = tmp_path / f"s{int(as_dict)}.reg"
        spec.write_text(f"""train t {{
  model "test_train_hf_like:DictClassifier"(as_dict = {'true' if as_dict else 'false'})
  data digits(split = 0.8)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  epochs 1
  batch 128
  seed 0
  regularize l1(act("act")) * 1e-4
  regularize l1(output) * 1e-4
  regularize l1(param("head.weight")) * 1e-3 via prox
}}""")
        if as_dict:   # the probe ran one batch through it (it refused a non-tensor output before)
            assert "[DictClassifier, 1,210 parameters]" in plan_text(str(spec))
        out = tmp_path / f"run{int(as_dict)}"
        summary = regspec.train(str(spec), out=out, quiet=True, dtype="float64")
        assert summary["metrics"]["val_acc"] > 0.2   # chance is 0.1 (one epoch of 12 steps)
        if as_dict:
            assert "rt.primary_tensor(net(x))" in (out / "trainer.py").read_text()
        return torch.load(out / "model.pt", weights_only=True)

    got, ref = run(True), run(False)
    for k, v in ref.items():
        assert torch.allclose(got[k], v, rtol=0, atol=1e-12), k


def test_cross_entropy_per_position_and_token_accuracy():
    """Logits (B, T, K) against ids (B, T): the mean over positions of -log softmax(z)[y], ids
    -100 (padding) left out; validation accuracy is each row's fraction of correct ids."""
    from regspec.backends.torch.train.losses import cross_entropy
    from regspec.backends.torch.train.runtime import evaluate

    torch.manual_seed(0)
    z = torch.randn(3, 5, 7, dtype=torch.float64)
    y = torch.randint(0, 7, (3, 5))
    y[0, 3:] = -100
    logp = torch.log_softmax(z, dim=-1)
    terms = [-float(logp[i, t, y[i, t]]) for i in range(3) for t in range(5) if y[i, t] != -100]
    assert float(cross_entropy(z, y)) == pytest.approx(sum(terms) / len(terms), rel=1e-12)

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> ModelOutput:
            return ModelOutput(logits=z[: len(x)])

    pred = z.argmax(-1)
    rows = [sum(int(pred[i, t] == y[i, t]) for t in range(5) if y[i, t] != -100) / (3 if i == 0 else 5)
            for i in range(3)]
    got = evaluate(Fixed(), [(torch.zeros(3, 1), y)], cross_entropy, torch.device("cpu"), torch.float64,
                   "classification")
    assert got["val_acc"] == pytest.approx(sum(rows) / 3, rel=1e-12)
    assert got["val_loss"] == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_parameter_counts_count_a_tied_tensor_once():
    """trained_summary (plan's "trainable N of M", summary.json): the tied embedding/head is one
    tensor, before and after a reparametrization of it (it was counted twice)."""
    from regspec.backends.torch.train.reparam import trained_summary

    model = _model()
    unique = sum(p.numel() for p in model.parameters())
    assert unique == VOCAB * D + 2 * (D + (2 * D * D + 2 * D) + (2 * D * D + D)) + D
    assert trained_summary(model)["model_parameters"] == unique
    regspec.attach('train t { reparametrize param("lm_head.weight") as low_rank(rank = 2, alpha = 4)\n'
                   ' reparametrize param("transformer.h.0.c_fc.weight") as low_rank(rank = 2, alpha = 4) }', model)
    summary = trained_summary(model)
    assert summary["model_parameters"] == unique
    # the two frozen W0 out, rank-2 factors in: (VOCAB x D) and the (D x 2D) Conv1D weight
    assert summary["trainable_parameters"] == unique - VOCAB * D - 2 * D * D + 2 * (VOCAB + D) + 2 * (D + 2 * D)


# ------------------------------------------------------------------ the Jacobian penalty on attention
class Attention(nn.Module):
    """One self-attention layer over (B, T, D) inputs, with torch's fused SDPA (as ViT, BERT and
    Llama call it) or the same formula written out."""

    def __init__(self, fused: bool):
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.head = nn.Linear(D, 3)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> ModelOutput:
        b, t, _ = x.shape
        q, k, v = (z.reshape(b, t, 2, D // 2).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))  # 2 heads
        if self.fused:
            h = F.scaled_dot_product_attention(q, k, v)
        else:
            h = torch.softmax(q @ k.transpose(-2, -1) / (D // 2) ** 0.5, dim=-1) @ v
        return ModelOutput(logits=self.head(h.transpose(1, 2).reshape(b, t, D).mean(dim=1)))


def test_jacobian_penalty_through_fused_attention():
    """jacobian_fro(output) is differentiated twice; torch's fused CPU attention kernel has no
    second derivative (loss.backward() raised), so the penalty's forward uses the math kernel:
    value and gradient equal those of the attention written out (same random projections)."""
    x = torch.randn(B, T, D)
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = Attention(fused)
        reg = regspec.attach("train t { regularize jacobian_fro(output) * 1.0 }", model)
        value = reg.penalty(reg.module(x))
        value.backward()
        results.append((float(value.detach()), model.qkv.weight.grad.clone()))
    (v1, g1), (v2, g2) = results
    assert v1 == pytest.approx(v2, rel=1e-5) and v1 > 0
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)


def test_jacobian_penalty_on_token_ids_is_a_clear_error():
    model, x = _model(), _tokens()
    reg = regspec.attach("train t { regularize jacobian_fro(output) * 1e-3 }", model)
    with pytest.raises(RegspecError, match="token ids have no derivative"):
        reg.loss(reg.module(input_ids=x, labels=x))
