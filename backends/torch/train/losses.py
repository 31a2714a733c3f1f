"""Losses: named losses over ``(output, target)`` and a minimal, safe expression evaluator.

Named losses (batch means):

- ``cross_entropy``: −(1/B) Σ_i log softmax(z_i)[y_i] (``y`` class ids, or class
  probabilities of the same shape as ``z``); logits ``(B, T, K)`` against ids ``(B, T)`` are
  taken per position (ids -100 are padding and left out).
- ``mse``: (1/(B·K)) Σ (z − y)²;  ``mae``: (1/(B·K)) Σ |z − y|;
  ``huber``: mean of ½r² for |r| ≤ 1, |r| − ½ otherwise (δ = 1);
  ``bce_with_logits``: mean of −y log σ(z) − (1 − y) log(1 − σ(z)).

Regression losses accept a target of shape ``(B,)`` against an output ``(B, 1)`` (and vice
versa) and otherwise require equal shapes: silent broadcasting of ``(B, 1)`` against ``(B,)``
to ``(B, B)`` is a classic bug, so it is an error here.

Loss expressions. The compiler hands ``build_loss`` either a callable ``f(output, target)``
(it builds one from the spec's expression tree) or a tree of nested tuples evaluated by
``eval_loss_tree``: ``"output"``, ``"target"``, numbers, and ``(op, *args)`` with ``op`` one of
``LOSS_OPS`` (arithmetic, ``mean``, ``sum``, ``abs``, ``square``, ``exp``, ``log``, ``sqrt``,
``log_softmax``, ``softmax``) or a named loss. Nothing is ever ``eval``-ed. A non-scalar result
is reduced by its mean (so ``(output - target) ** 2`` means the mean squared error).
"""
from __future__ import annotations

from typing import Any, Callable, Union

import torch
import torch.nn.functional as F

from regspec.compiler.train_plan import LOSS_FUNCTIONS, LOSS_NAMES, same_names
from regspec.diagnostics import RegspecError, Span, did_you_mean, error

