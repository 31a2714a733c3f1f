"""What is trained: starting weights (``init``), reparametrizations and frozen tensors.

Lowered with ``torch.nn.utils.parametrize`` (the forms are declared in
compiler/reparam_plan.py). A parametrized tensor ``<module>.<tensor>`` keeps its module's
attribute (``module.weight`` is the parametrized value), and its tensors are named the way
parametrize names them, which is how ``regspec plan`` prints them and how selectors match them:

- ``<module>.parametrizations.<tensor>.original``: the starting weight (frozen for ``low_rank``,
  ``subspace``; the frozen major part for ``svd_minor``); torch's own ``weight_norm`` keeps
  ``original0`` (g) and ``original1`` (v);
- ``<module>.parametrizations.<tensor>.0.<factor>``: the form's trained tensors, ``A`` and ``B``
  (low_rank), ``U``, ``S`` and ``V`` (svd_minor), ``z`` (subspace: one vector shared by every
  selected tensor; ``named_parameters`` lists it once, under the first).

So ``regularize l1(param("layers.0.parametrizations.weight.0.B"))`` or
``l1(param("**.weight.0.B"))`` penalise low-rank factors. Frozen tensors have
``requires_grad=False``: optimizers skip them and prox steps and projections leave them alone.

A tensor tied to the selected one under another name (GPT-2's ``lm_head.weight`` is
``transformer.wte.weight``) follows it (``Tied``): both modules read the reparametrized value.

``merged_state_dict`` folds every parametrization back into a plain state_dict of the model as
declared (what ``model.pt`` holds, so ``regspec.load_trained`` rebuilds the trained network).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from regspec.diagnostics import Span, error

from ._util import is_low_precision
from .selectors import match_names, parametrized_names, select_params

__all__ = ["WeightStep", "WeightsReport", "steps_from_plan", "apply_plan_weights", "apply_weights", "load_init",
           "merged_state_dict", "trained_summary", "LowRank", "SVDMinor", "SubspaceBlock", "fwht"]

DENSE_LIMIT = 2 ** 24   # entries of a dense P (64 MB in float32); a larger selection gets Fastfood blocks


# ------------------------------------------------------------------ the forms
class LowRank(nn.Module):
    """W = W0 + (alpha / r) B A on the (rows x rest) view of W; B starts at zero (LoRA)."""

    def __init__(self, shape: torch.Size, rank: int, alpha: float, dtype: torch.dtype, device: Any = None):
        super().__init__()
        m, n = shape[0], math.prod(shape[1:])
        self.scale = float(alpha) / rank
        self.A = nn.Parameter(torch.empty(rank, n, dtype=dtype, device=device))
        self.B = nn.Parameter(torch.zeros(m, rank, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))   # as nn.Linear initialises its weight

    def forward(self, w0: torch.Tensor) -> torch.Tensor:
        return w0 + (self.scale * (self.B @ self.A)).view(w0.shape)


class SVDMinor(nn.Module):
    """SoMA: W = W_major + U diag(S) V^T, where U, S, V start as the ``rank`` smallest singular
    triplets of the starting weight W0 and W_major = W0 - U diag(S) V^T (computed in float64)
    is the frozen ``original``: its singular subspace is W0's major one, and it never changes."""

    def __init__(self, w0: torch.Tensor, rank: int):
        super().__init__()
        mat = w0.detach().reshape(w0.shape[0], -1).double()
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        self.U = nn.Parameter(u[:, -rank:].to(w0.dtype).contiguous())
        self.S = nn.Parameter(s[-rank:].to(w0.dtype).contiguous())
        self.V = nn.Parameter(vh[-rank:, :].T.to(w0.dtype).contiguous())
        self._minor0 = ((u[:, -rank:] * s[-rank:]) @ vh[-rank:, :])   # float64, for right_inverse only

    def minor(self) -> torch.Tensor:
        return (self.U * self.S) @ self.V.T

    def forward(self, w_major: torch.Tensor) -> torch.Tensor:
        return w_major + self.minor().view(w_major.shape)

    @torch.no_grad()
    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        minor = self._minor0 if self._minor0 is not None else self.minor().double()
        self._minor0 = None  # registration only: later assignments use the current factors
        return (w.double() - minor.view(w.shape)).to(w.dtype)


