"""Train blocks speak the whole catalogue (issue 10): a walk over its atoms and sets.

* every atom with a torch evaluation, written as ``regularize ATOM(param(...)) via grad`` on a
  small float64 ``nn.Linear``, adds exactly the atom's numpy value to the loss (rel 1e-6;
  non-scalar atoms are summed, two-argument atoms take a constant second argument), and one
  optimizer step through it leaves finite weights;
* every atom with a prox, taken ``via prox``, moves the weight to the kernel's output
  ``prox_{lr w f}(W)`` (a step with a zero gradient isolates the prox);
* every set with a projection, in ``constrain``, leaves the weight in the set, checked by the
  set's own definition (not by its kernel).
"""
from __future__ import annotations

import numpy as np
import pytest

from regspec.diagnostics import RegspecError

torch = pytest.importorskip("torch")

import regspec  # noqa: E402
from regspec.compiler.catalogue import ATOMS, SETS  # noqa: E402

W = 'param("weight")'
B = 'param("bias")'
RNG_SEED = 0


def _lit(a: np.ndarray) -> str:
    return repr(np.asarray(a, dtype=float).tolist())


def _model(shape: str, init: str) -> torch.nn.Linear:
    """nn.Linear in float64: "wide" 4 x 8 (weight), "square" 4 x 4; init "normal", "pos" (entries
    in [0.5, 1.5], for logs and roots) or "spd" (a symmetric positive definite weight)."""
    gen = np.random.default_rng(RNG_SEED)
    rows, cols = (4, 8) if shape == "wide" else (4, 4)
    model = torch.nn.Linear(cols, rows, dtype=torch.float64)
    w = gen.standard_normal((rows, cols))
    b = gen.standard_normal(rows)
    if init == "pos":
        w, b = 0.5 + gen.random((rows, cols)), 0.5 + gen.random(rows)
    elif init == "spd":
        a = gen.standard_normal((rows, rows))
        w = a @ a.T + rows * np.eye(rows)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(w))
        model.bias.copy_(torch.as_tensor(b))
    return model


def _value(name: str, args: list, **kw) -> float:
    """The atom's numpy value (summed when it is not a scalar)."""
    atom = ATOMS[name]
    return float(np.sum(atom.numpy(args, {**atom.static, **kw})))


SPD4 = np.array([[4.0, 1.0, 0.0, 0.5], [1.0, 3.0, 0.2, 0.0], [0.0, 0.2, 2.0, 0.1], [0.5, 0.0, 0.1, 1.5]])
C48 = np.arange(32, dtype=float).reshape(4, 8) / 10 - 1

