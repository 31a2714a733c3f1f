"""The generated catalogue reference: current, and every entry it documents is accepted as documented.

For each entry a tiny spec is generated from the documented usage, with every documented keyword
written out at its documented default (keywords without a default get a sample value), and run
through the same front end `regspec check` / `regspec plan` use.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import regspec
from regspec import docs_gen
from regspec.compiler.build import build_problem
from regspec.compiler.passes.resolve import resolve_names

ROOT = Path(__file__).resolve().parents[1]

# values for keywords the catalogue documents without a default (names declared in _PROBLEM)
_SAMPLE = {"lo": "-1", "hi": "1", "a": "u", "b": "u", "k": "2", "n": "2", "m": "4", "r": "1.0", "groups": "rows",
           "pairs": "same(L)", "labels": "L", "P": "I", "shape": "[16]", "w": "v", "axis": "0", "M": "1.0",
           "p": "v"}
_PROBLEM = """problem p {{
  data L = repeat([0, 1], 2)
  data o = ones(4)
  let u = o / 4
  data v = ones(4)
  data I = eye(4)
  data A = randn(4, 4, seed = 0)
  var x[4, 4]
  var y[4, 4]
  {body}
}}
"""


def _kw_text(keywords: dict[str, str | None]) -> list[str]:
    return [f"{k} = {v if v is not None else _SAMPLE[k]}" for k, v in keywords.items()]


def _resolve(body: str) -> None:
    spec = regspec.load(_PROBLEM.format(body=body))
    resolve_names(build_problem(spec.ast, spec.ast.problems[0]))


def test_generated_reference_is_current() -> None:
    assert (ROOT / "docs" / "catalogue.md").read_text() == docs_gen.render_markdown(), \
        "docs/catalogue.md is stale: run .venv/bin/python -m regspec.docs_gen --write"


def test_every_kind_is_documented_and_listed() -> None:
    text = (ROOT / "docs" / "catalogue.md").read_text()
    from regspec.compiler.catalogue import ATOMS, SETS
    from regspec.compiler.data import SOURCES

    for name in [*ATOMS, *SETS, *SOURCES]:
        assert f"| `{name}` |" in text, name
    for kind in docs_gen.KINDS:
        assert docs_gen.entries(kind), kind


@pytest.mark.parametrize("entry", docs_gen.entries("atoms"), ids=lambda e: e.name)
def test_atom_accepted_with_documented_keywords(entry: docs_gen.Entry) -> None:
    from regspec.compiler.catalogue import ATOMS

    atom = ATOMS[entry.name]
    args = ["A" if atom.constant_only else "x"] + ["y"] * (atom.nargs[0] - 1)
    if entry.name == "same":
        args = ["L"]
    if entry.name == "compare":
        pytest.skip("compare(...) is the atom behind `a == b` masks, written with the operator")
    call = f"{entry.name}({', '.join(args + _kw_text(entry.keywords))})"
    _resolve(f"let t = {call}\n  minimize sum(x)")


@pytest.mark.parametrize("entry", docs_gen.entries("sets"), ids=lambda e: e.name)
def test_set_accepted_with_documented_keywords(entry: docs_gen.Entry) -> None:
    kws = _kw_text(entry.keywords)
    _resolve(f"var z[4, 4] in {entry.name}{'(' + ', '.join(kws) + ')' if kws else ''}\n  minimize sum(x)")


def _source_call(entry: docs_gen.Entry, tmp: Path) -> str:
    np.save(tmp / "a.npy", np.eye(3))
    np.savez(tmp / "b.npz", X=np.ones((2, 2)))
    (tmp / "c.csv").write_text("h1,h2\n1,2\n3,4\n")
    positional = {"load": [f'"{tmp / "b.npz"}"'], "csv": [f'"{tmp / "c.csv"}"'], "dataset": ['"diabetes"'],
                  "randint": ["0", "5", "3"], "repeat": ["[0, 1]", "2"], "eye": ["3"], "arange": ["3"]}
    sample = {"key": '"X"', "columns": "[0, 1]", "rows": "20"}
    args = positional.get(entry.name, ["3", "2"])
    kws = [f"{k} = {v if v is not None else sample[k]}" for k, v in entry.keywords.items()]
    if entry.name == "csv":
        kws = [k if not k.startswith("skip_header") else "skip_header = 1" for k in kws]
    return f"{entry.name}({', '.join(args + kws)})"


@pytest.mark.parametrize("entry", docs_gen.entries("data"), ids=lambda e: e.name)
def test_data_source_loads_with_documented_keywords(entry: docs_gen.Entry, tmp_path: Path) -> None:
    names = "X, y" if entry.name == "dataset" else "D"  # dataset(...) gives (X, y)
    spec = regspec.load(f"problem p {{\n  data {names} = {_source_call(entry, tmp_path)}\n  var x\n  minimize x\n}}\n")
    ir = spec.compiled().ir
    for data in ir.nodes_of("data"):
        assert np.all(np.isfinite(np.asarray(ir[data]["value"], dtype=float)))


# ---------------------------------------------------------------- training vocabulary
_TRAIN = """train t {{
  model {model}
  data {data}
  loss {loss}
  optimizer {optimizer}
  epochs 2
  {extra}
}}
"""
_DEFAULTS = {"model": "mlp(in = 64, hidden = [8], out = 10)", "data": "digits(split = 0.8)",
             "loss": "cross_entropy", "optimizer": "adam(lr = 1e-3)", "extra": ""}


def _plan(**parts: str):
    from regspec.compiler.train_plan import plan_train

    return plan_train(regspec.load(_TRAIN.format(**{**_DEFAULTS, **parts})).ast)


def _args(entry: docs_gen.Entry, sample: dict[str, str]) -> str:
    return ", ".join(f"{k} = {v if v is not None else sample[k]}" for k, v in entry.keywords.items())


@pytest.mark.parametrize("entry", docs_gen.entries("terms"), ids=lambda e: e.name)
def test_train_term_accepted(entry: docs_gen.Entry) -> None:
    target = re.search(r"\((param\(\"SELECTOR\"\)|act\(\"SELECTOR\"\)|output)", entry.usage).group(1)
    target = target.replace("SELECTOR", "layers.*" if target.startswith("param") else "acts.*")
    kws = _args(entry, {"groups": "2"})  # orthogonality's optional number of groups
    plan = _plan(extra=f"regularize {entry.name}({target}{', ' + kws if kws else ''}) * 1e-3")
    assert len(plan.terms) == 1


@pytest.mark.parametrize("entry", docs_gen.entries("train-sets"), ids=lambda e: e.name)
def test_train_set_accepted(entry: docs_gen.Entry) -> None:
    kws = _args(entry, {"lo": "-1", "hi": "1", "k": "2", "n": "2", "m": "4", "a": "[0.5, 0.5]", "b": "[0.5, 0.5]"})
    _plan(extra=f'constrain param("layers.0.weight") in {entry.name}{"(" + kws + ")" if kws else ""}')


@pytest.mark.parametrize("entry", docs_gen.entries("schedules"), ids=lambda e: e.name)
def test_schedule_accepted(entry: docs_gen.Entry) -> None:
    positional = {"a": "1e-3", "b": "1e-4", "w": "1", "then": "1e-3", "milestones": "[1]"}
    args = [positional[n] for n in re.findall(r"(?:\(|, )(\w+)(?=,|\))", entry.usage)]
    sample = {"end": "2", "every": "1", "a": "0", "b": "1e-3", "values": "[0, 1e-3]"}
    kws = [f"{k} = {v if v is not None else sample[k]}" for k, v in entry.keywords.items()
           if not (entry.name == "sine_stages" and k == "values")]
    call = f"{entry.name}({', '.join(args + kws)})"
    _plan(extra=f'regularize l1(param("layers.*")) * {call}')


@pytest.mark.parametrize("entry", docs_gen.entries("losses"), ids=lambda e: e.name)
def test_loss_accepted(entry: docs_gen.Entry) -> None:
    _plan(loss=entry.usage.removeprefix("loss "))


_MODEL_SAMPLE = {"in": "64", "out": "10", "hidden": "[8]", "in_features": "64", "ff": "16", "vocab": "..."}


@pytest.mark.parametrize("entry", [e for e in docs_gen.entries("models") if ":" not in e.name], ids=lambda e: e.name)
def test_model_built_with_documented_keywords(entry: docs_gen.Entry) -> None:
    from regspec.backends.torch.train.models import build_model

    kws = {k: v if v is not None else _MODEL_SAMPLE.get(k) for k, v in entry.keywords.items()}
    kws = {k: v for k, v in kws.items() if v not in (None, "...")}
    for name in re.findall(r"(?:\(|, )(\w+)(?=,|\))", entry.usage):  # the arguments without a default
        kws[name] = _MODEL_SAMPLE[name]
    text = f"{entry.name}({', '.join(f'{k} = {v}' for k, v in kws.items())})"
    _plan(model=text)
    values = {k: regspec.load(f"let q = {v}\n").ast.lets[0].value for k, v in kws.items()}
    py = {k: _literal(v) for k, v in values.items()}
    assert build_model(entry.name, **py) is not None


def _literal(node):
    from regspec import ast

    if isinstance(node, ast.ListExpr):
        return [_literal(i) for i in node.items]
    if isinstance(node, ast.Neg):
        return -_literal(node.operand)
    return node.value


@pytest.mark.parametrize("entry", [e for e in docs_gen.entries("optimizers") if ":" not in e.name],
                         ids=lambda e: e.name)
def test_optimizer_built_with_documented_keywords(entry: docs_gen.Entry) -> None:
    import torch

    from regspec.backends.torch.train.optim import build_optimizer

    kws = {k: v for k, v in entry.keywords.items() if v is not None}
    _plan(optimizer=f"{entry.name}({', '.join(f'{k} = {v}' for k, v in kws.items())})")
    py = {k: _literal(regspec.load(f"let q = {v}\n").ast.lets[0].value) for k, v in kws.items()}
    assert build_optimizer(entry.name, [torch.nn.Parameter(torch.zeros(2))], **py) is not None


def test_list_atoms_is_torch_free() -> None:
    code = ("import sys; from regspec.cli import main; main(['list', 'atoms']); main(['list', 'sets']); "
            "main(['list', 'data']); "
            "print([m for m in ('torch', 'cvxpy', 'sklearn') if m in sys.modules], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip().endswith("[]"), r.stderr
    assert "norm1(x" in r.stdout and "spectral_ball(r = 1.0)" in r.stdout and "randn(dims..." in r.stdout


def test_list_models_names_modules() -> None:
    from regspec.cli import main

    assert main(["list", "models"]) == 0


def test_every_documented_dataset_name_loads() -> None:
    (entry,) = [e for e in docs_gen.entries("data") if e.name == "dataset"]
    names = entry.notes[0].removeprefix("name: one of ").split(", ")
    assert "diabetes" in names
    for name in names:
        spec = regspec.load(f'problem p {{\n  data X, y = dataset("{name}")\n  var x\n  minimize x\n}}\n')
        ir = spec.compiled().ir
        assert all(len(ir[d]["shape"]) >= 1 for d in ir.nodes_of("data")), name
