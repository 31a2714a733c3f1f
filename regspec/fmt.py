"""``regspec fmt``: the canonical layout of a `.reg` file.

The formatter works on tokens, not on the AST, so that every comment stays where it was written.
It changes horizontal whitespace, indentation and the number of blank lines only: line breaks,
tokens and comments are kept, so the parse tree cannot change (``format_text`` checks it anyway
and refuses to return a layout that parses differently).

Layout rules: two spaces per ``{`` level; a line that continues an expression (inside ``()``/``[]``,
after a binary operator or comma, or opening with one) gets four more; one space around binary
operators, ``=``, ``->`` and comparisons, none inside brackets, before ``,`` or after a unary
``-``, around ``:`` in slices or around ``.``/``..``; at most one blank line in a row and none at the
start or end of a file or of a block; trailing comments of consecutive lines aligned two spaces
after the longest code line of their run.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from regspec.diagnostics import Diagnostic, RegspecError, Source, Span, shown_char
from regspec.files import write_atomic  # fmt rewrites files in one rename

__all__ = ["format_text", "format_file", "same_tree", "write_atomic", "diff"]

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\f]+)
  | (?P<nl>\r?\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>->|\*\*|==|!=|<=|>=|\.\.|[-+*/@=(),\[\]{}:;.<>])
""", re.VERBOSE)

# Words that start a statement (keywords only there: `param("w")` inside an expression is a call)
# and words that are keywords anywhere. A `-` after a keyword is unary; a `(` or `[` after one
# opens a group or a list, not a call or an index.
STATEMENT_KEYWORDS = frozenset("""problem train data param var let minimize maximize subject regularize
    constrain model loss optimizer epochs steps batch seed device rewrite reparametrize freeze init transform""".split())
CLAUSE_KEYWORDS = frozenset("to in via every from until as".split())
_CONTINUE_AFTER = frozenset({"+", "-", "*", "/", "@", "**", "==", "!=", "<=", ">=", "<", ">", "->", ",", "=", "(", "["})
_LEADING_OPS = frozenset({"+", "*", "/", "@", "**", "->"})
_INDENT, _CONTINUATION = "  ", "    "


@dataclass
class _Tok:
    kind: str
    text: str
    unary: bool = False
    starts_statement: bool = False


