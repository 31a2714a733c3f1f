"""How a train block forms its update: ``transform`` statements, the ``sam`` optimizer wrapper
and ``constrain EXPR <= c via lagrangian(...)``, resolved (pure Python, no torch).

::

    optimizer sam(base = sgd(lr = 0.1, momentum = 0.9), rho = 0.05)   # two passes per step
    transform clip_grad_norm(param("**"), max_norm = 1.0)              # on the gradient
    transform orthogonalize(param("layers.*.weight"), steps = 5)       # Muon's direction
    transform spectral_clip(param(type = Linear), c = 0.5)             # SPECTRA, on the update
    constrain l1(act("acts.*")) <= 2.0 via lagrangian(lr = 0.01)       # a multiplier per constraint

A transform is written like a regularizer: the form, its target selector first, options as
keywords (the main option may be positional); ``from epoch K`` / ``until epoch K`` gate it.
The forms are declared once here (``TRANSFORM_FORMS``); backends/torch/train/transforms.py
implements exactly these names. A Lagrangian constraint's left side is any term a ``regularize``
statement takes; it is planned by the same rule (loss or prox step) with the multiplier as its
weight (``MultiplierRef``); ``==`` and ``>=`` constraints join the loss (their weight may change
sign, which a prox cannot take).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from regspec import ast
from regspec.diagnostics import did_you_mean, error

__all__ = ["TransformForm", "TRANSFORM_FORMS", "TransformPlan", "SamPlan", "MultiplierRef",
           "plan_update_statement", "split_sam", "plan_has_update", "LAGRANGIAN_OPTIONS", "SAM_OPTIONS"]


@dataclass(frozen=True)
class TransformForm:
    """A transform: where it acts (``grad`` or ``update``), its options and defaults, which option a
    positional argument sets, whether it needs matrices, and its math (``regspec plan``)."""

    name: str
    position: str
    math: str
    options: dict[str, Any]
    positional: str | None = None
    matrix: bool = False
    schedulable: tuple[str, ...] = ()


TRANSFORM_FORMS: dict[str, TransformForm] = {f.name: f for f in [
    TransformForm("clip_grad_norm", "grad", "g <- g * min(1, max_norm / ||g||) (norm over the selected tensors)",
                  {"max_norm": 1.0}, "max_norm", schedulable=("max_norm",)),
    TransformForm("orthogonalize", "grad",
                  "g <- s * NS_k(momentum(g)): Newton-Schulz orthogonalised momentum (Muon)",
                  {"steps": 5, "coefficients": [3.4445, -4.775, 2.0315], "momentum": 0.95, "nesterov": True,
                   "eps": 1e-7, "scale": "original", "dtype": "param"}, "steps", matrix=True),
    TransformForm("spectral_clip", "update",
                  "U <- P diag(min(sigma, c)) Q^T of the base update direction (SPECTRA; soft: "
                  "sigma / sqrt(1 + sigma^2 / c^2))", {"c": 1.0, "soft": False}, "c", matrix=True, schedulable=("c",)),
]}
_SCALES = ("original", "match_rms_adamw", "none")
_NS_DTYPES = ("param", "float32", "float64", "bfloat16")
LAGRANGIAN_OPTIONS = {"lr": 0.01, "init": 0.0}
SAM_OPTIONS = ("base", "rho", "adaptive")


@dataclass
class TransformPlan:
    name: str
    target: Any                  # train_plan.Selector
    options: dict[str, Any]
    position: str
    gate: Any = None             # train_plan.GatePlan (from / until)
    matrix: bool = False
    math: str = ""
    span: Any = field(default=None, repr=False, compare=False)
    text: str = ""

    @property
    def line(self) -> int:
        return self.span.line if self.span is not None else 0


@dataclass
class SamPlan:
    rho: float
    adaptive: bool = False
    span: Any = field(default=None, repr=False, compare=False)
    text: str = ""


@dataclass
class MultiplierRef:
    """The weight of a Lagrangian term: multiplier ``index`` of the plan (``plan.multipliers``),
    with the constraint's sense, bound and dual-ascent settings."""

    index: int
    sense: str
    bound: float
    lr: float
    every: int = 1
    init: float = 0.0
    label: str = ""
    span: Any = field(default=None, repr=False, compare=False)
    text: str = ""

    def describe(self) -> str:
        sign = "" if self.sense != ">=" else "-"
        rule = "max(0, lam + lr (g - c))" if self.sense == "<=" else (
            "max(0, lam + lr (c - g))" if self.sense == ">=" else "lam + lr (g - c)")
        return (f"{sign}lam (Lagrange multiplier, init {self.init:g}); dual ascent lam <- {rule}, lr {self.lr:g}, "
                f"c = {self.bound:g}, every {self.every} step(s)")

    def __repr__(self) -> str:
        return f"multiplier[{self.index}]"


