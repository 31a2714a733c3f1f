"""The catalogue reference, generated from the catalogue itself.

Every entry comes from the registries the compiler and the backends use (atoms, sets and their
projections, prox kernels, data sources, training terms and sets, schedules, models, losses,
optimizers, training data sets, settings), so the reference cannot drift from what the parser
and the backends accept. ``docs/catalogue.md`` is this module's output
(``python -m regspec.docs_gen --write``; a test fails when it is stale), and ``regspec list KIND``
prints the same entries as text.

Kinds in ``TORCH_FREE`` read pure-Python metadata; the others read the torch backend's
registries (signatures of the real constructors) and import torch.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Entry", "KINDS", "TORCH_FREE", "entries", "render_markdown", "render_text", "main"]


@dataclass
class Entry:
    """One catalogue entry as documented: ``usage`` is how it is written in a spec, ``keywords``
    maps each keyword to its default as written in a spec (``None``: no default, optional or
    required as ``usage`` shows)."""

    name: str
    usage: str
    math: str
    keywords: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def spell(value: Any) -> str | None:
    """A Python default as it is written in a spec (``True`` -> ``true``); None stays None."""
    if value is None or value is inspect.Parameter.empty:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(spell(v) or "" for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _call(name: str, positional: list[str], keywords: dict[str, str | None]) -> str:
    kws = [f"{k} = {v}" if v is not None else f"{k} = ..." for k, v in keywords.items()]
    return f"{name}({', '.join([*positional, *kws])})"


def _first_line(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return re.sub(r"\s+", " ", text.split("\n\n")[0]).strip()


# ---------------------------------------------------------------- problem vocabulary (torch-free)
def _atoms() -> list[Entry]:
    from regspec.compiler.catalogue import ATOMS, OPERATORS

    operator_of = {v: k for k, v in OPERATORS.items()}
    out = []
    for name, atom in sorted(ATOMS.items()):
        lo, hi = atom.nargs
        args = ["x", "y", "z"][:lo] if lo <= 3 else ["x1", "...", f"x{lo}"]
        if hi > lo:
            args = args + ["..."]
        args += [f"{k}?" for k in atom.positional_kw if k not in atom.static and k not in atom.tensor_kwargs]
        keywords = {k: spell(v) for k, v in atom.static.items()}
        keywords.update({k: None for k in atom.tensor_kwargs})
        notes = [f"curvature: {atom.curvature.value}" + (", smooth" if atom.smooth else "")]
        if atom.positional_kw:
            notes.append("may be given positionally after the arguments: " + ", ".join(atom.positional_kw))
        if atom.tensor_kwargs:
            notes.append("data keywords (arrays): " + ", ".join(atom.tensor_kwargs))
        if atom.prox is not None:
            notes.append(f"torch: prox kernel `{atom.prox.kernel}`" + (" (of the negated atom)" if atom.prox.negated else ""))
        if name in operator_of:
            notes.append(f"written `x {operator_of[name]} y`")
        if vars(type(atom)).get("aliases"):
            notes.append("also spelled (CVXPY): " + ", ".join(vars(type(atom))["aliases"]))
        notes += [note for _, note in sorted(vars(type(atom)).get("cvxpy_notes", {}).items())]
        notes += [f"{backend}: {why}" for backend, why in sorted(atom.lacks.items())]
        out.append(Entry(name, _call(name, args, keywords), atom.doc, keywords, notes))
    return out


def _sets() -> list[Entry]:
    from regspec.compiler.catalogue import SETS

    out = []
    for name, entry in sorted(SETS.items()):
        keywords = {k: spell(v) for k, v in entry.static.items()}
        usage = name if not entry.static else _call(name, [], keywords)
        notes = ["convex" if entry.convex else "nonconvex (torch projection only; the answer is a local one)"]
        if entry.positional:
            notes.append("positional order: " + ", ".join(entry.positional))
        if entry.projection:
            notes.append(f"torch: projection kernel `{entry.projection}`")
        notes += [f"{backend}: {why}" for backend, why in sorted(entry.lacks.items())]
        out.append(Entry(name, usage, entry.doc, keywords, notes))
    return out


def _proxes() -> list[Entry]:
    from regspec.compiler.catalogue import ATOMS, SETS

    users: dict[str, list[str]] = {}
    hyper: dict[str, set[str]] = {}
    for name, atom in ATOMS.items():
        if atom.prox is not None:
            users.setdefault(atom.prox.kernel, []).append(f"{name}(...) (prox)")
            hyper.setdefault(atom.prox.kernel, set()).update(k for k, _ in atom.prox.hyper)
    for name, entry in SETS.items():
        if entry.projection:
            users.setdefault(entry.projection, []).append(f"in {name} (projection)")
            hyper.setdefault(entry.projection, set()).update(entry.static)
    return [Entry(kernel, kernel, "; ".join(sorted(users[kernel])),
                  {k: None for k in sorted(hyper[kernel])}) for kernel in sorted(users)]


def _data_sources() -> list[Entry]:
    from regspec.compiler import data

    choices = {"dataset": getattr(data, "_DATASETS", ())}  # names the `name` argument takes
    out = []
    for name, fn in sorted(data.SOURCES.items()):
        positional, keywords = [], {}
        for p in list(inspect.signature(fn).parameters.values())[1:]:  # the first is the context
            if p.kind is p.VAR_POSITIONAL:
                positional.append(f"{p.name}...")
            elif p.default is p.empty:
                positional.append(p.name)
            else:
                keywords[p.name] = spell(p.default)
        notes = [f"name: one of {', '.join(choices[name])}"] if choices.get(name) else []
        out.append(Entry(name, f"data NAME[, NAME...] = {_call(name, positional, keywords)}",
                         _first_line(fn.__doc__), keywords, notes))
    return out


# ---------------------------------------------------------------- training vocabulary
def _terms() -> list[Entry]:
    """The catalogue atoms with a direct training use (``Atom.train``), under their names."""
    from regspec.compiler.catalogue import ALIASES, ATOMS

    aliases: dict[str, list[str]] = {}
    for alias, name in ALIASES.items():
        aliases.setdefault(name, []).append(alias)
    out = []
    for name, atom in sorted(ATOMS.items()):
        t = atom.train
        if t is None:
            continue
        kernel = atom.prox.kernel if atom.prox is not None else None
        keywords = {k: spell(v) if v is not None else None for k, v in t.options}
        target = {"param": 'param("SELECTOR")', "act": 'act("SELECTOR")', "output": "output"}[t.targets[0]]
        lowering = t.default or ("loss" if atom.smooth or kernel is None else "prox")
        notes = ["targets: " + ", ".join(t.targets), f"default lowering: {lowering}"
                 + (f" (prox kernel `{kernel}`)" if kernel else " (loss only)")]
        if aliases.get(name):
            notes.append("also spelled: " + ", ".join(sorted(aliases[name])))
        if t.matrix:
            notes.append("acts on W = x.reshape(C_out, -1)")
        out.append(Entry(name, f"regularize {_call(name, [target], keywords)} * WEIGHT [via prox | via grad]",
                         atom.doc, keywords, notes))
    return out


def _train_sets() -> list[Entry]:
    """The catalogue sets with a projection kernel: the targets of ``constrain``."""
    from regspec.compiler.catalogue import SETS

    out = []
    for name, s in sorted(SETS.items()):
        if s.projection is None:
            continue
        keywords = {k: spell(s.static.get(k)) for k in s.positional}
        usage = f'constrain param("SELECTOR") in {name if not s.positional else _call(name, [], keywords)} [GATES]'
        notes = ["convex" if s.convex else "nonconvex", f"projection kernel `{s.projection}`"]
        if s.arg_aliases:
            notes.append("keyword aliases: " + ", ".join(f"{a} = {b}" for a, b in sorted(s.arg_aliases.items())))
        if s.positional:
            notes.append("positional order: " + ", ".join(s.positional))
        if getattr(s, "matrix_view", False):
            notes.append("acts on W = x.reshape(C_out, -1) (a conv weight's filters as rows)")
        out.append(Entry(name, usage, s.doc, keywords, notes))
    return out


def _signature_entry(name: str, fn: Callable[..., Any], usage_prefix: str, skip: tuple[str, ...] = (),
                     math: str | None = None, rename: dict[str, str] | None = None) -> Entry:
    positional, keywords = [], {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.kind in (p.VAR_KEYWORD,):
            continue
        shown = (rename or {}).get(p.name, p.name)
        if p.kind is p.VAR_POSITIONAL:
            positional.append(f"{shown}...")
        elif p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
            positional.append(shown)
        else:
            keywords[shown] = spell(p.default)
    return Entry(name, usage_prefix + _call(name, positional, keywords),
                 math if math is not None else _first_line(fn.__doc__), keywords)


def _schedules() -> list[Entry]:
    from regspec.backends.torch.train.schedules import SCHEDULES

    out = []
    for name, fn in SCHEDULES.items():
        e = _signature_entry(name, fn, "", skip=("total",), rename={"from_": "from"})
        params = list(inspect.signature(fn).parameters)
        if params[:2] == ["a", "b"]:
            e.notes.append(f"`a -> b` may be written for the first two arguments: {name}(1e-3 -> 0)")
        if "end" in params:
            e.notes.append("p = (t - start) / (end - start) clipped to [0, 1]; t in epochs; "
                           "`end` defaults to the run's last epoch")
        out.append(e)
    return out


# small instances, only to list the module names selectors can match
_MODEL_PROBE = {"linear": {"in_features": 4, "out": 2}, "mlp": {"in_features": 4, "hidden": [8, 8], "out": 2},
                "cnn": {}, "transformer": {"in_features": 4}}


def _module_names(name: str, ctor: Callable[..., Any]) -> list[str]:
    model = ctor(**_MODEL_PROBE.get(name, {}))
    names = {re.sub(r"\.\d+(?=\.|$)", ".*", n) for n, _ in model.named_modules() if n}
    return sorted(names)


def _models() -> list[Entry]:
    from regspec.backends.torch.train.models import ACTIVATIONS, MODELS

    out = []
    for name, ctor in MODELS.items():
        fn = ctor.__init__ if inspect.isclass(ctor) else ctor
        built = type(ctor(**_MODEL_PROBE.get(name, {})))  # a factory function documents its class
        e = _signature_entry(name, fn, "model ", skip=("self",), rename={"in_features": "in"},
                             math=_first_line(built.__doc__))
        e.notes.append("module names: " + ", ".join(f"`{m}`" for m in _module_names(name, ctor)))
        if "act" in e.keywords:
            e.notes.append("act: " + ", ".join(ACTIVATIONS))
        out.append(e)
    out.append(Entry('"package.module:Factory"', 'model "package.module:Factory"(KEYWORD = VALUE, ...)',
                     "your own torch.nn.Module class or factory, called with the keywords; this imports and "
                     "runs your code"))
    return out


def _losses() -> list[Entry]:
    from regspec.backends.torch.train.losses import LOSS_OPS, LOSSES

    out = [Entry(name, f"loss {name}", _first_line(fn.__doc__)) for name, fn in LOSSES.items()]
    out.append(Entry("expression", "loss mean((output - target) ** 2) / 2",
                     "an expression over `output` and `target` with + - * / ** and the functions: "
                     + ", ".join(n for n in LOSS_OPS if n not in ("add", "sub", "mul", "div", "pow", "neg"))))
    return out


def _optimizers() -> list[Entry]:
    from regspec.backends.torch.train.optim import OPTIMIZERS

    hidden = ("params", "foreach", "differentiable", "fused", "capturable")
    out = []
    for name, cls in OPTIMIZERS.items():
        e = _signature_entry(name, cls.__init__, "optimizer ", skip=("self", *hidden),
                             math=f"torch.optim.{cls.__name__}")
        out.append(e)
    out.append(Entry('"package.module:Optimizer"', 'optimizer "package.module:Optimizer"(lr = ...)',
                     "your own torch.optim.Optimizer subclass"))
    return out


def _train_data() -> list[Entry]:
    from regspec.backends.torch.train.data import DATASETS

    common = {"split": "0.8", "standardize": "true", "indexed": "false", "drop_last": "false"}
    shape = {"digits": "1797 x 64, 10 classes (images = true: 1 x 8 x 8)", "breast_cancer": "569 x 30, 2 classes",
             "diabetes": "442 x 10, regression"}
    out = []
    for name, fn in DATASETS.items():
        e = _signature_entry(name, fn, "data ", skip=("seed",))
        e.keywords = {**e.keywords, **common}
        e.usage = "data " + _call(name, [], e.keywords)
        e.math = shape.get(name) or e.math
        e.notes.append("split: training fraction (stratified for classes); standardize: z-score the features "
                       "with the training split's statistics; the block's `seed` seeds splits and shuffles")
        out.append(e)
    out.append(Entry("problem sources", 'data dataset("diabetes", center = true)',
                     "the problem blocks' data sources (see Data sources) also feed a train block"))
    out.append(Entry('"package.module:make_loaders"', 'data "package.module:make_loaders"(KEYWORD = VALUE)',
                     "your own function returning (train_loader, val_loader)"))
    return out


def _settings() -> list[Entry]:
    from regspec.compiler.train_plan import DEVICES, SETTINGS

    meaning = {"epochs": "number of passes over the training split", "steps": "a budget of optimizer steps",
               "batch": "batch size (`full`: the whole training split)", "seed": "seeds model init, split, shuffles",
               "device": "one of " + ", ".join(DEVICES)}
    return [Entry(s, f"{s} VALUE", meaning.get(s, "")) for s in SETTINGS]


def _reparams() -> list[Entry]:
    from regspec.compiler.reparam_plan import REPARAM_FORMS

    out = []
    for name, form in REPARAM_FORMS.items():
        keywords = {k: spell(v) for k, v in form.options.items()}
        usage = 'reparametrize param("SELECTOR") as ' + (_call(name, [], keywords) if form.options else name)
        notes = [f"trains: {form.trains}"]
        if form.matrix:
            notes.append("needs weights of two or more dimensions (viewed as rows x rest)")
        notes += [f"{k}: {', '.join(c)}" for k, c in form.choices.items()]
        out.append(Entry(name, usage, form.math, keywords, notes))
    out.append(Entry("freeze", 'freeze param("SELECTOR")', "the matched tensors are not trained (requires_grad "
                     "false: optimizers, prox steps and projections leave them alone)"))
    out.append(Entry("init", 'init "file.pt"', "starting weights: a state_dict (path relative to the spec) loaded "
                     "with weights_only=True before the reparametrizations; keys and shapes must fit the model"))
    return out


KINDS: dict[str, tuple[str, Callable[[], list[Entry]]]] = {
    "atoms": ("Atoms (functions in problem expressions)", _atoms),
    "sets": ("Sets (`x in SET`, `var x in SET`)", _sets),
    "proxes": ("Prox and projection kernels (torch backend)", _proxes),
    "data": ("Data sources (`data NAME = SOURCE`)", _data_sources),
    "terms": ("Training regularizers (`regularize TERM * WEIGHT`)", _terms),
    "train-sets": ("Training constraints (`constrain TARGET in SET`)", _train_sets),
    "schedules": ("Schedules (weights and radii that change with the epoch)", _schedules),
    "models": ("Models (`model NAME(...)`)", _models),
    "losses": ("Losses (`loss ...`)", _losses),
    "optimizers": ("Optimizers (`optimizer NAME(...)`)", _optimizers),
    "train-data": ("Training data (`data NAME(...)` in a train block)", _train_data),
    "settings": ("Settings of a train block", _settings),
    "reparams": ("What trains (`init`, `reparametrize SELECTOR as FORM`, `freeze`)", _reparams),
}
TORCH_FREE = frozenset({"atoms", "sets", "proxes", "data", "terms", "train-sets", "settings", "reparams"})


def entries(kind: str) -> list[Entry]:
    if kind not in KINDS:
        raise KeyError(kind)
    return KINDS[kind][1]()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    lines = ["# Catalogue reference", "",
             "<!-- generated by `python -m regspec.docs_gen --write` from the catalogue; do not edit -->", "",
             "Everything a spec can name, read from the registries the compiler and backends use. "
             "`regspec list KIND` prints each section from the command line. Keywords show their defaults "
             "as written in a spec; `...` marks a keyword without a default.", ""]
    lines += [f"- [{title}](#{kind})" for kind, (title, _) in KINDS.items()] + [""]
    for kind, (title, fn) in KINDS.items():
        lines += [f'<a id="{kind}"></a>', f"## {title}", "", "| name | usage | meaning | notes |", "|---|---|---|---|"]
        for e in fn():
            lines.append(f"| `{_md_cell(e.name)}` | `{_md_cell(e.usage)}` | {_md_cell(e.math)} | "
                         f"{_md_cell('; '.join(e.notes))} |")
        lines.append("")
    return "\n".join(lines)


def render_text(kind: str) -> str:
    out = []
    for e in entries(kind):
        out.append(e.usage)
        if e.math:
            out.append(f"    {e.math}")
        out += [f"    {n}" for n in e.notes]
    return "\n".join(out)


DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "catalogue.md"
GRAMMAR_PATH = Path(__file__).resolve().parents[1] / "editors" / "reg.tmLanguage.json"


# ---------------------------------------------------------------- editor grammar
def _words(names: Any) -> str:
    """An alternation of plain names, longest first (the regex engines stop at the first that fits)."""
    plain = sorted({n for n in names if re.fullmatch(r"[A-Za-z_]\w*", n)}, key=lambda n: (-len(n), n))
    return "\\b(?:" + "|".join(plain) + ")\\b"


def textmate_grammar() -> dict[str, Any]:
    """A TextMate grammar for `.reg` files (scope ``source.reg``), its word lists read from the catalogue
    and the grammar's keywords, so that highlighting follows the language."""
    from regspec.compiler.catalogue import ALIASES
    from regspec.fmt import CLAUSE_KEYWORDS, STATEMENT_KEYWORDS

    functions = {e.name for k in ("atoms", "data", "terms", "schedules", "models", "losses", "optimizers",
                                  "train-data") for e in entries(k)}
    functions |= set(ALIASES)  # CVXPY spellings of atoms
    sets = {e.name for k in ("sets", "train-sets") for e in entries(k)}
    keywords = sorted((STATEMENT_KEYWORDS | CLAUSE_KEYWORDS) - {"problem", "train"})
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "regspec", "scopeName": "source.reg", "fileTypes": ["reg"],
        "comment": "generated by `python -m regspec.docs_gen --write` from the catalogue; do not edit",
        "patterns": [{"include": f"#{name}"} for name in
                     ("comment", "string", "block", "number", "selector", "keyword", "constant", "set",
                      "function", "call", "operator", "punctuation", "name")],
        "repository": {
            "comment": {"name": "comment.line.number-sign.reg", "match": "#.*$"},
            "string": {"name": "string.quoted.double.reg", "begin": '"', "end": '"|$',
                       "patterns": [{"name": "constant.character.escape.reg", "match": "\\\\."}]},
            "block": {"match": "\\b(problem|train)\\s+([A-Za-z_][A-Za-z_0-9]*)",
                      "captures": {"1": {"name": "keyword.control.block.reg"},
                                   "2": {"name": "entity.name.section.reg"}}},
            "number": {"name": "constant.numeric.reg", "match": "\\b\\d+(?:\\.\\d+)?(?:[eE][-+]?\\d+)?\\b"},
            "selector": {"name": "support.function.selector.reg", "match": "\\b(?:param|act)(?=\\s*\\()"},
            "keyword": {"name": "keyword.other.reg", "match": _words(keywords)},
            "constant": {"name": "constant.language.reg",
                         "match": "\\b(?:true|false|rows|cols|channels|output|target|input|full)\\b"},
            "set": {"name": "support.type.set.reg", "match": _words(sets)},
            "function": {"name": "support.function.reg", "match": _words(functions)},
            "call": {"name": "entity.name.function.reg", "match": "\\b[A-Za-z_][A-Za-z_0-9]*(?=\\s*\\()"},
            "operator": {"name": "keyword.operator.reg", "match": "->|\\*\\*|==|!=|<=|>=|\\.\\.|[-+*/@=<>]"},
            "punctuation": {"name": "punctuation.reg", "match": "[(){}\\[\\],;:.]"},
            "name": {"name": "variable.other.reg", "match": "\\b[A-Za-z_][A-Za-z_0-9]*\\b"},
        },
    }


def render_grammar() -> str:
    import json

    return json.dumps(textmate_grammar(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m regspec.docs_gen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {DOC_PATH} and {GRAMMAR_PATH}")
    ap.add_argument("--check", action="store_true", help="exit 1 if either file is stale")
    args = ap.parse_args(argv)
    outputs = {DOC_PATH: render_markdown(), GRAMMAR_PATH: render_grammar()}
    if args.check:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"{p} is stale: run python -m regspec.docs_gen --write", file=sys.stderr)
        return 1 if stale else 0
    if args.write:
        from regspec.fmt import write_atomic

        for path, text in outputs.items():
            path.parent.mkdir(exist_ok=True)
            if not path.exists():
                path.write_text("")
            write_atomic(path, text)
            print(f"wrote {path}")
        return 0
    sys.stdout.write(outputs[DOC_PATH])
    return 0


if __name__ == "__main__":
    sys.exit(main())