__all__ = ["LOSSES", "LOSS_OPS", "build_loss", "cross_entropy", "mse", "mae", "huber",
           "bce_with_logits", "eval_loss_tree"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _match(output: torch.Tensor, target: torch.Tensor, what: str) -> torch.Tensor:
    if target.shape == output.shape:
        return target.to(output.dtype)
    if target.numel() == output.numel() and (output.dim() == 2 and output.shape[1] == 1 or target.dim() == 2 and target.shape[-1] == 1):
        return target.reshape(output.shape).to(output.dtype)
    raise error(f"{what}: output shape {tuple(output.shape)} does not match target shape {tuple(target.shape)}")


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of logits ``output (B, K)`` against ids ``(B,)`` or probabilities ``(B, K)``;
    per position for ``output (B, T, ..., K)`` against ids ``(B, T, ...)`` (a language model's
    logits: the mean over the positions whose id is not -100, torch's and transformers' padding)."""
    if target.dtype.is_floating_point and target.shape == output.shape:
        return F.cross_entropy(output, target)
    if output.dim() >= 3 and not target.dtype.is_floating_point and target.shape == output.shape[:-1]:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    if target.dim() == 2 and target.shape[1] == 1:
        target = target[:, 0]
    return F.cross_entropy(output, target.long())


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error (1/n) Σ (output − target)²."""
    return F.mse_loss(output, _match(output, target, "mse"))


def mae(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (1/n) Σ |output − target|."""
    return F.l1_loss(output, _match(output, target, "mae"))


def huber(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Huber loss with δ = 1."""
    return F.huber_loss(output, _match(output, target, "huber"), delta=1.0)


def bce_with_logits(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of logits (targets in [0, 1])."""
    return F.binary_cross_entropy_with_logits(output, _match(output, target, "bce_with_logits"))


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "bce_with_logits": bce_with_logits,
}

LOSS_OPS: dict[str, Callable[..., Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "neg": lambda a: -a,
    "mean": lambda a: torch.as_tensor(a).mean(),
    "sum": lambda a: torch.as_tensor(a).sum(),
    "abs": lambda a: torch.as_tensor(a).abs(),
    "square": lambda a: torch.as_tensor(a) ** 2,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "log_softmax": lambda a: F.log_softmax(a, dim=-1),
    "softmax": lambda a: F.softmax(a, dim=-1),
}
same_names(LOSSES, LOSS_NAMES, "named losses")
same_names(LOSS_OPS, LOSS_FUNCTIONS, "loss functions")

Tree = Union[str, int, float, tuple]


def eval_loss_tree(tree: Tree, output: torch.Tensor, target: torch.Tensor) -> Any:
    """Evaluate a nested-tuple loss tree (see the module docstring) at ``(output, target)``."""
    if isinstance(tree, bool):
        raise error("loss expression: booleans are not values")
    if isinstance(tree, (int, float)):
        return tree
    if isinstance(tree, str):
        if tree == "output":
            return output
        if tree == "target":
            return target
        raise error(f"loss expression: unknown name `{tree}`", None, did_you_mean(tree, ["output", "target"]))
    if isinstance(tree, tuple) and tree and tree[0] == "expr":
        return _eval_catalogue_loss(tree, output, target)
    if isinstance(tree, tuple) and tree and isinstance(tree[0], str):
        op, args = tree[0], [eval_loss_tree(a, output, target) for a in tree[1:]]
        fn = LOSS_OPS.get(op) or LOSSES.get(op)
        if fn is None:
            raise error(f"loss expression: unknown operation `{op}`", None, did_you_mean(op, [*LOSS_OPS, *LOSSES]))
        try:
            return fn(*args)
        except RegspecError:
            raise
        except (TypeError, RuntimeError) as exc:
            raise error(f"loss expression: `{op}` failed: {exc}") from None
    raise error(f"loss expression: cannot evaluate {tree!r}")


def _eval_catalogue_loss(tree: tuple, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``("expr", typed tree, leaf kinds)`` (compiler/train_plan.catalogue_loss): catalogue atoms
    on the batch's output and target (integer targets as the output's dtype)."""
    from .regularizer import eval_tree

    if not target.is_floating_point():
        target = target.to(output.dtype)
    return eval_tree(tree[1], [output if kind == "output" else target for kind in tree[2]])


def _validate_tree(tree: Tree, span: Span | None) -> None:
    if isinstance(tree, tuple) and tree and tree[0] == "expr":
        return  # typed by the compiler's passes when planned
    if isinstance(tree, bool):
        raise error("loss expression: booleans are not values", span)
    if isinstance(tree, (int, float)):
        return
    if isinstance(tree, str):
        if tree not in ("output", "target"):
            raise error(f"loss expression: unknown name `{tree}`", span, did_you_mean(tree, ["output", "target"]))
        return
    if isinstance(tree, tuple) and tree and isinstance(tree[0], str):
        if tree[0] not in LOSS_OPS and tree[0] not in LOSSES:
            raise error(f"loss expression: unknown operation `{tree[0]}`", span,
                        did_you_mean(tree[0], [*LOSS_OPS, *LOSSES]))
        for a in tree[1:]:
            _validate_tree(a, span)
        return
    raise error(f"loss expression: cannot evaluate {tree!r}", span)


def _scalar(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise error(f"{what} must evaluate to a tensor, got {type(value).__name__}")
    return value if value.dim() == 0 else value.mean()


def build_loss(spec: str | LossFn | tuple, span: Span | None = None) -> LossFn:
    """A loss ``f(output, target) -> scalar tensor`` from a loss name, a callable (wrapped to
    reduce non-scalar results by their mean) or a nested-tuple expression tree."""
    if isinstance(spec, str):
        key = spec.lower()
        if key not in LOSSES:
            raise error(
                f"unknown loss `{spec}`", span,
                did_you_mean(spec, LOSSES) + ["named losses: " + ", ".join(LOSSES) + "; or an expression over `output` and `target`"],
            )
        return LOSSES[key]
    if isinstance(spec, tuple):
        tree = spec
        _validate_tree(tree, span)  # names and operations are checked now, values at call time

        def tree_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return _scalar(eval_loss_tree(tree, output, target), "the loss expression")

        return tree_loss
    if callable(spec):
        fn = spec

        def wrapped(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return _scalar(fn(output, target), "the loss expression")

        wrapped.__name__ = getattr(fn, "__name__", "loss")
        wrapped.__doc__ = getattr(fn, "__doc__", None)
        return wrapped
    raise error(f"a loss must be a name or an expression, got {type(spec).__name__}", span)
