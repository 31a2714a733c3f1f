"""Cold start (issue 13 items 1-2): the front end imports no heavy package, bundled data sets are
read without scikit-learn yet equal its loaders, the LALR tables are cached, the IR's graph
behaves as networkx's did, and the torch backend's first solve is eager yet agrees with the
traced path. No timing assertions here: speed is measured in bench/bench_cold_start.py."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.reg"))
HEAVY = ("torch", "cvxpy", "scipy", "sklearn", "pandas", "networkx")


def _run_python(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


# ---------------------------------------------------------------- imports
def test_import_regspec_is_lean():
    code = ("import sys, regspec\n"
            "print(sorted(m for m in ('numpy', 'lark', *%r) if m in sys.modules))\n"
            "from regspec import load, solve, Result, RegspecError\n"
            "print(callable(load) and callable(solve) and Result.__name__ == 'Result')") % (HEAVY,)
    lines = _run_python(code).split("\n")
    assert lines[0] == "[]"
    assert lines[1] == "True"


def test_check_imports_no_heavy_package_for_any_bundled_spec(tmp_path):
    """One child process checks every bundled spec in turn (dataset(...) specs included) and
    records, after each, which heavy packages have been imported: all must stay out."""
    assert len(SPECS) >= 20
    code = (
        "import io, json, sys, contextlib\n"
        "from regspec.cli import main\n"
        "seen = {}\n"
        "for path in sys.argv[1:]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        rc = main(['check', path])\n"
        f"    seen[path] = [rc, [m for m in {HEAVY!r} if m in sys.modules]]\n"
        "print(json.dumps(seen))\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, SPECS)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env={**os.environ, "REGSPEC_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert {p: v[0] for p, v in seen.items()} == {str(p): 0 for p in SPECS}
    assert {p: v[1] for p, v in seen.items() if v[1]} == {}
    assert any("dataset(" in p.read_text() for p in SPECS)  # the test covers the data-set path


# ---------------------------------------------------------------- bundled data sets
DATASETS = ("diabetes", "breast_cancer", "digits", "iris", "wine")


def _dataset(name: str, **kw):
    from regspec.compiler.data import SourceContext, dataset

    return dataset(SourceContext(ROOT, None, ["X", "y"]), name, **kw)


@pytest.mark.parametrize("name", DATASETS)
def test_bundled_data_equal_sklearn_loaders_bitwise(name):
    sk = pytest.importorskip("sklearn.datasets")
    X_ref, y_ref = getattr(sk, f"load_{name}")(return_X_y=True)  # diabetes: scaled=True (the default)
    X, y = _dataset(name)
    assert X.shape == X_ref.shape and y.shape == y_ref.shape
    assert X.tobytes() == np.asarray(X_ref, dtype=float).tobytes()
    assert y.tobytes() == np.asarray(y_ref, dtype=float).tobytes()


def test_bundled_data_options_match_sklearn_preprocessing():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.preprocessing import StandardScaler

    X_ref, y_ref = load_diabetes(return_X_y=True)
    X, y = _dataset("diabetes", standardize=True)
    np.testing.assert_allclose(X, StandardScaler().fit_transform(X_ref), rtol=0, atol=1e-13)
    X, y = _dataset("diabetes", center=True)
    np.testing.assert_allclose(X, X_ref - X_ref.mean(axis=0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(y, y_ref - y_ref.mean(), rtol=0, atol=1e-12)
    X_ref, y_ref = load_breast_cancer(return_X_y=True)
    X, y = _dataset("breast_cancer", labels="pm1", rows=100)
    assert X.tobytes() == X_ref[:100].tobytes()
    assert np.array_equal(y, np.where(y_ref[:100] == 1, 1.0, -1.0))


def test_sklearn_scale_replica_equals_sklearn_scale_on_hard_columns():
    """The replica of sklearn.preprocessing.scale, on columns that exercise its branches: a
    constant column (left unscaled), large offsets (the re-centring step), NaNs."""
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import scale

    from regspec.compiler.data import _sklearn_scale

    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 5))
    X[:, 1] = 7.0
    X[:, 2] = 1e12 + rng.standard_normal(200) * 1e-3
    X[::17, 3] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the large offsets; so be it
        ref = scale(X.copy())
        got = _sklearn_scale(X.copy())
    assert np.array_equal(got, ref, equal_nan=True)


def test_missing_sklearn_names_the_extra(monkeypatch):
    import importlib.util

    from regspec.diagnostics import RegspecError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "sklearn" else real(n, *a))
    with pytest.raises(RegspecError) as e:
        _dataset("diabetes")
    text = str(e.value)
    assert "scikit-learn" in text and "regspec[data]" in text and "data X, y" in text


def test_unknown_dataset_lists_the_bundled_ones():
    from regspec.diagnostics import RegspecError

    with pytest.raises(RegspecError) as e:
        _dataset("diabets")
    assert "diabetes" in str(e.value) and "wine" in str(e.value)


# ---------------------------------------------------------------- LALR table cache
def test_lalr_tables_cached_keyed_and_reused(tmp_path):
    code = ("from regspec import parser\n"
            "import lark\n"
            "p = parser._lark()\n"
            "print(parser.parse(open('specs/lasso.reg').read(), 'lasso.reg').blocks[0].name)\n")
    env = {"REGSPEC_CACHE_DIR": str(tmp_path)}
    assert _run_python(code, env).strip() == "lasso"
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("grammar-") and files[0].stat().st_size > 0
    stamp = files[0].stat().st_mtime_ns
    assert _run_python(code, env).strip() == "lasso"  # read from the cache, not rewritten
    assert sorted(tmp_path.iterdir()) == files and files[0].stat().st_mtime_ns == stamp

    from regspec import parser

    grammar = (ROOT / "regspec" / "grammar.lark").read_text()
    os.environ["REGSPEC_CACHE_DIR"] = str(tmp_path)
    try:
        assert parser._lark_cache_file(grammar) == files[0]
        assert parser._lark_cache_file(grammar + "\n// edited\n") != files[0]
    finally:
        del os.environ["REGSPEC_CACHE_DIR"]


def test_lalr_cache_falls_back_when_damaged_or_unwritable(tmp_path):
    code = "from regspec import parser\nprint(parser.parse('problem p {\\n var x\\n minimize x\\n}\\n').blocks[0].name)\n"
    (tmp_path / "ok").mkdir()
    env = {"REGSPEC_CACHE_DIR": str(tmp_path / "ok")}
    _run_python(code, env)
    for f in (tmp_path / "ok").iterdir():
        f.write_bytes(b"not a cache file\n")
    assert _run_python(code, env).strip() == "p"
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the folder should be: makedirs fails
    assert _run_python(code, {"REGSPEC_CACHE_DIR": str(blocker / "sub")}).strip() == "p"


# ---------------------------------------------------------------- the IR's graph
def _random_graph_pair(rng: random.Random, acyclic: bool):
    nx = pytest.importorskip("networkx")
    from regspec.compiler.digraph import DiGraph

    n = rng.randint(1, 25)
    ours, ref = DiGraph(), nx.DiGraph()
    order = list(range(n))
    rng.shuffle(order)
    for v in order:
        ours.add_node(v, tag=v)
        ref.add_node(v, tag=v)
    for _ in range(rng.randint(0, 3 * n)):
        u, v = rng.randrange(n), rng.randrange(n)
        if u == v or (acyclic and u > v):
            continue
        ours.add_edge(u, v)
        ref.add_edge(u, v)
    for _ in range(rng.randint(0, 2)):
        r = rng.randrange(n)
        if r in ref:
            ours.remove_node(r)
            ref.remove_node(r)
    return ours, ref


def test_digraph_agrees_with_networkx():
    nx = pytest.importorskip("networkx")
    from regspec.compiler.digraph import CycleError, NoCycle, ancestors, find_cycle, lexicographical_topological_sort

    rng = random.Random(0)
    for trial in range(200):
        ours, ref = _random_graph_pair(rng, acyclic=trial % 2 == 0)
        assert list(ours.nodes(data=True)) == list(ref.nodes(data=True))
        acyclic = nx.is_directed_acyclic_graph(ref)
        if acyclic:
            assert list(lexicographical_topological_sort(ours)) == list(nx.lexicographical_topological_sort(ref))
            with pytest.raises(NoCycle):
                find_cycle(ours)
        else:
            with pytest.raises(CycleError):
                list(lexicographical_topological_sort(ours))
            cycle = find_cycle(ours)
            assert all(ref.has_edge(u, v) for u, v in cycle)
            assert all(a[1] == b[0] for a, b in zip(cycle, cycle[1:] + cycle[:1]))
        for v in ref:
            assert ancestors(ours, v) == nx.ancestors(ref, v)
            assert set(ours.successors(v)) == set(ref.successors(v))


# ---------------------------------------------------------------- torch: eager first solve, traced when it pays
def test_first_torch_solve_in_a_fresh_process_does_not_import_dynamo():
    """The CLI's case: one solve per process. It must not load torch's graph-capture stack (the
    4-12 s that made `regspec solve --backend torch` slow), and must give the known optimum."""
    code = ("import sys, regspec\n"
            "r = regspec.solve('specs/lasso.reg', backend='torch')\n"
            "from regspec.backends.torch import tracing\n"
            "print(r.status, repr(r.objective), 'torch._dynamo' in sys.modules, tracing.POLICY['eager_solves'])\n"
            "r = regspec.solve('specs/tv_denoise.reg', backend='torch')\n"  # PDHG: operators and adjoints
            "print(r.status, r.solver, 'torch._dynamo' in sys.modules)\n")
    lines = _run_python(code, {"REGSPEC_TRACE": "auto"}).splitlines()
    status, objective, dynamo, eager = lines[0].split()
    assert status == "optimal" and dynamo == "False" and eager == "1"
    assert abs(float(objective) - 2586.943195) <= 1e-6 * 2586.943195  # CATALOGUE X1, as CVXPY gives it
    assert lines[1].split() == ["optimal", "PDHG", "False"]


def _lasso_program():
    import torch

    import regspec
    from regspec.backends.torch.lower import lower

    return lower(regspec.load(ROOT / "specs" / "lasso.reg").compiled().ir, dtype=torch.float64,
                 device=torch.device("cpu"))


def test_eager_evaluator_gives_the_least_squares_value_and_gradient(monkeypatch):
    import torch

    from regspec.backends.torch import tracing

    monkeypatch.setattr(tracing, "MODE", "eager")
    program = _lasso_program()
    X, y = _dataset("diabetes", center=True)
    w = np.random.default_rng(0).standard_normal(X.shape[1])
    r = X @ w - y
    ev = tracing.smooth_evaluator(program.smooth, [f"var_{n}" for n in program.var_names], [torch.from_numpy(w)])
    xs = [torch.from_numpy(w)]
    g = ev.grad(xs)[0].numpy()
    grad_ref = X.T @ r / len(y)
    np.testing.assert_allclose(g, grad_ref, rtol=0, atol=1e-12 * np.abs(grad_ref).max())
    assert abs(float(ev.value(xs)) - r @ r / (2 * len(y))) <= 1e-12 * (r @ r)
    assert abs(float(ev.value([torch.from_numpy(w.copy())])) - r @ r / (2 * len(y))) <= 1e-12 * (r @ r)
    assert not ev.traced


def test_policy_traces_once_eager_time_reaches_the_trace_cost(monkeypatch):
    import torch

    from regspec.backends.torch import tracing

    monkeypatch.setattr(tracing, "MODE", "auto")
    tracing.clear_cache()
    program = _lasso_program()
    names = [f"var_{n}" for n in program.var_names]
    x = [torch.zeros(10, dtype=torch.float64)]
    monkeypatch.setattr(tracing, "_last_trace_seconds", 1e9)  # tracing never pays: stays eager
    ev = tracing.smooth_evaluator(program.smooth, names, x)
    for _ in range(5):
        ev.grad(x)
    assert not ev.traced and tracing.POLICY["switches"] == 0
    monkeypatch.setattr(tracing, "_last_trace_seconds", 0.0)  # tracing is free: the next gradient switches
    g_eager = ev.grad(x)[0]
    assert ev.traced and ev.trace_seconds > 0 and tracing.POLICY["switches"] == 1
    torch.testing.assert_close(ev.grad(x)[0], g_eager, rtol=1e-13, atol=1e-13 * float(g_eager.abs().max()))
    monkeypatch.setattr(tracing, "_last_trace_seconds", 1e9)
    again = tracing.smooth_evaluator(program.smooth, names, x)  # a traced structure starts traced
    assert again.traced and again.trace_seconds < 1.0
    assert tracing.POLICY == {"eager_solves": 1, "traced_solves": 1, "switches": 1}


def test_eager_and_traced_solves_agree(monkeypatch):
    """Which path evaluates the smooth part changes nothing a user sees beyond rounding: same
    status, iterations within a couple, objectives and solutions to solver accuracy."""
    import regspec
    from regspec.backends.torch import tracing

    spec = regspec.load(ROOT / "specs" / "elastic_net.reg")
    results = {}
    for mode in ("eager", "trace"):
        monkeypatch.setattr(tracing, "MODE", mode)
        tracing.clear_cache()
        results[mode] = regspec.solve(spec, backend="torch")
    e, t = results["eager"], results["trace"]
    assert e.status == t.status == "optimal"
    assert abs(e.iterations - t.iterations) <= 2
    assert abs(e.objective - t.objective) <= 1e-9 * abs(t.objective)
    for name in t.variables:
        scale = max(1.0, float(np.abs(t.variables[name]).max()))
        np.testing.assert_allclose(e.variables[name], t.variables[name], rtol=0, atol=1e-6 * scale)


def test_times_report_data_loading_imports_and_tracing_apart(monkeypatch):
    import regspec
    from regspec.backends.torch import tracing

    spec = regspec.load(ROOT / "specs" / "lasso.reg")
    first = regspec.solve(spec, backend="cvxpy")
    assert {"parse", "data", "analyse", "import", "lower", "solve"} <= set(first.times)
    assert first.times["data"] > 0 and all(v >= 0 for v in first.times.values())
    again = regspec.solve(spec, backend="cvxpy")  # compiled and imported already
    assert again.times["data"] == 0 and again.times["import"] < first.times["import"] + 1e-3
    monkeypatch.setattr(tracing, "MODE", "auto")
    tracing.clear_cache()
    eager = regspec.solve(spec, backend="torch")
    assert "trace" not in eager.times and eager.times["solve"] > 0
    monkeypatch.setattr(tracing, "_last_trace_seconds", 0.0)  # tracing looks free: it switches at once
    tracing.clear_cache()
    switched = regspec.solve(spec, backend="torch")
    assert switched.times["trace"] > 0 and switched.times["solve"] > 0 and tracing.POLICY["switches"] == 1


def test_lazy_graph_runs_eager_then_its_trace(monkeypatch):
    """A PDHG block's map and adjoint: eager closures (autograd adjoint, no functorch) until
    tracing pays, then the make_fx graph; both give J x and J^T y exactly."""
    import torch

    from regspec.backends.torch import tracing

    A = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def affine(x):
        return A @ x + 1.0

    zeros = [torch.zeros(5, dtype=torch.float64)]
    adjoint = tracing.linear_adjoint(affine, zeros)
    monkeypatch.setattr(tracing, "MODE", "auto")
    monkeypatch.setattr(tracing, "_last_trace_seconds", 1e9)
    lazy = tracing.LazyGraph(adjoint, [torch.zeros(7, dtype=torch.float64)])
    y = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eager = lazy(y)
    assert not lazy.traced
    torch.testing.assert_close(eager[0], A.T @ y, rtol=1e-14, atol=1e-14)
    monkeypatch.setattr(tracing, "_last_trace_seconds", 0.0)
    lazy(y)  # this call crosses the (now zero) cost: the next runs the graph
    assert lazy.traced
    torch.testing.assert_close(lazy(y)[0], A.T @ y, rtol=1e-14, atol=1e-14)
    unused = tracing.linear_adjoint(lambda x, z: A @ x, [torch.zeros(5, dtype=torch.float64),
                                                           torch.zeros(3, dtype=torch.float64)])
    assert torch.count_nonzero(unused(y)[1]) == 0 and unused(y)[1].shape == (3,)
