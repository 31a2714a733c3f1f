"""Evaluate constant-and-parameter subexpressions with numpy, given parameter values (weights of
prox terms, objective constants). Variables are not allowed here."""
from __future__ import annotations

from typing import Any

import numpy as np

from regspec.compiler.catalogue import ATOMS
from regspec.compiler.ir import IR


def evaluate(ir: IR, node: int, params: dict[str, np.ndarray], _memo: dict[int, Any] | None = None) -> Any:
    memo = {} if _memo is None else _memo
    if node in memo:
        return memo[node]
    d = ir[node]
    if d["kind"] == "param":
        out = params.get(d["name"], d["value"])
    elif "value" in d and d["kind"] != "var":
        out = d["value"]
    elif d["kind"] == "call":
        kw = {**d.get("static", {}), **{k: evaluate(ir, v, params, memo) for k, v in d.get("tensor_kwargs", {}).items()}}
        out = ATOMS[d["atom"]].numpy([evaluate(ir, a, params, memo) for a in d["args"]], kw)
    else:
        raise ValueError(f"cannot evaluate {ir.label(node)} without a solution")
    memo[node] = out
    return out


def validate_params(ir: IR, values: dict[str, Any] | None, origin: str = "params") -> dict[str, np.ndarray]:
    """Check user-supplied parameter values against the declarations (name, shape, domain)."""
    from regspec.compiler.passes.constants import domain_violation
    from regspec.diagnostics import did_you_mean, error

    out: dict[str, np.ndarray] = {}
    declared = ir.params()
    for name, value in (values or {}).items():
        if name not in declared:
            raise error(f"{origin}: problem `{ir.block_name}` has no parameter `{name}`",
                        notes=did_you_mean(name, declared) + [f"parameters: {', '.join(declared) or 'none'}"])
        d = ir[declared[name]]
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise error(f"{origin}: the value of `{name}` must be numeric, got {value!r}", d["span"]) from None
        if arr.shape != d["shape"]:
            if arr.ndim == 0:
                arr = np.full(d["shape"], float(arr))
            else:
                raise error(f"{origin}: `{name}` has shape {d['shape']}, the value given has shape {arr.shape}",
                            d["span"])
        if not np.all(np.isfinite(arr)):
            raise error(f"{origin}: the value of `{name}` must be finite, got {value!r}", d["span"])
        dom = d.get("domain")
        problem = domain_violation(ir, dom, arr) if dom is not None else None
        if problem:
            raise error(f"{origin}: `{name}` = {value} is outside its declared domain `{ir.text(dom)}`: {problem}",
                        ir[dom]["span"])
        out[name] = arr
    return out
