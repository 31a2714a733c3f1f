"""User models and data for tests/test_train_plan_safety.py (imported by import path from specs)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TokenNet(nn.Module):
    """Integer token ids -> embedding -> GRU -> ReLU -> logits (a token-input model)."""

    def __init__(self, vocab: int = 50, width: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.act = nn.ReLU()
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(x))
        return self.head(self.act(h[:, -1]))


def tokens(batch: int = 32, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """200 sequences of 6 token ids in [0, 50); the label says whether the first id is >= 25."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50, (200, 6), generator=g)
    y = (x[:, 0] >= 25).long()
    train = DataLoader(TensorDataset(x[:160], y[:160]), batch_size=batch, shuffle=True, generator=g)
    return train, DataLoader(TensorDataset(x[160:], y[160:]), batch_size=batch)


class Attention(nn.Module):
    """Digits rows as 4 tokens through nn.MultiheadAttention (its out_proj is used functionally)."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.inp = nn.Linear(64, 4 * d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(4 * d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1)).reshape(x.shape[0], 4, -1)
        a, _ = self.attn(h, h, h)
        return self.head(a.reshape(x.shape[0], -1))


class BranchyGelu(nn.Module):
    """Untraceable (branches on a value) and calls F.gelu directly besides its GELU module."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 16)
        self.act = nn.GELU()
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x.flatten(1)))
        if bool(h.sum() > -1e30):  # data-dependent control flow: torch.fx cannot trace it
            h = torch.nn.functional.gelu(h)
        return self.out(h)


class Conv1D(nn.Module):
    """Like transformers' Conv1D: y = x @ W + b with W stored as (in, out) = (nx, nf)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class GPTLikeMLP(nn.Module):
    """digits (64) -> Conv1D(64 -> 32) -> ReLU -> Linear(32 -> 10)."""

    def __init__(self):
        super().__init__()
        self.c_fc = Conv1D(32, 64)
        self.act = nn.ReLU()
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.c_fc(x.flatten(1))))


class AnyKeywords(nn.Module):
    """Accepts any keyword arguments (so hostile keyword names reach the trainer generator)."""

    def __init__(self, **options: object):
        super().__init__()
        self.options = options
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class TokenEncoder(nn.Module):
    """Token ids -> embedding -> nn.TransformerEncoder (2 layers) -> mean -> logits."""

    def __init__(self, vocab: int = 50, d: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(x)).mean(dim=1))


class TokenLSTM(nn.Module):
    """Token ids -> embedding -> LSTM -> GELU -> logits."""

    def __init__(self, vocab: int = 50, d: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, d, batch_first=True)
        self.act = nn.GELU()
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(x))
        return self.head(self.act(h[:, -1]))


class SoftplusTwice(nn.Module):
    """A Softplus module, and F.softplus called directly (traceable)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 16)
        self.act = nn.Softplus()
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.nn.functional.softplus(self.act(self.inp(x.flatten(1)))))
