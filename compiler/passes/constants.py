"""Constant evaluation: load data sources, fold constant subexpressions (data only, never
parameters: those stay symbolic), evaluate static keyword arguments, parameter values, variable
shapes and index keys. Adds ``value`` to constant nodes and ``static`` to calls and sets."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from regspec.compiler.catalogue import ATOMS, SETS
from regspec.compiler.catalogue.base import Curvature
from regspec.compiler.data import SourceContext, call_source, integral_array
from regspec.compiler.ir import DECL_KINDS, IR, size_error
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
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or float(v) != int(v):
        raise error(f"{what} must be an integer, got `{ir.text(node)}` = {_shown(v)}", ir[node]["span"])
    return int(v)


def _shown(v: Any) -> str:
    """A value for a message: short, arrays by shape."""
    if isinstance(v, np.ndarray) and v.size > 6:
        return f"an array of shape {v.shape}"
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= 60 else text[:57] + "..."


def _numeric(ir: IR, node: int, value: Any, what: str) -> np.ndarray:
    """``value`` as a real numeric array, or a located error at ``node``: strings, ragged or
    mixed lists and complex numbers are refused (never cast), and so are inf and NaN. The one
    check every literal, folded constant, data array and parameter value passes through."""
    span = ir[node]["span"]
    if isinstance(value, str):
        raise error(f"{what} must be a number or an array, got the string {value!r}", span)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists
        raise error(f"{what} must be a number or an array, got `{ir.text(node)}`", span) from None
    if arr.dtype.kind == "c":
        raise error(f"{what} holds complex numbers; regspec works with real numbers", span,
                    ["split the real and imaginary parts into two real arrays"])
    if arr.dtype.kind in "USO":
        held = "text" if arr.dtype.kind in "US" else "Python objects"
        raise error(f"{what} must be numeric, but holds {held}: {_shown(value)} (dtype {arr.dtype})", span)
    if arr.dtype.kind not in "biuf":
        raise error(f"{what} must be numeric, got {_shown(value)} (dtype {arr.dtype})", span)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)]
        kinds = ", ".join(k for k, m in (("inf", np.isposinf(bad)), ("-inf", np.isneginf(bad)), ("nan", np.isnan(bad)))
                          if m.any())
        count = f"{bad.size} of its {arr.size} entries are" if arr.ndim else "it is"
        raise error(f"{what} is not finite: {count} {kinds}", span,
                    ["non-finite numbers have no place in a problem: no solver can report a true result"])
    return arr


def _check_size(ir: IR, node: int, shape: tuple[int, ...], what: str) -> None:
    message = size_error(shape)
    if message:
        raise error(f"{what}: {message}", ir[node]["span"])


SET_PARAM_NOTE = ("with a parameter, write the constraint the set stands for, which keeps it symbolic: "
                  "`norm2(x) <= r` for `x in l2_ball(r)`, `x >= lo` and `x <= hi` for `x in box(lo, hi)`")


def _check_static_known(ir: IR, call: int, node: int, key: str, atom: Any, owner: str = "") -> None:
    """A static keyword (of an atom, or an argument of a set) is fixed when the problem is
    compiled: one that depends on a parameter or a variable is refused at the call (not at the
    declaration), with the entry's advice."""
    for kind, what in (("var", "a variable"), ("param", "a parameter")):
        if ir.depends_on_kind(node, kind):
            at = ir[node]["span"] if ir[node]["kind"] not in DECL_KINDS else ir[call]["span"]
            notes = [atom.static_notes[key]] if key in getattr(atom, "static_notes", {}) else []
            if owner.startswith("set "):
                notes.append(SET_PARAM_NOTE)
            raise error(f"the keyword `{key}` of {owner or atom.name} is fixed when the problem is compiled, but "
                        f"`{ir.text(node)}` depends on {what}", at,
                        notes + ["static keywords take numbers and data (`data`, `let` of data)"])


