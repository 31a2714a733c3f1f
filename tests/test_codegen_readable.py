"""`regspec compile` writes a trainer a PyTorch user could have written: for every training spec
in specs/ it parses, keeps lines under 100 characters, holds no absolute path of the machine
that compiled it, spells out the model class and a penalty function per regularizer with the
catalogue atom's torch expression, and names each prox kernel with its step rule. Run for one
epoch in float64 it trains to the weights and metrics of the runtime's own implementation of
the same spec (``regspec.attach``: Penalty/ProxEngine, written independently of the file)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

import regspec
from regspec.compiler.catalogue import ATOMS
from regspec.train_api import compile_trainer, load_trainer

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TRAIN_SPECS = sorted(p.name for p in SPECS.glob("train_*.reg"))


@pytest.fixture(scope="module")
def trainers(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    out = {}
    for name in TRAIN_SPECS:
        path = tmp_path_factory.mktemp(name.removesuffix(".reg")) / "trainer.py"
        out[name] = (path, compile_trainer(str(SPECS / name), out=path))
    return out


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("name", TRAIN_SPECS)
def test_trainer_reads_like_pytorch(trainers, name):
    path, src = trainers[name]
    tree = ast.parse(src)
    long = [ln for ln in src.splitlines() if len(ln) >= 100]
    assert not long, long[:3]
    for folder in (ROOT, path.parent, Path.home()):
        assert str(folder) not in src, f"absolute path {folder} in the trainer"
    assert not re.search(r"['\"]/(work|tmp|home|Users)/", src)
    fns = _functions(tree)
    # the loop, the loss and the optimizer step are in the file, not behind a runtime object
    assert {"main", "task_loss", "loss_terms", "make_model", "make_optimizer", "term_weights"} <= set(fns)
    loop = ast.unparse(fns["main"])
    # (a SAM step passes the closure of its second pass: optimizer.step(closure))
    assert "loss.backward()" in loop and "optimizer.step(" in loop and "task_loss(output, y)" in loop
    assert "Regularizer" not in src and "Penalty(" not in src and "ProxGroup(" not in src
    # the built-in model's architecture is a class in the file
    classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    assert "Net" in classes and "nn.Module" in src


def test_each_regularizer_has_its_penalty_function(trainers):
    """A statement whose atom has a torch source gets a function returning that expression; a
    prox names its kernel and its step rule; a projection says it is one."""
    seen_atoms = set()
    for name, (_, src) in trainers.items():
        plan = regspec.train_api.plan(str(SPECS / name))
        fns = _functions(ast.parse(src))
        for term in plan.terms:
            label = f"line {term.line}: {term.text}"
            assert repr(label) in src or label.replace('"', '\\"') in src or f"# {label}" in src, label
            if term.lowering == "projection":
                assert f"apply_prox_group('{term.kernel}'" in src or f"'{term.kernel}',\n" in src
                continue
            from regspec.backends.torch.codegen import _atom_of

            atom = _atom_of(term)
            source = (atom.torch_source_for({**atom.static, **{k: v for k, v in term.options.items() if k in atom.static}})
                      if atom is not None else None)
            if source is not None and term.name != "weight_decay":
                fn = next(f for f in fns.values() if f.name.startswith(atom.name))
                assert f"return {source}" in ast.get_source_segment(src, fn)
                seen_atoms.add(atom.name)
            if term.lowering == "prox":
                assert f"# kernel `{term.kernel}`:" in src and "# step rule: tau" in src
    assert {"norm1", "nuclear_norm", "group_l2"} <= seen_atoms


def test_generated_model_class_equals_the_builtin():
    """Same names, same initial weights under the same seed, same outputs, for every built-in."""
    from regspec.backends.torch.codegen_models import model_class
    from regspec.backends.torch.train.models import build_model

    configs = [("linear", {"in": 10, "out": 3, "bias": False}),
               ("mlp", {"in": 12, "hidden": [8, 6], "out": 4, "act": "gelu", "dropout": 0.1}),
               ("mlp", {"in": 12, "hidden": 5, "out": 2, "act": "fatrelu", "bias": False}),
               ("cnn", {"in_channels": 1, "image": 8, "channels": [4, 6], "out": 3, "flat_input": True}),
               ("transformer", {"in": 8, "d_model": 16, "heads": 2, "layers": 2, "out": 5, "seq_len": 8}),
               ("transformer", {"vocab": 11, "d_model": 8, "heads": 2, "layers": 1, "out": 3, "seq_len": 4,
                                "ff": 12, "act": "relu"})]
    for name, kw in configs:
        lines, imports = model_class(name, kw)
        head = ["import math", "import torch", "from torch import nn"]
        head += [f"from {m} import {n}" for m, n in imports if n]
        scope: dict = {}
        exec("\n".join(head + lines), scope)  # noqa: S102 - the generated source under test
        torch.manual_seed(3)
        ours = scope["Net"]()
        torch.manual_seed(3)
        ref = build_model(name, **kw)
        a, b = ours.state_dict(), ref.state_dict()
        assert list(a) == list(b), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
        x = torch.randint(0, 11, (3, 4)) if "vocab" in kw else torch.randn(3, 64 if name == "cnn" else
                                                                          kw.get("in", 8) * (8 if name == "transformer" else 1))
        ours.eval(), ref.eval()
        assert torch.equal(ours(x), ref(x)), name


def test_paths_are_relative_to_the_trainer(tmp_path):
    """Beside the spec (a run folder under the project), the spec's folder is a relative path;
    far from it, `.` and --spec-dir (which `regspec train` passes)."""
    near = compile_trainer(str(SPECS / "train_lasso.reg"), out=ROOT / "runs" / "x" / "trainer.py",
                           overwrite=True)  # this test's own file, from any earlier version
    assert "SPEC_DIR = '../../specs'" in near and "SPEC = '../../specs/train_lasso.reg'" in near
    far = compile_trainer(str(SPECS / "train_lasso.reg"), out=tmp_path / "t.py")
    assert str(ROOT) not in far
    spec_dir = re.search(r"^SPEC_DIR = '([^']*)'", far, re.M).group(1)
    # `.` (given by --spec-dir at run time) when the two folders share nothing below the root,
    # else a relative path that leads from the trainer to the spec's folder
    assert spec_dir == "." or (not spec_dir.startswith("/")
                               and (tmp_path / spec_dir).resolve() == SPECS.resolve())


# ---------------------------------------------------------------- same run as the runtime's
def _reference(spec: Path, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The same spec trained by regspec.attach (the runtime's Penalty / ProxEngine) in a plain loop
    in float64: final weights and validation metrics."""
    from regspec.backends.torch.train import runtime as rt
    from regspec.backends.torch.train.assemble import complete_model_kwargs, make_data, resolve_loss
    from regspec.backends.torch.train.losses import build_loss
    from regspec.backends.torch.train.models import build_model
    from regspec.backends.torch.train.optim import build_optimizer

    plan = regspec.train_api.plan(str(spec))
    torch.manual_seed(plan.seed)
    data = make_data(plan)
    kwargs, _ = complete_model_kwargs(plan, data)
    model = build_model(plan.model.name, **kwargs)
    opt = build_optimizer(plan.optimizer.name, model.parameters(), **plan.optimizer.kwargs)
    spe = len(data.epoch_loader(0))
    # the trainer's order: the model as declared (init and reparametrizations applied in float32),
    # then cast; the cast keeps the parameter objects, so the optimizer and the hooks stay valid
    reg = regspec.attach(str(spec), model, opt, steps_per_epoch=spe, epochs=epochs)
    model.to(torch.float64)
    net = reg.module
    for epoch in range(epochs):
        reg.start_epoch(epoch)
        net.train()
        for x, y in data.epoch_loader(epoch):
            x, y = rt.to_device(x, y, torch.device("cpu"), torch.float64)
            loss = reg.loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()

            def closure(x=x, y=y):        # SAM's second pass (optimizer sam(...)), at the perturbed weights
                again = reg.loss(net(x), y)
                again.backward()
                return again

            opt.step(closure if plan.sam is not None else None)  # the hooks apply the prox steps
    # the run's metrics are the last epoch's, measured before the final projections
    val = rt.evaluate(net, data.val, build_loss(resolve_loss(plan, data)), torch.device("cpu"), torch.float64,
                      data.task)
    reg.finalize()
    from regspec.backends.torch.train.reparam import merged_state_dict

    # model.pt holds the weights as declared (reparametrizations folded in)
    return {k: v.detach().clone() for k, v in merged_state_dict(model).items()}, val


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TRAIN_SPECS if n != "train_lasso.reg"])
def test_trainer_trains_like_the_runtime(trainers, tmp_path, name):
    path, _ = trainers[name]
    mod = load_trainer(path)
    out = tmp_path / "run"
    assert mod.main(["--epochs", "1", "--out", str(out), "--quiet", "--dtype", "float64",
                     "--spec-dir", str(SPECS)]) == 0
    trained = torch.load(out / "model.pt", weights_only=True)
    summary = json.loads((out / "summary.json").read_text())
    weights, val = _reference(SPECS / name, 1)
    assert trained.keys() == weights.keys()
    # float64 with other summation orders (fused kernels, the runtime's custom l1 backward):
    # differences start at ~1e-16 and grow over ~20 Adam/SGD steps; 1e-9 leaves 5 decades of room
    # and is far below any effect of a wrong term (those move weights by >= 1e-4 here)
    for k, v in weights.items():
        scale = float(v.abs().max()) or 1.0
        assert torch.allclose(trained[k], v, rtol=0, atol=1e-9 * scale), (k, float((trained[k] - v).abs().max()))
    for k, v in val.items():
        assert summary["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


# ---------------------------------------------------------------- expressions of atoms
EXPRESSIONS = """
train ex {
  model mlp(in = 64, hidden = [16, 16], out = 10, act = "relu")
  data digits(split = 0.8)
  loss cross_entropy
  optimizer sgd(lr = 0.05, momentum = 0.9)
  epochs 1
  batch 128
  seed 0

  regularize sum_squares(param("layers.1.weight") - param("layers.1.weight").T) * 1e-3
  regularize huber(param("head.weight"), M = 0.1) * 1e-3
  regularize log_sum_exp(output) * 1e-3
  regularize norm1(act("acts.0") - 0.1) * 1e-4
  regularize pos(norm2(param("head.weight")) - 1) * 1e-2
}
"""


@pytest.fixture(scope="module")
def expression_spec(tmp_path_factory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("expressions")
    spec = folder / "ex.reg"
    spec.write_text(EXPRESSIONS)
    return spec, folder / "trainer.py", compile_trainer(str(spec), out=folder / "trainer.py")


def test_expressions_compose_the_atoms_sources(expression_spec):
    _, _, src = expression_spec
    assert [ln for ln in src.splitlines() if len(ln) >= 100] == []
    assert "return sum_squares(x0 - transpose(x0))" in src          # an atom used twice: a function
    assert "return (x * x).sum()" in src and "return x.T if x.dim() == 2 else x" in src
    assert "return huber(x0, M=0.1)" in src
    assert "return torch.logsumexp(x0.reshape(-1), dim=0)" in src   # inlined
    assert "return (x0 - 0.1).abs().sum()" in src
    assert "return (x0.square().sum().sqrt() - 1.0).clamp_min(0)" in src
    assert "per_sample_mean(line13_term, [output], [True])" in src  # batch terms: per sample, then mean
    assert "ATOMS[" not in src                                      # every atom here has a source


@pytest.mark.slow
def test_expressions_train_like_the_runtime(expression_spec, tmp_path):
    spec, path, _ = expression_spec
    out = tmp_path / "run"
    assert load_trainer(path).main(["--out", str(out), "--quiet", "--dtype", "float64"]) == 0
    trained = torch.load(out / "model.pt", weights_only=True)
    weights, val = _reference(spec, 1)
    for k, v in weights.items():   # the same tolerance as above, for the same reason
        assert torch.allclose(trained[k], v, rtol=0, atol=1e-9 * float(v.abs().max())), k
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["val_loss"] == pytest.approx(val["val_loss"], rel=1e-9)


def test_a_user_model_is_named_by_its_import_path(tmp_path):
    """The user's model is their code: the trainer names its import path (and where it lives,
    relative), it does not copy the class."""
    text = EXPRESSIONS.replace('mlp(in = 64, hidden = [16, 16], out = 10, act = "relu")',
                               '"train_plan_fixtures:GPTLikeMLP"()')
    text = "\n".join(ln for ln in text.splitlines() if "act(" not in ln and "layers.1" not in ln)
    spec = tmp_path / "user.reg"
    spec.write_text(text)
    src = compile_trainer(str(spec), out=tmp_path / "t.py")
    assert "build_model('train_plan_fixtures:GPTLikeMLP')" in src and "class Net" not in src
    assert 'User code it runs: model \\"train_plan_fixtures:GPTLikeMLP\\" runs' in src
    assert str(ROOT) not in src and [ln for ln in src.splitlines() if len(ln) >= 100] == []
    ast.parse(src)
