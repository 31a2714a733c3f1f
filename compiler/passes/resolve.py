"""Name resolution: every ``ref`` is bound to its declaration or let (and removed); every call names
a known atom, source or set, with known keywords and a valid number of arguments."""
from __future__ import annotations

from regspec.compiler.catalogue import ATOMS, SETS, SYMBOLS
from regspec.compiler.data import SOURCES
from regspec.compiler.ir import IR
from regspec.diagnostics import did_you_mean, error


def _check_keywords(ir: IR, node: int, allowed: set[str], what: str) -> None:
    for key, kid in ir.kwargs(node).items():
        if key.startswith("_"):
            continue
        if key not in allowed:
            raise error(f"{what} has no keyword `{key}`", ir[kid]["span"],
                        did_you_mean(key, allowed) + ([f"its keywords: {', '.join(sorted(allowed))}"]
                                                      if allowed else [f"{what} takes no keywords"]))


def _move_positional_keywords(ir: IR, node: int, atom) -> None:
    """``huber(x, 2)`` -> ``huber(x, M = 2)``: trailing positional arguments past the atom's tensor
    arguments name its ``positional_kw`` keywords, in order."""
    d = ir[node]
    hi = atom.nargs[1]
    args, extra = d["args"][:hi], d["args"][hi:]
    if len(extra) > len(atom.positional_kw):
        return  # the argument count check reports it
    kwargs = dict(d.get("kwargs", {}))
    for name, arg in zip(atom.positional_kw, extra):
        if name in kwargs:
            raise error(f"{atom.name} got `{name}` both by position and as a keyword", ir[arg]["span"])
        kwargs[name] = arg
    ir.set_args(node, args)
    ir.set_kwargs(node, kwargs)


def resolve_names(ir: IR) -> IR:
    known = set(ir.scope)
    for node in list(ir.topological()):
        d = ir[node]
        if d["kind"] == "ref":
            name = d["name"]
            if name in ir.scope:
                target = ir.scope[name]
            elif name in SYMBOLS:
                d.update(kind="const", value=name)
                continue
            else:
                hint = ""
                if name in ATOMS:
                    hint = f"`{name}` is an atom; call it: {name}(...)"
                elif name in SETS:
                    hint = f"`{name}` is a set; use it as `x in {name}`"
                raise error(f"unknown name `{name}`", d["span"],
                            did_you_mean(name, known | SYMBOLS) + ([hint] if hint else []))
            for consumer in list(ir.graph.successors(node)):
                cd = ir[consumer]
                ir.set_args(consumer, [target if a == node else a for a in cd.get("args", [])])
                if cd.get("kwargs"):
                    ir.set_kwargs(consumer, {k: (target if v == node else v) for k, v in cd["kwargs"].items()})
                for key in ("domain",):
                    if cd.get(key) == node:
                        cd[key] = target
            ir.graph.remove_node(node)
        elif d["kind"] == "call":
            atom = ATOMS.get(d["atom"])
            span = d.get("func_span") or d["span"]
            if atom is None:
                notes = did_you_mean(d["atom"], ATOMS.keys() - {"add", "sub", "neg", "multiply", "divide", "matmul",
                                                                "power", "transpose", "index", "compare"})
                if d["atom"] in SOURCES:
                    notes.append(f"{d['atom']}(...) is a data source; use it in `data NAME = {d['atom']}(...)`")
                if d["atom"] in SETS:
                    notes.append(f"`{d['atom']}` is a set; write `x in {d['atom']}(...)`")
                raise error(f"unknown atom `{d['atom']}`", span, notes)
            lo, hi = atom.nargs
            n = len(d["args"])
            if n > hi and atom.positional_kw:
                _move_positional_keywords(ir, node, atom)
                n = len(d["args"])
            if not lo <= n <= hi:
                hi_all = hi + len(atom.positional_kw)
                want = str(lo) if lo == hi_all else f"{lo} to {hi_all}"
                extra = f" ({', '.join(atom.positional_kw)} may be given by position)" if atom.positional_kw else ""
                raise error(f"{atom.name} takes {want} positional argument{'s' if hi_all != 1 else ''}, got {n}"
                            + extra, d["span"])
            if atom.name not in ("index", "compare"):
                _check_keywords(ir, node, set(atom.static) | set(atom.tensor_kwargs), atom.name)
        elif d["kind"] == "source":
            if d["source"] not in SOURCES:
                raise error(f"unknown data source `{d['source']}`", d.get("func_span") or d["span"],
                            did_you_mean(d["source"], SOURCES) + [f"data sources: {', '.join(sorted(SOURCES))}"])
        elif d["kind"] == "set":
            entry = SETS.get(d["set"])
            if entry is None:
                raise error(f"unknown set `{d['set']}`", d.get("func_span") or d["span"],
                            did_you_mean(d["set"], SETS) + [f"sets: {', '.join(sorted(SETS))}"])
            if len(d["args"]) > len(entry.positional):
                raise error(f"{entry.name} takes at most {len(entry.positional)} positional arguments "
                            f"({', '.join(entry.positional) or 'none'})", d["span"])
            _check_keywords(ir, node, set(entry.static), f"set {entry.name}")
    return ir
