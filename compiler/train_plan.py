"""Resolve a ``train`` block into a ``TrainPlan``: what to build and how each term is lowered.

Pure Python (no torch import): the plan is data. ``regspec.backends.torch.train.bind`` binds it
to a model (selectors -> parameter and module names), the trainer generator spells it out, and
``regspec plan`` prints it.

Lowering rule for ``regularize TERM [* WEIGHT] [via prox | via grad]`` (LANGUAGE.md, CATALOGUE §3):

* a term on an activation tap (``act(...)``), ``output`` or ``input`` always joins the loss: a prox
  acts on a tensor the optimizer owns, and activations are recomputed every step;
* ``via grad`` puts the term into the loss (a nonsmooth term is then differentiated by autograd,
  i.e. a subgradient: no exact zeros, GDCut);
* ``via prox`` forces the fused proximal step after ``optimizer.step()`` (the term needs a kernel);
* no ``via``: nonsmooth terms with a kernel become proximal steps, smooth terms join the loss.
  ``weight_decay`` is *defined* as the decoupled step (AdamW), so it defaults to the prox too.

Terms speak the one catalogue (compiler/catalogue): ``l1(param(...))``, ``group_l2(...)`` and the
other atoms with a ``train`` declaration keep the training runtime's dedicated evaluation (a batch
mean of per-sample values on activations, the matrix view of conv weights); anything else is an
expression of catalogue atoms over selectors (``huber(param("w"), M = 0.1)``,
``sum_squares(param("enc.weight") - param("dec.weight").T)``, ``log_sum_exp(output)``), typed by
the problem passes (compiler/train_terms.py), split into its additive parts, each lowered by the
same rule: ``w * f(param)`` (or ``w * sum(f(param))``, f elementwise) with f's prox kernel is a
proximal step, the rest joins the loss through each atom's torch evaluation (a nonsmooth part is
then a subgradient, and ``why`` says so). A selector matching several tensors applies the term to
each and sums; several selectors are paired tensor by tensor; batch tensors (``act``, ``output``,
``input``, ``target``) are taken per sample and averaged over the batch. A loss may be such an
expression too (evaluated on the whole batch).

``constrain TARGET in SET`` (any catalogue set with a projection kernel) is always a projection
after the step, gated by ``every N steps``,
``from epoch K`` and ``until epoch K``. A ``regularize`` lowered to a prox takes the same gates
(an expensive prox, e.g. a nuclear norm on a large conv, every N steps); ``every N`` scales the
prox step by N (the runtime's lazy prox, see proxstep.py), so the term keeps its weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from regspec import ast
from regspec.diagnostics import Diagnostic, RegspecError, Span, did_you_mean, error

__all__ = [
    "TermEntry", "train_atom", "term_entry", "train_set", "SCHEDULE_NAMES",
    "Selector", "ScheduleRef", "GatePlan", "CallPlan", "RewritePlan", "TermPlan", "TrainPlan",
    "plan_train", "select_train", "span_text",
]


# ------------------------------------------------------------------ vocabulary: the one catalogue
@dataclass(frozen=True)
class TermEntry:
    """The training view of a catalogue atom used directly, ``atom(selector, options)`` (derived
    from the atom and its ``train`` declaration by ``term_entry``; not a table of its own).

    ``kernel`` names the prox in ``backends/torch/prox.py`` (None: loss only); ``penalty`` names
    the runtime's evaluation; ``separable``: the prox acts entry by entry (per-coordinate steps
    after Adam are exact); ``options``: the direct term's options and defaults; ``targets``: the
    selector kinds it takes; ``math`` is printed by ``regspec plan``.
    """

    name: str
    math: str
    smooth: bool
    kernel: str | None
    penalty: str
    separable: bool = False
    matrix: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("param",)
    default: str | None = None  # overrides the smooth/nonsmooth default lowering
    atom: str | None = None     # the catalogue atom this term denotes


def train_atom(name: str) -> Any:
    """The catalogue atom a call names (aliases resolved) when it has a direct training use, else None."""
    from regspec.compiler.catalogue import ALIASES, ATOMS

    atom = ATOMS.get(ALIASES.get(name, name))
    return atom if atom is not None and atom.train is not None else None


def term_entry(atom: Any) -> TermEntry:
    """The training view of a catalogue atom with a ``train`` declaration."""
    use = atom.train
    kernel = atom.prox.kernel if atom.prox is not None and not atom.prox.negated else None
    return TermEntry(use.kind, use.math or atom.doc, atom.smooth, kernel, use.kind, separable=use.separable,
                     matrix=use.matrix,
                     options=dict(use.options), targets=use.targets, default=use.default, atom=atom.name)


def train_set(name: str) -> Any:
    """The catalogue set ``constrain ... in NAME`` names, or None."""
    from regspec.compiler.catalogue import SETS

    return SETS.get(name)


# Names of the training building blocks, declared here without torch so that `regspec check` can
# validate a train block; the torch modules bind each name to its implementation and check at
# import that they implement exactly these names (``same_names``).
#: built-in models and their keyword options (backends/torch/train/models.py MODELS; each
#: constructor's signature is checked against its options at import; `in` means `in_features`)
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "linear": ("in_features", "out", "bias"),
    "mlp": ("in_features", "hidden", "out", "act", "bias", "dropout"),
    "cnn": ("in_channels", "image", "channels", "out", "act", "kernel", "flat_input"),
    "transformer": ("in_features", "d_model", "heads", "layers", "out", "seq_len", "ff", "act", "dropout", "vocab"),
}
MODEL_NAMES = tuple(MODEL_OPTIONS)
#: built-in training data sets and their own options (backends/torch/train/data.py DATASETS,
#: checked the same way); every one also takes DATA_COMMON_OPTIONS
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": ("images",), "breast_cancer": (), "diabetes": (),
    "synthetic": ("n", "d", "classes", "regression", "noise"),
}
DATASET_NAMES = tuple(DATASET_OPTIONS)
DATA_COMMON_OPTIONS = ("split", "standardize", "standardize_target", "indexed", "drop_last")
#: optimizers by name (backends/torch/train/optim.py OPTIMIZERS)
OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
#: named losses and the functions of loss expressions (backends/torch/train/losses.py)
LOSS_NAMES = ("cross_entropy", "mse", "mae", "huber", "bce_with_logits")
LOSS_FUNCTIONS = ("add", "sub", "mul", "div", "pow", "neg", "mean", "sum", "abs", "square", "exp", "log",
                  "sqrt", "log_softmax", "softmax")
#: activations (rewrite targets, `act =` of built-in models) and their keyword options with
#: defaults (backends/torch/train/models.py ACTIVATIONS)
ACTIVATION_OPTIONS: dict[str, dict[str, Any]] = {
    "relu": {}, "gelu": {"approximate": "none"}, "tanh": {}, "silu": {}, "sigmoid": {}, "identity": {},
    "fatrelu": {"threshold": 0.0},
}


def same_names(implemented: Any, declared: Any, what: str) -> None:
    """Fail at import when an implementation table and its declared names drift apart."""
    if set(implemented) != set(declared):
        raise RuntimeError(f"regspec: the {what} implemented ({', '.join(sorted(implemented))}) differ from the "
                           f"names declared in compiler/train_plan.py ({', '.join(sorted(declared))})")


SCHEDULE_NAMES = ("constant", "linear", "cosine", "cubic", "exp", "sine_stages", "step", "window", "warmup")
GROUPINGS = ("rows", "cols", "channels", "all")
SETTINGS = ("epochs", "steps", "batch", "seed", "device")
DEVICES = ("auto", "cpu", "cuda")
# data sources of `problem` blocks (compiler/data.py): a train block may use them, whole, so that a
# training run and a problem see the same arrays
PROBLEM_SOURCES = ("dataset", "load", "csv", "randn", "rand", "randint", "sparse_randn")
#: seeds feed numpy's and scikit-learn's generators, which take 32-bit seeds
MAX_SEED = 2**32 - 1
#: epochs, steps and batch sizes beyond this are typos, not runs (and overflow step counters)
MAX_COUNT = 10**12
MATH = {"sqrt": math.sqrt, "exp": math.exp, "log": math.log, "abs": abs, "min": min, "max": max}


# ------------------------------------------------------------------ plan data
def span_text(span: Span | None) -> str:
    """The source text a span covers (single spaces for line breaks)."""
    if span is None or span.source is None:
        return ""
    # lines as the parser counts them: only "\n" ends one (str.splitlines also splits at form
    # feeds and U+2028, which a comment may hold)
    lines = [ln.rstrip("\r") for ln in span.source.text.split("\n")]
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1: span.end_column - 1] if span.line <= len(lines) else ""
    parts = [lines[span.line - 1][span.column - 1:]]
    parts += [ln.strip() for ln in lines[span.line: span.end_line - 1]]
    parts.append(lines[span.end_line - 1][: span.end_column - 1].strip())
    return " ".join(p.strip() for p in parts)


@dataclass
class Selector:
    """``param("glob")``, ``param("re:...")``, ``param(type = Linear)``, ``act("glob")``, ``output``, ``input``."""

    kind: str
    pattern: str | None = None
    type: str | None = None
    span: Span | None = field(default=None, repr=False, compare=False)
    text: str = ""


@dataclass
class ScheduleRef:
    """A schedule call as written: ``name(*args, **kwargs)`` times ``scale``. ``unit`` is the unit of
    ``start``/``end``/``every`` (``epochs`` or ``steps``: converted once the steps per epoch are known)."""

    name: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    unit: str = "epochs"
    span: Span | None = field(default=None, repr=False, compare=False)

    def text(self) -> str:
        parts = [_fmt(a) for a in self.args] + [f"{k}={_fmt(v)}" for k, v in self.kwargs.items()]
        core = f"{self.name}({', '.join(parts)})"
        return core if self.scale == 1.0 else f"{_fmt(self.scale)} * {core}"


Scalar = "float | ScheduleRef"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, ScheduleRef):
        return v.text()
    return repr(v)


def scalar_text(v: Any) -> str:
    return _fmt(v)


@dataclass
class GatePlan:
    """``every N steps|epochs``, ``from epoch|step K``, ``until epoch|step K`` (until is exclusive)."""

    every: int | None = None
    every_unit: str = "steps"
    start: float | None = None
    start_unit: str = "epoch"
    stop: float | None = None
    stop_unit: str = "epoch"

    def text(self) -> str:
        out = []
        if self.every is not None:
            out.append(f"every {self.every} {self.every_unit}")
        if self.start is not None:
            out.append(f"from {self.start_unit} {_fmt(self.start)}")
        if self.stop is not None:
            out.append(f"until {self.stop_unit} {_fmt(self.stop)}")
        return " ".join(out) or "every step"


@dataclass
class CallPlan:
    """``name(**kwargs)`` for model / data / optimizer. ``kind``: builtin | user | source."""

    name: str
    kind: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    span: Span | None = field(default=None, repr=False, compare=False)
    text: str = ""


@dataclass
class RewritePlan:
    src: str
    dst: str
    dst_kwargs: dict[str, Any] = field(default_factory=dict)
    span: Span | None = field(default=None, repr=False, compare=False)
    text: str = ""


@dataclass
class TermPlan:
    """One ``regularize`` or ``constrain`` statement, resolved.

    ``lowering``: ``loss`` (autograd), ``prox`` (fused proximal step) or ``projection``.
    ``options``: term options (``groups``, ``mode``...) or the set's kernel hyperparameters
    (values may be schedules, e.g. a radius). ``why`` says why this lowering was chosen.
    """

    stmt: str
    name: str
    target: Selector
    weight: Any
    options: dict[str, Any]
    lowering: str
    kernel: str | None
    penalty: str | None
    why: str
    via: str | None = None
    gate: GatePlan | None = None
    matrix: bool = False
    separable: bool = False
    math: str = ""
    span: Span | None = field(default=None, repr=False, compare=False)
    text: str = ""
    #: the typed expression (compiler/train_terms.TermExpr) and its selectors, in leaf order;
    #: ``target`` is the first selector. ``part``: "i of n" when a sum was split into parts.
    expr: Any = field(default=None, repr=False, compare=False)
    selectors: list[Selector] = field(default_factory=list, repr=False, compare=False)
    part: str = ""
    atom: str | None = None                # the catalogue atom of a direct term `atom(selector)`
    atom_kw: dict[str, Any] = field(default_factory=dict)
    expr_node: Any = field(default=None, repr=False, compare=False)   # the part's AST (re-typed at bind)
    metric: str = ""   # its name in metrics.jsonl (reg/<metric>): `as NAME` or compiler/metric_names.py

    @property
    def line(self) -> int:
        return self.span.line if self.span is not None else 0


@dataclass
class TrainPlan:
    name: str
    path: str
    model: CallPlan
    data: CallPlan
    loss: Any                     # a loss name (str) or a nested-tuple expression tree
    loss_text: str
    optimizer: CallPlan
    prox_metric: str = "auto"     # auto | euclidean (see the runtime's step rule)
    epochs: int | None = None
    steps: int | None = None
    batch: int | str = 128
    seed: int = 0
    device: str = "auto"
    rewrites: list[RewritePlan] = field(default_factory=list)
    terms: list[TermPlan] = field(default_factory=list)
    init: Any = None              # reparam_plan.InitPlan: starting weights from a state_dict file
    reparams: list[Any] = field(default_factory=list)  # reparam_plan.ReparamPlan, in written order
    # update_plan: `transform` statements, the `sam` wrapper, Lagrange multipliers (MultiplierRef)
    transforms: list[Any] = field(default_factory=list)
    sam: Any = None
    multipliers: list[Any] = field(default_factory=list)
    span: Span | None = field(default=None, repr=False, compare=False)
    loss_span: Span | None = field(default=None, repr=False, compare=False)
    warnings: list[Diagnostic] = field(default_factory=list, repr=False, compare=False)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path not in ("", "<string>") else Path.cwd()

    @property
    def total_epochs(self) -> int:
        return int(self.epochs) if self.epochs is not None else 1


# ------------------------------------------------------------------ evaluation of values
def _int_overflow(node: ast.Expr, what: str) -> RegspecError:
    return error(f"integer arithmetic overflows in {what}: `{span_text(node.span)}` is beyond the 64-bit integers "
                 "(|n| < 2^63)", node.span, ["write a float for a float result: `2.0 ** 100`, not `2 ** 100`"])


class _Values:
    """Compile-time values: numbers, strings, booleans, lists, `let` names, arithmetic and a few
    math functions. Nothing is evaluated as Python."""

    def __init__(self, lets: dict[str, Any]):
        self.lets = dict(lets)

    def value(self, e: ast.Expr, what: str) -> Any:
        if isinstance(e, ast.Num):
            return int(e.value) if e.is_int else float(e.value)
        if isinstance(e, (ast.Str, ast.Bool)):
            return e.value
        if isinstance(e, ast.ListExpr):
            return [self.value(i, what) for i in e.items]
        if isinstance(e, ast.Name):
            if e.id in self.lets:
                return self.lets[e.id]
            if e.id in ("true", "false"):
                return e.id == "true"
            raise error(f"unknown name `{e.id}` in {what}", e.span,
                        did_you_mean(e.id, self.lets) + ([f"names defined by `let`: {', '.join(self.lets)}"]
                                                         if self.lets else []))
        if isinstance(e, ast.Neg):
            v = self.value(e.operand, what)
            self._number(v, e.operand, what)
            return -v
        if isinstance(e, ast.BinOp):
            a, b = self.value(e.left, what), self.value(e.right, what)
            self._number(a, e.left, what)
            self._number(b, e.right, what)
            if e.op == "**" and isinstance(a, int) and isinstance(b, int) and abs(a) > 1 and b * math.log2(abs(a)) >= 63:
                raise _int_overflow(e, what)  # never computed: `2 ** 2 ** 62` would not finish
            try:
                return self._real({"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                                   "**": lambda: a ** b}[e.op](), e, what)
            except KeyError:
                raise error(f"`{e.op}` is not defined on numbers in {what}", e.span) from None
            except ZeroDivisionError:
                raise error(f"division by zero in {what}", e.span) from None
            except OverflowError:
                raise error(f"`{span_text(e.span)}` overflows a 64-bit float in {what}", e.span) from None
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in MATH and not e.kwargs:
            args = [self.value(a, what) for a in e.args]
            for a, node in zip(args, e.args):
                self._number(a, node, what)
            try:
                return self._real(MATH[e.func.id](*args), e, what)
            except (ValueError, TypeError, OverflowError) as exc:
                raise error(f"{e.func.id}(...) failed in {what}: {exc}", e.span) from None
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
            name = e.func.id
            raise error(f"unknown function `{name}` in {what}", e.func.span,
                        did_you_mean(name, [*MATH, *SCHEDULE_NAMES]) +
                        ["schedules: " + ", ".join(SCHEDULE_NAMES) + "; functions: " + ", ".join(MATH)])
        raise error(f"{what} must be a constant (number, string, list or `let` name), got `{span_text(e.span)}`",
                    e.span)

    @staticmethod
    def _real(v: Any, node: ast.Expr, what: str) -> Any:
        """An arithmetic result as the language has it: integers in 64 bits, real numbers
        (Python would grow a big integer, or give `(-8) ** 0.5` as a complex number)."""
        if isinstance(v, complex):
            raise error(f"`{span_text(node.span)}` is not a real number in {what}", node.span)
        if isinstance(v, int) and not isinstance(v, bool) and not -2 ** 63 <= v < 2 ** 63:
            raise _int_overflow(node, what)
        return v

    @staticmethod
    def _number(v: Any, node: ast.Expr, what: str) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise error(f"expected a number in {what}, got `{span_text(node.span)}`", node.span)

    def number(self, e: ast.Expr, what: str) -> float:
        v = self.value(e, what)
        self._number(v, e, what)
        try:
            return float(v)
        except OverflowError:  # an integer literal beyond the float range
            raise error(f"{what} is too large: {span_text(e.span)}", e.span) from None

    def finite(self, e: ast.Expr, what: str, minimum: float | None = None) -> float:
        """A finite number (``1e999`` is inf, ``0 * 1e999`` NaN: neither is a setting)."""
        v = self.number(e, what)
        if not math.isfinite(v):
            raise error(f"{what} must be a finite number, got {v:g}", e.span)
        if minimum is not None and v < minimum:
            raise error(f"{what} must be at least {minimum:g}, got {v:g}", e.span)
        return v

    def integer(self, e: ast.Expr, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
        v = self.number(e, what)
        if not math.isfinite(v):
            raise error(f"{what} must be a finite integer, got {v:g}", e.span)
        if v != int(v):
            raise error(f"{what} must be an integer, got {v:g}", e.span)
        if minimum is not None and v < minimum:
            raise error(f"{what} must be at least {minimum}, got {int(v)}", e.span)
        if maximum is not None and v > maximum:
            raise error(f"{what} must be at most {maximum}, got {int(v) if v < 1e16 else format(v, 'g')}", e.span)
        return int(v)

    def word(self, e: ast.Expr, what: str) -> str:
        """A bare name or a string: ``rows``, ``"rows"``, ``GELU``."""
        if isinstance(e, ast.Name) and e.id not in self.lets:
            return e.id
        v = self.value(e, what)
        if not isinstance(v, str):
            raise error(f"{what} must be a name or a string, got `{span_text(e.span)}`", e.span)
        return v

    def _finite_value(self, e: ast.Expr, what: str) -> Any:
        v = self.value(e, what)
        if isinstance(v, float) and not math.isfinite(v):
            raise error(f"{what} must be a finite number, got {v:g}", e.span)
        return v

    # ---- schedulable scalars
    def scalar(self, e: ast.Expr, what: str) -> Any:
        """A number or a schedule (``cosine(1e-3 -> 0)``, ``0.1 * linear(0 -> 1, epochs 0..5)``)."""
        factors = _factors(e)
        scheds = [(f, inv) for f, inv in factors if _is_schedule(f)]
        if not scheds:
            return self.finite(e, what)
        if len(scheds) > 1:
            raise error(f"{what}: at most one schedule per product", scheds[1][0].span)
        sched_node, inverted = scheds[0]
        if inverted:
            raise error(f"{what}: a schedule cannot divide", sched_node.span)
        scale = 1.0
        for f, inv in factors:
            if f is sched_node:
                continue
            v = self.finite(f, what)
            scale = scale / v if inv else scale * v
        ref = self.schedule(sched_node, what)
        ref.scale *= scale
        return ref

    def schedule(self, e: ast.Call, what: str) -> ScheduleRef:
        name = e.func_name
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        unit = "epochs"
        for a in e.args:
            if isinstance(a, ast.Arrow):
                args += [self.finite(a.start, what), self.finite(a.end, what)]
            else:
                args.append(self._finite_value(a, what))
        for k in e.kwargs:
            if isinstance(k.value, ast.Range):
                if k.name not in ("epochs", "steps", "epoch", "step"):
                    raise error(f"`{k.name} A..B`: the range unit is `epochs` or `steps`", k.span)
                unit = "steps" if k.name.startswith("step") else "epochs"
                kwargs["start"] = self.finite(k.value.lo, what)
                kwargs["end"] = self.finite(k.value.hi, what)
            elif isinstance(k.value, ast.Arrow):
                raise error(f"`{k.name} = a -> b`: write the endpoints positionally, `{name}(a -> b, ...)`", k.span)
            elif k.name == "from":
                kwargs["from_"] = self.finite(k.value, what)
            elif k.name == "then" and isinstance(k.value, ast.Call) and _is_schedule(k.value):
                inner = self.schedule(k.value, what)
                kwargs["then"] = inner
            else:
                kwargs[k.name] = self._finite_value(k.value, what)
        ref = ScheduleRef(name, tuple(args), kwargs, 1.0, unit, e.span)
        _check_schedule(ref, e)
        return ref


def _check_schedule(ref: ScheduleRef, node: ast.Call) -> None:
    """Validate a schedule's arguments now (the schedule module imports no torch)."""
    from regspec.backends.torch.train.schedules import build_schedule

    kwargs = dict(ref.kwargs)
    if "then" in kwargs and isinstance(kwargs["then"], ScheduleRef):
        kwargs["then"] = 1.0
    try:
        # a far horizon stands in for the run's length, which is known only at bind time
        build_schedule(ref.name, *ref.args, span=node.span, total=1.0e9, **kwargs)
    except RegspecError as exc:
        d = exc.first
        raise error(d.message, d.span or node.span, d.notes) from None


