"""Parse `.reg` text into the AST (``regspec.ast``), turning parse errors into located diagnostics.

The parser is lark's LALR(1) parser with its contextual lexer, generated from ``grammar.lark`` by
lark's standalone tool into a per-user cache folder (see ``_parser_module``): a start-up loads it
from there without importing lark, which with lark's table cache cost ~30 ms of every `regspec check`.
"""
from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, Iterator

from regspec import ast
from regspec.diagnostics import Diagnostic, RegspecError, Source, Span

if TYPE_CHECKING:  # the generated parser module defines the same classes
    from lark import Token, Tree
    from lark.exceptions import UnexpectedInput

# A newline ends a statement unless the line obviously continues: inside () or [], after a
# binary operator, comma, '=' or '->', or before a line that opens with a binary operator other
# than '-' (a leading '-' is ambiguous with a new constraint such as `-x <= 0`).
_CONTINUE_AFTER = {"ADDOP", "MULOP", "POWOP", "CMP", "ARROW", "COMMA", "EQUAL", "LPAR", "LSQB", "MINUS"}


_IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")
_KEYWORD = re.compile(r"[A-Za-z_]+")


class GluedKeyword(Exception):
    """A keyword immediately followed by a name character (`letn = 3`, `minimizesum(x)`): the
    contextual lexer would otherwise split it where only the keyword may come."""

    def __init__(self, token: Token, word: str):
        super().__init__(str(token))
        self.token, self.word = token, word


def _refuse_glued_keyword(text: str, tok: Token) -> None:
    if tok.type == "NAME" or not _KEYWORD.fullmatch(str(tok)):
        return
    end = tok.end_pos
    if end < len(text) and _IDENT_CHAR.match(text, end):
        word = re.match(r"[A-Za-z0-9_]*", text[tok.start_pos:]).group(0)
        raise GluedKeyword(tok, word)


class NewlinePostLexer:
    """Drops newlines that do not end a statement. It never buffers a token: lark's contextual
    lexer picks the next token's terminals from the parser state, which must stay in step."""

    always_accept = ("_NL",)
    _LEADING_OP = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\r?\n)*[ \t]*(\*\*|->|[+*/@])")
    _BLANK_RUN = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\r?\n)*")

    def __init__(self) -> None:
        self.text = ""

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        prev: Token | None = None
        lookahead_end, continues = -1, False  # the last leading-operator scan: where it ended, its answer
        for tok in stream:
            _refuse_glued_keyword(self.text, tok)
            if tok.type == "_NL":
                if depth > 0 or (prev is not None and prev.type in _CONTINUE_AFTER):
                    continue
                if prev is not None and prev.type == "_NL":
                    continue
                # every newline of a run of blank or comment lines has the same answer: scan the
                # run once, so a file of many blank lines is checked in linear time
                if tok.end_pos > lookahead_end:
                    m = self._LEADING_OP.match(self.text, tok.end_pos)
                    continues = m is not None
                    lookahead_end = m.end() if m else self._BLANK_RUN.match(self.text, tok.end_pos).end()
                if continues:
                    continue
            elif tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            prev = tok
            yield tok


_LARK_OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)
_GRAMMAR = Path(__file__).with_name("grammar.lark")
_MAGIC = b"regspec standalone parser 2\n"


def _lark_version_text() -> str:
    """lark's ``__init__.py`` (it holds ``__version__``), read without importing lark."""
    from importlib.util import find_spec

    spec = find_spec("lark")
    if spec is None or spec.origin is None:
        raise RegspecError(Diagnostic("regspec needs the `lark` package: pip install lark"))
    return spec.origin + "\0" + Path(spec.origin).read_text(encoding="utf-8", errors="replace")


def _cache_key(grammar: str) -> bytes:
    """What a cached parser was generated from: the grammar, the options, lark's version and
    Python's (the file holds Python bytecode). Stored whole in the file and compared on reading,
    so an edited grammar or an upgrade never reads a stale parser (no hash to collide)."""
    return "\0".join([grammar, repr(sorted(_LARK_OPTIONS.items())), _lark_version_text(), sys.version]).encode()


