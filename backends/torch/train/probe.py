"""One real batch through the bound model, before anything trains (``regspec plan``, ``compile``,
``train``).

What a plan cannot know from names alone is checked here, on the data's own batch (its own
dtypes: integer token ids stay integer) moved as the trainer moves it (floating tensors in
float32 on the CPU):

- the model runs on the batch: a shape or dtype mismatch is a located error at the ``model``
  statement naming the batch the ``data`` statement gives, not an internal error mid-training;
- the output fits the data (enough logits for the classes) and the task loss evaluates on it; a
  model returning a tuple, a dict or transformers' ``ModelOutput`` is read as its ``logits`` or
  first tensor (``_util.primary_tensor``), and the trainer does the same (``output_type``);
- every activation tap fired: a module selected by ``act(...)`` that the forward never calls as a
  module (e.g. ``nn.MultiheadAttention.out_proj``, whose weights are used functionally) would
  make its term a silent no-op, so it is an error at the term;
- every rewrite took effect: the source activation's functions (``F.gelu``...) are no longer
  called during the forward (watched with a ``TorchFunctionMode``), else the rewrite reached only
  part of the model (an untraceable forward calling the function directly) and it is an error at
  the ``rewrite`` statement. A replaced module that the forward never calls is a warning.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from regspec.compiler.train_plan import TrainPlan
from regspec.diagnostics import Diagnostic, RegspecError, error

from ._util import primary_tensor
from .bind import Binding
from .data import DataBundle
from .fx import FUNCTIONAL_ACTIVATIONS
from .losses import build_loss

__all__ = ["ProbeResult", "probe_model", "first_batch"]

#: rows of the probe batch (the forward runs in training mode: BatchNorm needs B > 1)
PROBE_ROWS = 4


@dataclass
class ProbeResult:
    input_text: str                               # "x [4, 64] float32"
    output_shape: tuple[int, ...]
    act_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    #: what the model returns when it is not a tensor (a tuple, a dict, transformers' ModelOutput):
    #: the trainer then reads its logits or first tensor (``_util.primary_tensor``); None for a tensor
    output_type: str | None = None


class _CallCounter(TorchFunctionMode):
    """Counts calls of torch functions and tensor methods by name during a forward."""

    def __init__(self, names: set[str]):
        super().__init__()
        self.names = names
        self.counts: dict[str, int] = {}

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in self.names:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"[{', '.join(str(d) for d in v.shape)}] {str(v.dtype).replace('torch.', '')}"
    return type(v).__name__


def first_batch(data: DataBundle, plan: TrainPlan) -> tuple[Any, Any]:
    """The first validation batch ``(x, y)`` (cheap, and the training order stays untouched),
    cut to ``PROBE_ROWS`` rows and moved as the trainer moves batches (float32 on the CPU)."""
    x = data.tensors.get("x_val")
    y = data.tensors.get("y_val")
    if x is None:
        try:
            first = next(iter(data.val))
        except StopIteration:
            raise error("the validation data yields no batch", plan.data.span) from None
        except RegspecError:
            raise
        except Exception as exc:  # noqa: BLE001 - user loaders may raise anything
            raise error(f"reading one batch of the data failed: {type(exc).__name__}: {exc}", plan.data.span) from None
        if not (isinstance(first, (tuple, list)) and len(first) >= 2):
            raise error(f"the data's batches must be (inputs, targets) pairs, got {_describe(first)}", plan.data.span)
        x, y = first[0], first[1]
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and len(x) > PROBE_ROWS:
        x, y = x[:PROBE_ROWS], y[:PROBE_ROWS]
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        x = x.float()
    if isinstance(y, torch.Tensor) and y.is_floating_point():
        y = y.float()
    return x, y


def _data_note(plan: TrainPlan, x: Any, data: DataBundle) -> str:
    where = f"line {plan.data.span.line}: " if plan.data.span is not None else ""
    feats = f" ({data.in_features} features per row)" if data.in_features else ""
    return f"one batch of `{where}data {plan.data.text or plan.data.name}` is x {_describe(x)}{feats}"


def _run(module: nn.Module, x: Any, plan: TrainPlan, data: DataBundle, names: set[str]
         ) -> tuple[Any, dict[str, int]]:
    was = module.training
    # the training forward: taps and rewrites must hold there (eval-only fast paths, such as
    # nn.TransformerEncoderLayer's, skip submodules); the model here is the plan's own copy
    module.train()
    counter = _CallCounter(names)
    try:
        with torch.no_grad(), counter:
            out = module(x)
    except RegspecError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is a model/data mismatch
        text = str(exc).strip().splitlines()
        raise error(f"the model cannot run on the data: {type(exc).__name__}: {text[0] if text else ''}",
                    plan.model.span, [_data_note(plan, x, data),
                                      "the model's input size, dtype or layout must fit the data's batches"]
                    ) from None
    finally:
        module.train(was)
    return out, counter.counts


def _check_output(out: Any, y: Any, loss: Any, plan: TrainPlan, data: DataBundle) -> None:
    if not isinstance(out, torch.Tensor):
        raise error(f"the model returns {type(out).__name__}; the loss needs a tensor of outputs",
                    plan.model.span, ["return the logits (or predictions) as one tensor"])
    if data.task == "classification" and data.n_outputs and out.dim() == 2 and out.shape[1] < data.n_outputs:
        raise error(f"the model gives {out.shape[1]} outputs per row but the data has {data.n_outputs} classes",
                    plan.model.span, [f"give the model out = {data.n_outputs} (or omit `out` for a built-in model)"])
    loss_span = plan.loss_span or plan.model.span
    try:
        value = build_loss(loss, loss_span)(out, y)
    except RegspecError as exc:
        d = exc.first
        raise error(d.message, d.span or loss_span, [*d.notes, f"output {_describe(out)}, target {_describe(y)}"]
                    ) from None
    except Exception as exc:  # noqa: BLE001
        raise error(f"the loss cannot be evaluated on the model's output: {type(exc).__name__}: {exc}", loss_span,
                    [f"output {_describe(out)}, target {_describe(y)}"]) from None
    if not (isinstance(value, torch.Tensor) and value.dim() == 0):
        raise error("the loss does not reduce to a number", loss_span)


def _check_taps(binding: Binding, taps: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    fired = {k.split("#", 1)[0] for k in taps}
    modules = dict(binding.model.named_modules())
    for tb in binding.terms:
        if tb.term.target.kind != "act":
            continue
        silent = [n for n in tb.names if n not in fired]
        if not silent:
            continue
        n = silent[0]
        owner = n.rsplit(".", 1)[0] if "." in n else ""
        parent = type(modules[owner]).__name__ if owner in modules else "its parent"
        raise error(
            f"`{n}` ({type(modules[n]).__name__}) is never called as a module in the forward pass, so this term "
            "would do nothing", tb.term.span,
            [f"{parent} `{owner}` uses its weights without calling it as a module"
             if owner else "the model's forward never calls it",
             *([f"also never called: {', '.join(silent[1:])}"] if len(silent) > 1 else []),
             "select a module the forward calls (its parent, or the next module), or use param(...)"])
    return {k: tuple(v.shape[1:]) for k, v in taps.items() if isinstance(v, torch.Tensor)}


def _snake(name: str) -> str:
    """``LeakyReLU`` -> ``leaky_relu``, ``Softplus`` -> ``softplus`` (torch's functional names)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.replace("ReLU", "Relu")).lower()


def _rewrite_names(binding: Binding) -> dict[int, set[str]]:
    """Per rewrite, the torch function and method names of its source activation (its known
    functional forms, else its class name as torch spells functions: ``softplus``, ``leaky_relu``)."""
    out: dict[int, set[str]] = {}
    for i, rb in enumerate(binding.rewrites):
        src = rb.rewrite.src
        if src.lower() == rb.rewrite.dst.lower():
            continue
        entry = FUNCTIONAL_ACTIVATIONS.get(src.lower())
        if entry is not None:
            _, fns, methods = entry
            out[i] = {getattr(f, "__name__", "") for f in fns} | set(methods)
        else:
            out[i] = {src.lower(), _snake(src)}
    return out


def _check_rewrites(binding: Binding, counts: dict[str, int], called: set[str]) -> list[Diagnostic]:
    warnings: list[Diagnostic] = []
    for i, names in _rewrite_names(binding).items():
        rb = binding.rewrites[i]
        n = sum(counts.get(k, 0) for k in names)
        if n:
            why = ("the model does not trace, so functional calls were not rewritten"
                   if binding.graph != "traced" else
                   "functional calls of it are rewritten only for relu, gelu, silu, tanh and sigmoid, and modules "
                   "of another class that call it are not swapped")
            raise error(f"rewrite {rb.rewrite.src} -> {rb.rewrite.dst} did not take effect: the forward still calls "
                        f"`{'/'.join(sorted(names))}` {n} time(s) after replacing {rb.count}", rb.rewrite.span,
                        [f"{why} ({binding.graph})" if binding.graph != "traced" else why,
                         "use activation modules in the model (nn.GELU...) or make its forward traceable by torch.fx"])
    for rb in binding.rewrites:
        idle = [m for m in rb.modules if m not in called]
        if idle:
            warnings.append(Diagnostic(
                f"rewrite {rb.rewrite.src} -> {rb.rewrite.dst}: the replaced module(s) {', '.join(idle)} are never "
                "called in the forward pass", rb.rewrite.span, "warning"))
    return warnings


def probe_model(plan: TrainPlan, data: DataBundle, binding: Binding, loss: Any) -> ProbeResult:
    """Run one real batch through ``binding.module`` and check it (see the module doc)."""
    x, y = first_batch(data, plan)
    names = set().union(*_rewrite_names(binding).values()) if binding.rewrites else set()
    called: set[str] = set()
    modules = dict(binding.model.named_modules())
    hooks = [modules[m].register_forward_hook(lambda *_a, _m=m: called.add(_m))
             for rb in binding.rewrites for m in rb.modules if m in modules]
    try:
        out, counts = _run(binding.module, x, plan, data, names)
    finally:
        for h in hooks:
            h.remove()
    output_type = None if isinstance(out, torch.Tensor) else type(out).__name__
    if output_type is not None and isinstance(primary_tensor(out), torch.Tensor):
        out = primary_tensor(out)   # a tuple / dict / ModelOutput: its logits or first tensor
    _check_output(out, y, loss, plan, data)
    act_shapes = _check_taps(binding, getattr(binding.module, "taps", {})) if binding.tap_path else {}
    warnings = _check_rewrites(binding, counts, called)
    return ProbeResult(f"x {_describe(x)}", tuple(out.shape), act_shapes, warnings, output_type)
