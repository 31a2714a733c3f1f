"""The trainer generator: a bound train block -> one standalone Python file a PyTorch user could
have written.

The file spells out what the spec decided: the model's architecture (an ``nn.Module`` class for
the built-in models, the import path for a user's model), the data call, the task loss, every
regularizer as a small function holding its catalogue atom's torch expression (``torch_source``),
the training loop (forward, loss = task + sum of weighted terms, backward, optimizer step), each
proximal step and projection after the step with its kernel and step rule in words, the gates
and the schedules. It imports regspec only for the kernel library (``apply_prox_group``), data
loading, the run folder (command line, checkpoints, metrics, summary) and a ``TermBook`` that
keeps the run's reports and finite checks, none of the math. Spec text enters only as escaped
string literals and comments that cannot end early; no absolute path of the compiling machine
is written (paths are relative to the trainer's folder).
"""
from __future__ import annotations

import keyword
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regspec.compiler.train_plan import ScheduleRef
from regspec.compiler.update_plan import plan_has_update

__all__ = ["generate_trainer", "render_scalar", "render_loss"]

_TAKES_TOTAL = ("linear", "cosine", "cubic", "exp", "sine_stages")
#: generated lines stay below this many characters
WIDTH = 99


# ------------------------------------------------------------------ literals and spec text
def _lit(v: Any) -> str:
    """A Python literal for a plan value (numbers, strings, bools, None, lists, dicts)."""
    if isinstance(v, ScheduleRef):
        return render_scalar(v)
    if isinstance(v, float):
        # repr(inf) is the bare name `inf`: spell non-finite values as calls
        return repr(v) if math.isfinite(v) else f"float({str(v)!r})"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_lit(x) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_lit(x)}" for k, x in v.items()) + "}"
    return repr(v)


def render_scalar(v: Any, total: str = "total", spe: str = "steps_per_epoch") -> str:
    """Source for a weight: a number, or the schedule call (ranges in steps divided by ``spe``)."""
    if _is_multiplier(v):   # a Lagrange multiplier (update_plan.MultiplierRef): make_update_rule's
        return f"multipliers[{v.index}]"
    if not isinstance(v, ScheduleRef):
        return _lit(v)
    args = [_lit(a) for a in v.args]
    kwargs = []
    for k, x in v.kwargs.items():
        if isinstance(x, ScheduleRef):
            src = render_scalar(x, total, spe)
        elif v.unit == "steps" and k in ("start", "end", "every"):
            src = f"{_lit(x)} / {spe}"
        else:
            src = _lit(x)
        kwargs.append(f"{k}={src}")
    if v.name in _TAKES_TOTAL and "end" not in v.kwargs:
        kwargs.append(f"total={total}")
    call = f"{v.name}({', '.join(args + kwargs)})"
    return call if v.scale == 1.0 else f"{_lit(v.scale)} * {call}"


def _is_multiplier(v: Any) -> bool:
    from regspec.compiler.update_plan import MultiplierRef

    return isinstance(v, MultiplierRef)


def _schedule_names(v: Any, out: set[str]) -> None:
    if isinstance(v, ScheduleRef):
        out.add(v.name)
        for x in v.kwargs.values():
            _schedule_names(x, out)
    elif isinstance(v, dict):
        for x in v.values():
            _schedule_names(x, out)


_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
_TORCH_FN = {"mean": "torch.mean", "sum": "torch.sum", "abs": "torch.abs", "exp": "torch.exp",
             "log": "torch.log", "sqrt": "torch.sqrt"}


def render_loss(tree: Any, losses: set[str]) -> str:
    """A Python expression for a loss tree (see losses.eval_loss_tree); named losses it uses are
    added to ``losses`` (to import)."""
    if isinstance(tree, str):
        return tree
    if isinstance(tree, (int, float)):
        return _lit(float(tree))
    op, *args = tree
    parts = [render_loss(a, losses) for a in args]
    if op in _INFIX:
        return f"({parts[0]} {_INFIX[op]} {parts[1]})"
    if op == "neg":
        return f"(-{parts[0]})"
    if op == "square":
        return f"({parts[0]} ** 2)"
    if op in _TORCH_FN:
        return f"{_TORCH_FN[op]}({parts[0]})"
    if op in ("log_softmax", "softmax"):
        return f"torch.{op}({parts[0]}, dim=-1)"
    losses.add(op)
    return f"{op}({', '.join(parts)})"