def _parser_cache_file(key: bytes) -> Path | None:
    """Where the parser for ``key`` is cached: a per-user folder (``REGSPEC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/regspec`` or ``~/.cache/regspec``), the file named by the key's CRC-32
    (two keys sharing a name only make each other regenerate). None when no such folder can be
    made (then the parser is generated in every run)."""
    import os
    import zlib

    root = os.environ.get("REGSPEC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "regspec")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError:
        return None
    return Path(root) / f"grammar-{zlib.crc32(key):08x}.parser"


def _standalone_source(grammar: str) -> str:
    """The Python source of a parser for ``grammar`` from lark's standalone generator: lark's
    parsing and lexing classes, and the LALR tables and terminals as data (the only place that
    imports lark; ~0.3 s to build the tables)."""
    import io

    import lark
    from lark.tools.standalone import gen_standalone

    out = io.StringIO()
    gen_standalone(lark.Lark(grammar, **_LARK_OPTIONS), out=out)  # tables as literals: faster to load than compressed
    return out.getvalue()


def _cache_header(key: bytes, payload: bytes) -> bytes:
    import zlib

    return _MAGIC + len(key).to_bytes(4, "big") + key + zlib.crc32(payload).to_bytes(4, "big")


def _read_cached_code(path: Path, key: bytes) -> CodeType | None:
    """The code object stored in ``path`` for ``key``; None when the file is missing, was made
    from another key or is damaged (its payload's CRC-32 differs)."""
    import marshal

    try:
        data = path.read_bytes()
    except OSError:
        return None
    start = len(_MAGIC) + 4 + len(key) + 4
    if data[:start] != _cache_header(key, data[start:]):
        return None
    try:
        return marshal.loads(data[start:])
    except (EOFError, ValueError, TypeError):
        return None


def _write_cached_code(path: Path, key: bytes, code: CodeType) -> None:
    """Store ``code`` in ``path`` whole or not at all (a temporary file renamed over it, so a
    concurrent run reads the old file or the new one); a folder that is not writable is skipped."""
    import contextlib
    import marshal
    import os
    import tempfile

    payload = marshal.dumps(code)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_cache_header(key, payload) + payload)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class _TerminalScanner:
    """A stand-in for the generated module's ``Scanner`` (lark's): the contextual lexer builds one
    per parser state, and lark's compiles the state's terminals into one regex of alternatives,
    ``(?P<A>...)|(?P<B>...)``, on first use: 28 regexes, ~6 ms of every `regspec check`. This one
    tries the state's terminals in the same order, each by its own regex, compiled once for all
    states. The answer is the same, since an alternation matches with its first alternative that
    matches: the first terminal in that order that matches, with its own match. (Installed only
    where the generated ``Scanner`` has the interface below; regspec never sets ``use_bytes``.)"""

    _compiled: dict[tuple[str, int], re.Pattern] = {}

    def __init__(self, terminals: list, g_regex_flags: int, re_: ModuleType, use_bytes: bool):
        if use_bytes:
            raise ValueError("bytes input is not supported")
        self.terminals = terminals
        self.allowed_types = {t.name for t in terminals}
        self._patterns = [(self._regex(re_, t.pattern.to_regexp(), g_regex_flags), t.name) for t in terminals]

    @classmethod
    def _regex(cls, re_: ModuleType, regexp: str, flags: int) -> re.Pattern:
        key = (regexp, flags)
        if key not in cls._compiled:
            cls._compiled[key] = re_.compile(regexp, flags)
        return cls._compiled[key]

    def match(self, text: Any, pos: int) -> tuple[str, str] | None:
        """(lexeme, terminal name) of the first terminal matching at ``pos`` of a ``TextSlice``."""
        for regex, name in self._patterns:
            m = regex.match(text.text, pos, text.end)
            if m:
                return m.group(0), name
        return None

    def fullmatch(self, text: str) -> str | None:
        """The first terminal matching the whole of ``text`` (a keyword spelled like a name)."""
        for regex, name in self._patterns:
            if regex.fullmatch(text):
                return name
        return None


def _install_terminal_scanner(module: ModuleType) -> bool:
    """Put ``_TerminalScanner`` in the generated module if its ``Scanner`` has the interface it
    replaces (lark 1.2 and later); an older lark keeps its own."""
    import inspect

    original = getattr(module, "Scanner", None)
    if original is None or not hasattr(module, "TextSlice") or not callable(getattr(original, "fullmatch", None)):
        return False
    if list(inspect.signature(original.__init__).parameters) != ["self", "terminals", "g_regex_flags", "re_",
                                                                  "use_bytes"]:
        return False
    module.Scanner = _TerminalScanner
    return True


