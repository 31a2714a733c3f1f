"""Straight-line aten graphs for the smooth part's value and gradient (``make_fx``), cached.

The smooth part is an fx GraphModule whose data and parameters are buffers. It is traced as a
function of (variables, buffers), so one trace serves every solve of the same structure: a
re-solve with new parameter values (a sweep), a re-load of the same spec, the cross-check. The
cache key is the GraphModule's generated code plus the shape, dtype and device of every input;
values are not part of it. The trace runs on fake tensors, so a lowering whose Python control
flow depends on data values cannot be traced this way (it raises) and is traced once more on the
real values with the buffers baked in, uncached, as before.

Tracing is not free: the first ``make_fx`` of a process imports torch's dynamo/inductor stack
(2-12 s measured on a 2-core machine), later traces cost ~50-100 ms, while an eager autograd
evaluation costs 0.1-1 ms more than the traced graph. A one-off CLI solve must not pay that, so
``smooth_evaluator`` starts eager (autograd on the smooth graph with the variables as its
inputs, no dynamo) and traces a structure once the eager time spent on it, in this solve and
earlier ones of the process, reaches the expected cost of tracing it (ski rental: never worse
than twice the better of the two choices in hindsight). A structure already traced is used
traced at once. ``REGSPEC_TRACE=eager|trace`` forces one path (benchmarks, tests).
"""
from __future__ import annotations

import os
import sys
import time
import weakref
from collections import OrderedDict
from typing import Callable

import torch
from torch import fx
from torch.func import functional_call

CACHE_SIZE = 32
_CACHE: OrderedDict[tuple, tuple[fx.GraphModule, fx.GraphModule] | None] = OrderedDict()
STATS = {"hits": 0, "misses": 0, "baked": 0}  # baked: traced on real values, uncached


def clear_cache() -> None:
    """Forget every trace and the eager time spent per structure (the process's measured trace
    cost stays: the imports it paid for are still there)."""
    _CACHE.clear()
    _EAGER_SECONDS.clear()
    STATS.update(hits=0, misses=0, baked=0)
    POLICY.update(eager_solves=0, traced_solves=0, switches=0)


