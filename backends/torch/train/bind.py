"""Bind a ``TrainPlan`` (compiler/train_plan.py) to a model: rewrites, selectors, taps, penalties
and prox groups. Used by ``regspec.attach``, by the trainer generator (which spells the result
out) and by ``regspec plan`` (which prints it).

Order: (1) ``rewrite A -> B`` swaps modules in place and, when the model traces, calls of A's
functional form in the fx graph; (2) selectors are resolved against the rewritten model (a
selector matching nothing is a located error naming the closest names); (3) activation terms get
taps: on the fx graph when the model traces, else forward hooks (and ``plan`` says which and why);
(4) each term becomes a ``Penalty`` (loss side) or a ``ProxGroup`` (after the optimizer step).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from regspec.compiler.train_plan import (GatePlan, RewritePlan, ScheduleRef, TermPlan, TrainPlan, projection_conflict,
                                         projections_compatible)
from regspec.diagnostics import error

from .fx import TappedModel, insert_taps, rewrite_activations, trace
from .proxstep import ADAPTIVE_KERNELS, ProxGroup, When
from .regularizer import Penalty
from .reparam import apply_plan_weights
from .schedules import build_schedule
from .selectors import select_modules, select_params

__all__ = ["Binding", "TermBinding", "RewriteBinding", "make_scalar", "make_when", "apply_rewrites",
           "bind_plan", "kernel_hyper", "term_metric", "ADAPTIVE_OPTIMIZERS", "type_batch_terms"]

#: optimizers whose state has Adam's second moments (the `adaptive` prox metric applies)
ADAPTIVE_OPTIMIZERS = ("adam", "adamw")


def make_scalar(value: Any, total: float | None, steps_per_epoch: int | None) -> Any:
    """A number, or a ``Schedule`` of t (epochs) built from a ``ScheduleRef``."""
    if not isinstance(value, ScheduleRef):
        return value
    kwargs = dict(value.kwargs)
    if value.unit == "steps":
        if not steps_per_epoch:
            raise error(f"`{value.text()}` counts steps; the steps per epoch are unknown here", value.span,
                        ["give steps_per_epoch to attach(...), or write the range in epochs"])
        for k in ("start", "end", "every"):
            if k in kwargs:
                kwargs[k] = kwargs[k] / steps_per_epoch
    if isinstance(kwargs.get("then"), ScheduleRef):
        kwargs["then"] = make_scalar(kwargs["then"], total, steps_per_epoch)
    sched = build_schedule(value.name, *value.args, span=value.span, total=total, **kwargs)
    return sched if value.scale == 1.0 else value.scale * sched


def make_when(gate: GatePlan | None, steps_per_epoch: int | None) -> When | None:
    """A ``When`` from a ``GatePlan`` (``every N epochs`` becomes N * steps_per_epoch steps)."""
    if gate is None:
        return None
    every = gate.every
    if every is not None and gate.every_unit == "epochs":
        if not steps_per_epoch:
            raise error(f"`every {every} epochs` needs the steps per epoch, unknown here",
                        notes=["give steps_per_epoch to attach(...), or write `every N steps`"])
        every *= steps_per_epoch
    kw: dict[str, Any] = {"every": every}
    if gate.start is not None:
        kw["from_step" if gate.start_unit == "step" else "from_epoch"] = (
            int(gate.start) if gate.start_unit == "step" else gate.start)
    if gate.stop is not None:
        kw["until_step" if gate.stop_unit == "step" else "until_epoch"] = (
            int(gate.stop) if gate.stop_unit == "step" else gate.stop)
    return When(**kw)


@dataclass
class RewriteBinding:
    rewrite: RewritePlan
    count: int
    modules: list[str]
    graph: bool  # functional calls were rewritten in the fx graph


@dataclass
class TermBinding:
    term: TermPlan
    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    penalty: Penalty | None = None
    group: ProxGroup | None = None
    metric: str | None = None
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the term's options as applied (layouts known)
    selector_names: list[list[str]] = field(default_factory=list)  # per selector of an expression term
    typed: Any = None  # the expression typed against the bound shapes (compiler/train_terms.TermExpr)


@dataclass
class Binding:
    plan: TrainPlan
    model: nn.Module            # after rewrites
    module: nn.Module           # what to call: the tapped model (or the model without act terms)
    graph: str                  # "traced" or why tracing failed
    tap_path: str | None        # fx | hooks | None (no activation terms)
    tap_reason: str
    rewrites: list[RewriteBinding]
    terms: list[TermBinding]
    weights: Any = None         # reparam.WeightsReport: init, reparametrizations, frozen tensors

    @property
    def penalties(self) -> list[Penalty]:
        return [t.penalty for t in self.terms if t.penalty is not None]

    @property
    def prox_groups(self) -> list[ProxGroup]:
        return [t.group for t in self.terms if t.group is not None]


def apply_rewrites(model: nn.Module, rewrites: Sequence[RewritePlan]) -> tuple[nn.Module, list[RewriteBinding]]:
    """Apply ``rewrite A -> B`` statements in order; each must replace something."""
    out = []
    for rw in rewrites:
        before = {n: type(m) for n, m in model.named_modules()}
        model, count = rewrite_activations(model, rw.src, rw.dst, span=rw.span, **rw.dst_kwargs)
        swapped = [n for n, m in model.named_modules() if n in before and type(m) is not before[n]]
        out.append(RewriteBinding(rw, count, swapped, graph=isinstance(model, torch.fx.GraphModule)))
    return model, out


def kernel_hyper(term: TermPlan, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kernel hyperparameters of a prox or projection term (weights go into the step);
    ``options``: the term's options as bound (``TermBinding.options``), default the plan's."""
    opts = term.options if options is None else options
    if term.lowering == "projection" or term.penalty == "expr":
        return dict(opts)  # an expression term's options are its kernel's hyperparameters, as bound
    if term.name == "elastic_net":
        return {"lam_l1": opts.get("a", 1.0), "lam_l2": opts.get("b", 1.0)}
    if term.name == "group_l2":
        return {"groups": opts.get("groups", "rows")}
    if term.name == "anchor_l2":
        return {"anchor": "init"}
    return {}