@functools.lru_cache(maxsize=1)
def _parser_module() -> ModuleType:
    """The generated parser as a module: its bytecode read from the cache file when one is there
    (~7 ms, no lark import), else generated by lark (~0.4 s) and stored there. A damaged file,
    or one made for another grammar, lark or Python, is regenerated; without a writable folder
    every run generates it. The bytecode is stored by regspec itself, so PYTHONDONTWRITEBYTECODE
    does not make every run compile the generated module's ~260 kB of source again (~0.1 s)."""
    grammar = _GRAMMAR.read_text(encoding="utf-8")
    key = _cache_key(grammar)
    path = _parser_cache_file(key)
    code = _read_cached_code(path, key) if path is not None else None
    if code is None:
        code = compile(_standalone_source(grammar), "<parser generated by lark from regspec/grammar.lark>", "exec")
        if path is not None:
            _write_cached_code(path, key, code)
    module = ModuleType("regspec._grammar_parser", "grammar.lark's parser, generated by lark's standalone tool")
    sys.modules[module.__name__] = module  # its dataclasses look their module up there
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[module.__name__]
        raise
    _install_terminal_scanner(module)
    return module


@functools.lru_cache(maxsize=1)
def _lark() -> Any:
    """The parser (a ``Lark`` object of the generated module) with regspec's newline post-lexer."""
    return _parser_module().Lark_StandAlone(postlex=NewlinePostLexer())


def _span(src: Source, meta) -> Span:
    return Span(src, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(src: Source, tok: Token) -> Span:
    return Span(src, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + len(tok))


_INT_LIMIT = 2 ** 63 - 1  # integer literals are 64-bit: shapes, seeds, counts
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
MAX_NESTING = 100  # expression levels; deeper specs are refused before any recursive pass runs
_NESTING_RULES = frozenset({"binop", "neg", "call", "index", "attr", "list", "compare", "arrow", "slice"})


def _number(text: str, span: Span) -> tuple[int | float, bool]:
    """The value of a NUMBER token: a 64-bit integer or a finite float, else a located error."""
    if text.isdigit():
        if len(text) > 19 or int(text) > _INT_LIMIT:
            shown = text if len(text) <= 24 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            raise RegspecError(Diagnostic(f"integer literal {shown} is too large: integers must fit in 64 bits "
                                          f"(at most {_INT_LIMIT})", span,
                                          notes=["write a real number in exponent form, e.g. 1e30"]))
        return int(text), True
    value = float(text)
    if value == float("inf"):
        raise RegspecError(Diagnostic(f"number literal {text} is too large: it overflows a 64-bit float "
                                      "(largest 1.8e308)", span))
    return value, False


def _unescape(raw: str, src: Source, line: int, column: int) -> str:
    """Decode the escapes of a string literal's body (JSON's set: \\" \\\\ \\/ \\n \\t \\r \\b \\f
    \\uXXXX); ``column`` is where the body starts, for a located error on a bad escape."""
    out, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1: i + 2]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", raw[i + 2: i + 6]):
            out.append(chr(int(raw[i + 2: i + 6], 16)))
            i += 6
        else:
            bad = raw[i: i + (6 if nxt == "u" else 2)]
            raise RegspecError(Diagnostic(
                f"invalid escape `{bad}` in a string", Span(src, line, column + i, line, column + i + len(bad)),
                notes=['valid escapes: \\" \\\\ \\/ \\n \\t \\r \\b \\f \\uXXXX; '
                       "to write a backslash, double it"]))
    return "".join(out)


def _check_nesting(src: Source, tree: Tree) -> None:
    """Refuse expressions nested more than ``MAX_NESTING`` levels (unary minus, operator chains,
    calls, lists, ...) with a located error, before the recursive passes could exhaust the stack.
    Iterative, so the check itself has no depth limit."""
    tree_class = type(tree)  # the generated module's Tree
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING_RULES:
            depth += 1
            if depth > MAX_NESTING:
                raise RegspecError(Diagnostic(
                    f"expression nested too deeply: more than {MAX_NESTING} levels", _span(src, node.meta),
                    notes=["each unary minus, call, list, index and each term of a chain of operators adds a "
                           "level; sum a list or an array, e.g. sum(x) or sum([a, b, c]), rather than chaining "
                           "many `+`"]))
        stack.extend((c, depth) for c in node.children if isinstance(c, tree_class))


