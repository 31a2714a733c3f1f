"""The fused proximal step after ``optimizer.step()``: prox groups, gates and the step-size rule.

Each ``regularize TERM * w via prox`` and each ``constrain T in SET`` becomes a ``ProxGroup``
bound to named parameters. After every optimizer step, ``ProxEngine.after_step()`` applies

    x <- prox_{tau g}(x)   (a penalty w*g with a kernel)      x <- Π_C(x)   (a constraint)

in place, with the kernels of ``backends/torch/prox.py``. Groups with the same kernel, the same
hyperparameters, the same step metric and the same gate are merged into one *bucket*, and each
bucket is one call of ``fused.apply_prox_group`` over all its tensors (``torch._foreach_*`` for
pointwise kernels, one stacked batched call for group and spectral kernels); different weights
within a bucket become per-tensor step sizes.

Step-size rule (documented choice, CATALOGUE §3 "Prox after Adam")
--------------------------------------------------------------------
The prox step follows the learning rate the optimizer *used* for the tensor's parameter group
(captured by an optimizer step pre-hook, so an LR scheduler stepping before ``after_step`` does
not shift it) times the term's weight at the current time t (schedules are evaluated at t):

* ``euclidean``: tau = lr * w(t). For plain SGD this is exactly proximal gradient descent,
  x+ = prox_{lr w g}(x - lr grad f), whose fixed points are the stationary points of f + w g.
  Used for SGD (any momentum), for all group, whole-tensor and spectral kernels, and for
  ``weight_decay`` (decoupled decay is Euclidean by definition: AdamW's (1 - lr lam) x is the
  first-order form of the prox x/(1 + lr lam)).
* ``adaptive`` (the default for *separable* kernels under Adam/AdamW: l1, elastic_net, l2sq,
  anchor_l2, ...): per-coordinate tau_i = lr * w(t) / (sqrt(v_hat_i) + eps), v_hat = the bias-
  corrected second moment Adam used in this step. Adam's update is a gradient step in the metric
  D = diag(sqrt(v_hat) + eps) (x+ = x - lr D^{-1} m_hat), and for a separable g the prox in that
  metric is the per-coordinate prox with step lr/D_i. Then a fixed point x = prox^D(x - lr D^{-1}g)
  satisfies 0 in grad f(x) + w dg(x): the same optimality condition as the problem itself, so the
  lasso threshold keeps its meaning (|grad_i f| <= w at zeros) regardless of Adam's scaling. With
  the Euclidean step after Adam the fixed points would solve D^{-1} grad f + w dg = 0 instead.
  Group, nuclear and spectral proxes in a diagonal metric have no closed form, so they keep the
  Euclidean lr (the catalogue's documented heuristic). ``prox_metric = "euclidean"`` in the
  optimizer statement turns the adaptive rule off. An entry whose second moment is exactly 0
  (its gradient was 0 at every step so far: a LoRA factor A while B is still zero) has no scale
  in that metric, and 1/eps would zero it at the first step; it takes the Euclidean step lr * w.

Gates: ``every N steps`` runs after steps N, 2N, ... (1-based count of optimizer steps);
a *prox* gated ``every N`` takes the step N * lr * w(t) (the lazy, or delayed, proximal step:
N gradient steps then one prox with the N steps' accumulated weight). Then a fixed point still
satisfies 0 in grad f + w dg, the problem's own optimality condition, and the term keeps its
weight; with the unscaled step lr * w it would act as weight w / N. The lr is the one used at the
applying step (schedules move slowly against N; an exact sum over the skipped steps would cost a
host-side record per step for every gated group) and w is evaluated at that step too.
``from epoch K`` / ``until epoch K`` (until is exclusive) compare the progress at the start of
the step (epoch + i/steps_per_epoch), so an epoch gate switches exactly at an epoch boundary.
Projections ignore the step size. ``finalize()`` applies every constraint whose window is still
open once more at the end of training, so the final model satisfies it whatever ``every`` was.

Frozen tensors (``requires_grad = False``: pretrained bases under adapters, frozen layers) are
never touched: a matched frozen tensor is left out of its group when the engine is built (and
listed in ``frozen``, which ``regspec plan`` and the summary show), and a tensor frozen later is
skipped at the step it is found frozen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from regspec.backends.torch.fused import apply_prox_group
from regspec.backends.torch.prox import KERNELS, get_kernel
from regspec.diagnostics import did_you_mean, error

from ._util import is_low_precision

__all__ = ["Clock", "When", "ProxGroup", "ProxEngine", "ADAPTIVE_KERNELS", "evaluate_scalar"]

#: kernels whose prox acts entry by entry, so a per-coordinate (Adam-metric) step is exact
ADAPTIVE_KERNELS = ("l1", "l1_nonneg", "l2sq", "sum_squares", "elastic_net", "anchor_l2", "huber")
_EPS = 1e-9


def evaluate_scalar(value: Any, t: float) -> float:
    """A weight or hyperparameter at time t (epochs): numbers as they are, schedules called."""
    return float(value(t)) if callable(value) else value


#: hyperparameters that count things (top_k's k, nm_sparse's n and m): a schedule's value rounded
INTEGER_HYPER = ("k", "n", "m")


def hyper_at(hyper: dict[str, Any], t: float) -> dict[str, Any]:
    """A kernel's hyperparameters at time t: schedules evaluated, counts rounded to integers."""
    out = {k: evaluate_scalar(v, t) for k, v in hyper.items()}
    for k in INTEGER_HYPER:
        if out.get(k) is not None:
            out[k] = int(round(out[k]))
    return out