def _static_value(ir: IR, node: int, key: str, default: Any, owner: str, numeric: bool = False) -> Any:
    """A static keyword's value (``M = 2``, ``axis = 0``, ``r = 1``), checked against the kind
    of its default: a number where the default is a number (or everywhere, ``numeric``: the
    arguments of sets are bounds, radii and counts), an integer axis; numbers finite."""
    value = _pyval(_const(ir, node, f"the keyword `{key}` of {owner}"))
    what = f"`{key}` of {owner}"
    numeric_default = numeric or isinstance(default, (int, float)) and not isinstance(default, bool)
    if isinstance(value, str):
        if numeric_default or key == "axis":
            raise error(f"{what} must be {'an integer' if key == 'axis' else 'a number'}, got the string {value!r}",
                        ir[node]["span"])
        return value
    if isinstance(value, (list, np.ndarray)) or numeric_default or isinstance(value, float):
        _numeric(ir, node, value, what)
    if isinstance(default, (int, float)) and not isinstance(default, bool) and np.ndim(value) != 0:
        raise error(f"{what} must be a single number, got {_shown(value)}", ir[node]["span"])
    if key == "axis" and value is not None:
        whole = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53)
        if not whole:
            raise error(f"{what} must be an integer, got {_shown(value)}", ir[node]["span"])
        value = int(value)
    return value


def _index_key(ir: IR, node: int) -> tuple:
    key = []
    for name in sorted((k for k in ir.kwargs(node) if k.startswith("_i")), key=lambda k: int(k[2:])):
        item = ir.kwargs(node)[name]
        d = ir[item]
        if d["kind"] == "slice":
            lo, hi, step = (None if _pyval(_const(ir, a, "a slice bound")) is None else _int(ir, a, "a slice bound")
                            for a in d["args"])
            if step is not None and step <= 0:
                raise error(f"a slice step must be a positive integer, got {step}", ir[d["args"][2]]["span"],
                            ["reversed slices (negative steps) are not supported"] if step < 0 else [])
            key.append(slice(lo, hi, step))
            continue
        v = _const(ir, item, "an index")
        v = _pyval(v)
        if not isinstance(v, bool):
            _numeric(ir, item, v, "an index")
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, np.ndarray) and integral_array(v):
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


INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def _integral(v: Any) -> bool:
    return (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or (
        isinstance(v, np.ndarray) and v.dtype.kind in "iu")


def _check_integer_range(ir: IR, node: int, atom: Any, args: list[Any], kw: dict[str, Any]) -> None:
    """Integer arithmetic stays in 64 bits (literals are 64-bit integers): an integer result n with
    |n| >= 2^63 is a located error. Python's integers would grow without bound (`2 ** 2 ** 62`
    never finishes) and NumPy's wrap around silently. The math runs in float64 first, so a huge
    result is never computed; near the limit it runs exactly on Python integers."""
    if not args or not all(_integral(a) for a in args):
        return
    try:  # the kind of result on integers, seen on ones: log, divide and 2 ** -1 give floats
        if not _integral(atom.numpy([np.ones_like(a) if isinstance(a, np.ndarray) else 1 for a in args], kw)):
            return
    except Exception:  # noqa: BLE001 - the evaluation proper reports it
        return
    try:
        with np.errstate(all="ignore"):
            approx = np.asarray(atom.numpy([np.asarray(a, dtype=float) for a in args], kw), dtype=float)
    except Exception:  # noqa: BLE001 - the exact evaluation reports it
        return
    if approx.size == 0 or np.all(np.abs(approx) < 2.0 ** 62):
        return
    if np.any(np.isnan(approx)):
        return
    if np.all(np.isfinite(approx)) and np.all(np.abs(approx) < 2.0 ** 64):
        exact = atom.numpy([np.asarray(a, dtype=object) if np.ndim(a) else int(a) for a in args], kw)
        if all(INT64_MIN <= int(v) <= INT64_MAX for v in np.ravel(np.asarray(exact, dtype=object))):
            return
    big = float(np.max(np.abs(approx)))
    size = f"is about {big:.3g}" if math.isfinite(big) else "is larger than any 64-bit float"
    raise error(f"integer arithmetic overflows: `{ir.text(node)}` {size}, beyond the 64-bit integers (|n| < 2^63)",
                ir[node]["span"],
                ["write a float for a float result: `2.0 ** 100`, not `2 ** 100`"])


def _check_operands(ir: IR, node: int, atom: str, operands: list[int]) -> None:
    """Every tensor operand of an atom is numeric: a string, a list of strings or a complex or
    non-finite constant is refused at the operand (`norm1(x) + "abc"`)."""
    for a in operands:
        od = ir[a]
        if "value" in od and od["kind"] not in ("param", "var", "data"):
            what = "an operand of `+`" if atom == "add" else f"the argument `{ir.text(a)}` of {atom}"
            _numeric(ir, a, od["value"], what)


def _check_divisor(ir: IR, node: int) -> None:
    """A constant divisor has no zero entry (`f(x) / 0` reached the solvers as an infinite
    coefficient: a point "outside its domain" and a RuntimeWarning on the terminal)."""
    d = ir[node]
    if "value" not in d or d["kind"] in ("param", "var"):
        return
    value = np.asarray(d["value"])
    if value.dtype.kind in "biuf" and np.any(value == 0):
        zeros = int(np.sum(value == 0))
        which = "is 0" if value.size == 1 else f"has {zeros} zero entr{'y' if zeros == 1 else 'ies'}"
        raise error(f"division by zero: the divisor `{ir.text(node)}` {which}", d["span"])


def _check_root(ir: IR, node: int) -> None:
    """An objective or regularizer is numeric (`maximize "abc"`); a constraint involves a
    variable: one between constants is always true or always false, and no solver takes it."""
    d = ir[node]
    if d["kind"] == "constraint":
        if not ir.depends_on_kind(node, "var"):
            raise error(f"the constraint `{ir.text(node)}` involves no variable: it is always true or always "
                        "false", d["span"], ["remove it, or constrain a variable"])
        sides = d["args"] if d["op"] != "in" else d["args"][:1]
    else:
        sides = d["args"]
    what = {"objective": "the objective", "regularize": "a regularizer"}.get(d["kind"], "a side of a constraint")
    for a in sides:
        if "value" in ir[a] and ir[a]["kind"] not in ("param", "var", "data"):
            _numeric(ir, a, ir[a]["value"], what)


def _check_domain(ir: IR, node: int) -> None:
    """A parameter's value lies in its declared domain (`param lam = -1 >= 0` is refused here,
    not by a backend). Bounds domains (>=, <=, box, nonneg, nonpos) are checked numerically."""
    d = ir[node]
    dom = d.get("domain")
    if dom is None:
        return
    problem = domain_violation(ir, dom, d["value"])
    if problem:
        raise error(f"the value of parameter `{d['name']}` is outside its domain: {problem}", d["span"],
                    [f"the domain is declared here: `{ir.text(dom)}` (line {ir[dom]['span'].line})"])


def domain_violation(ir: IR, dom: int, value: Any) -> str | None:
    """Why ``value`` is not in the bounds domain node ``dom`` (None when it is, or when the set
    is not a bounds set). Shared by the parameter defaults and by values given with --set."""
    s = ir[dom]
    lo, hi = {"nonneg": (0.0, None), "nonpos": (None, 0.0)}.get(s["set"], (None, None))
    if s["set"] == "box":
        lo, hi = s["static"].get("lo"), s["static"].get("hi")
    arr = np.asarray(value, dtype=float)
    for bound, bad, word in ((lo, lambda b: arr < b, ">="), (hi, lambda b: arr > b, "<=")):
        if bound is None:
            continue
        try:
            fits = np.broadcast_shapes(np.shape(bound), arr.shape) == arr.shape
        except ValueError:
            fits = False
        if not fits:
            continue  # a bound of the wrong shape: the shape pass reports it, located at the domain
        mask = np.broadcast_to(bad(np.asarray(bound, dtype=float)), arr.shape)
        if mask.any():
            worst = arr[mask].min() if word == ">=" else arr[mask].max()
            return (f"{_shown(float(worst))} is not {word} {_shown(bound if np.ndim(bound) else float(bound))}"
                    + (f" ({int(mask.sum())} of {arr.size} entries)" if arr.ndim else ""))
    return None


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


def _check_list_constant(ir: IR, node: int) -> None:
    """A list literal is data unless it is the argument of a stacking atom (the builder splices
    those): an element holding a variable or parameter is refused at the list, not at the
    element's declaration."""
    for a in ir[node]["args"]:
        if "value" in ir[a] and ir[a]["kind"] not in ("param", "var"):
            continue
        for kind, what in (("var", "a variable"), ("param", "a parameter")):
            if ir[a]["kind"] == kind or ir.depends_on_kind(a, kind):
                stacks = ", ".join(sorted(n for n, atom in ATOMS.items() if atom.sequence_args))
                raise error(f"a list element must be known at compile time, but `{ir.text(a)}` depends on {what}",
                            ir[node]["span"], [f"a list of expressions is taken only as the one argument of {stacks} "
                                               f"(e.g. hstack([a, b])); write the operation on the items instead"])


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
            d["value"] = _numeric(ir, node, ir[d["args"][0]]["value"][d["output"]],
                                  f"data `{d['name']}` from {ir.text(d['args'][0])}")
        elif kind == "list":
            _check_list_constant(ir, node)
            items = [_pyval(_const(ir, a, "a list element")) for a in d["args"]]
            d["value"] = _list_value(items)
        elif kind == "slice":
            continue
        elif kind == "set":
            entry = SETS[d["set"]]
            static = dict(entry.static)
            for name, a in [*zip(entry.positional, d["args"]), *d["kwargs"].items()]:
                _check_static_known(ir, node, a, name, entry, f"set {entry.name}")
                static[name] = _static_value(ir, a, name, entry.static.get(name), f"set {entry.name}",
                                             numeric=True)
            d["static"] = static
        elif kind == "param":
            value_node, *dims = d["args"]
            what = f"the value of parameter `{d['name']}`"
            value = _numeric(ir, value_node, _const(ir, value_node, what), what).astype(float)
            if d.get("has_shape"):
                shape = tuple(_int(ir, n, "a parameter dimension") for n in dims)
                if any(n < 0 for n in shape):
                    raise error(f"parameter `{d['name']}` has a negative dimension: shape {shape}", d["span"])
                _check_size(ir, node, shape, f"parameter `{d['name']}`")
                if value.ndim == 0:
                    value = np.full(shape, float(value))
                elif value.shape != shape:
                    raise error(f"parameter `{d['name']}` is declared with shape {shape} but its value has "
                                f"shape {value.shape}", d["span"], data_origins(ir, value_node))
            d["value"] = value
            d["shape"] = value.shape
            _check_domain(ir, node)
        elif kind in ("objective", "regularize", "constraint"):
            _check_root(ir, node)
        elif kind == "var":
            d["shape"] = tuple(_int(ir, n, f"a dimension of variable `{d['name']}`") for n in d["args"])
            if any(s <= 0 for s in d["shape"]):
                which = "a negative" if any(s < 0 for s in d["shape"]) else "an empty"
                raise error(f"variable `{d['name']}` has {which} dimension: shape {d['shape']}", d["span"])
            _check_size(ir, node, d["shape"], f"variable `{d['name']}`")
        elif kind == "call":
            atom = ATOMS[d["atom"]]
            static = dict(atom.static)
            tensor_kw: dict[str, int] = {}
            for k, v in d["kwargs"].items():
                if k in atom.tensor_kwargs:
                    tensor_kw[k] = v
                elif not k.startswith("_i") and not (atom.name == "compare" and k == "op"):
                    _check_static_known(ir, node, v, k, atom)
                    static[k] = _static_value(ir, v, k, atom.static.get(k), atom.name)
                elif k == "op":
                    static[k] = _pyval(_const(ir, v, "a comparison"))
            if atom.name == "index":
                static["_key"] = _index_key(ir, node)
            d["static"] = static
            d["tensor_kwargs"] = tensor_kw
            operands = d["args"] + list(tensor_kw.values())
            _check_operands(ir, node, atom.name, operands)
            if atom.name == "divide":
                _check_divisor(ir, d["args"][1])
            for k, v in tensor_kw.items():
                if ir.depends_on_kind(v, "var"):
                    raise error(f"`{k}` of {atom.name} must be data or a parameter, but `{ir.text(v)}` depends on "
                                "a variable", ir[v]["span"] if ir[v]["kind"] not in DECL_KINDS else d["span"])
            if atom.name == "power" and "value" in ir[d["args"][1]] and np.ndim(ir[d["args"][1]]["value"]) == 0:
                static["_exponent"] = float(_pyval(ir[d["args"][1]]["value"]))
            if all("value" in ir[a] and ir[a]["kind"] not in ("param", "var") for a in operands):
                kw = {**static, **{k: ir[v]["value"] for k, v in tensor_kw.items()}}
                args = [ir[a]["value"] for a in d["args"]]
                _check_integer_range(ir, node, atom, args, kw)
                try:
                    with np.errstate(all="ignore"):  # a non-finite result is refused just below, located
                        value = atom.numpy(args, kw)
                except NotImplementedError:
                    pass
                except Exception as e:  # an atom's math failing on bad data is the user's error
                    raise error(f"cannot evaluate `{ir.text(node)}` at compile time: {e}", d["span"]) from None
                else:
                    _numeric(ir, node, value, f"`{ir.text(node)}`")
                    d["value"] = value
            elif atom.name == "compare":
                bad = next(a for a in operands if "value" not in ir[a] or ir[a]["kind"] in ("param", "var"))
                what = "a variable" if ir.depends_on_kind(bad, "var") else "a parameter"
                raise error(f"`{ir.text(node)}` compares {what} inside an expression: a comparison here is a mask "
                            "of data, folded at compile time", d["span"],
                            ["a comparison of variables is a constraint: write it under `subject to`"])
            elif atom.constant_only:
                _const(ir, next(a for a in operands if "value" not in ir[a] or ir[a]["kind"] in ("param", "var")),
                       f"the argument of {atom.name}")
    _check_coefficients(ir)
    return ir


def _largest(value: Any) -> float:
    arr = np.abs(np.asarray(value, dtype=float))
    return float(arr.max()) if arr.size else 0.0


def _check_coefficients(ir: IR) -> None:
    """The coefficients of every affine expression of the variables stay finite in float64: a bound
    on their size (the variable 1; `c * e`, `C @ e` multiply it by max|c| (times the inner
    dimension), `e / c` divides it by min|c|, `a + b` adds) is followed up the graph, and an
    expression whose bound overflows is a located error. `x * 1e308 * 10` reached CLARABEL as
    an infinite coefficient ("rejected its options"), the torch backend as an infinite objective.
    Parameters count with their current values; an argument of a nonlinear atom starts afresh."""
    gain: dict[int, float] = {}
    for node in ir.topological():
        d = ir[node]
        if d["kind"] == "var":
            gain[node] = 1.0
        if d["kind"] != "call" or "value" in d:
            continue
        args = d["args"]
        if not any(a in gain for a in args):
            continue
        if ATOMS[d["atom"]].curvature is not Curvature.AFFINE:
            gain[node] = 1.0
            continue
        g = [gain.get(a, 0.0) for a in args]
        consts = [ir[a]["value"] for a in args if a not in gain and "value" in ir[a]]
        with np.errstate(all="ignore"):
            if d["atom"] in ("multiply", "inner"):
                bound = max(g) * max((_largest(c) for c in consts), default=1.0)
            elif d["atom"] == "matmul":  # C @ e or e @ C: sums of `inner` products
                left, right = (np.shape(ir[a].get("value")) if a not in gain else () for a in args)
                inner = (left[-1] if left else right[0] if right else 1) or 1
                bound = max(g) * max((_largest(c) for c in consts), default=1.0) * inner
            elif d["atom"] == "divide":
                divisor = np.abs(np.asarray(consts[0], dtype=float)) if consts else np.ones(1)
                bound = g[0] / float(divisor.min()) if divisor.size and divisor.min() > 0 else g[0]
            elif d["atom"] == "diff":
                k = int(d.get("static", {}).get("k", 1) or 1)
                bound = max(g) * float(math.comb(k, k // 2))  # k-th differences: binomial coefficients
            elif d["atom"] in ("add", "sub"):
                bound = sum(g)
            else:
                bound = max(g)
        if not bound < 1.79e308:  # inf, nan or at the edge of float64
            size = f"up to {bound:.3g}" if math.isfinite(bound) else "beyond 1.8e308"
            raise error(f"the coefficients of `{ir.text(node)}` overflow 64-bit floats (a variable's coefficient "
                        f"is {size})", d["span"],
                        ["rescale the problem: change the units of the data or the variables"])
        gain[node] = float(bound)
