"""Cross-check the two backends: solve each problem with CVXPY and with the torch backend and
compare what they found.

Agreement means both runs reached a solved status and the objectives agree:

    gap = |f_torch - f_cvxpy| / max(|f_cvxpy|, |f_torch|, atol)  <=  rtol

with ``rtol = 1e-5`` in float64 (``1e-3`` in float32) unless the spec states another value and
its reason in a header comment (``# crosscheck: rtol = 1e-4 -- why``). Where the numbers come
from: CVXPY + Clarabel stops at a relative duality gap of 1e-8 (SCS, which CVXPY picks for
PSD and exponential cones, is run at eps = 1e-9 here, its 1e-4 default being far too loose);
FISTA stops at a relative prox-gradient residual of 1e-9 and PDHG at relative primal and dual
residuals of 1e-8, which put the objectives within about 1e-7 of each other on the specs in
``specs/``. 1e-5 keeps two orders of margin above what the solvers reach and is still far below
any modelling difference (a wrong sign, a missing term, a dropped constraint all move the
objective by percents). Variables are reported (max absolute difference) but not asserted: the
minimizer need not be unique (transport LPs, TV, nuclear-norm problems may have several).

Header keys (any ``# crosscheck:`` line of the spec, ``key = value`` pairs separated by ``,``;
text after ``--`` is the reason, required when a threshold is changed):
``rtol``, ``atol`` (objective scale floor, default 1e-9), ``tol`` (torch stopping tolerance),
``max_iter``, ``skip`` (do not cross-check; the reason says why).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from regspec.diagnostics import RegspecError
from regspec.result import Result

RTOL = {"float64": 1e-5, "float32": 1e-3}
ATOL = 1e-9
# CVXPY solver options for reference-quality solutions (CATALOGUE §6).
SCS_TIGHT = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200000}

_HEADER = re.compile(r"^\s*#\s*crosscheck\s*:\s*(.*)$", re.IGNORECASE)


@dataclass
class Directives:
    """What a spec's ``# crosscheck:`` header lines ask for."""

    rtol: float | None = None
    atol: float | None = None
    tol: float | None = None
    max_iter: int | None = None
    skip: bool = False
    reason: str = ""


def read_directives(path: str | Path) -> Directives:
    """Parse ``# crosscheck: key = value, ... -- reason`` lines of a spec file."""
    d = Directives()
    try:
        text = Path(path).read_text()
    except OSError:
        return d
    for line in text.splitlines():
        m = _HEADER.match(line)
        if not m:
            continue
        body, _, reason = m.group(1).partition("--")
        if reason.strip():
            d.reason = (d.reason + " " + reason.strip()).strip()
        for item in filter(None, (p.strip() for p in body.split(","))):
            key, _, value = (s.strip() for s in item.partition("="))
            key = key.lower()
            if key == "skip":
                d.skip = True
                if value and not d.reason:
                    d.reason = value.strip("\"'")
            elif key in ("rtol", "atol", "tol"):
                setattr(d, key, float(value))
            elif key == "max_iter":
                d.max_iter = int(float(value))
    return d


@dataclass
class Check:
    """One problem cross-checked: the two results, the comparison and the verdict.

    ``verdict``: ``agree``, ``disagree`` (both solved, objectives differ beyond ``rtol``, or one
    backend failed to solve what the other solved), ``skipped`` (a backend does not accept the
    problem, in the analysis or when the torch run starts, or the spec asks to skip; ``reason``
    says why, with the refusal's location) or ``error``.
    """

    spec: str
    problem: str
    verdict: str
    reason: str = ""
    cvxpy: Result | None = None
    torch: Result | None = None
    gap: float | None = None
    rtol: float = RTOL["float64"]
    var_diff: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict in ("agree", "skipped")