def _signature(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.device.type, t.device.index


def _buffers(module: fx.GraphModule) -> tuple[list[str], list[torch.Tensor]]:
    """Names and (detached) tensors of the data and parameters; variables are nn.Parameters."""
    buffers = dict(module.named_buffers())
    return list(buffers), [b.detach() for b in buffers.values()]


def _structure_key(module: fx.GraphModule, var_names: list[str], buf_names: list[str],
                   xs: list[torch.Tensor], extra: list[torch.Tensor]) -> tuple:
    return module.code, tuple(var_names), tuple(buf_names), tuple(_signature(t) for t in xs + extra)


def _trace_pair(value: Callable, xs: list[torch.Tensor], n_var: int, mode: str
                ) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(value graph, value-and-gradient graph) of ``value(*xs)``, the gradient with respect to
    the first ``n_var`` inputs (the variables; the rest are data)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def value_and_grad(*args: torch.Tensor):
        g, v = torch.func.grad_and_value(value, argnums=tuple(range(n_var)))(*args)
        return (v, *g)

    grad_gm = make_fx(value_and_grad, tracing_mode=mode)(*xs)
    grad_gm.graph.eliminate_dead_code()
    grad_gm.recompile()
    # the value graph is the joint graph with only its first output: dead-code elimination drops
    # the backward part (one trace instead of two; tracing dominates a first small solve)
    graph = fx.Graph()
    outputs = graph.graph_copy(grad_gm.graph, {})
    graph.output(outputs[0])
    value_gm = fx.GraphModule(grad_gm, graph)
    value_gm.graph.eliminate_dead_code()
    value_gm.recompile()
    return value_gm, grad_gm


class FusedSmooth:
    """Value and gradient of the smooth part from traced aten graphs: ``grad`` runs one graph
    returning (value, gradient), so the forward pass is shared (for a least-squares term: one pass
    for X w and one for X^T r instead of autograd's forward, backward and a second forward for the
    value); ``value`` returns that value when asked at the very tensors the last gradient was
    computed at (FISTA asks for both at each new point) and otherwise runs the traced forward."""

    def __init__(self, value_gm: fx.GraphModule, grad_gm: fx.GraphModule, extra: list[torch.Tensor],
                 cached: bool):
        self._value_gm = value_gm
        self._grad_gm = grad_gm
        self._extra = extra  # the buffers' current tensors, appended to the variables
        self.cached = cached  # True when the graphs came from the cache (no trace this solve)
        self._last: tuple[list[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def trace(cls, module: fx.GraphModule, var_names: list[str], x0: list[torch.Tensor]) -> "FusedSmooth | None":
        """Graphs for ``module`` (the smooth part, variables substituted by ``var_names``) at
        ``x0``'s shapes; None when it cannot be traced (the caller keeps autograd)."""
        buf_names, extra = _buffers(module)
        n = len(x0)
        xs = [x.detach() for x in x0]
        key = _structure_key(module, var_names, buf_names, xs, extra)

        def value_of_inputs(*args: torch.Tensor) -> torch.Tensor:
            subs = dict(zip(var_names, args[:n]))
            subs.update(zip(buf_names, args[n:]))
            return functional_call(module, subs, ())

        if key in _CACHE:
            STATS["hits"] += 1
            _CACHE.move_to_end(key)
            pair = _CACHE[key]
            if pair is not None:  # checked when it was traced
                return cls(pair[0], pair[1], extra, cached=True)
        else:
            STATS["misses"] += 1
            try:
                pair = _trace_pair(value_of_inputs, xs + extra, n, "fake")
                fused = cls._checked(cls(pair[0], pair[1], extra, cached=False), xs, n)
            except Exception:  # noqa: BLE001 - data-dependent control flow, unsupported op: not cacheable
                fused = None
            _CACHE[key] = None if fused is None else pair
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
            if fused is not None:
                return fused
        # values baked in: traced on the real tensors, per solve
        STATS["baked"] += 1
        try:
            v_gm, g_gm = _trace_pair(lambda *ys: functional_call(module, dict(zip(var_names, ys)), ()), xs, n,
                                    "real")
            return cls._checked(cls(v_gm, g_gm, [], cached=False), xs, n)
        except Exception:  # noqa: BLE001 - any tracing failure keeps autograd
            return None

    @staticmethod
    def _checked(fused: "FusedSmooth", xs: list[torch.Tensor], n: int) -> "FusedSmooth | None":
        """``fused`` if its gradient graph runs on the real tensors and returns (scalar, n gradients)."""
        with torch.no_grad():
            out = fused._grad_gm(*xs, *fused._extra)
        if len(out) != n + 1 or out[0].numel() != 1:
            return None
        return fused

    def grad(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self._grad_gm(*xs, *self._extra)
        self._last = (list(xs), out[0])
        return list(out[1:])

    def value(self, xs: list[torch.Tensor]) -> torch.Tensor:
        last = self._last
        if last is not None and len(last[0]) == len(xs) and all(a is b for a, b in zip(last[0], xs)):
            return last[1]
        return self._value_gm(*xs, *self._extra)


# ---------------------------------------------------------------- eager first, traced when it pays
MODES = ("auto", "eager", "trace")
MODE = os.environ.get("REGSPEC_TRACE", "auto").strip().lower()
if MODE not in MODES:  # an unknown value must not silently disable tracing for good
    MODE = "auto"
# Expected cost of a trace. The first in a process imports torch._dynamo and friends: 2-12 s
# measured (2 s is the quiet-machine end; underestimating only makes the switch come earlier).
# Later traces are measured and the last one is used.
COLD_TRACE_SECONDS = 2.0
WARM_TRACE_SECONDS = 0.1  # until a trace in this process has been measured
_last_trace_seconds: float | None = None
_EAGER_SECONDS: OrderedDict[tuple, float] = OrderedDict()  # eager time spent per structure, this process
_EAGER_GRAPHS: "weakref.WeakKeyDictionary[fx.GraphModule, fx.GraphModule]" = weakref.WeakKeyDictionary()
POLICY = {"eager_solves": 0, "traced_solves": 0, "switches": 0}
CLOCK = {"seconds": 0.0}  # seconds this process spent tracing for solves (callers take differences)


def expected_trace_seconds() -> float:
    if _last_trace_seconds is not None:
        return _last_trace_seconds
    return WARM_TRACE_SECONDS if "torch._dynamo" in sys.modules else COLD_TRACE_SECONDS


def _timed_trace(trace: Callable[[], object]) -> tuple[object, float]:
    """``trace()`` and its seconds, added to ``CLOCK``; the estimate for the next trace becomes
    this one's time, unless this one paid the imports (they are not paid again)."""
    global _last_trace_seconds
    cold = "torch._dynamo" not in sys.modules
    t0 = time.perf_counter()
    try:
        return trace(), time.perf_counter() - t0
    finally:
        seconds = time.perf_counter() - t0
        CLOCK["seconds"] += seconds
        _last_trace_seconds = WARM_TRACE_SECONDS if cold else seconds


def eager_graph(module: fx.GraphModule, var_names: list[str]) -> fx.GraphModule:
    """``module``'s graph with the variables as inputs (``forward(*variables)``) instead of
    attributes: no ``functional_call`` parameter swap per call (~1/3 of an eager evaluation on
    small problems), no tracing; data and parameters stay attributes (the same tensors)."""
    cached = _EAGER_GRAPHS.get(module)
    if cached is not None:
        return cached
    graph = fx.Graph()
    # fx renames placeholders to snake case, so `X` and `x` would collide (and read each other):
    # an index keeps the names distinct
    inputs = {name: graph.placeholder(f"v{i}_{name}") for i, name in enumerate(var_names)}
    env: dict[fx.Node, fx.Node] = {}
    for node in module.graph.nodes:
        if node.op == "get_attr" and node.target in inputs:
            env[node] = inputs[node.target]
        else:
            env[node] = graph.node_copy(node, lambda a: env[a])
    gm = fx.GraphModule(module, graph, class_name="EagerSmooth")
    _EAGER_GRAPHS[module] = gm
    return gm


class SmoothEvaluator:
    """Value and gradient of the smooth part for one solve, with the interface of
    ``FusedSmooth`` (``grad`` returns the gradients and remembers the value at that point).
    Eager (autograd on ``eager_graph``) until the eager time spent on this structure reaches
    ``expected_trace_seconds()``, then the traced graphs; already traced structures start traced.
    ``trace_seconds``: time this solve spent tracing (reported apart from the iterations)."""

    def __init__(self, module: fx.GraphModule, var_names: list[str], x0: list[torch.Tensor]):
        self._module = module
        self._var_names = var_names
        buf_names, extra = _buffers(module)
        self._key = _structure_key(module, var_names, buf_names, [x.detach() for x in x0], extra)
        self._forward = eager_graph(module, var_names).forward
        self._fused: FusedSmooth | None = None
        self._spent = 0.0  # eager seconds in this solve
        self._last: tuple[list[torch.Tensor], torch.Tensor] | None = None
        self.trace_seconds = 0.0
        pair = _CACHE.get(self._key)
        if MODE == "trace" or (MODE == "auto" and pair is not None):
            self._switch(x0)
        POLICY["traced_solves" if self._fused is not None else "eager_solves"] += 1

    @property
    def traced(self) -> bool:
        return self._fused is not None

    def _switch(self, xs: list[torch.Tensor]) -> None:
        self._fused, seconds = _timed_trace(lambda: FusedSmooth.trace(self._module, self._var_names, list(xs)))
        self.trace_seconds += seconds
        if self._fused is None:  # not traceable: eager for good in this solve
            self._spent = -float("inf")

    def _maybe_switch(self, xs: list[torch.Tensor]) -> None:
        if MODE != "auto":
            return
        cost = expected_trace_seconds()
        untraceable = self._key in _CACHE and _CACHE[self._key] is None  # would be re-traced per solve
        total = self._spent if untraceable else _EAGER_SECONDS.get(self._key, 0.0)
        if total >= cost:
            POLICY["switches"] += 1
            self._switch(xs)

    def _account(self, seconds: float) -> None:
        self._spent += seconds
        _EAGER_SECONDS[self._key] = _EAGER_SECONDS.get(self._key, 0.0) + seconds
        _EAGER_SECONDS.move_to_end(self._key)
        while len(_EAGER_SECONDS) > 4 * CACHE_SIZE:
            _EAGER_SECONDS.popitem(last=False)

    def grad(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._fused is not None:
            return self._fused.grad(xs)
        t0 = time.perf_counter()
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in xs]
            value = self._forward(*leaves)
            if isinstance(value, torch.Tensor) and value.requires_grad:
                grads = torch.autograd.grad(value, leaves, allow_unused=True)
            else:
                grads = (None,) * len(leaves)
        value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=xs[0].dtype)
        out = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, xs)]
        self._last = (list(xs), value)
        self._account(time.perf_counter() - t0)
        self._maybe_switch(xs)
        return out

    def value(self, xs: list[torch.Tensor]) -> torch.Tensor:
        last = self._last
        if last is not None and len(last[0]) == len(xs) and all(a is b for a, b in zip(last[0], xs)):
            return last[1]  # the value at the point of the last eager gradient
        if self._fused is not None:
            return self._fused.value(xs)
        t0 = time.perf_counter()
        with torch.no_grad():
            value = self._forward(*xs)
        self._account(time.perf_counter() - t0)
        return value


def smooth_evaluator(module: fx.GraphModule, var_names: list[str], x0: list[torch.Tensor]) -> SmoothEvaluator:
    """The smooth part's value and gradient for one solve: eager or traced, as pays (see the
    module docstring)."""
    return SmoothEvaluator(module, var_names, x0)


# ---------------------------------------------------------------- linear maps (PDHG blocks)
_EAGER_OPERATOR_SECONDS = {"seconds": 0.0}  # eager time in LazyGraph calls, this process


def linear_adjoint(fn: Callable[..., torch.Tensor], zeros: list[torch.Tensor]
                   ) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """``y -> (J_1^T y, ..., J_k^T y)`` for the affine map ``fn`` (J its Jacobian, the same at
    every point), by plain autograd on one forward graph recorded at ``zeros`` and kept
    (``retain_graph``). Not ``torch.func.vjp``: calling a functorch vjp imports torch._dynamo
    (seconds), which a one-off solve must not pay. ``make_fx`` traces this function into the same
    aten graph as the functorch one. Inputs the map does not use get zero cotangents."""
    leaves = [z.detach().requires_grad_(True) for z in zeros]
    with torch.enable_grad():
        out = fn(*leaves)

    def adjoint(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return tuple(torch.zeros_like(z) for z in zeros)
        grads = torch.autograd.grad(out, leaves, grad_outputs=y, retain_graph=True, allow_unused=True)
        return tuple(g if g is not None else torch.zeros_like(z) for g, z in zip(grads, zeros))

    return adjoint


class LazyGraph:
    """A callable run eagerly until the process's eager time in such callables reaches the
    expected trace cost, then replaced by its ``make_fx`` graph (dead code removed), traced on
    ``example`` (real tensors: these maps are linear, their control flow does not depend on
    values). PDHG's K and K^T are built per solve: a one-off solve stays eager and never
    imports the graph-capture stack; a long run or a process that solves many problems traces.
    A failed trace keeps the eager callable."""

    def __init__(self, fn: Callable, example: list[torch.Tensor]):
        self._fn = fn
        self._example = [e.detach() for e in example]
        self._graph: Callable | None = None
        self._failed = False
        if MODE == "trace":
            self._trace()

    @property
    def traced(self) -> bool:
        return self._graph is not None

    def _trace(self) -> None:
        from torch.fx.experimental.proxy_tensor import make_fx

        def trace() -> fx.GraphModule | None:
            try:
                gm = make_fx(self._fn)(*self._example)
            except Exception:  # noqa: BLE001 - any tracing failure keeps the eager callable
                return None
            gm.graph.eliminate_dead_code()
            gm.recompile()
            return gm

        self._graph, _ = _timed_trace(trace)
        self._failed = self._graph is None

    def __call__(self, *args: torch.Tensor):
        if self._graph is not None:
            return self._graph(*args)
        t0 = time.perf_counter()
        out = self._fn(*args)
        _EAGER_OPERATOR_SECONDS["seconds"] += time.perf_counter() - t0
        if MODE == "auto" and not self._failed and _EAGER_OPERATOR_SECONDS["seconds"] >= expected_trace_seconds():
            self._trace()
        return out
