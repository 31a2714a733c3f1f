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


# ---------------------------------------------------------------- item 12: check validates train blocks
@pytest.mark.parametrize("stmt, col, word", [
    ("optimizer adamm(lr = 1e-3)", 13, "adam"),
    ('constrain param("head.weight") in spectral_bal(1.0)', 37, "spectral_ball"),
    ("loss crossentropy", 8, "cross_entropy"),
    ("model mlpp(hidden = [8])", 9, "mlp"),
    ("data digit", 8, "digits"),
    ("rewrite GELU -> fatrelu(thresh = 0.1)", 27, "threshold"),
    ("model mlp(hiden = [8])", 13, "hidden"),
    ("data digits(imges = true)", 15, "images"),
])
def test_check_validates_train_block_names(tmp_path, capsys, stmt, col, word):
    p = write(tmp_path, f"train t {{\n  {stmt}\n}}\n")
    err = cli_error(capsys, ["check", str(p)])
    assert f"{p}:2:{col}: error" in err and f"`{word}`" in err  # located, with a suggestion


def test_check_imports_no_torch_and_accepts_attach_blocks(tmp_path):
    p = write(tmp_path, 'train t {\n  optimizer adamw(lr = 1e-3)\n  regularize l1(param("**.weight")) * 1e-4\n}\n')
    code = ("import sys; from regspec.cli import main; rc = main(['check', %r]); "
            "print(rc, 'torch' in sys.modules)" % str(p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 False"
    assert "1 term(s): 0 in the loss, 1 prox" in out


def test_torch_tables_implement_the_declared_names():
    from regspec.backends.torch.train import data, losses, models, optim
    from regspec.compiler import train_plan as tp

    assert set(models.MODELS) == set(tp.MODEL_NAMES) and set(models.ACTIVATIONS) == set(tp.ACTIVATION_OPTIONS)
    assert set(data.DATASETS) == set(tp.DATASET_NAMES) and set(optim.OPTIMIZERS) == set(tp.OPTIMIZER_NAMES)
    assert set(losses.LOSSES) == set(tp.LOSS_NAMES) and set(losses.LOSS_OPS) == set(tp.LOSS_FUNCTIONS)
    import inspect

    for name, ctor in models.MODELS.items():  # the declared options are the constructors' arguments
        assert tuple(inspect.signature(ctor).parameters) == tp.MODEL_OPTIONS[name]
    with pytest.raises(RuntimeError):
        tp.same_names({"a": 1}, ("a", "b"), "things")


# ---------------------------------------------------------------- item 15: spec text in the trainer
HOSTILE = '''
train t {
  model "train_plan_fixtures:AnyKeywords"(None = 1, class = 2, note = "\\"\\"\\" + x + \'\'\'\\\\", big = 1e300)
  data digits(split = 0.8)
  epochs 1
  regularize l1(param("head.weight")  # """ + __import__("os").system("echo pwned") + """ \\
  ) * 1e-4
}
'''


def _trainer_ok(source: str) -> pyast.Module:
    tree = pyast.parse(source)
    compile(source, "trainer.py", "exec")
    return tree


def test_hostile_spec_text_stays_inert_in_the_trainer():
    source = compile_trainer(regspec.load(HOSTILE), out=None)
    tree = _trainer_ok(source)
    doc = pyast.get_docstring(tree)
    # the comment arrives verbatim as docstring text, not as code
    assert '# """ + __import__("os").system("echo pwned") + """' in doc
    # and nothing in the code calls what the comment spelled
    names = {n.func.id for n in pyast.walk(tree) if isinstance(n, pyast.Call) and isinstance(n.func, pyast.Name)}
    assert "__import__" not in names
    assert "**{'None': 1, 'class': 2," in source


def test_non_finite_values_never_reach_the_trainer():
    from regspec.backends.torch.codegen import _lit

    assert _lit(float("inf")) == "float('inf')" and eval(_lit(float("-inf"))) == float("-inf")
    e = plan_error(spec('  regularize l1(param("head.weight")) * (1e300 * 1e300)'))  # inf by arithmetic
    assert e.first.span.line == 7 and "finite" in e.first.message


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_hostile_strings_in_comments_and_arguments(seed, tmp_path):
    import random

    rng = random.Random(seed)
    pieces = ['"""', "'''", "\\", '"', "'", "#", "\u2028", "\x0c", "\t", "{", "}", "\\n", "\\x00", "inf", "None",
              "):", "import os", "\u00e9", "\\u2028"]
    text = "".join(rng.choice(pieces) for _ in range(rng.randint(3, 12)))
    comment = text.replace("\n", " ")
    body = f'  regularize l1(param("head.weight")  # {comment}\n  ) * 1e-4'
    esc = text.replace("\\", "\\\\").replace('"', '\\"')
    model = f'"train_plan_fixtures:AnyKeywords"(note = "{esc}")'
    try:
        s = regspec.load(spec(body, model=model))
    except RegspecError:
        pytest.skip("the spec lexer refuses this string (fine: it never reaches the generator)")
    source = compile_trainer(s, out=None, )
    tree = _trainer_ok(source)
    from regspec.backends.torch.codegen import _one_line

    if "\u2028" not in comment:  # a line separator ends the comment in the spec too
        assert _one_line(comment.strip()) in pyast.get_docstring(tree)
    call = [n for n in pyast.walk(tree) if isinstance(n, pyast.Call) and getattr(n.func, "id", "") == "build_model"][0]
    note = pyast.literal_eval(call.keywords[0].value)
    assert note == s.ast.trains[0].body[0].model.kwargs[0].value.value


# ---------------------------------------------------------------- item 18: bad training settings
@pytest.mark.parametrize("stmt, model, data, what", [
    ("seed 4294967296", None, None, "`seed` must be at most 4294967295"),
    ("steps 1e300 * 1e10", None, None, "`steps` must be a finite integer"),
    ('constrain param("head.weight") in l2_ball(1.0) every 1e300 * 1e300 steps', None, None, "`every` must be a finite"),
    ("steps 1e309", None, None, "1e309"),
    ("steps 1e300", None, None, "`steps` must be at most 1000000000000, got 1e+300"),
    ("rewrite GELU -> fatrelu(thresh = 0.1)", None, None, "has no option `thresh`"),
    ("optimizer adamw(lr = -1)", None, None, "`lr` must be > 0"),
    ("", "mlp(hidden = [-1])", None, "`hidden` must be a list of positive integers"),
    ("", None, "digits(split = 1e-320)", "split"),
    ("", None, "digits(split = 0.0001)", "leaves 0 training"),
    ("", None, "digits(split = \"half\")", "a number in (0, 1)"),
])
def test_bad_training_settings_are_located(tmp_path, capsys, stmt, model, data, what):
    text = spec(f"  {stmt}", model=model or "mlp(hidden = [16])", data=data or "digits(split = 0.8)")
    p = write(tmp_path, text)
    err = cli_error(capsys, ["plan", str(p)])
    assert what in err
    line = 7 if stmt else (3 if model else 4)
    assert f"{p}:{line}:" in err


# ---------------------------------------------------------------- item 17: regex selectors are bounded
@pytest.mark.parametrize("pattern", [r"(\\w+)*x", r"(a+)+b", r"([a-z0-9_]+\\.?)+$", r"(a|aa)*c", r"(.*)*",
                                     r".*.*.*.*x", r"((ab)*)*c"])
def test_backtracking_regex_selectors_are_refused(tmp_path, capsys, pattern):
    p = write(tmp_path, f'train t {{\n  regularize l1(param("re:{pattern}")) * 1e-4\n}}\n')
    err = cli_error(capsys, ["check", str(p)])  # refused statically, before any name is matched
    assert f"{p}:2:23: error: regular expression" in err


def test_fenced_regex_selectors_still_match():
    from torch import nn

    from regspec.backends.torch.train.selectors import select_params

    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 2)))
    names = [n for n, _ in select_params(model, r"re:(?:\w+\.)*weight")]
    assert names == ["0.weight", "1.0.weight"]
    with pytest.raises(RegspecError, match="exponential"):
        select_params(model, r"re:(\w+)*x")  # the attach path refuses it too


