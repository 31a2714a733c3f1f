"""What a generated trainer (``regspec compile``) needs besides the building blocks: command-line
options, devices, DistributedDataParallel, data from `problem` sources, evaluation, metrics,
summaries, progress and atomic checkpoints.

A trainer's files in ``--out DIR``:

* ``metrics.jsonl``: one JSON object per epoch: ``epoch``, ``loss`` (mean training loss with the
  penalties), ``reg/<term>`` (each regularizer's value g, see ``Regularizer.values``),
  ``weight/<term>`` (its weight at the end of the epoch), ``tensor/<name>/zero_frac``, ``/rank``
  and ``/spectral_norm`` of each tensor a term selects, validation metrics (``val_loss``,
  ``val_acc`` or ``val_mse``), ``seconds``;
* ``curves.png``: those records drawn per epoch (``regspec.plots.training_curves``) at the end
  and, during a long run, after an epoch at most every ``CURVES_EVERY_S`` seconds; skipped with a
  note when matplotlib, the extra ``regspec[plot]``, is missing;
* ``summary.json``: the final metrics; per selected tensor: shape, exact-zero fraction,
  zero-row and zero-column fractions (group sparsity), rank, spectral norm; per term: its
  lowering, initial and final value, and for constraints the distance to the set; activation
  sparsity of tapped activations on the validation set; ``trained``: the tensors trained (names
  as parametrize makes them), their count of scalars against the model's, the frozen tensors;
* ``model.pt``: the final weights (a plain state dict of the model as declared, after the final
  projections, reparametrizations merged in: reparam.py) and
  ``model.json``: what rebuilds the trained network (the model call with its resolved arguments
  and the rewrites, in order); ``regspec.load_trained(DIR)`` rebuilds it and loads the weights;
* ``checkpoint.pt``: written after every epoch to a temporary file, then ``os.replace``-d (a
  crash never leaves a half-written checkpoint); ``--resume`` restores model, optimizer,
  regularizer clock, anchors and RNG states and continues with the next epoch. The data order
  of epoch e depends only on (seed, e), so a resumed CPU run ends with the parameters of an
  uninterrupted one.

Safety: a folder that already holds a run is never overwritten without ``--resume`` or
``--overwrite``; a non-finite loss or weight stops the run at the first bad step (the error names
the step, the term and the last good checkpoint) and no file with bad weights is written; a
checkpoint holding NaN/inf is refused; ``--resume`` with another ``--epochs`` than the run was
started with is refused unless ``--change-epochs`` (the schedules and gates are laid out over the
total); a gate that never opens within the run is a warning at start, kept in ``summary.json``.

Distributed: under ``torchrun --nproc_per_node=K`` (``WORLD_SIZE > 1``) the trainer joins a
process group (gloo on CPU, nccl on CUDA), wraps the module in DistributedDataParallel and gives
rank r the rows r, r+K, r+2K, ... of each global batch. Gradients are all-reduced, so every rank
applies the same optimizer update to the same parameters; the prox kernels are deterministic,
so the ranks stay identical. Rank 0 writes the files; every rank writes ``params_rank{r}.pt``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from regspec.diagnostics import RegspecError, error
from regspec.files import write_atomic

from ._util import primary_tensor
from .data import DataBundle, EpochSampler
from .finite import NonFiniteError, check_tensors_finite, optimizer_state_names
from .proxstep import hyper_at
from .regularizer import Regularizer, set_distance
from .reparam import merged_state_dict, trained_summary

__all__ = ["primary_tensor", "DTYPES", "parse_args", "Dist", "setup_distributed", "teardown", "resolve_device",
           "distributed_module", "shard", "to_device", "source_data", "full_batch", "evaluate", "Meter",
           "Run", "tensor_stats", "summarize", "fingerprint", "guard", "CHECKPOINT_FORMAT", "MODEL_FORMAT",
           "RUN_FILES", "existing_run", "claim_output", "gate_warnings", "load_trained"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHECKPOINT_FORMAT = "regspec-trainer/1"
MODEL_FORMAT = "regspec-model/1"
FULL_BATCH = 1 << 30
#: the files that make a folder a run (a fresh run over them needs --overwrite)
RUN_FILES = ("metrics.jsonl", "checkpoint.pt", "summary.json", "model.pt", "model.json", "curves.png")
#: curves.png is redrawn after an epoch when this many seconds passed since the last drawing (a
#: long run can be watched; a drawing costs about a second, so short epochs are not slowed)
CURVES_EVERY_S = 60.0


# ------------------------------------------------------------------ options
def parse_args(argv: Sequence[str] | None, *, doc: str | None, epochs: int, batch: int | str, seed: int,
               device: str, name: str = "train", spec_dir: str = ".") -> argparse.Namespace:
    """The trainer's options; defaults come from the spec (``name``: the train block, which names
    the default output folder ``runs/NAME``)."""
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--epochs", type=int, default=epochs, help=f"total epochs (spec: {epochs})")
    p.add_argument("--out", default=f"runs/{name}",
                   help=f"output folder: metrics.jsonl, summary.json, checkpoint.pt (default: runs/{name})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    mode.add_argument("--overwrite", action="store_true", help="replace the run already in OUT")
    p.add_argument("--change-epochs", action="store_true",
                   help="with --resume: continue under a new --epochs total (schedules and gates follow it)")
    p.add_argument("--device", default=device, help=f"auto, cpu, cuda or cuda:N (spec: {device})")
    p.add_argument("--seed", type=int, default=seed, help=f"seed of init, split and data order (spec: {seed})")
    p.add_argument("--batch", default=batch, help=f"batch size or `full` (spec: {batch})")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--stop-after", type=int, default=None, metavar="K",
                   help="stop after K epochs of this invocation (resume later with --resume)")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="write the checkpoint every N epochs (and after the last epoch of each invocation)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--spec-dir", default=spec_dir, metavar="DIR",
                   help=f"the spec's folder, whose data files the spec names (default: {spec_dir}, "
                        "relative to the trainer)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.checkpoint_every < 1:
        p.error("--checkpoint-every must be at least 1")
    if args.change_epochs and not args.resume:
        p.error("--change-epochs continues a run under a new --epochs total: it goes with --resume")
    if str(args.batch) != "full":
        try:
            args.batch = int(args.batch)
        except ValueError:
            p.error(f"--batch expects an integer or `full`, got {args.batch!r}")
    return args


def full_batch(batch: int | str) -> int:
    """A batch size for the loaders (``full``: one batch holding every training row)."""
    return FULL_BATCH if batch == "full" else int(batch)


# ------------------------------------------------------------------ devices and distributed
def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` under torchrun means ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise error(f"device `{name}`: no CUDA device is available on this machine",
                        notes=["use --device cpu (or auto)"])
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise error(f"unknown device `{name}`; choose auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=resolve_device(device))
    import torch.distributed as tdist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not tdist.is_initialized():
        tdist.init_process_group(backend)
    return Dist(rank, world, local, dev, backend)


def teardown(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as tdist

        tdist.barrier()


def distributed_module(module: nn.Module, dist: Dist) -> nn.Module:
    """DistributedDataParallel around ``module`` under torchrun, else ``module`` itself."""
    if not dist.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)


def shard(loader: Iterable[Any], dist: Dist) -> Iterator[Any]:
    """Rank r's rows r, r+K, ... of each global batch; batches with fewer rows than ranks are skipped
    on every rank alike (all ranks see the same global batches)."""
    for batch in loader:
        if not dist.active:
            yield batch
            continue
        if len(batch[0]) < dist.world:
            continue
        yield tuple(b[dist.rank::dist.world] for b in batch)


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch; floating tensors take the run's dtype, class ids stay integer."""
    x = x.to(device, dtype if x.is_floating_point() else None, non_blocking=True)
    y = y.to(device, dtype if y.is_floating_point() else None, non_blocking=True)
    return x, y


