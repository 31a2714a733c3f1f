"""`regspec.attach` on real Hugging Face transformers models built from tiny configs (no weights
are downloaded). Skipped where transformers is not installed (CI): tests/test_train_hf_like.py
covers the same structures with models written in the test."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import regspec  # noqa: E402
from regspec.backends.torch.train.reparam import merged_state_dict  # noqa: E402
from regspec.diagnostics import RegspecError  # noqa: E402
from train_fixtures import lm_steps  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()


def _gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=50, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _llama():
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32))


def _bert():
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def _tokens(rows: int = 4, cols: int = 10) -> torch.Tensor:
    return torch.randint(0, 50, (rows, cols), generator=torch.Generator().manual_seed(1))


def test_gpt2_conv1d_prox_tied_head_and_block_taps():
    model, x = _gpt2(), _tokens()
    lr, lam = 0.1, 1e-2
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    reg = regspec.attach(f"""train t {{
  regularize l1(param("transformer.h.0.attn.c_attn.weight")) * {lam} via prox
  regularize l1(param("lm_head.weight")) * {lam} via prox
  regularize l1(act("transformer.h.*")) * 1e-4
}}""", model, opt)
    w = model.transformer.h[0].attn.c_attn.weight
    e = model.transformer.wte.weight
    w0, e0 = w.detach().clone(), e.detach().clone()
    loss = reg.loss(reg.module(input_ids=x, labels=x))
    opt.zero_grad()
    loss.backward()
    zw, ze = w0 - lr * w.grad, e0 - lr * e.grad
    opt.step()
    for new, z in ((w, zw), (e, ze)):
        expected = torch.sign(z) * (z.abs() - lr * lam).clamp_min(0)
        assert torch.allclose(new.detach(), expected, rtol=0, atol=1e-6)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert set(reg.module.taps) == {"transformer.h.0", "transformer.h.1"}


def test_gpt2_lora_on_the_tied_head_round_trips():
    spec = 'train t { reparametrize param("lm_head.weight") as low_rank(rank = 2, alpha = 4) }'
    model, x = _gpt2(), _tokens()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = regspec.attach(spec, model, opt)
    lm_steps(reg, opt, x)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
        ref = model(input_ids=x).logits
        plain = _gpt2().eval()
        plain.load_state_dict(merged_state_dict(model))
        assert torch.allclose(plain(input_ids=x).logits, ref, rtol=0, atol=1e-5)


def test_llama_lora_rmsnorm_and_spectral_ball_in_bfloat16():
    model, x = _llama().to(torch.bfloat16), _tokens()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    reg = regspec.attach("""train t {
  reparametrize param("**.q_proj.weight") as low_rank(rank = 2, alpha = 4)
  reparametrize param("**.v_proj.weight") as low_rank(rank = 2, alpha = 4)
  regularize sum_squares(param(type = LlamaRMSNorm)) * 1e-4
  constrain param("**.o_proj.weight") in spectral_ball(1.0)
}""", model, opt)
    lm_steps(reg, opt, x)
    o = model.model.layers[0].self_attn.o_proj.weight.detach().float()
    assert float(torch.linalg.matrix_norm(o, 2)) <= 1.0 + 2 ** -6
    assert all(v == v for v in reg.values().values())


def test_bert_attention_taps_and_a_wrong_selector():
    model = _bert()
    batch = {"input_ids": _tokens(), "labels": torch.tensor([0, 1, 2, 0])}
    reg = regspec.attach('train t { regularize l1(act("bert.encoder.layer.*.attention")) * 1e-3 }', model)
    out = reg.module(**batch)
    with torch.no_grad():
        taps = [reg.module.taps[f"bert.encoder.layer.{i}.attention"] for i in range(2)]
    expected = float(out.loss.detach()) + 1e-3 * sum(float(t.abs().sum()) / 4 for t in taps)
    assert float(reg.loss(out).detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(RegspecError, match="q_proj") as info:
        regspec.attach('train t { regularize l1(param("**.q_proj.weight")) * 1e-3 }', _bert())
    assert "closest parameter names" in str(info.value)


def test_t5_lora_on_the_shared_embedding_ties_encoder_decoder_and_head():
    """T5 reads one `shared` embedding in the encoder, the decoder and (tied) the LM head: LoRA on
    it is seen by all four names after training steps."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0))
    x = _tokens(2, 6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = regspec.attach('train t { reparametrize param("shared.weight") as low_rank(rank = 2) }', model, opt)
    lm_steps(reg, opt, x)
    with torch.no_grad():
        w = model.shared.weight
        assert float(model.shared.parametrizations.weight[0].B.abs().max()) > 0
        for other in (model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight, model.lm_head.weight):
            assert torch.equal(other, w)


def test_wav2vec2_jacobian_penalty_needs_a_frozen_feature_encoder():
    """Wav2Vec2's feature encoder sets requires_grad on a view of its input in training mode, so
    jacobian_fro cannot differentiate through it: a located error naming the way out, and with
    model.freeze_feature_encoder() the penalty trains."""
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForSequenceClassification(transformers.Wav2Vec2Config(
        vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, num_labels=3, classifier_proj_size=8))
    batch = {"input_values": torch.randn(2, 400), "labels": torch.tensor([0, 2])}
    spec = "train t { regularize jacobian_fro(output) * 1e-3 }"
    reg = regspec.attach(spec, model)
    with pytest.raises(RegspecError, match="freeze_feature_encoder"):
        reg.loss(reg.module(**batch))
    model.freeze_feature_encoder()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    reg = regspec.attach(spec, model, opt)
    reg.loss(reg.module(**batch)).backward()
    opt.step()
    assert reg.values()["jacobian_fro_output"] > 0