def _factors(e: ast.Expr) -> list[tuple[ast.Expr, bool]]:
    """Flatten ``a * b / c`` into [(a, False), (b, False), (c, True)]."""
    if isinstance(e, ast.BinOp) and e.op in ("*", "/"):
        left = _factors(e.left)
        right = _factors(e.right)
        if e.op == "/":
            if len(right) != 1:
                return left + [(e.right, True)]
            right = [(right[0][0], not right[0][1])]
        return left + right
    return [(e, False)]


def _is_schedule(e: ast.Expr) -> bool:
    return isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in SCHEDULE_NAMES


def _catalogue_loss(e: ast.Expr) -> bool:
    """Whether a loss expression uses the catalogue: a call with keywords, or of a function that
    is neither a loss operation nor a named loss (``huber(output - target, M = 1)``, ``norm1``)."""
    from regspec.compiler.train_terms import _children

    if isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
        if e.kwargs or (e.func.id not in LOSS_FUNCTIONS and e.func.id not in LOSS_NAMES):
            return True
    return any(_catalogue_loss(c) for c in _children(e))


def _is_term_call(e: ast.Expr) -> bool:
    """A call of a catalogue atom with a direct training use (``l1(...)``, ``group_l2(...)``)."""
    if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name)):
        return False
    return train_atom(e.func.id) is not None


