"""The training side of the API: ``attach``, ``plan``, ``compile_trainer``, ``train``.

``attach`` keeps the user's own loop::

    reg = regspec.attach("specs/train_prosparse.reg", model, optimizer, loader=loader)
    for epoch in range(epochs):
        for x, y in loader:
            loss = reg.loss(reg.module(x), y)  # task loss + in-graph penalties
            optimizer.zero_grad(); loss.backward()
            optimizer.step()                   # + prox steps, projections, clock (optimizer hooks)
    reg.finalize()                             # constraints hold for the final weights

``compile_trainer`` writes a standalone trainer (``regspec compile``); ``train`` compiles into the
output folder and runs it in this process (``regspec train``); ``load_trained`` rebuilds a run's
trained network. torch is imported lazily.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Sequence

from regspec.diagnostics import error

__all__ = ["plan", "plan_text", "attach", "compile_trainer", "train", "load_trained"]


def _spec(spec: Any):
    from regspec.api import Spec, load

    return spec if isinstance(spec, Spec) else load(spec)


def plan(spec: Any, train: str | None = None, *, attach_only: bool = False):
    """The ``TrainPlan`` of a train block (pure Python; no model is built)."""
    from regspec.compiler.train_plan import plan_train

    return plan_train(_spec(spec).ast, train, attach_only=attach_only)


def plan_text(spec: Any, train: str | None = None) -> str:
    """What ``regspec plan`` prints: matches, lowerings, schedules, gates and fused calls."""
    from regspec.backends.torch.train.assemble import assemble
    from regspec.backends.torch.train.report import describe

    return describe(assemble(plan(spec, train)))


def attach(spec: Any, model: Any, optimizer: Any = None, *, train: str | None = None,
           steps_per_epoch: int | None = None, epochs: int | None = None, loader: Any = None):
    """Attach a train block's rewrites and regularizers to your model and optimizer.

    Returns a ``Regularizer`` with ``.module`` (the rewritten, tapped model: call it instead of
    ``model``; it shares the model's parameters, so ``optimizer`` stays valid) and ``.loss(output,
    target)`` (the spec's task loss plus the in-graph penalties). With an ``optimizer``, hooks on
    it (``register_step_post_hook``) run the fused prox steps and projections, the finite check,
    the step clock and the schedules inside every ``optimizer.step()``; ``.after_step()`` is then
    a no-op kept for loops that call it (without an optimizer, call it after each step).
    ``.finalize()`` applies the constraints once more after the last step.

    ``steps_per_epoch`` (optimizer steps per epoch) is taken from ``loader`` (``len(loader)``: a
    DataLoader's batches) when not given; with gradient accumulation over k batches give
    ``steps_per_epoch=len(loader) // k``. A spec whose weights or hyperparameters are scheduled
    over epochs, or whose gates count epochs, needs it (a clear error otherwise).
    ``.start_epoch(e)`` is optional then (it realigns the clock when an epoch is cut short).
    The block may omit ``model`` and ``data``; its ``model``, ``data`` and ``optimizer``
    statements are not used, except that ``optimizer(prox_metric = ...)`` is honoured.
    ``transform`` statements, ``optimizer sam(...)`` and ``constrain ... via lagrangian`` run from
    hooks on ``optimizer.step()`` too (``.update_rule``; multipliers and Newton-Schulz momentum are
    saved in ``optimizer.state_dict()``); with ``sam`` call ``optimizer.step(closure)``, the
    closure recomputing the loss and calling ``backward()`` (SAM's second pass).
    Its ``init``, ``reparametrize`` and ``freeze`` statements change ``model`` in place
    (torch.nn.utils.parametrize; see backends/torch/train/reparam.py): the new trainable tensors
    (low-rank factors, a subspace's z...) join ``optimizer`` as a parameter group, and
    ``regspec.backends.torch.train.reparam.merged_state_dict(model)`` gives the plain weights.
    """
    from regspec.backends.torch.train.bind import bind_plan
    from regspec.backends.torch.train.regularizer import Regularizer

    p = plan(spec, train, attach_only=True)
    steps_per_epoch = _steps_per_epoch(steps_per_epoch, loader)
    if steps_per_epoch is None:
        needs = _needs_epoch_clock(p)
        if needs is not None:
            term, why = needs
            raise error(f"attach: `{term.text}` {why}, so the steps per epoch are needed to advance it "
                        "within your loop", term.span,
                        ["pass loader=your_dataloader (its len() is the steps per epoch) or steps_per_epoch=N"])
    binding = bind_plan(p, model, optimizer if optimizer is not None else p.optimizer.name,
                        total_epochs=epochs if epochs is not None else p.total_epochs,
                        steps_per_epoch=steps_per_epoch)
    # transforms, SAM and Lagrange multipliers: hooks on the optimizer, registered before the
    # Regularizer's so that its prox steps follow the whole update (optim.UpdateRule)
    rule = _update_rule(p, binding, optimizer, epochs, steps_per_epoch)
    reg = Regularizer(binding.module, optimizer, loss=p.loss, penalties=binding.penalties,
                      prox_groups=binding.prox_groups, steps_per_epoch=steps_per_epoch, seed=p.seed)
    if rule is not None:
        rule.use_clock(reg.clock)
        reg.update_rule = rule  # type: ignore[attr-defined]
    return reg


def _update_rule(p: Any, binding: Any, optimizer: Any, epochs: int | None, steps_per_epoch: int | None) -> Any:
    from regspec.backends.torch.train.optim import bind_update_rule, plan_has_update

    if not plan_has_update(p):
        return None
    if optimizer is None:
        first = (p.transforms[0] if p.transforms else p.sam) or p.multipliers[0]
        raise error("attach: transforms, sam and Lagrangian constraints act inside optimizer.step(); pass your "
                    "optimizer", first.span)
    return bind_update_rule(p, binding, optimizer, total=epochs if epochs is not None else p.total_epochs,
                            steps_per_epoch=steps_per_epoch)


def _steps_per_epoch(given: int | None, loader: Any) -> int | None:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise error(f"attach: steps_per_epoch must be a positive integer, got {given!r}")
        return given
    if loader is None:
        return None
    try:
        n = len(loader)
    except TypeError:
        raise error(f"attach: cannot infer the steps per epoch from loader={type(loader).__name__} (it has no "
                    "len(), e.g. an IterableDataset)", notes=["pass steps_per_epoch=N"]) from None
    if n < 1:
        raise error("attach: the loader is empty (len() == 0)")
    return int(n)


def _needs_epoch_clock(p: Any) -> tuple[Any, str] | None:
    """The first term whose schedule or gate is measured in epochs, and why (else None)."""
    from regspec.compiler.train_plan import ScheduleRef

    for term in p.terms:
        values = [term.weight, *term.options.values()]
        if any(isinstance(v, ScheduleRef) for v in values):
            return term, "is scheduled over the training epochs"
        gate = term.gate
        if gate is not None and ((gate.start is not None and gate.start_unit == "epoch")
                                 or (gate.stop is not None and gate.stop_unit == "epoch")
                                 or (gate.every is not None and gate.every_unit == "epochs")):
            return term, f"is gated by epochs ({gate.text()})"
    return None


#: the last line of a generated trainer: a checksum of the lines above it. A file whose checksum
#: still matches is regspec's own output, which the next ``compile`` may replace; an edited one
#: (or any other file) is kept unless the caller says ``overwrite``.
STAMP = "# regspec compile: sha256 "


def _stamp(source: str) -> str:
    import hashlib

    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return f"{source}{STAMP}{digest} (unedited: the next compile may replace this file)\n"


def _is_unedited_trainer(text: str) -> bool:
    body, sep, last = text.rstrip("\n").rpartition("\n")
    return bool(sep) and last.startswith(STAMP) and _stamp(body + "\n") == text


def _may_replace(path: Path, source: str) -> bool:
    """Whether writing ``source`` to ``path`` loses nothing: no file there, the same text, or a
    trainer that regspec generated and nobody edited since."""
    if not path.exists():
        return True
    try:
        old = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return old == source or _is_unedited_trainer(old)


def _check_epochs(epochs: Any) -> None:
    """``epochs`` given to ``compile_trainer`` or ``train``: a whole number >= 1 (0 reached the
    spec's schedules and blamed their line)."""
    import numbers

    if epochs is not None and not (isinstance(epochs, numbers.Integral) and not isinstance(epochs, bool)
                                   and epochs >= 1):
        raise error(f"epochs must be a whole number >= 1, got {epochs!r}")


def compile_trainer(spec: Any, train: str | None = None, out: str | Path | None = None,
                    epochs: int | None = None, overwrite: bool = False) -> str:
    """Generate the trainer source for a train block; write it to ``out`` when given (atomically).
    An existing ``out`` is replaced only when it is a trainer regspec generated and nobody edited
    (its last line's checksum matches) or ``overwrite`` is true; otherwise ``RegspecError``."""
    from regspec.backends.torch.codegen import generate_trainer
    from regspec.backends.torch.train.assemble import assemble
    from regspec.backends.torch.train.runtime import fingerprint
    from regspec.files import write_atomic

    _check_epochs(epochs)
    s = _spec(spec)
    asm = assemble(plan(s, train), epochs=epochs)
    source = _stamp(generate_trainer(asm, s.ast.source.text, fingerprint(s.ast.source.text),
                                     Path(out).name if out is not None else "trainer.py",
                                     out_dir=Path(out).parent if out is not None else None))
    if out is not None:
        path = Path(out)
        if path.is_dir():
            raise error(f"cannot write the trainer to {path}: it is a folder",
                        notes=[f"name a file: -o {path / 'trainer.py'}"])
        if not overwrite and not _may_replace(path, source):
            raise error(f"{path} already exists and is not an unedited trainer from `regspec compile`; "
                        "it is left as it is",
                        notes=["pass --overwrite (overwrite=True) to replace it, or write somewhere else"])
        write_atomic(path, source)
    return source


def load_trainer(path: str | Path):
    """Import a generated trainer file as a module (its ``main(argv)`` runs it)."""
    path = Path(path)
    name = f"regspec_trainer_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise error(f"cannot load the trainer {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in a run folder
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = no_bytecode
    return module


def train(spec: Any, train: str | None = None, *, out: str | Path | None = None, epochs: int | None = None,
          resume: bool = False, overwrite: bool = False, change_epochs: bool = False, device: str | None = None,
          dtype: str = "float32", quiet: bool = False, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Compile the train block into ``out/trainer.py`` and run it here; returns ``summary.json``'s
    content (``{}`` when the run stopped early). ``out`` defaults to ``runs/<train block name>``;
    a folder holding a run is refused unless ``resume`` or ``overwrite``. Bad input raises
    ``RegspecError``."""
    import json

    from regspec.backends.torch.train.runtime import claim_output, require_checkpoint

    _check_epochs(epochs)
    if change_epochs and not resume:
        raise error("change_epochs continues a run under a new epochs total: it goes with resume=True")
    s = _spec(spec)
    out = Path(out) if out is not None else Path("runs") / plan(s, train).name
    claim_output(out, resume=resume, overwrite=overwrite)   # before trainer.py is (re)written there
    if resume:
        require_checkpoint(out / "checkpoint.pt")  # else a new folder with a trainer.py was left behind
    from regspec.progress import status, wanted

    with status(f"building the trainer in {out / 'trainer.py'} (plan, model, data)", enabled=wanted(quiet)):
        # a run's own trainer is replaced (its folder was claimed above); a file of the user's in a
        # fresh --out folder is not
        compile_trainer(s, train, out / "trainer.py", epochs=epochs, overwrite=overwrite or resume)
        module = load_trainer(out / "trainer.py")
    spec_dir = plan(s, train).base_dir   # data files the spec names live beside it
    args = ["--out", str(out), "--dtype", dtype, "--spec-dir", str(spec_dir), *argv]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if resume:
        args.append("--resume")
    if overwrite:
        args.append("--overwrite")
    if change_epochs:
        args.append("--change-epochs")
    if device is not None:
        args += ["--device", device]
    if quiet:
        args.append("--quiet")
    code = _keeping_subnormals(module.main, args)
    if code:
        raise error(f"the trainer exited with status {code}")
    summary = out / "summary.json"
    return json.loads(summary.read_text()) if summary.exists() else {}


def _keeping_subnormals(main: Any, args: list[str]) -> int:
    """Run a trainer's ``main`` here and give the caller's process back its floating-point mode:
    the trainer flushes subnormals to zero (a CPU speed setting, process-wide), which must not
    outlive the run in a notebook or a program that embeds regspec."""
    import torch

    flushed_before = sys.float_info.min / 2 == 0.0
    try:
        return main(args)
    finally:
        torch.set_flush_denormal(flushed_before)


def load_trained(run_dir: str | Path, *, map_location: Any = "cpu"):
    """The trained network of a run folder (``model.json`` + ``model.pt``): the declared model
    rebuilt, its rewrites applied in order, the weights loaded with ``weights_only=True``."""
    from regspec.backends.torch.train.runtime import load_trained as _load

    return _load(run_dir, map_location=map_location)
