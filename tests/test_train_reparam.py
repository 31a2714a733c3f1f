"""Reparametrizations, frozen tensors and starting weights in train blocks (reparam.py), checked
against hand-written references: LoRA's W0 + (alpha/r) B A, SoMA's frozen major singular
subspace (principal angles), the intrinsic-dimension step z <- z - lr P^T grad(theta) with P
built column by column (and Fastfood against scipy's Hadamard matrix), bitwise resume, and
located errors for bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import regspec
from regspec.backends.torch.train.reparam import SubspaceBlock, merged_state_dict, trained_summary
from regspec.diagnostics import RegspecError
from regspec.train_api import plan_text

torch.set_num_threads(1)
SPECS = Path(__file__).resolve().parent.parent / "specs"


def _net(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 5)).to(dtype)


def _attach(body: str, model: nn.Module, optimizer=None, path: Path | None = None):
    text = "train t {\n" + body + "\n}\n"
    if path is not None:
        path.write_text(text)
        return regspec.attach(str(path), model, optimizer)
    return regspec.attach(regspec.load(text), model, optimizer)


def _steps(module: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 7, generator=g, dtype=torch.float64)
        y = torch.randn(16, 5, generator=g, dtype=torch.float64)
        loss = ((module(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# ------------------------------------------------------------------ low_rank
def test_low_rank_trains_only_the_factors_and_merges_exactly():
    model = _net()
    reference = _net()
    x = torch.randn(4, 7, dtype=torch.float64)
    reg = _attach('freeze param("**")\nreparametrize param("*.weight") as low_rank(rank = 3, alpha = 6)', model)
    module = reg.module
    assert torch.equal(module(x), reference(x))          # B = 0: the pretrained model exactly
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    _steps(module, opt, 1)
    got = {n for n, p in module.named_parameters() if p.grad is not None}
    assert got == {f"{i}.parametrizations.weight.0.{f}" for i in (0, 2) for f in "AB"}
    counts = trained_summary(module)
    assert counts["trainable_parameters"] == 3 * (6 + 7) + 3 * (5 + 6)     # r (m + n) per matrix
    _steps(module, opt, 5)
    merged = merged_state_dict(module)
    for i, (m, n) in ((0, (6, 7)), (2, (5, 6))):
        plist = module[i].parametrizations.weight
        w0, a, b = plist.original, plist[0].A, plist[0].B
        assert torch.equal(w0, reference[i].weight)       # W0 frozen
        assert b.abs().max() > 0
        torch.testing.assert_close(merged[f"{i}.weight"], w0 + (6 / 3) * b @ a, rtol=1e-14, atol=1e-14)
    assert set(merged) == set(reference.state_dict())    # the original architecture's keys
    reference.load_state_dict(merged)
    torch.testing.assert_close(reference(x), module(x), rtol=1e-14, atol=1e-14)


def test_attach_adds_new_factors_to_the_users_optimizer():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = _attach('reparametrize param("0.weight") as low_rank(rank = 2)', model, opt)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    factors = reg.module[0].parametrizations.weight[0]
    assert id(factors.A) in in_opt and id(factors.B) in in_opt
    before = factors.B.detach().clone()
    _steps(reg.module, opt, 1)
    assert not torch.equal(before, factors.B)


# ------------------------------------------------------------------ svd_minor
def _principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    s = torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)
    return torch.arccos(s)


def test_svd_minor_keeps_the_major_subspace():
    model, reference = _net(), _net()
    w0 = reference[0].weight.detach().clone()
    x = torch.randn(4, 7, dtype=torch.float64)
    r = 2
    reg = _attach(f'freeze param("**")\nreparametrize param("0.weight") as svd_minor(rank = {r})', model)
    module = reg.module
    torch.testing.assert_close(module(x), reference(x), rtol=0, atol=1e-12)   # W_major + minor = W0
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert sum(p.numel() for _, p in trainable) == r * (6 + 7 + 1)
    opt = torch.optim.SGD([p for _, p in trainable], lr=0.2)
    _steps(module, opt, 10)
    plist = module[0].parametrizations.weight
    u, s, v = plist[0].U, plist[0].S, plist[0].V
    merged = merged_state_dict(module)["0.weight"]
    torch.testing.assert_close(merged, plist.original + (u * s) @ v.T, rtol=0, atol=1e-14)
    major = merged - (u * s) @ v.T
    uu, ss, vvh = torch.linalg.svd(w0)
    k = min(w0.shape) - r
    mu, _, mvh = torch.linalg.svd(major)
    assert _principal_angles(uu[:, :k], mu[:, :k]).max() < 1e-6
    assert _principal_angles(vvh[:k].T, mvh[:k].T).max() < 1e-6
    torch.testing.assert_close(torch.linalg.svdvals(major)[:k], ss[:k], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(s.detach(), ss[-r:])       # the minor part did train


# ------------------------------------------------------------------ subspace
def _projection(blocks: list[SubspaceBlock], d: int) -> torch.Tensor:
    """P (D x d) column by column: each block's projection of the basis vectors."""
    eye = torch.eye(d, dtype=torch.float64)
    return torch.cat([torch.stack([b.project(eye[j]) for j in range(d)], 1) for b in blocks])


