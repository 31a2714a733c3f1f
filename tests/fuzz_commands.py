"""Grammar-aware mutation of every bundled spec (specs/*.reg, tests/classics/*.reg), run through
every command of the CLI in-process (tests/test_fuzz_commands.py; ``python tests/fuzz_commands.py
N`` runs N mutants and prints the failures grouped by kind).

A mutant is a bundled spec with 1-3 edits: token deletions, duplications and swaps; numbers
replaced by edge values (0, -1, 1e308, nan, inf, ...); a shape or dimension set to 0 or to a
mismatched size; a name renamed to an undefined one; an atom swapped for another catalogue atom
(other arity and curvature); a train-only statement put in a problem and a problem statement in a
train block; unicode, CRLF, tabs, very long lines and deep nesting. The verdict on one command's
run (``failure``) is the contract of docs/language.md#errors: exit 0, 1 (a located error naming
``file:line:col`` and why), 2 (usage) or 3 (a solver stopped short), no traceback and no internal
error; ``fmt_failure`` adds that `regspec fmt` re-parses to the same tree and is idempotent."""
from __future__ import annotations

import contextlib
import io
import random
import re
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {f"{p.parent.name}/{p.name}": p.read_text(encoding="utf-8")
           for folder in (ROOT / "specs", ROOT / "tests" / "classics") for p in sorted(folder.glob("*.reg"))}
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_]\w*|->|\*\*|==|<=|>=|\.\.'
                   r"|#[^\n]*|\n|[ \t]+|.", re.S)
NAME = re.compile(r"[A-Za-z_]\w*")
NUMBER = re.compile(r"\d")
EDGE_NUMBERS = ["0", "-1", "1", "0.5", "1e308", "-1e308", "1e-320", "1e999", "nan", "inf", "-inf", "(0 / 0)",
                "(1e308 * 10)", "(1 / 0)", "-0", "2 ** 64", "2 ** 1024", "3.5", "1e-12", "17", '"abc"', "[]",
                "[1, 2]", "true", "9223372036854775807", "9223372036854775808"]
SMALL_NUMBERS = [n for n in EDGE_NUMBERS if n not in ("9223372036854775807", "2 ** 64")]  # no huge allocations
DIMENSIONS = ["0", "1", "2", "-1", "3", "7", "0.5", "n", "rows(X)", "[]"]
UNDEFINED = ["undefined_name", "w2", "Xx", "lam_", "zz"]
UNICODE = ["λ", "x\u0301", "\u200b", "\u00a0", "\ufeff", "\u2028", "\u2029", "ｘ", "🙂", "\u202e", "\x00", "\x0b",
           "\x0c", "\ud800", "é", "−", "≤", "×"]
TRAIN_ONLY = ['regularize l1(param("head.weight")) * 1e-3', 'constrain param("head.weight") in l2_ball(1)',
              "model mlp(in = 4, out = 2)", "loss cross_entropy", "optimizer sgd(lr = 0.1)", "epochs 2", "batch 8",
              "rewrite GELU -> ReLU", 'freeze param("head.bias")', "regularize l1(x) * 0.1 via prox",
              "regularize norm1(x) as named", 'regularize l1(act("acts.*")) * 1e-4 every 2 steps',
              'reparametrize param("head.weight") as low_rank(rank = 2)', "regularize weight_decay(x)",
              "regularize orthogonality(x)", "constrain x in nm_sparse(2, 4)", "steps 3", "device cpu",
              'init "weights.pt"', 'transform clip_grad_norm(param("**"), max_norm = 1)', "seed 3",
              "constrain sum(x) <= 1 via lagrangian(lr = 0.1)", "regularize jacobian_fro(output)",
              "regularize flops(x)"]
PROBLEM_ONLY = ["var x[3]", "var X[2, 2] in psd", "param lam = 0.5 >= 0", "data A = randn(3, 3, seed = 0)",
                "minimize sum_squares(x)", "maximize 1", "subject to x >= 0", "subject to { x <= 1 }",
                "let q = 3", 'regularize l1(output) * 1e-3', "minimize norm1(param(\"head.weight\"))"]
COMMANDS = ["check", "check_json", "fmt", "explain", "explain_json", "plan", "plan_json", "compile", "solve",
            "solve_torch", "solve_cvxpy", "sweep", "crosscheck", "train"]