def _is_direct_use(e: ast.Call) -> bool:
    """Whether ``atom(selector, options)`` is the atom's direct training use: its options are
    the use's own (a keyword or positional argument the use does not take, but the atom does,
    makes it an expression evaluated through the atom's torch lowering). Unknown options stay
    direct so that the error names the term's options."""
    from regspec.compiler.train_terms import selector_key

    atom = train_atom(e.func.id)  # type: ignore[union-attr]
    options = dict(atom.train.options)
    if len(e.args) > 1 and atom.positional_kw:
        return False
    for k in e.kwargs:
        if k.name not in options and (k.name in atom.static or k.name in atom.tensor_kwargs):
            return False
        if isinstance(k.value, ast.ListExpr):
            return False  # group labels or weights as an array: the atom's own evaluation and prox
    key = selector_key(e.args[0]) if e.args else None
    # a selector kind the direct use does not take (nuclear_norm(act(...))): the atom per sample
    return key is None or key[0] in atom.train.targets


# ------------------------------------------------------------------ the planner
class _Planner:
    def __init__(self, spec: ast.Spec, block: ast.TrainBlock, attach_only: bool = False):
        self.spec = spec
        self.block = block
        self.attach_only = attach_only
        self.values = _Values({})
        for let in spec.lets:
            self.values.lets[let.name] = self.values.value(let.value, f"`let {let.name}`")

    def run(self) -> TrainPlan:
        b = self.block
        single: dict[str, ast.Stmt] = {}
        settings: dict[str, ast.Setting] = {}
        for s in b.body:
            if isinstance(s, ast.Let):
                self.values.lets[s.name] = self.values.value(s.value, f"`let {s.name}`")
            key = {ast.ModelStmt: "model", ast.TrainData: "data", ast.LossStmt: "loss",
                   ast.OptimizerStmt: "optimizer"}.get(type(s))
            if key is not None:
                if key in single:
                    raise error(f"a second `{key}` statement; a train block has one", s.span,
                                [f"the first is at line {single[key].span.line}"])
                single[key] = s
            if isinstance(s, ast.Setting):
                if s.key in settings:
                    raise error(f"`{s.key}` is set twice", s.span, [f"first set at line {settings[s.key].span.line}"])
                settings[s.key] = s
        for key in ("model", "data"):
            if key not in single and not self.attach_only:
                raise error(f"train block `{b.name}` has no `{key}` statement", b.name_span,
                            [{"model": 'e.g. `model mlp(in = 64, hidden = [64], out = 10)` or `model "pkg.mod:Net"()`',
                              "data": "e.g. `data digits(split = 0.8)`"}[key]])
        plan = TrainPlan(
            name=b.name, path=self.spec.source.path,
            model=(self.call(single["model"].model, "model") if "model" in single  # type: ignore[attr-defined]
                   else CallPlan("(attached model)", "attached")),
            data=(self.call(single["data"].source, "data") if "data" in single  # type: ignore[attr-defined]
                  else CallPlan("(user data)", "attached")),
            loss="auto", loss_text="auto (cross_entropy for classification, mse for regression)",
            optimizer=CallPlan("adamw", "builtin", [], {"lr": 1e-3}, None, "adamw(lr = 1e-3) (default)"),
            span=b.span,
        )
        if "loss" in single:
            node = single["loss"].loss  # type: ignore[attr-defined]
            plan.loss = self.loss(node)
            plan.loss_text = span_text(node.span)
            plan.loss_span = node.span
        if "optimizer" in single:
            from regspec.compiler.update_plan import split_sam

            node, plan.sam = split_sam(self, single["optimizer"].optimizer)  # type: ignore[attr-defined]
            opt = self.call(node, "optimizer")
            metric = opt.kwargs.pop("prox_metric", "auto")
            if metric not in ("auto", "euclidean"):
                raise error(f"`prox_metric` is \"auto\" or \"euclidean\", got {metric!r}", opt.span)
            plan.optimizer, plan.prox_metric = opt, metric
        self.settings(plan, settings)
        for s in b.body:
            if isinstance(s, ast.Rewrite):
                plan.rewrites.append(self.rewrite(s))
            elif isinstance(s, ast.Regularize):
                plan.terms.extend(self.regularize(s, plan))
            elif isinstance(s, ast.Constrain):
                plan.terms.append(self.constrain(s, plan))
            elif isinstance(s, (ast.Init, ast.Reparametrize, ast.Freeze)):
                from regspec.compiler.reparam_plan import plan_weights_statement

                plan_weights_statement(self, s, plan)
            elif isinstance(s, (ast.Transform, ast.LagrangeConstrain)):
                from regspec.compiler.update_plan import plan_update_statement

                plan_update_statement(self, s, plan)
        from regspec.compiler.metric_names import assign_metric_names

        assign_metric_names(b.body, plan.terms)
        return plan

    # ---- model / data / optimizer
    def call(self, e: ast.Expr, what: str) -> CallPlan:
        text = span_text(e.span)
        if isinstance(e, ast.Name):
            if not (what == "data" and e.id in PROBLEM_SOURCES):
                _check_builtin_name(e.id, what, e.span)
            return CallPlan(e.id, "builtin", [], {}, e.span, text)
        if isinstance(e, ast.Str):
            return CallPlan(e.value, "user", [], {}, e.span, text)
        if not isinstance(e, ast.Call):
            raise error(f"`{what}` expects a name or a call such as `name(key = value)`", e.span)
        if isinstance(e.func, ast.Str):
            name, kind = e.func.value, "user"
        elif isinstance(e.func, ast.Name):
            name, kind = e.func.id, "builtin"
        else:
            raise error(f"`{what}` expects a name or an import path string", e.func.span)
        if kind == "builtin" and what == "data" and name in PROBLEM_SOURCES:
            kind = "source"
        if kind == "builtin":
            _check_builtin_name(name, what, e.func.span)
            _check_builtin_options(name, what, e.kwargs)
        args = [self.value_or_schedule(a, f"the {what} arguments") for a in e.args]
        if args and kind != "source":
            raise error(f"`{what}` arguments are keywords (`name = value`)", e.args[0].span)
        kwargs: dict[str, Any] = {}
        for k in e.kwargs:
            if what == "optimizer" and (_is_schedule(k.value) or (isinstance(k.value, ast.BinOp) and any(
                    _is_schedule(f) for f, _ in _factors(k.value)))):
                kwargs[k.name] = self.values.scalar(k.value, f"the optimizer's `{k.name}`")
            else:
                kwargs[k.name] = self.value_or_schedule(k.value, f"the {what} argument `{k.name}`")
            if what == "optimizer":
                _check_optimizer_value(k.name, kwargs[k.name], k.value)
        return CallPlan(name, kind, args, kwargs, e.span, text)

    def value_or_schedule(self, e: ast.Expr, what: str) -> Any:
        if isinstance(e, ast.Name) and e.id not in self.values.lets and e.id not in ("true", "false"):
            # bare words are symbols here: `act = gelu`, `images = true`
            return e.id
        return self.values.value(e, what)

    def loss(self, e: ast.Expr) -> Any:
        """A loss name, or an expression over ``output`` and ``target`` as a nested tuple tree."""
        LOSSES, LOSS_OPS = LOSS_NAMES, LOSS_FUNCTIONS  # noqa: N806 - the names, torch-free
        ops = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow"}

        def tree(x: ast.Expr) -> Any:
            if isinstance(x, ast.Num):
                return float(x.value)
            if isinstance(x, ast.Name):
                if x.id in ("output", "target"):
                    return x.id
                if x.id in self.values.lets and isinstance(self.values.lets[x.id], (int, float)):
                    return float(self.values.lets[x.id])
                if x.id in LOSSES:
                    return (x.id, "output", "target")
                raise error(f"unknown name `{x.id}` in the loss", x.span,
                            did_you_mean(x.id, ["output", "target", *LOSSES]) +
                            ["a loss is a named loss (" + ", ".join(LOSSES) + ") or an expression over "
                             "`output` and `target`"])
            if isinstance(x, ast.BinOp):
                return (ops[x.op], tree(x.left), tree(x.right))
            if isinstance(x, ast.Neg):
                return ("neg", tree(x.operand))
            if isinstance(x, ast.Call) and isinstance(x.func, ast.Name):
                if x.kwargs:
                    raise error("loss functions take positional arguments only", x.kwargs[0].span)
                fname = x.func.id
                if fname not in LOSS_OPS and fname not in LOSSES:
                    raise error(f"unknown function `{fname}` in the loss", x.func.span,
                                did_you_mean(fname, [*LOSS_OPS, *LOSSES]) +
                                ["loss functions: " + ", ".join([*LOSS_OPS, *LOSSES])])
                return (fname, *[tree(a) for a in x.args])
            raise error(f"cannot use `{span_text(x.span)}` in a loss expression", x.span)

        if _catalogue_loss(e):
            return self.catalogue_loss(e)
        if isinstance(e, ast.Name) and e.id in LOSSES:
            return e.id
        if isinstance(e, ast.Name) and e.id not in ("output", "target"):
            raise error(f"unknown loss `{e.id}`", e.span, did_you_mean(e.id, LOSSES) +
                        ["named losses: " + ", ".join(LOSSES) + "; or an expression over `output` and `target`"])
        return tree(e)

    def catalogue_loss(self, e: ast.Expr) -> tuple:
        """A loss written with catalogue atoms, ``sum(huber(output - target, M = 1)) / n``: typed
        by the problem passes, evaluated on the whole batch by each atom's torch lowering (a
        non-scalar result is averaged). The plan keeps ``("expr", tree, leaf kinds)``."""
        from regspec.compiler.train_terms import selector_nodes, type_expression

        sels = selector_nodes(e)
        bad = [n for n in sels if not (isinstance(n, ast.Name) and n.id in ("output", "target"))]
        if bad or not sels:
            raise error("a loss is an expression over `output` and `target`", (bad[0] if bad else e).span)
        typed = type_expression(e, sels, self.values.lets, None, "the loss")
        return ("expr", typed.tree, tuple(n.id for n in sels))  # type: ignore[attr-defined]

    def settings(self, plan: TrainPlan, settings: dict[str, ast.Setting]) -> None:
        for key, s in settings.items():
            what = f"`{key}`"
            if key == "epochs":
                plan.epochs = self.values.integer(s.value, what, 1, MAX_COUNT)
            elif key == "steps":
                plan.steps = self.values.integer(s.value, what, 1, MAX_COUNT)
            elif key == "batch":
                if isinstance(s.value, ast.Name) and s.value.id == "full":
                    plan.batch = "full"
                else:
                    plan.batch = self.values.integer(s.value, what, 1, MAX_COUNT)
            elif key == "seed":
                plan.seed = self.values.integer(s.value, what, 0, MAX_SEED)
            elif key == "device":
                dev = self.values.word(s.value, what)
                if dev not in DEVICES and not dev.startswith("cuda:"):
                    raise error(f"unknown device `{dev}`", s.value.span,
                                did_you_mean(dev, DEVICES) + ["devices: auto, cpu, cuda, cuda:N"])
                plan.device = dev

    def rewrite(self, s: ast.Rewrite) -> RewritePlan:
        src = self.values.word(s.src, "the rewrite source") if not isinstance(s.src, ast.Call) else None
        if src is None:
            raise error("the rewrite source is a module class or activation name, e.g. `GELU`", s.src.span)
        kwargs: dict[str, Any] = {}
        if isinstance(s.dst, ast.Call) and isinstance(s.dst.func, ast.Name):
            dst = s.dst.func.id
            if s.dst.args:
                raise error("rewrite target arguments are keywords, e.g. `fatrelu(threshold = 0.1)`", s.dst.args[0].span)
            dst_span = s.dst.func.span
        else:
            dst = self.values.word(s.dst, "the rewrite target")
            dst_span = s.dst.span
        if dst.lower() not in ACTIVATION_OPTIONS:
            raise error(f"unknown rewrite target `{dst}`", dst_span,
                        did_you_mean(dst.lower(), ACTIVATION_OPTIONS) + ["targets: " + ", ".join(ACTIVATION_OPTIONS)])
        options = ACTIVATION_OPTIONS[dst.lower()]
        for k in s.dst.kwargs if isinstance(s.dst, ast.Call) else []:
            if k.name not in options:
                raise error(f"rewrite target `{dst}` has no option `{k.name}`", k.span,
                            did_you_mean(k.name, options) + [f"options of {dst}: {', '.join(options) or 'none'}"])
            v = self.values._finite_value(k.value, f"the rewrite argument `{k.name}`")
            if type(v) is not type(options[k.name]) and not (isinstance(v, int) and isinstance(options[k.name], float)):
                raise error(f"the rewrite argument `{k.name}` must be a {type(options[k.name]).__name__}, got {v!r}",
                            k.value.span)
            kwargs[k.name] = v
        return RewritePlan(src, dst, kwargs, s.span, span_text(s.span))

    # ---- selectors
    def selector(self, e: ast.Expr, allowed: tuple[str, ...], what: str) -> Selector:
        text = span_text(e.span)
        if isinstance(e, ast.Name) and e.id in ("output", "input", "target"):
            sel = Selector(e.id, span=e.span, text=text)
        elif isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id in ("param", "act"):
            pattern = None
            type_ = None
            if len(e.args) > 1:
                raise error(f"{e.func.id}(...) takes one name pattern", e.args[1].span)
            if e.args:
                v = self.values.value(e.args[0], "a selector pattern")
                if not isinstance(v, str):
                    raise error(f'{e.func.id}(...) takes a name pattern string, e.g. {e.func.id}("layers.*")',
                                e.args[0].span)
                pattern = v
                if v.startswith("re:"):
                    check_name_regex(v[3:], e.args[0].span)
            for k in e.kwargs:
                if k.name != "type":
                    raise error(f"{e.func.id}(...) has no argument `{k.name}`", k.span,
                                did_you_mean(k.name, ["type"]) + ["arguments: a name pattern, `type = CLASS`"])
                type_ = self.values.word(k.value, "a module type")
            if pattern is None and type_ is None:
                raise error(f'{e.func.id}(...) needs a name pattern or `type = ...`, e.g. {e.func.id}("layers.*")',
                            e.span)
            sel = Selector(e.func.id, pattern, type_, e.span, text)
        else:
            raise error(f"{what} must be a selector: param(\"glob\"), param(\"re:regex\"), param(type = Linear), "
                        "act(\"glob\"), output or input", e.span)
        if sel.kind not in allowed:
            raise error(f"`{sel.kind}` is not a valid target here; {what} takes "
                        + ", ".join(f"`{a}`" for a in allowed), e.span)
        return sel

    # ---- regularize
    def regularize(self, s: ast.Regularize, plan: TrainPlan) -> list[TermPlan]:
        """One statement -> its terms: a legacy training term, or an expression of catalogue atoms
        over selectors, split into additive parts (compiler/train_terms.py)."""
        from regspec.compiler.train_terms import selector_key, selector_nodes, split_parts

        if s.via is not None and s.via not in ("prox", "grad"):
            raise error(f"unknown lowering `via {s.via}`", s.span, did_you_mean(s.via, ["prox", "grad"]) +
                        ["`via prox` (proximal step after the optimizer step) or `via grad` (in the loss)"])
        factors = _factors(s.term)
        with_sel = [(f, inv) for f, inv in factors if selector_nodes(f)]
        if not with_sel:
            return [self.legacy_term(s, plan)]  # says what a term needs
        core, inverted = with_sel[0]
        if len(with_sel) == 1 and not inverted and _is_term_call(core) and core.args \
                and selector_key(core.args[0]) is not None and not any(selector_nodes(a) for a in core.args[1:]) \
                and _is_direct_use(core):  # type: ignore[arg-type]
            return [self.legacy_term(s, plan)]
        if any(inv for _, inv in with_sel):
            raise error("a term over tensors cannot divide", next(f for f, inv in with_sel if inv).span)
        rest = [(f, inv) for f, inv in factors if not selector_nodes(f)]
        weight = self.term_weight(rest, s.term.span)
        core_expr = _rebuild(with_sel, s.term.span) if len(with_sel) > 1 else core
        parts = split_parts(core_expr, self.values.lets)
        return [self.expression_term(s, p.node, _scaled(weight, p.scale),
                                     f"{i} of {len(parts)}" if len(parts) > 1 else "")
                for i, p in enumerate(parts, 1)]

    def expression_term(self, s: ast.Regularize, node: ast.Expr, weight: Any, part: str) -> TermPlan:
        """A term written as an expression: typed now (names, keywords, curvature), shapes at bind."""
        from regspec.compiler.train_terms import selector_nodes, type_expression

        sel_nodes = selector_nodes(node)
        selectors = [self.selector(n, ("param", "act", "output", "input", "target"), "a term") for n in sel_nodes]
        try:
            texpr = type_expression(node, sel_nodes, self.values.lets, None, "the term")
        except RegspecError as exc:
            raise _as_regularizer_error(exc) from None
        lowering, kernel, why = self.expression_lowering(texpr, selectors, s)
        gate = self.gate(s.gates)
        if gate is not None and lowering != "prox":
            raise error(f"`{s.gates[0].kind}` gates a proximal step, but `{texpr.text}` joins the loss here ({why})",
                        s.gates[0].span, ["write `via prox` (the term needs a prox kernel), or drop the gate"])
        if gate is not None and gate.every is not None:
            why += f"; every {gate.every} {gate.every_unit} with the step scaled by {gate.every} (lazy prox)"
        text = span_text(s.span)
        return TermPlan("regularize", texpr.direct or "expr", selectors[0], weight,
                        dict(texpr.direct_kw) if lowering == "prox" else {}, lowering, kernel, "expr", why, s.via,
                        gate, False, lowering == "prox", texpr.text, s.span, text, expr=texpr, selectors=selectors,
                        part=part, atom=texpr.direct, atom_kw=dict(texpr.direct_kw), expr_node=node)

    def expression_lowering(self, texpr: Any, selectors: list[Selector], s: ast.Regularize
                            ) -> tuple[str, str | None, str]:
        """(lowering, prox kernel, why) by the split rule: a prox for ``w * f(param)`` with f
        nonsmooth and prox-able (or `via prox`), else the loss through autograd."""
        from regspec.compiler.catalogue import ATOMS

        data = [sel for sel in selectors if sel.kind != "param"]
        atom = ATOMS.get(texpr.direct) if texpr.direct else None
        prox = atom.prox if atom is not None and atom.prox is not None and not atom.prox.negated else None
        grad_why = ("smooth: added to the loss (autograd)" if texpr.smooth else
                    f"nonsmooth ({', '.join(texpr.nonsmooth)}) without a prox here: a subgradient through "
                    "autograd (no exact zeros)")
        if data:
            if s.via == "prox":
                raise error(f"`via prox` needs parameters: {data[0].text} is recomputed every forward pass, "
                            "so its term joins the loss", s.span,
                            ["a proximal step applies to tensors the optimizer owns: use param(...)"])
            return "loss", None, f"{data[0].kind} term, per sample and averaged over the batch: {grad_why}"
        if s.via == "prox":
            if prox is None:
                why = (f"`{texpr.direct}` has no prox kernel" if atom is not None else
                       f"`{texpr.text}` is not an atom applied to one selector")
                raise error(f"`via prox` needs `weight * f(param(...))` with a prox kernel for f: {why}", s.span,
                            ["drop `via prox` (the term then joins the loss), or write the term as f(param(...))"])
            return "prox", prox.kernel, f"`via prox`: fused proximal step ({prox.kernel}) after the optimizer step"
        if s.via == "grad":
            return "loss", None, ("`via grad`: " + grad_why) if not texpr.smooth else grad_why
        if prox is not None and not texpr.smooth:
            return "prox", prox.kernel, f"nonsmooth with a closed-form prox ({prox.kernel}): fused proximal step"
        return "loss", None, grad_why

    def term_weight(self, factors: list[tuple[ast.Expr, bool]], span: Span) -> Any:
        """The product of a term's factors that hold no selector: a nonnegative number or schedule
        (1 when there are none)."""
        if not factors:
            return 1.0
        expr = _rebuild(factors, span)
        weight = self.values.scalar(expr, "the weight")
        if isinstance(weight, float) and weight < 0:
            raise error(f"a regularizer's weight must be nonnegative, got {weight:g}", expr.span)
        return weight

    def legacy_term(self, s: ast.Regularize, plan: TrainPlan) -> TermPlan:
        factors = _factors(s.term)
        terms = [f for f, inv in factors if _is_term_call(f)]
        if not terms:
            head = next((f for f, _ in factors if isinstance(f, ast.Call) and isinstance(f.func, ast.Name)), None)
            if head is not None and train_atom(head.func.id) is None:  # type: ignore[union-attr]
                name = head.func.id  # type: ignore[union-attr]
                raise _as_regularizer_error(error(f"unknown atom `{name}`", head.func.span))
            if head is not None:
                raise error(f"{head.func_name}(...) needs a target: param(...), act(...) or output",  # type: ignore
                            head.span)
            raise error("`regularize` expects a term over tensors, e.g. `l1(param(\"head.weight\")) * 1e-4` or "
                        "`sum_squares(param(\"a\") - param(\"b\"))`", s.term.span)
        if len(terms) > 1:
            raise error("one regularizer per `regularize` statement", terms[1].span)
        call: ast.Call = terms[0]  # type: ignore[assignment]
        if any(f is call and inv for f, inv in factors):
            raise error("a regularizer cannot divide", call.span)
        rest = [(f, inv) for f, inv in factors if f is not call]
        weight = self.term_weight(rest, s.term.span)
        entry = term_entry(train_atom(call.func.id))  # type: ignore[union-attr]
        name = entry.name
        if not call.args:
            raise error(f"{call.func_name}(...) needs a target: param(...), act(...) or output", call.span)
        target = self.selector(call.args[0], entry.targets, f"`{call.func_name}`")
        options = dict(entry.options)
        extra_pos = call.args[1:]
        if extra_pos:
            raise error(f"{call.func_name}(...) takes its target positionally and options as keywords",
                        extra_pos[0].span, [f"options: {', '.join(entry.options) or 'none'}"])
        for k in call.kwargs:
            key = k.name
            if key not in entry.options:
                raise error(f"{call.func_name}(...) has no option `{key}`", k.span,
                            did_you_mean(key, entry.options) + [f"options: {', '.join(entry.options) or 'none'}"])
            options[key] = self.option(name, key, k.value)
        via = s.via
        if via is not None and via not in ("prox", "grad"):
            raise error(f"unknown lowering `via {via}`", s.span, did_you_mean(via, ["prox", "grad"]) +
                        ["`via prox` (proximal step after the optimizer step) or `via grad` (in the loss)"])
        lowering, why = self.lowering(entry, target, via, s)
        gate = self.gate(s.gates)
        if gate is not None and lowering != "prox":
            raise error(f"`{s.gates[0].kind}` gates a proximal step, but {call.func_name}(...) joins the loss here "
                        f"({why})", s.gates[0].span,
                        ["write `via prox` (the term needs a prox kernel), or drop the gate"])
        if gate is not None and gate.every is not None:
            why += f"; every {gate.every} {gate.every_unit} with the step scaled by {gate.every} (lazy prox)"
        return TermPlan("regularize", name, target, weight, options, lowering,
                        entry.kernel if lowering == "prox" else None, entry.penalty, why, via, gate,
                        entry.matrix, entry.separable, entry.math, s.span, span_text(s.span), atom=entry.atom,
                        atom_kw=dict(options))

    def option(self, term: str, key: str, e: ast.Expr) -> Any:
        if key == "groups" and term == "group_l2":
            if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "blocks":
                if len(e.args) != 2 or e.kwargs:
                    raise error("blocks(n, m) takes two sizes", e.span)
                n, m = (self.values.integer(a, "a block size", 1) for a in e.args)
                return f"blocks({n}, {m})"
            g = self.values.word(e, "`groups`")
            if g not in GROUPINGS:
                raise error(f"unknown grouping `{g}`", e.span, did_you_mean(g, GROUPINGS) +
                            ["groupings: rows, cols, channels, all, blocks(n, m)"])
            return g
        if key == "mode":
            m = self.values.word(e, "`mode`")
            if m not in ("full", "offdiag", "grouped"):
                raise error(f"unknown orthogonality mode `{m}`", e.span, did_you_mean(m, ["full", "offdiag", "grouped"]))
            return m
        if key in ("groups", "n_proj"):
            return self.values.integer(e, f"`{key}`", 1)
        return self.values.finite(e, f"`{key}`")

    def lowering(self, entry: TermEntry, target: Selector, via: str | None, s: ast.Regularize) -> tuple[str, str]:
        if target.kind != "param":
            if via == "prox":
                raise error(f"`via prox` needs parameters: {target.text} is recomputed every forward pass, "
                            "so its term joins the loss", s.span,
                            ["a proximal step applies to tensors the optimizer owns: use param(...)"])
            return "loss", f"{target.kind} term: added to the loss (autograd)"
        if via == "grad":
            if entry.smooth:
                return "loss", "smooth: added to the loss (autograd)"
            return "loss", "`via grad`: a subgradient through autograd (no exact zeros)"
        if via == "prox":
            if entry.kernel is None:
                raise error(f"`{entry.name}` has no prox kernel; it can only join the loss", s.span,
                            ["drop `via prox` (or write `via grad`)"])
            return "prox", f"`via prox`: fused proximal step ({entry.kernel}) after the optimizer step"
        if entry.default == "prox":
            return "prox", "decoupled weight decay: the prox x/(1 + lr*lam) after the optimizer step (AdamW)"
        if not entry.smooth and entry.kernel is not None:
            return "prox", f"nonsmooth with a closed-form prox ({entry.kernel}): fused proximal step"
        return "loss", "smooth: added to the loss (autograd)"

    # ---- constrain
    def constrain(self, s: ast.Constrain, plan: TrainPlan) -> TermPlan:
        target = self.selector(s.target, ("param",), "`constrain`")
        e = s.set
        if isinstance(e, ast.Name):
            name, args, kwargs, name_span = e.id, [], [], e.span
        elif isinstance(e, ast.Call) and isinstance(e.func, ast.Name):
            name, args, kwargs, name_span = e.func.id, e.args, e.kwargs, e.func.span
        else:
            raise error("a constraint set is a name or a call, e.g. `spectral_ball(1.0)`", e.span)
        entry = train_set(name)
        if entry is None:
            from regspec.compiler.catalogue import SETS

            raise error(f"unknown set `{name}`", name_span, did_you_mean(name, SETS) + ["sets: " + ", ".join(SETS)])
        if entry.projection is None:
            from regspec.compiler.catalogue import SETS

            raise error(f"`{name}` has no projection kernel, so `constrain` cannot keep a tensor in it", name_span,
                        [entry.lacks.get("torch", "no projection in the torch kernel registry"),
                         "sets with a projection: " + ", ".join(n for n, x in SETS.items() if x.projection)])
        hyper = self.set_arguments(entry, args, kwargs, e)
        gate = self.gate(s.gates)
        why = f"projection onto {name} ({'convex' if entry.convex else 'nonconvex'}) after the optimizer step"
        return TermPlan("constrain", name, target, 1.0, _set_kernel_hyper(entry, hyper), "projection",
                        entry.projection, None, why, None, gate, entry.matrix_view, False, entry.doc, s.span,
                        span_text(s.span), atom_kw=hyper)

    def set_arguments(self, entry: Any, args: list[ast.Expr], kwargs: list[ast.Keyword], e: ast.Expr
                      ) -> dict[str, Any]:
        """A catalogue set's arguments by position and keyword (numbers, schedules, lists)."""
        name, positional = entry.name, entry.positional
        hyper: dict[str, Any] = dict(entry.static)
        if len(args) > len(positional):
            raise error(f"{name} takes {len(positional)} argument(s) ({', '.join(positional) or 'none'})",
                        args[len(positional)].span)
        given: list[tuple[str, ast.Expr]] = list(zip(positional, args))
        for k in kwargs:
            key = entry.arg_aliases.get(k.name, k.name)
            if key not in entry.static:
                raise error(f"{name}(...) has no argument `{k.name}`", k.span,
                            did_you_mean(k.name, [*entry.static, *entry.arg_aliases]) +
                            [f"arguments: {', '.join(entry.static) or 'none'}"])
            given.append((key, k.value))
        for key, v in given:
            if key in entry.integer_args:
                hyper[key] = self.values.integer(v, f"`{key}` of {name}", 0)
            elif isinstance(v, ast.Name) and v.id in ("none", "None"):
                hyper[key] = None
            elif isinstance(v, ast.ListExpr):
                hyper[key] = self.values.value(v, f"`{key}` of {name}")
            else:
                hyper[key] = self.values.scalar(v, f"`{key}` of {name}")
        missing = [a for a in positional if hyper.get(a) is None and name != "box"]
        if missing:
            raise error(f"{name} needs {', '.join(f'`{m}`' for m in missing)}", e.span,
                        [f"e.g. {name}({', '.join(positional)})"])
        if name == "nm_sparse" and not (0 < hyper["n"] <= hyper["m"]):
            raise error(f"nm_sparse(N, M) needs 0 < N <= M, got N = {hyper['n']}, M = {hyper['m']}", e.span)
        if name == "box" and hyper.get("lo") is None and hyper.get("hi") is None:
            raise error("box(lo, hi) needs at least one bound", e.span)
        return hyper

    def gate(self, gates: list[ast.Gate]) -> GatePlan | None:
        if not gates:
            return None
        g = GatePlan()
        seen: dict[str, ast.Gate] = {}
        for gt in gates:
            if gt.kind in seen:
                raise error(f"`{gt.kind}` given twice", gt.span, [f"first at column {seen[gt.kind].span.column}"])
            seen[gt.kind] = gt
            unit = "steps" if gt.unit in ("steps", "step") else "epochs" if gt.unit in ("epoch", "epochs") else gt.unit
            if gt.kind == "every":
                g.every = self.values.integer(gt.value, "`every`", 1)
                g.every_unit = unit
            elif gt.kind == "from":
                g.start = self.values.finite(gt.value, "`from`", 0)
                g.start_unit = "step" if unit == "steps" else "epoch"
            else:
                g.stop = self.values.finite(gt.value, "`until`", 0)
                g.stop_unit = "step" if unit == "steps" else "epoch"
        if g.start is not None and g.stop is not None and g.start_unit == g.stop_unit and g.stop <= g.start:
            raise error(f"`until {g.stop_unit} {g.stop:g}` is not after `from {g.start_unit} {g.start:g}`: "
                        "the step would never run", gates[-1].span)
        return g


