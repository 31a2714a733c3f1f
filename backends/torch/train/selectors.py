"""Selectors: which parameters (``param(...)``) or modules (``act(...)``) a term attaches to.

Patterns match whole dotted names from ``model.named_parameters()`` / ``model.named_modules()``:

- glob (default): ``*`` matches within one dotted component (``layers.*.weight`` matches
  ``layers.0.weight`` but not ``layers.0.sub.weight``), ``**`` matches across components
  (``**.weight``: every weight at any depth, ``blocks.**``: everything under ``blocks``), ``?`` one
  character, ``[...]`` a character class;
- ``re:REGEX``: a Python regular expression that must match the *whole* name (``re.fullmatch``);
  patterns that can backtrack exponentially (nested variable-length repeats nothing separates,
  overlapping alternatives in a repeat, backreferences in a repeat, more than 3 unbounded
  quantifiers) are refused with a located error, and names over 1000 characters never match;
- ``type=Linear`` (a class name, optionally ``nn.``-prefixed, or a class): the ``weight`` of
  every module whose class or a base class has that name (case-insensitive), so subclasses of
  ``nn.Linear`` count; biases are not selected (add ``param("**.bias")`` for those), nor is a
  parametrized weight (torch's spectral_norm or weight_norm, an earlier ``reparametrize``: it is
  computed, its trainable tensors are selected by name). With both a pattern and a type, the
  pattern must match the module name or the parameter name.

Results keep the model's registration order, shared parameters appear once (under their first
name; a pattern may name a tied alias such as GPT-2's ``lm_head.weight``), and frozen
parameters (``requires_grad=False``) are included. Selecting nothing is an error naming the
closest real names.
"""
from __future__ import annotations

import difflib
from typing import Iterable

from torch import nn
from torch.nn.utils import parametrize

from regspec.compiler.train_plan import MAX_NAME_LENGTH
from regspec.diagnostics import Span, did_you_mean, error

from ._util import compile_name_pattern, generalize

__all__ = ["select_params", "select_modules", "match_names", "tied_aliases", "parametrized_names"]


def match_names(names: Iterable[str], pattern: str, span: Span | None = None) -> list[str]:
    """The names (in order) that ``pattern`` (glob or ``re:``) matches in full."""
    rx = compile_name_pattern(pattern, span)
    # with the static check, a bound on the name length bounds the time of a match
    return [n for n in names if len(n) <= MAX_NAME_LENGTH and rx.fullmatch(n)]


def _closest(pattern: str, names: list[str], n: int = 3) -> list[str]:
    key = pattern[3:] if pattern.startswith("re:") else pattern
    return difflib.get_close_matches(key, names, n=n, cutoff=0.0)


def _no_match(kind: str, pattern: str, names: list[str], span: Span | None, extra: list[str] = ()) -> Exception:
    general = list(dict.fromkeys(generalize(n) for n in names))
    notes = did_you_mean(pattern, [*general, *names]) + list(extra)
    if names and all(n.split(".", 1)[0] == "_orig_mod" for n in names) and not pattern.startswith(("_orig_mod", "re:")):
        notes.append("the model is wrapped by torch.compile (its names start with `_orig_mod.`): attach to the model "
                     f"before compiling it, or select `_orig_mod.{pattern}`")
    if names:
        close = ", ".join(f"`{c}`" for c in _closest(pattern, names))
        notes.append(f"closest {kind} names: {close} (the model has {len(names)} {kind} names)")
    else:
        notes.append(f"the model has no {kind}s")
    return error(f'`{pattern}` matches none of the model\'s {kind} names', span, notes)


def _type_name(type_: str | type) -> str:
    if isinstance(type_, type):
        return type_.__name__
    name = str(type_)
    for prefix in ("torch.nn.", "nn."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _is_type(module: nn.Module, name: str) -> bool:
    lname = name.lower()
    return any(c.__name__.lower() == lname for c in type(module).__mro__)


def _modules_of_type(model: nn.Module, type_: str | type, span: Span | None) -> list[tuple[str, nn.Module]]:
    if isinstance(type_, type):
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, type_)]
    else:
        found = [(n, m) for n, m in model.named_modules() if _is_type(m, _type_name(type_))]
    if not found:
        present = list(dict.fromkeys(type(m).__name__ for _, m in model.named_modules()))
        raise error(
            f"the model has no module of type `{_type_name(type_)}`",
            span,
            did_you_mean(_type_name(type_), present) + ["module types in the model: " + ", ".join(present)],
        )
    return found


