"""The `regspec` command line. Exit codes: 0 ok, 1 bad spec or input, 2 bad usage, 3 solver did not
reach an optimal status, 70 internal error. Diagnostics are rendered here, once; no traceback reaches the user for
a bad spec."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Callable, Sequence

from regspec.diagnostics import RegspecError
from regspec.result import json_safe

EXIT_OK, EXIT_SPEC, EXIT_USAGE, EXIT_SOLVE, EXIT_INTERNAL = 0, 1, 2, 3, 70
# statuses whose stopping rule was met in full: `optimal`, and `stationary` for a problem not proved
# convex (the most a first-order method certifies there); anything else exits EXIT_SOLVE
CERTIFIED = ("optimal", "stationary")


class UsageError(Exception):
    pass


def positive_float(text: str) -> float:
    """An option's value x with 0 < x < inf (``--tol``, ``--rtol``); argparse reports anything else
    as bad usage (exit 2) naming the option."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An option's count n >= 1 (``--max-iter``, ``--epochs``, ``--stop-after``, ``--checkpoint-every``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _parse_value(text: str) -> Any:
    import json  # here and below: not on `check`'s path (~1 ms)

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return float(text)
        except ValueError:
            return text


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"{flag} expects NAME=VALUE, got `{item}`")
        name, value = item.split("=", 1)
        out[name.strip()] = _parse_value(value.strip())
    return out


# ---------------------------------------------------------------- check
def _summary_problem(spec, name: str) -> list[str]:
    from regspec.compiler.catalogue.atoms import fmt
    from regspec.compiler.passes.curvature import cvxpy_refusals

    compiled = spec.compiled(name)
    ir = compiled.ir
    lines = [f"problem {name}"]
    for kind in ("data", "param", "var"):
        for n in ir.nodes_of(kind):
            d = ir[n]
            dom = ""
            if d.get("domain") is not None:
                s = ir[d["domain"]]
                dom = f" in {s['set']}" + (f"({', '.join(f'{k}={v}' for k, v in s['static'].items() if v is not None)})"
                                           if any(v is not None for v in s["static"].values()) else "")
            val = ""
            if kind == "param" and d["shape"] == ():
                val = f" = {float(d['value']):g}"
            lines.append(f"  {kind:5} {d['name']:<12} {fmt(d['shape'])}{dom}{val}")
    obj = ir.objective()
    lines.append(f"  {ir[obj]['sense']} ({ir[ir[obj]['args'][0]]['curvature'].value}):")
    split = ir.meta["split"]
    for t in split.terms:
        c = ir[t.core]
        lines.append(f"    {ir.text(t.core):<48} {c['curvature'].value:<9} {t.role}")
    for c in ir.nodes_of("constraint"):
        d = ir[c]
        lines.append(f"  subject to {ir.text(c):<37} {'DCP' if d['dcp_ok'] else 'not DCP'}")
    errs = cvxpy_refusals(ir)
    backends = []
    if not errs:
        backends.append("cvxpy")
    if split.algorithm != "none":
        backends.append(f"torch ({split.algorithm.upper()})")
    lines.append(f"  backends: {', '.join(backends) if backends else 'none'}")
    if len(backends) == 2:  # the auto choice and its reason (the cost model in regspec.api)
        from regspec.api import explain_choice

        choice = explain_choice(spec, name)
        lines.append(f"  auto: {choice.backend} ({choice.reason})")
    for why, node in (split.refusals if split.algorithm == "none" else split.reasons):
        lines.append(f"    torch: {'refused: ' if split.algorithm == 'none' else 'PDHG: '}{why}")
    for msg, node in errs:
        lines.append(f"    cvxpy: {msg}")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    if getattr(args, "json", False):
        return cmd_check_json(args)
    import regspec
    from regspec.compiler.pipeline import no_backend_error

    status = EXIT_OK
    for path in args.specs:
        t0 = time.perf_counter()
        try:
            spec = regspec.load(path)
            lines = [f"{path}: {len(spec.ast.blocks)} block(s)"]
            if not spec.ast.blocks:  # valid (file-level `let`s alone), but rarely what was meant
                lines.append("  warning: no `problem` or `train` block: nothing to solve or train")
            for name in spec.problems:
                lines += _summary_problem(spec, name)
                refusal = no_backend_error(spec.compiled(name).ir)  # `backends: none` is an error
                if refusal is not None:
                    print("\n".join(lines))
                    raise refusal
            for b in spec.ast.trains:
                from regspec.compiler.train_plan import check_train  # names and options, no torch; ~50 ms to import

                lines.append(check_train(spec.ast, b.name))
            lines.append(f"ok ({time.perf_counter() - t0:.3f} s)")
            print("\n".join(lines))
        except RegspecError as e:
            print(str(e), file=sys.stderr)
            status = EXIT_SPEC
    return status


