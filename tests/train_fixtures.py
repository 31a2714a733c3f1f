"""User models and data for the training-compiler tests (imported by import path from specs)."""
from __future__ import annotations

import torch
from torch import nn


class Branchy(nn.Module):
    """Not traceable by torch.fx: the forward branches on a tensor's value."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.act = nn.GELU()
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(x.flatten(1)))
        if h.sum() > 0:  # data-dependent control flow
            h = h * 1.0
        return self.out(h)


class Functional(nn.Module):
    """Calls torch.nn.functional.gelu directly (no activation module to swap)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.nn.functional.gelu(self.inp(x.flatten(1))))


def lm_steps(reg, opt, tokens: torch.Tensor, steps: int = 2) -> None:
    """``steps`` optimizer steps of a language model under ``reg``: the model's own loss
    (``labels = tokens``, the transformers convention), then the attached hooks' steps."""
    for _ in range(steps):
        loss = reg.loss(reg.module(input_ids=tokens, labels=tokens))
        opt.zero_grad()
        loss.backward()
        opt.step()
