"""Parameter and module selectors: glob, re:, type=, and errors naming the closest names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from regspec.backends.torch.train._util import glob_to_regex
from regspec.backends.torch.train.models import build_model
from regspec.backends.torch.train.selectors import select_modules, select_params
from regspec.diagnostics import RegspecError


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return build_model("mlp", **{"in": 8, "hidden": [6, 5], "out": 3, "act": "gelu"})


def names(pairs):
    return [n for n, _ in pairs]


def test_glob_star_is_one_component():
    rx = glob_to_regex("layers.*.weight")
    assert rx.fullmatch("layers.0.weight") and rx.fullmatch("layers.12.weight")
    assert not rx.fullmatch("layers.0.sub.weight") and not rx.fullmatch("xlayers.0.weight")
    assert glob_to_regex("**.weight").fullmatch("weight")
    assert glob_to_regex("**.weight").fullmatch("a.b.c.weight")
    assert glob_to_regex("layers.[01].bias").fullmatch("layers.1.bias")


def test_glob_selection(mlp):
    assert names(select_params(mlp, "layers.*.weight")) == ["layers.0.weight", "layers.1.weight"]
    assert names(select_params(mlp, "**.bias")) == ["layers.0.bias", "layers.1.bias", "head.bias"]
    assert names(select_params(mlp, "layers.**")) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    pairs = select_params(mlp, "head.weight")
    assert pairs[0][1] is mlp.head.weight


def test_regex_selection(mlp):
    assert names(select_params(mlp, r"re:layers\.\d+\.(weight|bias)")) == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert names(select_params(mlp, "re:.*weight")) == ["layers.0.weight", "layers.1.weight", "head.weight"]
    with pytest.raises(RegspecError, match="invalid regular expression"):
        select_params(mlp, "re:layers.(")


def test_type_selection():
    cnn = build_model("cnn", image=8, channels=[4, 8], out=10)
    assert names(select_params(cnn, type="Conv2d")) == ["layers.0.weight", "layers.1.weight"]
    assert names(select_params(cnn, type="nn.Linear")) == ["head.weight"]
    assert names(select_params(cnn, type=nn.Conv2d)) == ["layers.0.weight", "layers.1.weight"]
    assert names(select_params(cnn, "layers.1", type="Conv2d")) == ["layers.1.weight"]

    class MyLinear(nn.Linear):
        pass

    m = nn.Sequential(MyLinear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    assert names(select_params(m, type="Linear")) == ["0.weight", "2.weight"]  # subclasses count
    with pytest.raises(RegspecError) as e:
        select_params(cnn, type="Conv1d")
    assert "no module of type `Conv1d`" in str(e.value) and "did you mean `Conv2d`" in str(e.value)


def test_no_match_errors_name_closest(mlp):
    with pytest.raises(RegspecError) as e:
        select_params(mlp, "layer.*.weight")
    msg = str(e.value)
    assert "did you mean `layers.*.weight`" in msg
    assert "closest parameter names" in msg and "(the model has 6 parameter names)" in msg
    with pytest.raises(RegspecError) as e:
        select_params(mlp, "layers.*")
    assert "names modules" in str(e.value) and "layers.*.weight" in str(e.value)
    with pytest.raises(RegspecError) as e:
        select_params(mlp, "hed.weight")
    assert "did you mean `head.weight`" in str(e.value)


def test_select_modules(mlp):
    assert names(select_modules(mlp, "layers.*")) == ["layers.0", "layers.1"]
    assert names(select_modules(mlp, "acts.*")) == ["acts.0", "acts.1"]
    assert names(select_modules(mlp, type="GELU")) == ["acts.0", "acts.1"]
    assert names(select_modules(mlp, "re:(layers|acts)\\.0")) == ["layers.0", "acts.0"]
    with pytest.raises(RegspecError) as e:
        select_modules(mlp, "act.*")
    assert "did you mean `acts.*`" in str(e.value) and "module names" in str(e.value)
    with pytest.raises(RegspecError) as e:
        select_modules(mlp, "layers.*.weight")
    assert "use param(...)" in str(e.value)
