"""Make ``digits_mlp_pretrained.pt``, the "pretrained" starting weights of the fine-tuning specs
(train_lora_l1.reg, train_soma.reg, train_intrinsic_dim.reg, train_spectra_clip.reg,
train_muon.reg, train_sam.reg): the MLP those specs declare,
trained on the digits 0-4 of the training split only, so that fine-tuning on all ten classes
adapts it to a task it has not seen. A plain state_dict (about 40 kB), regenerated with

    .venv/bin/python specs/data/make_pretrained.py
"""
from __future__ import annotations

from pathlib import Path

import torch

from regspec.backends.torch.train.data import build_data
from regspec.backends.torch.train.models import build_model

OUT = Path(__file__).resolve().parent / "digits_mlp_pretrained.pt"


def main() -> None:
    torch.manual_seed(0)
    data = build_data("digits", split=0.8, batch=64, seed=0)   # the specs' split: validation rows unseen
    x, y = data.tensors["x_train"], data.tensors["y_train"]
    keep = y < 5
    x, y = x[keep], y[keep]
    model = build_model("mlp", **{"in": 64, "hidden": [64, 64], "out": 10, "act": "relu"})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(20):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, OUT)
    print(f"wrote {OUT} (train accuracy on digits 0-4: {acc:.3f})")


if __name__ == "__main__":
    main()
