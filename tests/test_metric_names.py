"""Metric names of training terms (metrics.jsonl, TensorBoard, summary.json, the generated
trainer): short and stable -- the term's atom (or set) and its selector's module, made unique
with a numeric suffix -- or the user's ``as NAME``; the source line stays in `regspec plan`."""
from __future__ import annotations

import ast as pyast
import json
import re
from pathlib import Path

import pytest

import regspec
from regspec.cli import main
from regspec.compiler.train_plan import plan_train
from regspec.diagnostics import RegspecError
from regspec.fmt import format_text
from regspec.parser import parse

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SPECS = sorted((ROOT / "specs").glob("train_*.reg"))

TINY = """train tiny {{
  model mlp(in = 64, hidden = [16, 16], out = 10, act = "relu")
  data  digits(split = 0.8)
  optimizer adamw(lr = 1e-2, weight_decay = 0)
  batch 512
  epochs 2
  seed 0
{body}
}}
"""


def _metrics(body: str) -> list[str]:
    return [t.metric for t in plan_train(parse(TINY.format(body=body), "tiny.reg")).terms]


def _error(body: str) -> RegspecError:
    with pytest.raises(RegspecError) as info:
        _metrics(body)
    return info.value


def test_bundled_specs_get_short_unique_identifier_names():
    seen = 0
    for path in TRAIN_SPECS:
        terms = plan_train(parse(path.read_text(), str(path))).terms
        names = [t.metric for t in terms]
        again = [t.metric for t in plan_train(parse(path.read_text(), str(path))).terms]
        assert names == again, path.name                               # stable across runs
        assert len(set(names)) == len(names), path.name                # unique in the block
        for n in names:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) and len(n) <= 32, (path.name, n)
        seen += len(names)
    assert seen >= 10


def test_automatic_names_follow_atom_and_selector_with_numeric_suffixes():
    names = _metrics("""
  regularize 1e-3 * l1(act("acts.*"))
  regularize group_l2(param("layers.*.weight"), groups = channels) * 0.05
  regularize 1e-4 * l1(param("head.weight"))
  regularize 1e-4 * l1(param("head.weight")) via grad
  regularize 1e-4 * l1(param("head.bias"))
  constrain param("head.weight") in spectral_ball(2.0)
""")
    assert names == ["l1_acts", "group_l2_layers", "l1_head", "l1_head_2", "l1_head_bias", "spectral_ball_head"]


def test_as_name_names_the_term_and_is_kept_out_of_automatic_names():
    names = _metrics("""
  regularize 1e-4 * l1(param("head.weight"))
  regularize 1e-3 * l1(param("layers.*.weight")) as l1_head
  constrain param("head.weight") in spectral_ball(2.0) every 10 steps as head_ball
""")
    # the user's name wins; the automatic one moves aside
    assert names == ["l1_head_2", "l1_head", "head_ball"]


def test_as_name_on_a_split_sum_numbers_its_parts():
    names = _metrics('  regularize 1e-3 * l1(param("head.weight")) + 1e-2 * sum_squares(param("layers.0.weight")) as both')
    assert names == ["both_1", "both_2"]


def test_duplicate_name_is_a_located_error():
    err = _error("""
  regularize 1e-4 * l1(param("head.weight")) as sparse
  regularize 1e-4 * l1(act("acts.*")) as sparse
""")
    text = str(err)
    assert "metric name `sparse` is already used" in text and "first named at line 9" in text
    assert re.search(r"tiny\.reg:10:\d+", text), text


@pytest.mark.parametrize("bad", ['as "x"', "as 3x", "as", "as a.b"])
def test_invalid_name_is_a_located_error(bad):
    err = _error(f'  regularize 1e-4 * l1(param("head.weight")) {bad}')
    assert re.search(r"tiny\.reg:8:\d+", str(err)), str(err)


def test_as_name_in_a_problem_is_a_located_error(tmp_path, capsys):
    spec = tmp_path / "p.reg"
    spec.write_text("problem p {\n  var x[3]\n  minimize sum_squares(x - 1)\n  regularize 0.1 * norm1(x) as l1x\n}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "names a training metric" in err and "p.reg:4:32" in err and "Traceback" not in err


def test_fmt_keeps_the_name():
    src = TINY.format(body='  regularize   1e-4*l1(param("head.weight"))   as   sparse_head')
    out = format_text(src)
    assert 'regularize 1e-4 * l1(param("head.weight")) as sparse_head' in out
    assert format_text(out) == out


def test_plan_shows_the_source_line_and_the_metric(tmp_path, capsys):
    spec = tmp_path / "tiny.reg"
    spec.write_text(TINY.format(body='  regularize 1e-4 * l1(param("head.weight")) as sparse_head'))
    assert main(["plan", str(spec), "--json"]) == 0
    term = json.loads(capsys.readouterr().out)["terms"][0]
    assert term["logged_as"] == "reg/sparse_head" and term["text"].startswith("regularize 1e-4 * l1(")


def test_names_end_to_end_in_metrics_plots_and_generated_trainer(tmp_path):
    pytest.importorskip("torch")
    import torch

    from regspec import plots
    from regspec.train_api import compile_trainer

    torch.set_num_threads(1)
    spec = tmp_path / "tiny.reg"
    spec.write_text(TINY.format(body="""
  regularize l1(param("head.weight")) * 1e-2 via prox as sparse_head
  constrain param("layers.0.weight") in spectral_ball(1.0)
"""))
    summary = regspec.train(str(spec), out=tmp_path / "run", quiet=True)
    records = plots.read_metrics(tmp_path / "run" / "metrics.jsonl")
    keys = {k for k in records[-1] if k.startswith(("reg/", "weight/"))}
    assert keys == {"reg/sparse_head", "weight/sparse_head", "reg/spectral_ball_layers", "weight/spectral_ball_layers"}
    assert {t["term"] for t in summary["terms"]} == {"sparse_head", "spectral_ball_layers"}
    # the curves' legend data: the series carry the same keys, the legend the bare names
    drawn = {k: ys[-1] for panel in plots.training_series(records).values() for k, (_, ys) in panel.items()}
    assert drawn["reg/sparse_head"] == records[-1]["reg/sparse_head"]
    assert plots._label("reg/sparse_head") == "sparse_head"
    # the generated trainer logs under the same names
    src = compile_trainer(str(spec), out=tmp_path / "trainer.py")
    labels = next(n for n in pyast.walk(pyast.parse(src)) if isinstance(n, pyast.Assign)
                  and getattr(n.targets[0], "id", "") == "LABELS")
    assert set(pyast.literal_eval(labels.value).values()) == {"sparse_head", "spectral_ball_layers"}