# ------------------------------------------------------------------ data from `problem` sources
def source_data(name: str, args: Sequence[Any], kwargs: dict[str, Any], *, batch: int | str, seed: int,
                base_dir: str | Path = ".") -> DataBundle:
    """Arrays (X, y) from a `problem` data source (``dataset``, ``load``, ``randn``, ...), used whole
    for training and validation: a train block and a problem on the same source see the same data.

    The task is classification when y holds nonnegative integers, else regression (y as (n, 1));
    ``task = "regression"`` or ``"classification"`` overrides.
    """
    from regspec.compiler.data import SOURCES, SourceContext, call_source

    kwargs = dict(kwargs)
    task = kwargs.pop("task", None)
    if name not in SOURCES:
        raise error(f"unknown data source `{name}`")
    arrays = call_source(name, SourceContext(Path(base_dir), None), list(args), kwargs)
    if len(arrays) != 2:
        raise error(f"data {name}(...) gives {len(arrays)} arrays; a train block needs two (inputs, targets)")
    x_np, y_np = (np.asarray(a) for a in arrays)
    if len(x_np) != len(y_np):
        raise error(f"data {name}(...): {len(x_np)} inputs but {len(y_np)} targets")
    if task is None:
        integral = np.issubdtype(y_np.dtype, np.integer) or bool(np.all(y_np == np.round(y_np)))
        task = "classification" if integral and y_np.ndim == 1 and y_np.min() >= 0 else "regression"
    if task == "classification":
        y = torch.from_numpy(y_np.astype(np.int64))
        n_out = int(y.max()) + 1
    else:
        # regression targets keep float64 here; the trainer casts batches to its dtype
        y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float64).reshape(len(y_np), -1))
        n_out = int(y.shape[1])
    x = torch.from_numpy(np.ascontiguousarray(x_np, dtype=np.float64))
    size = min(full_batch(batch), len(x))

    def loader(epoch: int | None, shuffle: bool) -> TensorBatches:
        return TensorBatches(x, y, size, EpochSampler(len(x), seed, epoch, shuffle=shuffle))

    return DataBundle(train=loader(None, True), val=loader(0, False), in_features=int(np.prod(x.shape[1:])),
                      n_outputs=n_out, task=task, input_shape=tuple(x.shape[1:]), batch=size,
                      seed=int(seed), n_train=len(x), n_val=len(x),
                      tensors={"x_train": x, "y_train": y, "x_val": x, "y_val": y},
                      _epoch_loader=lambda e: loader(e, True))