#: optimizer hyperparameters with a domain: (lowest, lowest allowed?, highest, highest allowed?)
_OPTIMIZER_DOMAINS = {"lr": (0.0, False, None, False), "weight_decay": (0.0, True, None, False),
                      "momentum": (0.0, True, 1.0, True), "dampening": (0.0, True, 1.0, True),
                      "eps": (0.0, False, None, False), "betas": (0.0, True, 1.0, False)}


_BUILTIN_NAMES = {"model": MODEL_NAMES, "data": (*DATASET_NAMES, *PROBLEM_SOURCES), "optimizer": OPTIMIZER_NAMES}
_USER_FORM = {"model": '"pkg.module:Class"', "data": '"pkg.module:make_loaders"', "optimizer": '"pkg.module:Class"'}


def _check_builtin_name(name: str, what: str, span: Span) -> None:
    known = _BUILTIN_NAMES[what]
    if name.lower() not in known:
        raise error(f"unknown {'data set' if what == 'data' else what} `{name}`", span,
                    did_you_mean(name, known) + [f"built-in: {', '.join(known)}; your own: {_USER_FORM[what]}"])


def _check_builtin_options(name: str, what: str, kwargs: list[ast.Keyword]) -> None:
    """Keyword names of built-in models and data sets (optimizer keywords are torch's: checked
    against its signature when the optimizer is built)."""
    if what == "model":
        options = MODEL_OPTIONS[name.lower()]
        accepted = [("in" if o == "in_features" else o) for o in options] + [o for o in options if o == "in_features"]
    elif what == "data" and name.lower() in DATASET_OPTIONS:
        accepted = [*DATASET_OPTIONS[name.lower()], *DATA_COMMON_OPTIONS]
    else:
        return
    for k in kwargs:
        if k.name not in accepted:
            raise error(f"{what} `{name}` has no option `{k.name}`", k.span,
                        did_you_mean(k.name, accepted) + [f"options: {', '.join(dict.fromkeys(accepted))}"])