def _hadamard(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    y = x
    while h < n:
        a, b = y.reshape(*lead, n // (2 * h), 2, h).unbind(-2)
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return y.reshape(x.shape)


class _FWHT(torch.autograd.Function):
    """H is symmetric, so the backward pass is the same transform (and no graph of the butterflies
    is kept: their index backward passes would cost more than the transform)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return _hadamard(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _FWHT.apply(grad)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """The unnormalised Walsh-Hadamard transform along the last dimension (a power of two)."""
    return _FWHT.apply(x)


class SubspaceBlock(nn.Module):
    """theta = theta0 + (P_i z).view(shape) for one tensor of a ``subspace`` selection: P_i is this
    tensor's block of rows of the projection P (D x d, D all selected entries), entries of variance
    1 / D so that P's columns have unit expected norm. Dense Gaussian, or Fastfood blocks
    S H G Pi H B / sqrt(D) (H Walsh-Hadamard of size L = 2^ceil(log2 d); B signs, Pi a
    permutation, G Gaussian, S chi_L / (sqrt(L) ||G||), so rows have Gaussian row-norm statistics).
    Every random number comes from numpy's PCG64 seeded with (seed, statement, tensor index): the
    same P on every machine, rebuilt (not stored) on load."""

    def __init__(self, z: nn.Parameter, numel: int, total: int, seed: int, index: int, kind: str,
                 statement: int = 0):
        super().__init__()
        self.z = z
        self.numel, self.kind = numel, kind
        d = z.numel()
        rng = np.random.default_rng([int(seed), int(statement), int(index)])
        scale = 1.0 / math.sqrt(total)
        if kind == "dense":
            self.register_buffer("P", torch.from_numpy(rng.standard_normal((numel, d)) * scale).to(z.dtype),
                                 persistent=False)
            return
        L = 1 << max(0, (d - 1).bit_length())
        blocks = -(-numel // L)
        g = rng.standard_normal((blocks, L))
        s = np.sqrt(rng.chisquare(L, (blocks, L))) / (math.sqrt(L) * np.linalg.norm(g, axis=1, keepdims=True))
        self.L = L
        for name, value in (("signs", rng.choice([-1.0, 1.0], (blocks, L))), ("G", g), ("S", s * scale)):
            self.register_buffer(name, torch.from_numpy(value).to(z.dtype), persistent=False)
        self.register_buffer("perm", torch.from_numpy(np.stack([rng.permutation(L) for _ in range(blocks)])),
                             persistent=False)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "dense":
            return self.P @ z
        x = nn.functional.pad(z, (0, self.L - z.numel())).expand_as(self.signs) * self.signs
        x = torch.gather(fwht(x), 1, self.perm) * self.G
        return (fwht(x) * self.S).reshape(-1)[: self.numel]

    def forward(self, theta0: torch.Tensor) -> torch.Tensor:
        return theta0 + self.project(self.z).view(theta0.shape)


# ------------------------------------------------------------------ steps
@dataclass
class WeightStep:
    """One ``reparametrize`` (``form`` set) or ``freeze`` statement, as the trainer spells it."""

    stmt: str
    pattern: str | None = None
    type: str | None = None
    form: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    span: Span | None = field(default=None, repr=False, compare=False)


@dataclass
class WeightsReport:
    """What ``apply_weights`` did, for ``regspec plan`` and the run's summary."""

    init: str | None = None                     # the file loaded
    steps: list[tuple[WeightStep, list[str], list[str]]] = field(default_factory=list)  # (step, matched, new)

    def lines(self, model: nn.Module) -> list[str]:
        """``regspec plan``'s lines: each statement, the tensors it matched, what now trains."""
        from regspec.compiler.reparam_plan import REPARAM_FORMS

        params = dict(model.named_parameters())
        out = [f"init       {self.init} (a state_dict, loaded with weights_only=True)"] if self.init else []
        for step, matched, new in self.steps:
            out.append(f"line {step.span.line if step.span else 0:<4} {step.text}")
            if step.form is None:
                out.append(f"           frozen    {', '.join(matched)}")
                continue
            out.append("           matches   " + ", ".join(f"{n} {_dims(params_shape(model, n))}" for n in matched))
            trained = [f"{n} {_dims(params[n].shape)}" for n in new if n in params and params[n].requires_grad]
            out.append("           trains    " + (", ".join(trained) or "nothing (frozen by a later statement)"))
            if step.form == "subspace":
                kinds = {_owner(model, n)[0].parametrizations[n.rpartition(".")[2]][0].kind for n in matched}
                total = sum(math.prod(params_shape(model, n)) for n in matched)
                out.append(f"           project   {'/'.join(sorted(kinds))} P ({total} x {step.options['dim']})")
            out.append(f"           as        {REPARAM_FORMS[step.form].math}")
        summary = trained_summary(model)
        out.append(f"trainable  {summary['trainable_parameters']:,} of {summary['model_parameters']:,} parameters "
                   f"of the model as declared; {len(summary['frozen'])} tensor(s) frozen")
        return out


    def to_json(self, model: nn.Module) -> dict[str, Any]:
        """The same facts as ``lines``, as data (``regspec plan --json``)."""
        params = dict(model.named_parameters())
        steps = []
        for step, matched, new in self.steps:
            entry: dict[str, Any] = {"line": step.span.line if step.span else None, "text": step.text,
                                     "statement": step.stmt, "form": step.form, "options": dict(step.options)}
            if step.form is None:
                entry["frozen"] = list(matched)
            else:
                entry["matches"] = [{"name": n, "shape": list(params_shape(model, n))} for n in matched]
                entry["trains"] = [{"name": n, "shape": list(params[n].shape)} for n in new
                                   if n in params and params[n].requires_grad]
            steps.append(entry)
        return {"init": self.init, "statements": steps, **trained_summary(model)}


def _dims(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def params_shape(model: nn.Module, name: str) -> torch.Size:
    owner, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, attr).shape


def steps_from_plan(plan: Any) -> list[WeightStep]:
    return [WeightStep(r.stmt, r.target.pattern, r.target.type, r.form, dict(r.options), r.text, r.span)
            for r in plan.reparams]


def apply_plan_weights(plan: Any, model: nn.Module, optimizer: Any = None) -> WeightsReport:
    """A TrainPlan's ``init``, ``reparametrize`` and ``freeze`` statements applied to ``model``."""
    init = getattr(plan, "init", None)
    return apply_weights(model, steps_from_plan(plan), init=init.path if init is not None else None,
                         base_dir=plan.base_dir, init_span=init.span if init is not None else None,
                         optimizer=optimizer)


def load_init(model: nn.Module, path: str | Path, *, base_dir: str | Path | None = None,
              span: Span | None = None) -> Path:
    """Load the state_dict file ``path`` (relative to ``base_dir``) into ``model`` (strict,
    ``weights_only=True``); a file that does not fit is a located error naming the keys."""
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.is_file():
        raise error(f"init: no file {p}", span, ["the path is relative to the spec's folder"])
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise error(f"init: cannot read {p} as a state_dict ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})", span) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict) and "format" in state:
        state = state["model"]   # a regspec checkpoint: its model part
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k, v in state.items() if isinstance(v, dict) and v
                 and all(isinstance(t, torch.Tensor) for t in v.values())] if isinstance(state, dict) else []
        notes = [f"it is a training checkpoint whose {', '.join(f'`{k}`' for k in inner[:3])} "
                 f"{'holds a state_dict' if len(inner) == 1 else 'hold state_dicts'}: save that part alone, "
                 f"e.g. torch.save(torch.load(f)[{inner[0]!r}], \"weights.pt\")"] if inner else []
        raise error(f"init: {p} does not hold a state_dict (a dict of tensor names to tensors)", span, notes)
    _check_fits(model.state_dict(), state, p, span)
    model.load_state_dict(state)
    return p


