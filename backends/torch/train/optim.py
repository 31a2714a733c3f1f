"""Optimizers by name with checked keyword arguments.

``build_optimizer("adamw", params, lr=1e-3, weight_decay=0)`` calls ``torch.optim.AdamW``.
Keyword names are checked against the torch constructor's signature before the call (unknown
names get suggestions and the list of accepted names); values torch rejects (``lr < 0``...)
become ``RegspecError`` too. Lists arriving from a spec for tuple arguments (``betas``) are
converted to tuples. ``"pkg.mod:Class"`` names a user optimizer class.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from regspec.compiler.train_plan import OPTIMIZER_NAMES, same_names
from regspec.diagnostics import RegspecError, Span, did_you_mean, error

from ._util import check_kwargs

__all__ = ["OPTIMIZERS", "build_optimizer", "current_lrs", "set_hparam", "UpdateRule"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
same_names(OPTIMIZERS, OPTIMIZER_NAMES, "optimizers")


def build_optimizer(
    name: str, params: Iterable[Any], /, *, span: Span | None = None, **torch_kwargs: Any
) -> torch.optim.Optimizer:
    """``torch.optim.{SGD, Adam, AdamW}(params, **torch_kwargs)`` with checked arguments.

    ``params`` is what torch accepts: an iterable of tensors, of ``(name, tensor)`` pairs, or of
    parameter-group dicts.
    """
    if ":" in name:
        from .models import load_user_object

        cls = load_user_object(name, span, what="optimizer")
        label = f"user optimizer `{name}`"
    else:
        key = name.lower()
        if key not in OPTIMIZERS:
            raise error(
                f"unknown optimizer `{name}`", span,
                did_you_mean(name, OPTIMIZERS) + ["optimizers: " + ", ".join(OPTIMIZERS) + '; user: "pkg.mod:Class"'],
            )
        cls, label = OPTIMIZERS[key], f"optimizer `{key}`"
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in torch_kwargs.items()}
    check_kwargs(cls, kwargs, label, span, skip=("params",))
    params = list(params)
    if not params:
        raise error(f"{label}: no parameters to optimize", span)
    try:
        return cls(params, **kwargs)
    except RegspecError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise error(f"{label} rejected its arguments: {exc}", span) from None


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each parameter group, in group order."""
    return [float(g["lr"]) for g in optimizer.param_groups]


def set_hparam(optimizer: torch.optim.Optimizer, name: str, value: float) -> None:
    """Set hyperparameter ``name`` (``lr``, ``weight_decay``, ``momentum``...) in every group
    (for schedules on optimizer hyperparameters); unknown names raise ``RegspecError``."""
    for g in optimizer.param_groups:
        if name not in g:
            raise error(f"optimizer {type(optimizer).__name__} has no hyperparameter `{name}`",
                        None, did_you_mean(name, [k for k in g if k != "params"]))
        g[name] = value


