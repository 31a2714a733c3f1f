"""`regspec fmt`: canonical, idempotent, comment-preserving, parse-tree preserving; `--check`."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from regspec.fmt import format_text
from regspec.parser import parse

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.reg"))


def _tree(text: str):
    spec = parse(text)
    return spec.lets, spec.blocks  # dataclass equality; spans are declared compare=False


def _comments(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        m = re.search(r'#.*$', re.sub(r'"(?:[^"\\\n]|\\.)*"', lambda s: "_" * len(s.group()), line))
        if m:
            out.append(line[m.start():].rstrip())
    return out


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_bundled_specs_idempotent_same_tree_same_comments(path: Path) -> None:
    text = path.read_text()
    once = format_text(text, str(path))
    assert format_text(once, str(path)) == once
    assert _tree(once) == _tree(text)
    assert _comments(once) == _comments(text)
    assert [ln.split() for ln in once.splitlines() if ln.strip()] != [] and \
        sum(1 for ln in once.splitlines() if ln.strip()) == sum(1 for ln in text.splitlines() if ln.strip())
    assert not any(ln != ln.rstrip() for ln in once.splitlines())


MESSY = '''  # lead comment

let   n=3;let m = n*2


problem   p{

   data X,y=randn([5,3],[5],seed=0)
var w[ 3 ]>=-1   # a comment
  minimize sum_squares( X@w-y )+
      0.1*norm1( w )   # "quoted" in a comment
  subject to {
  -w <= 1
      w[0:2] <= - 2 ** -1
  }
  # closing comment
}
train t {
  model mlp(in=64,
  hidden=[
   64 ,
   32
],out=10)
  data  digits(split=0.8)
  regularize l1(param("x"))*cosine(0->1) via prox
  constrain param ( "w" ) in nm_sparse(2,4) every 5 steps from epoch 1
}
'''

CANONICAL = '''# lead comment

let n = 3; let m = n * 2

problem p {
  data X, y = randn([5, 3], [5], seed = 0)
  var w[3] >= -1  # a comment
  minimize sum_squares(X @ w - y) +
      0.1 * norm1(w)  # "quoted" in a comment
  subject to {
    -w <= 1
    w[0:2] <= -2 ** -1
  }
  # closing comment
}
train t {
  model mlp(in = 64,
      hidden = [
        64,
        32
      ], out = 10)
  data digits(split = 0.8)
  regularize l1(param("x")) * cosine(0 -> 1) via prox
  constrain param("w") in nm_sparse(2, 4) every 5 steps from epoch 1
}
'''


def test_messy_spec_has_this_canonical_layout() -> None:
    out = format_text(MESSY)
    assert out == CANONICAL
    assert format_text(out) == out
    assert _tree(out) == _tree(MESSY)


def test_slices_calls_and_aligned_comments() -> None:
    text = 'problem p {\n  var x[4]\n  let y = x[1:3]  # a\n  let zz = x[:, 0]   # b\n  minimize norm1(x)\n}\n'
    out = format_text(text)
    assert "let y = x[1:3]    # a\n" in out and "let zz = x[:, 0]  # b\n" in out


def test_crlf_and_blank_runs_are_normalised() -> None:
    out = format_text("problem p {\r\n\r\n  var x\r\n\r\n\r\n  minimize x\r\n\r\n}\r\n\r\n")
    assert out == "problem p {\n  var x\n\n  minimize x\n}\n"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regspec.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_check_reports_then_rewrites(tmp_path: Path) -> None:
    f = tmp_path / "a.reg"
    f.write_text(MESSY)
    r = _run("fmt", "--check", str(f))
    assert r.returncode == 1 and "+++" in r.stdout and "-  data  digits(split=0.8)" in r.stdout
    assert f.read_text() == MESSY  # --check changes nothing
    r = _run("fmt", str(tmp_path))  # a folder: every .reg under it
    assert r.returncode == 0 and "reformatted" in r.stderr
    assert f.read_text() == CANONICAL
    assert [p.name for p in tmp_path.iterdir()] == ["a.reg"]  # no temporary file left behind
    r = _run("fmt", "--check", str(f))
    assert r.returncode == 0 and r.stdout == ""


def test_cli_bad_spec_is_located_and_untouched(tmp_path: Path) -> None:
    f = tmp_path / "bad.reg"
    bad = "problem p {\n  var x[\n}\n"
    f.write_text(bad)
    r = _run("fmt", str(f))
    assert r.returncode == 1 and f"{f}:3:1: error" in r.stderr and "Traceback" not in r.stderr
    assert f.read_text() == bad


def test_cli_stdin_to_stdout_and_symlinks_kept(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "regspec.cli", "fmt", "-"], input=MESSY, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == CANONICAL
    target = tmp_path / "real.reg"
    target.write_text(MESSY)
    link = tmp_path / "link.reg"
    link.symlink_to(target)
    assert _run("fmt", str(link)).returncode == 0
    assert link.is_symlink() and target.read_text() == CANONICAL


def test_bundled_specs_are_in_canonical_layout() -> None:
    r = _run("fmt", "--check", "specs", cwd=ROOT)
    assert r.returncode == 0, "run .venv/bin/regspec fmt specs\n" + r.stdout[-3000:]
