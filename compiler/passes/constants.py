"""Constant evaluation: load data sources, fold constant subexpressions (data only, never
parameters: those stay symbolic), evaluate static keyword arguments, parameter values, variable
shapes and index keys. Adds ``value`` to constant nodes and ``static`` to calls and sets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from regspec.compiler.catalogue import ATOMS, SETS
from regspec.compiler.data import SourceContext, call_source
from regspec.compiler.ir import IR
from regspec.diagnostics import error


def _const(ir: IR, node: int, what: str) -> Any:
    d = ir[node]
    if "value" not in d or d["kind"] in ("param", "var"):
        depends = "a variable" if ir.depends_on_kind(node, "var") else "a parameter" if ir.depends_on_kind(
            node, "param") else "a value unknown at compile time"
        raise error(f"{what} must be known at compile time, but `{ir.text(node)}` depends on {depends}", d["span"])
    return d["value"]


def _pyval(v: Any) -> Any:
    """numpy scalars -> Python numbers, so static keywords compare and print plainly."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return v
    return v


def _int(ir: IR, node: int, what: str) -> int:
    v = _pyval(_const(ir, node, what))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
        raise error(f"{what} must be an integer, got `{ir.text(node)}` = {v!r}", ir[node]["span"])
    return int(v)


def _index_key(ir: IR, node: int) -> tuple:
    key = []
    for name in sorted((k for k in ir.kwargs(node) if k.startswith("_i")), key=lambda k: int(k[2:])):
        item = ir.kwargs(node)[name]
        d = ir[item]
        if d["kind"] == "slice":
            lo, hi = (_pyval(_const(ir, a, "a slice bound")) for a in d["args"])
            key.append(slice(None if lo is None else int(lo), None if hi is None else int(hi)))
            continue
        v = _const(ir, item, "an index")
        v = _pyval(v)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and np.all(v == np.round(v)):
            v = v.astype(np.int64)
        key.append(v)
    return tuple(key)


def _list_value(items: list[Any]) -> Any:
    """A list literal of numbers (or of equal-length lists of numbers) is an array, so that
    ``2 * [1, 2]`` scales it as NumPy would; anything else (strings, ragged) stays a list."""
    if not items:
        return np.zeros(0)
    try:
        arr = np.asarray(items)
    except ValueError:
        return items
    return arr if arr.dtype.kind in "biuf" else items


def data_origins(ir: IR, node: int) -> list[str]:
    """Notes naming where the data behind ``node`` came from: ``X`` (442, 10), from
    dataset("diabetes") at line 3. Used by shape errors that involve data."""
    notes = []
    seen = set()
    for n in sorted(ir.ancestors(node) | {node}):
        d = ir[n]
        if d["kind"] != "data" or d["name"] in seen:
            continue
        seen.add(d["name"])
        where = f" at line {d['span'].line}" if d.get("span") is not None else ""
        shape = f" has shape {tuple(np.shape(d['value']))}" if "value" in d else ""
        notes.append(f"`{d['name']}`{shape}, from {ir.text(d['args'][0])}{where}")
    return notes


def evaluate_constants(ir: IR) -> IR:
    base = Path(ir.meta.get("base_dir", "."))
    for node in ir.topological():
        d = ir[node]
        kind = d["kind"]
        if kind == "const":
            continue
        if kind == "source":
            args = [_pyval(_const(ir, a, "a data source argument")) for a in d["args"]]
            kwargs = {k: _pyval(_const(ir, v, "a data source argument")) for k, v in d["kwargs"].items()}
            values = call_source(d["source"], SourceContext(base, d["span"], d["names"]), args, kwargs)
            if len(values) != len(d["names"]):
                raise error(f"{d['source']}(...) gives {len(values)} array{'s' if len(values) != 1 else ''}, "
                            f"but the declaration names {len(d['names'])}: {', '.join(d['names'])}", d["span"])
            d["value"] = values
        elif kind == "data":
            d["value"] = np.asarray(ir[d["args"][0]]["value"][d["output"]])
        elif kind == "list":
            items = [_pyval(_const(ir, a, "a list element")) for a in d["args"]]
            d["value"] = _list_value(items)
        elif kind == "slice":
            continue
        elif kind == "set":
            entry = SETS[d["set"]]
            static = dict(entry.static)
            for name, a in zip(entry.positional, d["args"]):
                static[name] = _pyval(_const(ir, a, f"the argument `{name}` of {entry.name}"))
            for k, v in d["kwargs"].items():
                static[k] = _pyval(_const(ir, v, f"the argument `{k}` of {entry.name}"))
            d["static"] = static
        elif kind == "param":
            value_node, *dims = d["args"]
            value = np.asarray(_const(ir, value_node, f"the value of parameter `{d['name']}`"), dtype=float)
            if d.get("has_shape"):
                shape = tuple(_int(ir, n, "a parameter dimension") for n in dims)
                if value.ndim == 0:
                    value = np.full(shape, float(value))
                elif value.shape != shape:
                    raise error(f"parameter `{d['name']}` is declared with shape {shape} but its value has "
                                f"shape {value.shape}", d["span"], data_origins(ir, value_node))
            d["value"] = value
            d["shape"] = value.shape
        elif kind == "var":
            d["shape"] = tuple(_int(ir, n, f"a dimension of variable `{d['name']}`") for n in d["args"])
            if any(s <= 0 for s in d["shape"]):
                raise error(f"variable `{d['name']}` has an empty dimension: shape {d['shape']}", d["span"])
        elif kind == "call":
            atom = ATOMS[d["atom"]]
            static = dict(atom.static)
            tensor_kw: dict[str, int] = {}
            for k, v in d["kwargs"].items():
                if k in atom.tensor_kwargs:
                    tensor_kw[k] = v
                elif not k.startswith("_i"):
                    static[k] = _pyval(_const(ir, v, f"the keyword `{k}` of {atom.name}"))
            if atom.name == "index":
                static["_key"] = _index_key(ir, node)
            if atom.name == "power" and "value" in ir[d["args"][1]]:
                static["_exponent"] = float(_pyval(ir[d["args"][1]]["value"]))
            d["static"] = static
            d["tensor_kwargs"] = tensor_kw
            operands = d["args"] + list(tensor_kw.values())
            if all("value" in ir[a] and ir[a]["kind"] not in ("param", "var") for a in operands):
                try:
                    kw = {**static, **{k: ir[v]["value"] for k, v in tensor_kw.items()}}
                    d["value"] = atom.numpy([ir[a]["value"] for a in d["args"]], kw)
                except NotImplementedError:
                    pass
                except Exception as e:  # an atom's math failing on bad data is the user's error
                    raise error(f"cannot evaluate `{ir.text(node)}` at compile time: {e}", d["span"]) from None
            elif atom.constant_only:
                _const(ir, next(a for a in operands if "value" not in ir[a] or ir[a]["kind"] in ("param", "var")),
                       f"the argument of {atom.name}")
    return ir
