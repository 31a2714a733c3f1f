"""Private helpers shared by the training building blocks (argument checking, glob patterns)."""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Iterable, Mapping

from regspec.diagnostics import RegspecError, Span, did_you_mean, error


def signature_params(fn: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """The named parameters of ``fn`` (``self`` and ``skip`` removed), or ``{}`` if uninspectable."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    skip = set(skip) | {"self"}
    return {n: p for n, p in sig.parameters.items() if n not in skip}


def accepts_var_kwargs(fn: Callable[..., Any]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature_params(fn).values())


def _spelled(name: str) -> str:
    """A keyword as a spec writes it: Python's ``from_`` is the spec's ``from``."""
    import keyword

    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def check_kwargs(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    what: str,
    span: Span | None = None,
    skip: Iterable[str] = (),
    args: tuple = (),
) -> None:
    """Raise a ``RegspecError`` if ``fn(*args, **kwargs)`` would fail to bind.

    Unknown keyword names get a did-you-mean note and the list of accepted names; missing
    required arguments are named. Functions whose signature cannot be inspected pass.
    """
    params = signature_params(fn, skip)
    if not params:
        return
    accepted = [
        n for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if not accepts_var_kwargs(fn):
        for k in kwargs:
            if k not in accepted:
                notes = did_you_mean(k, accepted)
                notes.append("accepted arguments: " + ", ".join(f"`{_spelled(a)}`" for a in accepted))
                raise error(f"{what} has no argument `{k}`", span, notes)
    try:
        sig = inspect.Signature([p for p in params.values()])
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise error(f"bad arguments for {what}: {exc}", span) from None


def call_checked(
    fn: Callable[..., Any], what: str, span: Span | None = None, *args: Any, **kwargs: Any
) -> Any:
    """Check ``kwargs`` against ``fn``'s signature, then call it; wrap value errors as RegspecError."""
    check_kwargs(fn, kwargs, what, span, args=args)
    try:
        return fn(*args, **kwargs)
    except RegspecError:
        raise
    except (TypeError, ValueError) as exc:
        raise error(f"{what} rejected its arguments: {exc}", span) from None


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a dotted-name glob to an anchored regex.

    ``*`` matches within one dotted component (no ``.``), ``**`` matches any run of characters
    including dots (so ``a.**`` is everything under ``a``, and ``**.weight`` every weight),
    ``?`` one non-dot character, ``[...]`` a character class. Everything else is literal.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                # `**.` may also match zero components: `**.weight` matches `weight`
                if i + 2 < n and pattern[i + 2] == ".":
                    out.append(r"(?:.*\.)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                continue
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def compile_name_pattern(pattern: str, span: Span | None = None) -> re.Pattern[str]:
    """``re:REGEX`` (full match) or a dotted glob (see ``glob_to_regex``)."""
    if pattern.startswith("re:"):
        from regspec.compiler.train_plan import check_name_regex  # refuses backtracking hazards

        return check_name_regex(pattern[3:], span)
    return glob_to_regex(pattern)


def generalize(name: str) -> str:
    """``layers.0.weight`` -> ``layers.*.weight`` (numeric components become ``*``)."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


def is_low_precision(t: Any) -> bool:
    """Whether tensor ``t`` is bfloat16 or float16: prox steps, projections and spectral maps on it
    run in float32 (torch has no SVD, eigh or QR in them) and are rounded once."""
    import torch

    return t.dtype in (torch.bfloat16, torch.float16)


def primary_tensor(value: Any) -> Any:
    """The tensor a selector means by a module's or a model's output (``act(...)``, ``output``).

    A tensor is itself; a tuple or list its first element that is not ``None`` (``(hidden,
    attn_weights)`` of an attention block); a mapping (a ``dict``, or transformers' ``ModelOutput``, an ``OrderedDict``)
    its ``logits`` when present, else its first value that is not ``loss`` and not ``None`` (the
    ``last_hidden_state`` of a backbone); applied until a tensor or a leaf is reached. Anything
    else (an fx ``Proxy``, ``None``, a custom object) is returned as it is.
    """
    from collections.abc import Mapping as _Mapping

    import torch

    for _ in range(16):  # nesting depth bound: outputs are shallow
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, _Mapping):
            if isinstance(value.get("logits"), torch.Tensor):
                return value["logits"]
            value = next((v for k, v in value.items() if k != "loss" and v is not None), None)
        elif isinstance(value, (tuple, list)) and value:
            value = next((v for v in value if v is not None), None)
        else:
            return value
    return value
