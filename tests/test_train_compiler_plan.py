"""The train-block planner and binder: lowering choices, selectors, schedules, gates, located
errors with suggestions, `regspec plan`, and the fx -> hooks fallback."""
from __future__ import annotations

import sys

import pytest
import torch

import regspec
from regspec.compiler.train_plan import ScheduleRef, plan_train
from regspec.diagnostics import RegspecError
from regspec.train_api import plan, plan_text

torch.set_num_threads(1)

BASE = """
train t {{
  model mlp(in = 64, hidden = [32, 16], out = 10, act = "gelu")
  data digits(split = 0.8)
  loss cross_entropy
  optimizer adamw(lr = 1e-3, weight_decay = 0)
  epochs 4
  batch 128
  seed 0
{body}
}}
"""


def _plan(body: str):
    return plan_train(regspec.load(BASE.format(body=body)).ast)


def _err(body: str) -> RegspecError:
    with pytest.raises(RegspecError) as info:
        plan_text(regspec.load(BASE.format(body=body)))
    return info.value


def test_no_torch_at_import():
    # the planner module is pure Python: importing it (as `regspec check` does) pulls in no torch
    import subprocess

    code = "import sys, regspec.compiler.train_plan, regspec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_lowering_rules():
    p = _plan("""
  regularize l1(param("head.weight")) * 1e-4
  regularize l1(param("layers.0.weight")) * 1e-4 via grad
  regularize l2sq(param("layers.1.weight")) * 1e-3
  regularize l2sq(param("layers.1.weight")) * 1e-3 via prox
  regularize weight_decay(param("**.weight")) * 1e-2
  regularize l1(act("acts.*")) * 1e-5
  regularize orthogonality(param(type = Linear)) * 1e-3
  regularize group_l2(param("layers.*.weight"), groups = rows) * 1e-4
  constrain param("head.weight") in spectral_ball(1.0) every 10 steps
""")
    got = [(t.name, t.lowering, t.kernel) for t in p.terms]
    assert got == [
        ("l1", "prox", "l1"),                    # nonsmooth with a kernel: prox
        ("l1", "loss", None),                    # via grad: subgradient in the loss
        ("l2sq", "loss", None),                  # smooth: loss
        ("l2sq", "prox", "l2sq"),                # via prox forces the prox
        ("weight_decay", "prox", "l2sq"),        # decoupled by definition
        ("l1", "loss", None),                    # activations: always the loss
        ("orthogonality", "loss", None),
        ("group_l2", "prox", "group_l2"),
        ("spectral_ball", "projection", "spectral_ball"),
    ]
    assert p.terms[-1].gate.every == 10 and p.terms[-1].options == {"radius": 1.0}


def test_weights_schedules_and_gates():
    p = _plan("""
  let lam = 2e-4
  regularize l1(act("acts.*")) * sine_stages(0 -> 1e-4, stages = 4)
  regularize l1(param("head.weight")) * lam / 2
  regularize nuclear(param("layers.0.weight")) * 0.5 * linear(0 -> 1, epochs 1..3)
  constrain param("layers.0.weight") in nm_sparse(2, 4) from epoch 2 until epoch 4
  constrain param("head.weight") in spectral_ball(cosine(2.0 -> 1.0)) every 2 epochs
""")
    w0, w1, w2 = (t.weight for t in p.terms[:3])
    assert isinstance(w0, ScheduleRef) and w0.name == "sine_stages" and w0.args == (0.0, 1e-4)
    assert w1 == pytest.approx(1e-4)
    assert isinstance(w2, ScheduleRef) and w2.scale == 0.5 and w2.kwargs == {"start": 1.0, "end": 3.0}
    g = p.terms[3].gate
    assert (g.start, g.stop, g.every) == (2.0, 4.0, None)
    assert p.terms[3].options == {"n": 2, "m": 4}
    assert isinstance(p.terms[4].options["radius"], ScheduleRef)
    assert p.terms[4].gate.every == 2 and p.terms[4].gate.every_unit == "epochs"


def test_loss_expression_and_settings():
    spec = regspec.load("""
train t {
  model linear(bias = false)
  data diabetes(split = 0.5)
  loss mean((output - target) ** 2) / 2 + 0.1 * mae
  optimizer sgd(lr = cosine(0.1 -> 0.01))
  batch full
  steps 7
  device cpu
}
""")
    p = plan_train(spec.ast)
    assert p.loss == ("add", ("div", ("mean", ("pow", ("sub", "output", "target"), 2.0)), 2.0),
                      ("mul", 0.1, ("mae", "output", "target")))
    assert p.batch == "full" and p.steps == 7 and p.device == "cpu"
    assert isinstance(p.optimizer.kwargs["lr"], ScheduleRef)


