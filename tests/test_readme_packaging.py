"""Packaging: ranges in the metadata, the CPU pin in the constraints file, and pip keeps the torch an
environment already has (resolver report of a dry run, no download of torch)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0]: r for r in project["dependencies"]}


def test_dependencies_are_ranges_and_heavy_extras_are_optional() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = _requirements()
    assert not [r for r in reqs.values() if "==" in r], "pins belong in constraints-cpu.txt"
    assert reqs["torch"].startswith("torch>=")
    assert "scikit-learn" not in reqs and "matplotlib" not in reqs
    extras = project["optional-dependencies"]
    assert any(r.startswith("scikit-learn") for r in extras["data"])
    assert any(r.startswith("matplotlib") for r in extras["plot"])
    assert {"pytest", "scikit-learn", "matplotlib"} <= {re.split(r"[<>=]", r)[0] for r in extras["test"]}


def test_constraints_pin_the_installed_cpu_torch() -> None:
    pins = [ln for ln in (ROOT / "constraints-cpu.txt").read_text().splitlines() if ln.startswith("torch==")]
    assert pins == [f"torch=={metadata.version('torch')}"] or pins == ["torch==2.13.0+cpu"]


def test_missing_extra_is_named(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from regspec.cli import main\nsys.exit(main(['check', 'specs/lasso.reg']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "regspec[data]" in r.stderr and "specs/lasso.reg:7:" in r.stderr, r.stderr


@pytest.mark.slow
def test_pip_keeps_the_installed_torch(tmp_path: Path) -> None:
    """Resolve the package against this environment without the constraints file: nothing to do
    for torch (the measured result: only regspec itself is to be installed)."""
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and re.search(r"(?i)connection|network|resolve host|no matching distribution", r.stderr):
        pytest.skip(f"no package index reachable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    installs = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert "torch" not in installs, installs
    assert "regspec" in installs


def test_every_package_folder_is_packaged() -> None:
    """A subpackage missing from [tool.setuptools] packages works in an editable install and is
    absent from a wheel: list them all."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {folder: name for name, folder in tool["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == set(tool["packages"])
