"""Built-in models and user models by import path.

``build_model(name, **kwargs)`` returns an ``nn.Module``. Built-ins, and the names of their
modules (what ``param("...")`` and ``act("...")`` selectors see):

``linear(in, out, bias=True)``
    ``head`` (``nn.Linear``). ``param("head.weight")``.

``mlp(in, hidden=[...], out, act="relu", bias=True, dropout=0.0)``
    ``layers.N`` (``nn.Linear``, the N-th hidden layer), ``acts.N`` (its activation module,
    ``nn.ReLU``/``nn.GELU``/...), ``drops.N`` (``nn.Dropout``, only when ``dropout > 0``),
    ``head`` (``nn.Linear``, the output layer). ``forward(x) = head(a_K(...a_0(layers.0(x))))``.
    So ``param("layers.*.weight")`` selects the hidden weights, ``act("layers.*")`` taps the
    *pre-activations* ``z_l = W_l h_{l-1} + b_l`` and ``act("acts.*")`` the *post-activations*
    ``h_l = σ(z_l)`` (the tensor ProSparse-style activation sparsity penalizes).

``cnn(in_channels=1, image=8, channels=[16, 32], out=10, act="relu", kernel=3, flat_input=False)``
    per stage N: ``layers.N`` (``nn.Conv2d``, kernel×kernel, same padding), ``acts.N``,
    ``pools.N`` (``nn.MaxPool2d(2)``); then ``flatten`` and ``head`` (``nn.Linear``). Input
    ``(B, in_channels, image, image)``; with ``flat_input=True`` a leading ``unflatten`` module
    accepts ``(B, in_channels*image*image)``.

``transformer(in | vocab, d_model=32, heads=4, layers=2, out=10, seq_len=8, ff=None, act="gelu", dropout=0.0)``
    a small pre-norm encoder: ``embed`` (``nn.Linear(in, d_model)``, or ``nn.Embedding(vocab,
    d_model)``), root parameter ``pos`` (learned positions, ``1 × seq_len × d_model``), blocks
    ``blocks.N`` with ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``ff.0`` (Linear),
    ``ff.1`` (activation), ``ff.2`` (Linear); then ``norm`` and ``head``. Features input is
    reshaped to ``(B, seq_len, in)``, so 8×8 digits (flat ``(B, 64)`` or ``(B, 1, 8, 8)``) are
    8 tokens of 8 features with ``in=8, seq_len=8``. Tokens are mean-pooled before ``head``.

The keyword ``in`` (a Python keyword) arrives as a dict key and is accepted as an alias of
``in_features``. User models: ``build_model("pkg.mod:Class", **kwargs)`` imports ``Class`` and
calls it with the keyword arguments; it must return an ``nn.Module``.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import site
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from regspec.compiler.train_plan import ACTIVATION_OPTIONS, MODEL_NAMES, MODEL_OPTIONS, same_names
from regspec.diagnostics import RegspecError, Span, did_you_mean, error

from ._util import check_kwargs

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "LinearModel",
    "MLP",
    "CNN",
    "Transformer",
    "build_model",
    "load_user_object",
    "make_activation",
    "allow_imports",
    "user_code_origin",
]


# ---------------------------------------------------------------------------------------------
# activations

class FATReLU(nn.Module):
    """FATReLU_τ(x) = x · 1[x > τ] (ProSparse's threshold-shifted ReLU; τ = 0 is ReLU)."""

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x > self.threshold).to(x.dtype)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


#: activation name -> module factory (keyword arguments are passed through)
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "fatrelu": FATReLU,
}
same_names(ACTIVATIONS, ACTIVATION_OPTIONS, "activations")