@pytest.mark.parametrize("body, message, note", [
    ('regularize l1(param("layer.*.weight")) * 1e-4', "matches none of the model's parameter names",
     "layers.*.weight"),
    ('regularize l1(act("act.*")) * 1e-4', "matches none of the model's module names", "acts.*"),
    ('regularize l1(param(type = Conv2d)) * 1e-4', "no module of type `Conv2d`", "Linear"),
    ('regularize l1(param("re:head\\\\.bias.*x")) * 1e-4', "matches none", "head.bias"),
])
def test_selector_errors_are_located_with_names(body, message, note):
    e = _err(body)
    d = e.first
    assert message in d.message
    assert d.span is not None and d.span.line == 10
    text = d.span.source.line(10)[d.span.column - 1: d.span.end_column - 1]
    assert text.startswith(("param(", "act("))  # the selector's own span
    assert any(note in n for n in d.notes), d.notes


@pytest.mark.parametrize("body, message, caret, note", [
    ('regularize l11(param("head.weight"))', "unknown regularizer `l11`", "l11", "`l1`"),
    ('regularize l1(act("acts.*")) * 1e-4 via prox', "`via prox` needs parameters", None, None),
    ('regularize orthogonality(param("head.weight")) via prox', "no prox kernel", None, None),
    ('regularize l1(param("head.weight")) via proximal', "unknown lowering", None, "`prox`"),
    ('constrain param("head.weight") in spectral_bal(1.0)', "unknown set `spectral_bal`", "spectral_bal",
     "`spectral_ball`"),
    ('constrain param("head.weight") in nm_sparse(4, 2)', "0 < N <= M", None, None),
    ('regularize group_l2(param("head.weight"), groups = row)', "unknown grouping `row`", "row", "`rows`"),
    ('regularize l1(param("head.weight")) * sine_stage(0 -> 1)', "unknown function `sine_stage`", "sine_stage",
     "`sine_stages`"),
    ('regularize l1(param("head.weight")) * linear(0 -> 1, stages = 3)', "no argument `stages`", None, None),
    ('regularize l1(param("head.weight"), power = 2)', "has no option `power`", "power = 2", None),
])
def test_term_errors_are_located(body, message, caret, note):
    e = _err(body)
    d = e.first
    assert message in d.message, d.message
    assert d.span is not None and d.span.line == 10
    if caret is not None:
        assert d.span.source.line(10)[d.span.column - 1: d.span.end_column - 1] == caret
    if note is not None:
        assert any(note in n for n in d.notes), d.notes
    assert "Traceback" not in str(e)


def test_missing_statements_and_duplicates():
    with pytest.raises(RegspecError, match="has no `data` statement"):
        plan(regspec.load("train t {\n  model mlp(in = 4, hidden = [4], out = 2)\n}\n"))
    with pytest.raises(RegspecError, match="a second `loss` statement"):
        plan(regspec.load("train t {\n model linear\n data digits\n loss mse\n loss mae\n}\n"))
    with pytest.raises(RegspecError, match="no train block named `tt`") as info:
        plan(regspec.load("train t {\n model linear\n data digits\n}\n"), "tt")
    assert any("`t`" in n for n in info.value.first.notes)


def test_unknown_model_and_activation_are_located():
    with pytest.raises(RegspecError) as info:
        plan_text(regspec.load('train t {\n  model mpl(in = 64, out = 10)\n  data digits\n}\n'))
    assert "unknown model `mpl`" in info.value.first.message and info.value.first.span.line == 2
    assert any("`mlp`" in n for n in info.value.first.notes)
    with pytest.raises(RegspecError) as info:
        plan(regspec.load('train t {\n  model linear\n  data digits\n  rewrite GELU -> ReLUU\n}\n'))
    assert "unknown rewrite target `ReLUU`" in info.value.first.message
    assert info.value.first.span.line == 4


