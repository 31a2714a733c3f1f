"""The trainer generator: a bound train block -> one standalone, readable Python file.

The file imports only torch and regspec's training runtime. Everything the spec decided is
spelled out: the data and model calls (with the sizes read from the data), each rewrite, the
activation taps, the optimizer, and every regularizer bound to explicit tensor names, as a
``Penalty`` (loss side) or a ``ProxGroup`` (fused prox / projection after ``optimizer.step()``)
with its weight or schedule, kernel hyperparameters, step metric and gate. The training loop is
written out too, so the file reads like a trainer a person would write.
"""
from __future__ import annotations

import keyword
import math
import textwrap
from typing import Any

from regspec.compiler.train_plan import GatePlan, ScheduleRef, TermPlan

__all__ = ["generate_trainer", "render_scalar", "render_loss"]

_TAKES_TOTAL = ("linear", "cosine", "cubic", "exp", "sine_stages")


def _lit(v: Any) -> str:
    """A Python literal for a plan value (numbers, strings, bools, None, lists, dicts)."""
    if isinstance(v, ScheduleRef):
        return render_scalar(v)
    if isinstance(v, float):
        # repr(inf) is the bare name `inf`: spell non-finite values as calls
        return repr(v) if math.isfinite(v) else f"float({str(v)!r})"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_lit(x) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_lit(x)}" for k, x in v.items()) + "}"
    return repr(v)


def render_scalar(v: Any, total: str = "total", spe: str = "steps_per_epoch") -> str:
    """Source for a weight: a number, or the schedule call (ranges in steps divided by ``spe``)."""
    if not isinstance(v, ScheduleRef):
        return _lit(v)
    args = [_lit(a) for a in v.args]
    kwargs = []
    for k, x in v.kwargs.items():
        if isinstance(x, ScheduleRef):
            src = render_scalar(x, total, spe)
        elif v.unit == "steps" and k in ("start", "end", "every"):
            src = f"{_lit(x)} / {spe}"
        else:
            src = _lit(x)
        kwargs.append(f"{k}={src}")
    if v.name in _TAKES_TOTAL and "end" not in v.kwargs:
        kwargs.append(f"total={total}")
    call = f"{v.name}({', '.join(args + kwargs)})"
    return call if v.scale == 1.0 else f"{_lit(v.scale)} * {call}"


def _schedule_names(v: Any, out: set[str]) -> None:
    if isinstance(v, ScheduleRef):
        out.add(v.name)
        for x in v.kwargs.values():
            _schedule_names(x, out)
    elif isinstance(v, dict):
        for x in v.values():
            _schedule_names(x, out)


_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
_TORCH_FN = {"mean": "torch.mean", "sum": "torch.sum", "abs": "torch.abs", "exp": "torch.exp",
             "log": "torch.log", "sqrt": "torch.sqrt"}


def render_loss(tree: Any, losses: set[str]) -> str:
    """A Python expression for a loss tree (see losses.eval_loss_tree); named losses it uses are
    added to ``losses`` (to import)."""
    if isinstance(tree, str):
        return tree
    if isinstance(tree, (int, float)):
        return _lit(float(tree))
    op, *args = tree
    parts = [render_loss(a, losses) for a in args]
    if op in _INFIX:
        return f"({parts[0]} {_INFIX[op]} {parts[1]})"
    if op == "neg":
        return f"(-{parts[0]})"
    if op == "square":
        return f"({parts[0]} ** 2)"
    if op in _TORCH_FN:
        return f"{_TORCH_FN[op]}({parts[0]})"
    if op in ("log_softmax", "softmax"):
        return f"torch.{op}({parts[0]}, dim=-1)"
    losses.add(op)
    return f"{op}({', '.join(parts)})"


def _when(gate: GatePlan | None, spe: str = "steps_per_epoch") -> str | None:
    if gate is None:
        return None
    kw = []
    if gate.every is not None:
        kw.append(f"every={gate.every}" if gate.every_unit == "steps" else f"every={gate.every} * {spe}")
    if gate.start is not None:
        kw.append(f"from_step={int(gate.start)}" if gate.start_unit == "step" else f"from_epoch={_lit(gate.start)}")
    if gate.stop is not None:
        kw.append(f"until_step={int(gate.stop)}" if gate.stop_unit == "step" else f"until_epoch={_lit(gate.stop)}")
    return f"When({', '.join(kw)})"


