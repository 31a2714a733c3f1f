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
from regspec.compiler.update_plan import plan_has_update
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


def check_optimizer_call(call: Any) -> None:
    """A built-in optimizer's keywords against torch's signature, located at the spec's
    `optimizer` statement: the trainer builds the optimizer later, where no span is left, and a
    misspelt keyword (`sgd(momentun = 0.9)`) would stop `train` with an unlocated error."""
    key = call.name.lower() if call.kind == "builtin" else None
    if key in OPTIMIZERS:
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in call.kwargs.items()}
        check_kwargs(OPTIMIZERS[key], kwargs, f"optimizer `{key}`", call.span, skip=("params",))


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
        stepped = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for t in self.transforms:
            outside = [n for n in t.params if id(named[n]) not in stepped]
            if outside:   # its gradient or update would be transformed and never applied
                raise error(f"transform `{t.label}`: {', '.join(outside[:4])} {'is' if len(outside) == 1 else 'are'} "
                            "not in the optimizer's parameter groups, so the optimizer never steps "
                            f"{'it' if len(outside) == 1 else 'them'}", span,
                            ["give the optimizer every parameter the statement selects, or select fewer"])
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
        state = {"transforms": [t.state_dict() for t in self.transforms],
                 "multipliers": [m.state_dict() for m in self.multipliers]}
        if self._own_clock:      # (a shared clock is the Regularizer's to save)
            state["clock"] = {k: torch.tensor(v) for k, v in self.clock.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("transforms", [])) != len(self.transforms) or \
                len(state.get("multipliers", [])) != len(self.multipliers):
            raise error("the checkpoint's update rule (transforms, multipliers) does not match this spec's")
        for t, s in zip(self.transforms, state["transforms"]):
            t.load_state_dict(s)
        for m, s in zip(self.multipliers, state["multipliers"]):
            m.load_state_dict(s)
        if self._own_clock and "clock" in state:
            self.clock.load_state_dict({k: int(v) for k, v in state["clock"].items()})

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


# ------------------------------------------------------------------ binding a plan's update rule


def bind_transforms(plan: Any, module: torch.nn.Module, total: float | None, steps_per_epoch: int | None
                    ) -> list[Any]:
    """The plan's ``transform`` statements bound to the trainable parameters they select."""
    from .bind import make_scalar, make_when, weight_layout
    from .selectors import select_params
    from .transforms import build_transform

    out = []
    for tp in plan.transforms:
        sel = tp.target
        hits = select_params(module, sel.pattern, sel.type, span=sel.span)
        names = [n for n, p in hits if p.requires_grad]
        if not names:
            raise error(f"transform {tp.name}: {sel.text} matches only frozen tensors ({', '.join(n for n, _ in hits)})",
                        sel.span)
        if tp.matrix:
            flat = [f"{n} {list(p.shape)}" for n, p in hits if p.requires_grad and p.dim() < 2]
            if flat:
                raise error(f"transform {tp.name} acts on matrices, but {sel.text} matches {', '.join(flat)}", sel.span,
                            [f"matched: {', '.join(n for n, _ in hits)}", 'select weights only, e.g. param("*.weight")'])
        options = {k: make_scalar(v, total, steps_per_epoch) for k, v in tp.options.items()}
        if tp.name == "orthogonalize":
            options["transposed"] = [n for n in names if weight_layout(module, n) == "in_out"]
        out.append(build_transform(tp.name, names, label=f"line {tp.line}: {tp.text}",
                                   when=make_when(tp.gate, steps_per_epoch), **options))
    return out


def constraint_value(tb: Any) -> Any:
    """What a Lagrange multiplier's constraint measures, from the term's binding."""
    from .lagrangian import ConstraintValue

    if tb.penalty is not None and tb.penalty.kind == "expr":
        h = tb.penalty.hyper
        return ConstraintValue(tree=h["expr"], leaves=[list(x) for x in h["leaves"]], kinds=list(h["kinds"]))
    if tb.penalty is not None:
        return ConstraintValue(tb.penalty.kind, params=list(tb.penalty.params), acts=list(tb.penalty.acts),
                               hyper={k: v for k, v in tb.penalty.hyper.items() if k != "nonneg"})
    g = tb.group
    if getattr(g, "value_tree", None) is not None:
        return ConstraintValue(tree=g.value_tree, leaves=[[n] for n in g.params], kinds=["param"])
    return ConstraintValue(tb.term.penalty or tb.term.name, params=list(g.params), hyper=dict(tb.options))


def _refuse_frozen_only(module: torch.nn.Module, values: list[Any], tbs: list[Any]) -> None:
    """A Lagrangian constraint on parameters only, all frozen: no step can change its value, so
    its multiplier would grow without end while the penalty moves nothing."""
    names: list[str] = []
    for v in values:
        if v.tree is None and (v.acts or not v.params) or v.tree is not None and any(k != "param" for k in v.kinds):
            return   # activations or the output: the trained layers before them move it
        names += v.params if v.tree is None else [n for leaf in v.leaves for n in leaf]
    named = dict(module.named_parameters())
    if names and not any(named[n].requires_grad for n in names if n in named):
        raise error(f"this constraint is on frozen tensors only ({', '.join(dict.fromkeys(names))}): no step can "
                    "change its value, and its multiplier would grow without end", tbs[0].term.span,
                    ["constrain trained tensors, or drop the `freeze` (requires_grad=False) of these"])


