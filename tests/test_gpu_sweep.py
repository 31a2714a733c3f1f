"""Every bundled problem and every classic on the torch backend on CUDA against the same solve on
the CPU, and every bundled train block for one short epoch on CUDA (skipped without a GPU; CI has
none, the device sessions run it: ``pytest -m gpu``).

Agreement: both solves stop on the same relative rule at the default tol (docs/solvers.md: about
1e-6 on the objective), in different floating-point orders, so their objectives may differ by the
sum of their errors; the cross-check's torch threshold (tests/test_cvxpy_classics.py, 1e-4 against
an exact reference) bounds each, so 2e-4 bounds the difference. A solve the CPU refuses with a
located error must be refused the same way on CUDA; a status must not change between devices.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import regspec  # noqa: E402
from regspec.diagnostics import RegspecError  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = sorted((ROOT / "specs").glob("*.reg")) + sorted((ROOT / "tests" / "classics").glob("*.reg"))
DEVICE_RTOL = 2e-4


def problem_cases() -> list[tuple[Path, str]]:
    cases = []
    for path in SPEC_FILES:
        spec = regspec.load(path)
        cases += [(path, name) for name in spec.problems]
    return cases


def train_specs() -> list[Path]:
    return [p for p in sorted((ROOT / "specs").glob("train_*.reg")) if regspec.load(p).trains]


def outcome(path: Path, problem: str, device: str):
    try:
        return regspec.solve(regspec.load(path), problem=problem, backend="torch", device=device)
    except RegspecError as e:
        return e


@pytest.mark.parametrize("path, problem", problem_cases(), ids=lambda v: v.stem if isinstance(v, Path) else v)
def test_cuda_solve_matches_cpu(path, problem):
    cpu = outcome(path, problem, "cpu")
    gpu = outcome(path, problem, "cuda")
    if isinstance(cpu, RegspecError):
        assert isinstance(gpu, RegspecError), f"CPU refused ({cpu}) but CUDA answered {gpu.status}"
        return
    assert not isinstance(gpu, RegspecError), f"CUDA refused: {gpu}"
    assert gpu.info["device"].startswith("cuda")
    assert gpu.status == cpu.status
    if cpu.objective is None:
        assert gpu.objective is None
        return
    gap = abs(gpu.objective - cpu.objective) / max(abs(cpu.objective), abs(gpu.objective), 1e-9)
    assert gap <= DEVICE_RTOL, (cpu.objective, gpu.objective)


@pytest.mark.parametrize("path", train_specs(), ids=lambda p: p.stem)
def test_train_block_runs_an_epoch_on_cuda(path, tmp_path):
    summary = regspec.train(path, out=tmp_path / "run", epochs=1, device="cuda", quiet=True)
    assert summary.get("epochs") == 1 and summary.get("steps", 0) > 0, summary
    metrics = summary["metrics"]
    assert math.isfinite(metrics["loss"]) and all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
