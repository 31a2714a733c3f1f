"""The iteration log of ``regspec solve --verbose`` for the torch solvers.

Inside ``with iteration_log(stream):`` every torch solve prints the residuals of its checks to
``stream`` (stderr for the CLI, so ``--json`` stays one document on stdout): the first check, then
log-spaced iterations (10, 20, ..., 90, 100, 200, ...: nine lines a decade, a long run stays
short to read). The values are those the solver records in ``Result.history`` at the same
iteration. Outside such a block ``callback`` returns None and the solvers run without one.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Callable, Iterator, TextIO

__all__ = ["iteration_log", "callback", "format_line", "writer"]

_STREAM: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar("regspec_iteration_log", default=None)


@contextlib.contextmanager
def iteration_log(stream: TextIO) -> Iterator[None]:
    """Torch solves within the block log their checks to ``stream``."""
    token = _STREAM.set(stream)
    try:
        yield
    finally:
        _STREAM.reset(token)


def format_line(solver: str, k: int, residuals: dict[str, Any]) -> str:
    """``FISTA  iter     40  prox_grad 1.234e-03  prox_grad_rel 5.678e-07`` (floats only)."""
    cols = "  ".join(f"{name} {float(v):.4e}" for name, v in residuals.items()
                     if name != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool))
    return f"{solver:<6} iter {k:>7}  {cols}"


def _next_after(k: int) -> int:
    """The next iteration worth a line after ``k``: the next multiple of k's leading power of ten."""
    step = 10 ** int(math.log10(k)) if k >= 1 else 1
    return (k // step + 1) * step


def callback(solver: str) -> Callable[[int, Any, dict[str, float]], None] | None:
    """A solver callback ``(k, x, residuals)`` printing log-spaced checks, or None when no log
    is open. It never stops the run."""
    stream = _STREAM.get()
    if stream is None:
        return None
    due = 0

    def log(k: int, x: Any, residuals: dict[str, float]) -> None:
        nonlocal due
        if k >= due:
            print(format_line(solver, k, residuals), file=stream, flush=True)
            due = _next_after(k)

    return log


def writer() -> Callable[[str], None] | None:
    """A function printing one line to the open log (for solvers whose every check is worth a
    line: the working-set outer loop), or None when no log is open."""
    stream = _STREAM.get()
    if stream is None:
        return None
    return lambda line: print(line, file=stream, flush=True)