def bind_multipliers(plan: Any, binding: Any) -> list[Any]:
    """One ``Multiplier`` per Lagrangian constraint; the weights of its terms in ``binding`` (the
    Regularizer's penalties and prox groups) become that multiplier."""
    from regspec.compiler.update_plan import MultiplierRef

    from .lagrangian import Multiplier

    out = []
    for ref in plan.multipliers:
        tbs = [tb for tb in binding.terms if isinstance(tb.term.weight, MultiplierRef) and tb.term.weight is ref]
        values = [constraint_value(tb) for tb in tbs]
        _refuse_frozen_only(binding.module, values, tbs)
        value = values[0] if len(values) == 1 else _SumOfValues(values)
        m = Multiplier(value, ref.sense, ref.bound, ref.lr, ref.every, ref.init, ref.label)
        for tb in tbs:
            (tb.penalty if tb.penalty is not None else tb.group).weight = m
        out.append(m)
    return out


class _SumOfValues:
    """A constraint whose left side was split into parts (a sum of terms)."""

    def __init__(self, parts: list[Any]):
        self.parts = parts

    def __call__(self, module: torch.nn.Module) -> float:
        return sum(p(module) for p in self.parts)


def bind_update_rule(plan: Any, binding: Any, optimizer: torch.optim.Optimizer, *, total: float | None = None,
                     steps_per_epoch: int | None = None) -> UpdateRule | None:
    """The plan's transforms, SAM and multipliers as hooks on ``optimizer`` (None when it has none).
    Call before the Regularizer is built (its prox hook must run after the rule's)."""
    if not plan_has_update(plan):
        return None
    from .sam import Sam

    transforms = bind_transforms(plan, binding.module, total, steps_per_epoch)
    multipliers = bind_multipliers(plan, binding)
    sam = Sam(rho=plan.sam.rho, adaptive=plan.sam.adaptive, label=plan.sam.text) if plan.sam is not None else None
    span = plan.transforms[0].span if plan.transforms else None
    return UpdateRule(binding.module, optimizer, transforms=transforms, sam=sam, multipliers=multipliers,
                      steps_per_epoch=steps_per_epoch, span=span)


def describe_update(plan: Any, module: torch.nn.Module, *, total: float | None = None,
                    steps_per_epoch: int | None = None) -> list[str]:
    """``regspec plan`` lines for the transforms, SAM and the multipliers (the transforms are
    bound, so what binding refuses is refused here too)."""
    from .selectors import select_params

    bind_transforms(plan, module, total, steps_per_epoch)
    out: list[str] = []
    if plan.sam is not None:
        out.append(f"  sam        {plan.sam.text}: two passes per step, perturbation rho = {plan.sam.rho:g} along "
                   f"{'|w|^2 g / ||(|w| g)||' if plan.sam.adaptive else 'g / ||g||'} (the closure recomputes the loss)")
    for tp in plan.transforms:
        hits = select_params(module, tp.target.pattern, tp.target.type, span=tp.target.span)
        out.append(f"line {tp.line:<4} {tp.text}")
        out.append("           matches   " + ", ".join(f"{n} {list(p.shape)}" + ("" if p.requires_grad else " (frozen)")
                                                    for n, p in hits))
        where = "on the gradient, before the base step" if tp.position == "grad" else "on the base optimizer's update"
        opts = ", ".join(f"{k}={v.text() if hasattr(v, 'text') and callable(v.text) else v}" for k, v in tp.options.items())
        out.append(f"           transform {tp.math}; {where}; {opts}")
        if tp.gate is not None:
            out.append(f"           gate      {tp.gate.text()}")
    for ref in plan.multipliers:
        out.append(f"multiplier {ref.index}: {ref.text}")
        out.append(f"           {ref.describe()}; logged as weight/<term> in metrics.jsonl, kept in checkpoints")
    return out