class TensorBatches:
    """Batches ``(x[idx], y[idx])`` of in-memory tensors in the order of an ``EpochSampler``: the
    batches a DataLoader would give, without its per-row collation (which dominates tiny steps)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, sampler: EpochSampler):
        self.x, self.y, self.batch, self.sampler = x, y, int(batch), sampler

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        if self.batch >= len(order) and bool((order == torch.arange(len(order))).all()):
            yield self.x, self.y
            return
        for i in range(0, len(order), self.batch):
            idx = order[i: i + self.batch]
            yield self.x[idx], self.y[idx]


# ------------------------------------------------------------------ evaluation and metrics
@torch.no_grad()
def evaluate(module: nn.Module, loader: Iterable[Any], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             device: torch.device, dtype: torch.dtype, task: str | None) -> dict[str, float]:
    """Validation loss (task loss only, no penalties) and accuracy (classification) or MSE."""
    was = module.training
    module.eval()
    total, correct, sq, n = 0.0, 0, 0.0, 0
    for batch in loader:
        x, y = to_device(batch[0], batch[1], device, dtype)
        out = primary_tensor(module(x))   # a tuple / dict / ModelOutput: its logits or first tensor
        b = len(x)
        total += float(loss_fn(out, y)) * b
        if task == "classification" and out.dim() >= 3 and y.shape == out.shape[:-1]:
            # per position (a sequence of ids per row): each row counts its fraction of correct ids
            kept = (y != -100).flatten(1)
            hits = ((out.argmax(dim=-1) == y).flatten(1) & kept).sum(dim=1)
            correct += float((hits.double() / kept.sum(dim=1).clamp_min(1)).sum())
        elif task == "classification":
            correct += int((out.argmax(dim=1) == y.reshape(-1)).sum())
        else:
            sq += float((out.reshape(y.shape) - y).pow(2).mean()) * b if out.numel() == y.numel() else math.nan
        n += b
    module.train(was)
    if n == 0:
        return {}
    out_m = {"val_loss": total / n}
    out_m["val_acc" if task == "classification" else "val_mse"] = correct / n if task == "classification" else sq / n
    return out_m


class Meter:
    """Running mean of the training loss (kept on the device; one sync per epoch)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.n = 0

    def add(self, loss: torch.Tensor, count: int) -> None:
        self.total = self.total + loss.detach() * count
        self.n += count

    def mean(self) -> float:
        return float(self.total) / self.n if self.n else math.nan