def make_activation(name: str, span: Span | None = None, **kwargs: Any) -> nn.Module:
    """A fresh activation module by (case-insensitive) name: relu, gelu, tanh, silu, sigmoid,
    identity, fatrelu(threshold)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise error(
            f"unknown activation `{name}`",
            span,
            did_you_mean(key, ACTIVATIONS) + ["known activations: " + ", ".join(ACTIVATIONS)],
        )
    return ACTIVATIONS[key](**kwargs)


# ---------------------------------------------------------------------------------------------
# built-in models

class LinearModel(nn.Module):
    """y = head(x) = x Wᵀ + b (multinomial logistic or linear regression)."""

    def __init__(self, in_features: int, out: int, bias: bool = True):
        super().__init__()
        self.head = nn.Linear(int(in_features), int(out), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class MLP(nn.Module):
    """h_0 = x, h_l = σ(layers.(l-1)(h_{l-1})) for each hidden width, y = head(h_L)."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] | int,
        out: int,
        act: str = "relu",
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]
        dims = [int(in_features), *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:]))
        self.acts = nn.ModuleList(make_activation(act) for _ in widths)
        self.drops = nn.ModuleList(nn.Dropout(dropout) for _ in widths) if dropout > 0 else None
        self.head = nn.Linear(dims[-1], int(out), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i, (layer, act) in enumerate(zip(self.layers, self.acts)):
            h = act(layer(h))
            if self.drops is not None:
                h = self.drops[i](h)
        return self.head(h)


class CNN(nn.Module):
    """Stages conv(k×k, same) → σ → maxpool(2), then flatten and a linear head."""

    def __init__(
        self,
        in_channels: int = 1,
        image: int = 8,
        channels: Sequence[int] = (16, 32),
        out: int = 10,
        act: str = "relu",
        kernel: int = 3,
        flat_input: bool = False,
    ):
        super().__init__()
        chans = [int(in_channels), *[int(c) for c in channels]]
        size = int(image)
        for _ in channels:
            size //= 2
        if size < 1:
            raise error(
                f"cnn: image size {image} is too small for {len(channels)} pooling stages",
                None,
                [f"each stage halves the image; use at most {max(0, int(math.log2(max(1, int(image)))))} stages"],
            )
        self.unflatten = nn.Unflatten(1, (chans[0], int(image), int(image))) if flat_input else None
        self.layers = nn.ModuleList(
            nn.Conv2d(a, b, int(kernel), padding=int(kernel) // 2) for a, b in zip(chans[:-1], chans[1:])
        )
        self.acts = nn.ModuleList(make_activation(act) for _ in channels)
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in channels)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(chans[-1] * size * size, int(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unflatten is not None:
            x = self.unflatten(x)
        for conv, act, pool in zip(self.layers, self.acts, self.pools):
            x = pool(act(conv(x)))
        return self.head(self.flatten(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention: qkv = x W_qkvᵀ, softmax(QKᵀ/√d_h) V per head, then proj."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise error(f"transformer: d_model={d_model} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.scale = 1.0 / math.sqrt(d_model // heads)
        self.attn_drop = nn.Dropout(dropout)  # a module, so train/eval survives fx tracing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = self.attn_drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, d_model: int, heads: int, ff: int, act: str, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), make_activation(act), nn.Linear(ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ff(self.norm2(x)))


class Transformer(nn.Module):
    """Tokens (B, L, in) or ids (B, L) → embed + pos → blocks → norm → mean over tokens → head."""

    def __init__(
        self,
        in_features: int | None = None,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 2,
        out: int = 10,
        seq_len: int = 8,
        ff: int | None = None,
        act: str = "gelu",
        dropout: float = 0.0,
        vocab: int | None = None,
    ):
        super().__init__()
        if (in_features is None) == (vocab is None):
            raise error("transformer: give exactly one of `in` (features per token) or `vocab` (token ids)")
        self.seq_len = int(seq_len)
        self.in_features = None if in_features is None else int(in_features)
        self.embed: nn.Module = (
            nn.Embedding(int(vocab), d_model) if vocab is not None else nn.Linear(self.in_features, d_model)
        )
        self.pos = nn.Parameter(torch.randn(1, self.seq_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, heads, int(ff or 4 * d_model), act, dropout) for _ in range(int(layers))
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, int(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_features is not None:
            x = x.reshape(x.shape[0], self.seq_len, self.in_features)
        h = self.embed(x) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


def _linear(in_features: int, out: int, bias: bool = True) -> nn.Module:
    return LinearModel(in_features, out, bias)


#: built-in model name -> constructor (keyword ``in`` is mapped to ``in_features``)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": _linear,
    "mlp": MLP,
    "cnn": CNN,
    "transformer": Transformer,
}
same_names(MODELS, MODEL_NAMES, "built-in models")
for _name, _ctor in MODELS.items():
    same_names(inspect.signature(_ctor).parameters, MODEL_OPTIONS[_name], f"options of model `{_name}`")


# ---------------------------------------------------------------------------------------------
# user objects: which code an import path may run (docs/security.md)

#: top-level packages the user named (``--allow-import PKG``, ``REGSPEC_ALLOW_IMPORT=a,b``)
_ALLOWED: set[str] = set()
#: folders whose modules count as the user's own code besides the spec's folder and the cwd
_USER_DIRS: list[Path] = []
#: regspec modules whose callables are safe factories (the built-in models, by import path)
_REGSPEC_FACTORIES = ("regspec.backends.torch.train.models",)


def allow_imports(packages: Iterable[str] = (), dirs: Iterable[str | Path] = ()) -> None:
    """Let import paths reach ``packages`` (top-level names, e.g. ``torchvision``) and modules
    under ``dirs``, besides the user's own code (see ``user_code_origin``)."""
    _ALLOWED.update(p.split(".")[0] for p in packages if p)
    _USER_DIRS.extend(Path(d).resolve() for d in dirs)


def _install_dirs() -> list[Path]:
    """Where the standard library and installed packages live."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths |= set(site.getsitepackages()) | {site.getusersitepackages()}
    except AttributeError:  # some embedded interpreters have no site helpers
        pass
    return [Path(p).resolve() for p in paths if p]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _module_origin(mod_name: str) -> tuple[Path | None, str]:
    """Where ``mod_name``'s top-level package comes from, found without running it:
    ``(file or folder, "source")``, ``(None, "built-in" | "frozen")`` or ``(None, "missing")``."""
    top = mod_name.split(".")[0]
    if top in sys.builtin_module_names:
        return None, "built-in"
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None, "missing"
    if spec is None:
        return None, "missing"
    if spec.origin in ("built-in", "frozen"):
        return None, spec.origin
    if spec.origin:
        return Path(spec.origin).resolve(), "source"
    locations = list(spec.submodule_search_locations or [])
    return (Path(locations[0]).resolve(), "source") if locations else (None, "missing")


def user_code_origin(mod_name: str, span: Span | None = None, what: str = "object") -> Path | None:
    """Refuse import paths into code the user did not write or name; return the module's origin.

    Allowed: modules whose top-level package is named by ``--allow-import`` (or
    ``REGSPEC_ALLOW_IMPORT``), regspec's built-in model module, and modules that live under the
    spec's folder, the current directory or a folder given to ``allow_imports`` and not inside
    the standard library or an installed package (site-packages, dist-packages, the
    interpreter's prefix). Everything else (``os:system``, ``subprocess:run``, any installed
    package) is a located error: a spec chooses the arguments, so the callable is code the spec
    runs."""
    top = mod_name.split(".")[0]
    env = {p.strip() for p in os.environ.get("REGSPEC_ALLOW_IMPORT", "").split(",") if p.strip()}
    origin, kind = _module_origin(mod_name)
    if top in _ALLOWED or top in env or mod_name in _REGSPEC_FACTORIES:
        return origin
    refuse = f"the {what} `{mod_name}` is not your code: "
    how = [f"allow it explicitly with `--allow-import {top}` (or REGSPEC_ALLOW_IMPORT={top}) if you trust "
           "what it runs with the spec's arguments", "see docs/security.md"]
    if kind in ("built-in", "frozen"):
        raise error(refuse + f"it is part of Python ({kind} module)", span, how)
    if origin is None:
        return None  # not importable: load_user_object says so with the missing module's name
    installed = [d for d in _install_dirs() if _inside(origin, d)]
    if installed or any(part in ("site-packages", "dist-packages") for part in origin.parts) or top == "regspec":
        kind = "part of regspec" if top == "regspec" else (
            "an installed package" if any(p in ("site-packages", "dist-packages") for p in origin.parts)
            else "from the standard library or the Python installation")
        raise error(refuse + f"it is {kind} ({origin})", span, how)
    if not any(_inside(origin, d) for d in _user_homes(span)):
        raise error(refuse + f"{origin} is outside the spec's folder and the current directory", span,
                    [*how[:1], "user models and data live beside the spec or in the current directory"])
    return origin


def _user_homes(span: Span | None) -> list[Path]:
    """Where the user's own code lives: the spec's folder (from ``span``), the current directory
    and the folders given to ``allow_imports``."""
    spec_dir = Path(span.source.path).resolve().parent if span is not None and span.source is not None \
        and span.source.path not in ("", "<string>") else None
    return [d for d in (spec_dir, Path.cwd().resolve(), *_USER_DIRS) if d is not None]


def _find_in_user_homes(mod_name: str, span: Span | None) -> None:
    """A module of the user's that Python's path does not reach (``regspec`` is a console script:
    neither the spec's folder nor the current directory is on ``sys.path``): the first home that
    holds ``top.py`` or ``top/__init__.py`` is appended to ``sys.path``, after the standard library
    and the installed packages, so it cannot shadow them."""
    top = mod_name.split(".")[0]
    if top in sys.modules or top in sys.builtin_module_names:
        return
    try:
        if importlib.util.find_spec(top) is not None:
            return
    except (ImportError, ValueError):
        return
    for home in _user_homes(span):
        if (home / f"{top}.py").is_file() or (home / top / "__init__.py").is_file():
            if str(home) not in sys.path:
                sys.path.append(str(home))
                importlib.invalidate_caches()
            return


def load_user_object(path: str, span: Span | None = None, what: str = "object") -> Any:
    """Import ``"pkg.mod:attr"`` (``attr`` may be dotted: ``"pkg.mod:Outer.Inner"``).

    Errors (as ``RegspecError``): a path without ``:``, a module that cannot be found (naming
    the missing module, which may be a dependency of the one asked for), an exception raised
    while importing it, and an attribute that does not exist (with close names from the module).
    """
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise error(
            f"bad import path `{path}` for a user {what}",
            span,
            ['expected "package.module:Name", e.g. "mypkg.models:Net"'],
        )
    mod_name, attr_path = path.split(":")
    _find_in_user_homes(mod_name, span)
    if span is not None and span.source is not None:  # the path comes from a spec: check before importing
        user_code_origin(mod_name, span, f"user {what}")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or mod_name
        notes = []
        if missing != mod_name and not mod_name.startswith(missing + "."):
            notes.append(f"`{mod_name}` was found but it imports `{missing}`, which is not installed")
        else:
            notes.append("is it installed, or a module beside the spec or in the current directory "
                         f"(`{mod_name.split('.')[0]}.py` or a package folder with an `__init__.py`)?")
        raise error(f"cannot import module `{mod_name}` for user {what} `{path}`: no module named `{missing}`", span, notes) from None
    except RegspecError:
        raise
    except Exception as exc:  # user code raised while importing
        raise error(
            f"importing `{mod_name}` for user {what} `{path}` failed: {type(exc).__name__}: {exc}", span
        ) from None
    obj: Any = module
    walked = mod_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise error(
                f"`{walked}` has no attribute `{part}` (user {what} `{path}`)", span, did_you_mean(part, names)
            )
        obj = getattr(obj, part)
        walked = f"{walked}.{part}" if walked != mod_name else f"{mod_name}:{part}"
    return obj


# ---------------------------------------------------------------------------------------------
# factory

def _normalize_in(kwargs: dict[str, Any], span: Span | None) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if "in" in kwargs:
        if "in_features" in kwargs:
            raise error("give `in` or `in_features`, not both", span)
        kwargs["in_features"] = kwargs.pop("in")
    return kwargs


#: arguments of built-in models that are sizes (positive integers, or lists of them)
_SIZES = ("in_features", "out", "hidden", "in_channels", "image", "channels", "kernel", "d_model", "heads",
          "layers", "seq_len", "ff", "vocab")


def _check_sizes(key: str, kwargs: dict[str, Any], span: Span | None) -> None:
    """Sizes must be positive integers (``hidden = [-1]`` is refused here, located, instead of inside
    torch); ``dropout`` a probability."""
    for k in _SIZES:
        if k not in kwargs or kwargs[k] is None:
            continue
        v = kwargs[k]
        items = v if isinstance(v, (list, tuple)) and k in ("hidden", "channels") else [v]
        if not items or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in items):
            shown = "`in`" if k == "in_features" else f"`{k}`"
            raise error(f"model `{key}`: {shown} must be " + ("a list of positive integers" if len(items) != 1 or
                        isinstance(v, list) else "a positive integer") + f", got {v!r}", span)
    d = kwargs.get("dropout", 0.0)
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
        raise error(f"model `{key}`: `dropout` is a probability in [0, 1), got {d!r}", span)


def build_model(name: str, /, *, span: Span | None = None, **kwargs: Any) -> nn.Module:
    """Build a built-in model (``linear``, ``mlp``, ``cnn``, ``transformer``) or a user model
    ``"pkg.mod:Class"`` with keyword arguments.

    ``in`` is accepted as an alias of ``in_features`` for built-ins. Unknown names, unknown or
    missing arguments, and user constructors that fail or return something other than an
    ``nn.Module`` raise ``RegspecError`` (located at ``span`` when given).
    """
    if ":" in name:
        ctor = load_user_object(name, span, what="model")
        if not callable(ctor):
            raise error(f"user model `{name}` is not callable", span)
        check_kwargs(ctor, kwargs, f"user model `{name}`", span)
        try:
            model = ctor(**kwargs)
        except RegspecError:
            raise
        except Exception as exc:
            raise error(f"user model `{name}` raised {type(exc).__name__}: {exc}", span) from None
        if not isinstance(model, nn.Module):
            raise error(f"user model `{name}` returned {type(model).__name__}, expected a torch.nn.Module", span)
        return model
    key = name.lower()
    if key not in MODELS:
        raise error(
            f"unknown model `{name}`",
            span,
            did_you_mean(name, MODELS) + ["built-in models: " + ", ".join(MODELS) + '; user models: "pkg.mod:Class"'],
        )
    kwargs = _normalize_in(kwargs, span)
    ctor = MODELS[key]
    try:
        check_kwargs(ctor, kwargs, f"model `{key}`", span)
    except RegspecError as exc:
        d = exc.first
        notes = [n.replace("`in_features`", "`in` (or `in_features`)") for n in d.notes]
        raise error(d.message, d.span, notes) from None
    _check_sizes(key, kwargs, span)
    if "act" in kwargs:
        make_activation(kwargs["act"], span)  # validates the name with a located error
    try:
        return ctor(**kwargs)
    except RegspecError as exc:
        if span is not None and exc.first.span is None:
            raise error(exc.first.message, span, exc.first.notes) from None
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise error(f"model `{key}` rejected its arguments: {exc}", span) from None
