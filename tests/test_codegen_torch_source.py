"""The torch source text of catalogue atoms (what `regspec compile` writes into a trainer's
penalty functions) computes the atom: evaluated on random inputs it equals the atom's own torch
evaluation, for every atom that declares one."""
from __future__ import annotations

import pytest
import torch

from regspec.compiler.catalogue import ATOMS

# static keyword values to try besides the defaults (a source must also follow them, or refuse)
EXTRA_KW = {"huber": [{"M": 0.3}], "elastic_net": [{"a": 0.7, "b": 2.5}],
            "group_norm": [{"groups": "rows"}, {"groups": "channels"}, {"groups": "cols"}],
            "group_l2": [{"groups": "rows"}, {"groups": "cols"}],
            "norm1": [{"axis": 0}], "norm2": [{"axis": 1}]}


def _cases():
    for name, atom in sorted(ATOMS.items()):
        kws = [dict(atom.static), *({**atom.static, **extra} for extra in EXTRA_KW.get(name, []))]
        for kw in kws:
            if atom.torch_source_for(kw) is not None:
                yield pytest.param(name, kw, id=f"{name}-{sorted(kw.items())}")


CASES = list(_cases())


def test_the_common_regularizers_have_a_source():
    named = {c.values[0] for c in CASES}
    assert {"norm1", "norm2", "norm_inf", "sum_squares", "huber", "elastic_net", "nuclear_norm",
            "spectral_norm", "group_norm", "add", "sub", "multiply", "matmul", "transpose", "sum", "abs", "pos", "exp", "log",
            "logistic", "log_sum_exp"} <= named


@pytest.mark.parametrize("name,kw", CASES)
def test_source_equals_the_atom(name, kw):
    atom = ATOMS[name]
    source = atom.torch_source_for(kw)
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 3), (3, 7)):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if name == "log":           # its domain
            x = x.abs() + 0.1
        args = [x]
        if atom.nargs[0] >= 2:      # binary operators: a second operand that fits
            args.append(torch.tensor(2.0, dtype=torch.float64) if name == "power" else
                        torch.randn((shape[1], 4) if name == "matmul" else shape, generator=g, dtype=torch.float64))
        names = dict(zip(("x", "y"), args))
        got = eval(source, {"torch": torch}, {**names, **kw})  # noqa: S307 - catalogue text under test
        want = atom.torch(args, kw)
        # float64 sums of a few dozen terms: agreement to a few ulps of the value
        assert torch.allclose(torch.as_tensor(got), torch.as_tensor(want), rtol=1e-12, atol=1e-12), (name, kw)


def test_a_keyword_the_source_ignores_makes_it_refuse():
    assert ATOMS["norm1"].torch_source_for({"axis": 0}) is None
    assert ATOMS["norm1"].torch_source_for({"axis": None, "w": [1.0, 2.0]}) is None
    assert ATOMS["group_norm"].torch_source_for({"groups": [0, 0, 1]}) is None
    assert ATOMS["huber"].torch_source_for({"M": 2.0}) is not None     # named in the source
