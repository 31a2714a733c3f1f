"""Issue 9, training-plan items: what `regspec plan` / `compile` / `train` must catch before a
run starts (terms that bind to nothing, rewrites that did not take effect, conflicting
projections, storage layouts, gates that never open, model/data mismatches, unchecked train
blocks, spec text in the generated trainer, user code by import path, regex selectors, bad
settings). Each test is a regression test for one finding; all run on tiny models."""
from __future__ import annotations

import ast as pyast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import regspec
from regspec.cli import main
from regspec.compiler.train_plan import plan_train
from regspec.diagnostics import RegspecError
from regspec.train_api import compile_trainer, plan_text

torch.set_num_threads(1)

HEAD = """
train t {{
  model {model}
  data {data}
  epochs 1
  batch 64
{body}
}}
"""


def spec(body: str = "", model: str = "mlp(hidden = [16])", data: str = "digits(split = 0.8)") -> str:
    return HEAD.format(model=model, data=data, body=body)


def write(tmp_path: Path, text: str, name: str = "s.reg") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 1 with a located error (no traceback); return stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert re.search(r"\.reg:\d+:\d+: error: ", err), err
    assert "Traceback" not in err and "internal error" not in err
    return err


def plan_error(text: str) -> RegspecError:
    with pytest.raises(RegspecError) as info:
        plan_text(regspec.load(text))
    return info.value


# ---------------------------------------------------------------- item 10: one real batch
def test_model_input_size_mismatch_is_located_at_model(tmp_path, capsys):
    # the language reference's example shape: `mlp(in = 40)` on digits (64 features)
    p = write(tmp_path, spec(model="mlp(in = 40, hidden = [16], out = 10)"))
    err = cli_error(capsys, ["plan", str(p)])
    assert f"{p}:3:" in err and "cannot run on the data" in err and "64 features" in err
    err = cli_error(capsys, ["compile", str(p), "-o", str(tmp_path / "t.py")])
    assert not (tmp_path / "t.py").exists()


def test_too_few_outputs_for_the_classes():
    e = plan_error(spec(model="mlp(hidden = [16], out = 3)"))
    assert e.first.span.line == 3 and "10 classes" in e.first.message


def test_token_model_with_act_term_gets_integer_batches():
    # the old plan fed float inputs to nn.Embedding; the probe uses the data's own batch
    out = plan_text(regspec.load(spec('  regularize l1(act("act")) * 1e-4',
                                      model='"train_plan_fixtures:TokenNet"()',
                                      data='"train_plan_fixtures:tokens"(task = "classification", n_outputs = 2)')))
    assert "act [B, 8]" in out


def test_builtin_transformer_on_token_ids_plans():
    out = plan_text(regspec.load(spec('  regularize l1(act("blocks.*.ff.1")) * 1e-4',
                                      model="transformer(vocab = 50, d_model = 8, heads = 2, layers = 1, seq_len = 6)",
                                      data='"train_plan_fixtures:tokens"(task = "classification", n_outputs = 2)')))
    assert "blocks.0.ff.1 [B, 6, 32]" in out


# ---------------------------------------------------------------- item 4: silent no-ops
def test_act_term_on_module_never_called_is_an_error():
    e = plan_error(spec('  regularize l1(act("attn.out_proj")) * 1e-4', model='"train_plan_fixtures:Attention"()'))
    assert e.first.span.line == 7
    assert "never called as a module" in e.first.message and "attn.out_proj" in e.first.message


def test_act_term_on_called_module_is_fine():
    out = plan_text(regspec.load(spec('  regularize l1(act("attn")) * 1e-4', model='"train_plan_fixtures:Attention"()')))
    assert "attn [B, 4, 8]" in out


def test_rewrite_that_misses_functional_calls_is_an_error():
    e = plan_error(spec("  rewrite GELU -> ReLU", model='"train_plan_fixtures:BranchyGelu"()'))
    assert e.first.span.line == 7 and "did not take effect" in e.first.message
    assert any("does not trace" in n for n in e.first.notes)


def test_rewrite_that_takes_effect_passes():
    out = plan_text(regspec.load(spec("  rewrite GELU -> ReLU", model='mlp(hidden = [16], act = "gelu")')))
    assert "replaced 1" in out