def _one_line(text: str) -> str:
    """Spec text made safe for one line of generated code: characters that are not printable
    (line breaks of any kind, NUL, form feeds...) become their escapes, so a comment or docstring
    line cannot end early or smuggle in a new line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _doc(text: str) -> str:
    """Spec text for a line of the trainer's docstring: escaped so that its value is the text and
    no quote or backslash in it can end the docstring."""
    return _one_line(text).replace("\\", "\\\\").replace('"', '\\"')


def _comment(text: str, indent: str) -> str:
    lines = textwrap.wrap(_one_line(text), 96 - len(indent))
    return "\n".join(f"{indent}# {ln}" for ln in lines)


def _kwargs_src(kwargs: dict[str, Any]) -> str:
    if any(not k.isidentifier() or keyword.iskeyword(k) or keyword.issoftkeyword(k) for k in kwargs):
        return "**" + _lit(kwargs)
    return ", ".join(f"{k}={_lit(v)}" for k, v in kwargs.items())


def generate_trainer(asm: Any, spec_text: str, fingerprint: str, filename: str = "trainer.py") -> str:
    """Source of a standalone trainer for an ``assemble.Assembled`` train block (``filename``: the
    name the usage lines show)."""
    plan = asm.plan
    binding = asm.binding
    imports_sched: set[str] = set()
    loss_imports: set[str] = set()
    for tb in binding.terms:
        _schedule_names(tb.term.weight, imports_sched)
        _schedule_names(tb.term.options, imports_sched)
    lr = plan.optimizer.kwargs.get("lr")
    _schedule_names(lr, imports_sched)
    uses_when = any(tb.group is not None and tb.term.gate is not None for tb in binding.terms)

    # ---- header
    lines: list[str] = []
    w = lines.append
    w("#!/usr/bin/env python3")
    w(f'"""Trainer for `train {_doc(plan.name)}` in {_doc(plan.path)}, generated by `regspec compile`.')
    w("")
    w("Run:")
    fname, name = _doc(filename), _doc(plan.name)
    w(f"    python {fname} --epochs {asm.epochs} --out runs/{name} [--resume] [--device auto|cpu|cuda]")
    w(f"    torchrun --nproc_per_node=2 {fname} --out runs/{name}    # DistributedDataParallel")
    w("")
    w("Writes OUT/metrics.jsonl (one line per epoch), OUT/summary.json and OUT/checkpoint.pt (atomic).")
    for line in getattr(asm, "user_code", []):
        w(f"User code it runs: {_doc(line)}")
    w("Lowering of each statement (`regspec plan` prints the same with tensor shapes):")
    for tb in binding.terms:
        t = tb.term
        how = {"loss": "loss term (autograd)", "prox": f"fused prox `{t.kernel}` ({tb.metric} step)",
               "projection": f"projection `{t.kernel}`"}[t.lowering]
        w(f"  line {t.line}: {_doc(t.text)}")
        w(f"      -> {_doc(how)} on {_doc(', '.join(tb.names))}")
    w('"""')
    w("from __future__ import annotations")
    w("")
    w("import sys")
    w("")
    w("import torch")
    w("")
    w("from regspec.backends.torch.train import runtime as rt")
    if plan.data.kind != "source":
        w("from regspec.backends.torch.train.data import build_data")
    if plan.rewrites or binding.tap_path:
        names = [n for n, used in (("insert_taps", bool(binding.tap_path)), ("rewrite_activations", bool(plan.rewrites)))
                 if used]
        w(f"from regspec.backends.torch.train.fx import {', '.join(names)}")
    # loss source decides the loss imports
    loss_src = None
    if isinstance(asm.loss, str):
        loss_value = repr(asm.loss)
    else:
        loss_src = render_loss(asm.loss, loss_imports)
        loss_value = "task_loss"
    if loss_imports:
        w(f"from regspec.backends.torch.train.losses import {', '.join(sorted(loss_imports))}")
    w("from regspec.backends.torch.train.models import build_model")
    weights = _weights_src(asm)
    if weights:
        w("from regspec.backends.torch.train.reparam import WeightStep, apply_weights")
    w("from regspec.backends.torch.train.optim import build_optimizer" + (", set_hparam" if isinstance(lr, ScheduleRef) else ""))
    if binding.prox_groups:
        w("from regspec.backends.torch.train.proxstep import ProxGroup" + (", When" if uses_when else ""))
    w("from regspec.backends.torch.train.regularizer import " + ("Penalty, " if binding.penalties else "")
      + "Regularizer")
    if imports_sched:
        w(f"from regspec.backends.torch.train.schedules import {', '.join(sorted(imports_sched))}")
    w("")
    w(f"SPEC = {plan.path!r}")
    w(f"TRAIN = {plan.name!r}")
    w(f"FINGERPRINT = {fingerprint!r}  # of the spec text: --resume refuses checkpoints of other specs")
    w(f"SPEC_DIR = {str(plan.base_dir)!r}")
    w(f"EPOCHS = {asm.epochs}")
    w(f"STEPS = {plan.steps!r}  # total optimizer steps (None: whole epochs)")
    w(f"BATCH = {_lit(plan.batch)}")
    w(f"SEED = {plan.seed}")
    w(f"DEVICE = {plan.device!r}")
    w(f"TASK = {asm.data.task!r}")
    w("# what rebuilds the trained network: written as OUT/model.json beside model.pt")
    w("# (regspec.load_trained(OUT) reads both)")
    w("MODEL = {")
    for key, value in _model_recipe(asm).items():
        w(f"    {key!r}: {_lit(value)},")
    w("}")
    w("")
    if loss_src is not None:
        w("")
        w("def task_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:")
        w(f"    # loss {_one_line(plan.loss_text)}")
        w(f"    return {loss_src}")
        w("")
    # ---- data
    w("")
    w("def make_data(batch: int, seed: int):")
    w(f"    # data {_one_line(plan.data.text)}")
    d = plan.data
    if d.kind == "source":
        w(f"    return rt.source_data({d.name!r}, {_lit(list(d.args))}, {_lit(d.kwargs)}, batch=batch, seed=seed,")
        w("                          base_dir=SPEC_DIR)")
    else:
        kw = dict(d.kwargs)
        split = kw.pop("split", 0.8)
        extra = (", " + _kwargs_src(kw)) if kw else ""
        w(f"    return build_data({d.name!r}, split={_lit(split)}, batch=rt.full_batch(batch), seed=seed{extra})")
    # ---- model
    w("")
    w("")
    w("def make_model() -> torch.nn.Module:")
    w(f"    # model {_one_line(plan.model.text)}"
      + (f"   (from the data: {_one_line(', '.join(asm.filled))})" if asm.filled else ""))
    w(f"    model = build_model({plan.model.name!r}, {_kwargs_src(asm.model_kwargs)})".replace(", )", ")"))
    for rb in binding.rewrites:
        rw = rb.rewrite
        w(_one_line(f"    # line {rw.span.line if rw.span else 0}: {rw.text}  ({rb.count} replaced"
                    + (f": {', '.join(rb.modules)}" if rb.modules else "") + (", fx graph" if rb.graph else "") + ")"))
        extra = (", " + _kwargs_src(rw.dst_kwargs)) if rw.dst_kwargs else ""
        w(f"    model, _ = rewrite_activations(model, {rw.src!r}, {rw.dst!r}{extra})")
    for line in weights:
        w(line)
    if binding.tap_path:
        acts = []
        for tb in binding.terms:
            if tb.term.target.kind == "act":
                acts += [n for n in tb.names if n not in acts]
        how = "the fx graph" if binding.tap_path == "fx" else f"forward hooks ({binding.tap_reason})"
        w(f"    # activation taps for the loss terms, on {_one_line(how)}")
        w(f"    return insert_taps(model, {_lit(acts)})")
    else:
        w("    return model")
    # ---- optimizer
    w("")
    w("")
    w("def make_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:")
    w(f"    # optimizer {_one_line(plan.optimizer.text)}")
    okw = dict(plan.optimizer.kwargs)
    if isinstance(lr, ScheduleRef):
        okw["lr"] = 0.0  # set from LR(t) before every step
    w(f"    return build_optimizer({plan.optimizer.name!r}, module.parameters(){', ' if okw else ''}{_kwargs_src(okw)})")
    # ---- regularizers
    w("")
    w("")
    w("def make_regularizer(module: torch.nn.Module, optimizer: torch.optim.Optimizer, total: int,")
    w("                     steps_per_epoch: int, seed: int) -> Regularizer:")
    w('    """Every regularizer of the spec, bound to named tensors. Loss terms are Penalty objects;')
    w("    prox terms and constraints are ProxGroup objects, applied after optimizer.step() in fused")
    w("    calls (groups with the same kernel, hyperparameters, metric and gate share one call).")
    w("    Prox step: tau = lr * weight (euclidean) or tau_i = lr * weight / (sqrt(v_hat_i) + eps)")
    w('    (adaptive: separable kernels under Adam, the metric of its update)."""')
    w("    penalties = [" + ("" if binding.penalties else "]  # no loss-side terms"))
    for tb in binding.terms:
        if tb.penalty is None:
            continue
        t = tb.term
        p = tb.penalty
        w(_comment(f"line {t.line}: {t.text}  ({t.why})", "        "))
        target = (f"params={_lit(tb.names)}" if p.params else f"acts={_lit(tb.names)}" if p.acts else "output=True")
        hyper = {k: v for k, v in p.hyper.items() if v is not None}
        hyper_src = f", hyper={_lit(hyper)}" if hyper else ""
        w(f"        Penalty({p.kind!r}, {target}, weight={render_scalar(t.weight)}{hyper_src},")
        w(f"                label={p.label!r}),")
    if binding.penalties:
        w("    ]")
    w("    prox_groups = [" + ("" if binding.prox_groups else "]  # no prox terms or constraints"))
    for tb in binding.terms:
        if tb.group is None:
            continue
        t = tb.term
        g = tb.group
        w(_comment(f"line {t.line}: {t.text}  ({t.why})", "        "))
        parts = [f"kernel={g.kernel!r}", f"params={_lit(tb.names)}"]
        if t.lowering == "prox":
            parts.append(f"weight={render_scalar(t.weight)}")
        hyper = _hyper_src(t, tb.options)
        if hyper:
            parts.append(f"hyper={hyper}")
        if t.lowering == "prox":
            parts.append(f"metric={g.metric!r}")
        when = _when(t.gate)
        if when:
            parts.append(f"when={when}")
        if g.matrix:
            parts.append("matrix=True")
        parts.append(f"label={g.label!r}")
        w("        ProxGroup(" + ",\n                  ".join(_wrap_parts(parts)) + "),")
    if binding.prox_groups:
        w("    ]")
    w(f"    return Regularizer(module, optimizer, loss={loss_value}, penalties=penalties, prox_groups=prox_groups,")
    w("                       steps_per_epoch=steps_per_epoch, seed=seed)")
    # ---- main
    w("")
    w("")
    w("def main(argv: list[str] | None = None) -> int:")
    w("    args = rt.parse_args(argv, doc=__doc__, epochs=EPOCHS, batch=BATCH, seed=SEED, device=DEVICE,")
    w("                         name=TRAIN)")
    w("    dist = rt.setup_distributed(args.device)      # a process group under torchrun, else one process")
    w("    dtype = rt.DTYPES[args.dtype]")
    w("    # subnormal floats (e.g. momentum of pruned weights decaying towards 1e-38) are ~100x slower on")
    w("    # CPUs; flushing them to zero changes nothing at training precision")
    w("    torch.set_flush_denormal(True)")
    w("    torch.manual_seed(args.seed)                  # the same initial weights on every rank")
    w("    data = make_data(args.batch, args.seed)")
    w("    module = make_model().to(dist.device, dtype)")
    w("    optimizer = make_optimizer(module)")
    w("    steps_per_epoch = len(data.epoch_loader(0))")
    w("    epochs = args.epochs")
    w("    max_steps = STEPS if epochs == EPOCHS else None  # `steps N` in the spec may stop mid-epoch")
    w("    reg = make_regularizer(module, optimizer, epochs, steps_per_epoch, args.seed)")
    if isinstance(lr, ScheduleRef):
        w(f"    lr = {render_scalar(lr, total='epochs')}  # learning-rate schedule, evaluated at t (epochs)")
    w("    # refuses to overwrite an existing run without --overwrite; checks --resume against it")
    w("    run = rt.Run.from_args(args, dist, fingerprint=FINGERPRINT, max_steps=max_steps, model=MODEL,")
    w("                           spec=SPEC, train=TRAIN)")
    w("    initial = reg.values()")
    w("    start = run.start(module, optimizer, reg)     # --resume: from OUT/checkpoint.pt, else fresh")
    w("    net = rt.distributed_module(module, dist)     # DistributedDataParallel under torchrun")
    w("    stop = epochs if args.stop_after is None else min(epochs, start + args.stop_after)")
    w("    for epoch in range(start, stop):")
    w("        reg.start_epoch(epoch)")
    w("        module.train()")
    w("        meter = rt.Meter()")
    w("        batches = rt.shard(data.epoch_loader(epoch), dist)")
    w("        for x, y in run.progress(batches, epoch, epochs, steps_per_epoch):")
    w("            if max_steps is not None and reg.clock.step >= max_steps:")
    w("                break")
    w("            x, y = rt.to_device(x, y, dist.device, dtype)")
    if isinstance(lr, ScheduleRef):
        w('            set_hparam(optimizer, "lr", lr(reg.t))')
    w("            output = net(x)")
    w("            loss = reg.loss(output, y)                # task loss + in-graph penalties")
    w("            optimizer.zero_grad(set_to_none=True)")
    w("            loss.backward()")
    w("            optimizer.step()")
    w("            reg.after_step()                          # fused prox steps and projections")
    w("            meter.add(loss, len(x))")
    w("        val = rt.evaluate(module, data.val, reg.task_loss, dist.device, dtype, TASK)")
    w('        run.end_epoch(epoch, epochs, {"loss": meter.mean(), **val}, reg, module, optimizer,')
    w("                      final=epoch + 1 == stop)")
    w("    if stop == epochs:")
    w("        reg.finalize()                                # constraints hold for the final model")
    w('        x_val = data.tensors.get("x_val")')
    w("        run.finish(reg, initial, None if x_val is None else x_val.to(dist.device, dtype))")
    w("    rt.teardown(dist)")
    w("    return 0")
    w("")
    w("")
    w('if __name__ == "__main__":')
    w("    sys.exit(rt.guard(main))")
    return "\n".join(lines) + "\n"