@dataclass
class Clock:
    """Training time: completed optimizer steps, the current epoch and the steps done in it.

    ``t`` (epochs, fractional) is the progress at the start of the current step, the time at
    which schedules are evaluated, both for loss weights and for the prox after the step.
    """

    steps_per_epoch: int | None = None
    epoch: int = 0
    step: int = 0              # completed optimizer steps over the whole run
    step_in_epoch: int = 0     # completed steps in the current epoch

    @property
    def t(self) -> float:
        if self.steps_per_epoch:
            return self.epoch + self.step_in_epoch / self.steps_per_epoch
        return float(self.epoch)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.step_in_epoch = 0
        if self.steps_per_epoch:
            self.step = self.epoch * self.steps_per_epoch

    def tick(self) -> None:
        """One optimizer step done; with ``steps_per_epoch`` the epoch rolls over by itself after
        its last step (t is the same either way), so a loop that never calls ``start_epoch``
        still moves schedules and epoch gates."""
        self.step += 1
        self.step_in_epoch += 1
        if self.steps_per_epoch and self.step_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.step_in_epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.step, self.step_in_epoch = int(state["epoch"]), int(state["step"]), int(state["step_in_epoch"])


@dataclass(frozen=True)
class When:
    """When a group runs: ``every`` N steps, ``from``/``until`` an epoch (or a step; until exclusive)."""

    every: int | None = None
    from_epoch: float | None = None
    until_epoch: float | None = None
    from_step: int | None = None
    until_step: int | None = None

    def active(self, step: int, t: float) -> bool:
        """After optimizer step ``step`` (1-based), which started at progress ``t`` (epochs)."""
        if self.every is not None and step % self.every:
            return False
        if self.from_epoch is not None and t < self.from_epoch - _EPS:
            return False
        if self.until_epoch is not None and t >= self.until_epoch - _EPS:
            return False
        if self.from_step is not None and step < self.from_step:
            return False
        if self.until_step is not None and step >= self.until_step:
            return False
        return True

    def opens_within(self, total_steps: int, steps_per_epoch: int) -> bool:
        """Whether any of the steps 1..total_steps (step s starts at t = (s-1)/steps_per_epoch)
        is active: the same rule as ``active``, solved for the first and last open step."""
        lo, hi = 1, int(total_steps)
        if self.from_step is not None:
            lo = max(lo, int(self.from_step))
        if self.until_step is not None:
            hi = min(hi, int(self.until_step) - 1)
        if self.from_epoch is not None:
            lo = max(lo, math.ceil((self.from_epoch - _EPS) * steps_per_epoch) + 1)
        if self.until_epoch is not None:
            hi = min(hi, math.ceil((self.until_epoch - _EPS) * steps_per_epoch))
        if self.every is not None and self.every > 0:
            lo = -(-lo // self.every) * self.every
        return lo <= hi

    def open_at_end(self, step: int, t: float) -> bool:
        """Whether the window (ignoring ``every``) contains the end of training."""
        return When(None, self.from_epoch, self.until_epoch, self.from_step, self.until_step).active(step, t)

    def never_opens(self, total_steps: int, steps_per_epoch: int, projection: bool) -> str | None:
        """Why a gated term does nothing in a run of ``total_steps`` (None when it opens): a
        projection whose window is open at the last step still runs once at the end
        (``ProxEngine.finalize``), a prox term does not."""
        if self.opens_within(total_steps, steps_per_epoch):
            return None
        if projection and total_steps > 0 and self.open_at_end(total_steps, (total_steps - 1) / steps_per_epoch):
            return "it is applied only once, after the last step"
        return "it is not applied at the end either"

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.__dict__.items() if v is not None]
        return f"When({', '.join(parts)})"