def select_params(
    model: nn.Module, pattern: str | None = None, type: str | type | None = None, *, span: Span | None = None
) -> list[tuple[str, nn.Parameter]]:
    """``[(name, parameter)]`` selected by a glob / ``re:`` pattern and/or a module type.

    ``type=T`` selects ``<module>.weight`` for every module of class T (or a subclass); see the
    module docstring for the pattern syntax. No match raises ``RegspecError``.
    """
    if pattern is None and type is None:
        raise error("param(...) needs a name pattern or `type = ...`", span)
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    if type is None:
        assert pattern is not None
        hits = set(match_names(names, pattern, span))
        aliases = tied_aliases(model)
        hits |= {aliases[a] for a in match_names(list(aliases), pattern, span)}
        if not hits:
            extra: list[str] = []
            computed = match_names(parametrized_names(model), pattern, span)
            if computed:
                first = computed[0]
                owner, _, attr = first.rpartition(".")
                prefix = f"{owner}." if owner else ""
                extra.append(f"`{first}` is reparametrized (its value is computed, not trained): select the tensors "
                             f"it is computed from, `{prefix}parametrizations.{attr}.*` or "
                             f"`{prefix}parametrizations.{attr}.0.*`")
            buffers = match_names([n for n, _ in model.named_buffers()], pattern, span)
            if buffers:
                extra.append(f"`{buffers[0]}` is a buffer (state the forward keeps, such as BatchNorm's running "
                             "statistics), not a parameter: nothing trains it")
            mods = match_names([n for n, _ in model.named_modules() if n], pattern, span)
            if mods:
                shown = ", ".join(f"`{m}`" for m in mods[:4]) + (", ..." if len(mods) > 4 else "")
                extra.append(
                    f"`{pattern}` names modules ({shown}), not parameters: "
                    f"use `{pattern}.weight`, `{pattern}.bias` or `{pattern}.**`"
                )
            raise _no_match("parameter", pattern, names, span, extra)
        return [(n, p) for n, p in named if n in hits]
    modules = _modules_of_type(model, type, span)
    rx = compile_name_pattern(pattern, span) if pattern is not None else None
    by_param = {id(p): n for n, p in named}
    selected: dict[str, nn.Parameter] = {}
    for mname, module in modules:
        w = module._parameters.get("weight")
        if not isinstance(w, nn.Parameter):
            continue
        pname = by_param.get(id(w), f"{mname}.weight" if mname else "weight")
        if rx is not None and not any(len(n) <= MAX_NAME_LENGTH and rx.fullmatch(n) for n in (mname, pname)):
            continue
        selected.setdefault(pname, w)
    if not selected:
        tname = _type_name(type)
        if pattern is None:
            raise error(f"no module of type `{tname}` has a `weight` parameter", span, _weightless_notes(modules))
        raise _no_match("parameter", pattern, [f"{m}.weight" for m, mod in modules
                                               if isinstance(mod._parameters.get("weight"), nn.Parameter)],
                        span, [f"(restricted to weights of `{tname}` modules)"])
    order = {n: i for i, n in enumerate(names)}
    return sorted(selected.items(), key=lambda kv: order.get(kv[0], len(order)))


def _weightless_notes(modules: list[tuple[str, nn.Module]]) -> list[str]:
    """Why modules of the type have no ``weight`` parameter, shown on the first: a parametrized
    weight (torch's spectral_norm or weight_norm, an earlier ``reparametrize``) is computed from
    other tensors, which a name selects; else the parameters it does hold (nn.MultiheadAttention's
    in_proj_weight)."""
    mname, module = modules[0]
    prefix, who = (f"{mname}.", f"`{mname}`") if mname else ("", "the model")
    params = getattr(module, "parametrizations", None)
    if params is not None and "weight" in params:
        originals = [f"{prefix}parametrizations.weight.{n}" for n, _ in params["weight"].named_parameters()]
        note = (f"{who}: its weight is parametrized ({type(params['weight'][0]).__name__}), computed from "
                f"{', '.join(originals)}; select those by name")
    else:
        own = [n for n, _ in module.named_parameters(recurse=False)]
        note = f"{who} holds " + (", ".join(own) + f'; select by name, e.g. param("**.{own[0]}")' if own
                                  else "no parameters of its own")
    more = f" (and {len(modules) - 1} more module(s) of the type)" if len(modules) > 1 else ""
    return [note + more]


def parametrized_names(model: nn.Module) -> list[str]:
    """``<module>.<tensor>`` of every parametrized tensor (the name it had before), under each
    name its module has."""
    return [f"{m}.{attr}" if m else attr for m, mod in model.named_modules(remove_duplicate=False)
            if parametrize.is_parametrized(mod) for attr in mod.parametrizations]


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: name}`` for a parameter registered under several names (tied weights, e.g.
    GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``): ``named_parameters()`` lists the
    first name only, a selector may use either and then selects that one tensor."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[n] = first[id(p)]
        else:
            first[id(p)] = n
    return out


def select_modules(
    model: nn.Module, pattern: str | None = None, type: str | type | None = None, *, span: Span | None = None
) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` whose qualified names match ``pattern`` (glob or ``re:``) and/or whose
    class is ``type``; the root module (name ``""``) is never selected. No match raises."""
    if pattern is None and type is None:
        raise error("act(...) needs a module name pattern or `type = ...`", span)
    named = [(n, m) for n, m in model.named_modules() if n]
    if type is not None:
        typed = {n for n, _ in _modules_of_type(model, type, span)}
        named = [(n, m) for n, m in named if n in typed]
    if pattern is None:
        return named
    names = [n for n, _ in named]
    hits = set(match_names(names, pattern, span))
    if not hits:
        extra = []
        params = match_names([n for n, _ in model.named_parameters()], pattern, span)
        if params:
            extra.append(f"`{pattern}` names parameters ({params[0]}, ...): use param(...) for weights, "
                         "act(...) takes module names")
        raise _no_match("module", pattern, names, span, extra)
    return [(n, m) for n, m in named if n in hits]
