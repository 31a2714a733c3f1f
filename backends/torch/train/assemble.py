"""Build everything a train block names, as the compiler sees it: data, model (with the data's
sizes filled in), rewrites, bindings. ``regspec plan`` prints the result, ``regspec compile``
spells it out as a trainer, ``regspec.attach`` uses the binding part on a user's model.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from regspec.compiler.train_plan import CallPlan, TrainPlan
from regspec.diagnostics import Diagnostic, RegspecError, error

from .bind import Binding, bind_plan, type_batch_terms
from .data import DataBundle, build_data
from .models import build_model
from .runtime import full_batch, source_data

__all__ = ["Assembled", "assemble", "make_data", "complete_model_kwargs", "resolve_loss", "steps_per_epoch"]


@dataclass
class Assembled:
    plan: TrainPlan
    data: DataBundle
    model_kwargs: dict[str, Any]
    filled: list[str]               # model arguments filled in from the data
    binding: Binding
    steps_per_epoch: int
    epochs: int
    loss: Any                       # the resolved loss (name or tree)
    notes: list[str] = field(default_factory=list)
    probe: Any = None               # probe.ProbeResult: one real batch through the bound model
    warnings: list[Diagnostic] = field(default_factory=list)
    user_code: list[str] = field(default_factory=list)  # the user's code an import path runs, and where

    @property
    def act_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.probe.act_shapes if self.probe is not None else {}


def make_data(plan: TrainPlan, *, batch: int | str | None = None, seed: int | None = None) -> DataBundle:
    """The data a train block names: a built-in set, a user loader or a `problem` source."""
    d: CallPlan = plan.data
    b = plan.batch if batch is None else batch
    s = plan.seed if seed is None else seed
    if d.kind == "source":
        try:
            return source_data(d.name, d.args, d.kwargs, batch=b, seed=s, base_dir=plan.base_dir)
        except RegspecError as exc:  # the sources know no span here: locate at the data statement
            first = exc.first
            if first.span is not None:
                raise
            raise error(first.message, d.span, first.notes) from None
    kwargs = dict(d.kwargs)
    for key in ("batch", "seed"):
        if key in kwargs:  # the block's own statement sets it, and the data source receives it
            raise error(f"`{key} = ...` here repeats the train block's `{key} N` statement",
                        d.span, [f"write `{key} {kwargs[key]}` as a statement of the train block; "
                                 f"{d.name} receives it as `{key}`"])
    split = kwargs.pop("split", 0.8)
    return build_data(d.name, split=split, batch=full_batch(b), seed=s, span=d.span, **kwargs)


def steps_per_epoch(data: DataBundle, plan: TrainPlan) -> int:
    n = len(data.epoch_loader(0))
    if n == 0:
        raise error("the training data yields no batches", plan.data.span)
    return n


def complete_model_kwargs(plan: TrainPlan, data: DataBundle) -> tuple[dict[str, Any], list[str]]:
    """Built-in models may omit sizes the data determines: ``in`` / ``out`` (linear, mlp),
    ``in_channels`` / ``image`` / ``out`` / ``flat_input`` (cnn), ``out`` (transformer)."""
    kw = dict(plan.model.kwargs)
    filled: list[str] = []
    if plan.model.kind != "builtin":
        return kw, filled
    name = plan.model.name.lower()

    def fill(key: str, value: Any) -> None:
        if key not in kw and value is not None:
            kw[key] = value
            filled.append(f"{key} = {value!r}")

    if name in ("linear", "mlp"):
        if "in_features" not in kw:
            fill("in", data.in_features)
        fill("out", data.n_outputs)
    elif name == "cnn":
        shape = data.input_shape or ()
        if len(shape) == 3:
            fill("in_channels", shape[0])
            fill("image", shape[1])
        elif len(shape) == 1 and "image" not in kw:
            side = int(round((shape[0] / int(kw.get("in_channels", 1))) ** 0.5))
            fill("image", side)
            fill("flat_input", True)
        fill("out", data.n_outputs)
    elif name == "transformer":
        fill("out", data.n_outputs)
    return kw, filled


def _gate_warnings(binding: Binding, plan: TrainPlan, epochs: int, spe: int) -> list[Diagnostic]:
    """Located warnings for gated prox terms and projections that never run in this run (the
    runtime's rule, ``When.opens_within``, over the run's steps)."""
    total = epochs * spe if plan.steps is None else min(epochs * spe, int(plan.steps))
    out = []
    for tb in binding.terms:
        when = tb.group.when if tb.group is not None else None
        after = when.never_opens(total, spe, tb.group.is_projection) if when is not None else None
        if after is not None:
            out.append(Diagnostic(
                f"this {tb.term.stmt} never applies during training: its gate "
                f"`{tb.term.gate.text() if tb.term.gate else when}` does not open within the run ({epochs} epoch(s), "
                f"{total} steps); {after}", tb.term.span, "warning", [f"{spe} steps per epoch"]))
    return out


def user_code(plan: TrainPlan) -> list[str]:
    """One line per import path the block calls (model, data, optimizer): what runs, from where."""
    from .models import user_code_origin

    out = []
    for what, call in (("model", plan.model), ("data", plan.data), ("optimizer", plan.optimizer)):
        if call.kind == "user" and ":" in call.name:
            origin = user_code_origin(call.name.split(":")[0], call.span, f"user {what}")
            out.append(f'{what} "{call.name}" runs {origin or "(not found)"}')
    return out


def resolve_loss(plan: TrainPlan, data: DataBundle) -> Any:
    if plan.loss != "auto":
        return plan.loss
    return "mse" if data.task == "regression" else "cross_entropy"


def assemble(plan: TrainPlan, *, epochs: int | None = None, optimizer: Any = None,
             report: bool = True) -> Assembled:
    """Data, seeded model, rewrites and bindings for ``plan`` (on CPU, float32), checked by running
    one real batch through the bound model (``probe``). Warnings (plan's and the probe's) are in
    ``.warnings`` and, with ``report``, printed to stderr once."""
    from .optim import check_optimizer_call
    from .probe import probe_model

    if optimizer is None:
        check_optimizer_call(plan.optimizer)
    data = make_data(plan)
    spe = steps_per_epoch(data, plan)
    total = int(epochs if epochs is not None else plan.total_epochs)
    if plan.steps is not None and epochs is None:
        total = -(-plan.steps // spe)
    kwargs, filled = complete_model_kwargs(plan, data)
    torch.manual_seed(plan.seed)
    model: nn.Module = build_model(plan.model.name, span=plan.model.span, **kwargs)
    binding = bind_plan(plan, model, optimizer if optimizer is not None else plan.optimizer.name,
                        total_epochs=total, steps_per_epoch=spe)
    loss = resolve_loss(plan, data)
    asm = Assembled(plan, data, kwargs, filled, binding, spe, total, loss)
    asm.user_code = user_code(plan)
    asm.probe = probe_model(plan, data, binding, loss)
    # expression terms over batch tensors, typed against the per-sample shapes the probe saw
    type_batch_terms(binding, asm.probe.act_shapes, tuple(asm.probe.output_shape[1:]), data.input_shape)
    asm.warnings = [*plan.warnings, *_gate_warnings(binding, plan, total, spe), *asm.probe.warnings]
    if report:
        for w in asm.warnings:
            print(w.render(), file=sys.stderr)
    return asm
