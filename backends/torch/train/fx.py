"""torch.fx helpers: tracing, activation taps, activation rewrites.

Taps. ``insert_taps(model, patterns)`` returns a ``TappedModel`` whose ``forward`` returns what
the model returns and leaves the tapped tensors in ``tapped.taps`` (a fresh ``{name: tensor}``
dict per call, in execution order; a module called k > 1 times yields ``name``, ``name#1``, ...;
a tuple output is tapped as its first element, a dict or transformers' ``ModelOutput`` as its
``logits`` or first value: ``_util.primary_tensor``). Patterns are module-name selectors (see
``selectors``) or, on the fx path, names of graph nodes (``"relu_1"``, ``"add"``). Two paths:

- **fx** (preferred): the model is traced (the tracer records the output node of each call of a
  tapped module, whether it is a leaf ``call_module`` node or a traced-through user module, so
  nested taps such as ``blocks.*`` and ``blocks.0.ff.1`` coexist), and the graph's output
  becomes ``(output, (tap_0, tap_1, ...))``; the GraphModule stays pure (no side effects),
  ``TappedModel`` unpacks the pair. ``tapped.graph_module.code`` shows it. A tapped value that
  a later node overwrites in place (``nn.ReLU(inplace=True)`` after a BatchNorm, torchvision's
  convention) is tapped through a ``clone`` node inserted before that write.
- **hooks** (fallback, or ``prefer="hooks"``): forward hooks on the matched modules, used when
  tracing fails (data-dependent Python control flow, unsupported ops) or when a tapped module
  has no output node in the graph (a child of a torch.nn leaf module such as
  ``nn.MultiheadAttention.out_proj``; such a child is often not called as a module at all, and
  then no hook fires either and its tap stays absent: ``regspec plan``/``compile``/``train`` run one
  batch through the tapped model and refuse such a term, see ``probe``). Node names cannot be
  tapped on this path. A hook cannot see whether the forward will overwrite the output in place
  later, so it keeps a copy of it (``clone``, through which gradients flow).

``tapped.tap_path`` is ``"fx"`` or ``"hooks"`` and ``tapped.tap_reason`` says why. The
``TappedModel`` registers the *same* submodules and root parameters as the model, so its
``named_parameters()`` and ``state_dict()`` keys equal the model's and selectors, optimizers and
checkpoints can use either. Known fx caveat: Python-level branches on ``self.training`` inside
traced-through (non-leaf) user modules are frozen at trace time; torch.nn modules (Dropout,
BatchNorm) are leaves and keep switching.

Rewrites. ``rewrite_activations(model, "GELU", "ReLU")`` swaps modules of class ``GELU`` in
place and, when the model traces, also calls of the functional form (``F.gelu``) in the graph.
"""
from __future__ import annotations

import copy
import operator
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from regspec.diagnostics import RegspecError, Span, did_you_mean, error

from ._util import primary_tensor
from .models import ACTIVATIONS, make_activation
from .selectors import match_names, select_modules

__all__ = ["trace", "insert_taps", "TappedModel", "rewrite_activations", "FUNCTIONAL_ACTIVATIONS"]


class _TapTracer(fx.Tracer):
    """fx tracer that keeps ``leaves`` as single nodes and records the output proxy of every call
    of the modules named in ``watch`` (leaf or traced-through), in call order."""

    def __init__(self, leaves: Iterable[str] = (), watch: Iterable[str] = ()):
        super().__init__()
        self.leaves = set(leaves)
        self.watch = set(watch)
        self.outputs: dict[str, list[Any]] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.leaves or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        if self.watch:
            try:
                name = self.path_of_module(m)
            except NameError:
                return out
            if name in self.watch:
                self.outputs.setdefault(name, []).append(primary_tensor(out))
        return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _trace(model: nn.Module, leaves: Iterable[str] = (), watch: Iterable[str] = ()
           ) -> tuple[fx.GraphModule | None, str, dict[str, list[Any]]]:
    tracer = _TapTracer(leaves, watch)
    try:
        graph = tracer.trace(model)
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__ + "Traced")
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "use hooks"
        return None, _reason(exc), {}
    return gm, "traced", tracer.outputs