# ---------------------------------------------------------------- solve
def cmd_solve(args: argparse.Namespace) -> int:
    import json

    import regspec

    params = _pairs(args.set, "--set")
    solver_opts = _pairs(args.solver_opt, "--solver-opt")
    spec = regspec.load(args.spec)
    if args.sweep:
        if args.plot:
            raise UsageError("--plot draws one solve's convergence; --sweep writes its own path.png")
        return _solve_sweep(args, spec, params, solver_opts)
    if args.out:
        raise UsageError("--out applies to --sweep")
    from regspec.json_out import stdout_to_stderr

    backend = regspec.api.choose_backend(spec, args.problem, args.backend, args.solver, solver_opts,
                                         regspec.api.asks_for_torch(tol=args.tol, max_iter=args.max_iter,
                                                                    device=args.device, dtype=args.dtype))
    if args.verbose and backend == "cvxpy":  # the solver's own log; torch solvers log below
        solver_opts.setdefault("verbose", True)
    # solver logs go to stderr: never mixed into --json, and apart from the result with --verbose
    with stdout_to_stderr(args.json or args.verbose), _iteration_log(args.verbose):
        result = regspec.solve(spec, problem=args.problem, backend=backend, params=params, solver=args.solver,
                               solver_opts=solver_opts, tol=args.tol, max_iter=args.max_iter, device=args.device,
                               dtype=args.dtype)
    if args.verbose and result.backend == "torch":
        from regspec.backends.torch.iteration_log import format_line

        print(format_line(result.solver, result.iterations or 0, result.residuals) + f"  -> {result.status}",
              file=sys.stderr, flush=True)
    files = _plot_convergence(args, result) if args.plot else {}
    if args.json:
        print(json.dumps({**result.to_json(), **({"files": files} if files else {})}, allow_nan=False))
    else:
        print(result.summary())
        for path in files.values():
            print(f"wrote {path}")
    return EXIT_OK if result.status in CERTIFIED else EXIT_SOLVE


def _iteration_log(verbose: bool):
    """``--verbose``: the torch solvers print their checks' residuals on stderr."""
    if not verbose:
        return contextlib.nullcontext()
    from regspec.backends.torch.iteration_log import iteration_log

    return iteration_log(sys.stderr)


def _plot_convergence(args: argparse.Namespace, result) -> dict[str, str]:
    """``--plot [PNG]``: the residuals per iteration of a first-order solve (default
    runs/solve_<problem>/convergence.png); a note on stderr when there is nothing to draw."""
    from pathlib import Path

    from regspec import plots

    if not plots.available():
        print(plots.missing_note("the convergence plot"), file=sys.stderr)
        return {}
    if not result.history:
        print(f"note: no convergence plot: {result.solver} ({result.backend} backend) recorded no residual "
              "history for this solve", file=sys.stderr)
        return {}
    path = Path(args.plot) if args.plot is not True else Path("runs") / f"solve_{result.problem}" / "convergence.png"
    plots.convergence(result.history, path, tol=result.tol, keys=result.residuals,
                      title=f"{result.problem}: {result.solver}, {result.status} after {result.iterations} iterations")
    return {"plot": str(path)}