def _clean(v: Any) -> Any:
    """JSON-ready: a non-finite float is null (a number or nothing, never the string "nan")."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


# ------------------------------------------------------------------ summaries
@torch.no_grad()
def tensor_stats(p: torch.Tensor) -> dict[str, Any]:
    """Exact-zero fraction, zero rows/cols of p.reshape(C_out, -1) (group sparsity), rank and
    spectral norm (the matrix view) of one tensor."""
    x = p.detach()
    out: dict[str, Any] = {"shape": list(x.shape), "zero_frac": float((x == 0).float().mean())}
    if x.dim() >= 2:
        w = x.reshape(x.shape[0], -1)
        out["zero_rows"] = float((w == 0).all(dim=1).float().mean())
        out["zero_cols"] = float((w == 0).all(dim=0).float().mean())
        s = torch.linalg.svdvals(w.float() if w.dtype not in (torch.float32, torch.float64) else w)
        tol = float(s.max()) * max(w.shape) * torch.finfo(s.dtype).eps if s.numel() else 0.0
        out["rank"] = int((s > tol).sum())
        out["spectral_norm"] = float(s.max()) if s.numel() else 0.0
    return out


def nm_pattern(p: torch.Tensor, n: int, m: int) -> dict[str, Any]:
    """Whether every block of ``m`` consecutive inputs of each row holds at most ``n`` nonzeros."""
    w = p.detach().reshape(p.shape[0], -1)
    cols = w.shape[1]
    pad = (-cols) % m
    nz = torch.nn.functional.pad((w != 0).float(), (0, pad)).reshape(w.shape[0], -1, m).sum(dim=-1)
    return {"n": n, "m": m, "max_nonzeros_per_block": int(nz.max()), "ok": bool((nz <= n).all())}


@torch.no_grad()
def act_sparsity(module: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Fraction of exact zeros in each tapped activation over the inputs ``x``."""
    was = module.training
    module.eval()
    module(x)
    module.train(was)
    taps = getattr(module, "taps", {})
    return {k: float((v == 0).float().mean()) for k, v in taps.items() if k.split("#", 1)[0] in set(names)}


def summarize(reg: Regularizer, metrics: dict[str, Any], initial: dict[str, float],
              x_val: torch.Tensor | None = None) -> dict[str, Any]:
    """The run's summary (see the module doc)."""
    named = dict(reg.module.named_parameters())
    final = reg.values()
    weights = reg.weights()
    tensors: dict[str, Any] = {}
    terms: list[dict[str, Any]] = []
    for p in reg.penalties:
        label = p.label or p.kind
        entry: dict[str, Any] = {"term": label, "lowering": "loss", "kind": p.kind, "weight": weights.get(label),
                                 "initial": initial.get(label), "final": final.get(label)}
        if p.params:
            entry["params"] = list(p.params)
            for n in p.params:
                tensors.setdefault(n, tensor_stats(named[n]))
        if p.acts:
            entry["acts"] = list(p.acts)
            if x_val is not None:
                entry["act_zero_frac"] = act_sparsity(reg.module, x_val, p.acts)
        terms.append(entry)
    t = reg.clock.t
    frozen = {(lab, n) for lab, n in reg.engine.frozen}
    for g in reg.engine.groups:
        label = g.label or g.kernel
        entry = {"term": label, "lowering": "projection" if g.is_projection else "prox", "kernel": g.kernel,
                 "metric": None if g.is_projection else g.metric, "weight": weights.get(label),
                 "params": list(g.params), "initial": initial.get(label), "final": final.get(label)}
        for n in g.params:
            tensors.setdefault(n, tensor_stats(named[n]))
        skipped = [n for n in g.params if (label, n) in frozen]
        if skipped:
            entry["frozen"] = skipped     # matched but requires_grad=False: never touched
        if g.is_projection:
            hyper = hyper_at(g.hyper, t)
            entry["set"] = {k: v for k, v in hyper.items() if not isinstance(v, torch.Tensor)}
            dist = {n: set_distance(g.kernel, named[n], hyper, g.matrix) for n in g.params if n not in skipped}
            entry["distance"] = dist
            # None when every matched tensor is frozen: nothing was constrained, nothing to claim
            entry["satisfied"] = None if not dist else all(
                d <= 1e-5 * (1.0 + float(torch.linalg.vector_norm(named[n].detach()))) for n, d in dist.items())
            if g.kernel == "nm_sparse":
                entry["nm"] = {n: nm_pattern(named[n], hyper["n"], hyper["m"]) for n in g.params}
        terms.append(entry)
    epochs = int(metrics["epoch"]) + 1 if isinstance(metrics.get("epoch"), int) else reg.clock.epoch
    return _clean({"metrics": metrics, "tensors": tensors, "terms": terms, "epochs": epochs,
                   "steps": reg.clock.step})