# ------------------------------------------------------------------ update rule: transforms, SAM, multipliers
class UpdateRule:
    """Update transforms, sharpness-aware minimisation and Lagrange multipliers, run from hooks
    on ``optimizer.step()`` (any loop that calls the optimizer runs them; register the rule
    before the Regularizer, whose post-step hook then applies the prox steps after the whole
    update).

    Before the base step (pre-hook), in this order: the dual ascent of each multiplier (at the
    current weights and the step's own forward pass, lagrangian.py); SAM's two passes (the
    closure passed to ``optimizer.step(closure)`` runs at the perturbed weights, sam.py); the
    gradient transforms in statement order; for update transforms, the parameter is set to 0 so
    that the base step writes its update into it. After the base step (post-hook): each update
    transform restores its parameter, applies the decoupled weight decay and adds the
    transformed update (transforms.py).

    The rule's state (Newton-Schulz momentum buffers, multipliers) travels inside
    ``optimizer.state_dict()`` under ``"regspec_update"`` (a state-dict hook), so checkpoints
    written by the runtime carry it and ``load_state_dict`` restores it.
    """

    STATE_KEY = "regspec_update"

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 transforms: Sequence[Any] = (), sam: Any = None, multipliers: Sequence[Any] = (),
                 steps_per_epoch: int | None = None, span: Span | None = None):
        from .proxstep import Clock

        self.module, self.optimizer = module, optimizer
        self.transforms, self.sam, self.multipliers = list(transforms), sam, list(multipliers)
        self.clock = Clock(steps_per_epoch)     # replaced by the Regularizer's (use_clock)
        self._own_clock = True
        self._saved: list[tuple[torch.nn.Parameter, torch.Tensor, float, float, Any]] = []
        named = dict(module.named_parameters())
        for t in self.transforms:
            missing = [n for n in t.params if n not in named]
            if missing:
                raise error(f"transform `{t.label}`: the model has no parameter `{missing[0]}`", span,
                            did_you_mean(missing[0], named))
        if any(t.position == "update" for t in self.transforms) and type(optimizer) not in tuple(OPTIMIZERS.values()):
            raise error(f"an update transform reads the base optimizer's update, which needs a built-in optimizer "
                        f"({', '.join(OPTIMIZERS)}); this one is {type(optimizer).__name__}", span,
                        ["gradient transforms (clip_grad_norm, orthogonalize) work with any optimizer"])
        self._hooks = [optimizer.register_step_pre_hook(self._before),
                       optimizer.register_step_post_hook(self._after),
                       optimizer.register_state_dict_post_hook(self._save_state),
                       optimizer.register_load_state_dict_pre_hook(self._load_state)]

    def use_clock(self, clock: Any) -> None:
        """Share the Regularizer's clock (schedules, gates and ``every`` read one time)."""
        self.clock, self._own_clock = clock, False

    def _named(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.module.named_parameters())

    # ---- the step
    def _before(self, optimizer: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        step, t = self.clock.step + 1, self.clock.t
        for m in self.multipliers:
            m.update(self.module, step)
        named = self._named()
        if self.sam is not None:
            kwargs = dict(kwargs)
            # args holds the optimizer itself, then step's own arguments
            closure = kwargs.pop("closure", None) if "closure" in kwargs else (args[1] if len(args) > 1 else None)
            self.sam.two_pass(named, closure, lambda: optimizer.zero_grad(set_to_none=True))
            args = tuple(args[:1])         # the base step must not run the closure again
        with torch.no_grad():
            for tr in self.transforms:
                if tr.position == "grad" and tr.active(step, t):
                    tr.apply_grads(named, t)
            self._saved = [self._zero_for_base(named[n], tr) for tr in self.transforms
                           if tr.position == "update" and tr.active(step, t) for n in tr.params
                           if named[n].grad is not None]
        return (args, kwargs) if self.sam is not None else None

    def _group_of(self, p: torch.nn.Parameter) -> dict[str, Any]:
        return next(g for g in self.optimizer.param_groups if any(q is p for q in g["params"]))

    def _zero_for_base(self, p: torch.nn.Parameter, tr: Any) -> tuple:
        group = self._group_of(p)
        wd = float(group.get("weight_decay", 0.0) or 0.0)
        decoupled = isinstance(self.optimizer, torch.optim.AdamW)
        grad = p.grad
        if wd and not decoupled:          # coupled decay (SGD, Adam): wd * x joins the gradient here
            p.grad = grad + wd * p
        saved = p.detach().clone()
        p.zero_()
        return p, saved, wd if decoupled else 0.0, float(group["lr"]), (tr, grad)

    def _after(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        t = self.clock.t
        with torch.no_grad():
            for p, saved, wd, lr, (tr, grad) in self._saved:
                update = p.detach().clone()
                p.copy_(saved)
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(tr.transform_update(update, lr, t))
                p.grad = grad
        self._saved = []
        if self._own_clock:
            self.clock.tick()

    # ---- state
    def state_dict(self) -> dict[str, Any]:
        return {"transforms": [t.state_dict() for t in self.transforms],
                "multipliers": [m.state_dict() for m in self.multipliers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("transforms", [])) != len(self.transforms) or \
                len(state.get("multipliers", [])) != len(self.multipliers):
            raise error("the checkpoint's update rule (transforms, multipliers) does not match this spec's")
        for t, s in zip(self.transforms, state["transforms"]):
            t.load_state_dict(s)
        for m, s in zip(self.multipliers, state["multipliers"]):
            m.load_state_dict(s)

    def _save_state(self, optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
        state[self.STATE_KEY] = self.state_dict()
        return state

    def _load_state(self, optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
        state = dict(state)
        mine = state.pop(self.STATE_KEY, None)
        if mine is None:
            if self.multipliers or any(getattr(t, "stateful", False) for t in self.transforms):
                raise error("the optimizer state has no update-rule state (transforms, multipliers) to restore")
        else:
            self.load_state_dict(mine)
        return state

    def weights(self) -> dict[str, float]:
        """Each multiplier's value, by label."""
        return {m.label: m.value for m in self.multipliers}

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