def trace(model: nn.Module, leaf_modules: Iterable[str] = ()) -> tuple[fx.GraphModule | None, str]:
    """Symbolically trace ``model`` (``leaf_modules``: qualified names kept as single nodes).

    Returns ``(graph_module, "traced")`` or ``(None, reason)`` where ``reason`` is the tracing
    error's first line (e.g. data-dependent control flow). Never raises for untraceable models.
    """
    gm, reason, _ = _trace(model, leaf_modules)
    return gm, reason


class TappedModel(nn.Module):
    """A model whose forward also records activation taps into ``self.taps`` (see module doc).

    Attributes: ``original`` (the model, not registered as a child), ``graph_module`` (fx path)
    or ``None``, ``tap_path`` (``"fx"`` | ``"hooks"``), ``tap_reason``, ``targets`` (tapped
    module or node names), ``taps`` (filled by the last forward).
    """

    def __init__(self, original: nn.Module, impl: nn.Module, path: str, reason: str,
                 targets: list[str], keys: list[str] | None = None):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        for name, p in original.named_parameters(recurse=False):
            self.register_parameter(name, p)
        non_persistent = getattr(original, "_non_persistent_buffers_set", set())
        for name, b in original.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in non_persistent)
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "_impl", impl)
        self.tap_path = path
        self.tap_reason = reason
        self.targets = list(targets)
        self._keys = keys or []
        self._counts: dict[str, int] = {}
        self._hooks: list[Any] = []
        self.taps: dict[str, torch.Tensor] = {}
        #: whether the last call of ``original`` came through this wrapper (None: no call yet);
        #: a direct ``original(x)`` records no taps (fx) or adds to stale ones (hooks)
        self.last_call_tapped: bool | None = None
        self._inside = False
        self.training = original.training  # submodules keep their own modes
        self._hooks.append(original.register_forward_pre_hook(self._note_direct_call))

    @property
    def graph_module(self) -> fx.GraphModule | None:
        return self._impl if self.tap_path == "fx" else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.taps = {}
        self.last_call_tapped = True
        if self.tap_path == "fx":
            out, values = self._impl(*args, **kwargs)
            for key, v in zip(self._keys, values):
                self.taps[key] = primary_tensor(v)
            return out
        self._counts = {}
        self._inside = True
        try:
            return self.original(*args, **kwargs)
        finally:
            self._inside = False

    def _note_direct_call(self, _module: nn.Module, _args: Any) -> None:
        if not self._inside:
            self.last_call_tapped = False

    def _record(self, name: str, value: Any) -> None:
        k = self._counts.get(name, 0)
        self._counts[name] = k + 1
        t = primary_tensor(value)
        # a copy: the forward may still modify the module's output in place (ReLU(inplace=True),
        # `out += identity`), which a hook cannot see coming; clone passes gradients through
        self.taps[name if k == 0 else f"{name}#{k}"] = t.clone() if isinstance(t, torch.Tensor) else t

    def train(self, mode: bool = True) -> "TappedModel":
        super().train(mode)
        self.original.training = mode
        self._impl.train(mode)
        return self

    def remove(self) -> None:
        """Remove forward hooks (hooks path); the model is left as it was."""
        for h in self._hooks:
            h.remove()
        self._hooks = []


def _node_names(gm: fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]


def insert_taps(
    model: nn.Module, patterns: str | Sequence[str], *, prefer: str = "fx", span: Span | None = None
) -> TappedModel:
    """Tap the outputs of the modules (or fx nodes) matched by ``patterns``.

    ``prefer="fx"`` traces when possible and falls back to forward hooks; ``prefer="hooks"``
    always uses hooks. A pattern matching neither a module nor (fx path) a graph node raises a
    ``RegspecError`` with the closest names.
    """
    if prefer not in ("fx", "hooks"):
        raise error(f"insert_taps: prefer must be 'fx' or 'hooks', got {prefer!r}", span)
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    if not pats:
        raise error("insert_taps: no tap patterns given", span)
    module_names = [n for n, _ in model.named_modules() if n]
    module_targets: list[str] = []
    node_patterns: list[tuple[str, RegspecError]] = []
    for pat in pats:
        hits = match_names(module_names, pat, span)
        if hits:
            module_targets.extend(h for h in hits if h not in module_targets)
        else:
            try:
                select_modules(model, pat, span=span)
            except RegspecError as exc:
                node_patterns.append((pat, exc))

    reason = "hooks requested (prefer='hooks')"
    if prefer == "fx":
        gm, reason, outputs = _trace(model, watch=module_targets)
        if gm is not None:
            tapped = _fx_taps(model, gm, module_targets, outputs, node_patterns, span)
            if tapped is not None:
                return tapped
            reason = ("a tapped module has no output node in the traced graph (it is called inside a "
                      "torch.nn leaf module, never called, or returns a non-tensor)")
        else:
            reason = f"tracing failed: {reason}"
    if node_patterns:
        pat, exc = node_patterns[0]
        d = exc.first
        raise error(
            f"`{pat}` matches no module, and graph nodes can only be tapped on a traceable model",
            span, [*d.notes, reason],
        )
    tapped = TappedModel(model, model, "hooks", reason, module_targets)
    modules = dict(model.named_modules())
    for name in module_targets:
        def hook(_mod: nn.Module, _inp: Any, out: Any, _name: str = name) -> None:
            tapped._record(_name, out)
        tapped._hooks.append(modules[name].register_forward_hook(hook))
    return tapped


