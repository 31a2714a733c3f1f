"""The built-in models (``train/models.py``) written out as ``nn.Module`` source for a generated
trainer, with the sizes of one spec filled in.

Each class keeps the built-in's module names (what the spec's selectors matched, what
``model.json`` rebuilds) and creates its parameters in the same order, so the same seed gives the
same initial weights; a test compares both for every built-in.
"""
from __future__ import annotations

from typing import Any

__all__ = ["model_class"]

Imports = list[tuple[str, str]]


def _activation(name: str, imports: Imports) -> str:
    """``nn.ReLU()``-style source for an activation of the models' table."""
    from regspec.backends.torch.train.models import ACTIVATIONS

    cls = ACTIVATIONS[str(name).lower()]
    if cls.__module__.startswith("torch.nn"):
        return f"nn.{cls.__name__}()"
    imports.append((cls.__module__, cls.__name__))
    return f"{cls.__name__}()"


def _module_list(attr: str, items: list[str]) -> list[str]:
    one = f"        self.{attr} = nn.ModuleList([{', '.join(items)}])"
    if len(one) <= 99:
        return [one]
    return [f"        self.{attr} = nn.ModuleList(["] + [f"            {i}," for i in items] + ["        ])"]


def _head(doc: str) -> list[str]:
    return ["class Net(nn.Module):", f'    """{doc}"""', "", "    def __init__(self) -> None:",
            "        super().__init__()"]


def _linear(kw: dict[str, Any], imports: Imports) -> list[str]:
    bias = "" if kw.get("bias", True) else ", bias=False"
    return [*_head("linear: y = head(x) = x W^T + b (regspec's built-in `linear`, same names)."),
            f"        self.head = nn.Linear({kw['in_features']}, {kw['out']}{bias})",
            "", "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            "        return self.head(x.flatten(1))"]


def _mlp(kw: dict[str, Any], imports: Imports) -> list[str]:
    hidden = kw["hidden"]
    widths = [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]
    dims = [int(kw["in_features"]), *widths]
    bias = "" if kw.get("bias", True) else ", bias=False"
    dropout = float(kw.get("dropout", 0.0))
    act = _activation(kw.get("act", "relu"), imports)
    lines = _head("mlp: h_0 = x, h_l = act(layers[l-1](h_{l-1})), y = head(h_L) (regspec's `mlp`).")
    lines += _module_list("layers", [f"nn.Linear({a}, {b}{bias})" for a, b in zip(dims[:-1], dims[1:])])
    lines += _module_list("acts", [act] * len(widths))
    if dropout > 0:
        lines += _module_list("drops", [f"nn.Dropout({dropout!r})"] * len(widths))
    lines += [f"        self.head = nn.Linear({dims[-1]}, {kw['out']}{bias})",
              "", "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
              "        h = x.flatten(1)",
              "        for i, (layer, act) in enumerate(zip(self.layers, self.acts)):",
              "            h = act(layer(h))"]
    if dropout > 0:
        lines.append("            h = self.drops[i](h)")
    lines.append("        return self.head(h)")
    return lines


def _cnn(kw: dict[str, Any], imports: Imports) -> list[str]:
    channels = [int(c) for c in kw.get("channels", (16, 32))]
    chans = [int(kw.get("in_channels", 1)), *channels]
    image = int(kw.get("image", 8))
    kernel = int(kw.get("kernel", 3))
    size = image
    for _ in channels:
        size //= 2
    act = _activation(kw.get("act", "relu"), imports)
    lines = _head("cnn: stages conv(k x k, same) -> act -> maxpool(2), then a linear head "
                  "(regspec's `cnn`).")
    if kw.get("flat_input", False):
        lines.append(f"        self.unflatten = nn.Unflatten(1, ({chans[0]}, {image}, {image}))")
    lines += _module_list("layers", [f"nn.Conv2d({a}, {b}, {kernel}, padding={kernel // 2})"
                                     for a, b in zip(chans[:-1], chans[1:])])
    lines += _module_list("acts", [act] * len(channels))
    lines += _module_list("pools", ["nn.MaxPool2d(2)"] * len(channels))
    lines += ["        self.flatten = nn.Flatten()",
              f"        self.head = nn.Linear({chans[-1]} * {size} * {size}, {kw.get('out', 10)})",
              "", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    if kw.get("flat_input", False):
        lines.append("        x = self.unflatten(x)")
    lines += ["        for conv, act, pool in zip(self.layers, self.acts, self.pools):",
              "            x = pool(act(conv(x)))",
              "        return self.head(self.flatten(x))"]
    return lines


_ATTENTION = '''class SelfAttention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(d_head)) V per head, then a projection."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.scale = 1.0 / math.sqrt(d_model // heads)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = self.attn_drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), ACT, nn.Linear(ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ff(self.norm2(x)))

'''


def _transformer(kw: dict[str, Any], imports: Imports) -> list[str]:
    d_model, heads, layers = int(kw.get("d_model", 32)), int(kw.get("heads", 4)), int(kw.get("layers", 2))
    seq_len, ff = int(kw.get("seq_len", 8)), int(kw.get("ff") or 4 * int(kw.get("d_model", 32)))
    dropout, vocab, n_in = float(kw.get("dropout", 0.0)), kw.get("vocab"), kw.get("in_features")
    act = _activation(kw.get("act", "gelu"), imports)
    imports.append(("math", ""))
    lines = _ATTENTION.replace("ACT", act).splitlines()
    lines += ["", "#: learned positions start small (standard deviation of their normal init)",
              "POS_INIT_STD = 0.02", "", ""]
    lines += _head("transformer: tokens -> embed + positions -> pre-norm blocks -> norm -> mean over "
                   "tokens -> head (regspec's `transformer`).")
    embed = f"nn.Embedding({int(vocab)}, {d_model})" if vocab is not None else f"nn.Linear({n_in}, {d_model})"
    lines += [f"        self.embed = {embed}",
              f"        self.pos = nn.Parameter(torch.randn(1, {seq_len}, {d_model}) * POS_INIT_STD)",
              "        self.blocks = nn.ModuleList(",
              f"            [EncoderBlock({d_model}, {heads}, {ff}, {dropout!r}) for _ in range({layers})])",
              f"        self.norm = nn.LayerNorm({d_model})",
              f"        self.head = nn.Linear({d_model}, {int(kw.get('out', 10))})",
              "", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    if vocab is None:
        lines.append(f"        x = x.reshape(x.shape[0], {seq_len}, {n_in})  # tokens of {n_in} features")
    lines += ["        h = self.embed(x) + self.pos",
              "        for block in self.blocks:",
              "            h = block(h)",
              "        return self.head(self.norm(h).mean(dim=1))"]
    return lines


_BUILDERS = {"linear": _linear, "mlp": _mlp, "cnn": _cnn, "transformer": _transformer}


def model_class(name: str, kwargs: dict[str, Any]) -> tuple[list[str], Imports] | None:
    """(source lines of ``class Net``, imports it needs) for a built-in model with these keyword
    arguments (``in`` or ``in_features``), or None for a name that is not a built-in."""
    build = _BUILDERS.get(str(name).lower())
    if build is None:
        return None
    kw = dict(kwargs)
    if "in" in kw:
        kw["in_features"] = kw.pop("in")
    imports: Imports = []
    return build(kw, imports), imports
