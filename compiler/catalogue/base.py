"""The catalogue's vocabulary: signs, curvatures, monotonicity, and the ``Atom`` / ``SetEntry`` bases.

One class per atom (CVXPY-style): its math lives in one place, and each backend's lowering is a
method that imports its library lazily, so that ``regspec check`` never imports torch or cvxpy.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

Shape = tuple[int, ...]


class Sign(enum.Enum):
    NONNEG = "nonneg"
    NONPOS = "nonpos"
    ZERO = "zero"
    UNKNOWN = "unknown"

    def __neg__(self) -> "Sign":
        return {Sign.NONNEG: Sign.NONPOS, Sign.NONPOS: Sign.NONNEG}.get(self, self)

    @property
    def nonneg(self) -> bool:
        return self in (Sign.NONNEG, Sign.ZERO)

    @property
    def nonpos(self) -> bool:
        return self in (Sign.NONPOS, Sign.ZERO)

    def __add__(self, other: "Sign") -> "Sign":
        if self is Sign.ZERO:
            return other
        if other is Sign.ZERO:
            return self
        return self if self is other else Sign.UNKNOWN

    def __mul__(self, other: "Sign") -> "Sign":
        if Sign.ZERO in (self, other):
            return Sign.ZERO
        if Sign.UNKNOWN in (self, other):
            return Sign.UNKNOWN
        return Sign.NONNEG if self is other else Sign.NONPOS

    @staticmethod
    def of_value(value: Any) -> "Sign":
        import numpy as np

        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            return Sign.UNKNOWN
        if arr.size == 0 or np.all(arr == 0):
            return Sign.ZERO
        if np.all(arr >= 0):
            return Sign.NONNEG
        if np.all(arr <= 0):
            return Sign.NONPOS
        return Sign.UNKNOWN


class Curvature(enum.Enum):
    CONSTANT = "constant"
    AFFINE = "affine"
    CONVEX = "convex"
    CONCAVE = "concave"
    UNKNOWN = "unknown"

    def __neg__(self) -> "Curvature":
        return {Curvature.CONVEX: Curvature.CONCAVE, Curvature.CONCAVE: Curvature.CONVEX}.get(self, self)

    @property
    def is_convex(self) -> bool:
        return self in (Curvature.CONSTANT, Curvature.AFFINE, Curvature.CONVEX)

    @property
    def is_concave(self) -> bool:
        return self in (Curvature.CONSTANT, Curvature.AFFINE, Curvature.CONCAVE)

    @property
    def is_affine(self) -> bool:
        return self in (Curvature.CONSTANT, Curvature.AFFINE)

    def __add__(self, other: "Curvature") -> "Curvature":
        if self is Curvature.CONSTANT:
            return other
        if other is Curvature.CONSTANT:
            return self
        if self is Curvature.AFFINE:
            return other
        if other is Curvature.AFFINE:
            return self
        return self if self is other else Curvature.UNKNOWN


class Mono(enum.Enum):
    INCREASING = "increasing"
    DECREASING = "decreasing"
    NONMONOTONE = "nonmonotone"


class ShapeError(Exception):
    """Raised by an atom's shape rule; ``arg`` is the index of the offending argument, if one."""

    def __init__(self, message: str, arg: int | None = None):
        super().__init__(message)
        self.arg = arg


@dataclass(frozen=True)
class Prox:
    """How a term ``weight * atom(x)`` maps to a torch kernel: ``kernel`` is its name in the torch
    backend's registry, ``hyper`` maps kernel hyperparameters to the atom's keyword names (static or
    tensor keywords). ``negated``: the kernel is the prox of ``-atom`` (a concave atom such as
    log_det, whose kernel neg_log_det applies to ``-weight * log_det``, weight >= 0)."""

    kernel: str
    hyper: tuple[tuple[str, str], ...] = ()
    negated: bool = False