@pytest.mark.parametrize("projection", ["dense", "fastfood"])
def test_subspace_step_equals_hand_written_step(projection):
    d, lr = 5, 0.3
    model, reference = _net(), _net()
    reg = _attach(f'reparametrize param("**") as subspace(dim = {d}, seed = 3, projection = {projection})', model)
    module = reg.module
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == d        # exactly d trainable scalars, one shared z
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in merged_state_dict(module).items())  # z = 0
    names = [n for n, _ in reference.named_parameters()]
    blocks = [module.get_submodule(n.rpartition(".")[0]).parametrizations[n.rpartition(".")[2]][0] for n in names]
    assert all(b.kind == projection for b in blocks)
    P = _projection(blocks, d)
    assert P.shape == (sum(p.numel() for p in reference.parameters()), d)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 7, generator=g, dtype=torch.float64)
    y = torch.randn(16, 5, generator=g, dtype=torch.float64)
    ((reference(x) - y) ** 2).mean().backward()
    grad_theta = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    z_expected = -lr * (P.T @ grad_theta)                # z1 = z0 - lr * P^T dL/dtheta, z0 = 0
    _steps(module, torch.optim.SGD(trainable, lr=lr), 1)
    torch.testing.assert_close(trainable[0].detach(), z_expected, rtol=1e-12, atol=1e-14)
    theta = torch.cat([v.reshape(-1) for v in merged_state_dict(module).values()])
    theta0 = torch.cat([p.detach().reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(theta, theta0 + P @ z_expected, rtol=1e-12, atol=1e-14)


def test_fastfood_is_S_H_G_Pi_H_B():
    from scipy.linalg import hadamard

    d, numel, total = 6, 20, 40
    z = nn.Parameter(torch.randn(d, dtype=torch.float64))
    block = SubspaceBlock(z, numel, total, seed=5, index=2, kind="fastfood")
    L = block.L
    assert L == 8
    H = torch.from_numpy(hadamard(L)).double()
    zp = torch.cat([z.detach(), torch.zeros(L - d, dtype=torch.float64)])
    rows = []
    for k in range(block.signs.shape[0]):
        Pi = torch.eye(L, dtype=torch.float64)[block.perm[k]]  # (Pi x)_i = x_perm[i]
        V = torch.diag(block.S[k]) @ H @ torch.diag(block.G[k]) @ Pi @ H @ torch.diag(block.signs[k])
        rows.append(V @ zp)
    torch.testing.assert_close(block.project(z.detach()), torch.cat(rows)[:numel], rtol=1e-12, atol=1e-12)
    # the normalisation: columns of P have unit expected norm (as the dense Gaussian P's)
    big = SubspaceBlock(nn.Parameter(torch.zeros(16, dtype=torch.float64)), 4096, 4096, 0, 0, "fastfood")
    P = torch.stack([big.project(e) for e in torch.eye(16, dtype=torch.float64)], 1)
    assert (P ** 2).sum(0).mean().item() == pytest.approx(1.0, rel=0.1)


# ------------------------------------------------------------------ torch's own forms
def test_torch_parametrizations():
    model = _net()
    x = torch.randn(4, 7, dtype=torch.float64)
    y0 = _net()(x)
    reg = _attach('reparametrize param("0.weight") as weight_norm\n'
                  'reparametrize param("2.weight") as orthogonal', model)
    module = reg.module
    names = {n for n, _ in module.named_parameters()}
    assert {"0.parametrizations.weight.original0", "0.parametrizations.weight.original1"} <= names
    w = module[2].weight
    torch.testing.assert_close(w @ w.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-10)
    _steps(module, torch.optim.SGD(module.parameters(), lr=0.1), 3)
    w = module[2].weight
    torch.testing.assert_close(w @ w.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-10)
    assert set(merged_state_dict(module)) == set(_net().state_dict())
    m2 = _net()
    reg2 = _attach('reparametrize param("0.weight") as weight_norm', m2)
    torch.testing.assert_close(reg2.module[0].weight, _net()[0].weight, rtol=1e-14, atol=1e-14)
    assert y0.shape == module(x).shape
    m3 = _net()
    reg3 = _attach('reparametrize param("*.weight") as spectral_norm(n_power_iterations = 50)', m3)
    reg3.module.train()
    reg3.module(x)
    assert torch.linalg.matrix_norm(reg3.module[0].weight.detach(), ord=2).item() == pytest.approx(1.0, rel=1e-6)


# ------------------------------------------------------------------ init, resume, trainer
def _spec_dir(tmp_path: Path, body: str, epochs: int = 2) -> Path:
    torch.manual_seed(123)
    from regspec.backends.torch.train.models import build_model

    pretrained = build_model("mlp", **{"in": 8, "hidden": [16], "out": 3})
    torch.save(pretrained.state_dict(), tmp_path / "pre.pt")
    spec = tmp_path / "ft.reg"
    spec.write_text(f"""train ft {{
  model mlp(in = 8, hidden = [16], out = 3)
  data synthetic(n = 240, d = 8, classes = 3)
  init "pre.pt"
  optimizer adam(lr = 1e-2)
  epochs {epochs}
  batch 32
  seed 0
{body}
}}
""")
    return spec


BODY = """  freeze param("**.bias")
  reparametrize param("layers.0.weight") as low_rank(rank = 2, alpha = 4)
  reparametrize param("head.weight") as svd_minor(rank = 1)
  reparametrize param("**.bias") as subspace(dim = 4, seed = 1)
  regularize l1(param("**.weight.0.B")) * 1e-3 via prox
"""


def test_resume_is_bitwise_with_reparametrizations(tmp_path):
    spec = _spec_dir(tmp_path, BODY)
    from regspec.train_api import compile_trainer, load_trainer

    full, part = tmp_path / "full", tmp_path / "part"
    compile_trainer(str(spec), out=tmp_path / "trainer.py")
    trainer = load_trainer(tmp_path / "trainer.py")
    assert trainer.main(["--out", str(full), "--quiet"]) == 0
    assert trainer.main(["--out", str(part), "--quiet", "--stop-after", "1"]) == 0
    assert not (part / "summary.json").exists()
    assert trainer.main(["--out", str(part), "--quiet", "--resume"]) == 0
    s = json.loads((full / "summary.json").read_text())
    a = torch.load(full / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and any("parametrizations" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = (torch.load(p / "model.pt", weights_only=True) for p in (full, part))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    # model.pt: the declared architecture; load_trained rebuilds it
    net = regspec.load_trained(full)
    assert set(ma) == set(net.state_dict())
    t = s["trained"]
    assert t["trainable_parameters"] == 2 * (16 + 8) + 1 * (3 + 16 + 1) + 4
    assert "layers.0.parametrizations.weight.original" in t["frozen"]
    text = (tmp_path / "trainer.py").read_text()
    assert "apply_weights(" in text and "WeightStep(" in text and "form='low_rank'" in text
    assert "init='pre.pt'" in text


def test_plan_lists_reparametrizations(tmp_path):
    spec = _spec_dir(tmp_path, BODY)
    text = plan_text(str(spec))
    assert "init       " in text and "pre.pt" in text
    assert "trains    layers.0.parametrizations.weight.0.A [2, 8], layers.0.parametrizations.weight.0.B [16, 2]" in text
    assert "frozen    layers.0.bias, head.bias" in text
    assert f"trainable  {2 * 24 + 20 + 4} of {8 * 16 + 16 + 16 * 3 + 3} parameters" in text
    assert "matches   layers.0.parametrizations.weight.0.B [16, 2]" in text


# ------------------------------------------------------------------ bad input
def _error(tmp_path: Path, body: str) -> str:
    spec = _spec_dir(tmp_path, body)
    with pytest.raises(RegspecError) as exc:
        plan_text(str(spec))
    return str(exc.value)


def test_unknown_form_is_located(tmp_path):
    msg = _error(tmp_path, '  reparametrize param("head.weight") as lora(rank = 2)')
    assert "ft.reg:9:" in msg and "unknown reparametrization `lora`" in msg and "low_rank" in msg


def test_rank_larger_than_the_matrix(tmp_path):
    msg = _error(tmp_path, '  reparametrize param("head.weight") as low_rank(rank = 4)')
    assert "ft.reg:9:" in msg and "rank 4" in msg and "head.weight" in msg and "3 x 16" in msg


def test_matrix_form_on_vectors_names_what_matched(tmp_path):
    msg = _error(tmp_path, '  reparametrize param("**.bias") as svd_minor(rank = 1)')
    assert "ft.reg:9:" in msg and "no matrix" in msg and "layers.0.bias (16,)" in msg and "head.bias (3,)" in msg


def test_selector_matching_nothing(tmp_path):
    msg = _error(tmp_path, '  reparametrize param("body.*.weight") as low_rank(rank = 1)')
    assert "ft.reg:9:" in msg and "matches none" in msg


def test_init_that_does_not_fit(tmp_path):
    spec = _spec_dir(tmp_path, "")
    state = torch.load(tmp_path / "pre.pt", weights_only=True)
    state["head.weight"] = torch.zeros(4, 16)
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "pre.pt")
    with pytest.raises(RegspecError) as exc:
        plan_text(str(spec))
    msg = str(exc.value)
    assert "ft.reg:4:" in msg and "does not fit the model" in msg
    assert "missing from the file (1): head.bias" in msg and "not in the model (1): extra.weight" in msg
    assert "head.weight: file (4, 16), model (3, 16)" in msg
    (tmp_path / "pre.pt").write_bytes(b"garbage")
    with pytest.raises(RegspecError, match="cannot read"):
        plan_text(str(spec))


def test_reparametrizing_twice_is_refused(tmp_path):
    msg = _error(tmp_path, '  reparametrize param("head.weight") as low_rank(rank = 1)\n'
                           '  reparametrize param("head.weight") as orthogonal')
    assert "ft.reg:10:" in msg and "head.weight is already reparametrized" in msg
    msg = _error(tmp_path, '  reparametrize param("head.weight") as low_rank(rank = 1)\n'
                           '  reparametrize param("head.parametrizations.**") as orthogonal')
    assert "ft.reg:10:" in msg and "belongs to an earlier reparametrization" in msg


# ------------------------------------------------------------------ the specs
def test_lora_spec_trains_factors_from_the_pretrained_model(tmp_path):
    s = regspec.train(str(SPECS / "train_lora_l1.reg"), out=tmp_path / "lora", epochs=1, quiet=True)
    t = s["trained"]
    assert t["trainable_parameters"] == 2 * 4 * (64 + 64) + 64 * 10 + 10
    assert t["model_parameters"] == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert all(".0.A" in n or ".0.B" in n or n.startswith("head.") for n in t["trained"])
    assert s["metrics"]["val_acc"] > 0.6    # the start, trained on digits 0-4 only, is near 0.5
    factors = {n: v for n, v in s["tensors"].items() if n.endswith((".0.A", ".0.B"))}
    assert len(factors) == 4 and max(v["zero_frac"] for v in factors.values()) > 0   # the l1 prox: exact zeros
    net = regspec.load_trained(tmp_path / "lora")
    pre = torch.load(SPECS / "data" / "digits_mlp_pretrained.pt", weights_only=True)
    delta = net.layers[0].weight.detach() - pre["layers.0.weight"]
    assert 0 < torch.linalg.matrix_rank(delta) <= 4    # the update is low rank
    assert torch.equal(net.layers[0].bias, pre["layers.0.bias"])   # frozen


@pytest.mark.parametrize("name,trainable", [("train_soma.reg", 2 * 8 * (64 + 64 + 1) + 650),
                                            ("train_intrinsic_dim.reg", 200)])
def test_fine_tuning_specs(tmp_path, name, trainable):
    s = regspec.train(str(SPECS / name), out=tmp_path / "run", epochs=1, quiet=True)
    assert s["trained"]["trainable_parameters"] == trainable
    assert s["metrics"]["val_acc"] > 0.4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["trained"]["model_parameters"] == 8970
    net = regspec.load_trained(tmp_path / "run")
    assert sum(p.numel() for p in net.parameters()) == 8970


def test_conv_weights_are_rows_by_rest():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3)).double()
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    y0 = model(x).detach()
    reg = _attach('reparametrize param("0.weight") as low_rank(rank = 2)\n'
                  'reparametrize param("2.weight") as svd_minor(rank = 1)', model)
    torch.testing.assert_close(reg.module(x), y0, rtol=0, atol=1e-12)
    f = reg.module[0].parametrizations.weight[0]
    assert f.A.shape == (2, 2 * 9) and f.B.shape == (4, 2)
    with pytest.raises(RegspecError, match="orthogonal` takes 2-D weights"):
        _attach('reparametrize param("0.weight") as orthogonal', nn.Sequential(nn.Conv2d(2, 4, 3)))


def test_plan_json_lists_what_trains(tmp_path):
    from regspec.json_out import plan_json

    spec = _spec_dir(tmp_path, BODY)
    doc = plan_json(str(spec), None)["weights"]
    assert doc["trainable_parameters"] == 2 * 24 + 20 + 4 and doc["init"].endswith("pre.pt")
    first = doc["statements"][1]
    assert first["form"] == "low_rank" and first["options"] == {"rank": 2, "alpha": 4.0}
    assert [t["name"] for t in first["trains"]] == ["layers.0.parametrizations.weight.0.A",
                                                    "layers.0.parametrizations.weight.0.B"]


def test_frozen_tensors_are_left_alone_by_prox_steps():
    model = _net()
    before = model[2].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = _attach('freeze param("2.weight")\nregularize l1(param("*.weight")) * 10 via prox', model, opt)
    _steps(reg.module, opt, 2)
    assert torch.equal(model[2].weight, before)           # frozen: no gradient step, no prox
    assert (model[0].weight == 0).float().mean() > 0.5    # the other weight is shrunk to zeros


def test_hadamard_transform_and_its_gradient():
    from scipy.linalg import hadamard

    from regspec.backends.torch.train.reparam import fwht

    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(fwht(x), x @ torch.from_numpy(hadamard(16)).double(), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fwht, (x,))
