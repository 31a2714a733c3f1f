"""``regspec plan``: per statement, what it matched (names, shapes, groups), how it is lowered
(loss term, prox, projection), its weight or schedule and its gate; then the fused prox calls."""
from __future__ import annotations

from typing import Any

import torch

from regspec.compiler.train_plan import ScheduleRef, TermPlan, scalar_text

from .assemble import Assembled
from .proxstep import ProxEngine, evaluate_scalar

__all__ = ["describe"]


def _shape(s: Any) -> str:
    return "[" + ", ".join(str(int(d)) for d in s) + "]"


def _schedule_line(term: TermPlan, weight: Any, epochs: int) -> str | None:
    if not isinstance(term.weight, ScheduleRef):
        return None
    points = sorted({0.0, epochs / 4, epochs / 2, 3 * epochs / 4, float(epochs)})
    vals = ", ".join(f"{evaluate_scalar(weight, t):.3g} @ {t:g}" for t in points)
    return f"weight    {term.weight.text()}: {vals} (value @ epoch)"


def describe(asm: Assembled) -> str:
    plan, b = asm.plan, asm.binding
    n_params = sum(p.numel() for p in b.model.parameters())
    if b.weights is not None and b.weights.steps:   # parametrized: count the model as declared
        from .reparam import trained_summary

        n_params = trained_summary(b.model)["model_parameters"]
    out: list[str] = [f"train {plan.name}  ({plan.path})"]
    filled = f"  (from the data: {', '.join(asm.filled)})" if asm.filled else ""
    out.append(f"  model      {plan.model.text}  [{type(b.model).__name__}, {n_params:,} parameters]{filled}")
    d = asm.data
    rows = (f"{d.n_train} train / {d.n_val} validation rows" if d.n_train is not None
            else "rows from the user's loaders")  # a user loader need not know its length
    task = f"{d.task}, " if d.task else ""
    out.append(f"  data       {plan.data.text}: {task}{rows}, "
               f"batch {d.batch if plan.batch != 'full' else 'full'}, {asm.steps_per_epoch} steps per epoch")
    for line in asm.user_code:  # an import path runs the user's code: say which and from where
        out.append(f"  user code  {line}")
    out.append(f"  loss       {plan.loss_text if plan.loss != 'auto' else asm.loss + ' (from the task)'}")
    rule = ("euclidean: tau = lr * w for every prox" if plan.prox_metric == "euclidean" else
            "tau_i = lr * w / (sqrt(v_hat_i) + eps) for separable kernels (Adam's metric), tau = lr * w otherwise"
            if plan.optimizer.name.lower() in ("adam", "adamw") else "tau = lr * w (exact proximal SGD)")
    out.append(f"  optimizer  {plan.optimizer.text}; prox step {rule}")
    steps = f", stop after {plan.steps} steps" if plan.steps else ""
    out.append(f"  run        {asm.epochs} epochs{steps}, seed {plan.seed}, device {plan.device}")
    graph = "traced by torch.fx" if b.graph == "traced" else f"not traceable ({b.graph}): module swaps and forward hooks"
    taps = ""
    if b.tap_path == "fx":
        taps = "; activation taps are outputs of the fx graph"
    elif b.tap_path == "hooks":
        taps = f"; activation taps by forward hooks ({b.tap_reason})"
    out.append(f"  graph      {graph}{taps}")
    for rb in b.rewrites:
        rw = rb.rewrite
        out.append(f"line {rw.span.line if rw.span else 0:<4} {rw.text}")
        where = ", ".join(rb.modules) if rb.modules else "none"
        out.append(f"           replaced {rb.count}: modules {where}" +
                   ("; functional calls rewritten in the fx graph" if rb.graph else ""))
    if b.weights is not None:   # init, reparametrize, freeze (reparam.py)
        out += b.weights.lines(b.model)
    act_shapes = asm.act_shapes  # from the probe: one real batch of the data
    frozen_params = {n for n, p in b.model.named_parameters() if not p.requires_grad}
    engine = ProxEngine(b.module, None, b.prox_groups)
    buckets = engine.describe()
    for tb in b.terms:
        t = tb.term
        out.append(f"line {t.line:<4} {t.text}" + (f"   [part {t.part}]" if t.part else ""))
        if t.metric:
            out.append(f"           logged as reg/{t.metric}")
        if t.expr is not None:
            typed = tb.typed if getattr(tb, "typed", None) is not None else t.expr
            out.append(f"           typed     {typed.typed()}")
        elif t.stmt == "regularize" and t.atom is not None:
            out.append(f"           typed     {_direct_typed(t)}")
        if t.expr is not None and getattr(tb, "selector_names", None):
            matched = "; ".join(f"{sel.text} -> " + ", ".join(_leaf_text(sel.kind, n, tb.shapes, act_shapes) for n in got)
                                for sel, got in zip(t.selectors, tb.selector_names))
        elif t.target.kind == "param":
            matched = ", ".join(f"{n} {_shape(tb.shapes[n])}" for n in tb.names)
        elif t.target.kind == "act":
            matched = ", ".join(
                (f"{n} [B, {', '.join(str(d) for d in act_shapes[n])}]" if n in act_shapes else n) for n in tb.names)
        else:
            matched = t.target.kind
        out.append(f"           matches   {matched}")
        for note in tb.notes:
            out.append(f"                     {note}")
        line = _frozen_line(tb, frozen_params)
        if line:
            out.append(f"           frozen    {line}")
        if t.lowering == "loss":
            out.append(f"           lowered   loss term: w * {t.math}   ({t.why})")
        elif t.lowering == "prox":
            call = _call_text(buckets, tb, frozen_params)
            step = ("tau_i = lr * w / (sqrt(v_hat_i) + eps)" if tb.metric == "adaptive" else "tau = lr * w")
            out.append(f"           lowered   prox `{t.kernel}` of w * {t.math}, {step}, {call}")
            out.append(f"                     ({t.why})")
        else:
            call = _call_text(buckets, tb, frozen_params)
            hyper = ", ".join(f"{k}={scalar_text(v)}" for k, v in t.options.items() if v is not None)
            out.append(f"           lowered   projection `{t.kernel}`({hyper}) onto {t.math}, {call}")
        if t.lowering != "projection":
            w = tb.penalty.weight if tb.penalty is not None else tb.group.weight  # type: ignore[union-attr]
            line = _schedule_line(t, w, asm.epochs)
            out.append(f"           {line}" if line else f"           weight    {scalar_text(t.weight)}")
        for k, v in t.options.items():
            if isinstance(v, ScheduleRef):
                out.append(f"           {k:<9} {v.text()} (schedule)")
        if t.gate is not None:
            out.append(f"           gate      {t.gate.text()}")
    # transforms, sam, Lagrange multipliers (train/optim.py; bound here, so a bad selector is an error)
    from .optim import describe_update

    out += describe_update(plan, b.module, total=asm.epochs, steps_per_epoch=asm.steps_per_epoch)
    if buckets:
        out.append("fused calls after optimizer.step() (one apply_prox_group call each):")
        for i, bk in enumerate(buckets, 1):
            hyper = ", ".join(f"{k}={scalar_text(v) if not callable(v) else 'schedule'}" for k, v in bk["hyper"].items())
            gate = f", {bk['when']}" if bk["when"] is not None else ""
            metric = f", {bk['metric']}" if bk["kind"] == "prox" else ""
            out.append(f"  #{i} {bk['kind']} {bk['kernel']}({hyper}){metric}{gate}: {', '.join(bk['params'])}")
    engine.close()
    return "\n".join(out)


