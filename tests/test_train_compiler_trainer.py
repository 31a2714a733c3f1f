"""`regspec compile` writes a standalone trainer: it imports only torch and regspec's runtime,
spells out every prox binding, resumes to the same parameters as an uninterrupted run, refuses a
corrupt checkpoint with a clear message, and keeps two torchrun ranks identical."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import regspec
from regspec.diagnostics import RegspecError
from regspec.train_api import compile_trainer, load_trainer

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trainer") / "trainer.py"
    from regspec.cli import main

    assert main(["compile", str(SPECS / "train_group_channels.reg"), "-o", str(path)]) == 0
    return path


def test_trainer_is_standalone_and_readable(trainer):
    src = trainer.read_text()
    tree = ast.parse(src)
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules <= {"__future__", "sys", "math", "pathlib", "typing", "torch", "regspec"}
    # every prox binding is spelled out with its kernel, tensors, step rule and gate
    assert "'line16': ['layers.0.weight', 'layers.1.weight']," in src
    assert "'line16': 0.05," in src and "tau = lr * w['line16']" in src
    assert "apply_prox_group('group_l2', xs, tau, groups='channels')" in src
    assert "# step rule: tau = lr * weight (Euclidean" in src
    assert "if step % 10 == 0:" in src and "radius=2.0" in src and "'spectral_ball'," in src
    # the activation penalty is the catalogue's l1 on the taps, averaged over the batch
    assert "'line18': sum(batch_mean(norm1, a) for a in tapped(model.taps, SELECTED['line18']))" in src
    assert "return x.abs().sum()" in src
    assert "'line18': w['line18'] * g['line18']," in src
    assert "optimizer.step()" in src and "prox_steps(params, optimizer, step, t, w, anchors)" in src
    # the architecture is a class in the file
    assert "class Net(nn.Module):" in src and "nn.Conv2d(16, 32, 3, padding=1)" in src


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_resume_equals_uninterrupted(trainer, tmp_path):
    mod = load_trainer(trainer)
    full, part = tmp_path / "full", tmp_path / "part"
    assert mod.main(["--epochs", "3", "--out", str(full), "--quiet"]) == 0
    # interrupted after one epoch in a separate process, resumed in another one
    for extra in (["--stop-after", "1"], ["--resume"]):
        proc = subprocess.run([sys.executable, str(trainer), "--epochs", "3", "--out", str(part), "--quiet", *extra],
                              env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        if extra[0] == "--stop-after":
            assert not (part / "summary.json").exists()
            assert len((part / "metrics.jsonl").read_text().splitlines()) == 1
    a, b = _params(full / "checkpoint.pt"), _params(part / "checkpoint.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 3
    assert (part / "summary.json").exists()
    assert not list(part.glob("*.tmp")) and not list(part.glob(".*.tmp"))   # atomic writes leave nothing


def test_corrupt_checkpoint_is_a_clear_error(trainer, tmp_path, capsys):
    mod = load_trainer(trainer)
    out = tmp_path / "run"
    assert mod.main(["--epochs", "1", "--out", str(out), "--quiet"]) == 0
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    from regspec.backends.torch.train.runtime import guard

    assert guard(lambda: mod.main(["--epochs", "2", "--out", str(out), "--resume", "--quiet"])) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "corrupt or truncated" in err and "Traceback" not in err
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RegspecError, match="corrupt or truncated"):
        mod.main(["--epochs", "2", "--out", str(out), "--resume", "--quiet"])
    ckpt.unlink()
    with pytest.raises(RegspecError, match="no checkpoint"):
        mod.main(["--epochs", "2", "--out", str(out), "--resume", "--quiet"])
    # a checkpoint of another spec is refused
    compile_trainer(str(SPECS / "train_nuclear.reg"), out=tmp_path / "o.py")
    other = load_trainer(tmp_path / "o.py")
    assert other.main(["--epochs", "1", "--out", str(tmp_path / "other"), "--quiet"]) == 0
    (out / "checkpoint.pt").write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    with pytest.raises(RegspecError, match="different spec"):
        mod.main(["--epochs", "2", "--out", str(out), "--resume", "--quiet"])


def test_regspec_train_cli(tmp_path, capsys):
    from regspec.cli import main

    out = tmp_path / "cli"
    assert main(["train", str(SPECS / "train_nm_sparse.reg"), "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert (out / "trainer.py").exists() and (out / "summary.json").exists()
    assert main(["train", str(SPECS / "train_nm_sparse.reg"), "--out", str(out), "--epochs", "2", "--resume",
                 "--quiet"]) == 0  # nothing left to train: a no-op that keeps the run


def test_torchrun_two_ranks_stay_identical(trainer, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "ddp"
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_port", str(29400 + os.getpid() % 500),
                           str(trainer), "--epochs", "1", "--out", str(out), "--quiet", "--device", "cpu"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "params_rank0.pt", weights_only=True)
    r1 = torch.load(out / "params_rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys() and len(r0) == 6
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # the ranks trained on different halves of each batch, with all-reduced gradients: the run
    # moved away from the initialization and the prox steps took effect on both
    assert float((r0["layers.1.weight"].reshape(32, -1) == 0).all(dim=1).float().mean()) > 0


@pytest.mark.gpu
def test_trainer_on_cuda(trainer, tmp_path):
    mod = load_trainer(trainer)
    assert mod.main(["--epochs", "1", "--out", str(tmp_path / "gpu"), "--device", "cuda", "--quiet"]) == 0
