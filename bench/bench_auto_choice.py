"""Benchmark: does ``auto`` pick the backend that finishes first? (issue 13 item 4)

    .venv/bin/python bench/bench_auto_choice.py [--repeat 3] [--only lasso tv_denoise ...] [--timeout 600]

Every problem block of every problem spec in ``specs/`` (the ``train_*`` specs have none) is
solved as a user runs it: ``regspec solve SPEC --problem P --backend B --json`` in a fresh
process, for B = cvxpy, torch and auto, interleaved, ``--repeat`` rounds after one discarded
warm-up round (page cache, .pyc files, the grammar cache). Reported per block: the median wall
time of each, the objectives (the torch and CVXPY results must agree to ``AGREE`` relative, the
documented accuracy at default settings, else the row says so), the backend auto chose, and the
ratio ``auto / min(cvxpy, torch)``. Target: <= 1.5x on every block. The ratios compare the child
process's user + system CPU seconds by default (``--clock cpu``): on a shared machine a run's wall
time measures the other jobs as much as the run; ``--clock wall`` compares wall seconds (a torch
run on two threads counts both in CPU time; small problems run on one).

Also printed per block: the cost model's features and estimates (``regspec.api.cost_features`` /
``explain_choice``) next to the measured parts of each run (``times``: import, solve), which is
where the model's constants come from (see ``regspec/api.py``). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
REGSPEC = str(Path(PYTHON).with_name("regspec"))
BACKENDS = ("cvxpy", "torch", "auto")
AGREE = 1e-5  # relative objective agreement between the backends counted as "same accuracy"
TARGET = 1.5
# children write bytecode (see bench_cold_start.py): otherwise every run recompiles edited sources
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(spec: Path, problem: str, backend: str, timeout: float) -> dict:
    """One fresh ``regspec solve --json``: wall seconds and the parsed result (or the failure)."""
    cmd = [REGSPEC, "solve", str(spec), "--problem", problem, "--backend", backend, "--json"]
    t0, c0 = time.perf_counter(), _children_cpu()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=CHILD_ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"wall": math.inf, "cpu": math.inf, "status": f"over {timeout:.0f} s", "objective": None, "times": {}}
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"wall": wall, "cpu": cpu, "status": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}",
                "objective": None, "times": {}}
    return {"wall": wall, "cpu": cpu, "status": doc.get("status"), "objective": doc.get("objective"),
            "times": doc.get("times", {}), "backend": doc.get("backend"), "iterations": doc.get("iterations"),
            "solver": doc.get("solver")}


def _children_cpu() -> float:
    """User + system CPU seconds of finished children (the run just waited for, by difference)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def blocks(only: list[str] | None) -> list[tuple[Path, str]]:
    import regspec

    out = []
    for path in sorted((ROOT / "specs").glob("*.reg")):
        if only and path.stem not in only:
            continue
        spec = regspec.load(path)
        out += [(path, p) for p in spec.problems]
    return out


LASSO_SPEC = """problem lasso {
  data X = load("lasso.npz", "X")
  data y = load("lasso.npz", "y")
  var w[cols(X)]
  minimize sum_squares(X @ w - y) / (2 * rows(X)) + 0.1 * norm1(w)
}
"""


