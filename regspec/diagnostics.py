"""Source spans, diagnostics and the one exception type regspec raises for bad input.

Errors are values (``Diagnostic``) that carry a ``Span``; they are rendered once, at the edge
(the CLI prints them, the API raises ``RegspecError`` whose message is the rendering).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Source:
    """The text of one spec and the path it came from (``<string>`` for inline text)."""

    path: str
    text: str

    @functools.cached_property
    def lines(self) -> list[str]:
        """The lines, split on ``\\n`` only (as the lexer counts them: U+2028, form feeds and
        other Unicode line breaks stay inside their line), without a trailing ``\\r``."""
        return [ln[:-1] if ln.endswith("\r") else ln for ln in self.text.split("\n")]

    def line(self, lineno: int) -> str:
        lines = self.lines
        return lines[lineno - 1] if 1 <= lineno <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A half-open character range of a source, with 1-based line and column of its ends."""

    source: Source | None
    line: int
    column: int
    end_line: int
    end_column: int

    @property
    def path(self) -> str:
        return self.source.path if self.source else "<unknown>"

    def __repr__(self) -> str:  # keep AST dumps short
        return f"Span({self.path}:{self.line}:{self.column})"


@dataclass
class Diagnostic:
    """One located message; ``notes`` are extra lines (hints, related locations)."""

    message: str
    span: Span | None = None
    severity: str = "error"
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        if self.span is None:
            head = f"{self.severity}: {self.message}"
            return "\n".join([head, *[f"  note: {n}" for n in self.notes]])
        s = self.span
        out = [f"{s.path}:{s.line}:{s.column}: {self.severity}: {self.message}"]
        if s.source is not None:
            text = shown_line(s.source.line(s.line))
            if text:
                gutter = f"{s.line:>4} | "
                out.append(gutter + text)
                width = (s.end_column - s.column) if s.end_line == s.line else len(text) - s.column + 1
                out.append(" " * (len(gutter) + s.column - 1) + "^" * max(1, width))
        out.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(out)


def shown_line(text: str) -> str:
    """A source line as the caret line can point into it: one printed character per column (a tab
    is a space, a control or other invisible character U+FFFD, so a carriage return or a
    terminal escape in the spec cannot overwrite the message)."""
    return "".join(c if c.isprintable() else " " if c == "\t" else "\ufffd" for c in text)


def shown_char(ch: str) -> str:
    """One character for a message: itself when visible, else its code point (`U+000D`)."""
    return ch if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"


class RegspecError(Exception):
    """Raised for any bad input (spec, data, model, checkpoint); carries its diagnostics."""

    def __init__(self, diagnostics: Diagnostic | Sequence[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]


def error(message: str, span: Span | None = None, notes: Iterable[str] = ()) -> RegspecError:
    """Build (not raise) a one-diagnostic error: ``raise error("...", node.span)``."""
    return RegspecError(Diagnostic(message, span, notes=list(notes)))


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Closest known names to ``name`` (case-insensitive), best first: a name that differs only in
    case or underscores (`norm_1` for `norm1`, `sumsquares` for `sum_squares`) before the others."""
    import difflib  # only where a name is wrong: ~2 ms of every `regspec check` otherwise

    cands = sorted(set(candidates))
    lowered = {c.lower(): c for c in cands}
    same = [c for c in cands if c != name and c.lower().replace("_", "") == name.lower().replace("_", "")]
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return (same + [lowered[h] for h in hits if lowered[h] not in same])[:n]


def did_you_mean(name: str, candidates: Iterable[str]) -> list[str]:
    """A ready-made note list: ``["did you mean `x`?"]`` or ``[]``."""
    hits = suggest(name, candidates)
    if not hits:
        return []
    return ["did you mean " + " or ".join(f"`{h}`" for h in hits) + "?"]
