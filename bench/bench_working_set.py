"""Benchmark: the torch backend's in-process solve (FISTA on working sets) against scikit-learn and,
where installed, skglm and celer, on lasso, elastic net, group lasso and l1-logistic, at the same
relative objective gap.

    .venv/bin/python bench/bench_working_set.py [--n 2000 --p 2000] [--quick] [--problems lasso,enet]
        [--designs gaussian,toeplitz] [--ratios 0.5,0.1,0.01] [--gap 1e-6] [--repeat 2] [--plain-fista]
        [--fortran] [--baselines sklearn,skglm,celer] [--fresh]

Problems (scikit-learn's scalings, no intercept), X n x p with N(0, 1) rows (``gaussian``) or a
Toeplitz correlation rho^|i-j|, rho = 0.5 (``toeplitz``, AR(1) columns), w0 5%-sparse, seeded:
  lasso      ||X w - y||^2 / (2n) + lam ||w||_1                       sklearn Lasso
  enet       ||X w - y||^2 / (2n) + lam (0.5 ||w||_1 + 0.25 ||w||^2)   sklearn ElasticNet(l1_ratio=0.5)
  group      ||X w - y||^2 / (2n) + lam sum_g sqrt(5) ||w_g||, groups of 5 consecutive features
             (scikit-learn has no group lasso: baselines skglm / celer only)
  logistic   C sum_i log(1 + exp(-y_i x_i^T w)) + ||w||_1, y = sign(X w0 + noise), lam = 1/C
             sklearn LogisticRegression(l1, liblinear)
lam = ratio x lam_max (the smallest lam with w = 0).

Matching accuracy: f* = the best objective of tight reference runs (regspec tol 1e-10, and each
baseline at its tightest setting, except liblinear: minutes at 1e-8); each method walks a ladder
of its own tolerance from loose to tight and is timed at the first setting whose objective is
within --gap of f* (relative). Times are the best of --repeat runs in this process after a
warm-up (numba's compile for skglm); the torch time is ``solve()`` on a lowered program started
from zero (``times['solve']``: the variables reset, no parse or lowering). Ratios: regspec / the
fastest baseline. No timing is asserted. skglm and celer are optional (not project
dependencies): missing ones are reported.

``--fresh`` (issue 13's "first solve in a fresh process <= 2x its re-solve plus the torch
import"): for each problem, at the tolerance that matched in-process, fresh processes run as a
user would (wall clock from here, children's CPU time from getrusage, median of --repeat runs
after one warm-up, the commands interleaved): ``python -c "import torch"``, and a script that
imports regspec and calls ``regspec.solve("bench.reg", backend="torch", tol=...)`` on the spec
and .npz written here (parse, data load, lowering, torch import, first solve). The ratio is
that script's wall / (2 x the in-process re-solve + the torch import's wall); the script's own
breakdown (its result's ``times``) is printed. Children run with PYTHONDONTWRITEBYTECODE removed
from their environment (``env -u``): this shell sets it, a user's does not, and with it every
fresh process would recompile regspec's sources. ``--baselines ''`` skips the baselines (f* is
then regspec's own tight run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUP = 5
L1_RATIO = 0.5
REGSPEC_LADDER = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]
BASE_LADDER = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10]


# ------------------------------------------------------------------------------------------- data
def design(n: int, p: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    X = rng.standard_normal((n, p))
    if kind == "toeplitz":  # AR(1) columns: corr(x_i, x_j) = rho^|i-j|
        rho = 0.5
        for j in range(1, p):
            X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho * rho) * X[:, j]
    return X


def make_problem(problem: str, kind: str, n: int, p: int, ratio: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = design(n, p, kind, rng)
    w0 = np.zeros(p)
    support = rng.choice(p, max(1, p // 20), replace=False)
    w0[support] = rng.standard_normal(len(support))
    if problem == "group":
        w0 = np.repeat(w0[::GROUP] != 0, GROUP)[:p] * rng.standard_normal(p)
    y = X @ w0 + 0.1 * rng.standard_normal(n)
    if problem == "logistic":
        y = np.where(y >= 0, 1.0, -1.0)
        lam_max = np.abs(X.T @ y).max() / 2
    elif problem == "group":
        lam_max = np.linalg.norm((X.T @ y).reshape(-1, GROUP), axis=1).max() / (n * np.sqrt(GROUP))
    elif problem == "enet":
        lam_max = np.abs(X.T @ y).max() / (n * L1_RATIO)
    else:
        lam_max = np.abs(X.T @ y).max() / n
    return X, y, ratio * lam_max


def objective(problem: str, X, y, lam: float, w: np.ndarray) -> float:
    n = len(y)
    if problem == "logistic":
        return float(np.logaddexp(0, -y * (X @ w)).sum() / lam + np.abs(w).sum())
    r = X @ w - y
    ls = r @ r / (2 * n)
    if problem == "enet":
        return float(ls + lam * (L1_RATIO * np.abs(w).sum() + (1 - L1_RATIO) / 2 * w @ w))
    if problem == "group":
        return float(ls + lam * np.sqrt(GROUP) * np.linalg.norm(w.reshape(-1, GROUP), axis=1).sum())
    return float(ls + lam * np.abs(w).sum())


SPECS = {
    "lasso": "minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * norm1(w)",
    "enet": f"minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * elastic_net(w, a = {L1_RATIO}, "
            f"b = {1 - L1_RATIO})",
    "group": "minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * group_norm(w, groups = g)",
    "logistic": "minimize sum(logistic(-y * (X @ w))) / lam + norm1(w)",
}


def regspec_program(problem: str, X, y, lam: float, tmp: Path):
    import regspec
    from regspec.backends.torch import lower as torch_lower

    np.savez(tmp / "data.npz", X=X, y=y, g=np.repeat(np.arange(X.shape[1] // GROUP), GROUP))
    text = ("problem bench {\n  data X = load(\"data.npz\", \"X\")\n  data y = load(\"data.npz\", \"y\")\n"
            "  data g = load(\"data.npz\", \"g\")\n"
            f"  param lam = {float(lam)!r} >= 0\n  var w[cols(X)]\n  {SPECS[problem]}\n}}\n")
    (tmp / "bench.reg").write_text(text)
    ir = regspec.load(tmp / "bench.reg").compiled(None).ir
    return torch_lower.lower(ir)


# ------------------------------------------------------------------------------------- methods
def regspec_solver(program, working_set: bool | None):
    import torch
    from regspec.backends.torch import solve as torch_solve

    def run(tol: float):
        with torch.no_grad():
            for v in program.variables():
                v.zero_()
        r = torch_solve.solve(program, tol=tol, working_set=working_set)
        if r.status != "optimal":
            raise RuntimeError(f"regspec status {r.status}")
        return r.variables["w"], r.times["solve"], r
    return run


def sklearn_solver(problem: str, X, y, lam: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression

    def run(tol: float):
        if problem == "lasso":
            m = Lasso(alpha=lam, fit_intercept=False, tol=tol, max_iter=1_000_000)
        elif problem == "enet":
            m = ElasticNet(alpha=lam, l1_ratio=L1_RATIO, fit_intercept=False, tol=tol, max_iter=1_000_000)
        elif problem == "logistic":
            m = LogisticRegression(C=1.0 / lam, l1_ratio=1.0, solver="liblinear", fit_intercept=False, tol=tol,
                                   max_iter=1_000_000)
        else:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            t0 = time.perf_counter()
            m.fit(X, y)
            wall = time.perf_counter() - t0
        return np.ravel(m.coef_), wall, None
    return run if problem != "group" else None


def skglm_solver(problem: str, X, y, lam: float):
    try:
        import skglm  # noqa: F401
    except ImportError:
        return None
    from skglm import ElasticNet, GroupLasso, Lasso
    from skglm.estimators import SparseLogisticRegression

    n, p = X.shape

    def run(tol: float):
        if problem == "lasso":
            m = Lasso(alpha=lam, fit_intercept=False, tol=tol, max_iter=1000)
        elif problem == "enet":
            m = ElasticNet(alpha=lam, l1_ratio=L1_RATIO, fit_intercept=False, tol=tol, max_iter=1000)
        elif problem == "group":
            m = GroupLasso(groups=GROUP, alpha=lam, weights=np.full(p // GROUP, np.sqrt(GROUP)), fit_intercept=False,
                           tol=tol, max_iter=1000)
        else:  # skglm's datafit is the mean logistic loss: alpha = lam / n
            m = SparseLogisticRegression(alpha=lam / n, fit_intercept=False, tol=tol, max_iter=1000)
        t0 = time.perf_counter()
        m.fit(X, y)
        return np.ravel(m.coef_), time.perf_counter() - t0, None
    return run


def celer_solver(problem: str, X, y, lam: float):
    try:
        import celer  # noqa: F401
    except ImportError:
        return None
    from celer import ElasticNet, GroupLasso, Lasso, LogisticRegression

    p = X.shape[1]

    def run(tol: float):
        if problem == "lasso":
            m = Lasso(alpha=lam, fit_intercept=False, tol=tol, max_iter=1000)
        elif problem == "enet":
            m = ElasticNet(alpha=lam, l1_ratio=L1_RATIO, fit_intercept=False, tol=tol, max_iter=1000)
        elif problem == "group":
            m = GroupLasso(groups=GROUP, alpha=lam, weights=np.full(p // GROUP, np.sqrt(GROUP)), fit_intercept=False,
                           tol=tol, max_iter=1000)
        else:
            m = LogisticRegression(C=1.0 / lam, fit_intercept=False, tol=tol, max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            m.fit(X, y)
        return np.ravel(m.coef_), time.perf_counter() - t0, None
    return run


# ----------------------------------------------------------------------------------- measuring
def first_matching(run, ladder, f, f_star: float, gap: float, repeat: int):
    """(setting, gap, best wall time, extra, best CPU time) at the loosest setting of the ladder
    within ``gap`` of f*. CPU time (``time.process_time`` around the whole call: every method here
    runs on one thread) moves much less than wall time when other jobs share the machine."""
    for tol in ladder:
        try:
            w, _, extra = run(tol)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return None, f"failed: {e}"
        g = (f(w) - f_star) / abs(f_star)
        if g <= gap:
            walls, cpus = [], []
            for _ in range(repeat):
                c0 = time.process_time()
                walls.append(run(tol)[1])
                cpus.append(time.process_time() - c0)
            return (tol, g, min(walls), extra, min(cpus)), ""
    return None, "no setting reached the gap"


def one_case(problem: str, kind: str, ratio: float, args, tmp: Path) -> dict:
    X, y, lam = make_problem(problem, kind, args.n, args.p, ratio)
    f = lambda w: objective(problem, X, y, lam, w)  # noqa: E731
    program = regspec_program(problem, X, y, lam, tmp)
    methods = {"regspec": regspec_solver(program, None)}
    if args.plain_fista:
        methods["regspec plain FISTA"] = regspec_solver(program, False)
    # the baselines' coordinate descent reads columns: each fit copies a C-ordered X to Fortran order
    # (about one pass over X), as a user calling them with a NumPy array pays; --fortran hands them
    # X already in Fortran order (their best case, the copy made once outside the timing)
    X_base = np.asfortranarray(X) if args.fortran else X
    for name, make in (("sklearn", sklearn_solver), ("skglm", skglm_solver), ("celer", celer_solver)):
        run = make(problem, X_base, y, lam) if name in args.baselines else None
        if run is not None:
            methods[name] = run
    # tight references (also the warm-up of every method: imports, numba's compile)
    refs = {}
    for name, run in methods.items():
        # liblinear at 1e-8 and tighter runs for minutes at n = p = 2000: its reference run is only
        # a warm-up (1e-4), f* comes from the others
        tight = 1e-10 if name.startswith("regspec") else 1e-4 if (name, problem) == ("sklearn", "logistic") \
            else BASE_LADDER[-1]
        try:
            refs[name] = f(run(tight)[0])
        except Exception as e:  # noqa: BLE001
            print(f"    {name}: reference run failed: {e}")
    f_star = min(refs.values())
    out = {"problem": problem, "design": kind, "ratio": ratio, "f_star": f_star, "rows": {}}
    for name, run in methods.items():
        ladder = REGSPEC_LADDER if name.startswith("regspec") else BASE_LADDER
        found, why = first_matching(run, ladder, f, f_star, args.gap, args.repeat)
        out["rows"][name] = found if found is not None else why
    if args.fresh and not isinstance(out["rows"]["regspec"], str):
        out["fresh"] = fresh_processes(tmp, out["rows"]["regspec"][0], args.repeat, f_star, args.gap)
    return out


# ------------------------------------------------------------------------ fresh processes (--fresh)
# Children run without PYTHONDONTWRITEBYTECODE: a user's shell does not set it (this one does), and
# with it every fresh process would recompile regspec's editable sources (~60 ms).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
FIRST_SOLVE = """import json, sys, time
t0 = time.perf_counter()
import regspec
t1 = time.perf_counter()
r = regspec.solve(sys.argv[1], backend="torch", tol=float(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import_regspec": t1 - t0, "solve_call": t2 - t1, "times": r.times, "status": r.status,
                  "solver": r.solver, "objective": r.objective}))