def _tokenize(text: str, path: str) -> list[list[_Tok]]:
    """Split into lines of tokens (whitespace dropped, a comment is a token)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[list[_Tok]] = [[]]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            src = Source(path, text)
            line = text.count("\n", 0, pos) + 1
            col = pos - (text.rfind("\n", 0, pos) + 1) + 1
            raise RegspecError(Diagnostic(f"unexpected character `{shown_char(text[pos])}`", Span(src, line, col, line, col + 1)))
        kind = m.lastgroup or ""
        if kind == "nl":
            lines.append([])
        elif kind != "ws":
            lines[-1].append(_Tok(kind, m.group()))
        pos = m.end()
    return lines


def _ends_operand(tok: _Tok | None) -> bool:
    if tok is None:
        return False
    if tok.kind in ("number", "string"):
        return True
    if tok.kind == "name":
        return not (tok.text in CLAUSE_KEYWORDS or (tok.starts_statement and tok.text in STATEMENT_KEYWORDS))
    return tok.text in (")", "]")


def _mark_roles(lines: list[list[_Tok]]) -> None:
    """Mark statement-opening tokens and unary minus signs (both depend on what came before)."""
    prev: _Tok | None = None
    parens = 0
    for toks in lines:
        code = [t for t in toks if t.kind != "comment"]
        for i, tok in enumerate(code):
            line_start = i == 0 and parens == 0 and (prev is None or prev.text not in _CONTINUE_AFTER)
            tok.starts_statement = line_start or (prev is not None and prev.text in (";", "{"))
            if tok.text == "-":
                tok.unary = i == 0 or not _ends_operand(prev)
            parens = max(0, parens + (tok.text in ("(", "[")) - (tok.text in (")", "]")))
            prev = tok


def _space(a: _Tok, b: _Tok) -> str:
    if b.text == ":" and a.text == ",":
        return " "  # `X[i, :]`
    if b.text in (")", "]", ",", ";", ".", "..", ":") or a.text in ("(", "[", ".", "..", ":") or a.unary:
        return ""
    if b.text in ("(", "[") and _ends_operand(a):
        return ""  # a call, an index or a shape
    return " "


def _code(toks: list[_Tok]) -> str:
    out = toks[0].text
    for a, b in zip(toks, toks[1:]):
        out += _space(a, b) + b.text
    return out


@dataclass
class _Line:
    indent: str = ""
    code: str = ""
    comment: str = ""

    @property
    def blank(self) -> bool:
        return not self.code and not self.comment


def _layout(lines: list[list[_Tok]]) -> list[_Line]:
    """Indent each line from the bracket depths at its start."""
    out: list[_Line] = []
    braces = parens = 0
    prev: _Tok | None = None
    for toks in lines:
        code = [t for t in toks if t.kind != "comment"]
        comment = toks[-1].text.rstrip() if toks and toks[-1].kind == "comment" else ""
        if not toks:
            out.append(_Line())
            continue
        first = code[0].text if code else ""
        depth = braces - (first == "}")
        level = parens - (first in (")", "]"))  # brackets still open once the line's first token is read
        continued = level > 0 or (bool(code) and (first in _LEADING_OPS or (
            parens == 0 and prev is not None and prev.text in _CONTINUE_AFTER)))
        indent = _INDENT * max(depth, 0) + (_CONTINUATION + _INDENT * max(level - 1, 0) if continued else "")
        out.append(_Line(indent, _code(code) if code else "", comment))
        for t in code:
            braces += (t.text == "{") - (t.text == "}")
            parens += (t.text in ("(", "[")) - (t.text in (")", "]"))
            parens = max(parens, 0)
            prev = t
    return out


def _drop_blanks(lines: list[_Line]) -> list[_Line]:
    """At most one blank line in a row; none at the start or end of the file or of a block."""
    kept: list[_Line] = []
    for i, line in enumerate(lines):
        if line.blank:
            if not kept or kept[-1].blank or kept[-1].code.endswith("{"):
                continue
            nxt = next((n for n in lines[i + 1:] if not n.blank), None)
            if nxt is None or nxt.code.startswith("}"):
                continue
        kept.append(line)
    return kept


def _render(lines: list[_Line]) -> str:
    """Join the lines, aligning the trailing comments of each run of consecutive commented lines."""
    rendered: list[str] = []
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j].code and lines[j].comment:
            j += 1
        if j > i:
            width = max(len(ln.indent + ln.code) for ln in lines[i:j])
            rendered += [(ln.indent + ln.code).ljust(width) + "  " + ln.comment for ln in lines[i:j]]
            i = j
            continue
        ln = lines[i]
        rendered.append("" if ln.blank else ln.indent + (ln.code or ln.comment))
        i += 1
    return "\n".join(rendered) + "\n" if rendered else ""


def same_tree(a_text: str, b_text: str, path: str = "<string>") -> bool:
    """Whether two texts parse to the same AST (spans are not compared)."""
    from regspec.parser import parse

    a, b = parse(a_text, path), parse(b_text, path)
    return a.lets == b.lets and a.blocks == b.blocks


def format_text(text: str, path: str = "<string>", *, verify: bool = True) -> str:
    """The canonical layout of a spec. A spec that does not parse raises its located
    ``RegspecError``; ``verify`` re-parses the result and refuses a layout that parses differently."""
    from regspec.parser import parse

    parse(text, path)  # bad specs are reported as `check` would, never reformatted
    lines = _tokenize(text, path)
    _mark_roles(lines)
    out = _render(_drop_blanks(_layout(lines)))
    if verify and not same_tree(text, out, path):
        raise RuntimeError(f"fmt: the formatted {path} parses differently; file left unchanged")
    return out


def format_file(path: str | Path) -> tuple[str, str]:
    """(original text, formatted text) of a spec file."""
    from regspec.parser import read_spec_text

    text = read_spec_text(path)
    return text, format_text(text, str(path))


def diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"{path} (original)", f"{path} (formatted)"))