def term_metric(term: TermPlan, optimizer_name: str, prox_metric: str = "auto") -> str:
    """``adaptive`` for separable kernels under Adam/AdamW (not weight_decay), else ``euclidean``."""
    if (prox_metric == "auto" and optimizer_name.lower() in ADAPTIVE_OPTIMIZERS and term.separable
            and term.kernel in ADAPTIVE_KERNELS and term.name != "weight_decay"):
        return "adaptive"
    return "euclidean"


def optimizer_name_of(optimizer: Any) -> str:
    if isinstance(optimizer, str):
        return optimizer
    if isinstance(optimizer, torch.optim.AdamW):
        return "adamw"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    return type(optimizer).__name__.lower() if optimizer is not None else "none"


def _match(model: nn.Module, term: TermPlan) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    sel = term.target
    if sel.kind == "param":
        hits = select_params(model, sel.pattern, sel.type, span=sel.span)
        return [n for n, _ in hits], {n: tuple(p.shape) for n, p in hits}
    if sel.kind == "act":
        mods = select_modules(model, sel.pattern, sel.type, span=sel.span)
        return [n for n, _ in mods], {}
    return [sel.kind], {}


# ------------------------------------------------------------------ weight layouts
#: module classes (by class name, any base) whose 2-D ``weight`` is stored (in, out), the transpose
#: of nn.Linear's (out, in) that the grouping rules (rows = outputs, N:M blocks over inputs) and
#: the matrix view assume. transformers' GPT-2 ``Conv1D`` stores (nx, nf) = (in, out).
TRANSPOSED_WEIGHTS = ("Conv1D",)
#: how each grouping reads on a transposed (in, out) weight
_TRANSPOSED_GROUPS = {"rows": "cols", "channels": "cols", "cols": "rows", "all": "all"}