def test_plan_text_reports_matches_lowering_schedule_gate_and_fusion():
    text = plan_text(regspec.load(BASE.format(body="""
  rewrite GELU -> ReLU
  regularize l1(act("acts.*")) * sine_stages(0 -> 1e-4, stages = 4)
  regularize group_l2(param("layers.*.weight"), groups = rows) * 1e-4
  regularize l1(param("head.weight")) * 1e-5 via prox
  regularize l1(param("layers.0.bias")) * 1e-5
  constrain param("head.weight") in spectral_ball(1.0) every 10 steps
  constrain param("layers.0.weight") in nm_sparse(2, 4) from epoch 2
""")))
    assert "replaced 2: modules acts.0, acts.1" in text
    assert "acts.0 [B, 32], acts.1 [B, 16]" in text
    assert "layers.0.weight [32, 64], layers.1.weight [16, 32]" in text
    assert "layers.0.weight: 32 groups (rows) of 64 entries" in text
    assert "sine_stages(0, 0.0001, stages=4)" in text
    assert "tau_i = lr * w / (sqrt(v_hat_i) + eps)" in text      # separable under AdamW
    assert "gate      every 10 steps" in text and "gate      from epoch 2" in text
    assert "activation taps are outputs of the fx graph" in text
    # both l1 prox statements share one fused call
    calls = [ln for ln in text.splitlines() if ln.startswith("  #")]
    l1 = [c for c in calls if " l1(" in c]
    assert len(l1) == 1 and "head.weight" in l1[0] and "layers.0.bias" in l1[0]
    assert len(calls) == 4


def test_untraceable_model_falls_back_to_hooks_and_module_swaps():
    spec = regspec.load("""
train t {
  model "train_fixtures:Branchy"(width = 16)
  data digits(split = 0.8)
  loss cross_entropy
  rewrite GELU -> ReLU
  regularize l1(act("act")) * 1e-4
}
""")
    text = plan_text(spec)
    assert "not traceable" in text and "module swaps and forward hooks" in text
    assert "activation taps by forward hooks" in text
    assert "replaced 1: modules act" in text


def test_functional_rewrite_in_the_fx_graph():
    text = plan_text(regspec.load("""
train t {
  model "train_fixtures:Functional"()
  data digits(split = 0.8)
  rewrite gelu -> relu
  regularize l1(param("inp.weight")) * 1e-4
}
"""))
    assert "functional calls rewritten in the fx graph" in text
    with pytest.raises(RegspecError, match="nothing matched") as info:
        plan_text(regspec.load("""
train t {
  model "train_fixtures:Functional"()
  data digits(split = 0.8)
  rewrite Tanh -> relu
}
"""))
    assert info.value.first.span.line == 5


def test_plan_cli(capsys, root):
    from regspec.cli import main

    assert main(["plan", str(root / "specs" / "train_group_channels.reg")]) == 0
    out = capsys.readouterr().out
    assert "fused calls after optimizer.step()" in out and "group_l2" in out
    assert main(["plan", str(root / "specs" / "train_lasso.reg"), "--train", "nope"]) == 1
    assert "no train block named `nope`" in capsys.readouterr().err


def test_train_terms_and_sets_come_from_the_one_catalogue():
    """No second table: every training spelling resolves to a catalogue atom or set (the kernels
    and the runtime's evaluations are checked by tests/test_catalogue_complete.py)."""
    import regspec.compiler.train_plan as tp
    from regspec.compiler.catalogue import ALIASES, ATOMS, SETS

    assert not hasattr(tp, "TERMS") and not hasattr(tp, "SETS") and not hasattr(tp, "TERM_ALIASES")
    for spelling in ("l1", "l2", "linf", "l2sq", "sum_squares", "weight_decay", "elastic_net", "group_l2",
                     "nuclear", "spectral_norm", "anchor_l2", "l2_sp", "orthogonality", "flops", "jacobian_fro",
                     "norm1", "norm2", "norm_inf", "nuclear_norm", "group_norm"):
        atom = tp.train_atom(spelling)
        assert atom is not None and ATOMS[ALIASES.get(spelling, spelling)] is atom, spelling
    for name in ("nonneg", "nonpos", "box", "l1_ball", "l2_ball", "linf_ball", "simplex", "spectral_ball",
                 "nuclear_ball", "psd", "top_k", "nm_sparse", "low_rank", "sphere", "stiefel"):
        assert tp.train_set(name) is SETS[name] and SETS[name].projection is not None, name


def test_steps_setting_stops_mid_epoch(tmp_path):
    spec = regspec.load(BASE.format(body='  regularize l1(param("head.weight")) * 1e-4').replace("epochs 4", "steps 5"))
    summary = regspec.train(spec, out=tmp_path / "run", quiet=True)
    assert summary["steps"] == 5 and summary["epochs"] == 1
