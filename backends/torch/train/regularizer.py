"""The attached regularizers of a training run: loss-side penalties plus the fused prox engine.

``Regularizer(module, optimizer, loss=..., penalties=[...], prox_groups=[...])`` is what
``regspec.attach`` returns and what a generated trainer builds:

* ``.module``: the (rewritten, tapped) model to call;
* ``.loss(output, target)``: task loss + Σ_k w_k(t) · g_k, the smooth penalties (in-graph);
* ``.after_step()``: the fused proximal steps and projections (``proxstep.ProxEngine``);
* ``.start_epoch(e)`` moves the clock (schedules and gates use it), ``.values()`` reports each
  regularizer's current value, ``.state_dict()`` holds what a resumed run needs.

With an optimizer, the step work runs by itself: a post-step hook on the optimizer
(``register_step_post_hook``) applies the prox steps, checks finiteness and advances the clock
inside ``optimizer.step()``. ``after_step()`` stays valid and is idempotent: after the hook has
handled a step it does nothing, so a loop that also calls it applies nothing twice.

Every step, the loss (when computed by ``.loss``) and the tensors a prox or projection wrote are
checked for NaN/inf with one fused reduction and one device sync; the first bad step raises
``finite.NonFiniteError`` naming the step, the term that produced the value and the tensors.

Penalty values (g; the weight w(t) multiplies them):

    on parameters θ_1..θ_k (summed over tensors)      on activations / output a (B samples)
    l1            Σ|θ|                                 l1           Σ_l (1/B) Σ_i ‖a_l[i]‖₁
    l2            ‖θ‖₂                                 l2sq         Σ_l (1/2B) Σ_i ‖a_l[i]‖²
    linf          max|θ|                               sum_squares  Σ_l (1/B) Σ_i ‖a_l[i]‖²
    l2sq          ½‖θ‖²   sum_squares ‖θ‖²             flops        Σ_l Σ_j ((1/B) Σ_i |a_l[i,j]|)²
    elastic_net   a‖θ‖₁ + (b/2)‖θ‖²                    jacobian_fro ½ (1/B) Σ_i ‖∂f/∂x(x_i)‖_F² (output)
    group_l2      Σ_g √|g| ‖θ_g‖₂ (rows/cols/channels/all/blocks(n,m) of θ.reshape(C_out, −1))
    nuclear       Σσ(θ.reshape(C_out, −1))   spectral_norm σ_max(...)
    anchor_l2     ½‖θ − θ_init‖²   orthogonality ‖G − I‖_F² (penalties.orthogonality)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from regspec.diagnostics import did_you_mean, error

from . import penalties as P
from .finite import (describe_tensors, finite_flag, learning_rate_notes, nonfinite_tensors,
                     raise_nonfinite)
from ._util import is_low_precision, primary_tensor
from .losses import build_loss
from .proxstep import Clock, ProxEngine, ProxGroup, evaluate_scalar, hyper_at

__all__ = ["Penalty", "Regularizer", "param_value", "group_norms", "set_distance", "eval_tree", "per_sample_mean",
           "PARAM_KINDS", "ACT_KINDS", "OUTPUT_KINDS"]

_BLOCKS = re.compile(r"^blocks\((\d+), *(\d+)\)$")


# ------------------------------------------------------------------ values of terms on tensors
def group_norms(x: torch.Tensor, groups: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖x_g‖₂, |g|) for the grouping the ``group_l2`` kernel uses (on x.reshape(C_out, −1))."""
    w = x.reshape(x.shape[0], -1) if x.dim() >= 1 else x.reshape(1, 1)
    if groups in ("rows", "channels"):
        return torch.linalg.vector_norm(w, dim=1), torch.full((w.shape[0],), float(w.shape[1]))
    if groups == "cols":
        return torch.linalg.vector_norm(w, dim=0), torch.full((w.shape[1],), float(w.shape[0]))
    if groups == "all":
        return torch.linalg.vector_norm(w).reshape(1), torch.tensor([float(w.numel())])
    m = _BLOCKS.match(str(groups))
    if not m:
        raise error(f"unknown grouping `{groups}`")
    n, k = int(m.group(1)), int(m.group(2))
    rows, cols = w.shape
    gr, gc = -(-rows // n), -(-cols // k)
    padded = torch.nn.functional.pad(w, (0, gc * k - cols, 0, gr * n - rows))
    tiles = padded.reshape(gr, n, gc, k)
    norms = torch.linalg.vector_norm(tiles, dim=(1, 3)).reshape(-1)
    rs = (rows - torch.arange(gr) * n).clamp_max(n)
    cs = (cols - torch.arange(gc) * k).clamp_max(k)
    return norms, (rs[:, None] * cs[None, :]).reshape(-1).to(torch.float64)


#: the direct terms (catalogue ``TrainUse.kind``) evaluated here by name: param_value on parameters,
#: _act_value on activations and the output, and the Jacobian penalty on the output (other terms
#: and expressions go through each atom's torch evaluation, eval_tree)
PARAM_KINDS = ("l1", "l2", "linf", "l2sq", "sum_squares", "elastic_net", "group_l2", "nuclear", "spectral_norm",
               "anchor_l2", "orthogonality")
ACT_KINDS = ("l1", "l2sq", "sum_squares", "flops")
OUTPUT_KINDS = ("jacobian_fro",)


def param_value(kind: str, x: torch.Tensor, hyper: dict[str, Any] | None = None,
                anchor: torch.Tensor | None = None) -> torch.Tensor:
    """g(x) for one parameter tensor (differentiable); see the module table."""
    hyper = hyper or {}
    if kind == "l1":
        return x.abs().sum()
    if kind == "l2":
        return torch.linalg.vector_norm(x)
    if kind == "linf":
        return x.abs().max()
    if kind == "l2sq":
        return 0.5 * x.pow(2).sum()
    if kind == "sum_squares":
        return x.pow(2).sum()
    if kind == "elastic_net":
        return float(hyper.get("a", 1.0)) * x.abs().sum() + 0.5 * float(hyper.get("b", 1.0)) * x.pow(2).sum()
    if kind == "group_l2":
        norms, sizes = group_norms(x, hyper.get("groups", "rows"))
        return (norms * sizes.to(norms.device, norms.dtype).sqrt()).sum()
    if kind in ("nuclear", "spectral_norm"):
        w = x.reshape(x.shape[0], -1) if x.dim() != 2 else x
        s = torch.linalg.svdvals(w.float() if is_low_precision(w) else w)
        return s.sum() if kind == "nuclear" else s.max()
    if kind == "anchor_l2":
        assert anchor is not None
        return 0.5 * (x - anchor.detach()).pow(2).sum()
    if kind == "orthogonality":
        return P.orthogonality(x, mode=hyper.get("mode", "full"), groups=hyper.get("groups"))
    raise error(f"no value function for a `{kind}` term on parameters")


def eval_tree(tree: Any, leaves: Sequence[torch.Tensor]) -> torch.Tensor:
    """Evaluate a typed term expression (compiler/train_terms.py) on tensors, with each catalogue
    atom's torch lowering; constants take the first leaf's dtype and device."""
    from regspec.compiler.catalogue import ATOMS
    from regspec.compiler.train_terms import array_value

    kind = tree[0]
    if kind == "sel":
        return leaves[tree[1]]
    ref = leaves[0]
    if kind == "const":
        value = array_value(tree[1])
        return torch.as_tensor(value, dtype=ref.dtype if ref.is_floating_point() else torch.get_default_dtype(),
                               device=ref.device)
    atom = ATOMS[tree[1]]
    args = [eval_tree(a, leaves) for a in tree[2]]
    kw = {k: array_value(v) for k, v in tree[3].items()}
    kw.update({k: eval_tree(v, leaves) for k, v in tree[4].items()})
    return atom.torch(args, kw)


def per_sample_mean(tree: Any, leaves: Sequence[torch.Tensor], batched: Sequence[bool]) -> torch.Tensor:
    """(1/B) sum_i f(leaves at sample i): batch tensors (``batched``) are split along dim 0,
    parameters are shared. vmap when the atoms allow it, else a loop over the samples."""
    batch = next(t.shape[0] for t, b in zip(leaves, batched) if b)

    def one(*xs: torch.Tensor) -> torch.Tensor:
        return eval_tree(tree, xs)

    try:
        values = torch.func.vmap(one, in_dims=tuple(0 if b else None for b in batched))(*leaves)
    except Exception:  # noqa: BLE001 - an atom vmap cannot batch (data-dependent shapes): loop
        values = torch.stack([one(*[t[i] if b else t for t, b in zip(leaves, batched)]) for i in range(batch)])
    return values.reshape(batch, -1).sum(dim=1).mean()


def set_distance(kernel: str, x: torch.Tensor, hyper: dict[str, Any], matrix: bool) -> float:
    """‖x − Π_C(x)‖₂: how far a tensor is from its constraint set (0 when feasible)."""
    from regspec.backends.torch.prox import get_kernel

    w = x.reshape(x.shape[0], -1) if matrix and x.dim() != 2 else x
    if is_low_precision(w):
        w = w.float()   # as the projection runs (proxstep: float32, rounded once)
    with torch.no_grad():
        return float(torch.linalg.vector_norm(w - get_kernel(kernel).fn(w, 1.0, **hyper)))


class _L1Sum(torch.autograd.Function):
    """sum |a| with one reduction forward and sign(a)*g backward (no |a| temporary kept)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        return torch.linalg.vector_norm(a, 1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        return torch.sign(a).mul_(g)


def _act_value(kind: str, a: torch.Tensor) -> torch.Tensor:
    """Per-sample value averaged over the batch (dim 0)."""
    if kind == "l1":
        # (1/B) sum_i ||a_i||_1 = ||a||_1 / B
        return _L1Sum.apply(a) / (a.shape[0] if a.dim() > 1 else 1)
    flat = a.reshape(1, -1) if a.dim() <= 1 else a.reshape(a.shape[0], -1)
    if kind == "l2sq":
        return 0.5 * flat.pow(2).sum(dim=1).mean()
    if kind == "sum_squares":
        return flat.pow(2).sum(dim=1).mean()
    if kind == "flops":
        return P.flops(a)
    raise error(f"a `{kind}` term cannot apply to activations")


# ------------------------------------------------------------------ penalties (loss side)
@dataclass
class Penalty:
    """One loss-side term w(t) · g(targets).

    Exactly one target: ``params`` (parameter names), ``acts`` (tapped module names; a module
    called k times contributes its taps ``name``, ``name#1``, ...), or ``output=True``.
    """

    kind: str
    params: list[str] = field(default_factory=list)
    acts: list[str] = field(default_factory=list)
    output: bool = False
    weight: Any = 1.0
    hyper: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind == "expr":
            if "expr" not in self.hyper or "leaves" not in self.hyper or "kinds" not in self.hyper:
                raise error(f"penalty `{self.label or 'expr'}` needs hyper = {{'expr', 'leaves', 'kinds'}}")
            return
        if sum([bool(self.params), bool(self.acts), bool(self.output)]) != 1:
            raise error(f"penalty `{self.label or self.kind}` needs exactly one target: params, acts or output")


class Regularizer:
    """Loss-side penalties + fused prox engine for one model and optimizer (see module doc)."""

    def __repr__(self) -> str:
        terms = [p.label or p.kind for p in self.penalties]
        steps = [f"{g.kernel}({', '.join(g.params[:2])}{', ...' if len(g.params) > 2 else ''})"
                 for g in self.engine.groups]
        return (f"Regularizer(loss terms={terms}, steps after optimizer.step()={steps}, "
                f"steps_per_epoch={self.clock.steps_per_epoch})")

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 loss: Any = None, penalties: Sequence[Penalty] = (), prox_groups: Sequence[ProxGroup] = (),
                 steps_per_epoch: int | None = None, seed: int = 0, hooks: bool = True,
                 check_finite: bool = True):
        self.module = module
        self.optimizer = optimizer
        self.clock = Clock(steps_per_epoch)
        # "auto": cross_entropy for integer targets, mse otherwise (decided at the first call)
        self._auto_loss = loss == "auto"
        self.task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = (
            None if loss is None or self._auto_loss else build_loss(loss))
        self.penalties = list(penalties)
        self.engine = ProxEngine(module, optimizer, prox_groups, self.clock)
        named = dict(module.named_parameters())
        self._named = named
        self._params: list[list[torch.Tensor]] = []
        self.anchors: dict[str, torch.Tensor] = {}
        for p in self.penalties:
            missing = [n for n in p.params if n not in named]
            if missing:
                raise error(f"penalty `{p.label or p.kind}`: the model has no parameter `{missing[0]}`", None,
                            did_you_mean(missing[0], named))
            self._params.append([named[n] for n in p.params])
            if p.kind == "anchor_l2":
                for n in p.params:
                    self.anchors.setdefault(n, named[n].detach().clone())
        self._input: torch.Tensor | None = None
        self._fired: set[str] = set()   # tapped modules seen running (each is checked once)
        self._generator: torch.Generator | None = None
        self._seed = int(seed)
        uses_input = any(p.kind == "expr" and "input" in p.hyper["kinds"] for p in self.penalties)
        if any(p.kind == "jacobian_fro" for p in self.penalties) or check_finite or uses_input:
            # the Jacobian penalty differentiates the output w.r.t. the input, and a non-finite
            # loss is traced back to the batch: keep (a reference to) the last input
            module.register_forward_pre_hook(self._keep_input, with_kwargs=True)
        # running (sum of g, count) per loss-side term over the current epoch, kept on the device
        self._seen: dict[str, list[Any]] = {}
        self._seen_epoch = 0
        # the Jacobian term runs an extra forward (which refreshes the taps): evaluate it last
        self._order = sorted(range(len(self.penalties)), key=lambda k: self.penalties[k].kind == "jacobian_fro")
        self.check_finite = bool(check_finite)
        #: callables giving extra lines for a non-finite error (the run folder names its checkpoint)
        self.nonfinite_notes: list[Callable[[], str]] = []
        self._last: dict[str, Any] | None = None   # the last .loss() call's parts (for the finite check)
        self._last_terms: list[tuple[str, torch.Tensor]] = []
        self._pending = False                        # an optimizer step ran; its prox work has not yet
        self._hooks: list[Any] = []
        if optimizer is not None and hooks and hasattr(optimizer, "register_step_post_hook"):
            self._hooks = [optimizer.register_step_pre_hook(self._mark_pending),
                           optimizer.register_step_post_hook(self._step_hook)]

    # ---- time
    @property
    def t(self) -> float:
        return self.clock.t

    @property
    def hooked(self) -> bool:
        """Whether the optimizer's step hooks run the prox steps and the clock."""
        return bool(self._hooks)

    def start_epoch(self, epoch: int) -> None:
        """Set the epoch (0-based); schedules and gates read the clock. Optional when the clock
        knows ``steps_per_epoch`` (it then rolls over by itself); calling it realigns the clock
        with a loop whose epochs are shorter (a ``break``, a dropped last batch)."""
        self.clock.start_epoch(epoch)
        self._seen = {}
        self._seen_epoch = self.clock.epoch

    # ---- loss
    def _keep_input(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """The batch's input: the first positional argument, else the first tensor keyword
        (``model(input_ids=...)``, ``model(pixel_values=...)``)."""
        first = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        if isinstance(first, torch.Tensor):
            self._input = first

    def _taps(self, names: list[str]) -> list[torch.Tensor]:
        taps = getattr(self.module, "taps", None)
        if taps is None:
            raise error("activation penalties need a tapped module (insert_taps); this module has no taps")
        if getattr(self.module, "last_call_tapped", True) is not True:
            what = ("the last forward called the model itself" if self.module.last_call_tapped is False
                    else "it has not run yet")
            raise error(f"act(...) terms read the activations that `reg.module` records, but {what}: no "
                        f"activations of {', '.join(f'`{n}`' for n in names[:3])} are recorded",
                        notes=["call the model through the regularizer: `out = reg.module(x)`, then "
                               "`reg.loss(out, y)`"])
        wanted = set(names)
        found = [v for k, v in taps.items() if k.split("#", 1)[0] in wanted]
        silent = [n for n in names if n not in self._fired]
        if silent:   # checked once per name, as `regspec plan`'s probe does on its batch
            fired = {k.split("#", 1)[0] for k in taps}
            never = [n for n in silent if n not in fired]
            if never:
                raise error(f"`{never[0]}` did not run as a module in the forward pass, so its act(...) term "
                            "would do nothing", notes=["select a module the forward calls (its parent, or the "
                                                       "next module), or use param(...)"])
            self._fired.update(silent)
        return found

    def _penalty_value(self, i: int, p: Penalty, output: torch.Tensor | None,
                       target: torch.Tensor | None = None) -> tuple[torch.Tensor, float] | None:
        """(raw, scale) with g = raw * scale: a Python-number scale folds into the weight, so the
        term costs one multiply (activation l1 of ReLU taps: raw = sum of the taps, scale = 1/B)."""
        if p.kind == "expr":
            return self._expr_value(p, output, target)
        if p.params:
            if p.kind == "anchor_l2":
                return sum(param_value("anchor_l2", x, anchor=self.anchors[n])  # type: ignore[return-value]
                           for n, x in zip(p.params, self._params[i])), 1.0
            if p.kind == "orthogonality":
                return P.orthogonality(self._params[i], mode=p.hyper.get("mode", "full"),
                                       groups=p.hyper.get("groups")), 1.0
            return sum(param_value(p.kind, x, p.hyper) for x in self._params[i]), 1.0  # type: ignore[return-value]
        if p.kind == "jacobian_fro":
            if self._input is None:
                return None
            if self._generator is None or self._generator.device != self._input.device:
                self._generator = torch.Generator(device=self._input.device).manual_seed(self._seed)
            return P.jacobian_fro(self._forward_plain, self._input, int(p.hyper.get("n_proj", 1)),
                                  generator=self._generator), 0.5
        tensors = [output] if p.output else self._taps(p.acts)
        if not tensors or tensors[0] is None:
            return None
        if not p.output and torch.is_grad_enabled() and self.module.training and not any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in tensors):
            raise error(f"`{p.label or p.kind}`: the activations of {', '.join(f'`{n}`' for n in p.acts[:3])} carry no "
                        "gradient, so the term would not train anything",
                        notes=["recorded under no_grad: reentrant gradient checkpointing (transformers' "
                               "gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': "
                               "False}) keeps the gradient), or nothing trainable comes before the module"])
        if p.kind == "l1" and p.hyper.get("nonneg", False) and all(a.dim() > 1 for a in tensors):
            # ReLU outputs: (1/B) sum_i ||a_i||_1 = sum(a) / B; one reduction per tap
            raw = tensors[0].sum()
            for a in tensors[1:]:
                raw = raw + a.sum()
            return raw, 1.0 / tensors[0].shape[0]
        return sum(_act_value(p.kind, a) for a in tensors), 1.0  # type: ignore[return-value]

    def _expr_value(self, p: Penalty, output: torch.Tensor | None,
                    target: torch.Tensor | None) -> tuple[torch.Tensor, float] | None:
        """An expression term: summed over its instances (one per matched tensor, or per zipped
        tuple); a term over batch tensors is taken per sample and averaged over the batch."""
        kinds: list[str] = p.hyper["kinds"]
        batched = [k != "param" for k in kinds]
        total: torch.Tensor | None = None
        for names in p.hyper["leaves"]:
            for leaves in self._leaf_sets(kinds, names, output, target):
                value = per_sample_mean(p.hyper["expr"], leaves, batched) if any(batched) else \
                    eval_tree(p.hyper["expr"], leaves)
                total = value if total is None else total + value
        return (total, 1.0) if total is not None else None

    def _leaf_sets(self, kinds: list[str], names: list[str], output: torch.Tensor | None,
                   target: torch.Tensor | None) -> list[list[torch.Tensor]]:
        """The tensors of one instance; a tapped module called k times in a forward gives k
        sets (its taps ``name``, ``name#1``, ...), summed like the direct terms' taps. Empty when
        a batch tensor is not seen yet (``values()`` before the first step)."""
        if len(kinds) == 1 and kinds[0] == "act":
            return [[a] for a in self._taps([names[0]])]
        leaves = [self._leaf(kind, name, output, target) for kind, name in zip(kinds, names)]
        return [] if any(t is None for t in leaves) else [leaves]  # type: ignore[list-item]

    def _leaf(self, kind: str, name: str, output: torch.Tensor | None,
              target: torch.Tensor | None) -> torch.Tensor | None:
        if kind == "param":
            return self._named[name]
        if kind == "act":
            taps = self._taps([name])
            return taps[0] if taps else None
        value = {"output": output, "input": self._input, "target": target}[kind]
        if kind == "target" and value is not None and not value.is_floating_point():
            ref = output if output is not None else value
            value = value.to(ref.dtype if ref.is_floating_point() else torch.get_default_dtype())
        return value

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        return primary_tensor(self.module(x))

    def penalty(self, output: torch.Tensor | None = None, target: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_k w_k(t) · g_k over the loss-side penalties (0 if there are none). ``output`` is what
        the model returned: a tensor, or a tuple / dict / ``ModelOutput`` whose ``logits`` (else
        first tensor) ``output`` terms read (``_util.primary_tensor``)."""
        output = self._output_tensor(output)
        t = self.clock.t
        if self.clock.epoch != self._seen_epoch:     # the clock rolled over: a new epoch's report
            self._seen, self._seen_epoch = {}, self.clock.epoch
        terms: list[tuple[str, torch.Tensor]] = []
        total: torch.Tensor | None = None
        for i in self._order:
            p = self.penalties[i]
            w = evaluate_scalar(p.weight, t)
            if w == 0.0 and p.kind == "jacobian_fro":
                continue  # an extra forward and double backward for nothing
            got = self._penalty_value(i, p, output, target)
            if got is None:
                continue
            raw, scale = got
            # kept for the epoch's report: a running sum on the device (read once, in values())
            acc = self._seen.setdefault(p.label or p.kind, [0.0, 0])
            acc[0] = acc[0] + raw.detach() * scale
            acc[1] += 1
            if w != 0.0:
                term = raw * (w * scale)
                terms.append((p.label or p.kind, term.detach()))
                total = term if total is None else total + term
        self._last_terms = terms
        if total is None:
            ref = output if output is not None and output.is_floating_point() else \
                next(iter(self.module.parameters()))
            return torch.zeros((), device=ref.device, dtype=ref.dtype)
        return total

    def _output_tensor(self, output: Any) -> torch.Tensor | None:
        """The model's output as the tensor ``output`` terms and the task loss read; a located
        error when an ``output`` term needs one and the output holds none."""
        value = primary_tensor(output)
        if value is None or isinstance(value, torch.Tensor):
            return value
        users = [p.label or p.kind for p in self.penalties if p.output or
                 (p.kind == "expr" and "output" in p.hyper["kinds"])]
        if not users and self.task_loss is None and not self._auto_loss:
            return None
        raise error(f"the model's output is a {type(output).__name__} holding no tensor, so "
                    f"{'`' + users[0] + '`' if users else 'the task loss'} cannot read it",
                    notes=["pass the output tensor (e.g. the logits) to reg.loss / reg.penalty"])

    def loss(self, output: Any, target: torch.Tensor | None = None) -> torch.Tensor:
        """Task loss plus the in-graph penalties: L(output, target) + Σ_k w_k(t) g_k.

        ``output`` may be a tuple, dict or transformers ``ModelOutput`` (``_util.primary_tensor``
        picks the tensor the loss reads). A block without a ``loss`` statement, given an output
        that carries its own ``loss`` tensor (a transformers model called with ``labels``), takes
        that as the task loss, and ``target`` may then be omitted."""
        own = output.get("loss") if isinstance(output, Mapping) else None
        if self._auto_loss and isinstance(own, torch.Tensor) and own.dim() == 0:
            task = own
        else:
            if target is None:
                raise error("reg.loss(output, target): the target is missing, and the output carries no `loss` "
                            "of its own", notes=["pass the batch's targets, or call the model so that it "
                                                 "returns its loss (transformers: labels=...)"])
            if self.task_loss is None and self._auto_loss:
                self.task_loss = build_loss("mse" if target.is_floating_point() else "cross_entropy")
            if self.task_loss is None:
                raise error("this regularizer has no task loss; give `loss` (or use .penalty())")
            task = self.task_loss(self._output_tensor(output), target)
        pen = self.penalty(output, target)
        output = self._output_tensor(output)
        loss = task + pen
        if self.check_finite:
            # references only (no sync): the finite check after the step reads them
            self._last = {"loss": loss.detach(), "task": task.detach(), "terms": self._last_terms,
                          "output": output.detach() if isinstance(output, torch.Tensor) else None,
                          "target": target}
        return loss

    # ---- after the optimizer step
    def _mark_pending(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._pending = True

    def _step_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._run_step()

    def after_step(self) -> None:
        """The fused proximal steps and projections, the finite check and the clock tick.
        Runs by itself inside ``optimizer.step()`` when the optimizer's hooks are registered
        (then this call is a no-op); else call it right after ``optimizer.step()``."""
        if self._hooks and not self._pending:
            return
        self._run_step()

    def _run_step(self) -> None:
        self._pending = False
        step, epoch = self.clock.step + 1, self.clock.epoch      # before the clock ticks
        last, self._last = self._last, None
        # the tensors the proxes will read, as the optimizer left them (no sync): tells an update
        # that overflowed from a prox that wrote NaN, if the check below fails
        before = finite_flag([t for b in self.engine.active_buckets() for t in self.engine.touched(b)]) \
            if self.check_finite else None
        try:
            applied = self.engine.after_step()
        except Exception as exc:  # noqa: BLE001 - a kernel failing on NaN input is reported as such
            if self.check_finite:
                self._diagnose(step, epoch, last, self.engine.active_buckets(), failure=exc)
            raise
        if not self.check_finite:
            return
        # the loss and every tensor a prox or projection wrote: fused reductions, one sync
        tensors = [last["loss"]] if last is not None else []
        for b in applied:
            tensors += self.engine.touched(b)
        after = finite_flag(tensors)
        ok = after if before is None else before if after is None else before & after
        if ok is not None and not ok.item():           # .item(): the one sync (bool() is slower)
            self._diagnose(step, epoch, last, applied, before_ok=before is None or bool(before.item()))

    def finalize(self) -> None:
        """Apply the constraints once more at the end of training."""
        applied = self.engine.finalize()
        if self.check_finite:
            flag = finite_flag([t for b in applied for t in self.engine.touched(b)])
            if flag is not None and not flag.item():
                self._diagnose(self.clock.step, self.clock.epoch, None, applied, final=True)

    # ---- the slow path of the finite check: say where the bad value came from
    def _diagnose(self, step: int, epoch: int, last: dict[str, Any] | None, applied: Sequence[Any],
                  failure: BaseException | None = None, final: bool = False, before_ok: bool = True) -> None:
        """Raise ``NonFiniteError`` naming the step, the term and the tensors (returns only when
        nothing non-finite is found, e.g. a kernel failed for another reason)."""
        where = "at the final projections" if final else f"at step {step} (epoch {epoch + 1})"
        notes = self._lr_notes()
        if last is not None and not bool(torch.isfinite(last["loss"]).all()):
            parts = [("the task loss", last["task"]), *last["terms"]]
            bad = [f"{name} = {_show(v)}" for name, v in parts if not bool(torch.isfinite(v).all())]
            term = bad[0].split(" = ")[0] if bad else "the sum of the loss terms"
            target, inputs = last.get("target"), self._input
            bad_data = [f"the batch's {what} hold NaN/inf" for what, x in (("inputs", inputs), ("targets", target))
                        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all())]
            if bad_data:
                term = "the data"
                bad = bad_data + bad
                notes = ["clean the data (or check the data source); the weights were fine before this step"]
            elif last.get("output") is not None and not bool(torch.isfinite(last["output"]).all()):
                bad.append("the model's output holds NaN/inf: the previous update left non-finite weights, "
                           "or the inputs hold NaN/inf")
            self._raise(f"non-finite loss {where}: {'; '.join(bad) or 'the total overflowed'}", step, term,
                        notes)
        named = dict(self.module.named_parameters())
        for b in applied:
            bad_t = nonfinite_tensors((n, named[n]) for n in b.names)
            if not bad_t:
                continue
            label = ", ".join(sorted(set(b.labels))) or b.kernel
            kind = "projection" if b.kernel in _projection_kernels() else "prox"
            if before_ok and failure is None:
                self._raise(f"non-finite weights {where}: {describe_tensors(bad_t)}; the {kind} `{b.kernel}` of "
                            f"`{label}` wrote them from finite weights", step, f"{kind} `{label}`",
                            [f"check the {kind}'s hyperparameters (a NaN or infinite value, a schedule)"])
            term, why = self._update_cause(b.names, named, loss_known=last is not None)
            extra = [f"the {kind} `{label}` then failed on them: {type(failure).__name__}: "
                     f"{str(failure).splitlines()[0][:160]}"] if failure is not None else []
            self._raise(f"non-finite weights {where}: {describe_tensors(bad_t)}; {why}", step, term,
                        [*extra, *notes])

    def _update_cause(self, names: Sequence[str], named: dict[str, nn.Parameter], loss_known: bool
                      ) -> tuple[str, str]:
        """(term, why) when the optimizer step left non-finite weights."""
        grads = nonfinite_tensors((n, named[n].grad) for n in names if named[n].grad is not None)
        if grads:
            return "the gradient (optimizer step)", (f"the gradient of {describe_tensors(grads)} is not finite"
                                                     + (" although the loss is" if loss_known else ""))
        opt_state = self._nonfinite_optimizer_state(names, named)
        if opt_state:
            return "the optimizer update", f"the optimizer state of {describe_tensors(opt_state)} is not finite"
        return "the optimizer update", ("the optimizer step overflowed them (finite gradients and state: "
                                        "learning rate x update beyond the dtype's range)")

    def _nonfinite_optimizer_state(self, names: Sequence[str], named: dict[str, nn.Parameter]) -> list:
        if self.optimizer is None:
            return []
        out = []
        for n in names:
            st = self.optimizer.state.get(named[n], {})
            out += nonfinite_tensors((f"{n}:{k}", v) for k, v in st.items() if isinstance(v, torch.Tensor))
        return out

    def _lr_notes(self) -> list[str]:
        return learning_rate_notes(self.optimizer)

    def _raise(self, message: str, step: int, term: str, notes: list[str]) -> None:
        raise_nonfinite(message, step, term, notes, self.nonfinite_notes)

    # ---- reporting
    def values(self) -> dict[str, float]:
        """Each regularizer's value: loss-side terms averaged over this epoch's batches (or now,
        for parameter terms never evaluated), prox terms g(x) now, constraints ‖x − Π(x)‖."""
        out: dict[str, float] = {}
        for i, p in enumerate(self.penalties):
            label = p.label or p.kind
            if self._seen.get(label) and self._seen[label][1]:
                acc = self._seen[label]
                out[label] = float(acc[0]) / acc[1]
            elif p.params and (p.kind != "expr" or set(p.hyper["kinds"]) == {"param"}):
                with torch.no_grad():
                    raw, scale = self._penalty_value(i, p, None)  # type: ignore[misc]
                    out[label] = float(raw) * scale
        named = dict(self.module.named_parameters())
        t = self.clock.t
        frozen = {n for _, n in self.engine.frozen}
        for g in self.engine.groups:
            label = g.label or g.kernel
            with torch.no_grad():
                if g.is_projection:
                    # frozen tensors are never projected: no distance is claimed for them (a
                    # constraint on frozen tensors only has no value, not 0)
                    live = [n for n in g.params if n not in frozen]
                    if live:
                        hyper = hyper_at(g.hyper, t)
                        out[label] = sum(set_distance(g.kernel, named[n], hyper, g.matrix) for n in live)
                else:
                    kind = "nuclear" if g.kernel == "nuclear" else g.kernel
                    hyper = dict(g.hyper)
                    if kind == "elastic_net":
                        hyper = {"a": g.hyper.get("lam_l1", 1.0), "b": g.hyper.get("lam_l2", 1.0)}
                    total = 0.0
                    for n in g.params:
                        if g.value_tree is not None:   # a catalogue atom's own evaluation
                            total += float(eval_tree(g.value_tree, [named[n]]))
                        elif kind == "anchor_l2":
                            total += float(param_value(kind, named[n], anchor=self.engine.anchors[n]))
                        elif kind in PARAM_KINDS:
                            total += float(param_value(kind, named[n], hyper))
                        else:
                            break
                    else:
                        out[label] = total
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}

    def weights(self) -> dict[str, float]:
        """Each term's weight at the current time."""
        t = self.clock.t
        out = {p.label or p.kind: evaluate_scalar(p.weight, t) for p in self.penalties}
        out.update({g.label or g.kernel: evaluate_scalar(g.weight, t) for g in self.engine.groups})
        return out

    # ---- state for checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"clock": self.clock.state_dict(), "engine": self.engine.state_dict(),
                                 "anchors": {k: v.clone() for k, v in self.anchors.items()}}
        if self._generator is not None:
            state["generator"] = self._generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock.load_state_dict(state["clock"])
        self.engine.load_state_dict(state.get("engine", {}))
        for k, v in state.get("anchors", {}).items():
            if k in self.anchors:
                self.anchors[k] = v.to(self.anchors[k].device, self.anchors[k].dtype)
        if "generator" in state:
            dev = next(iter(self.module.parameters())).device
            self._generator = torch.Generator(device=dev)
            self._generator.set_state(state["generator"])

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.engine.close()


def _show(v: torch.Tensor) -> str:
    x = v.detach().reshape(-1)
    bad = x[~torch.isfinite(x)]
    return str(float(bad[0])) if bad.numel() else str(float(x[0]))


def _projection_kernels() -> set[str]:
    from regspec.backends.torch.prox import KERNELS

    return {k for k, v in KERNELS.items() if v.kind == "projection"}