def _check_optimizer_value(key: str, value: Any, node: ast.Expr) -> None:
    """Numbers handed to torch.optim must be finite and, for the usual hyperparameters, inside
    their domain (``lr = -1`` is refused here, located, instead of inside the trainer)."""
    items = value if isinstance(value, list) else [value]
    for v in items:
        if key in _OPTIMIZER_DOMAINS and (isinstance(v, (str, bool)) or v is None):
            raise error(f"the optimizer's `{key}` must be a number, got `{span_text(node.span)}`", node.span)
        if isinstance(v, ScheduleRef) or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise error(f"the optimizer's `{key}` must be a finite number, got {v:g}", node.span)
        if key not in _OPTIMIZER_DOMAINS:
            continue
        lo, lo_ok, hi, hi_ok = _OPTIMIZER_DOMAINS[key]
        if v < lo or (v == lo and not lo_ok) or (hi is not None and (v > hi or (v == hi and not hi_ok))):
            lo_s = f"{'>=' if lo_ok else '>'} {lo:g}"
            hi_s = "" if hi is None else f" and {'<=' if hi_ok else '<'} {hi:g}"
            raise error(f"the optimizer's `{key}` must be {lo_s}{hi_s}, got {v:g}", node.span)


def _rebuild(factors: list[tuple[ast.Expr, bool]], span: Span) -> ast.Expr:
    """Rebuild a product from factors (for the weight of a term)."""
    out: ast.Expr | None = None
    for f, inv in factors:
        if out is None:
            out = ast.BinOp("/", ast.Num(1.0, span=f.span), f, span=f.span) if inv else f
        else:
            out = ast.BinOp("/" if inv else "*", out, f, span=_join(out.span, f.span))
    assert out is not None
    return out