def test_regex_selector_on_long_names_is_bounded():
    from regspec.compiler.train_plan import check_name_regex

    # accepted patterns are linear on failing names (a refused one took minutes at 24 characters)
    rx = check_name_regex(r"(?:\w+\.)*weight")
    assert rx.fullmatch("a" * 24 + "!") is None and rx.fullmatch("a_" * 500 + "!") is None
    assert rx.fullmatch("a." * 500 + "weight") is not None


# ---------------------------------------------------------------- item 16: what an import path may run
@pytest.mark.parametrize("target", ["os:system", "subprocess:run", "posix:system", "shutil:rmtree"])
def test_import_paths_into_python_itself_are_refused(tmp_path, capsys, target):
    marker = tmp_path / "pwned"
    p = write(tmp_path, spec(model=f'"{target}"(command = "touch {marker}")'))
    for cmd in (["plan", str(p)], ["compile", str(p), "-o", str(tmp_path / "t.py")]):
        err = cli_error(capsys, cmd)
        assert f"{p}:3:9: error: the user model `{target.split(':')[0]}` is not your code" in err
    assert not marker.exists() and not (tmp_path / "t.py").exists()


def test_installed_packages_need_allow_import(tmp_path, capsys, monkeypatch):
    from regspec.backends.torch.train import models

    monkeypatch.setattr(models, "_ALLOWED", set())  # --allow-import lasts for the process: not beyond this test
    p = write(tmp_path, spec(model='"torch.nn:Identity"()'))
    err = cli_error(capsys, ["plan", str(p)])
    assert "is an installed package" in err and "--allow-import torch" in err
    assert main(["plan", str(p), "--allow-import", "torch"]) == 0
    assert 'user code  model "torch.nn:Identity" runs' in capsys.readouterr().out


