"""Every command in the README and the docs runs as written, in a fresh shell.

The code blocks are read from the Markdown: bash blocks are run line by line (a block with a heredoc
as one script), python blocks with `.venv/bin/python`, reg blocks with `regspec check`. They run in
a temporary folder that holds the repository's `specs/` and `.venv/` (links), so outputs land there,
with an environment of a fresh login shell: no virtual environment activated, no PYTHONPATH. The
install line is the environment this test runs in; it is checked against `.ci/run`, which runs it.

Commands that train, compile, sweep or cross-check take tens of seconds: they are marked slow.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # every page: a new example is run too
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -c constraints-cpu.txt -e '.[test]'"
TEST_COMMAND = ".venv/bin/python -m pytest -q tests"
SLOW = re.compile(r"regspec (train|compile|plan|crosscheck)\b|--sweep|trainer\.py|torchrun|regspec\.attach\(|"
                  r"solve specs/lasso\.reg --backend torch$")


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.S | re.M)


def commands(path: Path) -> list[str]:
    """Shell commands of a file's bash blocks, in order: one per line (comments dropped), or a
    whole block when it holds a heredoc."""
    out = []
    for block in blocks(path, "bash"):
        if "<<" in block:
            out.append(block)
            continue
        out += [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return out


def _is_slow(cmd: str) -> bool:
    return any(SLOW.search(line.split("#")[0].strip()) for line in cmd.splitlines())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    for name in ("specs", ".venv"):
        (d / name).symlink_to(ROOT / name)
    return d


def fresh_env() -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return env


def run(cmd: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", "set -eo pipefail\n" + cmd], cwd=cwd, env=fresh_env(), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"`{cmd}` exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    return r


def _runnable(cmd: str) -> str:
    """The install line is this test's environment: keep what follows it."""
    if cmd.startswith(INSTALL):
        return cmd[len(INSTALL):].lstrip(" &")
    return cmd


def test_readme_opens_with_install_and_test_commands() -> None:
    first = commands(ROOT / "README.md")[:2]
    assert first[0].startswith(INSTALL + " && .venv/bin/regspec solve specs/")
    assert first[1] == TEST_COMMAND
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci
    assert ".venv/bin/pip install -q -c constraints-cpu.txt -e '.[test]'" in ci
    assert "torch==" in (ROOT / "constraints-cpu.txt").read_text()
    assert "torch==" not in (ROOT / "pyproject.toml").read_text()


def test_commands_never_rely_on_an_activated_venv() -> None:
    for doc in DOCS:
        for cmd in commands(doc):
            for line in cmd.splitlines():
                for part in re.split(r"&&|\|\||;", line.split(" #")[0]):
                    word = part.strip().split(" ")[0] if part.strip() else ""
                    assert word not in ("regspec", "python", "torchrun", "pytest", "pip"), (doc.name, line)


def _doc_commands(doc: Path, slow: bool) -> list[str]:
    cmds = [_runnable(c) for c in commands(doc) if c != TEST_COMMAND]
    return [c for c in cmds if c and _is_slow(c) == slow]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_fast_commands(doc: Path, workdir: Path) -> None:
    for cmd in _doc_commands(doc, slow=False):
        run(cmd, workdir)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_slow_commands(doc: Path, workdir: Path) -> None:
    for cmd in _doc_commands(doc, slow=True):  # in document order: compile before running trainer.py
        run(cmd, workdir)
    if doc.name == "README.md":
        assert (workdir / "runs" / "p" / "summary.json").exists()
        assert (workdir / "runs" / "sweep_lasso" / "path.png").exists()
    if doc.name == "tutorial.md":  # what the tutorial's `ls runs/prosparse` lists, and nothing else
        assert sorted(p.name for p in (workdir / "runs" / "prosparse").iterdir()) == [
            "checkpoint.pt", "curves.png", "metrics.jsonl", "model.json", "model.pt", "summary.json", "trainer.py"]


def _python_blocks(slow: bool) -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, code in enumerate(blocks(doc, "python")):
            if _is_slow(code) == slow:
                out.append((f"{doc.name}:{i}", code))
    return out


@pytest.mark.parametrize("name,code", _python_blocks(slow=False), ids=[n for n, _ in _python_blocks(False)])
def test_python_snippets(name: str, code: str, workdir: Path) -> None:
    run(".venv/bin/python - <<'PYEOF'\n" + code + "PYEOF", workdir)


@pytest.mark.slow
@pytest.mark.parametrize("name,code", _python_blocks(slow=True), ids=[n for n, _ in _python_blocks(True)])
def test_python_snippets_slow(name: str, code: str, workdir: Path) -> None:
    run(".venv/bin/python - <<'PYEOF'\n" + code + "PYEOF", workdir)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_reg_examples_check(doc: Path, tmp_path: Path) -> None:
    """Every `reg` block in the docs is a complete spec that `regspec check` accepts."""
    import regspec
    from regspec.compiler.train_plan import plan_train

    from regspec.fmt import format_text

    for i, text in enumerate(blocks(doc, "reg")):
        assert format_text(text) == text, f"{doc.name}: reg block {i} is not in `regspec fmt` layout"
        spec = regspec.load(text)
        for name in spec.problems:
            spec.compiled(name)
        for block in spec.ast.trains:
            plan_train(spec.ast, block.name, attach_only=True)


def test_api_page_signatures_match_the_code() -> None:
    """Each `### `regspec.NAME(...)`` heading of docs/api.md names the real parameters, in order."""
    import importlib
    import inspect

    headings = re.findall(r"^### `(regspec(?:\.\w+)+)\((.*?)\)`", (ROOT / "docs" / "api.md").read_text(), re.M)
    assert {h[0] for h in headings} >= {"regspec.load", "regspec.solve", "regspec.attach", "regspec.compile_trainer"}
    for dotted, params in headings:
        module, name = dotted.rsplit(".", 1)
        fn = getattr(importlib.import_module(module), name)
        documented = [p.strip().split("=")[0].strip() for p in params.split(",") if p.strip() and p.strip() != "*"]
        actual = [p.name for p in inspect.signature(fn).parameters.values()]
        assert documented == actual, (dotted, documented, actual)


def test_tutorial_typo_is_reported_as_the_text_says(workdir: Path) -> None:
    """'A mistake is reported at its line and column, with the closest known names': the tutorial's
    two commands, their output."""
    tutorial = commands(ROOT / "docs" / "tutorial.md")
    make, check = (next(c for c in tutorial if key in c) for key in ("> typo.reg", "check typo.reg"))
    r = run(make + "\n" + check, workdir)
    assert r.stdout.strip() == "exit status 1"
    assert r.stderr.startswith("typo.reg:3:12: error: unknown atom `norm_1`")
    assert "note: did you mean `norm1`" in r.stderr
