"""Schedules: scalar functions of training progress, and gates for periodic steps.

A schedule is called with ``t``, the progress in **epochs** (fractional: after step ``s`` of an
epoch with ``S`` steps, ``t = epoch + s/S``; ``steps_to_epochs`` converts). ``start`` and ``end``
are in epochs; ``end`` defaults to ``total`` (the run's number of epochs) when given at
construction. With ``every = Δ`` (epochs), ``t`` is first rounded down to a multiple of Δ
(the value is held between updates, as in gradual pruning). Then (CATALOGUE §5)

    p = clamp((t − start)/(end − start), 0, 1)

    constant(a)                a
    linear(a -> b)             a + (b − a)·p
    cosine(a -> b)             b + (a − b)·(1 + cos πp)/2
    cubic(a -> b)              b + (a − b)·(1 − p)³
    exp(a -> b)                a·(b/a)^p                       (a, b > 0)
    step(a, milestones, γ)     a·γ^{#{m ∈ milestones : m ≤ t}}
    window(start, end)         1 if start ≤ t < end else 0
    warmup(w, then, from_=0)   from_ + (then(w) − from_)·t/w for t < w, then then(t)
    sine_stages(a -> b, S)     see ``SineStages``

Schedules compose with scalars and each other by ``*`` and ``+`` (``0.1 * cosine(1, 0)``).
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Callable, Sequence

from regspec.diagnostics import RegspecError, Span, did_you_mean, error

from ._util import check_kwargs

__all__ = [
    "Schedule", "Constant", "Linear", "Cosine", "Cubic", "Exp", "SineStages", "Step", "Window",
    "Warmup", "Product", "Sum", "Gate", "SCHEDULES", "build_schedule", "steps_to_epochs",
    "constant", "linear", "cosine", "cubic", "exp", "sine_stages", "step", "window", "warmup",
]

_EPS = 1e-9  # float slack so that t = 29/10 * 10 steps counts as epoch 2.9, not 2.8999...


def steps_to_epochs(steps: float, steps_per_epoch: int) -> float:
    """Progress in epochs after ``steps`` optimizer steps."""
    return float(steps) / float(steps_per_epoch)


def _resolve_end(end: float | None, total: float | None, what: str) -> float:
    if end is None:
        if total is None:
            raise error(f"{what}: give `end` (in epochs) or the run's `total` epochs")
        return float(total)
    return float(end)


class Schedule:
    """Base class: ``__call__(t) -> float`` with ``t`` in epochs."""

    def __call__(self, t: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def at_step(self, step: int, steps_per_epoch: int) -> float:
        """The value after ``step`` optimizer steps."""
        return self(steps_to_epochs(step, steps_per_epoch))

    def __mul__(self, other: "Schedule | float") -> "Schedule":
        return Product(self, _as_schedule(other))

    __rmul__ = __mul__

    def __add__(self, other: "Schedule | float") -> "Schedule":
        return Sum(self, _as_schedule(other))

    __radd__ = __add__


def _as_schedule(x: "Schedule | float") -> Schedule:
    if isinstance(x, Schedule):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Constant(float(x))
    raise TypeError(f"cannot combine a schedule with {type(x).__name__}")


class Product(Schedule):
    """s(t) = f(t)·g(t)."""

    def __init__(self, f: Schedule, g: Schedule):
        self.f, self.g = f, g

    def __call__(self, t: float) -> float:
        return self.f(t) * self.g(t)

    def __repr__(self) -> str:
        return f"({self.f!r} * {self.g!r})"


class Sum(Schedule):
    """s(t) = f(t) + g(t)."""

    def __init__(self, f: Schedule, g: Schedule):
        self.f, self.g = f, g

    def __call__(self, t: float) -> float:
        return self.f(t) + self.g(t)

    def __repr__(self) -> str:
        return f"({self.f!r} + {self.g!r})"


class Constant(Schedule):
    """s(t) = a."""

    def __init__(self, a: float):
        self.a = float(a)

    def __call__(self, t: float) -> float:
        return self.a

    def __repr__(self) -> str:
        return f"constant({self.a})"


class _Ramp(Schedule):
    """A ramp from ``a`` (t ≤ start) to ``b`` (t ≥ end) through ``shape(p)``, p = clamp((t−start)/(end−start), 0, 1)."""

    kind = "ramp"

    def __init__(self, a: float, b: float, start: float = 0.0, end: float | None = None, *,
                 total: float | None = None, every: float | None = None):
        self.a, self.b = float(a), float(b)
        self.start = float(start)
        self.end = _resolve_end(end, total, self.kind)
        if self.end < self.start:
            raise error(f"{self.kind}: end ({self.end}) is before start ({self.start})")
        if every is not None and float(every) <= 0:
            raise error(f"{self.kind}: `every` must be positive, got {every}")
        self.every = None if every is None else float(every)

    def progress(self, t: float) -> float:
        t = float(t)
        if self.every is not None:
            t = math.floor(t / self.every + _EPS) * self.every
        if self.end == self.start:
            return 1.0 if t >= self.end else 0.0
        return min(1.0, max(0.0, (t - self.start) / (self.end - self.start)))

    def shape(self, p: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t: float) -> float:
        return self.shape(self.progress(t))

    def __repr__(self) -> str:
        ev = f", every={self.every}" if self.every is not None else ""
        return f"{self.kind}({self.a} -> {self.b}, start={self.start}, end={self.end}{ev})"


class Linear(_Ramp):
    """a + (b − a)·p."""

    kind = "linear"

    def shape(self, p: float) -> float:
        return self.a + (self.b - self.a) * p


class Cosine(_Ramp):
    """b + (a − b)·(1 + cos πp)/2."""

    kind = "cosine"

    def shape(self, p: float) -> float:
        return self.b + (self.a - self.b) * (1.0 + math.cos(math.pi * p)) / 2.0


class Cubic(_Ramp):
    """b + (a − b)·(1 − p)³ (fast early, slow late: gradual magnitude pruning)."""

    kind = "cubic"

    def shape(self, p: float) -> float:
        return self.b + (self.a - self.b) * (1.0 - p) ** 3


class Exp(_Ramp):
    """a·(b/a)^p (geometric interpolation; a and b must be positive)."""

    kind = "exp"

    def __init__(self, a: float, b: float, start: float = 0.0, end: float | None = None, *,
                 total: float | None = None, every: float | None = None):
        super().__init__(a, b, start, end, total=total, every=every)
        if self.a <= 0 or self.b <= 0:
            raise error(f"exp: endpoints must be positive, got {self.a} -> {self.b}")

    def shape(self, p: float) -> float:
        return self.a * (self.b / self.a) ** p


class SineStages(Schedule):
    """ProSparse-style multi-stage sine ramp.

    ``S`` stages split [start, end] evenly: T_i = start + i·(end − start)/S, i = 0..S. Levels
    λ_0..λ_S are ``values`` when listed (S + 1 of them), otherwise equally spaced from a to b:
    λ_i = a + (b − a)·i/S. **Choice:** the first stage starts at λ_0 = a (with ``0 -> λ`` as in
    ProSparse the penalty starts at zero) and the last ends at λ_S = b. In stage i (1-based),
    t ∈ [T_{i−1}, T_i), p_i = (t − T_{i−1})/(T_i − T_{i−1}):

        s(t) = λ_{i−1} + (λ_i − λ_{i−1})·sin(π/2 · p_i)

    s(t) = a before ``start`` and b from ``end`` on; s is continuous and, for a ≤ b,
    nondecreasing. The exact ProSparse shape is marked "to verify" in the catalogue.
    """

    def __init__(self, a: float | None = None, b: float | None = None, stages: int = 4,
                 start: float = 0.0, end: float | None = None, *, values: Sequence[float] | None = None,
                 total: float | None = None, every: float | None = None):
        stages = int(stages)
        if not 1 <= stages <= 100_000:  # levels and bounds are lists of stages + 1 numbers
            raise error(f"sine_stages: `stages` must be from 1 to 100000, got {stages}")
        if values is not None:
            levels = [float(v) for v in values]
            if len(levels) != stages + 1:
                raise error(f"sine_stages: `values` lists λ_0..λ_S and needs stages + 1 = {stages + 1} numbers, got {len(levels)}")
            if (a is not None and float(a) != levels[0]) or (b is not None and float(b) != levels[-1]):
                raise error("sine_stages: `a -> b` disagrees with the first and last of `values`")
        else:
            if a is None or b is None:
                raise error("sine_stages: give `a -> b` or the list of levels `values`")
            levels = [float(a) + (float(b) - float(a)) * i / stages for i in range(stages + 1)]
        self.levels = levels
        self.stages = stages
        self.start = float(start)
        self.end = _resolve_end(end, total, "sine_stages")
        if self.end <= self.start:
            raise error(f"sine_stages: end ({self.end}) must be after start ({self.start})")
        self.bounds = [self.start + (self.end - self.start) * i / stages for i in range(stages + 1)]
        self.every = None if every is None else float(every)

    def __call__(self, t: float) -> float:
        t = float(t)
        if self.every is not None:
            t = math.floor(t / self.every + _EPS) * self.every
        if t <= self.start:
            return self.levels[0]
        if t >= self.end:
            return self.levels[-1]
        i = min(self.stages, max(1, bisect.bisect_right(self.bounds, t)))  # t in [T_{i-1}, T_i)
        lo, hi = self.bounds[i - 1], self.bounds[i]
        p = (t - lo) / (hi - lo)
        return self.levels[i - 1] + (self.levels[i] - self.levels[i - 1]) * math.sin(math.pi / 2 * p)

    def __repr__(self) -> str:
        return f"sine_stages({self.levels}, start={self.start}, end={self.end})"


class Step(Schedule):
    """a·γ^{#{m ∈ milestones : m ≤ t}} (milestones in epochs)."""

    def __init__(self, a: float, milestones: Sequence[float], gamma: float = 0.1):
        self.a, self.gamma = float(a), float(gamma)
        self.milestones = sorted(float(m) for m in milestones)

    def __call__(self, t: float) -> float:
        return self.a * self.gamma ** bisect.bisect_right(self.milestones, float(t) + _EPS)

    def __repr__(self) -> str:
        return f"step({self.a}, {self.milestones}, gamma={self.gamma})"


class Window(Schedule):
    """1 if start ≤ t < end else 0 (``end=None``: forever); switches a term on or off."""

    def __init__(self, start: float = 0.0, end: float | None = None):
        self.start = float(start)
        self.end = math.inf if end is None else float(end)

    def __call__(self, t: float) -> float:
        t = float(t)
        return 1.0 if self.start - _EPS <= t < self.end - _EPS else 0.0

    def __repr__(self) -> str:
        return f"window({self.start}, {self.end})"


class Warmup(Schedule):
    """Linear from ``from_`` to ``then(w)`` over [0, w], then ``then(t)``."""

    def __init__(self, w: float, then: "Schedule | float", from_: float = 0.0):
        self.w, self.then, self.from_ = float(w), _as_schedule(then), float(from_)
        if self.w <= 0:
            raise error(f"warmup: length must be positive, got {w}")

    def __call__(self, t: float) -> float:
        t = float(t)
        if t < self.w:
            return self.from_ + (self.then(self.w) - self.from_) * max(0.0, t) / self.w
        return self.then(t)

    def __repr__(self) -> str:
        return f"warmup({self.w}, {self.then!r})"


# lower-case constructors, the names specs use
def constant(a: float) -> Schedule:
    """s(t) = a."""
    return Constant(a)


def linear(a: float, b: float, start: float = 0.0, end: float | None = None, *,
           total: float | None = None, every: float | None = None) -> Schedule:
    """a + (b − a)·p."""
    return Linear(a, b, start, end, total=total, every=every)


def cosine(a: float, b: float, start: float = 0.0, end: float | None = None, *,
           total: float | None = None, every: float | None = None) -> Schedule:
    """b + (a − b)·(1 + cos πp)/2."""
    return Cosine(a, b, start, end, total=total, every=every)


def cubic(a: float, b: float, start: float = 0.0, end: float | None = None, *,
          total: float | None = None, every: float | None = None) -> Schedule:
    """b + (a − b)·(1 − p)³."""
    return Cubic(a, b, start, end, total=total, every=every)


def exp(a: float, b: float, start: float = 0.0, end: float | None = None, *,
        total: float | None = None, every: float | None = None) -> Schedule:
    """a·(b/a)^p."""
    return Exp(a, b, start, end, total=total, every=every)


def sine_stages(a: float | None = None, b: float | None = None, stages: int = 4, start: float = 0.0,
                end: float | None = None, *, values: Sequence[float] | None = None,
                total: float | None = None, every: float | None = None) -> Schedule:
    """Stage i: λ_{i−1} + (λ_i − λ_{i−1})·sin(π/2·p_i); see ``SineStages``."""
    return SineStages(a, b, stages, start, end, values=values, total=total, every=every)


def step(a: float, milestones: Sequence[float], gamma: float = 0.1) -> Schedule:
    """a·γ^{#milestones ≤ t}."""
    return Step(a, milestones, gamma)


def window(start: float = 0.0, end: float | None = None) -> Schedule:
    """1 on [start, end), else 0."""
    return Window(start, end)


def warmup(w: float, then: "Schedule | float", from_: float = 0.0) -> Schedule:
    """Linear warm-up over w epochs into ``then``."""
    return Warmup(w, then, from_)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "cubic": cubic,
    "exp": exp,
    "sine_stages": sine_stages,
    "step": step,
    "window": window,
    "warmup": warmup,
}

