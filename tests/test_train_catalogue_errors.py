"""Bad input for train-block terms (issue 10): an atom or set that cannot apply to the selected
tensors is a located error at the term, naming what was matched and why it does not fit."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import regspec  # noqa: E402
from regspec.diagnostics import RegspecError  # noqa: E402


class Net(torch.nn.Module):
    """layers.0 (4 x 6), layers.1 (4 x 4), head (3 x 4), each with a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(6, 4), torch.nn.Linear(4, 4)])
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


def _error(body: str) -> RegspecError:
    torch.manual_seed(0)
    model = Net()
    spec = regspec.load("train t {\n  loss cross_entropy\n  " + body + "\n}\n")
    with pytest.raises(RegspecError) as info:
        regspec.attach(spec, model, torch.optim.SGD(model.parameters(), lr=0.1))
    return info.value


def _located(e: RegspecError, line: int = 3) -> str:
    d = e.first
    assert d.span is not None and d.span.line == line, (d.message, d.span)
    assert "Traceback" not in str(e)
    return d.span.source.line(line)[d.span.column - 1: d.span.end_column - 1]


@pytest.mark.parametrize("body, message, notes", [
    # shapes: a difference of tensors that do not broadcast, a square-matrix atom on a wide weight
    ('regularize sum_squares(param("layers.0.weight") - param("head.weight"))', "does not fit the matched tensors",
     ["layers.0.weight with shape [4, 6]", "head.weight with shape [3, 4]"]),
    ('regularize log_det(param("layers.0.weight")) * 0.1 via grad', "square",
     ["layers.0.weight with shape [4, 6]"]),
    # not a scalar
    ('regularize abs(param("head.weight"))', "must be a scalar", ["head.weight with shape [3, 4]"]),
    # sign / domain: log of weights with negative entries
    ('regularize sum(log(param("head.weight"))) via grad', "outside the domain",
     ["head.weight with shape [3, 4]"]),
    # selectors that cannot be paired
    ('regularize sum_squares(param("layers.*.weight")) + sum_squares(param("layers.*.weight") - param("**.bias")[0])',
     "match different numbers of tensors", ["matches 2", "matches 3"]),
])
def test_bind_time_errors_name_the_matched_tensors(body, message, notes):
    e = _error(body)
    d = e.first
    assert message in d.message, d.message
    _located(e)
    for note in notes:
        assert any(note in n for n in [d.message, *d.notes]), (note, d.notes)


@pytest.mark.parametrize("body, message, caret", [
    ('constrain param("head.weight") in metric_cone', "has no projection kernel", "metric_cone"),
    ('regularize norm1(param("head.weight") - 0.5) * 1e-3 via prox', "`via prox` needs", None),
    ('regularize hubber(param("head.weight"), M = 0.1)', "unknown regularizer `hubber`", "hubber"),
    ('regularize huber(param("head.weight"), delta = 0.1)', "has no keyword `delta`", None),
    ('regularize sum(log(param("head.weight"))) via prox', "has no prox kernel", None),
])
def test_plan_time_errors_are_located(body, message, caret):
    e = _error(body)
    assert message in e.first.message, e.first.message
    text = _located(e)
    if caret is not None:
        assert text == caret, text


def test_a_set_that_does_not_fit_the_tensor_names_it_and_its_shape():
    e = _error('constrain param("**.bias") in psd')
    assert "layers.0.bias (shape [4])" in e.first.message and "psd" in e.first.message
    assert "square" in e.first.message or "matri" in e.first.message
    _located(e)
    assert any("layers.0.bias [4]" in n for n in e.first.notes)


def test_suggestions_and_cli_exit(tmp_path, capsys):
    from regspec.cli import main

    e = _error('regularize hubber(param("head.weight"), M = 0.1)')
    assert any("`huber`" in n for n in e.first.notes), e.first.notes
    spec = tmp_path / "bad.reg"
    spec.write_text('train t {\n  constrain param("head.weight") in metric_cone\n}\n')
    assert main(["check", str(spec)]) == 1       # torch-free: the planner refuses it
    err = capsys.readouterr().err
    assert f"{spec}:2:" in err and "no projection kernel" in err and "Traceback" not in err


def test_a_term_on_activations_is_typed_per_sample_once_a_batch_has_run():
    """Activation shapes are known after one real batch (the probe of `plan`/`compile`): an atom
    that cannot take the per-sample activation is a located error naming the tap and its shape."""
    from regspec.train_api import plan_text

    spec = regspec.load("""train t {
  model mlp(in = 10, hidden = [8], out = 1)
  data synthetic(n = 32, d = 10, regression = true)
  epochs 1
  regularize log_det(act("acts.0")) * 1e-3
}
""")
    with pytest.raises(RegspecError) as info:
        plan_text(spec)
    d = info.value.first
    assert "log_det needs a matrix" in d.message and d.span is not None and d.span.line == 5
    assert any("acts.0 with per-sample shape [8]" in n for n in d.notes), d.notes