# ------------------------------------------------------------------ the generated trainer's update rule
def update_rule_source(plan: Any, binding: Any, *, render: Any, comment: Any, need: Any, call: Any, string: Any,
                       total: float | None, steps_per_epoch: int | None) -> list[str]:
    """Source lines of ``make_update_rule(model, optimizer, total, steps_per_epoch)`` for a
    generated trainer: every transform, the SAM wrapper and every multiplier spelled out.
    The generator's helpers: ``render`` spells a plan value (numbers, schedules), ``comment``
    makes comment lines and ``string`` string literals (spec text made safe), ``call(head,
    args, indent, tail)`` a call wrapped to the line width, ``need(module, name)`` an import."""
    from regspec.compiler.train_plan import ScheduleRef
    from regspec.compiler.update_plan import MultiplierRef

    mod = "regspec.backends.torch.train"
    need(f"{mod}.optim", "UpdateRule")
    lines = ["", "", "def make_update_rule(model: nn.Module, optimizer: torch.optim.Optimizer, total: int,",
             "                     steps_per_epoch: int) -> UpdateRule:",
             '    """How the update is formed: hooks on optimizer.step() (optim.UpdateRule). Before the base',
             "    step: the dual ascent of each Lagrange multiplier, SAM's second pass, the gradient transforms;",
             "    update transforms act on the base step's update. Their state (momentum buffers,",
             '    multipliers, clock) travels inside optimizer.state_dict(), so checkpoints keep it."""']
    bound = bind_transforms(plan, binding.module, total, steps_per_epoch)
    lines.append("    transforms = [" + ("" if bound else "]"))
    for tp, tr in zip(plan.transforms, bound):
        cls = type(tr).__name__
        need(f"{mod}.transforms", cls)
        lines += comment(f"line {tp.line}: {tp.text}  ({tp.math})", "        ")
        args = [f"params={tr.params!r}"] + [f"{k}={render(v)}" for k, v in tp.options.items()]
        for v in tp.options.values():
            while isinstance(v, ScheduleRef):   # the schedules an option calls (and a `then` inside)
                need(f"{mod}.schedules", v.name)
                v = v.kwargs.get("then")
        if tr.when is not None:
            need(f"{mod}.proxstep", "When")
            args.append(f"when={tr.when!r}")
        args.append(f"label=LABEL_{tp.line}")
        lines += call(cls, args, "        ", tail=",")
    if bound:
        lines.append("    ]")
    lines.append("    multipliers: list[Multiplier] = []" if plan.multipliers else "    multipliers = []")
    for ref in plan.multipliers:
        need(f"{mod}.lagrangian", "Multiplier")
        need(f"{mod}.lagrangian", "ConstraintValue")
        tbs = [tb for tb in binding.terms if isinstance(tb.term.weight, MultiplierRef) and tb.term.weight is ref]
        if len(tbs) != 1:
            raise error("the trainer generator spells out a Lagrangian constraint of one term; this one has "
                        f"{len(tbs)} parts", ref.span, ["write one constraint per term"])
        value = constraint_value(tbs[0])
        fields = {k: getattr(value, k) for k in ("kind", "params", "acts", "hyper", "tree", "leaves", "kinds")
                  if getattr(value, k) not in (None, [], {}, "expr")}
        line = ref.span.line if ref.span else 0
        lines += comment(f"line {line}: {ref.text}", "    ")
        lines += comment(ref.describe(), "    ")
        lines += call("value = ConstraintValue", [f"{k}={v!r}" for k, v in fields.items()], "    ")
        lines += call("multipliers.append(Multiplier", ["value", repr(ref.sense), repr(ref.bound), f"lr={ref.lr!r}",
                                                        f"every={ref.every}", f"init={ref.init!r}",
                                                        f"label=LABEL_{line}"], "    ", tail=")")
    if plan.sam is not None:
        need(f"{mod}.sam", "Sam")
        lines += comment(f"optimizer {plan.sam.text}: two passes per step (the loop passes a closure)", "    ")
        lines.append(f"    sam = Sam(rho={plan.sam.rho!r}, adaptive={plan.sam.adaptive!r})")
    else:
        lines.append("    sam = None")
    lines.append("    return UpdateRule(model, optimizer, transforms=transforms, sam=sam, multipliers=multipliers,")
    lines.append("                      steps_per_epoch=steps_per_epoch)")
    labels = [(tp.line, tr.label) for tp, tr in zip(plan.transforms, bound)]
    labels += [(ref.span.line if ref.span else 0, ref.label) for ref in plan.multipliers]
    head = [""]
    for line, label in labels:   # the labels (spec text) as escaped literals, before the function
        head.append(f"LABEL_{line} = {string(label, '    ')}")
    return head + lines


def update_json(plan: Any, module: torch.nn.Module) -> dict[str, Any]:
    """``regspec plan --json``: the transforms (what they match), sam and the multipliers."""
    from .selectors import select_params

    def value(v: Any) -> Any:
        return v.text() if hasattr(v, "text") and callable(v.text) else v

    transforms = []
    for tp in plan.transforms:
        hits = select_params(module, tp.target.pattern, tp.target.type, span=tp.target.span)
        transforms.append({"line": tp.line, "text": tp.text, "name": tp.name, "position": tp.position,
                           "math": tp.math, "options": {k: value(v) for k, v in tp.options.items()},
                           "matches": [n for n, p in hits if p.requires_grad],
                           "gate": tp.gate.text() if tp.gate is not None else None})
    sam = None if plan.sam is None else {"text": plan.sam.text, "rho": plan.sam.rho, "adaptive": plan.sam.adaptive}
    multipliers = [{"index": r.index, "text": r.text, "sense": r.sense, "bound": r.bound, "lr": r.lr,
                    "every": r.every, "init": r.init, "rule": r.describe()} for r in plan.multipliers]
    return {"transforms": transforms, "sam": sam, "multipliers": multipliers}