# name -> (term text, model shape, init, numpy reference of (W, b)); atoms not listed are written
# ATOM(param("weight")) with default keywords, summed when not scalar.
CASES = {
    "add": ("sum(add({w}, 1.5))", "wide", "normal", lambda w, b: _value("add", [w, 1.5])),
    "sub": ("sum(sub({w}, 1.5))", "wide", "normal", lambda w, b: _value("sub", [w, 1.5])),
    "multiply": ("sum(multiply({w}, 2.5))", "wide", "normal", lambda w, b: _value("multiply", [w, 2.5])),
    "divide": ("sum(divide({w}, 2.5))", "wide", "normal", lambda w, b: _value("divide", [w, 2.5])),
    "matmul": ("sum(matmul({w}, " + _lit(np.arange(8.0)) + "))", "wide", "normal",
               lambda w, b: _value("matmul", [w, np.arange(8.0)])),
    "power": ("sum(power({w}, 3))", "wide", "pos", lambda w, b: _value("power", [w, 3.0], _exponent=3.0)),
    "index": ("sum({w}[1, 2:6])", "wide", "normal", lambda w, b: float(w[1, 2:6].sum())),
    "inner": ("inner({w}, " + _lit(C48) + ")", "wide", "normal", lambda w, b: _value("inner", [w, C48])),
    "hstack": ("sum(hstack({b}, [1, 2]))", "wide", "normal", lambda w, b: _value("hstack", [b, np.array([1.0, 2])])),
    "vstack": ("sum(vstack({w}, " + _lit(C48[:1]) + "))", "wide", "normal",
               lambda w, b: _value("vstack", [w, C48[:1]])),
    "reshape": ("sum_squares(reshape({w}, shape = [8, 4]) - 1)", "wide", "normal",
                lambda w, b: float(((w.reshape(8, 4) - 1) ** 2).sum())),
    "kl_div": ("sum(kl_div({w}, 0.7))", "wide", "pos", lambda w, b: _value("kl_div", [w, 0.7])),
    "rel_entr": ("sum(rel_entr({w}, 0.7))", "wide", "pos", lambda w, b: _value("rel_entr", [w, 0.7])),
    "quad_over_lin": ("quad_over_lin({b}, 2.5)", "wide", "normal", lambda w, b: _value("quad_over_lin", [b, 2.5])),
    "quad_form": ("quad_form({b}, P = " + _lit(SPD4) + ")", "wide", "normal",
                  lambda w, b: _value("quad_form", [b], P=SPD4)),
    "geo_mean": ("geo_mean({b})", "wide", "pos", lambda w, b: _value("geo_mean", [b])),
    "harmonic_mean": ("harmonic_mean({b})", "wide", "pos", lambda w, b: _value("harmonic_mean", [b])),
    "convolve": ("sum(convolve([1, -2, 0.5], {b}))", "wide", "normal",
                 lambda w, b: float(np.sum(_value("convolve", [np.array([1, -2, 0.5]), b])))),
    "lambda_sum_smallest": ("lambda_sum_smallest({w}, k = 2)", "square", "spd",
                            lambda w, b: _value("lambda_sum_smallest", [w], k=2)),
    "group_norm": ("group_norm({w}, groups = rows)", "wide", "normal",
                   lambda w, b: _value("group_norm", [w], groups="rows")),
    "group_l2": ("group_l2({w}, groups = cols)", "wide", "normal", lambda w, b: _value("group_l2", [w], groups="cols")),
    "class_group_l2": ("class_group_l2({w}, labels = [0, 1, 0, 1])", "wide", "normal",
                       lambda w, b: _value("class_group_l2", [w], labels=np.array([0, 1, 0, 1]))),
    "sum_of_norms": ("sum_of_norms({w}, pairs = [[0, 1], [2, 3]])", "wide", "normal",
                     lambda w, b: _value("sum_of_norms", [w], pairs=np.array([[0, 1], [2, 3]]))),
    "lambda_sum_largest": ("lambda_sum_largest({w}, k = 2)", "square", "spd",
                           lambda w, b: _value("lambda_sum_largest", [w], k=2)),
    "sum_largest": ("sum_largest({w}, k = 3)", "wide", "normal", lambda w, b: _value("sum_largest", [w], k=3)),
    "pnorm": ("pnorm({w}, p = 3)", "wide", "normal", lambda w, b: _value("pnorm", [w], p=3)),
    "elastic_net": ("elastic_net({w}, a = 0.3, b = 0.7)", "wide", "normal",
                    lambda w, b: _value("elastic_net", [w], a=0.3, b=0.7)),
    "orthogonality": ("orthogonality({w}, mode = offdiag)", "wide", "normal",
                      lambda w, b: _value("orthogonality", [w], mode="offdiag")),
    "huber": ("huber({w}, M = 0.5)", "wide", "normal", lambda w, b: _value("huber", [w], M=0.5)),
}
#: domains: atoms whose argument must be positive or a symmetric positive definite matrix
POSITIVE = {"log", "sqrt", "entropy", "entr", "inv_pos", "log1p", "geo_mean", "kl_div", "rel_entr"}
SQUARE_SPD = {"log_det", "lambda_max", "lambda_min", "trace", "diag"}


def _torch_atoms() -> list[str]:
    from regspec.compiler.catalogue.base import Atom

    return sorted(n for n, a in ATOMS.items()
                  if not a.constant_only and type(a).torch is not Atom.torch and "torch" not in a.lacks)


def _case(name: str):
    if name in CASES:
        return CASES[name]
    atom = ATOMS[name]
    shape, init = ("square", "spd") if name in SQUARE_SPD else ("wide", "pos" if name in POSITIVE else "normal")
    scalar = atom.shape([(4, 4) if shape == "square" else (4, 8)], dict(atom.static)) == ()
    text = f"{name}({{w}})" if scalar else f"sum({name}({{w}}))"
    return text, shape, init, lambda w, b: _value(name, [w])