def weight_layout(model: nn.Module, name: str) -> str:
    """``"in_out"`` for the weight of a module listed in ``TRANSPOSED_WEIGHTS`` (checked against
    its ``nf`` output size when it has one), else ``"out_in"`` (nn.Linear, convolutions...)."""
    owner, _, attr = name.rpartition(".")
    if attr != "weight":
        return "out_in"
    module = dict(model.named_modules()).get(owner)
    if module is None or not any(c.__name__ in TRANSPOSED_WEIGHTS for c in type(module).__mro__):
        return "out_in"
    w = module._parameters.get("weight")
    nf = getattr(module, "nf", None)
    if w is None or w.dim() != 2 or (isinstance(nf, int) and w.shape[1] != nf):
        return "out_in"
    return "in_out"


def _conv_transpose_notes(model: nn.Module, names: list[str]) -> list[str]:
    """Notes for weights of transposed convolutions, stored (C_in, C_out / groups, k...): the
    first dimension that rows, channels and the matrix view W = x.reshape(shape[0], -1) read is
    their input channels (torch's spectral_norm takes dim = 1 for them instead)."""
    modules = dict(model.named_modules())
    out = []
    for n in names:
        owner, _, attr = n.rpartition(".")
        if attr == "weight" and isinstance(modules.get(owner), nn.modules.conv._ConvTransposeNd):
            out.append(f"{n}: stored (C_in, C_out, k...) like nn.{type(modules[owner]).__name__}; rows, channels "
                       "and the matrix view x.reshape(C_in, -1) follow its input channels, not its filters")
    return out


