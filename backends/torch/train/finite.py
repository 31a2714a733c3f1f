"""Finite checks for training: a non-finite loss or weight stops the run at the first bad step.

Per optimizer step the ``Regularizer`` reduces the loss and every tensor a prox/projection call
reads and writes to booleans on the device (fused ``torch._foreach_norm`` calls) and synchronises
once. Only when one is false does the slow path run: it names the step, the term that produced the value (a loss term, the gradient and
optimizer update, or a prox/projection) and the tensors holding it. Checkpoints and saved
models are checked the same way before they are written, so bad weights never reach disk.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch

from regspec.diagnostics import Diagnostic, RegspecError

__all__ = ["NonFiniteError", "finite_flag", "nonfinite_tensors", "check_tensors_finite", "optimizer_state_names",
           "learning_rate_notes", "raise_nonfinite"]


class NonFiniteError(RegspecError):
    """A NaN or infinite value in the loss, the weights or a checkpoint (bad input: exit 1).

    ``step`` (1-based optimizer step, when known) and ``term`` (what produced the value) are kept
    for callers; ``with_note`` lets the run folder name the last good checkpoint.
    """

    def __init__(self, message: str, *, step: int | None = None, term: str | None = None,
                 notes: Sequence[str] = ()):
        self.message, self.step, self.term, self.notes = message, step, term, list(notes)
        super().__init__(Diagnostic(message, None, notes=self.notes))

    def with_note(self, note: str) -> "NonFiniteError":
        return NonFiniteError(self.message, step=self.step, term=self.term, notes=[*self.notes, note])


def finite_flag(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """A 0-dim bool tensor on the tensors' device, true when every entry of every tensor is
    finite; no sync. One fused multi-tensor 2-norm (``torch._foreach_norm``): a NaN or inf entry
    makes its norm NaN or inf. False can also mean a finite tensor whose norm overflows the dtype
    (entries near 1e19 in float32), so a false flag is confirmed by ``nonfinite_tensors``."""
    xs = [t.detach() for t in tensors if t.numel()]
    if not xs:
        return None
    if len(xs) == 1 and xs[0].numel() == 1:          # a loss: no reduction needed
        return torch.isfinite(xs[0]).reshape(())
    norms = torch._foreach_norm(xs, 2)
    first = norms[0]
    if all(n.device == first.device and n.dtype == first.dtype for n in norms):
        return torch.isfinite(torch.stack(norms)).all()
    return torch.stack([torch.isfinite(n).to(first.device) for n in norms]).all()


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]], allow_inf: bool = False
                      ) -> list[tuple[str, int, int]]:
    """``(name, non-finite entries, size)`` of each tensor holding NaN or inf (with ``allow_inf``:
    NaN) (the slow path)."""
    out = []
    for name, t in named:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            bad_mask = torch.isnan(t.detach()) if allow_inf else ~torch.isfinite(t.detach())
            bad = int(bad_mask.sum())
            if bad:
                out.append((name, bad, t.numel()))
    return out


def describe_tensors(bad: Sequence[tuple[str, int, int]], limit: int = 4) -> str:
    shown = ", ".join(f"`{n}` ({k} of {size} entries)" for n, k, size in bad[:limit])
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


def _flatten(state: Mapping[str, object], prefix: str = "") -> Iterable[tuple[str, torch.Tensor]]:
    for k, v in state.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            yield name, v
        elif isinstance(v, Mapping):
            yield from _flatten(v, name + ".")


def check_tensors_finite(state: Mapping[str, object], where: str, notes: Sequence[str] = (),
                         allow_inf: bool = False, names: Mapping[str, str] | None = None) -> None:
    """Raise ``NonFiniteError`` naming ``where`` and the tensors when ``state`` (a state dict,
    possibly nested) holds NaN or inf (with ``allow_inf``: NaN). ``names`` renames flattened
    keys in the message (optimizer state indices -> parameter names)."""
    tensors = [t for _, t in _flatten(state) if t.is_floating_point() or t.is_complex()]
    flag = finite_flag(tensors)
    if flag is None or flag.item():
        return
    bad = nonfinite_tensors(_flatten(state), allow_inf)   # exact; also rules out a norm overflow
    if not bad:
        return
    if names:
        bad = [(_rename(n, names), k, size) for n, k, size in bad]
    what = "NaN" if allow_inf else "non-finite values (NaN or inf)"
    raise NonFiniteError(f"{where} holds {what}: {describe_tensors(bad)}", notes=notes)


def _rename(key: str, names: Mapping[str, str]) -> str:
    """``state.4.exp_avg_sq`` -> ``head.weight: exp_avg_sq`` when index 4 is head.weight."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "state" and parts[1] in names:
        return f"{names[parts[1]]}: {'.'.join(parts[2:])}"
    return key


def optimizer_state_names(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> dict[str, str]:
    """Optimizer state-dict indices (as strings) -> parameter names of ``module``."""
    by_id = {id(p): n for n, p in module.named_parameters()}
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    return {str(i): by_id.get(id(p), f"parameter {i}") for i, p in enumerate(flat)}


def learning_rate_notes(optimizer: object | None) -> list[str]:
    """The note a non-finite update gets: the optimizer's learning rates, and what to lower."""
    groups = getattr(optimizer, "param_groups", None) or []
    lrs = sorted({float(g["lr"]) for g in groups if "lr" in g})
    if not lrs:
        return []
    return [f"the optimizer's learning rate is {', '.join(f'{v:g}' for v in lrs)}; a step too large "
            "makes the weights overflow: lower `lr` (or the term's weight)"]


def raise_nonfinite(message: str, step: int, term: str, notes: Sequence[str],
                    extra_notes: Sequence[Callable[[], str]] = ()) -> None:
    """Raise ``NonFiniteError`` with ``notes`` and each extra note that can be computed (a note
    that fails must never hide the error itself)."""
    extra = []
    for note in extra_notes:
        try:
            extra.append(note())
        except Exception:  # noqa: BLE001
            pass
    raise NonFiniteError(message, step=step, term=term, notes=[*notes, *extra])