def _scaled(weight: Any, scale: float) -> Any:
    """A weight (number or schedule) times a part's constant scale."""
    if scale == 1.0:
        return weight
    if isinstance(weight, ScheduleRef):
        return ScheduleRef(weight.name, weight.args, dict(weight.kwargs), weight.scale * scale, weight.unit,
                           weight.span)
    return weight * scale


def _as_regularizer_error(exc: RegspecError) -> RegspecError:
    """An unknown function in a term is an unknown regularizer (with the training spellings among
    the suggestions)."""
    d = exc.first
    if not d.message.startswith("unknown atom `"):
        return exc
    from regspec.compiler.catalogue import ALIASES, ATOMS

    name = d.message.split("`")[1]
    notes = [n for n in d.notes if not n.startswith("did you mean")]
    known = [n for n in [*ATOMS, *ALIASES] if not ATOMS.get(ALIASES.get(n, n)).constant_only]
    return error(f"unknown regularizer `{name}`", d.span, did_you_mean(name, known) + notes)


def _catalogue_sets() -> dict[str, Any]:
    from regspec.compiler.catalogue import SETS

    return SETS


def _set_kernel_hyper(entry: Any, hyper: dict[str, Any]) -> dict[str, Any]:
    """The projection kernel's hyperparameters from the set's arguments (``entry.kernel_hyper``,
    the rule problems use). A scheduled argument passes through it as a placeholder number and
    comes back as its schedule; arrays come back as lists (plan data is plain)."""
    placeholders: dict[float, ScheduleRef] = {}
    kw: dict[str, Any] = {}
    for i, (k, v) in enumerate(hyper.items()):
        if isinstance(v, ScheduleRef):
            stand_in = 1.0 + (i + 1) * 2.0 ** -40  # a distinct number no one writes
            placeholders[stand_in] = v
            v = stand_in
        kw[k] = v
    out = entry.kernel_hyper(kw)
    plain: dict[str, Any] = {}
    for k, v in out.items():
        if isinstance(v, float) and v in placeholders:
            v = placeholders[v]
        elif hasattr(v, "tolist"):
            v = v.tolist()
        plain[k] = v
    return plain


