"""The training side of the API: ``attach``, ``plan``, ``compile_trainer``, ``train``.

``attach`` keeps the user's own loop::

    reg = regspec.attach("specs/train_prosparse.reg", model, optimizer)
    for x, y in loader:
        loss = reg.loss(reg.module(x), y)      # task loss + in-graph penalties
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        reg.after_step()                       # fused prox steps and projections

``compile_trainer`` writes a standalone trainer (``regspec compile``); ``train`` compiles into the
output folder and runs it in this process (``regspec train``). torch is imported lazily.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Sequence

from regspec.diagnostics import error

__all__ = ["plan", "plan_text", "attach", "compile_trainer", "train"]


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
           steps_per_epoch: int | None = None, epochs: int | None = None):
    """Attach a train block's rewrites and regularizers to your model and optimizer.

    Returns a ``Regularizer`` with ``.module`` (the rewritten, tapped model: call it instead of
    ``model``; it shares the model's parameters, so ``optimizer`` stays valid), ``.loss(output,
    target)`` (the spec's task loss plus the in-graph penalties), ``.after_step()`` (the fused
    proximal steps and projections; call it right after ``optimizer.step()``) and
    ``.start_epoch(e)`` (schedules and ``from``/``until epoch`` gates read it; with
    ``steps_per_epoch`` they also advance within an epoch). The block may omit ``model`` and
    ``data``; its ``model``, ``data`` and ``optimizer`` statements are not used, except that
    ``optimizer(prox_metric = ...)`` is honoured.
    """
    from regspec.backends.torch.train.bind import bind_plan
    from regspec.backends.torch.train.regularizer import Regularizer

    p = plan(spec, train, attach_only=True)
    binding = bind_plan(p, model, optimizer if optimizer is not None else p.optimizer.name,
                        total_epochs=epochs if epochs is not None else p.total_epochs,
                        steps_per_epoch=steps_per_epoch)
    return Regularizer(binding.module, optimizer, loss=p.loss, penalties=binding.penalties,
                       prox_groups=binding.prox_groups, steps_per_epoch=steps_per_epoch, seed=p.seed)


def compile_trainer(spec: Any, train: str | None = None, out: str | Path | None = None,
                    epochs: int | None = None) -> str:
    """Generate the trainer source for a train block; write it to ``out`` when given."""
    from regspec.backends.torch.codegen import generate_trainer
    from regspec.backends.torch.train.assemble import assemble
    from regspec.backends.torch.train.runtime import fingerprint

    s = _spec(spec)
    asm = assemble(plan(s, train), epochs=epochs)
    source = generate_trainer(asm, s.ast.source.text, fingerprint(s.ast.source.text),
                              Path(out).name if out is not None else "trainer.py")
    if out is not None:
        path = Path(out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        except OSError as exc:
            raise error(f"cannot write the trainer to {path}: {exc}") from None
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
    spec.loader.exec_module(module)
    return module


def train(spec: Any, train: str | None = None, *, out: str | Path = "runs/train", epochs: int | None = None,
          resume: bool = False, device: str | None = None, dtype: str = "float32", quiet: bool = False,
          argv: Sequence[str] = ()) -> dict[str, Any]:
    """Compile the train block into ``out/trainer.py`` and run it here; returns ``summary.json``'s
    content (``{}`` when the run stopped early). Bad input raises ``RegspecError``."""
    import json

    out = Path(out)
    compile_trainer(spec, train, out / "trainer.py", epochs=epochs)
    module = load_trainer(out / "trainer.py")
    args = ["--out", str(out), "--dtype", dtype, *argv]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if resume:
        args.append("--resume")
    if device is not None:
        args += ["--device", device]
    if quiet:
        args.append("--quiet")
    code = module.main(args)
    if code:
        raise error(f"the trainer exited with status {code}")
    summary = out / "summary.json"
    return json.loads(summary.read_text()) if summary.exists() else {}
