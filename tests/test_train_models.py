"""Built-in models, user models by import path, and their errors."""
from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from regspec.backends.torch.train.models import build_model, load_user_object
from regspec.backends.torch.train.selectors import select_modules, select_params
from regspec.diagnostics import RegspecError


def _names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def test_linear_forward_and_names():
    m = build_model("linear", **{"in": 30, "out": 2})
    assert m(torch.randn(4, 30)).shape == (4, 2)
    assert [n for n, _ in m.named_parameters()] == ["head.weight", "head.bias"]
    assert build_model("linear", in_features=5, out=1, bias=False).head.bias is None


@pytest.mark.parametrize("act,cls", [("relu", nn.ReLU), ("gelu", nn.GELU), ("tanh", nn.Tanh), ("silu", nn.SiLU)])
def test_mlp_forward_names_and_activation(act, cls):
    m = build_model("mlp", **{"in": 40, "hidden": [32, 16], "out": 10, "act": act})
    assert m(torch.randn(7, 40)).shape == (7, 10)
    assert _names(m) == ["layers", "layers.0", "layers.1", "acts", "acts.0", "acts.1", "head"]
    assert all(isinstance(l, nn.Linear) for l in m.layers) and all(isinstance(a, cls) for a in m.acts)
    # LANGUAGE.md's train example selectors all make sense on this naming
    assert [n for n, _ in select_params(m, "layers.*.weight")] == ["layers.0.weight", "layers.1.weight"]
    assert [n for n, _ in select_params(m, "head.weight")] == ["head.weight"]
    assert [n for n, _ in select_modules(m, "layers.*")] == ["layers.0", "layers.1"]
    assert len(select_params(m, type="Linear")) == 3


def test_mlp_int_hidden_and_dropout():
    m = build_model("mlp", in_features=3, hidden=8, out=2, dropout=0.5)
    assert m(torch.randn(2, 3)).shape == (2, 2)
    assert "drops.0" in _names(m)


@pytest.mark.parametrize("image,channels", [(8, [16, 32]), (28, [8, 16])])
def test_cnn_forward(image, channels):
    m = build_model("cnn", in_channels=1, image=image, channels=channels, out=10)
    assert m(torch.randn(3, 1, image, image)).shape == (3, 10)
    assert isinstance(m.layers[0], nn.Conv2d) and isinstance(m.head, nn.Linear)
    assert [n for n, _ in select_params(m, type="Conv2d")] == ["layers.0.weight", "layers.1.weight"]


def test_cnn_flat_input_and_too_small_image():
    m = build_model("cnn", image=8, flat_input=True)
    assert m(torch.randn(2, 64)).shape == (2, 10)
    with pytest.raises(RegspecError, match="too small"):
        build_model("cnn", image=4, channels=[4, 4, 4])


def test_transformer_digits_tokens_and_vocab():
    m = build_model("transformer", **{"in": 8}, d_model=16, heads=2, layers=2, out=10, seq_len=8)
    x = torch.randn(5, 64)
    y = m(x)
    assert y.shape == (5, 10)
    assert torch.allclose(m(x.reshape(5, 1, 8, 8)), y)  # 8x8 image = 8 tokens of 8 features
    names = _names(m)
    assert "blocks.1.attn.qkv" in names and "blocks.0.ff.1" in names and "head" in names
    v = build_model("transformer", vocab=50, d_model=16, heads=4, layers=1, out=3, seq_len=6)
    assert v(torch.randint(0, 50, (4, 6))).shape == (4, 3)
    with pytest.raises(RegspecError, match="exactly one"):
        build_model("transformer", d_model=16, heads=2, layers=1, out=3)
    with pytest.raises(RegspecError, match="divisible"):
        build_model("transformer", **{"in": 8}, d_model=10, heads=3)


def test_builtin_errors():
    with pytest.raises(RegspecError) as e:
        build_model("mpl", **{"in": 3, "out": 2})
    assert "did you mean `mlp`" in str(e.value)
    with pytest.raises(RegspecError) as e:
        build_model("mlp", **{"in": 3, "hiden": [4], "out": 2})
    assert "`hiden`" in str(e.value) and "did you mean `hidden`" in str(e.value)
    with pytest.raises(RegspecError, match="missing a required argument"):
        build_model("mlp", **{"in": 3, "hidden": [4]})
    with pytest.raises(RegspecError) as e:
        build_model("mlp", **{"in": 3, "hidden": [4], "out": 2, "act": "gelus"})
    assert "did you mean `gelu`" in str(e.value)
    with pytest.raises(RegspecError, match="not both"):
        build_model("linear", **{"in": 3, "in_features": 3, "out": 1})


USER_MODULE = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, width=8, out=2):
        super().__init__()
        self.body = nn.Linear(4, width)
        self.head = nn.Linear(width, out)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))

class Boom(nn.Module):
    def __init__(self):
        raise RuntimeError("kaboom")

def not_a_module():
    return 3

class Outer:
    class Inner(nn.Module):
        def forward(self, x):
            return x
"""


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "rs_userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(USER_MODULE))
    (pkg / "broken.py").write_text("import rs_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "rs_userpkg"


def test_user_model_by_import_path(user_pkg):
    m = build_model(f"{user_pkg}.models:Net", width=16, out=3)
    assert m(torch.randn(2, 4)).shape == (2, 3)
    assert isinstance(build_model(f"{user_pkg}.models:Outer.Inner"), nn.Module)
    assert build_model("torch.nn:Linear", in_features=3, out_features=2).weight.shape == (2, 3)


def test_user_model_errors(user_pkg):
    with pytest.raises(RegspecError, match="no module named `rs_nope`"):
        build_model("rs_nope.models:Net")
    with pytest.raises(RegspecError) as e:
        build_model(f"{user_pkg}.models:Nett")
    assert "has no attribute `Nett`" in str(e.value) and "did you mean `Net`" in str(e.value)
    with pytest.raises(RegspecError) as e:
        build_model(f"{user_pkg}.models:Net", widht=3)
    assert "did you mean `width`" in str(e.value)
    with pytest.raises(RegspecError, match="kaboom"):
        build_model(f"{user_pkg}.models:Boom")
    with pytest.raises(RegspecError, match="expected a torch.nn.Module"):
        build_model(f"{user_pkg}.models:not_a_module")
    with pytest.raises(RegspecError) as e:
        load_user_object(f"{user_pkg}.broken:X")
    assert "rs_missing_dependency_xyz" in str(e.value) and "which is not installed" in str(e.value)
    with pytest.raises(RegspecError, match="bad import path"):
        load_user_object("no_colon_here")
