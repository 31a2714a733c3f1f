"""The bookkeeping of a generated trainer (``regspec compile``), and none of its math.

A generated trainer computes its loss terms, prox steps and projections itself, in plain torch
and with the kernel library; it tells a ``TermBook`` what it did, and the book keeps what the run
folder reports and checks:

* the step clock (``clock.step``, ``clock.epoch``, ``clock.t``) that checkpoints restore;
* each term's value for ``metrics.jsonl`` / ``summary.json`` (``values()``, ``weights()``):
  loss-side terms averaged over the epoch's steps, prox terms g(x) now, constraints the distance
  ``||x - P(x)||`` to their set;
* the finite check after every step (one fused reduction, one sync): the first non-finite loss
  or weight raises ``NonFiniteError`` naming the step, what produced the value (a loss term, the
  data, the gradient or optimizer update, or a prox/projection) and the tensors;
* the trainer's own state a resumed run needs (anchors, the Jacobian estimator's generator).

``runtime.Run`` reads a book where it reads a ``Regularizer`` (``penalties``, ``engine.groups``,
``values()``, ``state_dict()``...), so the run folder's files are the same for both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .finite import (describe_tensors, finite_flag, learning_rate_notes, nonfinite_tensors,
                     raise_nonfinite)
from .proxstep import Clock, When, evaluate_scalar, hyper_at

__all__ = ["Term", "TermBook"]

#: integer hyperparameters of projections (top_k's k, nm_sparse's n and m): a schedule is rounded


@dataclass
class Term:
    """One statement of the spec as the run reports it.

    ``key``: the trainer's short name (``line16``); ``label``: the statement text (metrics and
    summary keys); ``lowering``: ``loss`` | ``prox`` | ``projection``; ``kind``: the penalty or
    kernel name; ``params`` / ``acts`` / ``output``: its tensors; ``weight``: a number or a
    schedule of t; ``hyper``: a projection's set parameters (values may be schedules)."""

    key: str
    label: str
    lowering: str
    kind: str
    params: list[str] = field(default_factory=list)
    acts: list[str] = field(default_factory=list)
    output: bool = False
    weight: Any = 1.0
    hyper: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    when: When | None = None
    matrix: bool = False

    @property
    def kernel(self) -> str:
        return self.kind

    @property
    def is_projection(self) -> bool:
        return self.lowering == "projection"


@dataclass
class _Steps:
    """What ``runtime.Run`` and ``summarize`` read as ``reg.engine``: the prox and projection terms
    and the matched tensors left alone because they are frozen."""

    groups: list[Term]
    frozen: list[tuple[str, str]]