def _check_fits(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path, span: Span | None) -> None:
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if not (missing or extra or shapes):
        return
    notes = []
    for what, names in (("missing from the file", missing), ("not in the model", extra), ("shape mismatch", shapes)):
        if names:
            notes.append(f"{what} ({len(names)}): " + ", ".join(names[:6]) + (", ..." if len(names) > 6 else ""))
    notes.append(f"the model has {len(own)} tensors, the file {len(state)}")
    raise error(f"init: {path.name} does not fit the model", span, notes)


def apply_weights(model: nn.Module, steps: Sequence[WeightStep], *, init: str | Path | None = None,
                  base_dir: str | Path | None = None, init_span: Span | None = None,
                  optimizer: Any = None) -> WeightsReport:
    """Load ``init``, then apply the ``reparametrize`` / ``freeze`` steps in order (in place).
    With an ``optimizer`` instance, the new trainable tensors join it as a parameter group."""
    report = WeightsReport()
    if init is not None:
        report.init = str(load_init(model, init, base_dir=base_dir, span=init_span))
    before = {id(p) for p in model.parameters()}
    subspace_index = 0
    for step in steps:
        if step.form is None:
            hits = select_params(model, step.pattern, step.type, span=step.span)
            for _, p in hits:
                p.requires_grad_(False)
            report.steps.append((step, [n for n, _ in hits], []))
            continue
        names = _targets(model, step)
        known = {n for n, _ in model.named_parameters()}
        ties = _aliases_of(model)
        if step.form == "subspace":
            _apply_subspace(model, names, step, subspace_index)
            subspace_index += 1
        else:
            for name in names:
                _apply_matrix_form(model, name, step)
        for name in names:
            for alias in ties.get(name, []):
                _follow(model, alias, name)
        new = [n for n, _ in model.named_parameters() if n not in known]
        report.steps.append((step, names, new))
    if optimizer is not None and not isinstance(optimizer, str):
        fresh = [p for p in model.parameters() if id(p) not in before and p.requires_grad]
        if fresh:
            optimizer.add_param_group({"params": fresh})
    return report