CHEAP = ["check", "check_json", "fmt", "explain", "explain_json"]
# commands whose work grows with the spec's sizes and iteration counts: the mutants run through
# them keep their numbers small (no 2**63-entry shapes), and the solvers' budgets are capped
HEAVY = {"plan", "plan_json", "compile", "solve", "solve_torch", "solve_cvxpy", "sweep", "crosscheck", "train"}


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


@dataclass
class Mutant:
    source: str   # the bundled spec it came from
    text: str
    edits: list[str]


def _solid(toks: list[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if not t.isspace() and not t.startswith("#")] or [0]


def _line_starts(toks: list[str]) -> list[int]:
    return [0] + [k + 1 for k, t in enumerate(toks) if t == "\n"]


def _line_end(toks: list[str], start: int) -> int:
    return next((k + 1 for k in range(start, len(toks)) if toks[k] == "\n"), len(toks))


def _block_lines(toks: list[str], keyword: str) -> list[int]:
    """Indices just after the opening line of each `keyword NAME {` block."""
    out = []
    for k, t in enumerate(toks):
        if t == keyword and "{" in toks[k:k + 6]:
            out.append(_line_end(toks, k))
    return out


def _atom_names() -> list[str]:
    from regspec.compiler.catalogue import ATOMS, SETS

    return sorted(set(ATOMS) | set(SETS))


def mutate(rng: random.Random, source: str, text: str, *, small: bool = False) -> Mutant:
    """1-3 edits of ``text``; ``small`` keeps numbers that size arrays small (see HEAVY)."""
    toks = tokens(text)
    edits: list[str] = []
    atoms = _atom_names()
    for _ in range(rng.randint(1, 3)):
        if not toks:
            break
        solid = _solid(toks)
        i = rng.choice(solid)
        op = rng.choice(OPERATIONS)
        names = [k for k, t in enumerate(toks) if NAME.fullmatch(t)] or [i]
        numbers = [k for k, t in enumerate(toks) if NUMBER.match(t)] or [i]
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap":
            j = rng.choice(solid)
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "number":
            i = rng.choice(numbers)
            toks[i] = rng.choice(SMALL_NUMBERS if small else EDGE_NUMBERS)
        elif op == "dimension":  # an entry of a `[...]` shape or a generator's size
            dims = [k for k in numbers if k > 0 and (toks[k - 1] in ("[", ",") or "[" in toks[max(0, k - 3):k])]
            i = rng.choice(dims or numbers)
            toks[i] = rng.choice(DIMENSIONS)
        elif op == "rename":  # a use of a name becomes a name never declared
            i = rng.choice(names)
            toks[i] = rng.choice(UNDEFINED)
        elif op == "samename":  # one identifier becomes another of the same spec (a name, an atom, a keyword)
            toks[rng.choice(names)] = toks[rng.choice(names)]
        elif op == "atom":  # an atom or set becomes another of the catalogue (other arity, curvature)
            calls = [k for k in names if toks[k] in atoms] or names
            toks[rng.choice(calls)] = rng.choice(atoms)
        elif op == "line":  # delete or duplicate a whole line (a statement, a brace)
            a = rng.choice(_line_starts(toks))
            b = _line_end(toks, a)
            toks[a:b] = [] if rng.random() < 0.5 else toks[a:b] * 2
        elif op == "train_in_problem":
            spots = _block_lines(toks, "problem") or _line_starts(toks)
            toks.insert(rng.choice(spots), "  " + rng.choice(TRAIN_ONLY) + "\n")
        elif op == "problem_in_train":
            spots = _block_lines(toks, "train") or _line_starts(toks)
            toks.insert(rng.choice(spots), "  " + rng.choice(PROBLEM_ONLY) + "\n")
        elif op == "unicode":
            toks.insert(i, rng.choice(UNICODE))
        elif op == "layout":  # CRLF, tabs, a very long line, no final newline
            choice = rng.randrange(4)
            if choice == 0:
                toks = ["\r\n" if t == "\n" else t for t in toks]
            elif choice == 1:
                toks = ["\t" * len(t) if t.isspace() and t != "\n" else t for t in toks]
            elif choice == 2:
                toks.insert(rng.choice(_line_starts(toks)), "# " + "x" * rng.choice([5000, 100000]) + "\n")
            else:
                while toks and toks[-1].isspace():
                    toks.pop()
        elif op == "long":  # a very long expression line: a sum of thousands of terms
            spots = [k for k in names if toks[k] in ("minimize", "maximize")]
            if spots:
                k = rng.choice(spots)
                toks.insert(k + 1, " " + " + ".join(["1"] * rng.choice([50, 2000])) + " +")
            else:
                toks.insert(i, " + ".join(["1"] * 2000))
        elif op == "nest":  # deep nesting: parentheses, unary minus, calls, lists
            depth = rng.choice([20, 99, 101, 150, 1000])
            open_, close = rng.choice([("(", ")"), ("-(", ")"), ("abs(", ")"), ("[", "]"), ("sum(", ")")])
            k = rng.choice(names)
            toks[k] = open_ * depth + toks[k] + close * depth
        elif op == "insert":
            toks.insert(i, "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 4))))
        elif i + 1 < len(toks) and toks[i + 1].isspace() and toks[i + 1] != "\n":  # glue
            del toks[i + 1]
        edits.append(op)
    return Mutant(source, "".join(toks), edits)


OPERATIONS = (["number"] * 4 + ["dimension"] * 3 + ["rename"] * 2 + ["atom"] * 3 + ["samename"] * 2 + ["line"] * 2
              + ["delete", "duplicate", "swap", "insert", "glue", "train_in_problem", "problem_in_train",
                 "unicode", "layout", "long", "nest"])
CHARS = list('{}[]()",;=+-*/@<>.:#\\\n \t0123456789xyzSe_') + ["\u2028", "\ufeff", "\u00e9", "\x00", "\r"]


# ---------------------------------------------------------------- running one command
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("ran past its time limit")


@dataclass
class Run:
    command: str
    argv: list[str]
    rc: int | None
    out: str
    err: str
    raised: str | None  # an exception that escaped main (SystemExit's code is the rc)


def argv_for(command: str, path: Path, workdir: Path) -> list[str]:
    p = str(path)
    small = ["--max-iter", "300"]
    return {
        "check": ["check", p], "check_json": ["check", "--json", p], "fmt": ["fmt", "--check", p],
        "explain": ["explain", p], "explain_json": ["explain", "--json", p],
        "plan": ["plan", p], "plan_json": ["plan", "--json", p],
        "compile": ["compile", p, "-o", str(workdir / "trainer_out.py"), "--epochs", "1"],
        "solve": ["solve", p, *small], "solve_torch": ["solve", p, "--backend", "torch", "--json", *small],
        "solve_cvxpy": ["solve", p, "--backend", "cvxpy"],
        "sweep": ["solve", p, "--sweep", "lam=[0.1,1]", "--out", str(workdir / "sweep"), "--quiet"],
        "crosscheck": ["crosscheck", p, "--quiet", *small],
        "train": ["train", p, "--epochs", "1", "--out", str(workdir / "run"), "--overwrite", "--quiet",
                  "--stop-after", "1"],
    }[command]


def run_command(command: str, path: Path, workdir: Path, seconds: int = 60) -> Run:
    from regspec.cli import main

    argv = argv_for(command, path, workdir)
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    rc, raised = None, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a numpy warning on the user's terminal is a defect
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse's usage errors
                rc = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - anything escaping main is the finding
        if isinstance(e, KeyboardInterrupt):
            raise
        import traceback

        raised = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return Run(command, argv, rc, out.getvalue(), err.getvalue(), raised)


LOCATED = r":\d+:\d+: error: \S"


def failure(run: Run, path: Path) -> str | None:
    """Why this run breaks the contract, or None."""
    if run.raised:
        return "raised: " + run.raised.strip().splitlines()[-1]
    text = run.out + run.err
    if "internal error" in text:
        line = next((ln for ln in text.splitlines() if "internal error" in ln), "")
        return "internal: " + line.strip()
    if "Traceback" in text:
        return "traceback on the terminal"
    if run.rc not in (0, 1, 2, 3):
        return f"exit {run.rc}"
    if run.rc == 3 and run.command not in HEAVY:
        return "exit 3 from a command that solves nothing"
    if run.rc == 1 and run.command == "fmt" and not run.err:  # --check's diff: not an error
        return None
    if run.rc == 1 and run.command == "crosscheck" and not run.err.strip():
        return None  # a disagreement table (judged by the solve fuzzers, not here)
    if run.rc == 1 and run.command.endswith("_json"):
        located = '"line"' in run.out or re.search(re.escape(str(path)) + LOCATED, text)
        return None if located else "unlocated json error"
    if run.rc == 1 and not re.search(re.escape(str(path)) + LOCATED, run.err):
        return "unlocated error: " + (run.err.strip().splitlines() or ["(nothing on stderr)"])[0][:200]
    if run.rc == 0 and re.search(r"\b(nan|inf)\b", run.out) and run.command.startswith("solve"):
        return "a non-finite value printed as a result"
    return None


def fmt_failure(text: str) -> str | None:
    """`regspec fmt` output re-parses to the same tree and is idempotent (when ``text`` parses)."""
    from regspec.diagnostics import RegspecError
    from regspec.fmt import format_text
    from regspec.parser import parse

    try:
        tree = parse(text)
    except RegspecError:
        return None
    try:
        once = format_text(text, "<fuzz>")
    except RegspecError as e:
        return "fmt refused a spec that parses: " + str(e).splitlines()[0]
    try:
        again = parse(once)
    except RegspecError as e:
        return "fmt output does not parse: " + str(e).splitlines()[0]
    if (again.lets, again.blocks) != (tree.lets, tree.blocks):
        return "fmt changed the tree"
    if format_text(once, "<fuzz>") != once:
        return "fmt is not idempotent"
    return None


def commands_for(text: str, heavy: bool) -> list[str]:
    cmds = list(CHEAP)
    if heavy:
        if re.search(r"(?m)^\s*train\s+\w+\s*\{", text):
            cmds += ["plan", "plan_json", "compile", "train"]
        if re.search(r"(?m)^\s*problem\s+\w+\s*\{", text):
            cmds += ["solve", "solve_torch", "solve_cvxpy", "crosscheck"]
            if re.search(r"\bparam\s+lam\b", text):
                cmds.append("sweep")
    return cmds


def mutant_for(seed: int, heavy: bool, sources: list[str] | None = None) -> Mutant:
    rng = random.Random(seed)
    source = rng.choice(sources or sorted(SOURCES))
    return mutate(rng, source, SOURCES[source], small=heavy)


def findings(mutant: Mutant, workdir: Path, heavy: bool, commands: list[str] | None = None) -> list[tuple[str, str]]:
    """(command, failure) for each command that breaks the contract on ``mutant``."""
    path = workdir / Path(mutant.source).name
    path.write_text(mutant.text, encoding="utf-8", errors="surrogatepass")
    out = []
    why = fmt_failure(mutant.text)
    if why:
        out.append(("fmt-roundtrip", why))
    for command in commands or commands_for(mutant.text, heavy):
        if command == "fmt":
            path.write_text(mutant.text, encoding="utf-8", errors="surrogatepass")
        why = failure(run_command(command, path, workdir, 120 if command in HEAVY else 30), path)
        if why:
            out.append((command, why))
    return out


def workdir_for(folder: Path) -> Path:
    """A folder where the specs' relative data paths resolve (specs/data)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "data"
    if not link.exists():
        link.symlink_to(ROOT / "specs" / "data")
    return folder


def main(argv: list[str]) -> int:
    """``python tests/fuzz_commands.py N [START] [--heavy EVERY] [--only CMD,...] [--sources PART]
    [--keep DIR]``:
    N mutants from seed START, every EVERY-th through the heavy commands too; failures grouped by
    (command, kind), the first mutant of each kind written to DIR."""
    import tempfile
    import time

    n = int(argv[0]) if argv else 200
    start = int(argv[1]) if len(argv) > 1 and not argv[1].startswith("-") else 0
    every = int(argv[argv.index("--heavy") + 1]) if "--heavy" in argv else 5
    only = argv[argv.index("--only") + 1].split(",") if "--only" in argv else None
    pick = argv[argv.index("--sources") + 1] if "--sources" in argv else None  # a part of their names
    sources = sorted(s for s in SOURCES if pick in s) if pick else None
    keep = Path(argv[argv.index("--keep") + 1]) if "--keep" in argv else None  # a folder for the failing mutants
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[int]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = workdir_for(Path(tmp))
        for seed in range(start, start + n):
            heavy = every > 0 and seed % every == 0
            m = mutant_for(seed, heavy, sources)
            cmds = only if only else None
            for command, why in findings(m, work, heavy, cmds):
                key = (command, re.sub(r"\d+", "N", why)[:160])
                if key not in groups:
                    print(f"seed {seed} [{m.source} {m.edits}] {command}: {why}", flush=True)
                    if keep:
                        (keep / f"seed{seed}_{command}.reg").write_text(m.text, encoding="utf-8",
                                                                        errors="surrogatepass")
                groups.setdefault(key, []).append(seed)
    print(f"{n} mutants in {time.time() - t0:.0f} s; {len(groups)} failure kinds")
    for (command, why), seeds in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(seeds):5d}  {command:14} {why}  seeds {seeds[:5]}")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
