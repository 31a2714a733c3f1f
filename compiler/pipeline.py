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
from regspec.diagnostics import did_you_mean, error

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
            raise error(f"{spec.source.path} has no `problem` block")
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
