"""Finite checks for training: a non-finite loss or weight stops the run at the first bad step.

Per optimizer step the ``Regularizer`` builds one boolean vector on the device (the loss, then
one entry per prox/projection call, each the max-abs norm of the tensors it touched, fused with
``torch._foreach_norm``) and synchronises once. Only when an entry is false does the slow path
run: it names the step, the term that produced the value (a loss term, the gradient and
optimizer update, or a prox/projection) and the tensors holding it. Checkpoints and saved
models are checked the same way before they are written, so bad weights never reach disk.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from regspec.diagnostics import Diagnostic, RegspecError

__all__ = ["NonFiniteError", "finite_flag", "nonfinite_tensors", "check_tensors_finite"]


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
    """A 0-dim bool tensor on the tensors' device: every entry of every tensor is finite.

    The max-abs norm is NaN or inf exactly when a tensor holds one (no overflow for large finite
    values, unlike a sum); one fused multi-tensor reduction per device and dtype, no sync."""
    xs = [t.detach() for t in tensors if t.numel()]
    if not xs:
        return None
    norms = torch._foreach_norm(xs, float("inf"))
    device = norms[0].device
    return torch.stack([torch.isfinite(n).to(device) for n in norms]).all()


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, int, int]]:
    """``(name, non-finite entries, size)`` of each tensor holding NaN or inf (the slow path)."""
    out = []
    for name, t in named:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            bad = int((~torch.isfinite(t.detach())).sum())
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


def check_tensors_finite(state: Mapping[str, object], where: str, notes: Sequence[str] = ()) -> None:
    """Raise ``NonFiniteError`` naming ``where`` and the tensors when ``state`` (a state dict,
    possibly nested) holds NaN or inf."""
    tensors = [t for _, t in _flatten(state) if t.is_floating_point() or t.is_complex()]
    flag = finite_flag(tensors)
    if flag is None or bool(flag):
        return
    bad = nonfinite_tensors(_flatten(state))
    raise NonFiniteError(f"{where} holds non-finite values (NaN or inf): {describe_tensors(bad)}", notes=notes)
