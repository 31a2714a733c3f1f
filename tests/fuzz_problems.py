"""Random well-posed convex problems over matrix variables, PSD variables, indexing and slicing,
transposes, reshape/vec, scalar broadcasting, bounded parameters, mixed equalities and
inequalities and sets, some infeasible and some unbounded, each written twice: as a `.reg` spec
and as a CVXPY problem built by hand from the same arrays (tests/test_fuzz_problems.py;
``python tests/fuzz_problems.py N`` runs N seeds and prints the disagreements).

Every piece is a (spec text, CVXPY builder) pair; the data are saved to an .npz file that the
spec loads, so the reference never goes through regspec's own data sources or lowering."""
from __future__ import annotations

import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
Builder = Callable[[dict[str, Any]], Any]


@dataclass
class Piece:
    spec: str
    cvx: Builder
    needs: frozenset[str] = frozenset()


@dataclass
class Problem:
    text: str
    data: dict[str, np.ndarray]
    sense: str
    objective: list[Piece]
    constraints: list[Piece]
    variables: dict[str, tuple[tuple[int, ...], str | None]]   # name -> (shape, "psd" or None)
    params: dict[str, float] = field(default_factory=dict)
    kind: str = "plain"     # plain, infeasible (built to be) or unbounded (built to be)


def _cp():
    import cvxpy as cp

    return cp


