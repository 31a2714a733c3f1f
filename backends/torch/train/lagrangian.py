"""Constraints without a projection, handled by a Lagrange multiplier (dual ascent).

``constrain EXPR <= c via lagrangian(lr = eta, init = 0)`` (or ``== c``, ``>= c``) in a train
block: the term lambda * (EXPR - c) joins the training objective (lowered like ``regularize
EXPR``: into the loss, or as a prox step of weight lambda when EXPR is a nonsmooth term on
parameters with a prox), and before each optimizer step (or every N steps)

    lambda <- max(0, lambda + eta * (EXPR(x_k) - c))     (<=; for >= the sign of EXPR - c flips)
    lambda <- lambda + eta * (EXPR(x_k) - c)             (==; lambda may be negative)

with EXPR evaluated at the current iterate x_k (parameters as they are before the step;
activations of the step's own forward pass). The step that follows uses the new multiplier
(dual first, then the primal step: a fixed point satisfies the KKT conditions: g(x) <= c,
lambda >= 0, lambda (g(x) - c) = 0, 0 in grad f + lambda dg).

The multiplier is the term's weight: ``Multiplier`` is callable like a schedule (``weight(t)``),
so the Regularizer's penalty or prox group reads it every step, and ``metrics.jsonl`` logs it as
``weight/<term>`` (the constraint value as ``reg/<term>``). Its value is checkpointed with the
optimizer state (``UpdateRule``), so a resumed run continues with the same multipliers.

``ConstraintValue`` evaluates EXPR on the bound tensors with the training penalties' own
evaluation (``regularizer.param_value`` for parameters, the activation form for taps).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from regspec.diagnostics import error

__all__ = ["ConstraintValue", "Multiplier"]


@dataclass
class ConstraintValue:
    """EXPR of a ``constrain ... via lagrangian`` statement, on the bound tensors: a training term
    ``kind`` (the penalty names of regularizer.py) on parameters or activation taps, or a typed
    expression ``tree`` (compiler/train_terms.py) over ``leaves`` (one tuple of tensor names per
    instance, of the selector ``kinds``), evaluated with each atom's torch lowering."""

    kind: str = "expr"
    params: list[str] = field(default_factory=list)
    acts: list[str] = field(default_factory=list)
    hyper: dict[str, Any] = field(default_factory=dict)
    tree: Any = None
    leaves: list[list[str]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def __call__(self, module: torch.nn.Module) -> float:
        with torch.no_grad():
            if self.tree is not None:
                return self._tree_value(module)
            from .regularizer import _act_value, param_value

            if self.params:
                named = dict(module.named_parameters())
                return float(sum(float(param_value(self.kind, named[n], self.hyper)) for n in self.params))
            return float(sum(_act_value(self.kind, a) for a in self._taps(module, self.acts)))

    def _taps(self, module: torch.nn.Module, names: list[str]) -> list[torch.Tensor]:
        taps = getattr(module, "taps", None)
        if taps is None:
            raise error("a Lagrangian constraint on activations needs a tapped module (insert_taps)")
        wanted = set(names)
        found = [v for k, v in taps.items() if k.split("#", 1)[0] in wanted]
        if not found:
            raise error(f"the activations {', '.join(names)} were not recorded by the last forward pass; "
                        "the multiplier update needs them")
        return found

    def _tree_value(self, module: torch.nn.Module) -> float:
        from .regularizer import eval_tree, per_sample_mean

        named = dict(module.named_parameters())
        total = 0.0
        for names in self.leaves:
            leaves = [named[n] if k == "param" else self._taps(module, [n])[0] for k, n in zip(self.kinds, names)]
            batched = [k != "param" for k in self.kinds]
            value = per_sample_mean(self.tree, leaves, batched) if any(batched) else eval_tree(self.tree, leaves)
            total += float(value)
        return total


@dataclass
class Multiplier:
    """A Lagrange multiplier: its value (``self(t)``), its dual-ascent rule and its state."""

    value_of: ConstraintValue
    sense: str                  # "<=", ">=" or "=="
    bound: float
    lr: float = 0.01
    every: int = 1
    init: float = 0.0
    label: str = ""
    value: float = field(default=0.0, init=False)
    last: float = field(default=float("nan"), init=False)    # EXPR at the last update

    def __post_init__(self) -> None:
        if self.sense not in ("<=", ">=", "=="):
            raise error(f"a Lagrangian constraint compares with <=, >= or ==, got {self.sense!r}")
        if self.sense != "==" and self.init < 0:
            raise error(f"the multiplier of an inequality starts nonnegative, got init = {self.init:g}")
        self.value = float(self.init)

    def __call__(self, t: float = 0.0) -> float:
        """The current multiplier, signed for the term's weight: lambda for <= and ==, -lambda
        for >= (the term is then lambda * (c - EXPR), whose EXPR part has weight -lambda)."""
        return -self.value if self.sense == ">=" else self.value

    def violation(self, g: float) -> float:
        """EXPR - c for <= and ==, c - EXPR for >=: positive when the constraint is violated."""
        return self.bound - g if self.sense == ">=" else g - self.bound

    def update(self, module: torch.nn.Module, step: int) -> None:
        """Dual ascent before optimizer step ``step`` (1-based), every ``every`` steps."""
        if step % self.every:
            return
        g = _mean_over_ranks(self.value_of(module), module)
        self.last = g
        new = self.value + self.lr * self.violation(g)
        self.value = new if self.sense == "==" else max(0.0, new)

    def state_dict(self) -> dict[str, Any]:
        return {"value": torch.tensor(self.value, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


def _mean_over_ranks(g: float, module: torch.nn.Module) -> float:
    """Under torchrun every rank sees its own rows: the multiplier follows the mean of the ranks'
    values, so all ranks keep the same multiplier (and the same weights)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return g
    device = next(module.parameters()).device
    t = torch.tensor([g], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()