def _declared_names(s: ast.Stmt) -> list[str]:
    if isinstance(s, ast.DataDecl):
        return list(s.names)
    if isinstance(s, (ast.ParamDecl, ast.VarDecl, ast.Let)):
        return [s.name]
    return []


def _check_scopes(lets: list[ast.Let], blocks: list[ast.Block]) -> None:
    """One declaration per name: the file-level lets are shared by every block (problem or
    train), so a block may not declare one of them again, nor any name twice."""
    file_level: dict[str, Span] = {}
    for let in lets:
        if let.name in file_level:
            raise RegspecError(Diagnostic(f"`{let.name}` is declared twice at file level (first declared at line "
                                          f"{file_level[let.name].line})", let.span))
        file_level[let.name] = let.span
    for block in blocks:
        seen: dict[str, Span] = {}
        for s in block.body:
            for name in _declared_names(s):
                if name in file_level:
                    raise RegspecError(Diagnostic(
                        f"`{name}` is already a file-level `let` (declared at line {file_level[name].line}); "
                        "a block cannot declare it again", s.span,
                        notes=["rename one of them: a file-level name is shared by every block"]))
                if name in seen:
                    raise RegspecError(Diagnostic(f"`{name}` is declared twice in this block (first declared at "
                                                  f"line {seen[name].line})", s.span))
                seen[name] = s.span