def _layout_options(model: nn.Module, term: TermPlan, names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The term's options for the storage layout of its tensors, and notes for `plan`; refuses
    structure that cannot be expressed on a transposed weight (N:M blocks over inputs)."""
    options = dict(term.options)
    if term.target.kind != "param":
        return options, []
    transposed = [n for n in names if weight_layout(model, n) == "in_out"]
    if not transposed:
        return options, _conv_transpose_notes(model, names)
    notes = [f"{n}: stored (in, out) like transformers' Conv1D; structure follows outputs and inputs, "
             "not the storage order" for n in transposed]
    sensitive = term.name in ("nm_sparse", "group_l2") or (term.name == "orthogonality" and options.get("groups"))
    if not sensitive:
        return options, notes  # norms, balls, spectra and ranks do not depend on the orientation
    if term.name == "nm_sparse":
        raise error(f"nm_sparse on {transposed[0]}: its weight is stored (in, out), so blocks of consecutive "
                    "inputs run down the storage columns; the N:M kernel groups along the last storage dimension "
                    "and would sparsify outputs instead", term.span,
                    ["select nn.Linear-like weights only, e.g. exclude this module in the pattern"])
    if len(transposed) != len(names):
        raise error(f"`{term.name}` selects weights of both layouts: {transposed[0]} is stored (in, out), "
                    f"{next(n for n in names if n not in transposed)} (out, in); their groups differ", term.span,
                    ["split the term: one selector per layout"])
    if term.name == "orthogonality":
        raise error(f"orthogonality(groups = ...) on {transposed[0]}: row groups of an (in, out) weight are not "
                    "supported", term.span, ["drop `groups` (the full Gram matrix is orientation-free)"])
    g = str(options.get("groups", "rows"))
    m = re.fullmatch(r"blocks\((\d+), (\d+)\)", g)
    options["groups"] = f"blocks({m.group(2)}, {m.group(1)})" if m else _TRANSPOSED_GROUPS.get(g, g)
    return options, notes


# ------------------------------------------------------------------ projections on one tensor
def _active_at_end(term: TermPlan, total_epochs: float, steps_per_epoch: int | None) -> bool:
    g = term.gate
    if g is None or g.stop is None:
        return True
    if g.stop_unit == "epoch":
        return g.stop >= total_epochs
    return steps_per_epoch is not None and g.stop > total_epochs * steps_per_epoch  # unknown: not judged


def check_projection_conflicts(terms: list[TermBinding], total_epochs: float, steps_per_epoch: int | None) -> None:
    """Two projections on one tensor, both in force at the end, are applied one after the other
    after every step; unless both belong to a family whose projections keep each other's set
    (``ENTRY_SHRINKING``, ``SPECTRUM_SHRINKING`` in compiler/train_plan.py), the end state
    satisfies only the last one exactly, so that is a located error naming both statements."""
    seen: dict[str, TermBinding] = {}
    for tb in terms:
        t = tb.term
        if t.lowering != "projection" or not _active_at_end(t, total_epochs, steps_per_epoch):
            continue
        for name in tb.names:
            first = seen.get(name)
            if first is None:
                seen[name] = tb
                continue
            if not projections_compatible(first.term, t):
                raise projection_conflict(f"`{name}`", first.term, t)
            seen[name] = tb


def bind_plan(plan: TrainPlan, model: nn.Module, optimizer: Any = None, *, total_epochs: float | None = None,
              steps_per_epoch: int | None = None, prefer_taps: str = "fx") -> Binding:
    """Rewrite, select, tap and lower every term of ``plan`` for ``model`` (see module doc).

    ``optimizer``: an optimizer instance or name (it decides the prox step metric).
    """
    total = float(total_epochs if total_epochs is not None else plan.total_epochs)
    model, rewrites = apply_rewrites(model, plan.rewrites)
    weights = apply_plan_weights(plan, model, optimizer)   # init, reparametrize, freeze (reparam.py)
    gm, reason = trace(model)
    graph = "traced" if gm is not None else reason
    opt_name = optimizer_name_of(optimizer if optimizer is not None else plan.optimizer.name)
    terms: list[TermBinding] = []
    act_names: list[str] = []
    for term in plan.terms:
        if term.penalty == "expr":
            tb = bind_expression(model, term, make_scalar(term.weight, total, steps_per_epoch), opt_name,
                                 plan.prox_metric, steps_per_epoch)
            act_names += [n for sel, got in zip(term.selectors, tb.selector_names) if sel.kind == "act"
                          for n in got if n not in act_names]
            terms.append(tb)
            continue
        names, shapes = _match(model, term)
        options, layout_notes = _layout_options(model, term, names)
        tb = TermBinding(term, names, shapes, options=options)
        label = term.metric or f"line {term.line}: {term.text}"
        weight = make_scalar(term.weight, total, steps_per_epoch)
        if term.lowering == "loss":
            kw: dict[str, Any] = {"weight": weight, "hyper": dict(options), "label": label}
            if term.target.kind == "param":
                kw["params"] = names
            elif term.target.kind == "act":
                kw["acts"] = names
                act_names += [n for n in names if n not in act_names]
                if term.name == "l1" and _nonneg_outputs(model, names):
                    kw["hyper"]["nonneg"] = True  # ReLU outputs: |a| = a, a cheaper exact form
            else:
                kw["output"] = True
            tb.penalty = Penalty(term.name if term.name != "weight_decay" else "l2sq", **kw)
        else:
            like = dict(model.named_parameters())[names[0]] if names else None
            hyper = {k: _as_kernel_value(make_scalar(v, total, steps_per_epoch), like)
                     for k, v in kernel_hyper(term, options).items()}
            metric = "euclidean" if term.lowering == "projection" else term_metric(term, opt_name, plan.prox_metric)
            tb.metric = metric
            tb.group = ProxGroup(term.kernel or "", names, weight, hyper, metric,
                                 make_when(term.gate, steps_per_epoch), term.matrix, label)
        if term.lowering == "projection":
            _check_set_fits(term, names, shapes)
        tb.notes = layout_notes + _notes(model, term, names, options)
        terms.append(tb)
    check_projection_conflicts(terms, total, steps_per_epoch)
    module: nn.Module = model
    tap_path, tap_reason = None, ""
    if act_names:
        tapped: TappedModel = insert_taps(model, act_names, prefer=prefer_taps)
        module, tap_path, tap_reason = tapped, tapped.tap_path, tapped.tap_reason
    return Binding(plan, model, module, graph, tap_path, tap_reason, rewrites, terms, weights)


def _check_set_fits(term: TermPlan, names: list[str], shapes: dict[str, tuple[int, ...]]) -> None:
    """The set's own shape rule (compiler/catalogue/sets.py) on each matched tensor, or on its
    matrix view W.reshape(C_out, -1) for matrix sets: a located error naming the tensor."""
    import numpy as np

    from regspec.compiler.catalogue import SETS, ShapeError

    entry = SETS[term.name]
    # a schedule's value is checked when it is evaluated; here any admissible stand-in will do
    kw = {k: (1.0 if isinstance(v, ScheduleRef) else np.asarray(v, dtype=float) if isinstance(v, list) else v)
          for k, v in term.atom_kw.items()}
    for n in names:
        shape = shapes[n]
        view = (shape[0], int(np.prod(shape[1:]))) if entry.matrix_view and len(shape) not in (0, 2) else shape
        try:
            entry.check_shape(view, kw)
        except ShapeError as exc:
            seen = f" (as a {view[0]} x {view[1]} matrix)" if view != shape else ""
            raise error(f"{n} (shape {list(shape)}){seen} cannot be kept in {term.name}: {exc}", term.span,
                        [f"{term.target.text} matched {', '.join(f'{m} {list(shapes[m])}' for m in names)}",
                         "select tensors of a shape the set applies to"]) from None


# ------------------------------------------------------------------ expression terms
def _match_selector(model: nn.Module, sel: Any) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    if sel.kind == "param":
        hits = select_params(model, sel.pattern, sel.type, span=sel.span)
        return [n for n, _ in hits], {n: tuple(p.shape) for n, p in hits}
    if sel.kind == "act":
        return [n for n, _ in select_modules(model, sel.pattern, sel.type, span=sel.span)], {}
    return [sel.kind], {}


def _instances(term: TermPlan, matched: list[list[str]]) -> list[list[str]]:
    """The tuples of tensors a term is evaluated on: one per match of a single selector (summed),
    or, with several selectors, the i-th match of each (equal counts), e.g. per layer pairs."""
    counts = [len(m) for m in matched]
    if len(matched) == 1:
        return [[n] for n in matched[0]]
    many = [c for c in counts if c > 1]
    if many and any(c != many[0] for c in counts if c > 1):
        listing = "; ".join(f"{sel.text} matches {len(m)} ({', '.join(m[:4])}{', ...' if len(m) > 4 else ''})"
                            for sel, m in zip(term.selectors, matched))
        raise error(f"the selectors of `{term.math}` match different numbers of tensors, so they cannot be "
                    "paired", term.span, [listing, "pair tensors one to one, or write one selector per tensor"])
    n = max(counts)
    return [[m[i] if len(m) > 1 else m[0] for m in matched] for i in range(n)]


def _matched_notes(term: TermPlan, instance: list[str], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    return [f"{sel.text} matched {name} with shape {list(shapes[name]) if name in shapes else 'per sample'}"
            for sel, name in zip(term.selectors, instance)]


def _type_instance(term: TermPlan, instance: list[str], shapes: dict[str, tuple[int, ...]]) -> Any:
    """Type the term's expression against the tensors of one instance (shapes, curvature);
    batch tensors have no static shape here and are typed by names and curvature only."""
    from regspec.compiler.train_terms import selector_nodes, type_expression
    from regspec.diagnostics import RegspecError

    if any(sel.kind != "param" for sel in term.selectors):
        return term.expr
    sel_nodes = selector_nodes(term.expr_node)
    try:
        return type_expression(term.expr_node, sel_nodes, term.expr.lets, [shapes[n] for n in instance], "the term")
    except RegspecError as exc:
        d = exc.first
        notes = [n for n in d.notes if "is declared with shape" not in n]
        message = d.message.replace("shape mismatch in", "the term does not fit the matched tensors: in")
        raise error(f"{message}", term.span if d.span is None else d.span,
                    [*_matched_notes(term, instance, shapes), *notes]) from None


def type_batch_terms(binding: Binding, act_shapes: dict[str, tuple[int, ...]],
                     output_shape: tuple[int, ...] | None, input_shape: tuple[int, ...] | None) -> None:
    """Type expression terms over batch tensors once one real batch has run (``probe``): each
    batch leaf has its per-sample shape (the term is taken per sample), so a term that cannot
    apply (log_det of an activation vector) is a located error naming the tensor, not a failure
    in the first training step. Terms on ``target`` are typed by names and curvature only."""
    from regspec.compiler.train_terms import selector_nodes, type_expression
    from regspec.diagnostics import RegspecError

    per_sample = {"output": output_shape, "input": input_shape}
    params = dict(binding.model.named_parameters())
    for tb in binding.terms:
        t = tb.term
        if tb.penalty is None or t.penalty != "expr" or all(sel.kind == "param" for sel in t.selectors):
            continue
        if any(sel.kind == "target" for sel in t.selectors):
            continue
        for inst in tb.penalty.hyper["leaves"]:
            shapes = [tuple(params[n].shape) if sel.kind == "param" else
                      act_shapes.get(n) if sel.kind == "act" else per_sample.get(sel.kind)
                      for sel, n in zip(t.selectors, inst)]
            if any(shape is None for shape in shapes):
                break  # a tap the probe did not see (a module not called): typed by names only
            notes = [f"{sel.text} matched {n} with {'shape' if sel.kind == 'param' else 'per-sample shape'} "
                     f"{list(shape)}" for sel, n, shape in zip(t.selectors, inst, shapes)]
            try:
                typed = type_expression(t.expr_node, selector_nodes(t.expr_node), t.expr.lets, shapes, "the term")
            except RegspecError as exc:
                d = exc.first
                raise error(d.message.replace("shape mismatch in", "the term does not fit the matched tensors: in"),
                            d.span or t.span, [*notes, *(n for n in d.notes if "is declared with shape" not in n),
                                               "a term on batch tensors is taken per sample, then averaged"]) from None
            if typed.shape not in (None, ()):
                raise error(f"a regularizer must be a scalar per sample, but `{t.math}` has shape "
                            f"{list(typed.shape)}", t.span, [*notes, "reduce it, e.g. with sum(...) or a norm"])
            tb.typed = typed


def _check_value(term: TermPlan, model: nn.Module, instance: list[str], shapes: dict[str, tuple[int, ...]]) -> None:
    """Evaluate a parameter term once on the bound weights: an atom whose domain excludes them
    (log of a negative entry, a matrix that is not PSD) is a located error now, not a NaN loss."""
    from .regularizer import eval_tree

    if any(sel.kind != "param" for sel in term.selectors):
        return
    named = dict(model.named_parameters())
    with torch.no_grad():
        leaves = [named[n].detach() for n in instance]
        try:
            value = eval_tree(term.expr.tree, leaves)
        except RuntimeError as exc:
            raise error(f"`{term.math}` cannot be evaluated on the matched tensors: {str(exc).splitlines()[0]}",
                        term.span, _matched_notes(term, instance, shapes)) from None
        if not bool(torch.isfinite(value).all()):
            low = ", ".join(f"{n} min {float(t.min()):.3g}" for n, t in zip(instance, leaves))
            raise error(f"`{term.math}` is not finite at the matched tensors' current values ({low}): the "
                        "weights lie outside the domain of an atom of the term", term.span,
                        [*_matched_notes(term, instance, shapes),
                         "e.g. log/sqrt/entropy need nonnegative entries, log_det a positive definite matrix"])


def _prox_hyper(term: TermPlan, shapes: list[tuple[int, ...]]) -> dict[str, Any]:
    """Kernel hyperparameters of a direct term's prox, from its atom (the same rule a problem's
    prox uses); one value for all matched tensors."""
    import numpy as np

    from regspec.compiler.catalogue import ATOMS

    from regspec.compiler.train_terms import array_value

    atom = ATOMS[term.atom]
    kw = {k: array_value(v) for k, v in term.atom_kw.items()}
    hypers = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in atom.prox_hyper(kw, [shape]).items()}
              for shape in shapes]
    first = hypers[0]
    if any(h != first for h in hypers[1:]):
        raise error(f"the prox of `{term.math}` needs different hyperparameters on the matched tensors "
                    f"({', '.join(str(list(s)) for s in shapes)}); a fused prox step takes one value per term",
                    term.span, ["write one statement per tensor shape, or `via grad` (the term joins the loss)"])
    return first


def _as_kernel_value(value: Any, like: torch.Tensor | None) -> Any:
    """A list hyperparameter (group weights, labels, marginals) as a tensor on the parameter's
    device (a list would read as one value per tensor in a fused call)."""
    if not isinstance(value, list) or like is None:
        return value
    t = torch.as_tensor(value)
    return t.to(like.device, like.dtype) if t.is_floating_point() else t.to(like.device)


def bind_expression(model: nn.Module, term: TermPlan, weight: Any, opt_name: str, prox_metric: str,
                    steps_per_epoch: int | None) -> TermBinding:
    """An expression term: match its selectors, type it per instance against the matched shapes,
    then a ``Penalty('expr')`` (the loss, through each atom's torch evaluation) or, for a direct
    prox-able term, a ``ProxGroup`` with the atom's kernel."""
    matched, shapes = [], {}
    for sel in term.selectors:
        names, sel_shapes = _match_selector(model, sel)
        matched.append(names)
        shapes.update(sel_shapes)
    instances = _instances(term, matched)
    typed = None
    for inst in instances:
        typed = _type_instance(term, inst, shapes)
        if typed.shape not in (None, ()):
            raise error(f"a regularizer must be a scalar, but `{term.math}` has shape {list(typed.shape)} on "
                        f"{', '.join(inst)}", term.span,
                        [*_matched_notes(term, inst, shapes), "reduce it, e.g. with sum(...), mean(...) or a norm"])
        _check_value(term, model, inst, shapes)
    label = term.metric or f"line {term.line}: {term.text}" + (f" (part {term.part})" if term.part else "")
    names = list(dict.fromkeys(n for m in matched for n in m))
    tb = TermBinding(term, names, shapes, selector_names=matched, typed=typed, options=dict(term.options))
    if term.lowering == "prox":
        hyper = _prox_hyper(term, [shapes[n] for n in matched[0]])
        metric = term_metric(term, opt_name, prox_metric)
        tb.metric = metric
        like = dict(model.named_parameters())[matched[0][0]]
        tb.group = ProxGroup(term.kernel or "", matched[0], weight,
                             {k: _as_kernel_value(v, like) for k, v in hyper.items()}, metric,
                             make_when(term.gate, steps_per_epoch), False, label, value_tree=term.expr.tree)
        tb.options = hyper
        return tb
    kinds = [sel.kind for sel in term.selectors]
    hyper = {"expr": term.expr.tree, "leaves": instances, "kinds": kinds}
    of_kind = {k: [n for sel, m in zip(term.selectors, matched) if sel.kind == k for n in m] for k in ("param", "act")}
    tb.penalty = Penalty("expr", params=of_kind["param"], acts=of_kind["act"], output="output" in kinds,
                         weight=weight, hyper=hyper, label=label)
    return tb


#: activation modules whose outputs are >= 0 by construction
_NONNEG = ("ReLU", "ReLU6", "FATReLU", "Sigmoid", "Softplus")


def _nonneg_outputs(model: nn.Module, names: list[str]) -> bool:
    mods = dict(model.named_modules())
    return all(type(mods[n]).__name__ in _NONNEG for n in names if n in mods)


def _notes(model: nn.Module, term: TermPlan, names: list[str], options: dict[str, Any]) -> list[str]:
    """Per-tensor structure lines for `plan`: groups, ranks, N:M blocks."""
    from .regularizer import group_norms

    if term.target.kind != "param":
        return []
    params = dict(model.named_parameters())
    out = []
    for n in names:
        p = params[n]
        in_out = weight_layout(model, n) == "in_out"
        if term.name == "group_l2":
            g = options.get("groups", "rows")
            norms, sizes = group_norms(p.detach(), g)
            said = f"{term.options.get('groups', 'rows')}, i.e. storage {g}" if in_out else g
            out.append(f"{n}: {norms.numel()} groups ({said}) of {int(sizes.max())} entries")
        elif term.matrix:
            rows, cols = p.shape[0], p.numel() // max(1, p.shape[0])
            if in_out:
                rows, cols = cols, rows
            extra = ""
            if term.name == "nm_sparse":
                extra = f", blocks of {term.options['m']} consecutive inputs, {term.options['n']} kept per block"
            out.append(f"{n}: as a {rows} x {cols} matrix{extra}")
    return out