def _solve_sweep(args: argparse.Namespace, spec, params: dict[str, Any], solver_opts: dict[str, Any]) -> int:
    """``--sweep lam=logspace(-3,0,20)``: one compiled DPP problem re-solved along the values;
    prints a table and writes path.json and path.png under --out (default runs/sweep_<problem>)."""
    import json

    from pathlib import Path

    from regspec import sweep as sw

    if len(args.sweep) > 1:
        raise UsageError("--sweep takes one parameter (a path); give it once")
    if args.backend == "torch":
        raise UsageError("--sweep re-solves one compiled CVXPY problem; use --backend cvxpy or auto")
    plan = sw.parse_sweep(args.sweep[0])
    if plan.param in params:
        raise UsageError(f"`{plan.param}` is both swept and fixed by --set")
    from regspec.json_out import stdout_to_stderr

    from regspec.progress import Bar, wanted

    with Bar(len(plan.values), f"sweep {plan.param}", enabled=not args.json and wanted(args.quiet),
             unit="point") as bar, stdout_to_stderr(args.json):
        result = sw.run_sweep(spec, plan, problem=args.problem, params=params, solver=args.solver,
                              solver_opts=solver_opts,
                              on_point=lambda p: bar.update(1, f"{plan.param}={p.value:.3g}: {p.status}"))
    out = Path(args.out) if args.out else sw.default_out_dir(result.problem)
    json_path = sw.write_json(result, out)
    from regspec import plots

    png_path = sw.plot(result, out) if plots.available() else None
    if png_path is None:
        print(plots.missing_note("the path plot (path.png)"), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        files = {"path": str(json_path), **({"plot": str(png_path)} if png_path else {})}
        print(json.dumps(json_safe({**result.to_json(), "files": files}), allow_nan=False))
    else:
        print(f"problem {result.problem}: sweep over {plan.param} ({len(result.points)} points, "
              f"{result.backend}, {result.solver})")
        print(f"  {plan.param:>12}  {'status':<18} {'objective':>16}  iters  seconds")
        for p in result.points:
            obj = f"{p.objective:.10g}" if p.objective is not None else "-"
            print(f"  {p.value:>12.6g}  {p.status:<18} {obj:>16}  {str(p.iterations or '-'):>5}  {p.seconds:.4f}")
        print(f"wrote {json_path}" + (f" and {png_path}" if png_path else ""))
        print("times (s): " + ", ".join(f"{k}={v:.4f}" for k, v in result.times.items()))
    return EXIT_OK if result.ok else EXIT_SOLVE


# ---------------------------------------------------------------- explain
def cmd_explain(args: argparse.Namespace) -> int:
    if getattr(args, "json", False):
        return cmd_explain_json(args)
    import regspec
    from regspec.compiler.catalogue import ATOMS
    from regspec.compiler.passes.curvature import cvxpy_refusals

    spec = regspec.load(args.spec)
    names = [args.problem] if args.problem else spec.problems
    for name in names:
        compiled = spec.compiled(name, record=True)
        ir = compiled.ir
        print(f"=== problem {ir.block_name}")
        for pass_name, dump in compiled.snapshots:
            print(f"--- after {pass_name}")
            print(dump)
        split = ir.meta["split"]
        print("--- lowering")
        choice = regspec.api.explain_choice(spec, name)
        print(f"auto: {choice.backend} ({choice.reason})")
        errs = cvxpy_refusals(ir)
        print("cvxpy: " + ("DCP; each atom maps to its CVXPY atom, params to cvxpy.Parameter (DPP)" if not errs
                           else "refused: " + "; ".join(m for m, _ in errs)))
        for n in ir.topological():
            d = ir[n]
            if d["kind"] == "call" and "value" not in d:
                print(f"  %{n} {d['atom']:<12} -> {ATOMS[d['atom']].doc}")
        from regspec.compiler.passes.split import explain_lines

        print("\n".join(explain_lines(ir, split)))
    return EXIT_OK


# ---------------------------------------------------------------- crosscheck
def cmd_crosscheck(args: argparse.Namespace) -> int:
    """Solve each problem with both backends, print the comparison table; exit 1 on disagreement."""
    import json

    from regspec import crosscheck as cc

    from regspec.json_out import stdout_to_stderr

    from regspec.progress import Bar, wanted

    paths = cc.expand_specs(args.specs)
    with Bar(len(paths), "crosscheck", enabled=not args.json and wanted(args.quiet), unit="spec") as bar, \
            stdout_to_stderr(args.json):
        checks = cc.crosscheck(paths, rtol=args.rtol, tol=args.tol, max_iter=args.max_iter, dtype=args.dtype,
                               device=args.device, on_spec=lambda path, done: bar.update(1, _verdicts(path, done)))
    if args.json:
        print(json.dumps(json_safe([{"spec": ch.spec, "problem": ch.problem, "verdict": ch.verdict, "reason": ch.reason,
                           "gap": ch.gap, "rtol": ch.rtol, "var_diff": ch.var_diff, "seconds": ch.seconds,
                           "cvxpy": ch.cvxpy.to_json() if ch.cvxpy else None,
                           "torch": ch.torch.to_json() if ch.torch else None} for ch in checks]),
                         allow_nan=False))
    else:
        print(cc.table(checks))
    return EXIT_OK if all(ch.ok for ch in checks) else EXIT_SPEC


def _verdicts(path: str, checks: list) -> str:
    from pathlib import Path

    return f"{Path(path).name}: " + ", ".join(sorted({ch.verdict for ch in checks}))


# ---------------------------------------------------------------- --json of check / explain (plan: train_cli)
def cmd_check_json(args: argparse.Namespace) -> int:
    from regspec.json_out import check_json, emit

    doc = emit(lambda: check_json(list(args.specs)))
    return EXIT_OK if doc["ok"] else EXIT_SPEC


def cmd_explain_json(args: argparse.Namespace) -> int:
    from regspec.json_out import emit, explain_json

    emit(lambda: explain_json(args.spec, args.problem))
    return EXIT_OK


# ---------------------------------------------------------------- fmt
def _spec_files(items: Sequence[str]) -> list[str]:
    """Files as given; a folder stands for the `.reg` files under it."""
    from pathlib import Path

    out: list[str] = []
    for item in items:
        p = Path(item)
        out += sorted(str(f) for f in p.rglob("*.reg")) if p.is_dir() else [item]
    return out


def cmd_fmt(args: argparse.Namespace) -> int:
    """Rewrite specs in their canonical layout (atomically); ``--check`` only reports (diff, exit 1)."""
    from regspec import fmt

    if args.files == ["-"]:
        sys.stdout.write(fmt.format_text(sys.stdin.read(), "<stdin>"))
        return EXIT_OK
    status = EXIT_OK
    for path in _spec_files(args.files):
        try:
            old, new = fmt.format_file(path)
        except RegspecError as e:
            print(str(e), file=sys.stderr)
            status = EXIT_SPEC
            continue
        if old == new:
            continue
        if args.check:
            sys.stdout.write(fmt.diff(path, old, new))
            status = EXIT_SPEC
        else:
            fmt.write_atomic(path, new)
            print(f"reformatted {path}", file=sys.stderr)
    return status


# ---------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    """The catalogue reference as text (the same entries as docs/catalogue.md)."""
    from regspec import docs_gen

    if args.kind is None:
        for kind, (title, _) in docs_gen.KINDS.items():
            print(f"{kind:<12} {title}")
        print("\nregspec list KIND prints one of them; docs/catalogue.md holds all")
        return EXIT_OK
    print(docs_gen.render_text(args.kind))
    return EXIT_OK


# ---------------------------------------------------------------- main
def _list_kinds() -> list[str]:
    from regspec.docs_gen import KINDS

    return list(KINDS)


def _version() -> str:
    from regspec import __version__

    return __version__


def _check_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("specs", nargs="+", metavar="SPEC")
    c.add_argument("--json", action="store_true", help="print one JSON document (errors included) on stdout")
    c.set_defaults(func=cmd_check)


def _solve_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--problem", help="problem block name (default: the first)")
    s.add_argument("--backend", default="auto", choices=["auto", "cvxpy", "torch"])
    s.add_argument("--solver", help="CVXPY solver (CLARABEL, SCS, ...)")
    s.add_argument("--solver-opt", action="append", metavar="NAME=VALUE", help="solver option, repeatable")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="parameter value, repeatable")
    s.add_argument("--tol", type=positive_float, help="torch backend: stopping tolerance")
    s.add_argument("--max-iter", type=positive_int, help="torch backend: iteration budget")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--sweep", action="append", metavar="NAME=VALUES",
                   help="solve along a parameter path: lam=logspace(-3,0,20), lam=linspace(0,1,5) or "
                        "lam=[0.1,0.2]; writes path.json and path.png")
    s.add_argument("--out", metavar="DIR", help="--sweep output folder (default runs/sweep_<problem>)")
    s.add_argument("--quiet", action="store_true", help="no progress bar (--sweep)")
    s.add_argument("--verbose", action="store_true",
                   help="solver log on stderr: the torch solvers' residuals every so many iterations and at "
                        "the end; the cvxpy backend's solver with verbose=True")
    s.add_argument("--plot", nargs="?", const=True, metavar="PNG",
                   help="torch backend: draw the residuals per iteration (default "
                        "runs/solve_<problem>/convergence.png)")
    s.set_defaults(func=cmd_solve)