def plan_has_update(plan: Any) -> bool:
    """Whether a train plan has transforms, SAM or Lagrange multipliers (an ``UpdateRule``)."""
    return bool(getattr(plan, "transforms", None) or getattr(plan, "sam", None) or getattr(plan, "multipliers", None))


# ------------------------------------------------------------------ planning
def plan_update_statement(planner: Any, s: ast.Stmt, plan: Any) -> None:
    """Add a ``transform`` or ``constrain ... via lagrangian`` statement to ``plan``."""
    if isinstance(s, ast.Transform):
        plan.transforms.append(_transform(planner, s))
    else:
        _lagrangian(planner, s, plan)


def _transform(planner: Any, s: ast.Transform) -> TransformPlan:
    from regspec.compiler.train_plan import span_text

    e = s.form
    if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name)):
        raise error("`transform` expects a form applied to a selector, e.g. "
                    "`transform spectral_clip(param(\"layers.*.weight\"), c = 1.0)`", e.span,
                    ["forms: " + ", ".join(TRANSFORM_FORMS)])
    name = e.func.id
    if name not in TRANSFORM_FORMS:
        raise error(f"unknown transform `{name}`", e.func.span,
                    did_you_mean(name, TRANSFORM_FORMS) + ["transforms: " + ", ".join(TRANSFORM_FORMS)])
    form = TRANSFORM_FORMS[name]
    if not e.args:
        raise error(f"{name}(...) needs a target first: param(...)", e.span)
    target = planner.selector(e.args[0], ("param",), f"`{name}`")
    given: list[tuple[str, ast.Expr, Any]] = []
    if len(e.args) > 2 or (len(e.args) == 2 and form.positional is None):
        raise error(f"{name}(...) takes its target and at most one positional option ({form.positional})",
                    e.args[-1].span)
    if len(e.args) == 2:
        given.append((form.positional, e.args[1], e.args[1]))  # type: ignore[arg-type]
    for k in e.kwargs:
        if k.name not in form.options:
            raise error(f"{name}(...) has no option `{k.name}`", k.span,
                        did_you_mean(k.name, form.options) + [f"options: {', '.join(form.options)}"])
        if any(g[0] == k.name for g in given):
            raise error(f"`{k.name}` is given twice", k.span)
        given.append((k.name, k.value, k))
    options = dict(form.options)
    for key, value, node in given:
        options[key] = _option(planner, name, key, value, form)
    gate = planner.gate(s.gates)
    if gate is not None and gate.every is not None:
        raise error("a transform applies at every step; gate it with `from` / `until`", s.gates[0].span)
    return TransformPlan(name, target, options, form.position, gate, form.matrix, form.math, s.span,
                         span_text(s.span))


def _option(planner: Any, form: str, key: str, e: ast.Expr, entry: TransformForm) -> Any:
    values = planner.values
    what = f"`{key}` of {form}"
    if key in entry.schedulable:
        v = values.scalar(e, what)
        if isinstance(v, float) and v <= 0:
            raise error(f"{what} must be positive, got {v:g}", e.span)
        return v
    if key == "steps":
        return values.integer(e, what, 1, 99)
    if key == "coefficients":
        v = values.value(e, what)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                           and math.isfinite(c) for c in v)):
            raise error(f"{what} is a list of three numbers [a, b, c], e.g. [3.4445, -4.775, 2.0315]", e.span)
        return [float(c) for c in v]
    if key == "momentum":
        v = values.finite(e, what, 0.0)
        if v >= 1:
            raise error(f"{what} must be below 1, got {v:g}", e.span)
        return v
    if key == "eps":
        v = values.finite(e, what, 0.0)
        if v <= 0:
            raise error(f"{what} must be positive, got {v:g}", e.span)
        return v
    if key in ("nesterov", "soft"):
        v = values.value(e, what)
        if not isinstance(v, bool):
            raise error(f"{what} is true or false", e.span)
        return v
    choices = {"scale": _SCALES, "dtype": _NS_DTYPES}[key]
    v = values.word(e, what)
    if v not in choices:
        raise error(f"unknown {key} `{v}` for {form}", e.span, did_you_mean(v, choices) + [f"{key}: {', '.join(choices)}"])
    return v


