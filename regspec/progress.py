"""Progress bars (tqdm, on stderr) for work that takes more than a moment: training batches,
sweep points, cross-check specs. A bar is shown only when both stdout and stderr are terminals,
so piped output, logs and ``--json`` documents never carry one; ``--quiet`` and ``--json`` turn
it off. ``REGSPEC_PROGRESS=0`` / ``=1`` overrides the terminal test (e.g. to see bars in CI logs).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

__all__ = ["wanted", "Bar", "bar", "status"]

T = TypeVar("T")


def wanted(quiet: bool = False) -> bool:
    """Whether to draw a bar: not ``quiet``, and stdout and stderr are terminals (or forced on)."""
    if quiet:
        return False
    forced = os.environ.get("REGSPEC_PROGRESS", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # replaced or closed streams
        return False


class Bar:
    """A counter bar: ``update(n, note)`` after each finished item; a no-op when not ``enabled``
    (or tqdm is missing). Use as a context manager so the bar is closed on errors too."""

    def __init__(self, total: int | None, desc: str, *, enabled: bool = True, unit: str = "it",
                 leave: bool = False):
        self._bar = None
        self.total, self.count, self.note = total, 0, None   # what was reported, drawn or not
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)

    @property
    def drawn(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.count += n
        self.note = note if note is not None else self.note
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
            if self.total is not None and self.count >= self.total:
                self._bar.refresh()      # the last state is drawn even within tqdm's redraw interval

    def write(self, line: str) -> None:
        """Print a line above the bar (or plainly, on stdout, without one)."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(iterable: Iterable[T], total: int | None, desc: str, *, enabled: bool = True, unit: str = "it",
        leave: bool = False) -> Iterator[T]:
    """``iterable`` with a bar advancing per item (the items as they are when disabled)."""
    with Bar(total, desc, enabled=enabled, unit=unit, leave=leave) as b:
        for item in iterable:
            yield item
            b.update()


@contextmanager
def status(text: str, *, enabled: bool = True) -> Iterator[None]:
    """A one-line note on stderr while a step without countable parts runs (e.g. building a
    trainer), erased when it ends; nothing when not ``enabled``."""
    if not enabled:
        yield
        return
    line = f"{text} ..."
    sys.stderr.write(line)
    sys.stderr.flush()
    try:
        yield
    finally:
        sys.stderr.write("\r" + " " * len(line) + "\r")
        sys.stderr.flush()