@torch.no_grad()
def selected_tensor_metrics(reg: Regularizer) -> dict[str, Any]:
    """Per epoch: exact-zero fraction, rank and spectral norm of every tensor a term selects
    (``tensor/<name>/<stat>``), so that curves show how the constraints shape the weights."""
    named = dict(reg.module.named_parameters())
    names = [n for p in reg.penalties for n in (p.params or ())]
    names += [n for g in reg.engine.groups for n in g.params]
    out: dict[str, Any] = {}
    for n in dict.fromkeys(names):
        if n in named:
            stats = tensor_stats(named[n])
            out.update({f"tensor/{n}/{k}": stats[k] for k in ("zero_frac", "rank", "spectral_norm") if k in stats})
    return out


# ------------------------------------------------------------------ the run folder
def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def existing_run(out: str | Path) -> list[str]:
    """The run files already in ``out`` (empty when it holds no run)."""
    folder = Path(out)
    if not folder.is_dir():
        return []
    found = [n for n in RUN_FILES if (folder / n).exists()]
    return found + sorted(p.name for p in folder.glob("params_rank*.pt"))


def require_checkpoint(path: Path) -> None:
    """``--resume`` needs the run's checkpoint (checked before anything is written)."""
    if not path.exists():
        raise error(f"cannot resume: no checkpoint at {path}", notes=["run without --resume to start fresh"])