def pieces(n: int, m: int, k: int, p: int) -> tuple[list[Piece], list[Piece]]:
    """The objective terms and constraints for sizes x[n], X[m, k], S[p, p]."""
    cp = _cp()
    X, x, S = "X", "x", "S"
    terms = [
        Piece("sum_squares(A @ x - b)", lambda e: cp.sum_squares(e["A"] @ e[x] - e["b"]), frozenset("x")),
        Piece("norm1(x[1:])", lambda e: cp.norm1(e[x][1:]), frozenset("x")),
        Piece("lam * norm1(x)", lambda e: e["lam"] * cp.norm1(e[x]), frozenset({"x", "lam"})),
        Piece("sum_squares(x + 1)", lambda e: cp.sum_squares(e[x] + np.ones(n)), frozenset("x")),
        Piece("sum(huber(x - 1))", lambda e: cp.sum(cp.huber(e[x] - np.ones(n))), frozenset("x")),
        Piece("quad_form(x, P)", lambda e: cp.quad_form(e[x], e["P"]), frozenset("x")),
        Piece("sum(pos(A @ x - b))", lambda e: cp.sum(cp.pos(e["A"] @ e[x] - e["b"])), frozenset("x")),
        Piece(f"x[0] - x[{n - 1}]", lambda e: e[x][0] - e[x][n - 1], frozenset("x")),
        Piece("2 * norm_inf(x - 0.5)", lambda e: 2 * cp.norm_inf(e[x] - 0.5 * np.ones(n)), frozenset("x")),
        Piece("sum_squares(X - B)", lambda e: cp.sum_squares(e[X] - e["B"]), frozenset("X")),
        Piece("norm1(X[:, 0])", lambda e: cp.norm1(e[X][:, 0]), frozenset("X")),
        Piece("max(X[0, :])", lambda e: cp.max(e[X][0, :]), frozenset("X")),
        Piece("sum_squares(X.T @ u - v)", lambda e: cp.sum_squares(e[X].T @ e["u"] - e["v"]), frozenset("X")),
        Piece("nuclear_norm(X)", lambda e: cp.normNuc(e[X]), frozenset("X")),
        Piece("sum_squares(reshape(X, [k, m]) - Bt)",
              lambda e: cp.sum_squares(cp.reshape(e[X], (k, m), order="C") - e["Bt"]), frozenset("X")),
        Piece("sum_squares(vec(X) - bv)", lambda e: cp.sum_squares(cp.vec(e[X], order="C") - e["bv"]),
              frozenset("X")),
        Piece("sum_squares(X - 2)", lambda e: cp.sum_squares(e[X] - 2 * np.ones((m, k))), frozenset("X")),
        Piece("sum_squares(X - w)", lambda e: cp.sum_squares(e[X] - np.ones((m, 1)) @ e["w"][None, :]),
              frozenset("X")),
        Piece("0.5 * sum_squares(X[1:, :] - B[1:, :])",
              lambda e: 0.5 * cp.sum_squares(e[X][1:, :] - e["B"][1:, :]), frozenset("X")),
        Piece("norm2(sum(X, axis = 0) - v)", lambda e: cp.norm2(cp.sum(e[X], axis=0) - e["v"]), frozenset("X")),
        Piece("mu * norm_inf(X.T)", lambda e: e["mu"] * cp.max(cp.abs(e[X])), frozenset({"X", "mu"})),
        Piece("sum_squares(x[0:2] - X[0, 0:2])", lambda e: cp.sum_squares(e[x][0:2] - e[X][0, 0:2]),
              frozenset("xX")),
        Piece("trace(C @ S)", lambda e: cp.trace(e["C"] @ e[S]), frozenset("S")),
        Piece("sum_squares(S - C)", lambda e: cp.sum_squares(e[S] - e["C"]), frozenset("S")),
        Piece("lambda_max(S - C)", lambda e: cp.lambda_max(e[S] - e["C"]), frozenset("S")),
        Piece("sum_squares(diag(S) - d)", lambda e: cp.sum_squares(cp.diag(e[S]) - e["d"]), frozenset("S")),
        Piece("inner(C, S)", lambda e: cp.sum(cp.multiply(e["C"], e[S])), frozenset("S")),
        Piece("sum_squares(hstack([x, X[:, 0]]) - 1)",
              lambda e: cp.sum_squares(cp.hstack([e[x], e[X][:, 0]]) - 1), frozenset("xX")),
        Piece("sum_squares(vstack([X, B]) - 1)", lambda e: cp.sum_squares(cp.vstack([e[X], e["B"]]) - 1),
              frozenset("X")),
        Piece("norm1(cumsum(x) - 1)", lambda e: cp.norm1(cp.cumsum(e[x]) - 1), frozenset("x")),
        Piece("sum_squares(diff(x))", lambda e: cp.sum_squares(cp.diff(e[x])), frozenset("x")),
        Piece("norm2(sum(X, axis = 1) - u)", lambda e: cp.norm2(cp.sum(e[X], axis=1) - e["u"]), frozenset("X")),
        Piece("sum(abs(X.T - Bt))", lambda e: cp.sum(cp.abs(e[X].T - e["Bt"])), frozenset("X")),
        # bounded below: -log alone is unbounded as x grows, and Clarabel calls that `optimal` at 1e13
        Piece("sum_squares(x) - sum(log(x + 3))", lambda e: cp.sum_squares(e[x]) - cp.sum(cp.log(e[x] + 3)),
              frozenset("x")),
        Piece("pnorm(x - 1, 3)", lambda e: cp.pnorm(e[x] - 1, 3), frozenset("x")),
        Piece("sum(square(X[0:2, 0:2]))", lambda e: cp.sum(cp.square(e[X][0:2, 0:2])), frozenset("X")),
        Piece("-lambda_min(S)", lambda e: -cp.lambda_min(e[S]), frozenset("S")),
    ]
    cons = [
        Piece("x >= -1", lambda e: e[x] >= -1, frozenset("x")),
        Piece("x <= 2", lambda e: e[x] <= 2, frozenset("x")),
        Piece("sum(x) == 1", lambda e: cp.sum(e[x]) == 1, frozenset("x")),
        Piece("x[0] == 0.5", lambda e: e[x][0] == 0.5, frozenset("x")),
        Piece("x[1:3] <= 0.2", lambda e: e[x][1:3] <= 0.2, frozenset("x")),
        Piece("x in simplex", lambda e: [e[x] >= 0, cp.sum(e[x]) == 1], frozenset("x")),
        Piece("x in l2_ball(r)", lambda e: cp.norm2(e[x]) <= e["r"], frozenset({"x"})),
        Piece("x in box(-1, 1)", lambda e: [e[x] >= -1, e[x] <= 1], frozenset("x")),
        Piece("x in linf_ball(0.5)", lambda e: cp.abs(e[x]) <= 0.5, frozenset("x")),
        Piece("A @ x <= b + 1", lambda e: e["A"] @ e[x] <= e["b"] + 1, frozenset("x")),
        Piece("X >= 0", lambda e: e[X] >= 0, frozenset("X")),
        Piece("X[:, 0] == 1", lambda e: e[X][:, 0] == 1, frozenset("X")),
        Piece("sum(X, axis = 1) <= 1", lambda e: cp.sum(e[X], axis=1) <= 1, frozenset("X")),
        Piece("X.T @ u <= 1", lambda e: e[X].T @ e["u"] <= 1, frozenset("X")),
        Piece("X in nuclear_ball(3)", lambda e: cp.normNuc(e[X]) <= 3, frozenset("X")),
        Piece("X in linf_ball(2)", lambda e: cp.abs(e[X]) <= 2, frozenset("X")),
        Piece("vec(X) <= 1.5", lambda e: cp.vec(e[X], order="C") <= 1.5, frozenset("X")),
        Piece("reshape(X, [k, m])[0, :] >= -1", lambda e: cp.reshape(e[X], (k, m), order="C")[0, :] >= -1,
              frozenset("X")),
        Piece("X[0, 0] + x[0] <= 1", lambda e: e[X][0, 0] + e[x][0] <= 1, frozenset("xX")),
        Piece("trace(S) == 1", lambda e: cp.trace(e[S]) == 1, frozenset("S")),
        Piece("S[0, 0] <= 2", lambda e: e[S][0, 0] <= 2, frozenset("S")),
        Piece("S in spectral_ball(2)", lambda e: cp.sigma_max(e[S]) <= 2, frozenset("S")),
        Piece("X.T >= -1", lambda e: e[X].T >= -1, frozenset("X")),
        Piece("cumsum(x) <= 1", lambda e: cp.cumsum(e[x]) <= 1, frozenset("x")),
        Piece("diag(S) <= 1", lambda e: cp.diag(e[S]) <= 1, frozenset("S")),
        Piece("trace(X[0:2, 0:2]) == 1", lambda e: cp.trace(e[X][0:2, 0:2]) == 1, frozenset("X")),
        Piece("hstack([x[0], X[0, 0]]) >= -2", lambda e: cp.hstack([e[x][0], e[X][0, 0]]) >= -2, frozenset("xX")),
        Piece("x in l1_ball(2)", lambda e: cp.norm1(e[x]) <= 2, frozenset("x")),
        Piece("mu * sum(x) <= 1", lambda e: e["mu"] * cp.sum(e[x]) <= 1, frozenset({"x", "mu"})),
        Piece("norm2(A @ x - b) <= 2 * r + 3", lambda e: cp.norm2(e["A"] @ e[x] - e["b"]) <= 2 * e["r"] + 3,
              frozenset("x")),
    ]
    return terms, cons