def _direct_typed(t: TermPlan) -> str:
    """A direct term: the catalogue atom it is, its curvature and smoothness, and the evaluation
    the training runtime gives it (per tensor, summed)."""
    from regspec.compiler.catalogue import ATOMS

    atom = ATOMS[t.atom]  # type: ignore[index]
    curvature = atom.curvature.value if atom.curvature.value != "unknown" else "not convex"
    smooth = "smooth" if atom.smooth else "nonsmooth"
    return f"{t.atom}({t.target.text}) : scalar per tensor, {curvature}, {smooth}; summed over the matches"


def _leaf_text(kind: str, name: str, shapes: dict[str, Any], act_shapes: dict[str, Any]) -> str:
    """A matched tensor with its shape (batch tensors: [B, ...] when the probe saw them)."""
    if kind == "param":
        return f"{name} {_shape(shapes[name])}"
    if kind == "act" and name in act_shapes:
        return f"{name} [B, {', '.join(str(d) for d in act_shapes[name])}]"
    return f"{name} (per sample)"


def _frozen_line(tb: Any, frozen_params: set[str]) -> str | None:
    """Which matched tensors are frozen (requires_grad=False) and what that means for the term."""
    if tb.term.target.kind != "param":
        return None
    hit = [n for n in tb.names if n in frozen_params]
    if not hit:
        return None
    what = ("skipped: the prox never touches them" if tb.term.lowering == "prox" else
            "skipped: the projection never touches them" if tb.term.lowering == "projection" else
            "constant in the loss: no gradient reaches them")
    return f"{', '.join(hit)} (requires_grad=False): {what}"


def _call_text(buckets: list[dict[str, Any]], tb: Any, frozen_params: set[str]) -> str:
    """``fused call #i``, or why the term has no call (every matched tensor is frozen)."""
    live = [n for n in tb.names if n not in frozen_params]
    if not live:
        return "no fused call: every matched tensor is frozen"
    return f"fused call #{_bucket_of(buckets, tb, live)}"


def _bucket_of(buckets: list[dict[str, Any]], tb: Any, names: list[str]) -> int:
    for i, bk in enumerate(buckets, 1):
        if bk["kernel"] == tb.group.kernel and all(n in bk["params"] for n in names) and \
                bk["when"] == tb.group.when and bk["metric"] == tb.group.metric:
            return i
    return 0