@dataclass
class ProxGroup:
    """One prox or projection statement bound to named parameters.

    ``weight``: the term weight w (number or schedule of t); ``hyper``: kernel hyperparameters
    (values may be schedules, e.g. a spectral-ball radius); ``hyper["anchor"] = "init"`` anchors
    to the parameters at construction. ``metric``: ``euclidean`` | ``adaptive`` (see the module
    doc). ``matrix``: apply to ``W.reshape(W.shape[0], -1)`` (spectral kernels, N:M on convs).
    """

    kernel: str
    params: list[str]
    weight: Any = 1.0
    hyper: dict[str, Any] = field(default_factory=dict)
    metric: str = "euclidean"
    when: When | None = None
    matrix: bool = False
    label: str = ""
    #: the term as a typed expression of one leaf (compiler/train_terms.py), for reporting its value
    value_tree: Any = None

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise error(f"no prox or projection kernel named `{self.kernel}`", None,
                        did_you_mean(self.kernel, KERNELS))
        if self.metric not in ("euclidean", "adaptive"):
            raise error(f"ProxGroup metric must be 'euclidean' or 'adaptive', got {self.metric!r}")

    @property
    def is_projection(self) -> bool:
        return KERNELS[self.kernel].kind == "projection"


def _key_of(value: Any) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return ("object", id(value))


@dataclass
class _Bucket:
    """Groups merged into one fused call: same kernel, hyper, metric, gate and matrix view."""

    kernel: str
    hyper: dict[str, Any]
    metric: str
    when: When | None
    matrix: bool
    names: list[str] = field(default_factory=list)
    params: list[nn.Parameter] = field(default_factory=list)
    weights: list[Any] = field(default_factory=list)   # per tensor
    labels: list[str] = field(default_factory=list)