class Tied(nn.Module):
    """The parametrization of a tensor tied to another module's (GPT-2's ``lm_head.weight`` is
    ``transformer.wte.weight``): its value is the reparametrized value of the tensor it is tied
    to, so the tie holds (one low-rank update, seen by both modules). The owner is kept outside
    the module tree (no second registration of its tensors)."""

    def __init__(self, owner: nn.Module, attr: str, name: str):
        super().__init__()
        object.__setattr__(self, "owner", owner)
        self.attr = attr
        self.tied_to = name

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return getattr(self.owner, self.attr)


def _aliases_of(model: nn.Module) -> dict[str, list[str]]:
    """``{name: [alias, ...]}`` of the tensors registered under several names (tied weights)."""
    from .selectors import tied_aliases

    out: dict[str, list[str]] = {}
    for alias, name in tied_aliases(model).items():
        out.setdefault(name, []).append(alias)
    return out


def _follow(model: nn.Module, alias: str, name: str) -> None:
    """Make ``alias`` (a second name of the tensor ``name``) read ``name``'s parametrized value;
    the tensor it held, no longer read, is frozen."""
    module, attr = _owner(model, alias)
    owner, owner_attr = _owner(model, name)
    if module is owner and attr == owner_attr:
        return   # one module registered at several places (a layer shared ALBERT-style): already done
    parametrize.register_parametrization(module, attr, Tied(owner, owner_attr, name))
    original = module.parametrizations[attr].original
    if all(original is not p for p in owner.parametrizations[owner_attr].parameters()):
        original.requires_grad_(False)   # replaced by the form's own tensors (weight_norm's original0/1)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, attr = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), attr