class TermBook:
    """Clock, reports, finite checks and resumable state of a generated trainer (module doc)."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, terms: Sequence[Term], *,
                 steps_per_epoch: int, anchors: dict[str, torch.Tensor] | None = None,
                 generator: torch.Generator | None = None,
                 values_now: Callable[[], Mapping[str, torch.Tensor]] | None = None):
        self.module = module
        self.optimizer = optimizer
        self.clock = Clock(steps_per_epoch)
        self.terms = list(terms)
        self.penalties = [t for t in self.terms if t.lowering == "loss"]
        named = dict(module.named_parameters())
        frozen = [(t.label, n) for t in self.terms if t.lowering != "loss" for n in t.params
                  if not named[n].requires_grad]
        self.engine = _Steps([t for t in self.terms if t.lowering != "loss"], frozen)
        self.anchors = anchors if anchors is not None else {}
        self.generator = generator
        #: g of the terms on parameters at the current weights, by key (the trainer's function)
        self.values_now = values_now
        self.nonfinite_notes: list[Callable[[], str]] = []
        self._seen: dict[str, list[Any]] = {}
        self._input: torch.Tensor | None = None
        self._updated: torch.Tensor | None = None
        self._last_step: tuple[int, float] | None = None
        # a non-finite loss is traced back to the batch: keep (a reference to) the last input
        module.register_forward_pre_hook(self._keep_input)

    # ---- the clock
    @property
    def t(self) -> float:
        return self.clock.t

    def start_epoch(self, epoch: int) -> None:
        self.clock.start_epoch(epoch)
        self._seen = {}

    def _keep_input(self, _module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self._input = args[0]

    # ---- after each step
    def _prox_tensors(self) -> list[torch.Tensor]:
        named = dict(self.module.named_parameters())
        return [named[n].detach() for t in self.engine.groups for n in t.params]

    def updated(self) -> None:
        """After ``optimizer.step()``, before the proxes: whether the updated weights are finite
        (kept on the device; read by ``end_step`` only if its own check fails)."""
        self._updated = finite_flag(self._prox_tensors())

    def end_step(self, loss: torch.Tensor, task: torch.Tensor, values: Mapping[str, torch.Tensor],
                 weighted: Mapping[str, torch.Tensor], applied: Sequence[str], output: torch.Tensor,
                 target: torch.Tensor) -> None:
        """Record the step's loss-side values g (by term key), tick the clock, and check that the
        loss and the tensors the applied proxes/projections wrote are finite."""
        for key, g in values.items():
            acc = self._seen.setdefault(key, [0.0, 0])
            acc[0] = acc[0] + g.detach()
            acc[1] += 1
        step, epoch = self.clock.step + 1, self.clock.epoch
        self._last_step = (step, self.clock.t)
        self.clock.tick()
        touched = [p for k in applied for p in self._tensors_of(k)]
        after = finite_flag([loss.detach(), *touched])
        before, self._updated = self._updated, None
        ok = after if before is None else before if after is None else before & after
        if ok is not None and not ok.item():           # .item(): the one sync per step
            last = {"loss": loss.detach(), "task": task.detach(), "output": output.detach(), "target": target,
                    "terms": [(self._label(k), v.detach()) for k, v in weighted.items()]}
            self._diagnose(step, epoch, last, applied, before_ok=before is None or bool(before.item()))

    def end_run(self, applied: Sequence[str]) -> None:
        """Check the tensors the final projections wrote."""
        flag = finite_flag([p for k in applied for p in self._tensors_of(k)])
        if flag is not None and not flag.item():
            self._diagnose(self.clock.step, self.clock.epoch, None, applied, final=True)

    @property
    def last_step(self) -> tuple[int, float]:
        """(step, t at its start) of the last step taken: where a gate's window is judged at the end."""
        return self._last_step if self._last_step is not None else (self.clock.step, self.clock.t)

    def _term(self, key: str) -> Term:
        return next(t for t in self.terms if t.key == key)

    def _label(self, key: str) -> str:
        return self._term(key).label

    def _tensors_of(self, key: str) -> list[torch.Tensor]:
        named = dict(self.module.named_parameters())
        return [named[n].detach() for n in self._term(key).params]

    # ---- the slow path of the finite check: say where the bad value came from
    def _diagnose(self, step: int, epoch: int, last: dict[str, Any] | None, applied: Sequence[str],
                  final: bool = False, before_ok: bool = True) -> None:
        where = "at the final projections" if final else f"at step {step} (epoch {epoch + 1})"
        notes = self._lr_notes()
        if last is not None and not bool(torch.isfinite(last["loss"]).all()):
            self._loss_error(where, step, last, notes)
        named = dict(self.module.named_parameters())
        for key in applied:
            term = self._term(key)
            bad = nonfinite_tensors((n, named[n]) for n in term.params)
            if not bad:
                continue
            kind = "projection" if term.is_projection else "prox"
            if before_ok:
                self._raise(f"non-finite weights {where}: {describe_tensors(bad)}; the {kind} `{term.kind}` of "
                            f"`{term.label}` wrote them from finite weights", step, f"{kind} `{term.label}`",
                            [f"check the {kind}'s hyperparameters (a NaN or infinite value, a schedule)"])
            cause, why = self._update_cause(term.params, named)
            self._raise(f"non-finite weights {where}: {describe_tensors(bad)}; {why}", step, cause, notes)

    def _loss_error(self, where: str, step: int, last: dict[str, Any], notes: list[str]) -> None:
        parts = [("the task loss", last["task"]), *last["terms"]]
        bad = [f"{name} = {_show(v)}" for name, v in parts if not bool(torch.isfinite(v).all())]
        term = bad[0].split(" = ")[0] if bad else "the sum of the loss terms"
        bad_data = [f"the batch's {what} hold NaN/inf" for what, x in (("inputs", self._input),
                                                                      ("targets", last["target"]))
                    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all())]
        if bad_data:
            term, bad = "the data", bad_data + bad
            notes = ["clean the data (or check the data source); the weights were fine before this step"]
        elif not bool(torch.isfinite(last["output"]).all()):
            bad.append("the model's output holds NaN/inf: the previous update left non-finite weights, "
                       "or the inputs hold NaN/inf")
        self._raise(f"non-finite loss {where}: {'; '.join(bad) or 'the total overflowed'}", step, term, notes)

    def _update_cause(self, names: Sequence[str], named: dict[str, nn.Parameter]) -> tuple[str, str]:
        grads = nonfinite_tensors((n, named[n].grad) for n in names if named[n].grad is not None)
        if grads:
            return "the gradient (optimizer step)", (f"the gradient of {describe_tensors(grads)} is not finite "
                                                     "although the loss is")
        state = []
        for n in names:
            st = self.optimizer.state.get(named[n], {})
            state += nonfinite_tensors((f"{n}:{k}", v) for k, v in st.items() if isinstance(v, torch.Tensor))
        if state:
            return "the optimizer update", f"the optimizer state of {describe_tensors(state)} is not finite"
        return "the optimizer update", ("the optimizer step overflowed them (finite gradients and state: "
                                        "learning rate x update beyond the dtype's range)")

    def _lr_notes(self) -> list[str]:
        return learning_rate_notes(self.optimizer)

    def _raise(self, message: str, step: int, term: str, notes: list[str]) -> None:
        raise_nonfinite(message, step, term, notes, self.nonfinite_notes)

    # ---- reports
    def values(self) -> dict[str, float]:
        """Each term's value: loss-side terms averaged over this epoch's steps (or now, for
        parameter terms not yet evaluated), prox terms g(x) now, constraints ||x - P(x)||."""
        from .regularizer import set_distance

        out: dict[str, float] = {}
        named = dict(self.module.named_parameters())
        frozen = {n for _, n in self.engine.frozen}
        with torch.no_grad():
            now = dict(self.values_now()) if self.values_now is not None else {}
            for term in self.terms:
                seen = self._seen.get(term.key)
                if seen and seen[1]:
                    out[term.label] = float(seen[0]) / seen[1]
                elif term.is_projection:
                    # frozen tensors are never projected: no distance is claimed for them (a
                    # constraint on frozen tensors only has no value, not 0)
                    live = [n for n in term.params if n not in frozen]
                    if live:
                        hyper = self.hyper_at(term, self.clock.t)
                        out[term.label] = sum(set_distance(term.kind, named[n], hyper, term.matrix) for n in live)
                elif term.key in now:
                    out[term.label] = float(now[term.key])
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}

    @staticmethod
    def hyper_at(term: Term, t: float) -> dict[str, Any]:
        return hyper_at(term.hyper, t)

    def weights(self) -> dict[str, float]:
        """Each term's weight at the current time."""
        return {t.label: evaluate_scalar(t.weight, self.clock.t) for t in self.terms}

    # ---- state for checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"clock": self.clock.state_dict(),
                                 "anchors": {k: v.clone() for k, v in self.anchors.items()}}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock.load_state_dict(state["clock"])
        for k, v in state.get("anchors", {}).items():
            if k in self.anchors:
                self.anchors[k].copy_(v.to(self.anchors[k].device, self.anchors[k].dtype))
        if "generator" in state and self.generator is not None:
            self.generator.set_state(state["generator"])


def _show(v: torch.Tensor) -> str:
    x = v.detach().reshape(-1)
    bad = x[~torch.isfinite(x)]
    return str(float(bad[0])) if bad.numel() else str(float(x[0]))