# contradictory pairs: each makes the problem infeasible whatever else it holds
INFEASIBLE = [("x >= 1", "sum(x) <= -1"), ("x in simplex", "x[0] >= 2"), ("X >= 0", "sum(X) == -1"),
              ("trace(S) == -1", None), ("norm2(x) <= 1", "x[0] >= 2"), ("X[0, :] == 1", "X[0, 0] <= 0")]
# terms unbounded below on their own, used with nothing that bounds their variable
UNBOUNDED = [("-sum(x)", frozenset("x")), ("sum(X[:, 0]) - x[0]", frozenset("xX")), ("-trace(S)", frozenset("S"))]


def _cons_piece(text: str) -> Piece:
    cp = _cp()
    table: dict[str, Builder] = {
        "x >= 1": lambda e: e["x"] >= 1, "sum(x) <= -1": lambda e: cp.sum(e["x"]) <= -1,
        "x in simplex": lambda e: [e["x"] >= 0, cp.sum(e["x"]) == 1], "x[0] >= 2": lambda e: e["x"][0] >= 2,
        "X >= 0": lambda e: e["X"] >= 0, "sum(X) == -1": lambda e: cp.sum(e["X"]) == -1,
        "trace(S) == -1": lambda e: cp.trace(e["S"]) == -1, "norm2(x) <= 1": lambda e: cp.norm2(e["x"]) <= 1,
        "X[0, :] == 1": lambda e: e["X"][0, :] == 1, "X[0, 0] <= 0": lambda e: e["X"][0, 0] <= 0,
    }
    return Piece(text, table[text], frozenset(v for v in "xXS" if v in text))


def _unbounded_piece(text: str, needs: frozenset[str]) -> Piece:
    cp = _cp()
    table: dict[str, Builder] = {"-sum(x)": lambda e: -cp.sum(e["x"]),
                                 "sum(X[:, 0]) - x[0]": lambda e: cp.sum(e["X"][:, 0]) - e["x"][0],
                                 "-trace(S)": lambda e: -cp.trace(e["S"])}
    return Piece(text, table[text], needs)