def _attach(body: str, model: torch.nn.Module, lr: float = 0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    spec = regspec.load("train t {\n  " + body + "\n}\n")
    return regspec.attach(spec, model, opt), opt


@pytest.mark.parametrize("name", _torch_atoms())
def test_every_atom_as_a_regularizer_adds_its_numpy_value(name):
    text, shape, init, reference = _case(name)
    model = _model(shape, init)
    w0 = model.weight.detach().numpy().copy()
    b0 = model.bias.detach().numpy().copy()
    reg, opt = _attach(f"regularize {text.format(w=W, b=B)} via grad", model)
    penalty = reg.penalty()
    expected = reference(w0, b0)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6, abs=1e-12), text
    opt.zero_grad()
    penalty.backward()
    opt.step()                      # one step through the term: finite weights
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    reg.close()


# atoms whose prox acts on the first of two tensor arguments (kl_div(x, y), rel_entr(x, y) with y
# a constant): train blocks take a prox only for f(one selector), so these join the loss; the
# refusal of `via prox` is tested below
TWO_ARGUMENT_PROX = sorted(n for n, a in ATOMS.items() if a.prox is not None and a.nargs[0] >= 2)
PROX_ATOMS = sorted(n for n, a in ATOMS.items() if a.prox is not None and not a.prox.negated
                    and n not in TWO_ARGUMENT_PROX)
# concave atoms (log, entropy, log_det) have the prox of their negation (they enter a problem as
# -w * f); a train term w * f with w >= 0 is concave and has no prox: `via prox` refuses it
PROX_SKIPPED = {n: "its kernel is the prox of the negated atom" for n, a in ATOMS.items()
                if a.prox is not None and a.prox.negated}
PROX_KW = {"huber": {"M": 0.5}, "elastic_net": {"a": 0.3, "b": 0.7}, "group_norm": {"groups": "rows"},
           "group_l2": {"groups": "cols"}, "class_group_l2": {"labels": [0, 1, 0, 1]}}


def _kw_text(kw: dict) -> str:
    return "".join(f", {k} = {v if not isinstance(v, str) else v}" for k, v in kw.items())


@pytest.mark.parametrize("name", PROX_ATOMS)
def test_every_prox_atom_via_prox_gives_the_kernel_output(name):
    from regspec.backends.torch.prox import KERNELS

    atom = ATOMS[name]
    kw = PROX_KW.get(name, {})
    model = _model("wide", "pos" if name in POSITIVE else "normal")
    w0 = model.weight.detach().clone()
    lr, weight = 0.5, 0.3
    term = f"{name}({W}{_kw_text(kw)})"
    if atom.shape([tuple(w0.shape)], {**atom.static, **kw}) != ():
        term = f"sum({term})"   # an elementwise atom: the prox of sum_i f(x_i) is f's kernel per entry
    reg, opt = _attach(f"regularize {weight} * {term} via prox", model, lr=lr)
    (tb,) = [g for g in reg.engine.groups]
    assert tb.kernel == atom.prox.kernel
    for p in model.parameters():
        p.grad = torch.zeros_like(p)       # the gradient step is the identity: only the prox moves W
    opt.step()
    full = {**atom.static, **{k: (np.asarray(v) if isinstance(v, list) else v) for k, v in kw.items()}}
    hyper = {k: (torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                 else torch.as_tensor(v) if isinstance(v, np.ndarray) else v)
             for k, v in atom.prox_hyper(full, [tuple(w0.shape)]).items()}
    if name == "anchor_l2":
        hyper["anchor"] = w0   # anchored at the weights the run started from
    expected = KERNELS[atom.prox.kernel].fn(w0.clone(), lr * weight, **hyper)
    torch.testing.assert_close(model.weight.detach(), expected, rtol=1e-10, atol=1e-12)
    if name != "anchor_l2":    # at its anchor, the anchor's prox is the identity
        assert not torch.equal(model.weight.detach(), w0), "the prox did nothing"
    reg.close()


def _blocks_ok(w: np.ndarray, n: int, m: int) -> bool:
    for row in w.reshape(w.shape[0], -1):
        for start in range(0, row.size, m):
            if np.count_nonzero(row[start:start + m]) > n:
                return False
    return True


