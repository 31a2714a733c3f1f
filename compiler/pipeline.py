"""The pass pipeline for `problem` blocks: build, then IR -> IR passes in order."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from regspec import ast
from regspec.compiler.build import build_problem
from regspec.compiler.ir import IR
from regspec.compiler.passes.constants import evaluate_constants
from regspec.compiler.passes.curvature import analyse_curvature
from regspec.compiler.passes.resolve import resolve_names
from regspec.compiler.passes.shapes import infer_shapes
from regspec.compiler.passes.split import split_terms
from regspec.diagnostics import RegspecError, did_you_mean, error

Pass = Callable[[IR], IR]

PASSES: list[tuple[str, Pass]] = [
    ("resolve_names", resolve_names),
    ("evaluate_constants", evaluate_constants),
    ("infer_shapes", infer_shapes),
    ("analyse_curvature", analyse_curvature),
    ("split_terms", split_terms),
]


@dataclass
class CompiledProblem:
    ir: IR
    seconds: float
    snapshots: list[tuple[str, str]] = field(default_factory=list)  # (pass name, IR dump) for explain


def select_problem(spec: ast.Spec, name: str | None) -> ast.ProblemBlock:
    problems = spec.problems
    if name is None:
        if not problems:
            raise error(f"{spec.source.path} has no `problem` block",
                        notes=[f"its train blocks ({', '.join(t.name for t in spec.trains)}) run with `regspec train` "
                               "or `regspec plan`"] if spec.trains else [])
        return problems[0]
    for p in problems:
        if p.name == name:
            return p
    raise error(f"no problem named `{name}` in {spec.source.path}",
                notes=did_you_mean(name, [p.name for p in problems]) +
                [f"problems: {', '.join(p.name for p in problems) or 'none'}"])


def compile_problem(spec: ast.Spec, block: ast.ProblemBlock, record: bool = False) -> CompiledProblem:
    t0 = time.perf_counter()
    ir = build_problem(spec, block)
    snaps = [("build", ir.dump())] if record else []
    for name, fn in PASSES:
        ir = fn(ir)
        if record:
            snaps.append((name, ir.dump()))
    return CompiledProblem(ir, time.perf_counter() - t0, snaps)


def no_backend_error(ir: IR) -> RegspecError | None:
    """The error for a problem that no backend can take (None when one can): CVXPY refuses what
    breaks the DCP rules or has no lowering for, the torch backend what it cannot split; each
    refusal is a note with its line, the error itself points at the first place CVXPY refuses."""
    from regspec.compiler.passes.curvature import cvxpy_refusals, dcp_errors

    dcp = cvxpy_refusals(ir)
    split = ir.meta.get("split")
    if not dcp or split is None or split.algorithm != "none":
        return None

    def where(node: int) -> str:
        span = ir[node].get("span") if node in ir.graph else None
        return f" (line {span.line}, column {span.column})" if span is not None else ""

    notes = [f"cvxpy refuses: {msg}{where(node)}" for msg, node in dcp]
    notes += [f"torch refuses: {why}{where(node)}" for why, node in split.refusals]
    span = ir[dcp[0][1]].get("span") if dcp[0][1] in ir.graph else None
    why_cvxpy = "it is not DCP (for cvxpy)" if dcp_errors(ir) else "cvxpy cannot lower it"
    return error(f"no backend can solve problem `{ir.block_name}`: {why_cvxpy} and the torch "
                 "backend cannot split it", span or ir.meta.get("block_span"), notes)