def accepts(spec: Any, problem: str) -> tuple[bool, str, bool, str]:
    """(cvxpy accepts, why not, torch accepts, why not), from the analysis alone (no solve)."""
    from regspec.compiler.passes.curvature import cvxpy_refusals

    ir = spec.compiled(problem).ir
    errs = cvxpy_refusals(ir)
    split = ir.meta["split"]
    return (not errs, "; ".join(m for m, _ in errs), split.algorithm != "none",
            "; ".join(m for m, _ in split.refusals))


def objective_gap(a: float, b: float, atol: float = ATOL) -> float:
    """|a - b| / max(|a|, |b|, atol)."""
    return abs(a - b) / max(abs(a), abs(b), atol)


def check_problem(spec: Any, problem: str, *, rtol: float | None = None, tol: float | None = None,
                  max_iter: int | None = None, dtype: str = "float64", device: str = "cpu",
                  directives: Directives | None = None) -> Check:
    """Solve one problem block with both backends and compare (see the module docstring)."""
    import numpy as np

    import regspec
    from regspec.backends.cvxpy import lower as cvx_lower
    from regspec.backends.cvxpy import solve as cvx_solve

    d = directives or Directives()
    check = Check(spec.path, problem, "error",
                  rtol=rtol if rtol is not None else (d.rtol if d.rtol is not None else RTOL[dtype]))
    if d.skip:
        check.verdict, check.reason = "skipped", d.reason or "the spec asks to skip the cross-check"
        return check
    try:
        cvx_ok, cvx_why, torch_ok, torch_why = accepts(spec, problem)
    except RegspecError as e:
        check.reason = str(e).splitlines()[0]
        return check
    if not (cvx_ok and torch_ok):
        check.verdict = "skipped"
        check.reason = "; ".join(([f"cvxpy refuses: {cvx_why}"] if not cvx_ok else []) +
                                 ([f"torch refuses: {torch_why}"] if not torch_ok else []))
        return check
    ir = spec.compiled(problem).ir
    try:
        program = cvx_lower.lower(ir)
        solver = cvx_solve.choose_solver(program, None)
        opts = SCS_TIGHT if solver == "SCS" else None
        t0 = time.perf_counter()
        check.cvxpy = regspec.solve(spec, problem=problem, backend="cvxpy", solver=solver, solver_opts=opts)
        check.seconds["cvxpy"] = time.perf_counter() - t0
    except RegspecError as e:
        check.reason = str(e).splitlines()[0]
        return check
    t0 = time.perf_counter()
    try:
        check.torch = regspec.solve(spec, problem=problem, backend="torch", dtype=dtype, device=device,
                                    tol=tol if tol is not None else d.tol,
                                    max_iter=max_iter if max_iter is not None else d.max_iter)
    except RegspecError as e:  # refused when it starts (a term not finite at the start point, ...)
        check.verdict, check.reason = "skipped", f"torch refuses: {str(e).splitlines()[0]}"
        return check
    check.seconds["torch"] = time.perf_counter() - t0
    c, t = check.cvxpy, check.torch
    for name, value in c.variables.items():
        if name in t.variables:
            check.var_diff[name] = float(np.max(np.abs(np.asarray(value) - np.asarray(t.variables[name])),
                                                initial=0.0))
    if not c.ok or not t.ok:
        check.verdict = "disagree" if c.ok != t.ok else "error"
        check.reason = f"cvxpy {c.status}, torch {t.status}"
        return check
    check.gap = objective_gap(t.objective, c.objective, d.atol if d.atol is not None else ATOL)
    if math.isfinite(check.gap) and check.gap <= check.rtol:
        check.verdict = "agree"
    else:
        check.verdict = "disagree"
        check.reason = f"objective gap {check.gap:.3g} > rtol {check.rtol:g}"
    if d.reason and (d.rtol is not None or d.tol is not None):
        check.reason = (check.reason + "; " if check.reason else "") + f"spec: {d.reason}"
    return check