def _join(a: Span, b: Span) -> Span:
    first, last = (a, b) if (a.line, a.column) <= (b.line, b.column) else (b, a)
    return Span(first.source, first.line, first.column, last.end_line, last.end_column)


# ------------------------------------------------------------------ regex selectors
#: names longer than this are never matched by a `re:` selector (real parameter names are short)
MAX_NAME_LENGTH = 1000
#: unbounded quantifiers allowed in one pattern (k of them in a row cost O(n^k) on a failing name)
MAX_UNBOUNDED = 3
_ALPHABET = frozenset(chr(c) for c in range(32, 127))
_CATEGORIES = {
    "CATEGORY_DIGIT": frozenset(c for c in _ALPHABET if c.isdigit()),
    "CATEGORY_WORD": frozenset(c for c in _ALPHABET if c.isalnum() or c == "_"),
    "CATEGORY_SPACE": frozenset(c for c in _ALPHABET if c.isspace()),
}


def _category(name: str) -> frozenset[str]:
    if name.startswith("CATEGORY_NOT_"):
        return _ALPHABET - _CATEGORIES.get("CATEGORY_" + name[len("CATEGORY_NOT_"):], frozenset())
    return _CATEGORIES.get(name, _ALPHABET)


def _chars(items: Any) -> frozenset[str]:
    """Every character (of printable ASCII) some item of a parsed pattern can consume."""
    out: set[str] = set()
    for op, av in items:
        op = str(op)
        if op == "LITERAL":
            out.add(chr(av))
        elif op in ("NOT_LITERAL", "ANY", "GROUPREF"):
            return _ALPHABET
        elif op == "IN":
            out |= _in_set(av)
        elif op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            out |= _chars(av[2])
        elif op == "SUBPATTERN":
            out |= _chars(av[3])
        elif op in ("ATOMIC_GROUP",):
            out |= _chars(av)
        elif op == "BRANCH":
            for alt in av[1]:
                out |= _chars(alt)
    return frozenset(out)


def _in_set(items: Any) -> frozenset[str]:
    out: set[str] = set()
    negate = False
    for op, av in items:
        op = str(op)
        if op == "NEGATE":
            negate = True
        elif op == "LITERAL":
            out.add(chr(av))
        elif op == "RANGE":
            out |= {chr(c) for c in range(av[0], av[1] + 1) if 32 <= c < 127}
        elif op == "CATEGORY":
            out |= _category(str(av))
        else:
            return _ALPHABET
    return frozenset(_ALPHABET - out if negate else out)


def _first(seq: list[Any]) -> tuple[frozenset[str], bool]:
    """(characters a match of ``seq`` can start with, whether ``seq`` always consumes one)."""
    out: set[str] = set()
    for item in seq:
        op, av = str(item[0]), item[1]
        if op in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            first, solid = _first(list(av[2]))
            out |= first
            if av[0] >= 1 and solid:
                return frozenset(out), True
            continue
        if op == "SUBPATTERN":
            first, solid = _first(list(av[3]))
        elif op == "ATOMIC_GROUP":
            first, solid = _first(list(av))
        elif op == "GROUPREF":
            first, solid = _ALPHABET, False  # the group may have matched nothing
        elif op == "BRANCH":
            firsts = [_first(list(alt)) for alt in av[1]]
            first, solid = frozenset().union(*(f for f, _ in firsts)), all(s for _, s in firsts)
        else:
            first, solid = _chars([item]), True
        out |= first
        if solid:
            return frozenset(out), True
    return frozenset(out), False


def _unbounded(item: Any) -> bool:
    op, av = str(item[0]), item[1]
    return op in ("MAX_REPEAT", "MIN_REPEAT") and av[1] > 64


def _variable(item: Any) -> bool:
    """A repeat whose count can vary (``+``, ``*``, ``?``, ``{1,3}``): a string can be split
    between it and its neighbours in more than one way."""
    op, av = str(item[0]), item[1]
    return op in ("MAX_REPEAT", "MIN_REPEAT") and av[1] > av[0]


def _has_variable(items: Any) -> bool:
    """Whether some repeat inside ``items`` has a variable count."""
    for op, av in items:
        op = str(op)
        if _variable((op, av)) or (op in ("MAX_REPEAT", "MIN_REPEAT") and _has_variable(av[2])):
            return True
        if op == "SUBPATTERN" and _has_variable(av[3]):
            return True
        if op == "BRANCH" and any(_has_variable(alt) for alt in av[1]):
            return True
    return False


def _regex_hazard(items: Any) -> str | None:
    """Why ``items`` can backtrack exponentially, or None: an unbounded repeat whose body can
    split one string into iterations in more than one way (a nested unbounded repeat not fenced
    by a character it cannot consume, overlapping alternatives, a backreference)."""
    for op, av in items:
        op = str(op)
        if op == "SUBPATTERN":
            why = _regex_hazard(av[3])
        elif op == "BRANCH":
            why = next((w for w in (_regex_hazard(alt) for alt in av[1]) if w), None)
        elif op == "ATOMIC_GROUP":
            why = _regex_hazard(av)  # repeating it is safe (no backtracking into it); inside is not
        elif op in ("ASSERT", "ASSERT_NOT"):
            why = _regex_hazard(av[1])
        elif op == "POSSESSIVE_REPEAT":
            why = _regex_hazard(av[2])
        elif op in ("MAX_REPEAT", "MIN_REPEAT"):
            body = list(av[2])
            why = _repeat_hazard(body) if _variable((op, av)) and av[1] >= 2 else None
            why = why or _regex_hazard(body)
        else:
            why = None
        if why:
            return why
    return None


def _flatten(seq: list[Any]) -> list[Any]:
    """Groups without a quantifier are part of the sequence around them."""
    out: list[Any] = []
    for op, av in seq:
        if str(op) == "SUBPATTERN":
            out += _flatten(list(av[3]))
        else:
            out.append((op, av))
    return out


