"""Optimizers by name with checked keyword arguments.

``build_optimizer("adamw", params, lr=1e-3, weight_decay=0)`` calls ``torch.optim.AdamW``.
Keyword names are checked against the torch constructor's signature before the call (unknown
names get suggestions and the list of accepted names); values torch rejects (``lr < 0``...)
become ``RegspecError`` too. Lists arriving from a spec for tuple arguments (``betas``) are
converted to tuples. ``"pkg.mod:Class"`` names a user optimizer class.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from regspec.compiler.train_plan import OPTIMIZER_NAMES, same_names
from regspec.diagnostics import RegspecError, Span, did_you_mean, error

from ._util import check_kwargs

__all__ = ["OPTIMIZERS", "build_optimizer", "current_lrs", "set_hparam"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
same_names(OPTIMIZERS, OPTIMIZER_NAMES, "optimizers")


def build_optimizer(
    name: str, params: Iterable[Any], /, *, span: Span | None = None, **torch_kwargs: Any
) -> torch.optim.Optimizer:
    """``torch.optim.{SGD, Adam, AdamW}(params, **torch_kwargs)`` with checked arguments.

    ``params`` is what torch accepts: an iterable of tensors, of ``(name, tensor)`` pairs, or of
    parameter-group dicts.
    """
    if ":" in name:
        from .models import load_user_object

        cls = load_user_object(name, span, what="optimizer")
        label = f"user optimizer `{name}`"
    else:
        key = name.lower()
        if key not in OPTIMIZERS:
            raise error(
                f"unknown optimizer `{name}`", span,
                did_you_mean(name, OPTIMIZERS) + ["optimizers: " + ", ".join(OPTIMIZERS) + '; user: "pkg.mod:Class"'],
            )
        cls, label = OPTIMIZERS[key], f"optimizer `{key}`"
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in torch_kwargs.items()}
    check_kwargs(cls, kwargs, label, span, skip=("params",))
    params = list(params)
    if not params:
        raise error(f"{label}: no parameters to optimize", span)
    try:
        return cls(params, **kwargs)
    except RegspecError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise error(f"{label} rejected its arguments: {exc}", span) from None


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each parameter group, in group order."""
    return [float(g["lr"]) for g in optimizer.param_groups]


def set_hparam(optimizer: torch.optim.Optimizer, name: str, value: float) -> None:
    """Set hyperparameter ``name`` (``lr``, ``weight_decay``, ``momentum``...) in every group
    (for schedules on optimizer hyperparameters); unknown names raise ``RegspecError``."""
    for g in optimizer.param_groups:
        if name not in g:
            raise error(f"optimizer {type(optimizer).__name__} has no hyperparameter `{name}`",
                        None, did_you_mean(name, [k for k in g if k != "params"]))
        g[name] = value
