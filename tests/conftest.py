import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# Two cores on CI: keep torch from oversubscribing when pytest runs alongside solvers.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def root() -> Path:
    return ROOT


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


def _subnormals_flushed() -> bool:
    # With flush-to-zero / denormals-are-zero set in the FPU, half the smallest normal float is 0.
    return sys.float_info.min / 2 == 0.0


@pytest.fixture(autouse=True)
def _no_leaked_flush_to_zero():
    """Fail the test that leaves the FPU flushing subnormals: the setting is process-wide and
    breaks later tests (hypothesis refuses to draw floats; tolerances near 1e-308 change)."""
    before = _subnormals_flushed()
    yield
    if _subnormals_flushed() and not before:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_flush_denormal(False)
        pytest.fail("this test left flush-to-zero set for the whole process "
                    "(torch.set_flush_denormal(True) outside a script's entry point?)")
