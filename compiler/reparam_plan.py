"""What a train block trains: ``init``, ``reparametrize`` and ``freeze`` statements, resolved.

Pure Python (no torch): the forms are declared here once (``REPARAM_FORMS``: options, defaults,
whether they need matrices, the math) and checked at plan time; the torch side
(``backends/torch/train/reparam.py``) builds them with ``torch.nn.utils.parametrize``.

::

    init "pretrained.pt"                         # a state_dict, relative to the spec file
    freeze param("**")                           # nothing trains ...
    reparametrize param("layers.*.weight") as low_rank(rank = 4, alpha = 8)   # ... but A and B
    reparametrize param("head.weight") as svd_minor(rank = 2)
    reparametrize param("layers.**") as subspace(dim = 200, seed = 0)
    reparametrize param(type = Linear) as weight_norm      # also orthogonal, spectral_norm

Order: ``init`` loads first (into the model as declared, after rewrites); then the
``reparametrize`` and ``freeze`` statements apply in the order written, each selector matching
the tensor names of the model at that point (so ``freeze param("**")`` before a
``reparametrize`` leaves the new factors trainable, and after it freezes them too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from regspec import ast
from regspec.diagnostics import Span, did_you_mean, error

__all__ = ["FormEntry", "REPARAM_FORMS", "ReparamPlan", "InitPlan", "plan_weights_statement"]


@dataclass(frozen=True)
class FormEntry:
    """A reparametrization form. ``options`` maps each option to its default (``None``:
    required); ``matrix``: needs tensors of two or more dimensions (viewed as rows x rest);
    ``trains``: the tensors that are trained, as named under the parametrization."""

    name: str
    options: dict[str, Any]
    matrix: bool
    math: str
    trains: str
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


REPARAM_FORMS: dict[str, FormEntry] = {f.name: f for f in (
    FormEntry("low_rank", {"rank": None, "alpha": None}, True,
              "W = W0 + (alpha / r) B A, W0 frozen, B (m x r) zero at start, A (r x n) Kaiming-uniform; "
              "alpha defaults to r",
              "A, B (r (m + n) per matrix)"),
    FormEntry("svd_minor", {"rank": None}, True,
              "W0 = U S V^T (SVD of the starting weight); W = W_major + U_r diag(S_r) V_r^T with the r "
              "smallest singular triplets U_r, S_r, V_r trainable and W_major (the rest) frozen (SoMA)",
              "U, S, V (r (m + n + 1) per matrix)"),
    FormEntry("subspace", {"dim": None, "seed": 0, "projection": "auto"}, False,
              "theta = theta0 + P z for every selected tensor, one shared z in R^dim (zero at start), P a "
              "seeded random projection with columns of unit expected norm: dense Gaussian, or Fastfood "
              "(S H G Pi H B, Le et al.) blocks when a dense P would exceed 2^24 entries (auto)",
              "z (dim scalars in all)", {"projection": ("auto", "dense", "fastfood")}),
    FormEntry("weight_norm", {"dim": 0}, False,
              "W = g v / ||v|| (torch.nn.utils.parametrizations.weight_norm), norms over all dims but `dim`",
              "original0 (g), original1 (v)"),
    FormEntry("orthogonal", {}, True,
              "W orthogonal (W^T W = I or W W^T = I), 2-D weights only: torch.nn.utils.parametrizations.orthogonal; a "
              "starting weight that is not orthogonal is replaced by an orthogonal one",
              "original"),
    FormEntry("spectral_norm", {"n_power_iterations": 1}, True,
              "W / sigma_max(W), sigma_max by power iteration in training mode "
              "(torch.nn.utils.parametrizations.spectral_norm)",
              "original"),
)}

MAX_DIM = 10**8  # subspace dimension: far beyond any model a spec trains on one machine


@dataclass
class ReparamPlan:
    """One ``reparametrize`` (``form`` set) or ``freeze`` (``form`` None) statement."""

    stmt: str
    target: Any                       # train_plan.Selector
    form: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    span: Span | None = field(default=None, repr=False, compare=False)
    text: str = ""

    @property
    def line(self) -> int:
        return self.span.line if self.span is not None else 0

    @property
    def matrix(self) -> bool:
        return self.form is not None and REPARAM_FORMS[self.form].matrix

    def form_text(self) -> str:
        if self.form is None:
            return "freeze"
        opts = ", ".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v:g}" for k, v in self.options.items())
        return f"{self.form}({opts})"


@dataclass
class InitPlan:
    """``init "file.pt"``: ``path`` as written, relative to the spec's folder."""

    path: str
    span: Span | None = field(default=None, repr=False, compare=False)
    text: str = ""