@dataclass(frozen=True)
class TrainUse:
    """How a train block applies ``atom(selector, options)`` directly to a model's tensors.

    ``kind``: the training runtime's evaluation of the term (``backends/torch/train/regularizer``:
    ``l1`` on an activation is a batch mean of per-sample norms, ``orthogonality`` reads a conv
    weight as C_out x rest); ``targets``: the selector kinds it takes; ``options``: the options a
    direct term may give, with their training defaults; ``matrix``: it acts on the matrix view
    W.reshape(C_out, -1) of a conv weight; ``separable``: its prox acts entry by entry (so a
    per-coordinate step after Adam is exact); ``default = "prox"``: the term is *defined* as its
    proximal step (decoupled weight decay), so it is lowered that way even though it is smooth;
    ``math``: the formula ``regspec plan`` prints for the runtime's evaluation. Any other use of
    the atom (other options, inside an expression) goes through its ``torch`` evaluation instead."""

    kind: str
    targets: tuple[str, ...] = ("param",)
    options: tuple[tuple[str, Any], ...] = ()
    matrix: bool = False
    separable: bool = False
    default: str | None = None
    math: str = ""


class Atom:
    """One catalogue entry. Subclasses set the class attributes and override the rules they need.

    ``args`` passed to the lowering methods are backend values (cvxpy expressions, tensors,
    numpy arrays) for tensor arguments; ``kw`` holds static keyword values, already evaluated.
    """

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    nargs: ClassVar[tuple[int, int]] = (1, 1)     # min, max positional tensor arguments
    static: ClassVar[dict[str, Any]] = {}          # static keyword arguments and defaults
    tensor_kwargs: ClassVar[tuple[str, ...]] = ()  # keyword arguments that are tensors (data)
    # Keywords that may also be given positionally after the tensor arguments, in this order
    # (``huber(x, 2)``, ``group_norm(x, labels)``); name resolution moves them into the keywords.
    positional_kw: ClassVar[tuple[str, ...]] = ()
    curvature: ClassVar[Curvature] = Curvature.CONVEX
    smooth: ClassVar[bool] = False                 # differentiable everywhere on its domain
    prox: ClassVar[Prox | None] = None
    constant_only: ClassVar[bool] = False          # evaluated at compile time only (rows, cols)
    # Takes its positional arguments as one list literal too, as CVXPY's ``hstack([a, b])``: the
    # list's items become the positional arguments (so they may hold variables).
    sequence_args: ClassVar[bool] = False
    # Backends an entry deliberately lacks, with the reason (the completeness test reads this).
    lacks: ClassVar[dict[str, str]] = {}
    # Its direct use in train blocks, when the training runtime has a dedicated evaluation.
    train: ClassVar[TrainUse | None] = None
    # Other spellings of exactly this function (CVXPY's names): resolution maps them to ``name``.
    aliases: ClassVar[tuple[str, ...]] = ()
    # Names CVXPY users write for a function this entry (or a sibling) computes under another
    # spelling or signature, with the note a did-you-mean gives for them instead of spelling neighbours.
    cvxpy_notes: ClassVar[dict[str, str]] = {}
    # What to write instead when a static keyword is given a parameter (or a variable): static
    # keywords are fixed when the problem is compiled (``quad_form``'s P decides its curvature).
    static_notes: ClassVar[dict[str, str]] = {}
    # For a scalar entry whose CVXPY namesake is elementwise (huber, kl_div): what to say when its
    # total is broadcast against an array (`w * huber(r)`, `huber(r) <= t` with a vector t), where
    # CVXPY's meaning (entry by entry) and this one (the total, repeated) would differ silently.
    sums_cvxpy_elementwise: ClassVar[str] = ""
    # The torch evaluation as Python source, for generated code (``regspec compile`` writes it into
    # the trainer): an expression in ``x`` (the tensor argument), ``torch`` and the keyword names it
    # uses, for the whole-tensor form. Keywords it does not name must be at their defaults (None
    # for tensor keywords); ``torch_source_for`` checks that. A test evaluates it against ``torch``.
    torch_source: ClassVar[str | None] = None

    # ---- math
    def shape(self, shapes: Sequence[Shape], kw: dict[str, Any]) -> Shape:
        return ()

    def sign(self, signs: Sequence[Sign], kw: dict[str, Any]) -> Sign:
        return Sign.NONNEG if self.curvature is Curvature.CONVEX else Sign.UNKNOWN

    def monotonicity(self, i: int, signs: Sequence[Sign], kw: dict[str, Any]) -> Mono:
        return Mono.NONMONOTONE

    def curvature_of(self, kw: dict[str, Any]) -> Curvature:
        return self.curvature

    def dcp(self, curvs: Sequence[Curvature], signs: Sequence[Sign], kw: dict[str, Any],
            texts: Sequence[str]) -> tuple[Curvature, str | None]:
        """Curvature of this atom applied to arguments of the given curvatures (DCP), and why not."""
        from regspec.compiler.catalogue.dcp import compose

        monos = [self.monotonicity(i, signs, kw) for i in range(len(curvs))]
        return compose(self.name, self.curvature_of(kw), monos, curvs, texts)

    # ---- lowerings
    def numpy(self, args: Sequence[Any], kw: dict[str, Any]) -> Any:
        """Evaluate on numpy values (constant folding); atoms without it stay symbolic."""
        raise NotImplementedError

    def cvxpy(self, args: Sequence[Any], kw: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{self.name} has no CVXPY lowering")

    def torch(self, args: Sequence[Any], kw: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{self.name} has no torch evaluation")

    def torch_source_for(self, kw: dict[str, Any]) -> str | None:
        """``torch_source`` when it computes this atom for the keyword values ``kw`` (every static
        keyword it does not name is at its default, every tensor keyword it does not name is
        absent), else None."""
        if self.torch_source is None:
            return None
        import ast as pyast

        named = {n.id for n in pyast.walk(pyast.parse(self.torch_source, mode="eval"))
                 if isinstance(n, pyast.Name)}
        for k, default in self.static.items():
            if k not in named and kw.get(k, default) != default:
                return None
        if any(k not in named and kw.get(k) is not None for k in self.tensor_kwargs):
            return None
        return self.torch_source

    def prox_hyper(self, kw: dict[str, Any], shapes: Sequence[Shape] = ()) -> dict[str, Any]:
        """Keyword arguments for the prox kernel, from the atom's evaluated keywords ``kw``
        (static values and tensor-keyword values) and its argument shapes. Arrays are returned as
        numpy arrays: the torch lowering converts them to its dtype and device. Atoms whose kernel
        needs a canonical form (group labels, default weights) override this."""
        if self.prox is None:
            return {}
        return {kernel_name: kw[kw_name] for kernel_name, kw_name in self.prox.hyper if kw.get(kw_name) is not None}


def norm_of_abs_mono(signs: Sequence[Sign], i: int = 0) -> Mono:
    """Monotonicity of a norm-like function of |x|: increasing on x >= 0, decreasing on x <= 0."""
    s = signs[i]
    if s.nonneg:
        return Mono.INCREASING
    if s.nonpos:
        return Mono.DECREASING
    return Mono.NONMONOTONE


class ScalarAtom(Atom):
    """An atom whose value is a scalar (norms, sums of elementwise losses): its shape rule."""

    def shape(self, shapes: Sequence[Shape], kw: dict[str, Any]) -> Shape:
        return ()


class Elementwise(Atom):
    """An atom applied entry by entry: the result has its (single) argument's shape."""

    def shape(self, shapes: Sequence[Shape], kw: dict[str, Any]) -> Shape:
        return tuple(shapes[0])


class SetEntry:
    """A set for ``x in SET`` / ``constrain T in SET``: its CVXPY constraints and its projection."""

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    static: ClassVar[dict[str, Any]] = {}
    positional: ClassVar[tuple[str, ...]] = ()     # names of positional static arguments, in order
    convex: ClassVar[bool] = True
    projection: ClassVar[str | None] = None        # kernel name in the torch registry
    lacks: ClassVar[dict[str, str]] = {}
    # Training (`constrain param(...) in SET`): other spellings of the arguments, the arguments
    # that are counts, whether the projection acts on the matrix view W.reshape(C_out, -1) of a
    # conv weight, and the families of projections it belongs to: "entries" (shrinks every entry
    # toward 0 keeping its sign) or "spectrum" (shrinks singular values keeping U, V). Two sets of
    # one family keep each other's constraint when projected one after the other.
    arg_aliases: ClassVar[dict[str, str]] = {}
    integer_args: ClassVar[tuple[str, ...]] = ()
    matrix_view: ClassVar[bool] = False
    shrinks: ClassVar[tuple[str, ...]] = ()

    def check_shape(self, shape: Shape, kw: dict[str, Any]) -> None:
        """Raise ShapeError when the set does not apply to a variable of this shape."""

    def cvxpy(self, x: Any, kw: dict[str, Any]) -> list:
        raise NotImplementedError(f"{self.name} has no CVXPY lowering")

    def kernel_hyper(self, kw: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the projection kernel (arrays as numpy arrays; the torch lowering
        converts them to its dtype and device)."""
        return dict(kw)