class _ToAst:
    """The parse tree to the AST, children first: a method per rule (or alias) of grammar.lark,
    called with the rule's ``meta`` (its position) and its children already converted (tokens
    stay tokens, an absent optional part is None)."""

    def __init__(self, src: Source):
        self.src = src

    def transform(self, tree: Tree) -> ast.Spec:
        """Iterative, so the depth of a tree never meets Python's recursion limit."""
        tree_class = type(tree)  # the generated module's Tree
        done: list[Any] = []
        todo: list[tuple[Any, bool]] = [(tree, False)]
        while todo:
            node, children_done = todo.pop()
            if not isinstance(node, tree_class):
                done.append(node)
            elif children_done:
                n = len(node.children)
                children = done[len(done) - n:]
                del done[len(done) - n:]
                done.append(getattr(self, node.data)(node.meta, children))
            else:
                todo.append((node, True))
                todo.extend((c, False) for c in reversed(node.children))
        return done[0]

    def sp(self, meta) -> Span:
        return _span(self.src, meta)

    # ---- expressions
    def number(self, meta, c):
        value, is_int = _number(str(c[0]), self.sp(meta))
        return ast.Num(value, is_int, span=self.sp(meta))

    def string(self, meta, c):
        raw = str(c[0])[1:-1]
        value = _unescape(raw, self.src, c[0].line, c[0].column + 1) if "\\" in raw else raw
        return ast.Str(value, span=self.sp(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), span=self.sp(meta))

    def true(self, meta, c):
        return ast.Bool(True, span=self.sp(meta))

    def false(self, meta, c):
        return ast.Bool(False, span=self.sp(meta))

    def binop(self, meta, c):
        return ast.BinOp(str(c[1]), c[0], c[2], span=self.sp(meta))

    def neg(self, meta, c):
        return ast.Neg(c[0], span=self.sp(meta))

    def call(self, meta, c):
        func, arguments = c
        args, kwargs = [], []
        for a in arguments or []:
            (kwargs if isinstance(a, ast.Keyword) else args).append(a)
        if args and kwargs and any(a.span.line > kwargs[0].span.line or
                                   (a.span.line == kwargs[0].span.line and a.span.column > kwargs[0].span.column)
                                   for a in args):
            bad = next(a for a in args if (a.span.line, a.span.column) > (kwargs[0].span.line, kwargs[0].span.column))
            raise RegspecError(Diagnostic("positional argument follows keyword argument", bad.span))
        return ast.Call(func, args, kwargs, span=self.sp(meta))

    def arguments(self, meta, c):
        return list(c)

    def kwarg(self, meta, c):
        return ast.Keyword(str(c[0]), c[1], span=self.sp(meta))

    def phrase_arg(self, meta, c):
        return ast.Keyword(str(c[0]), c[1], span=self.sp(meta))

    def range(self, meta, c):
        lo, hi = (ast.Num(*_number(str(t), _tok_span(self.src, t)), span=_tok_span(self.src, t)) for t in c)
        return ast.Range(lo, hi, span=self.sp(meta))

    def arrow(self, meta, c):
        return ast.Arrow(c[0], c[2], span=self.sp(meta))

    def compare(self, meta, c):
        return ast.Compare(str(c[1]), c[0], c[2], span=self.sp(meta), op_span=_tok_span(self.src, c[1]))

    def index(self, meta, c):
        return ast.Index(c[0], c[1], span=self.sp(meta))

    def subscripts(self, meta, c):
        return list(c)

    def slice(self, meta, c):
        return ast.Slice(c[0], c[1], span=self.sp(meta))

    def attr(self, meta, c):
        return ast.Attr(c[0], str(c[1]), span=self.sp(meta))

    def list(self, meta, c):
        return ast.ListExpr([x for x in c if x is not None], span=self.sp(meta))

    # ---- statements
    def name_list(self, meta, c):
        return [str(t) for t in c]

    def shape(self, meta, c):
        return list(c)

    def data_decl(self, meta, c):
        return ast.DataDecl(c[0], c[1], span=self.sp(meta))

    def param_decl(self, meta, c):
        name, shape, value, member = c
        domain = None
        if member is not None:
            domain = ast.Domain("in", member, span=Span(self.src, value.span.end_line, value.span.end_column + 1,
                                                        member.span.end_line, member.span.end_column))
        elif isinstance(value, ast.Compare):  # `param lam = 0.1 >= 0`: the value and its domain
            op = self._inequality(value, "a domain is `>= VALUE`, `<= VALUE` or `in SET`")
            right = value.right.span
            domain = ast.Domain(op, value.right, span=Span(self.src, value.op_span.line, value.op_span.column,
                                                           right.end_line, right.end_column))
            value = value.left
        return ast.ParamDecl(str(name), shape, value, domain, span=self.sp(meta))

    def _inequality(self, c: ast.Compare, what: str, equality: bool = False) -> str:
        """The operator of a comparison that states a domain or a constraint: `<=`, `>=` (and
        `==` where allowed); strict and `!=` comparisons are masks of data only."""
        if c.op in ("<=", ">=") or (equality and c.op == "=="):
            return c.op
        if c.op in ("<", ">"):
            note = f"strict inequalities are not supported (as in CVXPY): write `{c.op}=`"
        elif c.op == "!=":
            note = "`!=` compares data only (a mask such as `labels != 0`)"
        else:
            note = f"`{c.op}` is not allowed here"
        raise RegspecError(Diagnostic(f"{what}, not `{c.op}`", c.op_span, notes=[note]))

    def var_decl(self, meta, c):
        name, shape, domain = c
        return ast.VarDecl(str(name), shape, domain, span=self.sp(meta))

    def domain_cmp(self, meta, c):
        op = str(c[0])
        if op not in ("<=", ">="):
            notes = [f"strict inequalities are not supported (as in CVXPY): write `{op}=`"] if op in ("<", ">") else []
            raise RegspecError(Diagnostic(f"a domain is `>= VALUE`, `<= VALUE` or `in SET`, not `{op}`",
                                          _tok_span(self.src, c[0]), notes=notes))
        return ast.Domain(op, c[1], span=self.sp(meta))

    def domain_in(self, meta, c):
        return ast.Domain("in", c[0], span=self.sp(meta))

    def let_stmt(self, meta, c):
        return ast.Let(str(c[0]), c[1], span=self.sp(meta))

    def objective(self, meta, c):
        return ast.Objective(str(c[0]), c[1], span=self.sp(meta))

    def compare_constraint(self, meta, c):
        cmp = self._comparison(c[0], "a constraint")
        op = self._inequality(cmp, "a constraint is `EXPR == EXPR`, `EXPR <= EXPR`, `EXPR >= EXPR` or `EXPR in SET`",
                              equality=True)
        return ast.Constraint(op, cmp.left, cmp.right, span=self.sp(meta))

    def _comparison(self, e: ast.Expr, what: str) -> ast.Compare:
        if not isinstance(e, ast.Compare):
            raise RegspecError(Diagnostic(f"{what} needs a comparison (`==`, `<=` or `>=`) or `in SET`", e.span))
        return e

    def member_constraint(self, meta, c):
        return ast.Constraint("in", c[0], c[1], span=self.sp(meta))

    def subject_block(self, meta, c):
        return [x for x in c if x is not None]

    def subject_one(self, meta, c):
        return [c[0]]

    def regularize_stmt(self, meta, c):
        return ast.Regularize(c[0], c[1], list(c[2:-1]), c[-1], span=self.sp(meta))

    def metric_name(self, meta, c):
        return ast.MetricName(str(c[0]), span=_tok_span(self.src, c[0]))

    def via(self, meta, c):
        return str(c[0])

    def constrain_stmt(self, meta, c):
        return ast.Constrain(c[0], c[1], list(c[2:-1]), c[-1], span=self.sp(meta))

    def lagrange_stmt(self, meta, c):
        cmp = self._comparison(c[0], "`constrain`")
        op = self._inequality(cmp, "a constraint is `EXPR == EXPR`, `EXPR <= EXPR`, `EXPR >= EXPR` or `EXPR in SET`",
                              equality=True)
        return ast.LagrangeConstrain(cmp.left, op, cmp.right, c[1], list(c[2:-1]), c[-1], span=self.sp(meta))

    def transform_stmt(self, meta, c):
        return ast.Transform(c[0], list(c[1:]), span=self.sp(meta))

    def _gate(self, meta, kind, value, unit_tok, allowed):
        unit = str(unit_tok)
        if unit not in allowed:
            raise RegspecError(Diagnostic(f"expected {' or '.join(repr(a) for a in allowed)} after `{kind}`, "
                                          f"got `{unit}`", _tok_span(self.src, unit_tok)))
        return ast.Gate(kind, value, unit.rstrip("s") if unit != "steps" else "steps", span=self.sp(meta))

    def gate_every(self, meta, c):
        return self._gate(meta, "every", c[0], c[1], ("steps", "step", "epochs", "epoch"))

    def gate_from(self, meta, c):
        return self._gate(meta, "from", c[1], c[0], ("epoch", "step"))

    def gate_until(self, meta, c):
        return self._gate(meta, "until", c[1], c[0], ("epoch", "step"))

    def model_stmt(self, meta, c):
        return ast.ModelStmt(c[0], span=self.sp(meta))

    def train_data_stmt(self, meta, c):
        return ast.TrainData(c[0], span=self.sp(meta))

    def loss_stmt(self, meta, c):
        return ast.LossStmt(c[0], span=self.sp(meta))

    def optimizer_stmt(self, meta, c):
        return ast.OptimizerStmt(c[0], span=self.sp(meta))

    def setting_stmt(self, meta, c):
        return ast.Setting(str(c[0]), c[1], span=self.sp(meta))

    def rewrite_stmt(self, meta, c):
        return ast.Rewrite(c[0], c[2], span=self.sp(meta))

    def reparam_stmt(self, meta, c):
        return ast.Reparametrize(c[0], c[1], span=self.sp(meta))

    def freeze_stmt(self, meta, c):
        return ast.Freeze(c[0], span=self.sp(meta))

    def init_stmt(self, meta, c):
        return ast.Init(c[0], span=self.sp(meta))

    def _block(self, cls, meta, c):
        name_tok = c[0]
        body: list = []
        for s in c[1:]:
            if isinstance(s, list):
                body.extend(s)
            elif s is not None:
                body.append(s)
        return cls(str(name_tok), body, span=self.sp(meta), name_span=_tok_span(self.src, name_tok))

    def problem_block(self, meta, c):
        return self._block(ast.ProblemBlock, meta, c)

    def train_block(self, meta, c):
        return self._block(ast.TrainBlock, meta, c)

    def start(self, meta, c):
        items = [x for x in c if x is not None]
        lets = [x for x in items if isinstance(x, ast.Let)]
        blocks = [x for x in items if isinstance(x, ast.Block)]
        _check_scopes(lets, blocks)
        span = self.sp(meta) if not getattr(meta, "empty", True) else Span(self.src, 1, 1, 1, 1)
        return ast.Spec(self.src, lets, blocks, span=span)