def plan_weights_statement(planner: Any, s: ast.Stmt, plan: Any) -> None:
    """Resolve an ``init`` / ``reparametrize`` / ``freeze`` statement into ``plan`` (a TrainPlan).
    ``planner`` is train_plan's planner (its ``values`` and ``selector``)."""
    from regspec.compiler.train_plan import span_text

    text = span_text(s.span)
    if isinstance(s, ast.Init):
        if plan.init is not None:
            raise error("a second `init` statement; a train block starts from one state_dict", s.span,
                        [f"the first is at line {plan.init.span.line}"])
        path = planner.values.value(s.source, "`init`")
        if not isinstance(path, str) or not path:
            raise error('`init` takes the path of a state_dict file, e.g. `init "pretrained.pt"`', s.source.span)
        plan.init = InitPlan(path, s.span, text)
        return
    what = "`freeze`" if isinstance(s, ast.Freeze) else "`reparametrize`"
    target = planner.selector(s.target, ("param",), what)
    if isinstance(s, ast.Freeze):
        plan.reparams.append(ReparamPlan("freeze", target, None, {}, s.span, text))
        return
    form, options = _form(planner.values, s.form)
    plan.reparams.append(ReparamPlan("reparametrize", target, form, options, s.span, text))


def _form(values: Any, e: ast.Expr) -> tuple[str, dict[str, Any]]:
    if isinstance(e, ast.Name):
        name, kwargs, name_span = e.id, [], e.span
    elif isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
        name, kwargs, name_span = e.func.id, e.kwargs, e.func.span
        if e.args:
            raise error(f"`{name}` takes keyword options, e.g. `low_rank(rank = 4)`", e.args[0].span)
    else:
        raise error("a reparametrization form is a name or a call, e.g. `low_rank(rank = 4, alpha = 8)`", e.span)
    entry = REPARAM_FORMS.get(name)
    if entry is None:
        raise error(f"unknown reparametrization `{name}`", name_span,
                    did_you_mean(name, REPARAM_FORMS) + ["forms: " + ", ".join(REPARAM_FORMS)])
    options: dict[str, Any] = {}
    for k in kwargs:
        if k.name not in entry.options:
            raise error(f"`{name}` has no option `{k.name}`", k.span,
                        did_you_mean(k.name, entry.options) + [f"options of {name}: "
                                                               + (", ".join(entry.options) or "none")])
        if k.name in options:
            raise error(f"`{k.name}` is given twice", k.span)
        options[k.name] = _option(values, name, k.name, k.value, entry)
    for key, default in entry.options.items():
        if key in options:
            continue
        if default is None and not (name == "low_rank" and key == "alpha"):
            raise error(f"`{name}` needs `{key} = ...`", e.span, [f"e.g. `{name}({key} = 4)`"])
        options[key] = default
    if name == "low_rank" and options["alpha"] is None:
        options["alpha"] = float(options["rank"])
    return name, options


def _option(values: Any, form: str, key: str, e: ast.Expr, entry: FormEntry) -> Any:
    what = f"`{form}`'s `{key}`"
    if form == "weight_norm" and key == "dim":
        return values.integer(e, what, -8, 8)
    if key in ("rank", "dim"):
        return values.integer(e, what, 1, MAX_DIM)
    if key == "n_power_iterations":
        return values.integer(e, what, 1, 1000)
    if key == "seed":
        from regspec.compiler.train_plan import MAX_SEED

        return values.integer(e, what, 0, MAX_SEED)
    if key == "alpha":
        v = values.finite(e, what)
        if v <= 0:
            raise error(f"{what} must be positive, got {v:g}", e.span)
        return v
    if key in entry.choices:
        v = values.word(e, what)
        if v not in entry.choices[key]:
            raise error(f"{what} is one of {', '.join(entry.choices[key])}, got `{v}`", e.span,
                        did_you_mean(v, entry.choices[key]))
        return v
    v = values.number(e, what)
    if not math.isfinite(v):
        raise error(f"{what} must be finite", e.span)
    return v