def claim_output(out: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run in a folder that holds one, unless ``overwrite``; ``resume`` continues
    it. (A folder with only a trainer.py, or nothing, is free.)"""
    if resume and overwrite:
        raise error("--resume and --overwrite exclude each other: continue the run, or replace it")
    found = existing_run(out)
    if found and not resume and not overwrite:
        raise error(f"{out} already holds a run ({', '.join(found)}); refusing to overwrite it",
                    notes=["continue it with --resume, replace it with --overwrite, or choose another --out"])


def gate_warnings(reg: Regularizer, epochs: int, max_steps: int | None = None) -> list[str]:
    """One line per gated prox/projection whose gate never opens within ``epochs`` (and
    ``max_steps``): never applied during training (a constraint whose window is open at the end
    is still applied once, after the last step: ``When.never_opens``)."""
    spe = reg.clock.steps_per_epoch
    if not spe:
        return []
    total = epochs * spe if max_steps is None else min(epochs * spe, int(max_steps))
    out = []
    for g in reg.engine.groups:
        after = g.when.never_opens(total, spe, g.is_projection) if g.when is not None else None
        if after is not None:
            kind = "constraint" if g.is_projection else "prox term"
            out.append(f"{g.label or g.kernel}: the gate ({g.when}) never opens in this run ({epochs} epochs, "
                       f"{total} steps): the {kind} is never applied during training; {after}")
    return out


class Run:
    """The output folder of a run: metrics, progress, checkpoints and the summary.

    ``epochs`` (the run's total) is stored in checkpoints so that ``--resume`` with another
    total is refused unless ``change_epochs``; ``overwrite`` allows a fresh run over an existing
    one; ``model`` (``{"name", "kwargs", "rewrites"}``) is written as ``model.json`` beside
    ``model.pt`` so that ``load_trained`` can rebuild the trained network."""

    def __init__(self, out: str | Path, dist: Dist | None = None, *, fingerprint: str = "", quiet: bool = False,
                 checkpoint_every: int = 1, epochs: int | None = None, max_steps: int | None = None,
                 resume: bool | None = None, overwrite: bool = False, change_epochs: bool = False,
                 model: dict[str, Any] | None = None, spec: str | None = None, train: str | None = None):
        self.out = Path(out)
        self.checkpoint_every = int(checkpoint_every)
        self.dist = dist or Dist()
        self.fingerprint = fingerprint
        self.quiet = quiet or not self.dist.main
        self.epochs, self.max_steps = epochs, max_steps
        self.resume_requested, self.overwrite, self.change_epochs = resume, bool(overwrite), bool(change_epochs)
        self.model_recipe, self.spec, self.train = model, spec, train
        self.metrics_path = self.out / "metrics.jsonl"
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.summary_path = self.out / "summary.json"
        if resume is not None:
            claim_output(self.out, resume=resume, overwrite=self.overwrite)
        if resume:
            require_checkpoint(self.checkpoint_path)  # before the folder is made
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        self._t0 = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.saved_epoch: int | None = None      # last epoch whose checkpoint this process wrote or read
        self._curves_at = time.perf_counter()    # when curves.png was last drawn (or the run began)

    @classmethod
    def from_args(cls, args: argparse.Namespace, dist: Dist | None = None, *, fingerprint: str = "",
                  max_steps: int | None = None, model: dict[str, Any] | None = None, spec: str | None = None,
                  train: str | None = None) -> "Run":
        """A run folder from the trainer's options (``parse_args``)."""
        return cls(args.out, dist, fingerprint=fingerprint, quiet=args.quiet, checkpoint_every=args.checkpoint_every,
                   epochs=args.epochs, max_steps=max_steps, resume=args.resume,
                   overwrite=getattr(args, "overwrite", False), change_epochs=getattr(args, "change_epochs", False),
                   model=model, spec=spec, train=train)

    # ---- start
    def start(self, module: nn.Module, optimizer: torch.optim.Optimizer, reg: Regularizer) -> int:
        """Resume (``--resume``) or start fresh; returns the first epoch to train."""
        if self.resume_requested:
            return self.resume(module, optimizer, reg)
        return self.fresh(reg)

    def fresh(self, reg: Regularizer | None = None) -> int:
        """Start a new run: refuse an existing one unless ``overwrite`` (then its files go)."""
        claim_output(self.out, resume=False, overwrite=self.overwrite)
        barrier(self.dist)
        if self.dist.main:
            for name in existing_run(self.out):
                (self.out / name).unlink()
        if reg is not None:
            self._watch(reg)
        return 0

    def _watch(self, reg: Regularizer) -> None:
        """Name the last good checkpoint in non-finite errors; warn about gates that never open."""
        reg.nonfinite_notes.append(self._checkpoint_note)
        if self.epochs is not None:
            for line in gate_warnings(reg, self.epochs, self.max_steps):
                self.warn(line)

    def warn(self, line: str) -> None:
        """A warning printed now (even with --quiet) and kept in summary.json."""
        self.warnings.append(line)
        if self.dist.main:
            print(f"warning: {line}", file=sys.stderr, flush=True)

    def _checkpoint_note(self) -> str:
        if self.saved_epoch is not None:
            return (f"last good checkpoint: {self.checkpoint_path} (after epoch {self.saved_epoch + 1}); "
                    "no weights of the failed step were written")
        return f"no checkpoint of this run exists yet; nothing was written to {self.out}"

    def load_checkpoint(self) -> dict[str, Any]:
        """Read and validate the checkpoint; every failure is a RegspecError saying what to do."""
        path = self.checkpoint_path
        require_checkpoint(path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise error(f"cannot resume: {path} is corrupt or truncated ({type(exc).__name__}: {first[:160]})",
                        notes=["delete it and run without --resume to start over"]) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise error(f"cannot resume: {path} is not a regspec trainer checkpoint",
                        notes=["delete it and run without --resume to start over"])
        missing = [k for k in ("epoch", "model", "optimizer", "regularizer", "rng") if k not in state]
        if missing:
            raise error(f"cannot resume: {path} is incomplete (missing {', '.join(missing)})")
        if self.fingerprint and state.get("fingerprint") not in ("", self.fingerprint):
            raise error(f"cannot resume: {path} was written by a trainer for a different spec",
                        notes=["use a new --out folder, or delete the checkpoint"])
        for part in ("model", "optimizer", "regularizer"):
            if isinstance(state[part], dict):
                check_tensors_finite(state[part], f"cannot resume: {path} ({part} state)",
                                     notes=["the run that wrote it diverged; start over with --overwrite "
                                            "(and a smaller learning rate)"], allow_inf=part == "optimizer")
        return state

    def _start_epoch_of(self, state: dict[str, Any]) -> int:
        """The first epoch still to train, after checking the run's total against ``epochs``."""
        start = int(state["epoch"]) + 1
        total = state.get("epochs")
        if self.epochs is None:
            return start
        if total is not None and int(total) != self.epochs and not self.change_epochs:
            raise error(f"cannot resume: {self.checkpoint_path} belongs to a run of {int(total)} epochs, "
                        f"and --epochs is {self.epochs}",
                        notes=["schedules, epoch gates and the learning-rate schedule are laid out over the "
                               "run's total epochs; resuming under another total would change them mid-run",
                               f"resume with --epochs {int(total)}, or pass --change-epochs to continue under "
                               f"the new total (the epochs already trained keep the old schedules)"])
        if start > self.epochs:
            raise error(f"cannot resume: {self.checkpoint_path} is past the end of this run: it holds {start} "
                        f"trained epochs, --epochs is {self.epochs}",
                        notes=["a run cannot be shortened after the fact; use its model.pt, or start over "
                               "with --overwrite"])
        return start

    def resume(self, module: nn.Module, optimizer: torch.optim.Optimizer, reg: Regularizer) -> int:
        """Restore a run from ``checkpoint.pt``; returns the first epoch still to train."""
        state = self.load_checkpoint()
        start = self._start_epoch_of(state)
        try:
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            reg.load_state_dict(state["regularizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise error(f"cannot resume: {self.checkpoint_path} does not fit this model "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        _set_rng_state(state["rng"])
        self.saved_epoch = start - 1
        self.history = [json.loads(line) for line in state.get("metrics", [])]
        if self.dist.main:
            # keep the metric lines of the epochs the checkpoint covers (later ones are redone)
            lines = [json.dumps(m) for m in self.history if m.get("epoch", 0) < start]
            write_atomic(self.metrics_path, "".join(line + "\n" for line in lines))
        self._watch(reg)
        if self.epochs is not None and start >= self.epochs:
            # a finished run: nothing to train; its summary and model are written again (same values)
            self.warn(f"nothing to train: {self.checkpoint_path} already holds all {self.epochs} epochs; "
                      "writing the summary and model again (pass a larger --epochs with --change-epochs "
                      "to train further)")
        elif not self.quiet:
            print(f"resumed from {self.checkpoint_path} after epoch {start}", flush=True)
        return start

    # ---- during training
    def progress(self, iterable: Iterable[Any], epoch: int, epochs: int, total: int | None = None) -> Iterable[Any]:
        """A bar over the epoch's batches on a terminal (``regspec.progress``; not with --quiet,
        not when the output is piped); else the batches as they are."""
        from regspec.progress import bar, wanted

        if not wanted(self.quiet):
            return iterable
        return bar(iterable, total, f"epoch {epoch + 1}/{epochs}", unit="batch")

    def _check_weights(self, module: nn.Module, what: str) -> None:
        try:
            check_tensors_finite(module.state_dict(), what)
        except NonFiniteError as exc:
            raise exc.with_note(self._checkpoint_note()) from None

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, Any], reg: Regularizer, module: nn.Module,
                  optimizer: torch.optim.Optimizer, final: bool = False) -> dict[str, Any]:
        """Log the epoch (metrics.jsonl), print a progress line, and write the checkpoint atomically
        (every ``checkpoint_every`` epochs, and always when ``final``). Non-finite weights stop the
        run here, before anything is written."""
        self._check_weights(module, f"the weights after epoch {epoch + 1}")
        line: dict[str, Any] = {"epoch": epoch, **metrics}
        line.update({f"reg/{k}": v for k, v in reg.values().items()})
        line.update({f"weight/{k}": v for k, v in reg.weights().items()})
        line.update(selected_tensor_metrics(reg))
        line["seconds"] = round(time.perf_counter() - self._t0, 4)
        line = _clean(line)
        self.history.append(line)
        if self.dist.main:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            if final or (epoch + 1) % self.checkpoint_every == 0:
                self.save_checkpoint(epoch, module, optimizer, reg)
            stopped_early = final and self.epochs is not None and epoch + 1 < self.epochs   # --stop-after
            if stopped_early or (not final and time.perf_counter() - self._curves_at >= CURVES_EVERY_S):
                self._plot_curves(announce=False)   # (the finished run's are drawn by finish)
        if not self.quiet:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            print(f"epoch {epoch + 1}/{epochs}  {shown}  ({line['seconds']:.1f} s)", flush=True)
        barrier(self.dist)
        return line

    def save_checkpoint(self, epoch: int, module: nn.Module, optimizer: torch.optim.Optimizer,
                        reg: Regularizer) -> None:
        """Write ``checkpoint.pt`` atomically (a temporary file in the same folder, fsync,
        os.replace), after checking that the weights and the optimizer state are finite."""
        state = {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "epoch": int(epoch),
                 "epochs": self.epochs, "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                 "regularizer": reg.state_dict(), "rng": _rng_state(),
                 "metrics": [json.dumps(m) for m in self.history]}
        try:
            check_tensors_finite(state["model"], f"the weights after epoch {epoch + 1}")
            # an infinite second moment (a gradient over 1e19 squared) only zeroes that update;
            # a NaN would corrupt the next one
            check_tensors_finite(state["optimizer"], f"the optimizer state after epoch {epoch + 1}",
                                 allow_inf=True, names=optimizer_state_names(optimizer, module))
        except NonFiniteError as exc:
            raise exc.with_note(self._checkpoint_note()) from None
        write_atomic(self.checkpoint_path, lambda fh: torch.save(state, fh))
        self.saved_epoch = int(epoch)

    # ---- end
    def finish(self, reg: Regularizer, initial: dict[str, float], x_val: torch.Tensor | None = None) -> dict[str, Any]:
        """Write ``summary.json``, ``model.pt`` (the final weights, after the final projections)
        and ``model.json`` (rank 0) and, under torchrun, ``params_rank{r}.pt`` (every rank)."""
        self._check_weights(reg.module, "the final weights")
        metrics = {k: v for k, v in (self.history[-1] if self.history else {}).items()
                   if not k.startswith(("reg/", "weight/", "tensor/"))}
        summary = summarize(reg, metrics, initial, x_val)
        if self.warnings:
            summary["warnings"] = list(self.warnings)
        # reparametrizations merged in: a plain state_dict of the model as declared (reparam.py)
        params = {k: v.detach().cpu() for k, v in merged_state_dict(reg.module).items()}
        summary["trained"] = trained_summary(reg.module)
        if self.dist.main:
            summary.update(self._plot_curves())
            write_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")
            write_atomic(self.out / "model.pt", lambda fh: torch.save(params, fh))
            if self.model_recipe is not None:
                meta = {"format": MODEL_FORMAT, "spec": self.spec, "train": self.train,
                        "fingerprint": self.fingerprint, "dtype": _dtype_name(params), **self.model_recipe}
                write_atomic(self.out / "model.json", json.dumps(meta, indent=2) + "\n")
        if self.dist.active:
            torch.save(params, self.out / f"params_rank{self.dist.rank}.pt")
        if not self.quiet:
            print(f"wrote {self.summary_path}", flush=True)
        return summary

    def _plot_curves(self, announce: bool = True) -> dict[str, Any]:
        """Draw ``curves.png`` from the run's records; returns ``{"plots": [file names]}`` for
        ``summary.json`` (empty, with a note, when matplotlib is missing)."""
        from regspec import plots

        self._curves_at = time.perf_counter()
        if not plots.available():
            if announce and not self.quiet:
                print(plots.missing_note("training curves (curves.png)"), flush=True)
            return {}
        path = self.out / "curves.png"
        plots.training_curves(self.history, path, title=f"training curves: {self.out.name}")
        self._curves_at = time.perf_counter()
        if announce and not self.quiet:
            print(f"wrote {path}", flush=True)
        return {"plots": [path.name]}


def _dtype_name(params: dict[str, torch.Tensor]) -> str | None:
    for v in params.values():
        if v.is_floating_point():
            return str(v.dtype).removeprefix("torch.")
    return None


def load_trained(run_dir: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a run folder: the model rebuilt from ``model.json`` (the model call
    with its arguments, then each rewrite in order) with ``model.pt`` loaded (``weights_only``,
    strict). Its outputs are those of the network the run trained."""
    from .fx import rewrite_activations
    from .models import build_model

    folder = Path(run_dir)
    meta_path, weights_path = folder / "model.json", folder / "model.pt"
    for path in (meta_path, weights_path):
        if not path.exists():
            raise error(f"cannot load the trained model: no {path.name} in {folder}",
                        notes=["a finished run of `regspec train` (or a generated trainer) writes model.pt and "
                               "model.json; runs stopped early have only checkpoint.pt"])
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"cannot load the trained model: {meta_path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise error(f"cannot load the trained model: {meta_path} is not a regspec model description")
    try:
        state = torch.load(weights_path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is one user-facing error
        raise error(f"cannot load the trained model: {weights_path} is corrupt ({type(exc).__name__})") from None
    model = build_model(meta["name"], **meta.get("kwargs", {}))
    for rw in meta.get("rewrites", []):
        model, _ = rewrite_activations(model, rw["src"], rw["dst"], **rw.get("kwargs", {}))
    dtype = meta.get("dtype")
    if dtype in ("float32", "float64", "float16", "bfloat16"):
        model = model.to(getattr(torch, dtype))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise error(f"cannot load the trained model: {weights_path} does not fit the model of {meta_path} "
                    f"({str(exc).splitlines()[0][:200]})") from None
    return model.eval()


def guard(main: Callable[[], int]) -> int:
    """Run a trainer's ``main``: bad input (spec, data, checkpoint) is a message and exit 1, never a
    traceback; Ctrl-C is exit 130 (the last checkpoint stays valid)."""
    try:
        return main()
    except RegspecError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