def _targets(model: nn.Module, step: WeightStep) -> list[str]:
    """The plain tensors the step reparametrizes (checked: not yet parametrized, matrices for
    matrix forms, a rank that fits)."""
    from regspec.compiler.reparam_plan import REPARAM_FORMS

    if step.pattern is not None:
        done = match_names(parametrized_names(model), step.pattern, step.span)
        if done:
            raise error(f"{', '.join(done[:4])} {'is' if len(done) == 1 else 'are'} already reparametrized by an "
                        "earlier statement; a tensor takes one reparametrization", step.span,
                        ["select the tensors of that reparametrization by their names, e.g. "
                         f"{done[0].rpartition('.')[0] + '.' if '.' in done[0] else ''}parametrizations."
                         f"{done[0].rpartition('.')[2]}.0.*"])
    hits = select_params(model, step.pattern, step.type, span=step.span)
    plain = [(n, p) for n, p in hits if ".parametrizations." not in f".{n}"]
    if not plain:
        raise error("every tensor the selector matches belongs to an earlier reparametrization", step.span,
                    [f"matched: {', '.join(n for n, _ in hits[:6])}", "a tensor takes one reparametrization"])
    entry = REPARAM_FORMS[step.form or ""]
    if entry.matrix:
        vectors = [f"{n} {tuple(p.shape)}" for n, p in plain if p.dim() < 2]
        if vectors:
            matrices = [n for n, p in plain if p.dim() >= 2]
            raise error(f"`{step.form}` needs matrices, and the selector matches "
                        + ("no matrix" if not matrices else f"{len(vectors)} tensor(s) that are not"), step.span,
                        [f"matched: {', '.join(vectors[:6])}" + (", ..." if len(vectors) > 6 else ""),
                         'select weights only, e.g. param("**.weight") or param(type = Linear)'])
        if step.form == "orthogonal":
            deep = [f"{n} {tuple(p.shape)}" for n, p in plain if p.dim() > 2]
            if deep:
                raise error("`orthogonal` takes 2-D weights (torch's orthogonal reads more dimensions as a batch "
                            f"of small matrices, not as rows x rest): {', '.join(deep[:4])}", step.span)
            low = [f"{n} ({str(p.dtype).removeprefix('torch.')})" for n, p in plain if is_low_precision(p)]
            if low:   # torch's orthogonal runs a QR (or matrix_exp) in the weight's dtype
                raise error("`orthogonal` needs float32 or float64 weights: torch's orthogonal parametrization has "
                            f"no bfloat16/float16 kernel (its QR): {', '.join(low[:4])}", step.span,
                            ["keep these layers in float32 (module.float()), or constrain them instead: "
                             "`constrain SELECTOR in stiefel` projects in float32"])
        rank = step.options.get("rank")
        if rank is not None:
            for n, p in plain:
                m, k = p.shape[0], math.prod(p.shape[1:])
                if rank > min(m, k):
                    raise error(f"`{step.form}` rank {rank} is larger than {n} allows: it is a {m} x {k} matrix "
                                f"(rank at most {min(m, k)})", step.span)
    return [n for n, _ in plain]


