"""torch.fx tracing, activation taps (fx and hook paths) and activation rewrites."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from regspec.backends.torch.train.fx import insert_taps, rewrite_activations, trace
from regspec.backends.torch.train.models import build_model
from regspec.backends.torch.train.penalties import act_l1
from regspec.diagnostics import RegspecError


def _mlp(act="gelu", seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", **{"in": 12, "hidden": [10, 8], "out": 4, "act": act})


def _cnn(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", image=8, channels=[4, 6], out=5)


def _hook_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference taps with plain forward hooks, written independently of fx.py."""
    got: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


@pytest.mark.parametrize("make,x,pats,expected", [
    (_mlp, torch.randn(5, 12), ["layers.*", "acts.*"], ["layers.0", "acts.0", "layers.1", "acts.1"]),
    (_cnn, torch.randn(3, 1, 8, 8), ["acts.*", "pools.1"], ["acts.0", "acts.1", "pools.1"]),
])
def test_fx_taps_equal_module_outputs(make, x, pats, expected):
    model = make()
    gm, reason = trace(model)
    assert isinstance(gm, fx.GraphModule) and reason == "traced"
    assert torch.allclose(gm(x), model(x))
    tapped = insert_taps(model, pats)
    assert tapped.tap_path == "fx"
    with torch.no_grad():
        y = tapped(x)
    assert torch.allclose(y, model(x))
    assert list(tapped.taps) == expected
    ref = _hook_outputs(model, expected, x)
    for k in expected:
        assert torch.equal(tapped.taps[k], ref[k])
    hooked = insert_taps(model, pats, prefer="hooks")
    assert hooked.tap_path == "hooks"
    with torch.no_grad():
        hooked(x)
    assert list(hooked.taps) == expected
    for k in expected:
        assert torch.equal(hooked.taps[k], ref[k])
    hooked.remove()


def test_tapped_model_shares_parameters_and_names():
    model = _mlp()
    tapped = insert_taps(model, "acts.*")
    assert list(tapped.state_dict()) == list(model.state_dict())
    assert all(p is q for p, q in zip(tapped.parameters(), model.parameters()))
    tapped.eval()
    assert not model.training and not model.layers[0].training
    # a penalty on the taps back-propagates to the weights
    out = tapped(torch.randn(4, 12))
    (out.sum() + act_l1(tapped.taps)).backward()
    assert model.layers[0].weight.grad is not None and model.layers[0].weight.grad.abs().sum() > 0


def test_transformer_taps_nonleaf_module_and_node():
    torch.manual_seed(0)
    m = build_model("transformer", **{"in": 8}, d_model=16, heads=2, layers=2, out=10)
    x = torch.randn(3, 64)
    t = insert_taps(m, ["blocks.*", "blocks.0.ff.1"])  # traced-through user modules, nested taps
    assert t.tap_path == "fx"
    with torch.no_grad():
        assert torch.allclose(t(x), m(x), atol=1e-6)
    ref = _hook_outputs(m, ["blocks.0", "blocks.1", "blocks.0.ff.1"], x)
    for k, v in ref.items():
        assert torch.allclose(t.taps[k], v, atol=1e-6)
    node_tap = insert_taps(m, "mean")  # an fx node by name
    with torch.no_grad():
        node_tap(x)
    assert list(node_tap.taps) == ["mean"] and node_tap.taps["mean"].shape == (3, 16)


class DataDependent(nn.Module):
    """Untraceable: Python control flow on a tensor value."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)
        self.act = nn.GELU()

    def forward(self, x):
        h = self.act(self.a(x))
        if h.sum() > 0:
            h = h * 2
        return self.b(h)


def test_untraceable_model_falls_back_to_hooks():
    torch.manual_seed(0)
    m = DataDependent()
    gm, reason = trace(m)
    assert gm is None and "TraceError" in reason
    t = insert_taps(m, ["act", "b"])
    assert t.tap_path == "hooks" and "tracing failed" in t.tap_reason
    x = torch.randn(5, 4)
    with torch.no_grad():
        y = t(x)
    assert torch.allclose(y, m(x))
    ref = _hook_outputs(m, ["act", "b"], x)
    assert torch.equal(t.taps["act"], ref["act"]) and torch.equal(t.taps["b"], ref["b"])
    with pytest.raises(RegspecError, match="traceable"):
        insert_taps(m, "gelu")  # a node name, but there is no graph
    # the module rewrite still works without a graph
    _, n = rewrite_activations(m, "GELU", "ReLU")
    assert n == 1 and isinstance(m.act, nn.ReLU)


def test_shared_module_called_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(3, 3)

        def forward(self, x):
            return self.f(self.f(x))

    m = Twice()
    x = torch.randn(2, 3)
    for prefer in ("fx", "hooks"):
        t = insert_taps(m, "f", prefer=prefer)
        with torch.no_grad():
            t(x)
            assert list(t.taps) == ["f", "f#1"]
            assert torch.allclose(t.taps["f#1"], m(x))


def test_tap_errors():
    with pytest.raises(RegspecError) as e:
        insert_taps(_mlp(), "layer.*")
    assert "did you mean" in str(e.value)


def test_gelu_to_relu_module_rewrite_matches_relu_model():
    gelu, relu = _mlp("gelu", seed=1), _mlp("relu", seed=1)
    relu.load_state_dict(gelu.state_dict())
    x = torch.randn(6, 12)
    before = gelu(x)
    new, n = rewrite_activations(gelu, "GELU", "ReLU")
    assert n == 2 and new is gelu and all(isinstance(a, nn.ReLU) for a in gelu.acts)
    assert not torch.allclose(before, new(x))
    assert torch.equal(new(x), relu(x))


def test_functional_gelu_rewrite_in_graph():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(5, 7)
            self.b = nn.Linear(7, 2)

        def forward(self, x):
            return self.b(F.gelu(self.a(x)))

    torch.manual_seed(2)
    m = Functional()
    x = torch.randn(4, 5)
    expected = m.b(F.relu(m.a(x)))
    new, n = rewrite_activations(m, "gelu", "relu")
    assert n == 1 and isinstance(new, fx.GraphModule)
    assert torch.equal(new(x), expected)
    assert "gelu" not in new.code and "relu" in new.code
    assert [k for k, _ in new.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_rewrite_to_fatrelu_and_errors():
    m = _mlp("relu")
    _, n = rewrite_activations(m, "ReLU", "fatrelu", threshold=0.1)
    assert n == 2 and m.acts[0].threshold == 0.1
    x = torch.tensor([[-1.0, 0.05, 0.2]])
    assert torch.equal(m.acts[0](x), torch.tensor([[0.0, 0.0, 0.2]]))
    with pytest.raises(RegspecError) as e:
        rewrite_activations(_mlp("relu"), "GELU", "ReLU")
    assert "nothing matched" in str(e.value)
    with pytest.raises(RegspecError, match="unknown activation"):
        rewrite_activations(_mlp("gelu"), "GELU", "ReLUU")