def _weights_src(asm: Any) -> list[str]:
    """make_model's lines for ``init``, ``reparametrize`` and ``freeze`` (reparam.py), in order."""
    plan = asm.plan
    if plan.init is None and not plan.reparams:
        return []
    init_line = plan.init.span.line if plan.init is not None and plan.init.span is not None else 0
    lines = [_comment(f"line {init_line}: {plan.init.text}", "    ")] if plan.init is not None else []
    lines.append("    # starting weights, then reparametrizations (torch.nn.utils.parametrize) and frozen")
    lines.append("    # tensors in the order written; model.pt gets the merged weights (rt.Run.finish)")
    lines.append("    apply_weights(model, [")
    for r in plan.reparams:
        lines.append(_comment(f"line {r.line}: {r.text}", "        "))
        args = [repr(r.stmt), f"pattern={r.target.pattern!r}"]
        if r.target.type is not None:
            args.append(f"type={r.target.type!r}")
        if r.form is not None:
            args += [f"form={r.form!r}", f"options={_lit(r.options)}"]
        args.append(f"text={_one_line(r.text)!r}")
        lines.append("        WeightStep(" + ", ".join(args) + "),")
    init = f", init={plan.init.path!r}" if plan.init is not None else ""
    lines.append(f"    ]{init}, base_dir=SPEC_DIR)")
    return lines