_TAKES_TOTAL = {"linear", "cosine", "cubic", "exp", "sine_stages"}


def build_schedule(name: str, /, *args: Any, span: Span | None = None, total: float | None = None,
                   **kwargs: Any) -> Schedule:
    """A schedule by name: ``build_schedule("cosine", 1e-3, 0.0, total=20)``.

    ``total`` (the run's epochs) is the default ``end`` of ramps and is ignored by schedules
    that have no end. Unknown names and bad arguments raise ``RegspecError``.
    """
    key = name.lower()
    if key not in SCHEDULES:
        raise error(f"unknown schedule `{name}`", span,
                    did_you_mean(name, SCHEDULES) + ["schedules: " + ", ".join(SCHEDULES)])
    fn = SCHEDULES[key]
    if key in _TAKES_TOTAL and total is not None:
        kwargs.setdefault("total", total)
    check_kwargs(fn, kwargs, f"schedule `{key}`", span, args=args)
    try:
        return fn(*args, **kwargs)
    except RegspecError as exc:
        if span is not None and exc.first.span is None:
            raise error(exc.first.message, span, exc.first.notes) from None
        raise
    except (TypeError, ValueError) as exc:
        raise error(f"schedule `{key}` rejected its arguments: {exc}", span) from None


class Gate:
    """When a periodic action (projection, prox, rewrite stage) runs.

    ``every=N``: after optimizer steps N, 2N, ... (``step`` counts completed optimizer steps,
    so it is 1 after the first step); ``from_epoch=K``: from epoch K on (0-based, inclusive);
    ``until_epoch=K``: before epoch K (exclusive), matching ``window(K0, K)``.

        active(step, epoch) = [N | step] ∧ [epoch ≥ from] ∧ [epoch < until]
    """

    def __init__(self, every: int | None = None, from_epoch: float | None = None,
                 until_epoch: float | None = None):
        if every is not None and int(every) < 1:
            raise error(f"`every` must be a positive number of steps, got {every}")
        if from_epoch is not None and until_epoch is not None and float(until_epoch) <= float(from_epoch):
            raise error(f"`until epoch {until_epoch}` is not after `from epoch {from_epoch}`: the action would never run")
        self.every = None if every is None else int(every)
        self.from_epoch = None if from_epoch is None else float(from_epoch)
        self.until_epoch = None if until_epoch is None else float(until_epoch)

    def active(self, step: int, epoch: float) -> bool:
        """Whether the action runs after optimizer step ``step`` during epoch ``epoch``."""
        if self.every is not None and int(step) % self.every != 0:
            return False
        if self.from_epoch is not None and epoch < self.from_epoch:
            return False
        if self.until_epoch is not None and epoch >= self.until_epoch:
            return False
        return True

    def __repr__(self) -> str:
        return f"Gate(every={self.every}, from_epoch={self.from_epoch}, until_epoch={self.until_epoch})"