"""


def _child(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, from getrusage of the finished children) and
    stdout of one fresh process, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=CHILD_ENV)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), out.stdout


def fresh_processes(tmp: Path, tol: float, repeat: int, f_star: float, gap: float) -> dict:
    """Median wall and CPU seconds of ``import torch`` and of the first-solve script in fresh
    processes (one warm-up each, then ``repeat`` interleaved rounds); the script's last report."""
    script = tmp / "first_solve.py"
    script.write_text(FIRST_SOLVE)
    commands = {"import torch": [sys.executable, "-c", "import torch"],
                "first solve": [sys.executable, str(script), str(tmp / "bench.reg"), repr(tol)]}
    runs: dict[str, dict] = {name: {"wall": [], "cpu": [], "stdout": _child(cmd, tmp)[2]}
                             for name, cmd in commands.items()}
    for _ in range(max(repeat, 1)):
        for name, cmd in commands.items():
            wall, cpu, stdout = _child(cmd, tmp)
            runs[name]["wall"].append(wall)
            runs[name]["cpu"].append(cpu)
            runs[name]["stdout"] = stdout
    report = json.loads(runs["first solve"]["stdout"].strip().splitlines()[-1])
    obj = report["objective"]
    report["gap"] = (obj - f_star) / abs(f_star) if obj is not None else float("nan")
    report["matches"] = report["status"] == "optimal" and report["gap"] <= gap
    return {"torch_wall": statistics.median(runs["import torch"]["wall"]),
            "torch_cpu": statistics.median(runs["import torch"]["cpu"]),
            "first_wall": statistics.median(runs["first solve"]["wall"]),
            "first_cpu": statistics.median(runs["first solve"]["cpu"]),
            "first_walls": runs["first solve"]["wall"], "report": report}