#: torch functions that write into their first argument
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, torch.relu_,
                      F.relu_, F.leaky_relu_, F.elu_, F.hardtanh_, F.threshold_}


def _mutates(gm: fx.GraphModule, user: fx.Node, value: fx.Node) -> bool:
    """Whether graph node ``user`` writes into ``value`` in place: a module built with
    ``inplace=True`` (``nn.ReLU(inplace=True)``, torchvision's convention), a trailing-underscore
    tensor method (``x.add_(y)``), an in-place function, or ``inplace=True`` passed to a call."""
    first = user.args[0] if user.args else None
    if first is not value:
        return False
    if user.op == "call_module":
        return bool(getattr(gm.get_submodule(str(user.target)), "inplace", False))
    if user.op == "call_method":
        name = str(user.target)
        return name.endswith("_") and not name.startswith("_")
    if user.op == "call_function":
        return user.target in _INPLACE_FUNCTIONS or bool(user.kwargs.get("inplace", False))
    return False


def _fx_taps(model: nn.Module, gm: fx.GraphModule, module_targets: list[str],
             outputs: dict[str, list[Any]], node_patterns: list[tuple[str, RegspecError]],
             span: Span | None) -> TappedModel | None:
    graph = gm.graph
    keys_of: dict[fx.Node, list[str]] = {}
    for name in module_targets:
        recorded = outputs.get(name)
        if not recorded or not all(isinstance(p, fx.Proxy) for p in recorded):
            return None
        for k, proxy in enumerate(recorded):
            keys_of.setdefault(proxy.node, []).append(name if k == 0 else f"{name}#{k}")
    names = _node_names(gm)
    node_hits: list[str] = []
    for pat, exc in node_patterns:
        hits = match_names(names, pat, span)
        if not hits:
            notes = list(exc.first.notes)
            notes += did_you_mean(pat, names)
            shown = ", ".join(f"`{n}`" for n in names[:12]) + (", ..." if len(names) > 12 else "")
            notes.append(f"graph node names: {shown}")
            raise error(f"`{pat}` matches no module and no node of the traced graph", span, notes)
        node_hits.extend(h for h in hits if h not in node_hits)
    by_name = {n.name: n for n in graph.nodes}
    for h in node_hits:
        keys_of.setdefault(by_name[h], []).append(h)
    nodes: list[fx.Node] = []
    keys: list[str] = []
    for n in list(graph.nodes):  # execution order
        tap = n
        if keys_of.get(n) and any(_mutates(gm, user, n) for user in n.users):
            with graph.inserting_after(n):   # the value before an in-place op overwrites it
                tap = graph.call_method("clone", (n,))
        for key in keys_of.get(n, []):
            nodes.append(tap)
            keys.append(key)
    out = next(n for n in graph.nodes if n.op == "output")
    out.args = ((out.args[0], tuple(nodes)),)
    graph.lint()
    gm.recompile()
    return TappedModel(model, gm, "fx", "traced", module_targets + node_hits, keys)


# ---------------------------------------------------------------------------------------------
# rewrites

#: activation name -> (functional replacement, functions recognized as calls of it, method names)
FUNCTIONAL_ACTIVATIONS: dict[str, tuple[Callable[..., torch.Tensor] | None, set[Any], set[str]]] = {
    "relu": (F.relu, {F.relu, torch.relu, F.relu_, torch.relu_}, {"relu", "relu_"}),
    "gelu": (F.gelu, {F.gelu}, set()),
    "silu": (F.silu, {F.silu}, set()),
    "tanh": (torch.tanh, {torch.tanh, F.tanh}, {"tanh", "tanh_"}),
    "sigmoid": (torch.sigmoid, {torch.sigmoid, F.sigmoid}, {"sigmoid", "sigmoid_"}),
    "identity": (None, set(), set()),
    "fatrelu": (None, set(), set()),
}