def _lagrangian(planner: Any, s: ast.LagrangeConstrain, plan: Any) -> None:
    from regspec.compiler.train_plan import span_text

    if s.via is None:
        raise error(f"`constrain EXPR {s.op} c` has no projection; say how to handle it: "
                    f"`via lagrangian(lr = 0.01)`", s.span,
                    ["`constrain TARGET in SET` projects onto a set; a comparison needs a Lagrange multiplier"])
    via = s.via
    if isinstance(via, ast.Name):
        name, kwargs = via.id, []
    elif isinstance(via, ast.Call) and isinstance(via.func, ast.Name) and not via.args:
        name, kwargs = via.func.id, via.kwargs
    else:
        raise error("expected `via lagrangian(lr = ..., init = ...)`", via.span)
    if name != "lagrangian":
        raise error(f"unknown constraint method `{name}`", via.span, did_you_mean(name, ["lagrangian"]) +
                    ["a comparison constraint is handled `via lagrangian(lr = 0.01, init = 0)`"])
    options = dict(LAGRANGIAN_OPTIONS)
    for k in kwargs:
        if k.name not in options:
            raise error(f"lagrangian(...) has no option `{k.name}`", k.span,
                        did_you_mean(k.name, options) + [f"options: {', '.join(options)}"])
        options[k.name] = planner.values.finite(k.value, f"`{k.name}` of lagrangian")
    if options["lr"] <= 0:
        raise error(f"the dual step `lr` must be positive, got {options['lr']:g}", via.span)
    if s.op != "==" and options["init"] < 0:
        raise error(f"the multiplier of an inequality is nonnegative; `init` is {options['init']:g}", via.span)
    bound = planner.values.finite(s.rhs, "the constraint's bound")
    every = 1
    for g in s.gates:
        if g.kind != "every":
            raise error(f"`{g.kind}`: a Lagrangian constraint holds for the whole run; `every N steps` sets how "
                        "often its multiplier is updated", g.span)
        every = planner.values.integer(g.value, "`every`", 1)
        if g.unit in ("epoch", "epochs"):
            raise error("write the multiplier's update interval in steps: `every N steps`", g.span)
    parts = _parts(planner, s, plan)
    ref = MultiplierRef(len(plan.multipliers), s.op, bound, options["lr"], every, options["init"],
                        f"line {s.span.line}: {span_text(s.span)}", s.span, span_text(s.span))
    plan.multipliers.append(ref)
    for part in parts:
        part.stmt = "constrain"
        part.weight = ref
        part.why = f"{part.why}; weight = the Lagrange multiplier ({ref.describe()})"
        part.span, part.text = s.span, span_text(s.span)
        plan.terms.append(part)


def _parts(planner: Any, s: ast.LagrangeConstrain, plan: Any) -> list[Any]:
    """The constraint's left side, planned like `regularize EXPR` (a loss term for == and >=)."""
    via = None if s.op == "<=" else "grad"
    stmt = ast.Regularize(s.lhs, via, [], span=s.lhs.span)
    out = planner.regularize(stmt, plan)
    parts = out if isinstance(out, list) else [out]
    for part in parts:
        if part.weight != 1.0:
            raise error("write the constraint's left side without a weight (divide the bound instead)", s.lhs.span)
        if part.target.kind not in ("param", "act"):
            raise error("a Lagrangian constraint applies to param(...) or act(...) terms", s.lhs.span)
        if getattr(part, "expr", None) is not None and getattr(part, "atom", None) is None and len(parts) > 1:
            raise error("a Lagrangian constraint takes one term on a selector, e.g. norm1(param(\"w\"))", s.lhs.span)
    return parts


def split_sam(planner: Any, e: ast.Expr) -> tuple[ast.Expr, SamPlan | None]:
    """``sam(base = OPT(...), rho = r)`` -> (the base optimizer's expression, SamPlan)."""
    from regspec.compiler.train_plan import span_text

    if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "sam"):
        return e, None
    if e.args:
        raise error("sam(...) takes keywords: sam(base = sgd(lr = 0.1), rho = 0.05)", e.args[0].span)
    kw = {k.name: k for k in e.kwargs}
    for k in e.kwargs:
        if k.name not in SAM_OPTIONS:
            raise error(f"sam(...) has no option `{k.name}`", k.span,
                        did_you_mean(k.name, SAM_OPTIONS) + [f"options: {', '.join(SAM_OPTIONS)}"])
    if "base" not in kw:
        raise error("sam(...) needs the base optimizer: sam(base = sgd(lr = 0.1), rho = 0.05)", e.span)
    base = kw["base"].value
    if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "sam":
        raise error("sam(...) inside sam(...)", base.span)
    rho = planner.values.finite(kw["rho"].value, "`rho` of sam") if "rho" in kw else 0.05
    if rho <= 0:
        raise error(f"`rho` of sam must be positive, got {rho:g}", kw["rho"].value.span)
    adaptive = False
    if "adaptive" in kw:
        adaptive = planner.values.value(kw["adaptive"].value, "`adaptive` of sam")
        if not isinstance(adaptive, bool):
            raise error("`adaptive` of sam is true or false", kw["adaptive"].value.span)
    return base, SamPlan(rho, adaptive, e.span, span_text(e.span))