_TOKEN_WORDS = {
    "_NL": "end of line", "$END": "end of file", "RBRACE": "`}`", "LBRACE": "`{`", "_LBRACE": "`{`",
    "RPAR": "`)`", "LPAR": "`(`", "RSQB": "`]`", "LSQB": "`[`", "COMMA": "`,`", "EQUAL": "`=`",
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "CMP": "a comparison (== != <= >= < >)",
    "ARROW": "`->`", "COLON": "`:`", "SEMICOLON": "`;`", "ADDOP": "`+` or `-`", "MULOP": "`*`, `/` or `@`",
    "MINUS": "`-`", "POWOP": "`**`", "DOT": "`.`", "SENSE": "minimize/maximize", "SETTING": "a setting",
}


def _expected_words(expected: set[str]) -> str:
    words = []
    for e in sorted(expected):
        if e in _TOKEN_WORDS:
            words.append(_TOKEN_WORDS[e])
        elif e.isupper():
            words.append(f"`{e.lower()}`")
        else:
            words.append(e)
    words = sorted(set(words))
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


def _syntax_error(src: Source, e: UnexpectedInput) -> RegspecError:
    errors = _parser_module()  # the generated module's exception classes
    line, col = max(1, e.line), max(1, e.column)
    if isinstance(e, errors.UnexpectedCharacters):
        ch = src.line(line)[col - 1: col] or "?"
        notes = ['strings are written in double quotes: "fro"'] if ch == "'" else []
        return RegspecError(Diagnostic(f"unexpected character `{ch}`", Span(src, line, col, line, col + 1), notes=notes))
    if isinstance(e, errors.UnexpectedEOF) or (isinstance(e, errors.UnexpectedToken) and e.token.type == "$END"):
        lines = src.text.rstrip("\n").split("\n")
        line, col = len(lines), len(lines[-1]) + 1
        msg = "unexpected end of file"
        notes = []
        if src.text.count("{") > src.text.count("}"):
            msg += ": missing `}`"
            opener = _unclosed_brace(src.text)
            if opener:
                notes.append(f"the block opened at line {opener[0]}, column {opener[1]} is not closed")
        return RegspecError(Diagnostic(msg, Span(src, line, col, line, col + 1), notes=notes))
    tok = e.token
    expected = _expected_words(set(getattr(e, "expected", ()) or ()))
    shown = "end of line" if tok.type == "_NL" else f"`{tok}`"
    span = _tok_span(src, tok) if tok.type != "_NL" else Span(src, line, col, line, col + 1)
    notes = ["comparisons do not chain: write `lo <= x <= hi` as two constraints, `x >= lo` and `x <= hi`"
             ] if tok.type == "CMP" else []
    return RegspecError(Diagnostic(f"unexpected {shown}; expected {expected}", span, notes=notes))


