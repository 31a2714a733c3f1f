"""IR -> torch: the variables become parameters of a generated module, and torch.fx graphs compute
the smooth part of the objective and the full objective. The nonsmooth parts become prox and
projection steps (``ProxStep``) bound to their variables, the same kernels training uses."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from regspec.compiler.catalogue import ATOMS, SETS
from regspec.compiler.evaluate import evaluate
from regspec.compiler.ir import IR
from regspec.compiler.passes.split import Split, Term
from regspec.diagnostics import Diagnostic, RegspecError
from regspec.hints import refusal_hint


def atom_call(atom: str, *args: Any, **kw: Any) -> Any:
    """The single fx call target for catalogue atoms: ``atom_call("norm1", x)``. Keeping one
    importable function makes generated graphs print and pickle as plain Python."""
    return ATOMS[atom].torch(list(args), kw)


def scaled(x: torch.Tensor, sign: float, *factors: Any) -> torch.Tensor:
    """sign * x * f1^e1 * ...; factors come in (value, exponent) pairs flattened."""
    out = x * sign
    for value, exponent in zip(factors[::2], factors[1::2]):
        out = out * value if exponent > 0 else out / value
    return out


def fx_literal(value: Any) -> Any:
    """``value`` as an argument fx can print into generated code: NumPy scalars of every kind become
    Python ``bool``/``int``/``float`` (``np.float64`` subclasses ``float`` and would print as
    ``np.float64(...)``, a name the generated module does not have), recursively through tuples,
    lists and dicts; fx nodes, tensors and other values pass through."""
    if isinstance(value, fx.Node):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple):
        return tuple(fx_literal(v) for v in value)
    if isinstance(value, list):
        return [fx_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: fx_literal(v) for k, v in value.items()}
    return value


def quiet_errors(gm: fx.GraphModule) -> fx.GraphModule:
    """Calls of ``gm`` raise their errors without fx printing the generated source and a traceback
    to stderr (fx does that for any error raised in generated code); the CLI reports the error
    itself, and shows tracebacks only under ``REGSPEC_DEBUG``. Each GraphModule has its own class,
    so this touches ``gm`` alone."""
    if os.environ.get("REGSPEC_DEBUG"):
        return gm
    cls = type(gm)

    def plain_call(self: fx.GraphModule, obj: fx.GraphModule, *args: Any, **kwargs: Any) -> Any:
        return torch.nn.Module.__call__(obj, *args, **kwargs)

    cls._wrapped_call = plain_call
    return gm


def _as_tensor(value: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    arr = np.asarray(value)
    if arr.dtype == bool:
        return torch.as_tensor(arr, device=device)
    if arr.dtype.kind in "iu":
        return torch.as_tensor(arr, dtype=torch.long, device=device)
    return torch.as_tensor(arr, dtype=dtype, device=device)


@dataclass
class ProxStep:
    """One nonsmooth piece bound to one variable: ``x <- kernel(x, step * weight, **hyper)``."""

    var: str
    kernel: str
    weight_node: Term | None       # None for projections (weight 1)
    hyper: dict[str, Any]
    source: int                    # IR node (for explain and errors)
    kind: str                      # prox | projection
    pre: "ProxStep | None" = None  # a projection applied first: prox_{f + i_C} = prox_f o proj_C


@dataclass
class TorchProgram:
    ir: IR
    module: torch.nn.Module                  # holds variables (parameters), data and params (buffers)
    smooth: fx.GraphModule                   # forward() -> smooth part of the objective (minimized)
    objective: fx.GraphModule                # forward() -> the objective as the spec states it
    steps: list[ProxStep]                    # FISTA: every nonsmooth piece; PDHG: the pieces of g
    split: Split
    dtype: torch.dtype
    device: torch.device
    var_names: list[str] = field(default_factory=list)
    operators: list = field(default_factory=list)  # PDHG: LoweredOperator per dual block

    @property
    def algorithm(self) -> str:
        return self.split.algorithm

    def variables(self) -> list[torch.nn.Parameter]:
        return [getattr(self.module, f"var_{n}") for n in self.var_names]

    def set_params(self, values: dict[str, np.ndarray]) -> None:
        for name, v in values.items():
            getattr(self.module, f"param_{name}").copy_(torch.as_tensor(v, dtype=self.dtype))


class _GraphEmitter:
    """Emits IR nodes into one fx graph, memoizing shared subexpressions (lets stay shared)."""

    def __init__(self, program_root: torch.nn.Module, ir: IR, dtype: torch.dtype, device: torch.device):
        self.root = program_root
        self.ir = ir
        self.dtype = dtype
        self.device = device
        self.graph = fx.Graph()
        self.memo: dict[int, Any] = {}

    def call(self, fn: Any, args: tuple, kwargs: dict[str, Any] | None = None) -> fx.Node:
        """``graph.call_function`` with every literal argument made printable (``fx_literal``)."""
        return self.graph.call_function(fn, fx_literal(tuple(args)), fx_literal(dict(kwargs or {})))

    def constant(self, key: str, value: Any) -> Any:
        if isinstance(value, (int, float, bool, str, np.generic)) or value is None:
            return fx_literal(value)
        name = f"const_{key}"
        if not hasattr(self.root, name):
            self.root.register_buffer(name, _as_tensor(value, self.dtype, self.device))
        return self.graph.get_attr(name)

    def static(self, key: str, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(self.static(f"{key}_{i}", v) for i, v in enumerate(value))
        if isinstance(value, np.ndarray):
            return self.constant(key, value)
        return fx_literal(value)

    def emit(self, node: int) -> Any:
        if node in self.memo:
            return self.memo[node]
        d = self.ir[node]
        kind = d["kind"]
        if kind == "var":
            out = self.graph.get_attr(f"var_{d['name']}")
        elif kind == "param":
            out = self.graph.get_attr(f"param_{d['name']}")
        elif "value" in d:
            out = self.constant(str(node), d["value"])
        elif kind == "call":
            args = tuple(self.operand(a) for a in d["args"])
            kw = {k: self.static(f"{node}_{k}", v) for k, v in d.get("static", {}).items()}
            kw.update({k: self.emit(v) for k, v in d.get("tensor_kwargs", {}).items()})
            out = self.call(atom_call, (d["atom"], *args), kw)
        else:
            raise ValueError(f"cannot lower {self.ir.label(node)} to torch")
        self.memo[node] = out
        return out

    def operand(self, node: int) -> Any:
        """An atom's positional argument. An integer or boolean constant array (a literal such as
        ``[[1, 0], [0, 1]]``) is a number there, in the problem's dtype: torch's ``@`` and ``dot``
        do not promote a long operand (index and label arrays travel as keywords and stay long)."""
        value = self.ir[node].get("value")
        if isinstance(value, np.ndarray) and value.dtype.kind in "biu" and self.ir[node]["kind"] != "var":
            name = f"const_{node}_numeric"
            if not hasattr(self.root, name):
                self.root.register_buffer(name, torch.as_tensor(value, dtype=self.dtype, device=self.device))
            return self.graph.get_attr(name)
        return self.emit(node)

    def term(self, t: Term) -> Any:
        factors: list[Any] = []
        for n, e in t.scale:
            factors += [self.emit(n), e]
        return self.call(scaled, (self.emit(t.core), t.sign, *factors))

    def finish(self, value: Any) -> fx.GraphModule:
        if not isinstance(value, fx.Node):
            value = self.call(torch.as_tensor, (value,), {"dtype": self.dtype})
        self.graph.output(value)
        return quiet_errors(fx.GraphModule(self.root, self.graph, class_name="SmoothObjective"))


def _sum_nodes(em: _GraphEmitter, values: list[Any]) -> Any:
    if not values:
        return 0.0
    out = values[0]
    for v in values[1:]:
        out = em.call(torch.add, (out, v))
    return out


def refuse(ir: IR, split: Split) -> RegspecError:
    """The located refusal of a spec the torch backend cannot lower (one diagnostic per reason)."""
    diags = [Diagnostic(f"the torch backend cannot lower this: {why}", ir[node]["span"])
             for why, node in split.refusals]
    diags[-1].notes.append(refusal_hint(ir, "torch"))
    return RegspecError(diags)


def _kernel_hyper(ir: IR, core: dict[str, Any], dtype: torch.dtype, device: torch.device,
                  params: dict[str, np.ndarray] | None = None, sep: Any = None) -> dict[str, Any]:
    """Kernel keywords of a prox term from the atom's evaluated keywords (``Atom.prox_hyper``);
    tensor keywords are evaluated at ``params`` (a weight may be a parameter)."""
    if sep is not None:  # the term's separable prox (split.Term.prox): the kernel's own atom node
        from regspec.compiler.passes.structure import prox_hyper

        return {k: (_as_tensor(v, dtype, device) if isinstance(v, np.ndarray) else v)
                for k, v in prox_hyper(ir, sep, params).items()}
    atom = ATOMS[core["atom"]]
    kw = dict(core.get("static", {}))
    for k, v in core.get("tensor_kwargs", {}).items():
        kw[k] = np.asarray(evaluate(ir, v, params or {}))
    if hasattr(atom, "prox_hyper"):
        shapes = [tuple(ir[a]["shape"]) for a in core["args"]]
        hyper = atom.prox_hyper(kw, shapes)
    else:
        hyper = {k: kw[n] for k, n in atom.prox.hyper if kw.get(n) is not None}
    return {k: (_as_tensor(v, dtype, device) if isinstance(v, np.ndarray) else v) for k, v in hyper.items()}


def _check_kernel(ir: IR, name: str | None, node: int, what: str) -> None:
    from regspec.backends.torch.prox import KERNELS

    if name is None or name not in KERNELS:
        why = f"the torch backend has no kernel `{name}` for {what}"
        raise RegspecError([Diagnostic(why, ir[node]["span"], notes=[refusal_hint(ir, "torch", why)])])


def lower(ir: IR, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
          init: dict[str, np.ndarray] | None = None) -> TorchProgram:
    """IR -> TorchProgram. FISTA programs bind every nonsmooth piece to its variable; PDHG programs
    bind the pieces of g (one per variable) and lower each operator term to an fx GraphModule of
    its affine expression (``pdhg_lowering``). A spec neither can take raises a located
    RegspecError."""
    split: Split = ir.meta["split"]
    if split.algorithm == "none":
        raise refuse(ir, split)
    if split.algorithm == "conic":  # DCP, no fast path: CVXPY's conic form, solved in torch
        from regspec.backends.torch.conic.program import lower_conic

        return lower_conic(ir, dtype=dtype, device=device)
    device = torch.device(device)
    root = torch.nn.Module()
    var_names = []
    for n in ir.nodes_of("var"):
        d = ir[n]
        start = (init or {}).get(d["name"])
        value = torch.zeros(d["shape"], dtype=dtype, device=device) if start is None else \
            torch.as_tensor(start, dtype=dtype, device=device).clone()
        root.register_parameter(f"var_{d['name']}", torch.nn.Parameter(value))
        var_names.append(d["name"])
    for n in ir.nodes_of("param"):
        d = ir[n]
        root.register_buffer(f"param_{d['name']}", torch.as_tensor(d["value"], dtype=dtype, device=device))

    smooth_em = _GraphEmitter(root, ir, dtype, device)
    smooth = smooth_em.finish(_sum_nodes(smooth_em, [smooth_em.term(t) for t in split.smooth]))

    obj_em = _GraphEmitter(root, ir, dtype, device)
    root_expr = obj_em.emit(ir[ir.objective()]["args"][0])
    sense = ir[ir.objective()]["sense"]
    regs = [obj_em.emit(ir[r]["args"][0]) for r in ir.nodes_of("regularize")]
    total = root_expr
    for r in regs:
        total = obj_em.call(torch.add if sense == "minimize" else torch.sub, (total, r))
    objective = obj_em.finish(total)

    pdhg = split.algorithm == "pdhg"
    entropic = split.algorithm == "sinkhorn"  # backends/torch/sinkhorn.py: no prox steps
    steps: list[ProxStep] = []
    for t in ([] if entropic else split.g_prox if pdhg else split.prox):
        core = ir[t.core]
        _check_kernel(ir, t.kernel, t.core, f"`{ir.text(t.core)}`")
        steps.append(ProxStep(ir[t.var]["name"], t.kernel, t, _kernel_hyper(ir, core, dtype, device, sep=t.prox),
                              t.core, "prox"))
    for p in ([] if entropic else split.g_projections if pdhg else split.projections):
        s = ir[p.set_node]
        _check_kernel(ir, p.kernel, p.source, f"the set {s['set']}")
        raw = SETS[s["set"]].kernel_hyper(s["static"]) if p.hyper is None else p.hyper
        hyper = {k: (_as_tensor(v, dtype, device) if isinstance(v, np.ndarray) else v) for k, v in raw.items()}
        steps.append(ProxStep(ir[p.var]["name"], p.kernel, None, hyper, p.source, "projection"))
    steps = _combine(steps)
    operators = []
    if pdhg:
        from regspec.backends.torch.pdhg_lowering import lower_operators

        operators = lower_operators(ir, split, root, dtype, device, var_names)
        for lowered in operators:
            quiet_errors(lowered.expr)
    return TorchProgram(ir, root, smooth, objective, steps, split, dtype, device, var_names, operators)


def _combine(steps: list[ProxStep]) -> list[ProxStep]:
    """Merge a prox and a projection on one variable into their joint closed-form prox."""
    from regspec.compiler.passes.split import COMBINED

    by_var: dict[str, list[ProxStep]] = {}
    for s in steps:
        by_var.setdefault(s.var, []).append(s)
    out = []
    for var, group in by_var.items():
        if len(group) == 2:
            prox = next(s for s in group if s.kind == "prox")
            proj = next(s for s in group if s.kind == "projection")
            joint = COMBINED[(prox.kernel, proj.kernel)]
            if isinstance(joint, tuple):  # ("after", projection): prox of f after the projection
                out.append(ProxStep(var, prox.kernel, prox.weight_node, prox.hyper, prox.source, "prox", pre=proj))
            else:
                out.append(ProxStep(var, joint, prox.weight_node, prox.hyper, prox.source, "prox"))
        else:
            out.extend(group)
    return out


def step_hyper(program: TorchProgram, step: ProxStep, params: dict[str, np.ndarray]) -> dict[str, Any]:
    """The kernel keywords of a prox step at the given parameter values: recomputed when a tensor
    keyword of its atom depends on a parameter (``--set`` changes it), else the lowered ones."""
    ir = program.ir
    if step.kind != "prox" or step.weight_node is None:
        return step.hyper
    sep = step.weight_node.prox
    core = ir[step.source if sep is None else sep.node]
    if not any(ir.depends_on_kind(v, "param") for v in core.get("tensor_kwargs", {}).values()):
        return step.hyper
    return _kernel_hyper(ir, core, program.dtype, program.device, params, sep=sep)


def term_weight(program: TorchProgram, step: ProxStep, params: dict[str, np.ndarray]) -> float:
    """The nonnegative weight sign * prod(scale) of a prox term, at the current parameter values."""
    t = step.weight_node
    if t is None:
        return 1.0
    w = t.sign
    for n, e in t.scale:
        v = float(np.asarray(evaluate(program.ir, n, params)))
        w = w * v if e > 0 else w / v
    if t.prox is not None and t.prox.negated:
        w = -w  # the kernel is the prox of -atom: the weight of -atom is -w >= 0
    return float(w)