def _model_recipe(asm: Any) -> dict[str, Any]:
    """The model call and the rewrites, in order: what rebuilds the trained network."""
    rewrites = [{"src": rb.rewrite.src, "dst": rb.rewrite.dst, "kwargs": dict(rb.rewrite.dst_kwargs)}
                for rb in asm.binding.rewrites]
    return {"name": asm.plan.model.name, "kwargs": dict(asm.model_kwargs), "rewrites": rewrites}


def _hyper_src(t: TermPlan, options: dict[str, Any] | None = None) -> str:
    from regspec.backends.torch.train.bind import kernel_hyper

    hyper = kernel_hyper(t, options)
    if not hyper:
        return ""
    return "{" + ", ".join(f"{k!r}: {render_scalar(v)}" for k, v in hyper.items()) + "}"


def _wrap_parts(parts: list[str]) -> list[str]:
    """Keep short argument lists on few lines: join parts up to ~88 columns."""
    out: list[str] = []
    cur = ""
    for p in parts:
        if cur and len(cur) + len(p) + 2 > 78:
            out.append(cur + ",")
            cur = p
        else:
            cur = f"{cur}, {p}" if cur else p
    if cur:
        out.append(cur)
    # join produced with ",\n" by the caller: drop our trailing commas
    return [o[:-1] if o.endswith(",") else o for o in out]