def _explain_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("spec", metavar="SPEC")
    e.add_argument("--problem")
    e.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    e.set_defaults(func=cmd_explain)


def _crosscheck_arguments(x: argparse.ArgumentParser) -> None:
    x.add_argument("specs", nargs="*", metavar="SPEC", help="spec files or folders of them (default: every spec in specs/)")
    x.add_argument("--rtol", type=positive_float, help="objective agreement threshold (default 1e-5 in float64)")
    x.add_argument("--tol", type=positive_float, help="torch backend: stopping tolerance")
    x.add_argument("--max-iter", type=positive_int, help="torch backend: iteration budget")
    x.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    x.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    x.add_argument("--json", action="store_true", help="print a JSON list")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    x.set_defaults(func=cmd_crosscheck)


def _fmt_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("files", nargs="+", metavar="FILE", help="spec files or folders of them; `-`: stdin to stdout")
    f.add_argument("--check", action="store_true", help="change nothing; print the diff and exit 1 if a file "
                                                        "is not in canonical layout")
    f.set_defaults(func=cmd_fmt)


def _list_arguments(li: argparse.ArgumentParser) -> None:
    li.add_argument("kind", nargs="?", choices=_list_kinds(), metavar="KIND",
                    help="one of: " + ", ".join(_list_kinds()))
    li.set_defaults(func=cmd_list)