def _repeat_hazard(body: list[Any]) -> str | None:
    """Why the body of an unbounded repeat can split a string into iterations in two ways."""
    body = _flatten(body)
    for i, (op, av) in enumerate(body):
        op = str(op)
        after = body[i + 1:] + body  # what may follow: the rest, then the next iteration
        if op == "GROUPREF":
            return "a backreference inside a repeated group"
        if op == "BRANCH":
            firsts = []
            for alt in av[1]:
                first, solid = _first(list(alt))
                firsts.append(first if solid else first | _first(after)[0])
            if any(a & b for j, a in enumerate(firsts) for b in firsts[j + 1:]):
                return "alternatives that can match the same text inside a repeated group"
        if _has_variable([(op, av)]):
            fence, solid = _first(after)
            if not solid or fence & _chars([(op, av)]):
                return "a repeated group containing another variable-length repeat that nothing separates"
    return None


def check_name_regex(pattern: str, span: Span | None = None) -> Any:
    """Compile a ``re:`` selector pattern, refusing patterns that can backtrack for minutes on
    short names (nested or too many unbounded quantifiers); returns the compiled pattern.

    A nested quantifier is accepted when a character the inner repeat cannot consume separates
    the iterations, e.g. ``(?:\\w+\\.)*weight``; possessive quantifiers and atomic groups never
    backtrack and are always accepted."""
    import re
    import re._parser as sre_parse  # the parser `re` itself uses: the same reading of the pattern

    try:
        compiled = re.compile(pattern)
        parsed = list(sre_parse.parse(pattern))
    except (re.error, RecursionError, OverflowError) as exc:
        raise error(f"invalid regular expression `{pattern}`: {exc}", span) from None
    try:
        why = _regex_hazard(parsed)
        if why is None and _count_unbounded(parsed) > MAX_UNBOUNDED:
            why = f"more than {MAX_UNBOUNDED} unbounded quantifiers (the work grows as a power of the name length)"
    except RecursionError:
        why = "groups nested too deeply to analyse"
    if why:
        raise error(f"regular expression `{pattern}` can take exponential time: {why}", span,
                    ["write a glob (`layers.*.weight`, `**.bias`), or fence repeats with a character they cannot "
                     "match, e.g. `(?:\\w+\\.)*weight`; possessive `*+` and atomic `(?>...)` forms are accepted"])
    return compiled


def _count_unbounded(items: Any) -> int:
    n = 0
    for op, av in items:
        op = str(op)
        if op in ("MAX_REPEAT", "MIN_REPEAT"):
            n += _unbounded((op, av)) + _count_unbounded(av[2])
        elif op == "SUBPATTERN":
            n += _count_unbounded(av[3])
        elif op == "BRANCH":
            n += max((_count_unbounded(alt) for alt in av[1]), default=0)
    return n


def select_train(spec: ast.Spec, name: str | None) -> ast.TrainBlock:
    """The train block called ``name`` (the first one when ``name`` is None)."""
    trains = spec.trains
    if name is None:
        if not trains:
            raise error(f"{spec.source.path} has no `train` block",
                        notes=[f"its blocks: {', '.join(b.name for b in spec.blocks) or 'none'}"] +
                        ([f"its problem blocks ({', '.join(b.name for b in spec.problems)}) run with `regspec solve`"]
                         if spec.problems else []))
        return trains[0]
    for t in trains:
        if t.name == name:
            return t
    raise error(f"no train block named `{name}` in {spec.source.path}",
                notes=did_you_mean(name, [t.name for t in trains]) +
                [f"train blocks: {', '.join(t.name for t in trains) or 'none'}"])


def plan_train(spec: ast.Spec, name: str | None = None, *, attach_only: bool = False) -> TrainPlan:
    """Resolve one train block (the first by default) into a ``TrainPlan``; errors are located.

    ``attach_only``: the block will be attached to a user's model and loop, so it may omit
    ``model`` and ``data``.
    """
    return _Planner(spec, select_train(spec, name), attach_only).run()


#: Sets whose projection shrinks every entry toward 0 without changing its sign (P(x)_i = c_i x_i,
#: 0 <= c_i <= 1) and which contain every such shrink of their points. Two of them applied in
#: turn end in both sets: the second projection only shrinks, so the first set still holds.
ENTRY_SHRINKING = tuple(n for n, e in _catalogue_sets().items() if "entries" in e.shrinks)
#: The same with singular values: the projection shrinks sigma_i(W) and keeps U, V; every set
#: holds the singular-value shrinks of its points (l2_ball is the Frobenius ball of the matrix).
SPECTRUM_SHRINKING = tuple(n for n, e in _catalogue_sets().items() if "spectrum" in e.shrinks)


def _shrink_families(term: TermPlan) -> set[str]:
    entry = train_set(term.name)
    families = set(entry.shrinks) if entry is not None else set()
    if term.name == "box":  # a box shrinks toward 0 only when it holds 0 (scheduled bounds: unknown)
        lo, hi = term.options.get("lo"), term.options.get("hi")
        lo_ok = lo is None or (isinstance(lo, (int, float)) and lo <= 0)
        hi_ok = hi is None or (isinstance(hi, (int, float)) and hi >= 0)
        if not (lo_ok and hi_ok):
            families.discard("entries")
    return families


def projections_compatible(a: TermPlan, b: TermPlan) -> bool:
    """Whether projecting onto ``a``'s set and then ``b``'s leaves a point in both sets."""
    same = a.name == b.name and a.options == b.options
    return same or bool(_shrink_families(a) & _shrink_families(b))


def projection_conflict(what: str, first: TermPlan, then: TermPlan) -> RegspecError:
    return error(
        f"{what} is projected onto {first.name} (line {first.line}) and then onto {then.name}: applied one after "
        "the other, the end state satisfies only the last exactly", then.span,
        [f"no joint projection onto {first.name} and {then.name} is known (sets that only shrink entries, or only "
         "singular values, are compatible: e.g. nonneg with l2_ball, spectral_ball with low_rank)",
         "keep one constraint, or end the first earlier with `until epoch K`"])


def _same_target_conflicts(plan: TrainPlan) -> None:
    """The projection rule of the binder (bind.check_projection_conflicts) for terms whose
    selectors are written identically, decided without a model (for `regspec check`)."""
    seen: dict[tuple, TermPlan] = {}
    for t in plan.terms:
        g = t.gate
        if t.lowering != "projection" or (g is not None and g.stop is not None and not (
                g.stop_unit == "epoch" and g.stop >= plan.total_epochs)):
            continue
        key = (t.target.kind, t.target.pattern, t.target.type)
        first = seen.setdefault(key, t)
        if first is not t and not projections_compatible(first, t):
            raise projection_conflict(t.target.text, first, t)


def gate_warnings(plan: TrainPlan, epochs: int | None = None) -> list[Diagnostic]:
    """Gates that cannot open within the run, decided without the steps per epoch: ``from epoch K``
    with K at or past the last epoch (``epochs`` default: the block's), or ``until`` at 0. The
    exact rule, with the steps per epoch, runs when the block is bound (assemble)."""
    total = plan.total_epochs if epochs is None else int(epochs)
    out = []
    for t in plan.terms:
        g = t.gate
        if g is None:
            continue
        late = g.start is not None and g.start_unit == "epoch" and g.start >= total and plan.steps is None
        shut = g.stop is not None and g.stop <= 0
        if late or shut:
            why = (f"`from epoch {g.start:g}` is not before the end of the run ({total} epoch(s))" if late
                   else f"`until {g.stop_unit} {g.stop:g}` closes it before the first step")
            out.append(Diagnostic(f"this {t.stmt} never applies: {why}; it is not applied at the end either",
                                  t.span, "warning"))
    return out


def check_train(spec: ast.Spec, name: str) -> str:
    """What `regspec check` says about a train block, after validating every name and option of it
    (the same planner `regspec plan` uses, without binding a model: no torch). A block without
    ``model``/``data`` is valid: it may be attached to a user's model and loop."""
    plan = plan_train(spec, name, attach_only=True)
    _same_target_conflicts(plan)
    n_prox = sum(t.lowering == "prox" for t in plan.terms)
    n_proj = sum(t.lowering == "projection" for t in plan.terms)
    n_loss = len(plan.terms) - n_prox - n_proj
    parts = [f"{len(plan.terms)} term(s): {n_loss} in the loss, {n_prox} prox, {n_proj} projection(s)"]
    if plan.rewrites:
        parts.append(f"{len(plan.rewrites)} rewrite(s)")
    if plan.transforms or plan.sam is not None or plan.multipliers:   # how the update is formed
        parts.append(", ".join(p for p in [f"{len(plan.transforms)} transform(s)" if plan.transforms else "",
                                           "sam" if plan.sam is not None else "",
                                           f"{len(plan.multipliers)} Lagrange multiplier(s)"
                                           if plan.multipliers else ""] if p))
    if plan.init is not None or plan.reparams:   # what trains (compiler/reparam_plan.py)
        parts.append(", ".join(([f"init {plan.init.path}"] if plan.init is not None else [])
                               + [r.form_text() for r in plan.reparams]))
    for w in [*plan.warnings, *gate_warnings(plan)]:
        parts.append(f"warning at line {w.span.line if w.span else '?'}: {w.message}")
    return f"train {plan.name}: " + "; ".join(parts)


PlanFn = Callable[[ast.Spec, "str | None"], TrainPlan]