def _apply_matrix_form(model: nn.Module, name: str, step: WeightStep) -> None:
    module, attr = _owner(model, name)
    w = getattr(module, attr)
    opts = step.options
    if step.form == "low_rank":
        parametrize.register_parametrization(module, attr, LowRank(w.shape, opts["rank"], opts["alpha"], w.dtype,
                                                                   w.device))
        module.parametrizations[attr].original.requires_grad_(False)
    elif step.form == "svd_minor":
        parametrize.register_parametrization(module, attr, SVDMinor(w, opts["rank"]))
        module.parametrizations[attr].original.requires_grad_(False)
    elif step.form == "weight_norm":
        torch.nn.utils.parametrizations.weight_norm(module, attr, dim=opts.get("dim", 0))
    elif step.form == "orthogonal":
        torch.nn.utils.parametrizations.orthogonal(module, attr)
    elif step.form == "spectral_norm":
        torch.nn.utils.parametrizations.spectral_norm(module, attr, n_power_iterations=opts["n_power_iterations"])
    else:  # the plan only lets declared forms through
        raise error(f"reparametrization `{step.form}` has no torch lowering", step.span)


def _apply_subspace(model: nn.Module, names: list[str], step: WeightStep, index: int) -> None:
    tensors = [getattr(*_owner(model, n)) for n in names]
    dim, seed, kind = step.options["dim"], step.options["seed"], step.options["projection"]
    total = sum(t.numel() for t in tensors)
    how = kind if kind != "auto" else ("dense" if total * dim <= DENSE_LIMIT else "fastfood")
    z = nn.Parameter(torch.zeros(dim, dtype=tensors[0].dtype, device=tensors[0].device))
    for i, (name, t) in enumerate(zip(names, tensors)):
        module, attr = _owner(model, name)
        block = SubspaceBlock(z, t.numel(), total, seed, i, how, statement=index)
        parametrize.register_parametrization(module, attr, block.to(t.device))
        module.parametrizations[attr].original.requires_grad_(False)


# ------------------------------------------------------------------ saving and reporting
@torch.no_grad()
def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A plain state_dict of the model as declared: every parametrized tensor replaced by its
    value (``module.weight``), the parametrizations' own tensors dropped. Unchanged (the module's
    state_dict) when nothing is parametrized."""
    state = module.state_dict()
    merged: dict[str, torch.Tensor] = {}
    values: dict[tuple[int, str], torch.Tensor] = {}   # one value per tensor: a tied name shares it
    for mname, m in module.named_modules(remove_duplicate=False):   # a shared layer: every place it is
        if parametrize.is_parametrized(m):
            prefix = f"{mname}." if mname else ""
            for attr in m.parametrizations:
                first = m.parametrizations[attr][0]
                key = (id(first.owner), first.attr) if isinstance(first, Tied) else (id(m), attr)
                if key not in values:
                    values[key] = (getattr(first.owner, first.attr) if isinstance(first, Tied)
                                   else getattr(m, attr)).detach().clone()
                merged[f"{prefix}parametrizations.{attr}"] = values[key]
    if not merged:
        return state
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head = next((h for h in merged if key.startswith(h + ".")), None)
        if head is None:
            out[key] = value
            continue
        plain = head.replace(".parametrizations.", ".").removeprefix("parametrizations.")
        if plain not in out:
            out[plain] = merged[head]
    return out


def trained_summary(module: nn.Module) -> dict[str, Any]:
    """Which tensors the run trains and how many scalars that is, against the size of the model
    as declared (its merged parameters, buffers not counted)."""
    named = list(module.named_parameters())
    trained = {n: p.numel() for n, p in named if p.requires_grad}
    buffers = {n for n, _ in module.named_buffers()}
    # a tied tensor (GPT-2's lm_head.weight is transformer.wte.weight) has two keys and one storage
    unique = {(v.data_ptr(), tuple(v.shape), v.stride()): v.numel()
              for k, v in merged_state_dict(module).items() if k not in buffers}
    total = sum(unique.values())
    return {"trainable_parameters": sum(trained.values()), "model_parameters": total,
            "trained": trained, "frozen": [n for n, p in named if not p.requires_grad]}