# The subcommands: name -> (help, the function adding its arguments); plan, compile and train
# come from regspec.train_cli.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "check": ("parse and analyse specs; print a summary", _check_arguments),
    "solve": ("solve a problem block", _solve_arguments),
    "explain": ("print the IR after each pass and how each term is lowered", _explain_arguments),
    "crosscheck": ("solve problems with both backends and compare (exit 1 on disagreement)", _crosscheck_arguments),
    "fmt": ("rewrite specs in the canonical layout (comments kept)", _fmt_arguments),
    "list": ("print the catalogue: atoms, sets, models, losses, optimizers, ...", _list_arguments),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. With ``command`` (one of ``SUBCOMMANDS``), only that one of
    them gets its arguments; the others are listed by name and help (each argument builds its
    own help formatter, and `list`'s choices import the catalogue's reference)."""
    p = argparse.ArgumentParser(prog="regspec", description="Compile and run .reg optimization specs.")
    p.add_argument("--version", action="version", version=f"regspec {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in SUBCOMMANDS.items():
        parser = sub.add_parser(name, help=help_text)
        if command is None or command == name:
            add_arguments(parser)
    from regspec.train_cli import add_train_commands  # plan, compile, train (listed in every usage line)

    add_train_commands(sub)
    return p


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` when it is one of ``SUBCOMMANDS`` (the main parser takes
    no option with a value, so it is the first word that is not an option), else None."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in SUBCOMMANDS else None


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        parser = build_parser(_command_of(argv))
    except Exception as e:  # the subcommands' modules failed to import: a bug of ours, reported as one
        return _internal_error(e)
    args, extras = parser.parse_known_args(argv)  # exits 2 on bad usage
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}" + _unrecognized_hint(parser, args, extras))
    try:
        return args.func(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"regspec: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RegspecError as e:
        print(str(e), file=sys.stderr)
        return EXIT_SPEC
    except KeyboardInterrupt:
        print("\nregspec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr = open(os.devnull, "w")
        return EXIT_OK
    except Exception as e:
        return _internal_error(e)


def _unrecognized_hint(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> str:
    """For words the command does not take: the closest option of that command (`--backnd` ->
    `--backend`), and where a `NAME=VALUE` goes (`-p lam=0.3` -> `--set lam=0.3`)."""
    from regspec.diagnostics import suggest

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for word in extras:
        flag = word.split("=", 1)[0]
        near = suggest(flag, options, n=1) if flag.startswith("-") else []
        if near:
            hints.append(f"`{flag}`: did you mean `{near[0]}`?")
        elif "=" in word and "--set" in options:
            hints.append(f"`{word}`: a parameter's value is given as `--set {word.lstrip('-').split(' ')[0]}`")
    return "".join(f"\n  {h}" for h in hints)


def _internal_error(e: Exception) -> int:
    """A bug in regspec, not in the spec: say so plainly; the traceback only under REGSPEC_DEBUG."""
    if os.environ.get("REGSPEC_DEBUG"):
        raise e
    print(f"regspec: internal error: {type(e).__name__}: {e}\n"
          "  this is a bug in regspec, not in your spec; rerun with REGSPEC_DEBUG=1 for the traceback",
          file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
