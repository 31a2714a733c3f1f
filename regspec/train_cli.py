"""The training subcommands of the `regspec` command line: ``plan``, ``compile``, ``train``.

    regspec plan SPEC [--train NAME]                  what each statement matched and how it lowers
    regspec compile SPEC [--train NAME] -o trainer.py  a standalone trainer (python trainer.py --help)
    regspec train SPEC [--train NAME] [--out DIR] ...  compile into DIR/trainer.py and run it
                                                      (DIR: runs/<train block name> by default)
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def _allow_imports(args: argparse.Namespace) -> None:
    """``--allow-import PKG``: import paths may reach PKG besides the user's own code (docs/security.md)."""
    if getattr(args, "allow_import", None):
        from regspec.backends.torch.train.models import allow_imports

        allow_imports(args.allow_import)


def cmd_plan(args: argparse.Namespace) -> int:
    _allow_imports(args)
    if getattr(args, "json", False):
        from regspec.json_out import emit, plan_json

        emit(lambda: plan_json(args.spec, args.train))
        return 0
    from regspec.progress import status, wanted
    from regspec.train_api import plan_text

    # binding imports torch and runs one real batch through the model: seconds on a cold start
    with status("planning (model, data, one probe batch)", enabled=wanted()):
        text = plan_text(args.spec, args.train)
    print(text)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    _allow_imports(args)
    from regspec.progress import status, wanted
    from regspec.train_api import compile_trainer

    with status(f"writing {args.output} (plan, model, data, one probe batch)", enabled=wanted()):
        compile_trainer(args.spec, args.train, args.output, epochs=args.epochs, overwrite=args.overwrite)
    print(f"wrote {args.output}; run it with: {_this_python()} {args.output} --out DIR [--epochs N] [--resume]")
    return 0


def _this_python() -> str:
    """How to call the interpreter that has regspec (the trainer imports it): ``python`` when that
    is the one on PATH, else its path (``.venv/bin/python`` from the project folder), so the hint
    works when copied into a fresh shell."""
    import os
    import shutil
    from pathlib import Path

    exe = Path(sys.executable)
    on_path = shutil.which("python")
    if on_path and Path(on_path).absolute().parent == exe.absolute().parent:  # the same venv's bin folder
        return "python"
    try:
        return str(exe.absolute().relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(exe)


def _device_name(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N (checked before the trainer is written)."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def cmd_train(args: argparse.Namespace) -> int:
    if args.change_epochs and not args.resume:
        from regspec.cli import UsageError

        raise UsageError("--change-epochs continues a run under a new --epochs total: it goes with --resume")
    _allow_imports(args)
    from regspec.train_api import train

    argv: list[str] = []
    if args.stop_after is not None:
        argv += ["--stop-after", str(args.stop_after)]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    if args.checkpoint_every is not None:
        argv += ["--checkpoint-every", str(args.checkpoint_every)]
    try:
        train(args.spec, args.train, out=args.out, epochs=args.epochs, resume=args.resume, overwrite=args.overwrite,
              change_epochs=args.change_epochs, device=args.device, dtype=args.dtype, quiet=args.quiet, argv=argv)
    except KeyboardInterrupt:  # checkpoints are written atomically: the last one stays valid
        again = " ".join([args.spec, *(["--train", args.train] if args.train else []),
                          *(["--out", args.out] if args.out else []),
                          *(["--epochs", str(args.epochs)] if args.epochs else [])])
        print(f"\ninterrupted; continue with: regspec train {again} --resume", file=sys.stderr)
        return 130
    return 0


def add_train_commands(sub: Any) -> None:
    """Register ``plan``, ``compile`` and ``train`` on the CLI's subparsers."""
    from regspec.cli import positive_int

    p = sub.add_parser("plan", help="show how a train block binds to its model and how each term is lowered")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--train", help="train block name (default: the first)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=cmd_plan)

    c = sub.add_parser("compile", help="write a standalone trainer for a train block")
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("--train", help="train block name (default: the first)")
    c.add_argument("-o", "--output", default="trainer.py", help="trainer file to write (default: trainer.py)")
    c.add_argument("--epochs", type=positive_int, help="default epochs of the trainer (spec: `epochs`)")
    c.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even when it is not an unedited trainer from `regspec compile`")
    c.set_defaults(func=cmd_compile)

    t = sub.add_parser("train", help="compile a train block and run it")
    t.add_argument("spec", metavar="SPEC")
    t.add_argument("--train", help="train block name (default: the first)")
    t.add_argument("--out", help="output folder (metrics.jsonl, summary.json, checkpoint.pt, model.pt, model.json); "
                   "default: runs/<train block name>")
    t.add_argument("--epochs", type=positive_int, help="total epochs (spec: `epochs`)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    mode.add_argument("--overwrite", action="store_true", help="replace the run already in OUT")
    t.add_argument("--change-epochs", action="store_true",
                   help="with --resume: continue under a new --epochs total (schedules and gates follow it)")
    t.add_argument("--device", type=_device_name, help="auto, cpu, cuda or cuda:N (spec: `device`)")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--seed", type=int, help="seed (spec: `seed`)")
    t.add_argument("--stop-after", type=positive_int, metavar="K", help="stop after K epochs (resume later)")
    t.add_argument("--checkpoint-every", type=positive_int, metavar="N", help="write the checkpoint every N epochs")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)
    for parser in (p, c, t):
        parser.add_argument("--allow-import", action="append", metavar="PKG",
                            help="let import paths in the spec call into the installed package PKG (repeatable); "
                                 "by default only your own modules (beside the spec or in the current directory)")