def _one_line(text: str) -> str:
    """Spec text made safe for one line of generated code: characters that are not printable
    (line breaks of any kind, NUL, form feeds...) become their escapes, so a comment or docstring
    line cannot end early or smuggle in a new line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _doc(text: str) -> str:
    """Spec text for a line of the trainer's docstring: escaped so that its value is the text and
    no quote or backslash in it can end the docstring."""
    return _one_line(text).replace("\\", "\\\\").replace('"', '\\"')


def _wrap(text: str, indent: str, prefix: str = "") -> list[str]:
    """Lines of at most WIDTH characters (words longer than a line are kept whole)."""
    width = WIDTH - len(indent) - len(prefix)
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]
    return [f"{indent}{prefix}{ln}" for ln in lines]


def _doc_lines(escaped: str, indent: str) -> list[str]:
    """One docstring line of (already escaped) text, continued with a backslash-newline when it is
    too long: the docstring's value keeps the text on one line, the source lines stay short.
    Breaks fall between words only, so no escape sequence is split (a backslash of the text is
    doubled by the escaping, so the continuation backslash is never taken for part of one)."""
    words = escaped.split(" ")
    lines, cur = [], indent
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        if len(cur) + len(piece) + 1 > WIDTH and cur.strip():
            lines.append(cur + "\\")
            cur = piece
        else:
            cur += piece
    lines.append(cur)
    return lines


def _code(text: str, indent: str) -> list[str]:
    """A line of generated code inside brackets, broken between tokens separated by spaces when
    too long (continuation lines indented four more); only for code whose literals hold no
    spaces (tensor names, keys)."""
    import re

    strings = re.findall(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", text)
    if any(" " in lit for lit in strings):   # a break there would split a literal: keep the line
        return [f"{indent}{text}"]
    lines = _wrap(text, indent)
    return lines[:1] + [f"    {ln}" for ln in lines[1:]]


def _statement(head: str, expr: str, indent: str) -> list[str]:
    """``head expr`` (``x =``, ``return``) on one line, or with ``expr`` in parentheses broken
    between tokens (a statement broken outside brackets is a syntax error)."""
    one = f"{indent}{head} {expr}"
    return [one] if len(one) <= WIDTH else _code(f"{head} ({expr})", indent)


def _comment(text: str, indent: str) -> list[str]:
    return _wrap(_one_line(text), indent, "# ")


def _str_lit(text: str, indent: str) -> str:
    """A string literal for ``text``, split into adjacent literals (inside parentheses) when
    one line would be too long. Each piece is a repr: escaped, so it cannot end early."""
    whole = repr(str(text))
    if len(indent) + len(whole) + 2 <= WIDTH:
        return whole
    room = WIDTH - len(indent) - 3
    pieces, cur = [], ""
    for ch in str(text):
        if len(repr(cur + ch)) > room:
            pieces.append(repr(cur))
            cur = ""
        cur += ch
    pieces.append(repr(cur))
    return "(\n" + "\n".join(f"{indent}{p}" for p in pieces) + ")"


def _kwargs_src(kwargs: dict[str, Any]) -> str:
    if any(not k.isidentifier() or keyword.iskeyword(k) or keyword.issoftkeyword(k) for k in kwargs):
        return "**" + _lit(kwargs)
    return ", ".join(f"{k}={_lit(v)}" for k, v in kwargs.items())


def _call(head: str, args: list[str], indent: str, tail: str = "") -> list[str]:
    """``head(arg, arg, ...)`` (then ``tail``) on one line, or its arguments packed onto
    continuation lines aligned after the parenthesis (one per line when even that is too long)."""
    lines = _call_lines(head, args, indent, WIDTH - len(tail))
    lines[-1] += tail
    return lines


def _call_lines(head: str, args: list[str], indent: str, width: int) -> list[str]:
    one = f"{indent}{head}({', '.join(args)})"
    if len(one) <= width:
        return [one]
    pad = " " * (len(indent) + len(head) + 1)
    if len(pad) > width // 2 or any(len(pad) + len(a) + 2 > width for a in args):
        return [f"{indent}{head}("] + [f"{indent}    {a}," for a in args] + [f"{indent})"]
    lines, cur = [], f"{indent}{head}("
    for i, a in enumerate(args):
        piece = a + (")" if i == len(args) - 1 else ",")
        if len(cur) + len(piece) + 1 > width and cur.strip() and not cur.endswith("("):
            lines.append(cur.rstrip())
            cur = pad
        cur += piece if cur.endswith("(") or cur == pad else " " + piece
    lines.append(cur)
    return lines


# ------------------------------------------------------------------ what each term renders to
@dataclass
class _Term:
    """One statement as the trainer spells it: its key, label, tensors and the source pieces."""

    key: str
    tb: Any
    lowering: str
    label: str
    names: list[str]
    target: str                         # param | act | output
    fn: str | None = None               # the penalty function's name (g of one tensor)
    fn_kwargs: str = ""                 # its keyword arguments at the call
    whole: str | None = None            # g of the whole selection, when not a sum over tensors
    weight: Any = 1.0
    hyper: dict[str, Any] = field(default_factory=dict)
    expr_kinds: list[str] = field(default_factory=list)   # an expression's leaf kinds
    instances: list[list[str]] = field(default_factory=list)  # its tensors, per instance

    @property
    def term(self) -> Any:
        return self.tb.term


def _atom_of(term: Any) -> Any:
    """The catalogue atom a statement applies (None for training-only terms without one yet)."""
    from regspec.compiler import catalogue, train_plan

    name = getattr(term, "atom", None) or term.name
    atom = catalogue.ATOMS.get(catalogue.ALIASES.get(name, name))
    if atom is None:
        # the plan names the atom of its training spellings (l1 -> norm1, nuclear -> nuclear_norm)
        entry = getattr(train_plan, "TERMS", {}).get(term.name)
        atom = catalogue.ATOMS.get(entry.atom) if entry is not None and entry.atom else None
    return atom


def _matrix_term(tb: Any, kw: dict[str, Any]) -> bool:
    """Whether g sees W.reshape(C_out, -1): spectral terms and group norms of rows/cols/channels."""
    return bool(tb.term.matrix or "groups" in kw)


class _Gen:
    """Builds the trainer's source, section by section."""

    def __init__(self, asm: Any, filename: str, out_dir: Path | None):
        self.asm = asm
        self.plan = asm.plan
        self.binding = asm.binding
        self.filename = filename
        self.out_dir = out_dir.resolve() if out_dir is not None else Path.cwd().resolve()
        self.lines: list[str] = []
        self.imports: dict[str, set[str]] = {}
        self.functions: dict[str, list[str]] = {}   # penalty functions by name (emitted once)
        self.sched_names: set[str] = set()
        self.stdlib: set[str] = {"sys"}
        self.terms = self._terms()
        self.anchored = [n for t in self.terms if t.term.name == "anchor_l2" for n in t.names]
        self.jacobian = any(t.term.penalty == "jacobian_fro" for t in self.terms if t.lowering == "loss")

    # ---- small helpers
    def w(self, line: str = "") -> None:
        self.lines.append(line)

    def need(self, module: str, name: str) -> None:
        self.imports.setdefault(module, set()).add(name)

    def rel(self, path: str | Path) -> str:
        """``path`` relative to the trainer's folder (forward slashes); when the two share no
        folder below the root, only its last component (a relative path through the root would
        spell out the compiling machine's layout; --spec-dir gives the folder at run time)."""
        target = Path(path).resolve()
        try:
            common = Path(os.path.commonpath([target, self.out_dir]))
        except ValueError:       # another drive (Windows)
            return target.name or "."
        if common == Path(common.anchor):
            return target.name or "."
        return Path(os.path.relpath(target, self.out_dir)).as_posix()

    def spec_dir(self) -> str:
        """The spec's folder relative to the trainer, or "." when they share no folder below the
        root (then --spec-dir names it at run time; `regspec train` passes it)."""
        base = Path(self.plan.base_dir).resolve()
        common = Path(os.path.commonpath([base, self.out_dir]))
        if common == Path(common.anchor):
            return "."
        return Path(os.path.relpath(base, self.out_dir)).as_posix()

    # ---- terms
    def _terms(self) -> list[_Term]:
        out: list[_Term] = []
        used: set[str] = set()
        for i, tb in enumerate(self.binding.terms):
            t = tb.term
            key = f"line{t.line}" if t.line else f"term{i + 1}"
            while key in used:
                key += "b"
            used.add(key)
            target = t.target.kind if t.target.kind in ("act", "output") else "param"
            item = _Term(key, tb, t.lowering, f"line {t.line}: {t.text}", list(tb.names), target,
                         weight=t.weight)
            if t.lowering != "loss":
                from regspec.backends.torch.train.bind import kernel_hyper

                item.hyper = kernel_hyper(t, tb.options)
            if t.lowering != "projection":
                self._penalty_of(item)
            out.append(item)
        return out

    def _penalty_of(self, item: _Term) -> None:
        """Choose g's source: the catalogue atom's torch expression when it has one, else the
        runtime's evaluation of the training term (named, with its math in the docstring)."""
        t = item.term
        if item.tb.penalty is not None and item.tb.penalty.kind == "expr":
            self._expr_function(item)
            return
        atom = _atom_of(t)
        opts = {k: v for k, v in item.tb.options.items() if not isinstance(v, ScheduleRef)}
        kw = {}
        if atom is not None:
            opts = {**opts, **{k: v for k, v in (getattr(t, "atom_kw", None) or {}).items()
                               if not isinstance(v, ScheduleRef)}}
            kw = {k: opts.get(k, d) for k, d in atom.static.items()}
            kw.update({k: opts[k] for k in atom.tensor_kwargs if k in opts})
        source = atom.torch_source_for(kw) if atom is not None else None
        kind = item.tb.penalty.kind if item.tb.penalty is not None else (t.penalty or t.kernel or t.name)
        if source is not None:
            self._atom_function(item, atom, kw, source)
        else:
            self._runtime_function(item, kind)

    def _atom_function(self, item: _Term, atom: Any, kw: dict[str, Any], source: str) -> None:
        import ast as pyast

        named = [n.id for n in pyast.walk(pyast.parse(source, mode="eval")) if isinstance(n, pyast.Name)]
        args = [k for k in [*atom.static, *atom.tensor_kwargs] if k in named]
        suffix = "_" + kw["groups"] if isinstance(kw.get("groups"), str) else ""
        name = f"{atom.name}{suffix}"
        params = "".join(f", {a}: float" for a in args)
        body = [f"def {name}(x: torch.Tensor{params}) -> torch.Tensor:",
                *_wrap(f'"""{_doc(atom.doc)} (catalogue atom `{atom.name}`)."""', "    ")]
        body.append(f"    return {source}")
        self.functions.setdefault(name, body)
        item.fn = name
        item.fn_kwargs = "".join(f", {a}={_lit(kw[a])}" for a in args)
        if _matrix_term(item.tb, kw):
            item.fn = name
            item.whole = "matrix"

    def _runtime_function(self, item: _Term, kind: str) -> None:
        t = item.term
        math_text = t.math or kind
        opts = {k: v for k, v in item.tb.options.items() if v is not None}
        if kind == "orthogonality":
            self.need("regspec.backends.torch.train.penalties", "orthogonality")
            item.whole = f"orthogonality([params[n] for n in SELECTED[{item.key!r}]]{_kw_tail(opts)})"
        elif kind == "flops":
            self.need("regspec.backends.torch.train.penalties", "flops")
            item.whole = f"flops(tapped(model.taps, SELECTED[{item.key!r}]))"
        elif kind == "jacobian_fro":
            self.need("regspec.backends.torch.train.penalties", "jacobian_fro")
            n_proj = int(opts.get("n_proj", 1))
            item.whole = f"HALF * jacobian_fro(model, x, {n_proj}, generator=generator)"
        else:
            self.need("regspec.backends.torch.train.regularizer", "param_value")
            name = kind
            if kind == "anchor_l2":
                body = [f"def {name}(x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:",
                        *_wrap(f'"""{_doc(math_text)} (training term `{kind}`)."""', "    "),
                        f"    return param_value({kind!r}, x, anchor=anchor)"]
            else:
                hyper = {k: v for k, v in (item.tb.penalty.hyper if item.tb.penalty else {}).items()
                         if v is not None and k != "nonneg"}
                body = [f"def {name}(x: torch.Tensor) -> torch.Tensor:",
                        *_wrap(f'"""{_doc(math_text)} (training term `{kind}`)."""', "    "),
                        f"    return param_value({kind!r}, x{', ' + _lit(hyper) if hyper else ''})"]
            self.functions.setdefault(name, body)
            item.fn = name

    def _expr_function(self, item: _Term) -> None:
        """A statement that is an expression of atoms over selectors: one function of its leaf
        tensors, composed from the atoms' torch sources (an atom used once per variable inline,
        others as their own function)."""
        import ast as pyast

        hyper = item.tb.penalty.hyper
        kinds = list(hyper["kinds"])
        leaves = [f"x{i}" for i in range(len(kinds))]
        body = pyast.unparse(self._expr_ast(hyper["expr"], leaves))
        name = f"{item.key}_term"
        sig = ", ".join(f"{v}: torch.Tensor" for v in leaves)
        lines = [*_comment(item.label, ""),
                 f"def {name}({sig}) -> torch.Tensor:",
                 '    """Its value on one instance of the selectors (the catalogue atoms\' torch',
                 '    expressions, composed)."""']
        lines += _code(f"return ({body})", "    ") if len(body) > WIDTH - 12 else [f"    return {body}"]
        self.functions.setdefault(name, lines)
        item.fn = name
        item.whole = "expr"
        item.expr_kinds = kinds
        item.instances = [list(n) for n in hyper["leaves"]]

    def _expr_ast(self, tree: Any, leaves: list[str]) -> Any:
        import ast as pyast

        from regspec.compiler.catalogue import ATOMS

        kind = tree[0]
        if kind == "sel":
            return pyast.Name(leaves[tree[1]], pyast.Load())
        if kind == "const":
            value = tree[1]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return pyast.parse(_lit(float(value)), mode="eval").body
            ref = leaves[0]
            return pyast.parse(f"torch.as_tensor({_lit(value)}, dtype={ref}.dtype, device={ref}.device)",
                               mode="eval").body
        _, name, args, static, tensor_kw = tree
        atom = ATOMS[name]
        arg_nodes = [self._expr_ast(a, leaves) for a in args]
        kw_nodes = {k: self._expr_ast(v, leaves) for k, v in tensor_kw.items()}
        source = atom.torch_source_for({**static, **{k: True for k in tensor_kw}})
        if source is None or len(arg_nodes) > 2:
            self.need("regspec.compiler.catalogue", "ATOMS")
            static_src = ", ".join([f"{k!r}: {_lit(v)}" for k, v in static.items()]
                                   + [f"{k!r}: {pyast.unparse(v)}" for k, v in kw_nodes.items()])
            call = f"ATOMS[{name!r}].torch([{', '.join(pyast.unparse(a) for a in arg_nodes)}], {{{static_src}}})"
            return pyast.parse(call, mode="eval").body
        tree_src = pyast.parse(source, mode="eval")
        uses = [n.id for n in pyast.walk(tree_src) if isinstance(n, pyast.Name)]
        variables = dict(zip(("x", "y"), arg_nodes))
        if all(uses.count(v) <= 1 for v in variables):
            values = {**variables, **kw_nodes,
                      **{k: pyast.parse(_lit(v), mode="eval").body for k, v in static.items()}}
            return _Substitute(values).visit(tree_src).body
        # a variable used twice: the atom becomes a function of its own (computed once per call)
        params = [k for k in [*atom.static, *atom.tensor_kwargs] if k in uses]
        fname = atom.name
        sig = "".join(f", {p}: Any" for p in params)
        argv = "x: torch.Tensor" + (", y: torch.Tensor" if len(arg_nodes) == 2 else "")
        self.functions.setdefault(fname, [f"def {fname}({argv}{sig}) -> torch.Tensor:",
                                          *_wrap(f'"""{_doc(atom.doc)} (catalogue atom `{atom.name}`)."""', "    "),
                                          f"    return {source}"])
        call_args = [pyast.unparse(a) for a in arg_nodes]
        call_args += [f"{p}={pyast.unparse(kw_nodes[p])}" if p in kw_nodes else f"{p}={_lit(static.get(p))}"
                      for p in params]
        return pyast.parse(f"{fname}({', '.join(call_args)})", mode="eval").body

    def _expr_g(self, item: _Term) -> str:
        """g of an expression statement: summed over its instances; over batch tensors, the mean
        over the samples of the per-sample value."""
        kinds = item.expr_kinds
        leaf = {"param": "params[names[{i}]]", "act": "tapped(model.taps, [names[{i}]])[0]",
                "output": "output", "input": "x", "target": "y.to(output.dtype)"}
        leaves = ", ".join(leaf[k].format(i=i) for i, k in enumerate(kinds))
        inst = f"INSTANCES[{item.key!r}]"
        if all(k == "param" for k in kinds):
            return f"sum({item.fn}({leaves}) for names in {inst})"
        batched = _lit([k != "param" for k in kinds])
        return f"sum(per_sample_mean({item.fn}, [{leaves}], {batched}) for names in {inst})"

    def g_source(self, item: _Term) -> str:
        """The expression of g over the statement's tensors (inside loss_terms/param_terms)."""
        sel = f"SELECTED[{item.key!r}]"
        if item.whole == "expr":
            return self._expr_g(item)
        if item.whole not in (None, "matrix"):
            return item.whole
        view = "matrix_view(params[n])" if item.whole == "matrix" else "params[n]"
        if item.target == "act":
            return f"sum(batch_mean({item.fn}, a{item.fn_kwargs}) for a in tapped(model.taps, {sel}))"
        if item.target == "output":
            return f"batch_mean({item.fn}, output{item.fn_kwargs})"
        if item.term.name == "anchor_l2":
            return f"sum({item.fn}(params[n], anchors[n]) for n in {sel})"
        return f"sum({item.fn}({view}{item.fn_kwargs}) for n in {sel})"

    # ---- the file
    def source(self) -> str:
        body = self._body()
        head = self._header()
        return "\n".join(head + body) + "\n"

    def _header(self) -> list[str]:
        plan, asm = self.plan, self.asm
        lines: list[str] = []
        w = lines.append
        w("#!/usr/bin/env python3")
        spec = self.rel(plan.path) if plan.path not in ("", "<string>") else "<string>"
        lines += _doc_lines(f'"""Trainer for `train {_doc(plan.name)}` in {_doc(spec)}, generated by '
                            "`regspec compile`.", "")
        w("")
        w("Run:")
        fname, name = _doc(self.filename), _doc(plan.name)
        lines += _wrap(f"python {fname} --epochs {asm.epochs} --out runs/{name} [--resume] "
                       "[--device auto|cpu|cuda]", "    ")
        lines += _wrap(f"torchrun --nproc_per_node=2 {fname} --out runs/{name}  (DistributedDataParallel)",
                       "    ")
        w("")
        w("Writes OUT/metrics.jsonl (one line per epoch), OUT/summary.json and OUT/checkpoint.pt")
        w("(atomic), OUT/model.pt and OUT/model.json (what rebuilds the trained network).")
        for line in self._user_code():
            lines += _doc_lines(f"User code it runs: {_doc(line)}", "")
        w("Lowering of each statement (`regspec plan` prints the same with tensor shapes):")
        for item in self.terms:
            t = item.term
            how = {"loss": "loss term (autograd)",
                   "prox": f"fused prox `{t.kernel}` ({item.tb.group.metric if item.tb.group else ''} step)",
                   "projection": f"projection `{t.kernel}`"}[t.lowering]
            lines += _doc_lines(_doc(f"line {t.line}: {t.text}"), "  ")
            lines += _doc_lines(f"-> {_doc(how)} on {_doc(', '.join(item.names))}", "      ")
        w('"""')
        w("from __future__ import annotations")
        w("")
        for module in sorted(self.stdlib):
            w(f"import {module}")
        w("from pathlib import Path")
        w("from typing import Any")
        w("")
        w("import torch")
        w("from torch import nn")
        w("")
        for module in sorted(self.imports):
            names = ", ".join(sorted(self.imports[module]))
            lines += _import_lines(module, names)
        return lines

    def _user_code(self) -> list[str]:
        """One line per import path the block calls, with where the code lives (relative)."""
        from regspec.backends.torch.train.models import user_code_origin

        out = []
        for what, call in (("model", self.plan.model), ("data", self.plan.data),
                           ("optimizer", self.plan.optimizer)):
            if call.kind == "user" and ":" in call.name:
                origin = user_code_origin(call.name.split(":")[0], call.span, f"user {what}")
                out.append(f'{what} "{call.name}" runs {self.rel(origin) if origin else "(not found)"}')
        return out

    def _body(self) -> list[str]:
        self.need("regspec.backends.torch.train", "runtime as rt")
        self.need("regspec.backends.torch.train.book", "Term")
        self.need("regspec.backends.torch.train.book", "TermBook")
        self._constants()
        self._model()
        self._data()
        self._loss()
        self._optimizer()
        self._penalties()
        self._weights()
        self._prox()
        self._book()
        self._main()
        return self.lines

    def _constants(self) -> None:
        plan, asm, w = self.plan, self.asm, self.w
        spec = self.rel(plan.path) if plan.path not in ("", "<string>") else "<string>"
        w("")
        w("HERE = Path(__file__).resolve().parent")
        w(f"SPEC = {_str_lit(spec, '')}  # the spec, relative to this file")
        w(f"TRAIN = {plan.name!r}")
        w(f"FINGERPRINT = {self.fingerprint!r}  # of the spec text: --resume refuses other specs' runs")
        w("#: the spec's folder relative to this file (--spec-dir overrides it): data files it names")
        w(f"SPEC_DIR = {self.spec_dir()!r}")
        w(f"EPOCHS = {asm.epochs}")
        w(f"STEPS = {plan.steps!r}  # total optimizer steps (None: whole epochs)")
        w(f"BATCH = {_lit(plan.batch)}")
        w(f"SEED = {plan.seed}")
        w(f"DEVICE = {plan.device!r}")
        w(f"TASK = {asm.data.task!r}  # classification (accuracy) or regression (MSE) on validation")
        w("#: float slack of epoch gates: t = 29/10 * 10 steps counts as epoch 2.9, not 2.8999...")
        w("EPOCH_SLACK = 1e-9")
        if self.jacobian:
            w("#: the Jacobian term is (1/2) E ||J||_F^2")
            w("HALF = 0.5")
        w("#: what rebuilds the trained network: written as OUT/model.json beside model.pt")
        w("#: (regspec.load_trained(OUT) reads both)")
        w("MODEL = {")
        for key, value in _model_recipe(asm).items():
            self.lines += _wrap(f"{key!r}: {_lit(value)},", "    ")
        w("}")
        w("#: the tensors each statement selected (bound against the model when this file was made)")
        w("SELECTED = {")
        for item in self.terms:
            self.lines += _list_entry(item.key, item.names, "    ")
        w("}")
        exprs = [t for t in self.terms if t.whole == "expr"]
        if exprs:
            w("#: the tensors of each expression statement, one list per instance (in leaf order)")
            w("INSTANCES = {")
            for item in exprs:
                self.lines += _list_entry(item.key, item.instances, "    ")
            w("}")
        w("LABELS = {  # each term's metric name: the keys of metrics.jsonl and summary.json")
        for item in self.terms:
            self.lines += f"    {item.key!r}: {_str_lit(item.tb.term.metric or item.label, '        ')},".split("\n")
        w("}")

    # ---- model
    def _model(self) -> None:
        from regspec.backends.torch.codegen_models import model_class

        plan, asm, w = self.plan, self.asm, self.w
        w("")
        w("")
        cls = model_class(plan.model.name, asm.model_kwargs) if plan.model.kind == "builtin" else None
        if cls is not None:
            src, imports = cls
            for module, name in imports:
                if name:
                    self.need(module, name)
                else:
                    self.stdlib.add(module)
            self.lines += src
            w("")
            w("")
        w("def make_model(spec_dir: Path) -> nn.Module:")
        filled = f" (from the data: {', '.join(asm.filled)})" if asm.filled else ""
        self.lines += _comment(f"model {plan.model.text}{filled}", "    ")
        if cls is not None:
            w("    model = Net()")
        else:
            self.need("regspec.backends.torch.train.models", "build_model")
            self.need("regspec.backends.torch.train.models", "allow_imports")
            w("    # the user's model class, imported by its path and called with these arguments; the")
            w("    # spec's folder is searched for its module wherever this file is run from")
            w("    allow_imports(dirs=[spec_dir])")
            self.lines += _call("model = build_model", [repr(plan.model.name), _kwargs_src(asm.model_kwargs)]
                                if asm.model_kwargs else [repr(plan.model.name)], "    ")
        for rb in self.binding.rewrites:
            rw = rb.rewrite
            self.need("regspec.backends.torch.train.fx", "rewrite_activations")
            what = f"{rb.count} replaced" + (f": {', '.join(rb.modules)}" if rb.modules else "")
            self.lines += _comment(f"line {rw.span.line if rw.span else 0}: {rw.text}  ({what}"
                                   + (", fx graph" if rb.graph else "") + ")", "    ")
            extra = [_kwargs_src(rw.dst_kwargs)] if rw.dst_kwargs else []
            self.lines += _call("model, _ = rewrite_activations", ["model", repr(rw.src), repr(rw.dst), *extra],
                                "    ")
        self.lines += self._weight_steps()
        if self.binding.tap_path:
            acts = []
            for item in self.terms:
                if item.target == "act":
                    acts += [n for n in item.names if n not in acts]
            how = "the fx graph" if self.binding.tap_path == "fx" else f"forward hooks ({self.binding.tap_reason})"
            self.need("regspec.backends.torch.train.fx", "insert_taps")
            self.lines += _comment(f"record the activations the loss terms read (model.taps), on {how}", "    ")
            self.lines += _call("return insert_taps", ["model", _lit(acts)], "    ")
        else:
            w("    return model")

    def _weight_steps(self) -> list[str]:
        """make_model's lines for ``init``, ``reparametrize`` and ``freeze`` (train/reparam.py)."""
        plan = self.plan
        if getattr(plan, "init", None) is None and not getattr(plan, "reparams", None):
            return []
        self.need("regspec.backends.torch.train.reparam", "WeightStep")
        self.need("regspec.backends.torch.train.reparam", "apply_weights")
        lines = []
        if plan.init is not None:
            line = plan.init.span.line if plan.init.span is not None else 0
            lines += _comment(f"line {line}: {plan.init.text}", "    ")
        lines.append("    # starting weights, then reparametrizations (torch.nn.utils.parametrize) and")
        lines.append("    # frozen tensors in the order written; model.pt gets the merged weights")
        lines.append("    steps = [")
        for r in plan.reparams:
            lines += _comment(f"line {r.line}: {r.text}", "        ")
            args = [repr(r.stmt), f"pattern={r.target.pattern!r}"]
            if r.target.type is not None:
                args.append(f"type={r.target.type!r}")
            if r.form is not None:
                args += [f"form={r.form!r}", f"options={_lit(r.options)}"]
            args.append(f"text={_str_lit(_one_line(r.text), '            ')}")
            lines += _call("WeightStep", args, "        ", tail=",")
        lines.append("    ]")
        init = [f"init={plan.init.path!r}"] if plan.init is not None else []
        lines += _call("apply_weights", ["model", "steps", *init, "base_dir=spec_dir"], "    ")
        return lines

    # ---- data, loss, optimizer
    def _data(self) -> None:
        w, d = self.w, self.plan.data
        w("")
        w("")
        w("def make_data(batch: int, seed: int, spec_dir: Path) -> Any:")
        w('    """Training batches (epoch_loader(e): the order depends only on seed and e) and .val."""')
        self.lines += _comment(f"data {d.text}", "    ")
        if d.kind == "source":
            args = [repr(d.name), _lit(list(d.args)), _lit(d.kwargs), "batch=batch", "seed=seed",
                    "base_dir=spec_dir"]
            self.lines += _call("return rt.source_data", args, "    ")
        else:
            self.need("regspec.backends.torch.train.data", "build_data")
            if ":" in d.name:  # the user's loader factory: its module beside the spec
                self.need("regspec.backends.torch.train.models", "allow_imports")
                w("    allow_imports(dirs=[spec_dir])  # the spec's folder is searched for the loader's module")
            kw = dict(d.kwargs)
            split = kw.pop("split", 0.8)
            args = [repr(d.name), f"split={_lit(split)}", "batch=rt.full_batch(batch)", "seed=seed"]
            self.lines += _call("return build_data", args + ([_kwargs_src(kw)] if kw else []), "    ")

    def _loss(self) -> None:
        w, asm = self.w, self.asm
        w("")
        w("")
        w("def task_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:")
        self.lines += _comment(f"loss {self.plan.loss_text}", "    ")
        if isinstance(asm.loss, str):
            from regspec.backends.torch.train.losses import LOSSES

            self.need("regspec.backends.torch.train.losses", asm.loss)
            doc = (LOSSES[asm.loss].__doc__ or "").strip().splitlines()[0]
            self.lines += _comment(f"{asm.loss}: {doc}", "    ")
            w(f"    return {asm.loss}(output, target)")
        else:
            names: set[str] = set()
            src = render_loss(asm.loss, names)
            for n in names:
                self.need("regspec.backends.torch.train.losses", n)
            self.lines += _statement("return", src, "    ")

    def _optimizer(self) -> None:
        w, opt = self.w, self.plan.optimizer
        w("")
        w("")
        w("def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:")
        self.lines += _comment(f"optimizer {opt.text}", "    ")
        okw = dict(opt.kwargs)
        if isinstance(okw.get("lr"), ScheduleRef):
            okw["lr"] = 0.0
            w("    # lr = 0 here: the loop sets it from its schedule before every step")
        self.need("regspec.backends.torch.train.optim", "build_optimizer")
        args = [repr(opt.name), "model.parameters()"] + ([_kwargs_src(okw)] if okw else [])
        self.lines += _call("return build_optimizer", args, "    ")
        if plan_has_update(self.plan):   # transforms, sam, Lagrange multipliers (train/optim.py)
            from regspec.backends.torch.train.optim import update_rule_source

            self.lines += update_rule_source(self.plan, self.asm.binding, render=render_scalar, comment=_comment,
                                             need=self.need, call=_call, string=_str_lit, total=self.asm.epochs,
                                             steps_per_epoch=self.asm.steps_per_epoch)

    # ---- penalties
    def _penalties(self) -> None:
        w = self.w
        w("")
        w("")
        w("# ---------------------------------------------------------------- regularizers: g(x)")
        w("# Each penalty is the catalogue atom's torch expression; a term's weight multiplies it in")
        w("# the training loop (loss side) or sets the prox step (tau = lr * weight).")
        for body in self.functions.values():
            w("")
            w("")
            self.lines += body
        if any(t.whole == "matrix" for t in self.terms) or any(
                t.tb.group is not None and t.tb.group.matrix for t in self.terms):
            w("")
            w("")
            w("def matrix_view(x: torch.Tensor) -> torch.Tensor:")
            w('    """W.reshape(C_out, -1), a view: conv filters flattened, one row per output."""')
            w("    return x if x.dim() == 2 else x.reshape(x.shape[0], -1)")
        if any(t.target == "act" for t in self.terms):
            w("")
            w("")
            w("def tapped(taps: dict[str, torch.Tensor], names: list[str]) -> list[torch.Tensor]:")
            w('    """The recorded activations of the named modules (one called k times gives k)."""')
            w('    return [a for name, a in taps.items() if name.split("#")[0] in names]')
        if any(t.whole == "expr" and any(k != "param" for k in t.expr_kinds) for t in self.terms):
            w("")
            w("")
            w("def per_sample_mean(f: Any, leaves: list[torch.Tensor], batched: list[bool]) -> torch.Tensor:")
            w('    """(1/B) sum_i f(leaves at sample i): batch tensors split along dim 0, parameters')
            w('    shared (torch.func.vmap); a non-scalar f is summed per sample."""')
            w("    in_dims = tuple(0 if b else None for b in batched)")
            w("    values = torch.func.vmap(f, in_dims=in_dims)(*leaves)")
            w("    return values.reshape(values.shape[0], -1).sum(dim=1).mean()")
        if any(t.target in ("act", "output") and t.fn and t.whole != "expr" for t in self.terms):
            w("")
            w("")
            w("def batch_mean(f: Any, a: torch.Tensor, **kw: Any) -> torch.Tensor:")
            w('    """(1/B) sum_i f(a_i) over the B samples on dim 0: f(a) / B, f a sum over entries."""')
            w("    return f(a, **kw) / (a.shape[0] if a.dim() > 1 else 1)")
        self._term_functions()

    def _term_functions(self) -> None:
        w = self.w
        loss = [t for t in self.terms if t.lowering == "loss"]
        # the Jacobian term runs an extra forward (which refreshes the taps): evaluate it last
        loss.sort(key=lambda t: t.term.penalty == "jacobian_fro")
        w("")
        w("")
        w("def loss_terms(model: nn.Module, params: dict[str, torch.Tensor], output: torch.Tensor,")
        w("               x: torch.Tensor, y: torch.Tensor, anchors: dict[str, torch.Tensor],")
        w("               generator: torch.Generator | None) -> dict[str, torch.Tensor]:")
        w('    """g of each loss-side statement, by key (the loop weights and adds them)."""')
        if not loss:
            w("    return {}  # no loss-side terms")
        else:
            w("    return {")
            for t in loss:
                self.lines += _comment(t.label, "        ")
                self.lines += _code(f"{t.key!r}: {self.g_source(t)},", "        ")
            w("    }")
        on_params = [t for t in self.terms if t.lowering != "projection" and t.target == "param"
                     and all(k == "param" for k in t.expr_kinds)]
        w("")
        w("")
        w("@torch.no_grad()")
        w("def param_terms(params: dict[str, torch.Tensor],")
        w("                anchors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:")
        w('    """g of each statement on parameters at the current weights (for the reports)."""')
        if not on_params:
            w("    return {}")
        else:
            w("    return {")
            for t in on_params:
                self.lines += _code(f"{t.key!r}: {self.g_source(t)},", "        ")
            w("    }")

    # ---- weights and schedules
    def _weights(self) -> None:
        w = self.w
        entries: list[tuple[str, Any, str]] = []
        for t in self.terms:
            if t.lowering != "projection":
                entries.append((t.key, t.weight, t.label))
            for k, v in t.hyper.items():
                if isinstance(v, ScheduleRef):
                    entries.append((f"{t.key}.{k}", v, f"{t.label} ({k})"))
        for _, v, _ in entries:
            _schedule_names(v, self.sched_names)
        lr = self.plan.optimizer.kwargs.get("lr")
        _schedule_names(lr, self.sched_names)
        for name in self.sched_names:
            self.need("regspec.backends.torch.train.schedules", name)
        w("")
        w("")
        w("def term_weights(total: int, steps_per_epoch: int" + (", multipliers: list[Any]" if self.plan.multipliers
                                                                 else "") + ") -> dict[str, Any]:")
        w('    """Each term\'s weight (and scheduled set parameters), by key: a number, or a schedule')
        w("    s(t) of the progress t in epochs, laid out over the run's `total` epochs.")
        for name in sorted(self.sched_names):
            self.lines += _schedule_doc(name)
        w('    """')
        w("    return {")
        for key, v, label in entries:
            self.lines += _comment(label, "        ")
            self.lines += _wrap(f"{key!r}: {render_scalar(v)},", "        ")
        w("    }")

    def at(self, key: str, value: Any) -> str:
        """Source of a weight or hyperparameter at time t inside the loop."""
        if isinstance(value, ScheduleRef) or _is_multiplier(value):
            return f"w[{key!r}](t)"
        return f"w[{key!r}]"

    # ---- prox steps and projections
    def _prox(self) -> None:
        w = self.w
        steps = [t for t in self.terms if t.lowering != "loss"]
        if not steps:
            return
        self.need("regspec.backends.torch.fused", "apply_prox_group")
        adaptive = any(t.tb.group.metric == "adaptive" for t in steps if t.lowering == "prox")
        w("")
        w("")
        w("def live(params: dict[str, torch.Tensor], names: list[str], matrix: bool = False) -> list:")
        w('    """The named weights the kernels write in place (frozen ones are left alone); matrix')
        w('    kernels see W.reshape(C_out, -1)."""')
        w("    xs = [params[n].detach() for n in names if params[n].requires_grad]")
        w("    return [matrix_view(x) for x in xs] if matrix else xs")
        if adaptive:
            self._adam_metric()
        w("")
        w("")
        w("@torch.no_grad()")
        w("def prox_steps(params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, step: int,")
        w("               t: float, w: dict[str, Any], anchors: dict[str, torch.Tensor]) -> list[str]:")
        w('    """After optimizer.step() number `step` (from 1), which began at progress t (epochs):')
        w("    each proximal step and projection of the spec, in order, in place, with regspec's")
        w("    kernels (apply_prox_group: x <- argmin_z tau*g(z) + ||z - x||^2 / 2, fused over the")
        w('    tensors). Returns the keys applied (the book checks what they wrote)."""')
        if any(t.lowering == "prox" for t in steps):
            w('    lr = optimizer.param_groups[0]["lr"]  # the learning rate this step used')
        w("    applied = []")
        for t in steps:
            self._prox_block(t)
        w("    return applied")
        self._final_projections(steps)

    def _adam_metric(self) -> None:
        w = self.w
        w("")
        w("")
        w("def adam_inverse_metric(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor],")
        w("                        names: list[str]) -> list | None:")
        w('    """1 / (sqrt(v_hat) + eps) per entry: Adam\'s step is a gradient step in the metric')
        w("    D = diag(sqrt(v_hat) + eps), so a separable prox in that metric takes the per-entry")
        w("    steps lr * w / D_i. Then a fixed point satisfies 0 in grad f + w dg: the lasso threshold")
        w('    keeps its meaning under Adam. None before Adam\'s first step (or without Adam)."""')
        w("    group = optimizer.param_groups[0]")
        w("    out = []")
        w("    for n in names:")
        w("        if not params[n].requires_grad:")
        w("            continue")
        w("        state = optimizer.state.get(params[n], {})")
        w('        v = state.get("max_exp_avg_sq") if group.get("amsgrad") else state.get("exp_avg_sq")')
        w('        if v is None or "step" not in state or "betas" not in group:')
        w("            return None")
        w('        correction = 1.0 - group["betas"][1] ** float(state["step"])')
        w("        # an entry whose gradient was 0 at every step has no scale: the Euclidean step")
        w('        out.append(torch.where(v == 0, 1.0, 1.0 / ((v / correction).sqrt() + group["eps"])))')
        w("    return out")

    def _gate(self, when: Any, ignore_every: bool = False, step: str = "step", t: str = "t") -> str | None:
        if when is None:
            return None
        parts = []
        if when.every is not None and not ignore_every:
            parts.append(f"{step} % {when.every} == 0")
        if when.from_epoch is not None:
            parts.append(f"{t} >= {_lit(float(when.from_epoch))} - EPOCH_SLACK")
        if when.until_epoch is not None:
            parts.append(f"{t} < {_lit(float(when.until_epoch))} - EPOCH_SLACK")
        if when.from_step is not None:
            parts.append(f"{step} >= {when.from_step}")
        if when.until_step is not None:
            parts.append(f"{step} < {when.until_step}")
        return " and ".join(parts) or None

    def _hyper_args(self, t: _Term) -> list[str]:
        out = []
        for k, v in t.hyper.items():
            if k == "anchor":
                out.append(f"anchor=[anchors[n] for n in SELECTED[{t.key!r}] if params[n].requires_grad]")
            elif isinstance(v, ScheduleRef):
                src = f"w[{t.key + '.' + k!r}](t)"
                out.append(f"{k}=round({src})" if k in ("k", "n", "m") else f"{k}={src}")
            else:
                out.append(f"{k}={_lit(v)}")
        return out

    def _prox_block(self, t: _Term) -> None:
        from regspec.backends.torch.prox import KERNELS

        g = t.tb.group
        kernel = KERNELS[g.kernel]
        when = self._gate(g.when)
        ind = "        " if when else "    "
        self.w("")
        self.lines += _comment(t.label, "    ")
        self.lines += _comment(f"kernel `{g.kernel}`: {kernel.math}", "    ")
        xs = f"live(params, SELECTED[{t.key!r}]{', matrix=True' if g.matrix else ''})"
        if t.lowering == "projection":
            self.lines += _comment("a projection x <- P(x) onto the set: the step size plays no part", "    ")
            if when:
                self.w(f"    if {when}:")
            self.lines += _call("apply_prox_group", [repr(g.kernel), xs, "1.0", *self._hyper_args(t)], ind)
            self.w(f"{ind}applied.append({t.key!r})")
            return
        lazy = g.when.every if g.when is not None and g.when.every else 1
        rule = "tau = lr * weight (Euclidean: one proximal-gradient step, the problem's own fixed points)"
        if g.metric == "adaptive":
            rule = ("tau_i = lr * weight / (sqrt(v_hat_i) + eps) per entry (Adam's metric), "
                    "tau = lr * weight before Adam's first step")
        if lazy > 1:
            rule += f"; every {lazy} steps, times {lazy} (the skipped steps' weight at once)"
        self.lines += _comment(f"step rule: {rule}", "    ")
        if when:
            self.w(f"    if {when}:")
        weight = self.at(t.key, t.weight)
        tau = f"{lazy} * lr * {weight}" if lazy > 1 else f"lr * {weight}"
        self.w(f"{ind}xs = {xs}")
        self.w(f"{ind}tau = {tau}")
        steps = "tau"
        if g.metric == "adaptive":
            self.w(f"{ind}dinv = adam_inverse_metric(optimizer, params, SELECTED[{t.key!r}])")
            steps = "tau if dinv is None else [tau * d for d in dinv]"
        self.lines += _call("apply_prox_group", [repr(g.kernel), "xs", steps, *self._hyper_args(t)], ind)
        self.w(f"{ind}applied.append({t.key!r})")

    def _final_projections(self, steps: list[_Term]) -> None:
        w = self.w
        projections = [t for t in steps if t.lowering == "projection"]
        w("")
        w("")
        w("@torch.no_grad()")
        w("def final_projections(params: dict[str, torch.Tensor], last_step: int, last_t: float,")
        w("                      t: float, w: dict[str, Any]) -> list[str]:")
        w('    """Each constraint once more after the last step, if its window (ignoring `every`) is')
        w("    open at the last step (last_step, which began at last_t): the final model satisfies it")
        w('    whatever `every` was. Scheduled set parameters take their value at the end, t."""')
        w("    applied = []")
        for t in projections:
            g = t.tb.group
            when = self._gate(g.when, ignore_every=True, step="last_step", t="last_t")
            ind = "        " if when else "    "
            self.lines += _comment(t.label, "    ")
            if when:
                w(f"    if {when}:")
            xs = f"live(params, SELECTED[{t.key!r}]{', matrix=True' if g.matrix else ''})"
            self.lines += _call("apply_prox_group", [repr(g.kernel), xs, "1.0", *self._hyper_args(t)], ind)
            w(f"{ind}applied.append({t.key!r})")
        w("    return applied")

    # ---- the book (reports, checks, state)
    def _book(self) -> None:
        w = self.w
        if any(t.tb.group is not None and t.tb.group.when is not None for t in self.terms):
            self.need("regspec.backends.torch.train.proxstep", "When")
        w("")
        w("")
        w("def make_book(model: nn.Module, optimizer: torch.optim.Optimizer, w: dict[str, Any],")
        w("              steps_per_epoch: int, anchors: dict[str, torch.Tensor],")
        w("              generator: torch.Generator | None) -> TermBook:")
        w('    """The run\'s bookkeeping, none of its math: per-term values for metrics.jsonl and')
        w("    summary.json, the step clock, the finite check after each step, and the state a")
        w('    checkpoint keeps (clock, anchors, the Jacobian draws\' generator)."""')
        w("    params = dict(model.named_parameters())")
        w("    terms = [")
        for t in self.terms:
            args = [repr(t.key), f"LABELS[{t.key!r}]", repr(t.lowering), repr(t.term.kernel or t.tb.penalty.kind
                                                                             if t.lowering != "loss"
                                                                             else t.tb.penalty.kind)]
            sel = f"SELECTED[{t.key!r}]"
            args.append({"param": f"params={sel}", "act": f"acts={sel}", "output": "output=True"}[t.target])
            if t.lowering != "projection":
                args.append(f"weight=w[{t.key!r}]")
            g = t.tb.group
            if g is not None:
                if t.lowering == "prox":
                    args.append(f"metric={g.metric!r}")
                else:
                    hyper = ", ".join(f"{k!r}: " + (f"w[{t.key + '.' + k!r}]" if isinstance(v, ScheduleRef)
                                                   else _lit(v)) for k, v in t.hyper.items())
                    args.append("hyper={" + hyper + "}")
                if g.when is not None:
                    args.append(f"when={g.when!r}")
                if g.matrix:
                    args.append("matrix=True")
            self.lines += _call("Term", args, "        ", tail=",")
        w("    ]")
        args = ["model", "optimizer", "terms", "steps_per_epoch=steps_per_epoch", "anchors=anchors",
                "generator=generator", "values_now=lambda: param_terms(params, anchors)"]
        self.lines += _call("return TermBook", args, "    ")

    def _forward(self) -> str:
        """The forward call; a model that returns a tuple, dict or ModelOutput (the probe saw it)
        is read as its logits or first tensor, as ``regspec plan`` checked."""
        probe = getattr(self.asm, "probe", None)
        kind = getattr(probe, "output_type", None)
        return "net(x)" if kind is None else f"rt.primary_tensor(net(x))  # a {kind}: its logits or first tensor"

    def _sam_closure(self, loss_terms: list[Any]) -> None:
        """SAM's second pass: the same loss at the perturbed weights (the update rule runs it)."""
        w = self.w
        w("")
        w("            # SAM: the loss and its gradient at the perturbed weights")
        w("            def closure() -> torch.Tensor:")
        w(f"                out = {self._forward()}")
        call = next(ln for ln in reversed(self.lines) if ln.strip().startswith("g = loss_terms("))
        w("                g2 = " + call.strip()[len("g = "):].replace("output", "out"))
        parts = " + ".join(f"{self.at(t.key, t.weight)} * g2[{t.key!r}]" for t in loss_terms)
        self.lines += _statement("loss2 =", "task_loss(out, y)" + (f" + {parts}" if parts else ""), "                ")
        w("                loss2.backward()")
        w("                return loss2")
        w("")
        w("            optimizer.step(closure)")

    # ---- main: the loop
    def _main(self) -> None:
        w = self.w
        lr = self.plan.optimizer.kwargs.get("lr")
        loss_terms = [t for t in self.terms if t.lowering == "loss"]
        has_steps = any(t.lowering != "loss" for t in self.terms)
        w("")
        w("")
        w("def main(argv: list[str] | None = None) -> int:")
        w("    args = rt.parse_args(argv, doc=__doc__, epochs=EPOCHS, batch=BATCH, seed=SEED, device=DEVICE,")
        w("                         name=TRAIN, spec_dir=SPEC_DIR)")
        w("    dist = rt.setup_distributed(args.device)  # a process group under torchrun, else one process")
        w("    dtype = rt.DTYPES[args.dtype]")
        w("    torch.manual_seed(args.seed)  # the same initial weights on every rank")
        w("    data = make_data(args.batch, args.seed, HERE / args.spec_dir)")
        w("    model = make_model(HERE / args.spec_dir).to(dist.device, dtype)")
        w("    params = dict(model.named_parameters())")
        w("    optimizer = make_optimizer(model)")
        w("    steps_per_epoch = len(data.epoch_loader(0))")
        w("    epochs = args.epochs")
        w("    max_steps = STEPS if epochs == EPOCHS else None  # `steps N` in the spec may stop mid-epoch")
        if plan_has_update(self.plan):
            w("    rule = make_update_rule(model, optimizer, epochs, steps_per_epoch)  # hooks on optimizer.step()")
        w("    w = term_weights(epochs, steps_per_epoch" + (", rule.multipliers)" if self.plan.multipliers else ")"))
        if isinstance(lr, ScheduleRef):
            w("    # the learning-rate schedule")
            self.lines += _statement("lr_at =", render_scalar(lr, total="epochs"), "    ")
        anchored = sorted(set(self.anchored))
        if anchored:
            w("    # anchors of the anchor_l2 terms: the weights at the start (restored on --resume)")
            w(f"    anchors = {{n: params[n].detach().clone() for n in {_lit(anchored)}}}")
        else:
            w("    anchors: dict[str, torch.Tensor] = {}")
        if self.jacobian:
            w("    # the random projections of the Jacobian estimate (its state is checkpointed)")
            w("    generator = torch.Generator(device=dist.device).manual_seed(args.seed)")
        else:
            w("    generator = None")
        w("    book = make_book(model, optimizer, w, steps_per_epoch, anchors, generator)")
        w("    # the run folder: refuses to overwrite a run without --overwrite, checks --resume against")
        w("    # it, and writes metrics.jsonl, checkpoint.pt (model, optimizer, book, RNG; atomic),")
        w("    # summary.json, model.pt and model.json")
        w("    run = rt.Run.from_args(args, dist, fingerprint=FINGERPRINT, max_steps=max_steps, model=MODEL,")
        w("                           spec=SPEC, train=TRAIN)")
        w("    initial = book.values()")
        w("    start = run.start(model, optimizer, book)  # --resume: from OUT/checkpoint.pt, else fresh")
        w("    net = rt.distributed_module(model, dist)  # DistributedDataParallel under torchrun")
        w("    stop = epochs if args.stop_after is None else min(epochs, start + args.stop_after)")
        w("    for epoch in range(start, stop):")
        w("        book.start_epoch(epoch)")
        w("        model.train()")
        w("        meter = rt.Meter()")
        w("        batches = rt.shard(data.epoch_loader(epoch), dist)")
        w("        progress = run.progress(batches, epoch, epochs, steps_per_epoch)")
        w("        for i, (x, y) in enumerate(progress):")
        w("            step = epoch * steps_per_epoch + i + 1  # this optimizer step, counted from 1")
        w("            if max_steps is not None and step > max_steps:")
        w("                break")
        w("            t = epoch + i / steps_per_epoch  # progress in epochs when the step begins")
        w("            x, y = rt.to_device(x, y, dist.device, dtype)")
        if isinstance(lr, ScheduleRef):
            w("            for group in optimizer.param_groups:")
            w('                group["lr"] = lr_at(t)')
        w(f"            output = {self._forward()}")
        w("            task = task_loss(output, y)")
        w("            g = loss_terms(model, params, output, x, y, anchors, generator)")
        if loss_terms:
            w("            weighted = {")
            for t in loss_terms:
                self.lines += _wrap(f"{t.key!r}: {self.at(t.key, t.weight)} * g[{t.key!r}],", "                ")
            w("            }")
            w("            loss = task + sum(weighted.values())")
        else:
            w("            weighted: dict[str, torch.Tensor] = {}")
            w("            loss = task")
        w("            optimizer.zero_grad(set_to_none=True)")
        w("            loss.backward()")
        if self.plan.sam is not None:
            self._sam_closure(loss_terms)
        else:
            w("            optimizer.step()")
        if has_steps:
            w("            book.updated()  # (whether the update itself left finite weights)")
            w("            applied = prox_steps(params, optimizer, step, t, w, anchors)")
        else:
            w("            applied = []  # no prox steps or projections")
        w("            book.end_step(loss, task, g, weighted, applied, output, y)  # finite check, clock")
        w("            meter.add(loss, len(x))")
        w("        val = rt.evaluate(model, data.val, task_loss, dist.device, dtype, TASK)")
        w("        # one line of OUT/metrics.jsonl, then OUT/checkpoint.pt (atomic: written beside, then")
        w("        # renamed): the model's and optimizer's state_dicts, book.state_dict() (clock, anchors,")
        w("        # the Jacobian generator), the RNG states and the metrics so far")
        w('        run.end_epoch(epoch, epochs, {"loss": meter.mean(), **val}, book, model, optimizer,')
        w("                      final=epoch + 1 == stop)")
        w("    if stop == epochs:")
        if has_steps:
            w("        # the constraints hold for the final model")
            w("        last_step, last_t = book.last_step")
            w("        book.end_run(final_projections(params, last_step, last_t, book.t, w))")
        w('        x_val = data.tensors.get("x_val")')
        w("        run.finish(book, initial, None if x_val is None else x_val.to(dist.device, dtype))")
        w("    rt.teardown(dist)")
        w("    return 0")
        w("")
        w("")
        w('if __name__ == "__main__":')
        w("    # subnormal floats (momentum of pruned weights decaying towards 1e-38) are ~100x slower on")
        w("    # CPUs; flushing them to zero changes nothing at training precision (set here, for this")
        w("    # process only: the setting is process-wide)")
        w("    torch.set_flush_denormal(True)")
        w("    sys.exit(rt.guard(main))")


