"""Property: every command of the CLI on any mutant of a bundled spec (specs/ and tests/classics/)
either succeeds or reports a located error (``file:line:col: error: why``, exit 1), exits 2 on bad
usage or 3 when a solver stops short: never an internal error, a traceback, a hang or a NumPy
warning; and `regspec fmt` re-parses to the same tree and is idempotent. The mutations
(tests/fuzz_commands.py) go past tests/test_fuzz_specs.py's: edge numbers (nan, inf, 1e308,
2 ** 1024), shapes set to 0 or mismatched, undefined names, atoms swapped for other catalogue
atoms, train statements in problems and problem statements in train blocks, unicode, CRLF, tabs,
very long lines and deep nesting.

The default is small (CI has two cores): 40 mutants through check, check --json, fmt, explain and
explain --json, and one through every command (solve on both backends, --sweep, crosscheck, plan,
compile, train one epoch): 17 s of CPU with the problem fuzzer and the regression tests. ``REGSPEC_FUZZ_EXAMPLES=2000`` runs 2000 and 50 (one in 40); for a
long search, ``python tests/fuzz_commands.py N START --heavy EVERY`` prints the failures grouped.
What it found is fixed and covered by tests/test_fuzz_regressions.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz_commands import findings, mutant_for, workdir_for

EXAMPLES = int(os.environ.get("REGSPEC_FUZZ_EXAMPLES", "40"))
LONG = "REGSPEC_FUZZ_EXAMPLES" in os.environ
# heavy mutants draw from their own seeds (small numbers only). By default one, from two small
# specs (so that a spec added to specs/ cannot turn the default run into a long training): the
# train_lasso spec with a train-only statement in its problem (its train block trains one
# epoch); a longer search draws from every bundled spec
HEAVY_SOURCES = None if LONG else ["specs/lasso.reg", "specs/train_lasso.reg"]
HEAVY_SEEDS = range(1_000_000, 1_000_000 + max(2, EXAMPLES // 40)) if LONG else [1_000_007]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return workdir_for(tmp_path_factory.mktemp("fuzz_commands"))


@pytest.mark.parametrize("seed", range(EXAMPLES))
def test_mutant_through_the_analysis_commands(workdir, seed):
    mutant = mutant_for(seed, heavy=False)
    assert findings(mutant, workdir, heavy=False) == [], f"{mutant.source} {mutant.edits}\n{mutant.text}"


@pytest.mark.parametrize("seed", HEAVY_SEEDS)
def test_mutant_through_every_command(workdir, seed):
    mutant = mutant_for(seed, heavy=True, sources=HEAVY_SOURCES)
    assert findings(mutant, workdir, heavy=True) == [], f"{mutant.source} {mutant.edits}\n{mutant.text}"