def generate(seed: int) -> Problem:
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    n, m, k, p = rng.randint(3, 5), rng.randint(2, 4), rng.randint(2, 4), rng.randint(2, 3)
    r = 2 * n
    terms, cons = pieces(n, m, k, p)
    kind = rng.choices(["plain", "infeasible", "unbounded"], [0.7, 0.15, 0.15])[0]
    objective = rng.sample(terms, rng.randint(1, 3))
    constraints = rng.sample(cons, rng.randint(0, 3))
    if kind == "infeasible":
        pair = rng.choice(INFEASIBLE)
        constraints += [_cons_piece(c) for c in pair if c]
    elif kind == "unbounded":
        text, needs = rng.choice(UNBOUNDED)
        # keep only what leaves the unbounded direction free: terms and constraints on other variables
        objective = [t for t in objective if not (t.needs & needs)] + [_unbounded_piece(text, needs)]
        constraints = [c for c in constraints if not (c.needs & needs)]
    sense = "minimize"
    if rng.random() < 0.3:  # maximize the negation: the same problem, the other sense
        sense = "maximize"
    used = set().union(*(x.needs for x in objective + constraints))
    data = {"A": gen.standard_normal((r, n)), "b": gen.standard_normal(r), "B": gen.standard_normal((m, k)),
            "Bt": gen.standard_normal((k, m)), "bv": gen.standard_normal(m * k), "u": gen.standard_normal(m),
            "v": gen.standard_normal(k), "w": gen.standard_normal(k), "d": gen.standard_normal(p)}
    F = gen.standard_normal((n, n))
    data["P"] = F @ F.T + 0.1 * np.eye(n)
    G = gen.standard_normal((p, p))
    data["C"] = (G + G.T) / 2
    params = {"lam": round(rng.uniform(0.05, 1.0), 3), "mu": round(rng.uniform(0.0, 0.5), 3),
              "r": round(rng.uniform(0.5, 2.0), 3)}
    variables: dict[str, tuple[tuple[int, ...], str | None]] = {"x": ((n,), None)}
    if "X" in used:
        variables["X"] = ((m, k), None)
    if "S" in used:
        variables["S"] = ((p, p), "psd")
    lines = [f"problem fz{seed} {{", f"  let m = {m}", f"  let k = {k}"]
    lines += [f'  data {name} = load("fz.npz", "{name}")' for name in sorted(data)]
    lines += ["  param lam = %r >= 0" % params["lam"], "  param mu = %r in box(0, 1)" % params["mu"]
              if rng.random() < 0.5 else "  param mu = %r >= 0" % params["mu"], "  let r = %r" % params["r"]]
    for name, (shape, dom) in variables.items():
        lines.append(f"  var {name}[{', '.join(map(str, shape))}]" + (f" in {dom}" if dom else ""))
    body = " + ".join(f"({t.spec})" for t in objective)
    lines.append(f"  {sense} " + (body if sense == "minimize" else f"-({body})"))
    if constraints:
        lines += ["  subject to {", *[f"    {c.spec}" for c in constraints], "  }"]
    text = "\n".join(lines + ["}"]) + "\n"
    return Problem(text, data, sense, objective, constraints, variables, params, kind)


def reference(problem: Problem) -> tuple[str, float | None]:
    """(status, objective in the spec's sense) of the CVXPY problem built by hand (Clarabel)."""
    cp = _cp()
    env: dict[str, Any] = dict(problem.data)
    env.update(problem.params)
    for name, (shape, dom) in problem.variables.items():
        env[name] = cp.Variable(shape, PSD=True) if dom == "psd" else cp.Variable(shape)
    f = sum(t.cvx(env) for t in problem.objective)
    cons: list[Any] = []
    for c in problem.constraints:
        built = c.cvx(env)
        cons += built if isinstance(built, list) else [built]
    prob = cp.Problem(cp.Minimize(f), cons)
    with warnings.catch_warnings():  # "Solution may be inaccurate": the status says so
        warnings.simplefilter("ignore")
        prob.solve(solver=cp.CLARABEL)
    if prob.status in ("unbounded", "unbounded_inaccurate"):  # a dual ray needs a feasible point
        feasible = cp.Problem(cp.Minimize(0), cons)
        feasible.solve(solver=cp.CLARABEL)
        if feasible.status in ("infeasible", "infeasible_inaccurate"):
            return feasible.status, None
    value = None if prob.value is None or not np.isfinite(prob.value) else float(prob.value)
    if value is not None and problem.sense == "maximize":
        value = -value
    return prob.status, value


def write(problem: Problem, folder: Path) -> Path:
    np.savez(folder / "fz.npz", **problem.data)
    path = folder / "fz.reg"
    path.write_text(problem.text, encoding="utf-8")
    return path


SOLVED = {"optimal"}
# a solver that stops short says so: not a contradiction (Clarabel stops at its iteration limit on
# min ||X - W||^2 + mu ||vec(X^T)||_inf s.t. X^T u <= 1, which it solves written with max(abs(X)))
HONEST_SHORT = ("optimal_inaccurate", "user_limit", "solver_error")
NO_POINT = {"infeasible", "unbounded"}
CVXPY_RTOL = 1e-6   # Clarabel on both sides, 1e-8 gaps: the objectives agree far inside 1e-6 relative
TORCH_RTOL = 1e-4   # the torch backend's certified objective (tests/test_cvxpy_classics.py)
# (an SCS answer: see agreement)


