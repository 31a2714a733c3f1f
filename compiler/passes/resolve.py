"""Name resolution: every ``ref`` is bound to its declaration or let (and removed); every call names
a known atom, source or set, with known keywords and a valid number of arguments."""
from __future__ import annotations

from regspec.compiler.catalogue import ALIASES, ATOMS, CVXPY_NOTES, SETS, SYMBOLS
from regspec.compiler.data import SOURCES, source_keywords
from regspec.compiler.digraph import NoCycle, find_cycle
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


def _bound_target(ir: IR, node: int, name: str, resolved: dict[int, tuple[int, str]]) -> int:
    """The node ``name`` stands for, following lets that alias other names (``let b = a``) through
    the refs already resolved; a name that comes back to itself is a declaration cycle."""
    target = ir.scope[name]
    seen, chain = {node}, [name]
    while target in resolved or target == node:
        if target in seen:
            what = (f"`{name}` is defined in terms of itself" if len(set(chain)) == 1 else
                    "names are defined in terms of each other: " + " -> ".join(f"`{n}`" for n in chain + [name]))
            raise error(what, ir[node]["span"],
                        ["a `let` or a declaration may use only names that do not depend on it"])
        seen.add(target)
        target, alias = resolved[target]
        chain.append(alias)
    return target


def _declaration_cycle(ir: IR) -> None:
    """Refs that close a loop (``let L = L + 1``; a parameter shaped by a variable shaped by that
    parameter) leave a cycle in the graph: name the declarations on it, at the first of them."""
    try:
        cycle = find_cycle(ir.graph)
    except NoCycle:
        return
    on_cycle = [u for u, _ in cycle]
    named = [(n, ir[n].get("name") or (ir[n].get("let_names") or [None])[0]) for n in on_cycle]
    named = [(n, nm) for n, nm in named if nm is not None]
    names = [nm for _, nm in named]
    first = min(named, key=lambda p: (ir[p[0]].get("decl_span") or ir[p[0]]["span"]).line) if named else None
    span = (ir[first[0]].get("decl_span") or ir[first[0]]["span"]) if first else ir[on_cycle[0]]["span"]
    if len(set(names)) <= 1:
        what = f"`{names[0]}` is defined in terms of itself" if names else "an expression depends on itself"
    else:
        what = "declarations depend on each other in a cycle: " + " -> ".join(f"`{n}`" for n in names + names[:1])
    raise error(what, span, ["a `let` or a declaration may use only names that do not depend on it"])


def resolve_names(ir: IR) -> IR:
    known = set(ir.scope)
    resolved: dict[int, tuple[int, str]] = {}  # ref node -> (its target, its name): lets may alias names
    for node in list(ir.topological()):
        d = ir[node]
        if d["kind"] == "ref":
            name = d["name"]
            if name in ir.scope:
                target = _bound_target(ir, node, name, resolved)
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
            resolved[node] = (target, name)
        elif d["kind"] == "call":
            if d["atom"] in ALIASES:  # CVXPY's spelling of a catalogue entry
                d["atom"] = ALIASES[d["atom"]]
            atom = ATOMS.get(d["atom"])
            span = d.get("func_span") or d["span"]
            if atom is None:
                # a known CVXPY name beats spelling neighbours (`square` is not `same`)
                notes = [CVXPY_NOTES[d["atom"]]] if d["atom"] in CVXPY_NOTES else did_you_mean(
                    d["atom"], (ATOMS.keys() | ALIASES.keys()) - {"add", "sub", "neg", "multiply", "divide",
                                                                  "matmul", "power", "transpose", "index", "compare"})
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
            keywords, most = source_keywords(d["source"])
            _check_keywords(ir, node, set(keywords), d["source"])
            if most is not None and len(d["args"]) > most:
                raise error(f"{d['source']} takes at most {most} positional argument{'s' if most != 1 else ''} "
                            f"({', '.join(keywords[:most])}), got {len(d['args'])}", ir[d["args"][most]]["span"])
        elif d["kind"] == "set":
            entry = SETS.get(d["set"])
            if entry is None:
                from regspec.parser import INTEGER_NOTE

                integral = [INTEGER_NOTE] if d["set"] in ("boolean", "bool", "integer", "int", "binary") else []
                raise error(f"unknown set `{d['set']}`", d.get("func_span") or d["span"],
                            integral + did_you_mean(d["set"], SETS) + [f"sets: {', '.join(sorted(SETS))}"])
            if len(d["args"]) > len(entry.positional):
                raise error(f"{entry.name} takes at most {len(entry.positional)} positional arguments "
                            f"({', '.join(entry.positional) or 'none'})", d["span"])
            _check_keywords(ir, node, set(entry.static), f"set {entry.name}")
    _declaration_cycle(ir)
    _check_depth(ir)
    return ir


def _check_depth(ir: IR) -> None:
    """Expressions built through lets (``let a2 = a1 + x``, ...) may nest deeper than any one
    line: refuse more than the parser's ``MAX_NESTING`` levels here too, before the recursive
    passes and lowerings run. Counted in one topological sweep."""
    from regspec.parser import MAX_NESTING

    depth: dict[int, int] = {}
    for node in ir.topological():
        d = ir[node]
        below = max((depth[a] for a in ir.graph.predecessors(node)), default=0)
        depth[node] = below + (d["kind"] in ("call", "list"))
        if depth[node] > MAX_NESTING:
            raise error(f"expression nested too deeply through `let`: more than {MAX_NESTING} levels", d["span"],
                        ["each call, operator and list inside the lets it uses adds a level; sum a list or an "
                         "array, e.g. sum(x) or sum([a, b, c]), rather than chaining many `+`"])