def default_specs(root: str | Path | None = None) -> list[Path]:
    """Every ``.reg`` file of ``specs/`` (the repository's, or ``root``)."""
    base = Path(root) if root is not None else Path(__file__).resolve().parent.parent / "specs"
    return sorted(base.glob("*.reg"))


def expand_specs(paths: list[str | Path] | None) -> list[Path]:
    """The spec files to check: each file as given, each folder's ``.reg`` files (sorted);
    nothing given: ``default_specs()``."""
    out: list[Path] = []
    for p in (paths or default_specs()):
        p = Path(p)
        out += default_specs(p) if p.is_dir() else [p]
    return out


def crosscheck(paths: list[str | Path] | None = None, *,
               on_spec: Callable[[str, list[Check]], None] | None = None, **kw: Any) -> list[Check]:
    """Cross-check every problem block of the given specs or folders of specs (default: all of ``specs/``);
    ``on_spec(path, checks)`` is called as each spec finishes (progress)."""
    out: list[Check] = []
    for path in expand_specs(paths):
        checks = _check_spec(path, **kw)
        out += checks
        if on_spec is not None:
            on_spec(str(path), checks)
    return out


def _check_spec(path: str | Path, **kw: Any) -> list[Check]:
    import regspec

    try:
        spec = regspec.load(path)
    except RegspecError as e:
        return [Check(str(path), "-", "error", reason=str(e).splitlines()[0])]
    directives = read_directives(path)
    return [check_problem(spec, problem, directives=directives, **kw) for problem in spec.problems]


def _fmt(x: float | None, spec: str = ".8g") -> str:
    return "-" if x is None else format(x, spec)


def table(checks: list[Check]) -> str:
    """A plain-text table: objectives, gap, variable differences, residuals, times, verdict."""
    head = ["problem", "cvxpy objective", "torch objective", "rel. gap", "max |dx|", "torch residuals",
            "t cvxpy", "t torch", "verdict"]
    rows = []
    for ch in checks:
        name = f"{Path(ch.spec).stem}:{ch.problem}"
        if ch.cvxpy is None or ch.torch is None:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", ch.verdict + (f" ({ch.reason})" if ch.reason else "")])
            continue
        c, t = ch.cvxpy, ch.torch
        res = t.residuals
        if "prox_grad_rel" in res:
            rtxt = f"prox-grad {res['prox_grad_rel']:.1e}"
        else:
            rtxt = f"p {res.get('primal_rel', float('nan')):.1e} d {res.get('dual_rel', float('nan')):.1e}"
            if "infeasibility" in res:
                rtxt += f" feas {res['infeasibility']:.1e}"
        dx = max(ch.var_diff.values(), default=0.0)
        rows.append([name, f"{_fmt(c.objective, '.10g')} ({c.solver})",
                     f"{_fmt(t.objective, '.10g')} ({t.solver}, {t.iterations} it)",
                     _fmt(ch.gap, ".1e") + f" <= {ch.rtol:g}" if ch.gap is not None else "-", f"{dx:.1e}", rtxt,
                     f"{ch.seconds.get('cvxpy', 0):.2f}s", f"{ch.seconds.get('torch', 0):.2f}s",
                     ch.verdict + (f" ({ch.reason})" if ch.reason else "")])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head) - 1)]
    lines = []
    for r in [head] + rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1])
    lines.insert(1, "-" * min(160, sum(widths) + 2 * len(widths) + 8))
    n_agree = sum(ch.verdict == "agree" for ch in checks)
    n_bad = sum(not ch.ok for ch in checks)
    lines.append(f"{n_agree} agree, {sum(ch.verdict == 'skipped' for ch in checks)} skipped, {n_bad} disagree or failed")
    return "\n".join(lines)


__all__ = ["Check", "Directives", "check_problem", "crosscheck", "default_specs", "expand_specs", "objective_gap",
           "read_directives", "table", "RTOL"]