def agreement(res: Any, ref_value: float) -> float:
    """How far an `optimal` objective may be from Clarabel's: Clarabel's 1e-8 gaps on both sides
    (CVXPY_RTOL); SCS's stopping test, |gap| <= eps_abs + eps_rel max(|pobj|, |dobj|) with its
    residuals at the same eps, three times over (gap, primal and dual residual); the torch
    backend's certified 1e-4 (TORCH_RTOL)."""
    scale = max(1.0, abs(ref_value))
    if res.backend == "torch":
        return TORCH_RTOL * scale
    if res.solver == "SCS":
        opts = res.info.get("solver_opts", {})
        return 3 * (opts.get("eps_abs", 1e-4) + opts.get("eps_rel", 1e-4) * scale)
    return CVXPY_RTOL * scale


def disagreements(problem: Problem, folder: Path, backends: tuple[str, ...] = ("cvxpy", "torch"),
                  max_iter: int = 5000) -> list[str]:
    """What regspec says differently from the hand-built reference (empty when nothing)."""
    import regspec
    from regspec.diagnostics import RegspecError

    path = write(problem, folder)
    out = []
    ref_status, ref_value = reference(problem)
    ref_status = {"infeasible_inaccurate": "infeasible", "unbounded_inaccurate": "unbounded"}.get(ref_status,
                                                                                                   ref_status)
    spec = regspec.load(str(path))
    for backend in backends:
        try:
            res = regspec.solve(spec, backend=backend, **({"max_iter": max_iter} if backend == "torch" else {}))
        except Exception as e:  # noqa: BLE001 - anything but a located refusal is the finding
            if not isinstance(e, RegspecError):
                out.append(f"{backend}: raised {type(e).__name__}: {e}")
                continue
            first = str(e).splitlines()[0]
            if backend == "cvxpy" or "refused" not in first and "no torch" not in first:
                out.append(f"{backend}: refused a convex problem: {first}")
            continue
        status, value = res.status, res.objective
        if value is not None and not np.isfinite(value):
            out.append(f"{backend}: non-finite objective {value} with status {status}")
        if status in SOLVED and ref_status in NO_POINT:
            out.append(f"{backend}: {status} ({value}) but the reference is {ref_status}")
        elif ref_status in NO_POINT and backend == "cvxpy" and status not in (ref_status, ref_status + "_inaccurate"):
            out.append(f"{backend}: {status} but the reference is {ref_status}")
        elif ref_status == "optimal" and status in NO_POINT:
            out.append(f"{backend}: {status} but the reference is optimal ({ref_value})")
        elif ref_status == "optimal" and backend == "cvxpy" and status not in ("optimal", *HONEST_SHORT):
            out.append(f"{backend}: {status} but the reference is optimal ({ref_value})")
        if status in SOLVED and ref_status == "optimal" and value is not None and ref_value is not None:
            allowed = agreement(res, ref_value)
            if abs(value - ref_value) > allowed:
                out.append(f"{backend}: objective {value!r} vs reference {ref_value!r} ({res.solver}, allowed "
                           f"{allowed:.2g})")
    return out


def fmt_failure(text: str) -> str | None:
    from regspec.fmt import format_text
    from regspec.parser import parse

    tree = parse(text)
    once = format_text(text, "<fuzz>")
    again = parse(once)
    if (again.lets, again.blocks) != (tree.lets, tree.blocks):
        return "fmt changed the tree"
    if format_text(once, "<fuzz>") != once:
        return "fmt is not idempotent"
    return None


def main(argv: list[str]) -> int:
    import tempfile
    import time

    n = int(argv[0]) if argv else 50
    start = int(argv[1]) if len(argv) > 1 else 0
    backends = tuple(argv[2].split(",")) if len(argv) > 2 else ("cvxpy", "torch")
    bad = 0
    t0 = time.time()
    kinds: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(start, start + n):
            prob = generate(seed)
            kinds[prob.kind] = kinds.get(prob.kind, 0) + 1
            found = disagreements(prob, Path(tmp), backends)
            why = fmt_failure(prob.text)
            if why:
                found.append(why)
            if found:
                bad += 1
                print(f"--- seed {seed} ({prob.kind})\n{prob.text}" + "\n".join(found), flush=True)
    print(f"{n} problems {kinds} in {time.time() - t0:.0f} s; {bad} with disagreements")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