TOL = 1e-9
# set -> (arguments, model shape, selected tensor, membership test on the projected tensor)
SET_CASES = {
    "nonneg": ("", "wide", W, lambda x: x.min() >= 0),
    "nonpos": ("", "wide", W, lambda x: x.max() <= 0),
    "box": ("(-0.1, 0.2)", "wide", W, lambda x: x.min() >= -0.1 - TOL and x.max() <= 0.2 + TOL),
    "simplex": ("(2.0)", "wide", B, lambda x: x.min() >= -TOL and abs(x.sum() - 2.0) <= 1e-9),
    "l1_ball": ("(0.5)", "wide", W, lambda x: np.abs(x).sum() <= 0.5 * (1 + 1e-9)),
    "l2_ball": ("(0.5)", "wide", W, lambda x: np.linalg.norm(x) <= 0.5 * (1 + 1e-9)),
    "linf_ball": ("(0.1)", "wide", W, lambda x: np.abs(x).max() <= 0.1 + TOL),
    "soc": ("", "wide", B, lambda x: np.linalg.norm(x[:-1]) <= x[-1] * (1 + 1e-9) + TOL),
    "psd": ("", "square", W, lambda x: np.allclose(x, x.T, atol=1e-12) and np.linalg.eigvalsh(x).min() >= -1e-9),
    "spectral_ball": ("(0.5)", "wide", W, lambda x: np.linalg.norm(x, 2) <= 0.5 * (1 + 1e-9)),
    "nuclear_ball": ("(0.7)", "wide", W, lambda x: np.linalg.norm(x, "nuc") <= 0.7 * (1 + 1e-8)),
    "transport": ("([0.25, 0.25, 0.25, 0.25], " + _lit(np.full(8, 0.125)) + ")", "wide", W,
                  lambda x: x.min() >= -1e-9 and np.allclose(x.sum(axis=1), 0.25, atol=1e-7)
                  and np.allclose(x.sum(axis=0), 0.125, atol=1e-7)),
    "top_k": ("(3)", "wide", W, lambda x: np.count_nonzero(x) <= 3),
    "nm_sparse": ("(2, 4)", "wide", W, lambda x: _blocks_ok(x, 2, 4)),
    "low_rank": ("(2)", "wide", W, lambda x: np.linalg.svd(x, compute_uv=False)[2] <= 1e-9 * np.linalg.norm(x, 2)),
    "sphere": ("(1.5)", "wide", W, lambda x: abs(np.linalg.norm(x) - 1.5) <= 1e-9),
    "stiefel": ("", "wide", W, lambda x: np.allclose(x @ x.T, np.eye(4), atol=1e-9)),
}
PROJECTION_SETS = sorted(n for n, s in SETS.items() if s.projection is not None)


@pytest.mark.parametrize("name", PROJECTION_SETS)
def test_every_set_with_a_projection_keeps_the_weight_in_it(name):
    assert name in SET_CASES, f"no membership check written for set `{name}`: add one to SET_CASES"
    args, shape, target, member = SET_CASES[name]
    model = _model(shape, "normal")
    reg, opt = _attach(f"constrain {target} in {name}{args}", model)
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    opt.step()                                   # a gradient step, then the projection
    x = (model.weight if target == W else model.bias).detach().numpy()
    assert member(x), f"{name}: the projected tensor is not in the set:\n{x}"
    reg.close()


def test_the_walk_covers_the_catalogue():
    """Atoms without a torch evaluation are compile-time builders or training-runtime terms,
    each with a stated reason (`lacks`) in the catalogue."""
    from regspec.compiler.catalogue.base import Atom

    left = [n for n, a in ATOMS.items() if n not in _torch_atoms() and not a.constant_only]
    assert all(ATOMS[n].lacks.get("torch") for n in left), left
    assert all(type(ATOMS[n]).torch is Atom.torch for n in left)
    from regspec.compiler.catalogue import Curvature

    assert all(ATOMS[n].curvature is Curvature.CONCAVE for n in PROX_SKIPPED), PROX_SKIPPED


@pytest.mark.parametrize("name", TWO_ARGUMENT_PROX)
def test_two_argument_prox_atoms_via_prox_are_a_located_refusal(name):
    model = _model("wide", "pos")
    with pytest.raises(RegspecError) as e:
        _attach(f"regularize 0.3 * sum({name}({W}, 0.5)) via prox", model, lr=0.5)
    first = e.value.first
    assert first.span is not None and first.span.line == 2
    assert "via prox" in first.message and "one selector" in first.message