def report(case: dict) -> tuple[float | None, str, float | None]:
    """Prints a case; returns regspec / the fastest baseline by wall time, that baseline, and the
    same ratio by CPU time (against the baseline fastest by CPU time)."""
    rows = case["rows"]
    print(f"\n{case['problem']} {case['design']} lam = {case['ratio']} lam_max (f* = {case['f_star']:.12g})")
    for name, row in rows.items():
        if isinstance(row, str):
            print(f"  {name:<20} {row}")
            continue
        tol, g, wall, extra, cpu = row
        note = ""
        if extra is not None and "working_set" in extra.info:
            ws = extra.info["working_set"]
            note = f"  {extra.iterations} it, {ws['outer_iterations']} outer, working sets {ws['sizes']}"
        elif extra is not None:
            note = f"  {extra.iterations} it"
        print(f"  {name:<20} tol={tol:<8g} gap {g:9.1e} {wall:9.4f} s wall {cpu:9.4f} s CPU{note}")
    base = {k: v for k, v in rows.items() if not k.startswith("regspec") and not isinstance(v, str)}
    if isinstance(rows.get("regspec"), str) or not base:
        return None, "", None
    best = min(base, key=lambda k: base[k][2])
    ratio = rows["regspec"][2] / base[best][2]
    best_cpu = min(base, key=lambda k: base[k][4])
    ratio_cpu = rows["regspec"][4] / base[best_cpu][4]
    print(f"  ratio regspec / best baseline: {ratio:.2f}x by wall ({best}), {ratio_cpu:.2f}x by CPU ({best_cpu}) "
          "(target <= 1.5x)")
    return ratio, best, ratio_cpu