def calibration_blocks(sizes: list[str]) -> list[tuple[Path, str]]:
    """Generated problems past the bundled specs' sizes, where the model's size terms decide:
    ``lasso:NxP`` (seeded Gaussian data, lam 0.1), ``classot:N`` and ``exactot:N``
    (bench_class_ot's data, rho = 0.01)."""
    import tempfile

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_class_ot import SPEC as CLASS_OT_SPEC
    from bench_class_ot import class_ot_data
    from bench_pdhg_small import EXACT_OT_SPEC

    out = []
    for item in sizes:
        kind, size = item.split(":")
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_auto_{kind}_{size}_"))
        if kind == "lasso":
            n, p = (int(v) for v in size.split("x"))
            rng = np.random.default_rng(0)
            np.savez(tmp / "lasso.npz", X=rng.standard_normal((n, p)), y=rng.standard_normal(n))
            (tmp / f"lasso_{size}.reg").write_text(LASSO_SPEC)
            out.append((tmp / f"lasso_{size}.reg", "lasso"))
        else:
            n = int(size)
            np.savez(tmp / "ot.npz", **class_ot_data(n, max(3, n // 100)))
            text, name = (CLASS_OT_SPEC, "class_ot") if kind == "classot" else (EXACT_OT_SPEC, "exact_ot")
            (tmp / f"{kind}_{n}.reg").write_text(text)
            out.append((tmp / f"{kind}_{n}.reg", name))
    return out


def model_line(path: Path, problem: str) -> str:
    import regspec
    from regspec.api import cost_features, explain_choice

    spec = regspec.load(path)
    f = cost_features(spec, problem)
    choice = explain_choice(spec, problem)
    feats = ", ".join(f"{k}={v}" for k, v in f.items() if k != "ir")
    return f"    model: {feats}\n    auto says: {choice.backend} ({choice.reason})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="spec stems to run (default: all problem specs)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="what the ratios compare: the child's user+system CPU seconds (default; robust to "
                         "other jobs on a shared machine) or wall seconds")
    ap.add_argument("--calibrate", nargs="*", default=["lasso:600x400", "lasso:2000x2000", "classot:60",
                                                       "exactot:60"],
                    help="generated problems run after the specs (lasso:NxP, classot:N, exactot:N)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per solve before giving up")
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}; {os.cpu_count()} CPU cores; load average at start {os.getloadavg()[0]:.2f}; "
          f"{args.repeat} rounds after a warm-up, fresh processes, medians")
    summary = []
    todo = blocks(args.only) + calibration_blocks(args.calibrate or [])
    for path, problem in todo:
        name = f"{path.stem}/{problem}"
        runs: dict[str, list[dict]] = {b: [] for b in BACKENDS}
        for b in BACKENDS:  # warm-up round
            run(path, problem, b, args.timeout)
        for _ in range(args.repeat):
            for b in BACKENDS:
                runs[b].append(run(path, problem, b, args.timeout))
        med = {b: statistics.median(r[args.clock] for r in runs[b]) for b in BACKENDS}
        wall = {b: statistics.median(r["wall"] for r in runs[b]) for b in BACKENDS}
        last = {b: runs[b][-1] for b in BACKENDS}
        objs = {b: last[b]["objective"] for b in ("cvxpy", "torch")}
        agree = ""
        if all(isinstance(v, (int, float)) for v in objs.values()):
            err = abs(objs["torch"] - objs["cvxpy"]) / max(abs(objs["cvxpy"]), 1e-9)
            agree = f"objectives agree to {err:.1e}" + ("" if err <= AGREE else f"  ** differ by more than {AGREE:g} **")
        chosen = last["auto"].get("backend") or "?"
        solved = {b: med[b] for b in ("cvxpy", "torch") if last[b]["objective"] is not None}
        best_b = min(solved, key=solved.get) if solved else None
        ratio = med["auto"] / solved[best_b] if best_b else math.nan
        print(f"\n== {name}: auto chose {chosen}; faster: {best_b}; auto / faster = {ratio:.2f}x"
              f"{'' if ratio <= TARGET else f'  ** over {TARGET}x **'}; {agree}")
        for b in BACKENDS:
            r = last[b]
            t = r.get("times", {})
            parts = " ".join(f"{k}={v:.3f}" for k, v in t.items() if isinstance(v, (int, float)))
            print(f"  {b:<6} median {args.clock} {med[b]:7.2f} s (runs {', '.join(format(x[args.clock], '.2f') for x in runs[b])}),"
                  f" wall {wall[b]:.2f} s; "
                  f"{r['status']}, {r.get('solver')}, {r.get('iterations')} it; {parts}")
        print(model_line(path, problem))
        summary.append((name, chosen, best_b, ratio, med, path.parent == ROOT / "specs"))
    print(f"\nsummary ({args.clock} seconds, medians; auto / faster backend, target <= 1.5x):")
    for name, chosen, best_b, ratio, med, bundled in summary:
        print(f"  {name if bundled else name + ' (generated)':<34} auto -> {chosen:<6} faster {best_b or '-':<6} {ratio:5.2f}x   "
              f"cvxpy {med['cvxpy']:6.2f} s  torch {med['torch']:6.2f} s  auto {med['auto']:6.2f} s")
    worst = max((r for _, _, _, r, _, bundled in summary if bundled and math.isfinite(r)), default=math.nan)
    if math.isfinite(worst):
        print(f"worst ratio over the bundled specs {worst:.2f}x: target {'met' if worst <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