def _dst_factory(dst: str | nn.Module | Callable[[], nn.Module], kwargs: dict[str, Any],
                 span: Span | None) -> tuple[Callable[[], nn.Module], Callable[..., Any] | None, str]:
    if isinstance(dst, str):
        make_activation(dst, span, **kwargs)  # validate now
        key = dst.lower()
        fn = FUNCTIONAL_ACTIVATIONS.get(key, (None, set(), set()))[0] if not kwargs else None
        return (lambda: make_activation(key, span, **kwargs)), fn, dst
    if isinstance(dst, nn.Module):
        return (lambda: copy.deepcopy(dst)), None, type(dst).__name__
    if callable(dst):
        return (lambda: dst(**kwargs)), None, getattr(dst, "__name__", "module")
    raise error(f"rewrite target must be an activation name or module, got {type(dst).__name__}", span)


def rewrite_activations(
    model: nn.Module, src: str | type, dst: str | nn.Module | Callable[[], nn.Module], *,
    span: Span | None = None, **dst_kwargs: Any
) -> tuple[nn.Module, int]:
    """Replace activation ``src`` by ``dst`` everywhere in ``model``; return ``(model', count)``.

    1. Every submodule whose class name is ``src`` (case-insensitive, e.g. ``GELU``) is replaced
       **in place** by a fresh ``dst`` module (its train/eval mode kept).
    2. If the model traces, calls of ``src``'s functional forms (``F.gelu``; ``torch.relu``,
       ``x.relu()``...) in the graph become calls of ``dst`` (its functional form, or a new
       submodule ``_rewrite_N``); then ``model'`` is the rewritten ``GraphModule``, else ``model``.

    ``dst`` is an activation name (``"relu"``, ``"fatrelu"`` with ``threshold=``), a module to
    copy, or a factory. Zero replacements raise ``RegspecError``.
    """
    src_name = src.__name__ if isinstance(src, type) else str(src)
    key = src_name.lower()
    make_dst, dst_fn, dst_label = _dst_factory(dst, dict(dst_kwargs), span)
    count = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            matches = isinstance(child, src) if isinstance(src, type) else type(child).__name__.lower() == key
            if matches:
                new = make_dst()
                new.train(child.training)
                setattr(parent, child_name, new)
                count += 1
    fn_targets: set[Any] = set()
    methods: set[str] = set()
    if key in FUNCTIONAL_ACTIVATIONS:
        _, fn_targets, methods = FUNCTIONAL_ACTIVATIONS[key]
    elif isinstance(src, type) and src.__name__.lower() in FUNCTIONAL_ACTIVATIONS:
        _, fn_targets, methods = FUNCTIONAL_ACTIVATIONS[src.__name__.lower()]
    gm, reason = trace(model) if (fn_targets or methods) else (None, f"`{src_name}` has no functional form")
    n_nodes = 0
    if gm is not None:
        graph = gm.graph
        for node in list(graph.nodes):
            hit = (node.op == "call_function" and node.target in fn_targets) or (
                node.op == "call_method" and node.target in methods)
            if not hit:
                continue
            x = node.args[0] if node.args else node.kwargs.get("input")
            with graph.inserting_after(node):
                if dst_fn is not None:
                    new = graph.call_function(dst_fn, (x,))
                else:
                    sub = f"_rewrite_{n_nodes}"
                    gm.add_submodule(sub, make_dst())
                    new = graph.call_module(sub, (x,))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            n_nodes += 1
        if n_nodes:
            graph.lint()
            gm.recompile()
    total = count + n_nodes
    if total == 0:
        present = list(dict.fromkeys(type(m).__name__ for _, m in model.named_modules()))
        notes = did_you_mean(src_name, [*present, *ACTIVATIONS])
        notes.append("module types in the model: " + ", ".join(present))
        if gm is None:
            notes.append(f"functional calls were not inspected: {reason}")
        raise error(f"rewrite {src_name} -> {dst_label}: nothing matched (no `{src_name}` module"
                    + (" and no call of its function in the traced graph)" if gm is not None else ")"), span, notes)
    return (gm if n_nodes else model), total