def test_user_code_beside_the_spec_runs_and_plan_names_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.head = torch.nn.Linear(64, 10)\n\n    def forward(self, x):\n        return self.head(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(Path("/"))  # the spec's folder alone makes it the user's code
    p = write(tmp_path, spec(model='"mynets:Net"()'))
    assert main(["plan", str(p)]) == 0
    assert f'user code  model "mynets:Net" runs {tmp_path.resolve() / "mynets.py"}' in capsys.readouterr().out
    source = compile_trainer(str(p), out=None)
    assert "User code it runs: model \\\"mynets:Net\\\" runs" in source


# ---------------------------------------------------------------- item 5: storage layouts
GPT = '"train_plan_fixtures:GPTLikeMLP"()'


def _assembled(text: str):
    from regspec.backends.torch.train.assemble import assemble

    return assemble(plan_train(regspec.load(text).ast), report=False)


def test_conv1d_row_groups_follow_outputs_not_storage():
    asm = _assembled(spec('  regularize group_l2(param("c_fc.weight"), groups = rows) * 1e-3', model=GPT))
    tb = asm.binding.terms[0]
    assert tb.group.hyper["groups"] == "cols"  # storage (in, out) = (64, 32): outputs are columns
    from regspec.backends.torch.train.regularizer import group_norms

    w = dict(asm.binding.model.named_parameters())["c_fc.weight"].detach()
    norms, sizes = group_norms(w, tb.group.hyper["groups"])
    # one group per output unit (nf = 32), each over the 64 inputs: the norms of W's columns
    assert norms.shape == (32,) and float(sizes.max()) == 64.0
    torch.testing.assert_close(norms, torch.linalg.vector_norm(w, dim=0))
    text = plan_text(regspec.load(spec('  regularize group_l2(param("c_fc.weight"), groups = rows) * 1e-3',
                                       model=GPT)))
    assert "stored (in, out)" in text and "32 groups (rows, i.e. storage cols) of 64 entries" in text
    source = compile_trainer(regspec.load(spec('  regularize group_l2(param("c_fc.weight"), groups = rows) * 1e-3',
                                               model=GPT)), out=None)
    assert "groups='cols'" in source


def test_conv1d_nm_sparse_is_refused_located():
    e = plan_error(spec('  constrain param("c_fc.weight") in nm_sparse(2, 4)', model=GPT))
    assert e.first.span.line == 7 and "stored (in, out)" in e.first.message


def test_conv1d_orientation_free_terms_pass():
    asm = _assembled(spec('  constrain param("c_fc.weight") in spectral_ball(1.0)\n'
                          '  regularize nuclear(param("c_fc.weight")) * 1e-4', model=GPT))
    assert [tb.names for tb in asm.binding.terms] == [["c_fc.weight"], ["c_fc.weight"]]
    assert "as a 32 x 64 matrix" in "\n".join(asm.binding.terms[1].notes)


def test_mixed_layouts_in_one_grouped_term_are_refused():
    e = plan_error(spec('  regularize group_l2(param("**.weight")) * 1e-3', model=GPT))
    assert "both layouts" in e.first.message


# ---------------------------------------------------------------- item 7 (plan): gates that never open
def test_gates_that_never_open_warn_at_plan_and_check(tmp_path, capsys):
    p = write(tmp_path, spec('  constrain param("head.weight") in l2_ball(1.0) from epoch 5\n'
                             '  constrain param("layers.0.weight") in l2_ball(1.0) every 100 steps\n'
                             '  constrain param("layers.0.bias") in l2_ball(1.0) every 5 steps'))
    assert main(["plan", str(p)]) == 0
    err = capsys.readouterr().err
    assert f"{p}:7:3: warning: this constrain never applies" in err and "`from epoch 5`" in err
    assert f"{p}:8:3: warning:" in err and "(1 epoch(s), 23 steps)" in err  # 1437 rows / batch 64
    assert f"{p}:9:" not in err
    assert main(["check", str(p)]) == 0  # no model bound: the epoch rule alone, still said
    assert "warning at line 7: this constrain never applies" in capsys.readouterr().out


def test_gate_warning_follows_the_epochs_of_the_run():
    from regspec.backends.torch.train.assemble import assemble

    p = plan_train(regspec.load(spec('  constrain param("head.weight") in l2_ball(1.0) from epoch 5')).ast)
    assert len(assemble(p, report=False).warnings) == 1
    assert assemble(p, epochs=6, report=False).warnings == []


# ---------------------------------------------------------------- item 4: projections that conflict
def test_conflicting_projections_on_one_tensor_are_an_error():
    e = plan_error(spec('  constrain param("layers.0.weight") in spectral_ball(0.5)\n'
                        '  constrain param("layers.0.weight") in nm_sparse(2, 4)'))
    assert e.first.span.line == 8 and "spectral_ball (line 7)" in e.first.message


def test_check_catches_conflicts_on_the_same_selector(tmp_path, capsys):
    p = write(tmp_path, 'train t {\n  constrain param("w") in spectral_ball(0.5)\n'
                        '  constrain param("w") in nm_sparse(2, 4)\n  constrain param("w") in nonneg until epoch 0.5\n}\n')
    err = cli_error(capsys, ["check", str(p)])
    assert f"{p}:3:3: error: param(\"w\") is projected onto spectral_ball (line 2)" in err


def test_box_without_zero_is_not_a_shrinking_set():
    e = plan_error(spec('  constrain param("head.weight") in box(0.1, 1.0)\n'
                        '  constrain param("head.weight") in l2_ball(1.0)'))
    assert "box (line 7)" in e.first.message


def test_compatible_or_time_separated_projections_pass():
    asm = _assembled(spec('  constrain param("layers.0.weight") in nonneg\n'
                          '  constrain param("layers.0.weight") in l2_ball(2.0)\n'
                          '  constrain param("head.weight") in spectral_ball(0.5) until epoch 0.5\n'
                          '  constrain param("head.weight") in nm_sparse(2, 4)\n'
                          '  constrain param("layers.0.bias") in low_rank(1)\n'
                          '  constrain param("layers.0.bias") in spectral_ball(1.0)'))
    assert len(asm.binding.terms) == 6


# the families the check trusts, verified on the kernels: the second projection keeps the first set
_SETS = {
    "nonneg": (lambda x: x.clamp_min(0), lambda x: bool((x >= 0).all())),
    "l2_ball": (lambda x: x * min(1.0, 0.7 / float(x.norm())), lambda x: float(x.norm()) <= 0.7 * (1 + 1e-9)),
    "l1_ball": (None, lambda x: float(x.abs().sum()) <= 2.0 * (1 + 1e-9)),
    "top_k": (None, lambda x: int((x != 0).sum()) <= 20),
    "nm_sparse": (None, lambda x: bool(((x.reshape(8, 2, 4) != 0).sum(-1) <= 2).all())),
    "spectral_ball": (None, lambda x: float(torch.linalg.matrix_norm(x, 2)) <= 0.5 * (1 + 1e-9)),
    "low_rank": (None, lambda x: int((torch.linalg.svdvals(x) > 1e-9).sum()) <= 2),
}


def _project(name: str, x: torch.Tensor) -> torch.Tensor:
    from regspec.backends.torch import projections as P

    return {"nonneg": lambda: P.proj_nonneg(x), "l2_ball": lambda: P.proj_l2_ball(x, radius=0.7),
            "l1_ball": lambda: P.proj_l1_ball(x, radius=2.0), "top_k": lambda: P.proj_top_k(x, k=20),
            "nm_sparse": lambda: P.proj_nm_sparse(x, n=2, m=4),
            "spectral_ball": lambda: P.proj_spectral_ball(x, radius=0.5),
            "low_rank": lambda: P.proj_low_rank(x, k=2)}[name]()


@pytest.mark.parametrize("family", ["entries", "spectrum"])
def test_shrinking_families_keep_both_sets(family):
    from regspec.compiler.train_plan import ENTRY_SHRINKING, SPECTRUM_SHRINKING

    members = [s for s in (ENTRY_SHRINKING if family == "entries" else SPECTRUM_SHRINKING) if s in _SETS]
    g = torch.Generator().manual_seed(0)
    for a in members:
        for b in members:
            for _ in range(3):
                x = torch.randn(8, 8, generator=g, dtype=torch.float64)
                y = _project(b, _project(a, x))
                assert _SETS[a][1](y) and _SETS[b][1](y), (a, b)


def test_the_conflicting_pair_really_conflicts():
    # spectral_ball(0.5) then 2:4 (the case): the end state leaves the spectral ball
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 8, generator=g, dtype=torch.float64)
    y = _project("nm_sparse", _project("spectral_ball", x))
    assert not _SETS["spectral_ball"][1](y)


