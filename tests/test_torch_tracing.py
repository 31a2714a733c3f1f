"""The smooth part's traced graphs are cached by structure, not values: a re-solve with new
parameter values reuses them and still gives the right answer (scikit-learn's Lasso at each
value); a lowering whose control flow depends on data values is traced on the real values instead."""
import numpy as np
import torch
from sklearn.datasets import load_diabetes
from torch import fx

import regspec
from regspec.backends.torch import tracing
from regspec.backends.torch.lower import lower
from regspec.backends.torch.tracing import FusedSmooth

from conftest import SPECS
from test_lasso import sklearn_lasso


def test_resolve_with_new_parameter_reuses_the_trace_and_agrees_with_sklearn(monkeypatch):
    monkeypatch.setattr(tracing, "MODE", "trace")  # the traced path from the first solve (see test_cold_start)
    tracing.clear_cache()
    spec = regspec.load(SPECS / "lasso.reg")
    for i, lam in enumerate([1.0, 0.2148044, 5.0]):
        result = regspec.solve(spec, backend="torch", params={"lam": lam}, tol=1e-12)
        w_ref, obj_ref = sklearn_lasso(lam)
        # as in test_lasso: gradient-mapping tol 1e-12 / smallest eigenvalue ~1e-4 -> 1e-8 in w
        np.testing.assert_allclose(result.variables["w"], w_ref, atol=1e-6, rtol=0)
        assert abs(result.objective - obj_ref) <= 1e-8 * abs(obj_ref)
        assert tracing.STATS == {"hits": i, "misses": 1, "baked": 0}
    # a fresh load of the same spec compiles to the same code: still one trace
    regspec.solve(regspec.load(SPECS / "lasso.reg"), backend="torch", params={"lam": 2.0})
    assert tracing.STATS["misses"] == 1 and len(tracing._CACHE) == 1


def _branchy(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Python control flow on a data value (a lowering like this cannot be traced on fake tensors)."""
    return ((x - 1.0) ** 2).sum() if float(s) > 0 else ((x + 1.0) ** 2).sum()


def _smooth_module(sign: float) -> fx.GraphModule:
    root = torch.nn.Module()
    root.register_buffer("const_s", torch.tensor(sign, dtype=torch.float64))
    root.var_x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    graph = fx.Graph()
    graph.output(graph.call_function(_branchy, (graph.get_attr("const_s"), graph.get_attr("var_x"))))
    return fx.GraphModule(root, graph)


def test_data_dependent_lowering_is_traced_on_real_values():
    tracing.clear_cache()
    for sign, target in [(1.0, 1.0), (-1.0, -1.0)]:
        fused = FusedSmooth.trace(_smooth_module(sign), ["var_x"], [torch.zeros(3, dtype=torch.float64)])
        assert fused is not None and not fused.cached
        g = fused.grad([torch.zeros(3, dtype=torch.float64)])[0]
        np.testing.assert_array_equal(g.numpy(), np.full(3, -2.0 * target))
    assert tracing.STATS["baked"] == 2


def test_traced_graphs_give_the_least_squares_value_and_gradient_from_the_cache():
    """The cached graphs (data as inputs) are what the solver runs, not an autograd fallback: value
    and gradient of ||X w - y||^2 / (2n) at a random w equal the closed forms, on the miss and on
    the hit."""
    tracing.clear_cache()
    program = lower(regspec.load(SPECS / "lasso.reg").compiled().ir, dtype=torch.float64, device=torch.device("cpu"))
    X, y = load_diabetes(return_X_y=True)
    X, y = X - X.mean(0), y - y.mean()  # dataset("diabetes", center = true)
    w = np.random.default_rng(0).standard_normal(X.shape[1])
    r = X @ w - y
    for expect_cached in (False, True):
        fused = FusedSmooth.trace(program.smooth, [f"var_{n}" for n in program.var_names], [torch.from_numpy(w)])
        assert fused is not None and fused.cached is expect_cached
        g = fused.grad([torch.from_numpy(w)])[0].numpy()
        np.testing.assert_allclose(g, X.T @ r / len(y), rtol=0, atol=1e-10 * np.abs(X.T @ r / len(y)).max())
        value = float(fused.value([torch.from_numpy(w)]))
        assert abs(value - r @ r / (2 * len(y))) <= 1e-12 * (r @ r)
    assert tracing.STATS == {"hits": 1, "misses": 1, "baked": 0}