def _list_entry(key: str, names: list[str], indent: str) -> list[str]:
    """``'key': ['a', 'b'],`` on one line, or one name per line when too long."""
    one = f"{indent}{key!r}: {_lit(list(names))},"
    if len(one) <= WIDTH:
        return [one]
    return [f"{indent}{key!r}: ["] + [f"{indent}    {n!r}," for n in names] + [f"{indent}],"]


class _Substitute:
    """Replace names in a parsed expression by expression nodes (an atom's source applied to its
    arguments): precedence is kept because nodes, not text, are replaced."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def visit(self, tree: Any) -> Any:
        import ast as pyast

        values = self.values

        class _T(pyast.NodeTransformer):
            def visit_Name(self, node: pyast.Name) -> Any:
                return values.get(node.id, node)

        return _T().visit(tree)


def _kw_tail(opts: dict[str, Any]) -> str:
    return "".join(f", {k}={_lit(v)}" for k, v in opts.items())


def _import_lines(module: str, names: str) -> list[str]:
    if module == "regspec.backends.torch.train" and names == "runtime as rt":
        return ["from regspec.backends.torch.train import runtime as rt"]
    one = f"from {module} import {names}"
    if len(one) <= WIDTH:
        return [one]
    return [f"from {module} import ("] + [f"    {n}," for n in names.split(", ")] + [")"]


def _schedule_doc(name: str) -> list[str]:
    """The schedule's formula, from its own docstring (schedules.py)."""
    from regspec.backends.torch.train import schedules

    fn = getattr(schedules, name, None)
    doc = (getattr(fn, "__doc__", "") or "").strip().splitlines()
    return _wrap(f"{name}: {_doc(doc[0]) if doc else ''}", "    ")


def _model_recipe(asm: Any) -> dict[str, Any]:
    """The model call and the rewrites, in order: what rebuilds the trained network."""
    rewrites = [{"src": rb.rewrite.src, "dst": rb.rewrite.dst, "kwargs": dict(rb.rewrite.dst_kwargs)}
                for rb in asm.binding.rewrites]
    return {"name": asm.plan.model.name, "kwargs": dict(asm.model_kwargs), "rewrites": rewrites}


def generate_trainer(asm: Any, spec_text: str, fingerprint: str, filename: str = "trainer.py",
                     out_dir: str | Path | None = None) -> str:
    """Source of a standalone trainer for an ``assemble.Assembled`` train block. ``filename``:
    the name the usage lines show; ``out_dir``: the folder it is written to (paths in it are
    relative to that folder; default the current directory)."""
    gen = _Gen(asm, filename, Path(out_dir) if out_dir is not None else None)
    gen.fingerprint = fingerprint
    return gen.source()