def report_fresh(case: dict) -> float | None:
    """Prints the fresh-process rows of a case; returns first solve / (2 x re-solve + import torch)."""
    fresh, row = case.get("fresh"), case["rows"].get("regspec")
    if fresh is None or isinstance(row, str):
        return None
    resolve = row[2]
    r = fresh["report"]
    parts = ", ".join(f"{k} {v:.3f}" for k, v in r["times"].items() if isinstance(v, (int, float)))
    bound = 2 * resolve + fresh["torch_wall"]
    ratio = fresh["first_wall"] / bound
    print(f"  fresh processes: import torch {fresh['torch_wall']:.3f} s wall ({fresh['torch_cpu']:.3f} s CPU); "
          f"first-solve script {fresh['first_wall']:.3f} s wall ({fresh['first_cpu']:.3f} s CPU; runs "
          f"{', '.join(f'{t:.2f}' for t in fresh['first_walls'])}); in it: import regspec "
          f"{r['import_regspec']:.3f} s, regspec.solve {r['solve_call']:.3f} s (times: {parts}); "
          f"{r['status']}, gap {r['gap']:.1e}{'' if r['matches'] else ' ** DOES NOT MATCH **'}")
    cpu = fresh["first_cpu"] / (2 * row[4] + fresh["torch_cpu"])
    print(f"  first solve / (2 x re-solve {resolve:.4f} s + import torch): {ratio:.2f}x by wall, {cpu:.2f}x by CPU "
          f"(target <= 1x; / (2 x (re-solve + import torch)): {fresh['first_wall'] / (2 * (resolve + fresh['torch_wall'])):.2f}x)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--p", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="n = p = 500")
    ap.add_argument("--problems", default="lasso,enet,group,logistic")
    ap.add_argument("--designs", default="gaussian,toeplitz")
    ap.add_argument("--ratios", default="0.5,0.1,0.01")
    ap.add_argument("--gap", type=float, default=1e-6)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--plain-fista", action="store_true", help="also time the torch backend without working sets")
    ap.add_argument("--fortran", action="store_true", help="hand the baselines X in Fortran order (no copy per fit)")
    ap.add_argument("--baselines", default="sklearn,skglm,celer", help="comma-separated; '' for none")
    ap.add_argument("--fresh", action="store_true",
                    help="also time regspec's first solve in fresh processes against import torch")
    args = ap.parse_args()
    args.baselines = [b for b in args.baselines.split(",") if b]
    if args.quick:
        args.n = args.p = 500
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"working sets bench at {commit}: n = {args.n}, p = {args.p}, gap {args.gap:g}, baselines get X in "
          f"{'Fortran' if args.fortran else 'C'} order; machine "
          f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.fresh:
        print("fresh processes run with PYTHONDONTWRITEBYTECODE removed from their environment (env -u "
              "PYTHONDONTWRITEBYTECODE): this shell sets it, a user's does not")
    tmp = Path(tempfile.mkdtemp(prefix="bench_ws_"))
    summary = []
    for problem in args.problems.split(","):
        for kind in args.designs.split(","):
            for ratio in (float(r) for r in args.ratios.split(",")):
                case = one_case(problem, kind, ratio, args, tmp)
                summary.append((problem, kind, ratio, *report(case), report_fresh(case)))
    print("\nsummary: regspec / best baseline at the same gap, by wall and by CPU time" +
          ("; first solve in a fresh process / (2 x re-solve + import torch)" if args.fresh else ""))
    for problem, kind, ratio, r, best, r_cpu, fresh in summary:
        print(f"  {problem:<9} {kind:<9} {ratio:<5g} " +
              (f"{r:6.2f}x vs {best:<8} CPU {r_cpu:5.2f}x" if r is not None else "  n/a") +
              (f"   fresh {fresh:5.2f}x" if fresh is not None else ""))
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
