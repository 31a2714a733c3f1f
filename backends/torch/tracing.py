"""Straight-line aten graphs for the smooth part's value and gradient (``make_fx``), cached.

The smooth part is an fx GraphModule whose data and parameters are buffers. It is traced as a
function of (variables, buffers), so one trace serves every solve of the same structure: a
re-solve with new parameter values (a sweep), a re-load of the same spec, the cross-check. The
cache key is the GraphModule's generated code plus the shape, dtype and device of every input;
values are not part of it. The trace runs on fake tensors, so a lowering whose Python control
flow depends on data values cannot be traced this way (it raises) and is traced once more on the
real values with the buffers baked in, uncached, as before.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import fx
from torch.func import functional_call

CACHE_SIZE = 32
_CACHE: OrderedDict[tuple, tuple[fx.GraphModule, fx.GraphModule] | None] = OrderedDict()
STATS = {"hits": 0, "misses": 0, "baked": 0}  # baked: traced on real values, uncached


def clear_cache() -> None:
    _CACHE.clear()
    STATS.update(hits=0, misses=0, baked=0)


def _signature(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.device.type, t.device.index


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
        buffers = dict(module.named_buffers())  # data and parameters (variables are nn.Parameters)
        buf_names = list(buffers)
        extra = [b.detach() for b in buffers.values()]
        n = len(x0)
        xs = [x.detach() for x in x0]
        key = (module.code, tuple(var_names), tuple(buf_names), tuple(_signature(t) for t in xs + extra))

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
