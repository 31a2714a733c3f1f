"""The TextMate grammar (editors/reg.tmLanguage.json): current, and it tokenizes every bundled spec.

A small TextMate engine in Python runs the grammar's own regular expressions line by line the way
an editor does (`match` rules with captures, `begin`/`end` rules with inner patterns, `include`
from the repository; at each position the leftmost match wins, ties go to the end pattern, then to
pattern order). Every character must be covered by a rule or be whitespace, and words come out
with the scopes an editor theme needs.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from regspec import docs_gen

ROOT = Path(__file__).resolve().parents[1]
GRAMMAR_FILE = ROOT / "editors" / "reg.tmLanguage.json"
SPECS = sorted((ROOT / "specs").glob("*.reg"))


@dataclass
class Token:
    line: int
    start: int
    end: int
    scopes: tuple[str, ...]
    text: str


class Engine:
    def __init__(self, grammar: dict):
        self.grammar = grammar
        self.repo = grammar.get("repository", {})
        self._re: dict[str, re.Pattern] = {}

    def rx(self, pattern: str) -> re.Pattern:
        if pattern not in self._re:
            self._re[pattern] = re.compile(pattern)
        return self._re[pattern]

    def expand(self, patterns: list[dict]) -> list[dict]:
        out = []
        for p in patterns:
            if "include" in p:
                ref = p["include"]
                target = self.grammar if ref == "$self" else self.repo[ref.lstrip("#")]
                out += self.expand(target["patterns"]) if "patterns" in target and "match" not in target \
                    and "begin" not in target else [target]
            else:
                out.append(p)
        return out

    def tokenize(self, text: str) -> tuple[list[Token], list[tuple[int, int, str]]]:
        tokens: list[Token] = []
        uncovered: list[tuple[int, int, str]] = []
        stack: list[dict] = []
        for lineno, line in enumerate(text.split("\n"), 1):
            pos = 0
            while pos <= len(line):
                rule, m, is_end = self._next(line, pos, stack)
                if m is None:
                    self._gap(line, lineno, pos, len(line), stack, tokens, uncovered)
                    break
                self._gap(line, lineno, pos, m.start(), stack, tokens, uncovered)
                base = tuple(r["name"] for r in stack if "name" in r)
                if is_end:
                    self._emit(m, lineno, base, rule.get("endCaptures", rule.get("captures", {})), tokens)
                    stack.pop()
                elif "begin" in rule:
                    scopes = base + ((rule["name"],) if "name" in rule else ())
                    self._emit(m, lineno, scopes, rule.get("beginCaptures", rule.get("captures", {})), tokens)
                    stack.append(rule)
                else:
                    scopes = base + ((rule["name"],) if "name" in rule else ())
                    self._emit(m, lineno, scopes, rule.get("captures", {}), tokens)
                if m.end() == m.start():
                    if is_end or "begin" in rule:
                        pos = m.end()
                        if pos >= len(line) and is_end:
                            break
                        continue
                    pos += 1  # an empty match covers nothing
                else:
                    pos = m.end()
                if pos >= len(line) and not stack:
                    break
        return tokens, uncovered

    def _next(self, line: str, pos: int, stack: list[dict]):
        candidates = []
        if stack:
            m = self.rx(stack[-1]["end"]).search(line, pos)
            if m:
                candidates.append((m.start(), 0, stack[-1], m, True))
        patterns = self.expand(stack[-1].get("patterns", []) if stack else self.grammar["patterns"])
        for i, rule in enumerate(patterns, 1):
            m = self.rx(rule.get("match") or rule["begin"]).search(line, pos)
            if m:
                candidates.append((m.start(), i, rule, m, False))
        if not candidates:
            return None, None, False
        _, _, rule, m, is_end = min(candidates, key=lambda c: (c[0], c[1]))
        return rule, m, is_end

    @staticmethod
    def _emit(m: re.Match, lineno: int, scopes: tuple[str, ...], captures: dict, tokens: list[Token]) -> None:
        tokens.append(Token(lineno, m.start(), m.end(), scopes, m.group()))
        for group, cap in captures.items():
            if m.group(int(group)) is not None and "name" in cap:
                tokens.append(Token(lineno, m.start(int(group)), m.end(int(group)), scopes + (cap["name"],),
                                    m.group(int(group))))

    @staticmethod
    def _gap(line, lineno, start, end, stack, tokens, uncovered) -> None:
        """Text no rule matched: inside a begin/end rule it takes the rule's scope; outside it must be blank."""
        if start >= end:
            return
        if stack:
            tokens.append(Token(lineno, start, end, tuple(r["name"] for r in stack if "name" in r), line[start:end]))
        elif line[start:end].strip():
            gap = line[start:end]
            uncovered.append((lineno, start + 1 + len(gap) - len(gap.lstrip()), gap.strip()))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(json.loads(GRAMMAR_FILE.read_text()))