class ProxEngine:
    """Applies the prox groups after each optimizer step (see the module doc for the rules)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, groups: Sequence[ProxGroup],
                 clock: Clock | None = None):
        self.model = model
        self.optimizer = optimizer
        self.groups = list(groups)
        self.clock = clock or Clock()
        named = dict(model.named_parameters())
        self.anchors: dict[str, torch.Tensor] = {}
        #: (group label, parameter name) of matched tensors left alone because they are frozen
        self.frozen: list[tuple[str, str]] = []
        buckets: dict[tuple, _Bucket] = {}
        for g in self.groups:
            get_kernel(g.kernel)
            missing = [n for n in g.params if n not in named]
            if missing:
                raise error(f"prox group `{g.label or g.kernel}`: the model has no parameter `{missing[0]}`", None,
                            did_you_mean(missing[0], named))
            self.frozen += [(g.label or g.kernel, n) for n in g.params if not named[n].requires_grad]
            live = [n for n in g.params if named[n].requires_grad]
            if not live:
                continue
            static = {k: v for k, v in g.hyper.items() if k != "anchor"}
            key = (g.kernel, tuple(sorted((k, _key_of(v)) for k, v in static.items())), g.metric, repr(g.when),
                   g.matrix)
            b = buckets.setdefault(key, _Bucket(g.kernel, static, g.metric, g.when, g.matrix))
            for n in live:
                b.names.append(n)
                b.params.append(named[n])
                b.weights.append(g.weight)
                b.labels.append(g.label)
                if g.hyper.get("anchor") == "init" and n not in self.anchors:
                    self.anchors[n] = named[n].detach().clone()
        self.buckets = list(buckets.values())
        self._group_of: dict[int, int] = {}
        self._lrs: list[float] | None = None
        self._last: tuple[int, float] | None = None
        self._hook = None
        if optimizer is not None:
            for gi, pg in enumerate(optimizer.param_groups):
                for p in pg["params"]:
                    self._group_of[id(p)] = gi
            # capture the lr each step actually used (schedulers may change it before after_step)
            self._hook = optimizer.register_step_pre_hook(self._capture_lrs)
        for b in self.buckets:
            for n, p in zip(b.names, b.params):
                if optimizer is not None and id(p) not in self._group_of:
                    raise error(f"`{b.labels[b.names.index(n)] or b.kernel}` on `{n}`: the parameter is not in the "
                                "optimizer's parameter groups, so no step size (learning rate) is known for it", None,
                                ["give the optimizer every parameter the statement selects, or select fewer"])

    # ---- learning rates and Adam's metric
    def _capture_lrs(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._lrs = [float(g["lr"]) for g in optimizer.param_groups]

    def lr_of(self, p: nn.Parameter) -> float:
        """The learning rate the last optimizer step used for ``p`` (1.0 without an optimizer)."""
        if self.optimizer is None:
            return 1.0
        gi = self._group_of[id(p)]
        if self._lrs is not None:
            return self._lrs[gi]
        return float(self.optimizer.param_groups[gi]["lr"])

    def _inverse_metric(self, params: list[nn.Parameter]) -> list[torch.Tensor] | None:
        """1/(sqrt(v_hat) + eps) per tensor from Adam's state, or None if the optimizer has no
        second moments (SGD) or has not stepped yet."""
        if self.optimizer is None:
            return None
        vs, scales, eps = [], [], []
        for p in params:
            st = self.optimizer.state.get(p, {})
            pg = self.optimizer.param_groups[self._group_of[id(p)]]
            v = st.get("max_exp_avg_sq") if pg.get("amsgrad") else st.get("exp_avg_sq")
            if v is None or "step" not in st or "betas" not in pg:
                return None
            step = float(st["step"])
            bc2 = 1.0 - pg["betas"][1] ** step
            vs.append(v)
            scales.append(1.0 / math.sqrt(bc2))
            eps.append(float(pg["eps"]))
        denom = torch._foreach_sqrt(vs)
        torch._foreach_mul_(denom, scales)       # sqrt(v / bc2) = sqrt(v_hat)
        torch._foreach_add_(denom, eps)
        torch._foreach_reciprocal_(denom)
        # an entry whose gradient has been exactly 0 at every step (a LoRA factor A while B is still
        # 0, a dead unit) has no scale in Adam's metric: 1/eps would zero it at once (a LoRA A
        # would lose its random start). It takes the Euclidean step, whose fixed points are the same.
        for d, v in zip(denom, vs):
            d.masked_fill_(v == 0, 1.0)
        return denom

    # ---- application
    def _tensors(self, b: _Bucket) -> list[torch.Tensor]:
        """What the kernel reads and writes: the tensors, or with ``matrix`` W = x.reshape(C_out, -1),
        a copy where x's layout has no such view (a channels_last conv weight); ``_apply`` writes a
        copy back."""
        if not b.matrix:
            return [p.data for p in b.params]
        return [p.data.reshape(p.shape[0], -1) if p.dim() != 2 else p.data for p in b.params]

    def _hyper_at(self, b: _Bucket, t: float) -> dict[str, Any]:
        return hyper_at(b.hyper, t)

    def _prox_steps(self, b: _Bucket, t: float) -> list[float]:
        """tau = lr * w(t) per tensor, times N for a prox gated ``every N`` steps (the lazy prox)."""
        lazy = b.when.every if b.when is not None and b.when.every else 1
        return [lazy * self.lr_of(p) * evaluate_scalar(w, t) for p, w in zip(b.params, b.weights)]

    def apply_bucket(self, b: _Bucket, t: float) -> _Bucket | None:
        """One fused call for the bucket at time t; returns what it touched (None: nothing,
        every tensor of the bucket has been frozen since the engine was built)."""
        b = _unfrozen(b)
        if b is None:
            return None
        self._apply(b, t)
        return b

    def _apply(self, b: _Bucket, t: float) -> None:
        xs = self._tensors(b)
        if any(is_low_precision(x) for x in xs):
            # bfloat16 / float16 weights: the kernel runs in float32 (torch has no SVD, eigh or QR in
            # them) and the result is rounded once to the weights' dtype
            xs = [x.float() for x in xs]
        self._apply_to(b, xs, t)
        for p, x in zip(b.params, xs):
            if not _is_view_of(x, p.data):   # a float32 or reshaped copy: write it back
                p.data.copy_(x.reshape(p.shape))

    def _apply_to(self, b: _Bucket, xs: list[torch.Tensor], t: float) -> None:
        hyper = self._hyper_at(b, t)
        kernel = KERNELS[b.kernel]
        if kernel.kind == "projection":
            apply_prox_group(b.kernel, xs, 1.0, **hyper)
            return
        steps = self._prox_steps(b, t)
        if b.kernel == "anchor_l2":
            hyper["anchor"] = [self.anchors[n].reshape(x.shape) for n, x in zip(b.names, xs)]
        dinv = self._inverse_metric(b.params) if b.metric == "adaptive" else None
        if dinv is not None:
            _adaptive_prox(b.kernel, xs, steps, dinv, hyper)
        elif b.kernel == "group_l2" and _row_groups_in_place(xs, steps, hyper):
            pass
        else:
            apply_prox_group(b.kernel, xs, steps, **hyper)

    def active_buckets(self) -> list[_Bucket]:
        """The buckets the next ``after_step()`` applies (their gates are open at this step)."""
        t, step = self.clock.t, self.clock.step + 1
        return [b for b in self.buckets if b.when is None or b.when.active(step, t)]

    def after_step(self) -> list[_Bucket]:
        """Run after ``optimizer.step()``: apply the active buckets, then advance the clock.
        Returns the buckets applied (their tensors are the ones touched, for finite checks)."""
        t = self.clock.t
        step = self.clock.step + 1
        applied = []
        with torch.no_grad():
            for b in self.active_buckets():
                done = self.apply_bucket(b, t)
                if done is not None:
                    applied.append(done)
        self._last = (step, t)
        self.clock.tick()
        return applied

    def touched(self, b: _Bucket) -> list[torch.Tensor]:
        """The tensors a bucket writes (for finite checks)."""
        return [p.data for p in b.params]

    def finalize(self) -> list[_Bucket]:
        """Apply each constraint once more (if its window is open), so the final model satisfies it.
        Returns the buckets applied."""
        # the window is judged at the start of the last step taken; scheduled radii take their
        # value at the end of training (the time the final model is reported at)
        step, t_last = self._last if self._last is not None else (self.clock.step, self.clock.t)
        applied = []
        with torch.no_grad():
            for b in self.buckets:
                if KERNELS[b.kernel].kind != "projection":
                    continue
                if b.when is None or b.when.open_at_end(step, t_last):
                    done = self.apply_bucket(b, self.clock.t)
                    if done is not None:
                        applied.append(done)
        return applied

    def apply_loop(self) -> None:
        """Reference: the same update, one kernel call per tensor (tests and the benchmark)."""
        from regspec.backends.torch.fused import apply_prox_loop

        t = self.clock.t
        with torch.no_grad():
            for b in self.buckets:
                xs = self._tensors(b)
                hyper = self._hyper_at(b, t)
                if KERNELS[b.kernel].kind == "projection":
                    apply_prox_loop(b.kernel, xs, 1.0, **hyper)
                    continue
                steps = self._prox_steps(b, t)
                if b.kernel == "anchor_l2":
                    hyper["anchor"] = [self.anchors[n].reshape(x.shape) for n, x in zip(b.names, xs)]
                dinv = self._inverse_metric(b.params) if b.metric == "adaptive" else None
                if dinv is not None:
                    steps = [d * s for d, s in zip(dinv, steps)]  # per-coordinate steps
                for i, x in enumerate(xs):
                    h = {k: (v[i] if isinstance(v, list) else v) for k, v in hyper.items()}
                    x.copy_(KERNELS[b.kernel].fn(x, steps[i], **h))

    def describe(self) -> list[dict[str, Any]]:
        """One entry per fused call: kernel, hyper, metric, gate, tensors (for `regspec plan`)."""
        out = []
        for b in self.buckets:
            out.append({"kernel": b.kernel, "kind": KERNELS[b.kernel].kind, "hyper": dict(b.hyper),
                        "metric": b.metric, "when": b.when, "params": list(b.names),
                        "structure": KERNELS[b.kernel].structure, "matrix": b.matrix,
                        "labels": sorted(set(b.labels))})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": {k: v.clone() for k, v in self.anchors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.get("anchors", {}).items():
            if k in self.anchors:
                self.anchors[k] = v.to(self.anchors[k].device, self.anchors[k].dtype)

    def to(self, device: torch.device | str) -> "ProxEngine":
        self.anchors = {k: v.to(device) for k, v in self.anchors.items()}
        return self

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _is_view_of(x: torch.Tensor, p: torch.Tensor) -> bool:
    """Whether writing ``x`` in place writes ``p`` (x is p, or a view of all of p's memory)."""
    return (x.dtype == p.dtype and x.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
            and x.storage_offset() == p.storage_offset())


def _unfrozen(b: _Bucket) -> _Bucket | None:
    """The bucket without tensors frozen since it was built (itself when none are)."""
    if all(p.requires_grad for p in b.params):
        return b
    keep = [i for i, p in enumerate(b.params) if p.requires_grad]
    if not keep:
        return None
    return _Bucket(b.kernel, b.hyper, b.metric, b.when, b.matrix, [b.names[i] for i in keep],
                   [b.params[i] for i in keep], [b.weights[i] for i in keep], [b.labels[i] for i in keep])


def _row_groups_in_place(xs: list[torch.Tensor], steps: list[float], hyper: dict[str, Any]) -> bool:
    """Block soft-threshold of the rows (or columns) of W = x.reshape(C_out, -1), in place:
    x_g <- x_g * max(||x_g|| - tau sqrt(|g|), 0) / ||x_g|| (the group_l2 kernel's math with its
    default weights; a zero group stays exactly zero). Five ops per tensor and no temporaries the
    size of x, where the generic kernel builds a shrunk copy; False when it does not apply."""
    groups = hyper.get("groups", "rows")
    if groups not in ("rows", "channels", "cols") or hyper.get("weights") is not None or len(hyper) > 1:
        return False
    if not all(x.is_contiguous() and x.dim() >= 1 for x in xs):
        return False
    dim = 0 if groups == "cols" else 1
    for x, step in zip(xs, steps):
        if step == 0.0:
            continue
        w = x.view(x.shape[0], -1)
        threshold = step * math.sqrt(w.shape[dim])
        # (1 - t/||x_g||)_+: a zero group gives 1 - inf -> 0, so it stays exactly zero
        factor = torch.linalg.vector_norm(w, dim=dim, keepdim=True).reciprocal_().mul_(-threshold).add_(1.0)
        w.mul_(factor.clamp_min_(0.0))
    return True


def _adaptive_prox(kernel: str, xs: list[torch.Tensor], steps: list[float], dinv: list[torch.Tensor],
                   hyper: dict[str, Any]) -> None:
    """Per-coordinate prox with tau_i = step * dinv_i, fused with torch._foreach_* where possible."""
    if kernel in ("l1", "l1_nonneg"):
        w = hyper.pop("weight", None)
        weights = dinv if w is None else torch._foreach_mul(dinv, w if isinstance(w, list) else [w] * len(xs))
        apply_prox_group(kernel, xs, steps, weight=list(weights), **hyper)
    elif kernel == "anchor_l2":
        apply_prox_group(kernel, xs, steps, fisher=list(dinv), **hyper)
    elif kernel in ("l2sq", "sum_squares"):
        # x / (1 + c tau_i), c = 1 (l2sq) or 2 (sum_squares)
        c = 2.0 if kernel == "sum_squares" else 1.0
        denom = torch._foreach_mul(dinv, [c * s for s in steps])
        torch._foreach_add_(denom, 1.0)
        torch._foreach_div_(xs, denom)
    elif kernel == "elastic_net":
        a, b = float(hyper.get("lam_l1", 1.0)), float(hyper.get("lam_l2", 1.0))
        apply_prox_group("l1", xs, [s * a for s in steps], weight=list(dinv))
        denom = torch._foreach_mul(dinv, [s * b for s in steps])
        torch._foreach_add_(denom, 1.0)
        torch._foreach_div_(xs, denom)
    else:
        # no fused form: the per-tensor kernels accept per-coordinate step tensors
        fn = get_kernel(kernel).fn
        for x, s, d in zip(xs, steps, dinv):
            x.copy_(fn(x, d * s, **hyper))