def _unclosed_brace(text: str) -> tuple[int, int] | None:
    stack = []
    for lineno, line in enumerate(text.split("\n"), 1):
        code = line.split("#", 1)[0]
        for col, ch in enumerate(code, 1):
            if ch == "{":
                stack.append((lineno, col))
            elif ch == "}" and stack:
                stack.pop()
    return stack[-1] if stack else None


def parse(text: str, path: str = "<string>") -> ast.Spec:
    """Parse `.reg` text; raise ``RegspecError`` with a located diagnostic on bad syntax.
    A leading UTF-8 byte-order mark is ignored, as editors on Windows write one."""
    if text.startswith("\ufeff"):
        text = text[1:]
    src = Source(path, text)
    parser = _lark()
    try:
        body = text if text.endswith("\n") else text + "\n"
        parser.options.postlex.text = body
        tree = parser.parse(body)
    except _parser_module().UnexpectedInput as e:
        raise _syntax_error(src, e) from None
    except GluedKeyword as e:
        tok = e.token
        raise RegspecError(Diagnostic(
            f"`{e.word}` is not a keyword or name here: write a space after `{tok}`",
            Span(src, tok.line, tok.column, tok.line, tok.column + len(e.word)))) from None
    _check_nesting(src, tree)
    return _ToAst(src).transform(tree)


def _decode(p: Path, data: bytes) -> str:
    """The text of a spec file; bytes that are not UTF-8 are a located error (line and column
    from the byte offset), shown against the text decoded with replacement characters."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        column = len(data[line_start:e.start].decode("utf-8", errors="replace")) + 1
        src = Source(str(p), data.decode("utf-8", errors="replace"))
        bad = data[e.start:e.end].hex(" ")
        raise RegspecError(Diagnostic(f"the spec file is not valid UTF-8: byte{'s' if e.end - e.start > 1 else ''} "
                                      f"{bad} cannot be decoded", Span(src, line, column, line, column + 1),
                                      notes=["save the file as UTF-8"])) from None


def parse_file(path: str | Path) -> ast.Spec:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RegspecError(Diagnostic(f"no such spec file: {p}")) from None
    except OSError as e:
        raise RegspecError(Diagnostic(f"cannot read spec file {p}: {e.strerror or e}")) from None
    return parse(_decode(p, data), str(path))