def test_grammar_is_current() -> None:
    assert GRAMMAR_FILE.read_text() == docs_gen.render_grammar(), \
        "editors/reg.tmLanguage.json is stale: run .venv/bin/python -m regspec.docs_gen --write"


def test_grammar_is_textmate_shaped() -> None:
    g = json.loads(GRAMMAR_FILE.read_text())
    assert g["scopeName"] == "source.reg" and g["fileTypes"] == ["reg"]
    for name, rule in g["repository"].items():
        assert ("match" in rule) != ("begin" in rule), name
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])
    pkg = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    assert pkg["contributes"]["grammars"][0]["scopeName"] == "source.reg"
    assert (ROOT / "editors" / "vscode" / pkg["contributes"]["grammars"][0]["path"]).resolve() == GRAMMAR_FILE


def _scope_of(tokens: list[Token], text: str) -> set[str]:
    """The innermost scopes given to every occurrence of a whole token text."""
    return {t.scopes[-1] for t in tokens if t.text == text and t.scopes}


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_character_of_every_bundled_spec_is_covered(engine: Engine, path: Path) -> None:
    tokens, uncovered = engine.tokenize(path.read_text())
    assert not uncovered, f"{path.name}: text no rule matches: {uncovered[:5]}"
    assert tokens
    comments = [t for t in tokens if t.scopes and t.scopes[-1].startswith("comment.")]
    assert all(t.text.startswith("#") for t in comments)
    from regspec.fmt import _tokenize  # the formatter's lexer, which follows grammar.lark's terminals

    expected = [t.text for line in _tokenize(path.read_text(), str(path)) for t in line if t.kind == "comment"]
    assert [t.text for t in comments] == expected


def test_words_get_their_scopes(engine: Engine) -> None:
    tokens, _ = engine.tokenize((ROOT / "specs" / "lasso.reg").read_text())
    assert _scope_of(tokens, "minimize") == {"keyword.other.reg"}
    assert _scope_of(tokens, "norm1") == {"support.function.reg"}
    assert _scope_of(tokens, "sum_squares") == {"support.function.reg"}
    assert _scope_of(tokens, "dataset") == {"support.function.reg"}
    assert _scope_of(tokens, "problem") == {"keyword.control.block.reg"}
    assert _scope_of(tokens, "lasso") == {"entity.name.section.reg"}
    assert _scope_of(tokens, "diabetes") == {"string.quoted.double.reg"}  # a string's content
    assert _scope_of(tokens, '"') == {"string.quoted.double.reg"}
    assert _scope_of(tokens, "true") == {"constant.language.reg"}
    tokens, _ = engine.tokenize((ROOT / "specs" / "train_spectral.reg").read_text())
    assert _scope_of(tokens, "param") == {"support.function.selector.reg"}
    assert _scope_of(tokens, "spectral_ball") == {"support.type.set.reg"}
    assert _scope_of(tokens, "constrain") == {"keyword.other.reg"}
    assert _scope_of(tokens, "cosine") == {"support.function.reg"}
    assert _scope_of(tokens, "->") == {"keyword.operator.reg"}
    assert _scope_of(tokens, "2.0") == {"constant.numeric.reg"}


def test_catalogue_words_never_fall_through_to_plain_names(engine: Engine) -> None:
    from regspec.compiler.catalogue import ATOMS, SETS

    known = set(ATOMS) | set(SETS)
    for path in SPECS:
        tokens, _ = engine.tokenize(path.read_text())
        plain = {t.text for t in tokens if t.scopes and t.scopes[-1] in ("variable.other.reg", "entity.name.function.reg")}
        assert not plain & known, (path.name, plain & known)


def test_strings_escapes_and_numbers(engine: Engine) -> None:
    tokens, uncovered = engine.tokenize('let s = "a \\"b\\" # not a comment"  # a comment\nlet x = 1.5e-3 * 2\n')
    assert not uncovered
    assert [t.text for t in tokens if t.scopes[-1].startswith("comment.")] == ["# a comment"]
    assert {t.text for t in tokens if t.scopes[-1] == "constant.character.escape.reg"} == {'\\"'}
    assert _scope_of(tokens, "1.5e-3") == {"constant.numeric.reg"}
    _, uncovered = engine.tokenize("let x = 1 $ 2\n")
    assert uncovered == [(1, 11, "$")]  # the harness does report text no rule covers