@pytest.mark.parametrize("model, act, shape", [
    ("TokenEncoder", "encoder.layers.*.linear1", "encoder.layers.0.linear1 [B, 6, 32]"),
    ("TokenLSTM", "act", "act [B, 8]"),
])
def test_token_models_with_act_terms_plan(model, act, shape):
    out = plan_text(regspec.load(spec(f'  regularize l1(act("{act}")) * 1e-4', model=f'"train_plan_fixtures:{model}"()',
                                      data='"train_plan_fixtures:tokens"(task = "classification", n_outputs = 2)')))
    assert shape in out


def test_rewrite_of_an_activation_without_known_functional_form_is_verified_too():
    # Softplus modules are swapped, F.softplus in the traced graph is not: refused, located
    e = plan_error(spec("  rewrite Softplus -> ReLU", model='"train_plan_fixtures:SoftplusTwice"()'))
    assert e.first.span.line == 7 and "still calls `softplus`" in e.first.message


def test_conv1d_group_lasso_trains_zero_outputs_not_inputs(tmp_path):
    # end to end: the prox zeroes whole output units (storage columns of the (in, out) weight)
    from regspec.train_api import train

    text = spec('  optimizer sgd(lr = 0.1)\n  regularize group_l2(param("c_fc.weight"), groups = rows) * 0.03',
                model=GPT).replace("epochs 1", "epochs 2")
    train(regspec.load(text), out=tmp_path / "run", quiet=True)
    w = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["c_fc.weight"]
    zero_outputs = int((w.abs().sum(0) == 0).sum())
    assert 1 <= zero_outputs < 32 and int((w.abs().sum(1) == 0).sum()) == 0


@pytest.mark.parametrize("data, what", [
    ("synthetic(n = 1e12)", "more than generated data may hold"),
    ('synthetic(n = "abc")', "rejected its options"),
])
def test_bad_synthetic_data_options_are_located(data, what):
    e = plan_error(spec(data=data))
    assert e.first.span.line == 4 and what in e.first.message


def test_problem_data_sources_in_train_blocks_fail_located():
    e = plan_error(spec(model="linear(in = 10, out = 1)", data="dataset(1e20, center = true)"))
    assert e.first.span is not None and e.first.span.line == 4 and "takes a name" in e.first.message
