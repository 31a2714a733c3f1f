"""The catalogue is complete: every atom and set declares its math and both lowerings, or says in
``lacks`` which backend it lacks and why; every prox and projection names a real torch kernel,
with hyperparameters the kernel accepts. Importing the catalogue imports neither torch nor cvxpy."""
from __future__ import annotations

import subprocess
import sys

import pytest

from regspec.compiler.catalogue import ATOMS, SETS
from regspec.compiler.catalogue.base import Atom, Curvature, SetEntry

BACKENDS = ("cvxpy", "torch")


def _overrides(cls: type, name: str, base: type) -> bool:
    return getattr(cls, name) is not getattr(base, name)


def _declares(cls: type, attr: str, base: type) -> bool:
    """Some class between ``cls`` and ``base`` (exclusive) sets ``attr`` in its own body."""
    return any(attr in vars(k) for k in cls.__mro__ if k is not base and issubclass(k, base))


@pytest.mark.parametrize("name", sorted(ATOMS))
def test_atom_is_complete(name):
    atom = ATOMS[name]
    cls = type(atom)
    problems = []
    if atom.constant_only:
        # compile-time builders (rows, cols, same, compare) are folded by numpy before any backend
        if not _overrides(cls, "numpy", Atom):
            problems.append("a compile-time atom needs its numpy evaluation")
    elif not _overrides(cls, "shape", Atom):
        problems.append("no shape rule")
    if not (_declares(cls, "curvature", Atom) or _overrides(cls, "dcp", Atom)):
        problems.append("no curvature")
    if not atom.doc:
        problems.append("no doc line")
    for backend in BACKENDS:
        has = _overrides(cls, backend, Atom)
        lacks = atom.lacks.get(backend)
        if not has and not lacks:
            problems.append(f"no {backend} lowering and no `lacks['{backend}']` saying why")
        if lacks is not None and not lacks.strip():
            problems.append(f"`lacks['{backend}']` gives no reason")
    if atom.curvature is Curvature.UNKNOWN and not (_overrides(cls, "dcp", Atom) and atom.lacks.get("cvxpy")):
        # a nonconvex training term (orthogonality) says why in its dcp rule and lacks CVXPY
        problems.append("curvature UNKNOWN without a dcp rule saying why and `lacks['cvxpy']`")
    assert not problems, f"{name}: " + "; ".join(problems)


TRAIN_ATOMS = sorted(name for name, atom in ATOMS.items() if atom.train is not None)


@pytest.mark.parametrize("name", TRAIN_ATOMS)
def test_training_use_is_complete(name):
    """An atom's direct training use names an evaluation the training runtime has, for the
    selector kinds it takes; its options are the atom's own keywords; a separable use has a
    kernel whose per-coordinate (Adam-metric) step is exact."""
    from regspec.backends.torch.train.proxstep import ADAPTIVE_KERNELS
    from regspec.backends.torch.train.regularizer import ACT_KINDS, OUTPUT_KINDS, PARAM_KINDS

    atom = ATOMS[name]
    use = atom.train
    problems = []
    runtime = {"param": (*PARAM_KINDS, "weight_decay"), "act": ACT_KINDS, "output": (*ACT_KINDS, *OUTPUT_KINDS)}
    for target in use.targets:
        if target not in runtime:
            problems.append(f"unknown target kind `{target}`")
        elif use.kind not in runtime[target]:
            problems.append(f"the training runtime has no `{use.kind}` evaluation on {target} tensors")
    unknown = [k for k, _ in use.options if k not in atom.static]
    if unknown:
        problems.append(f"options {unknown} are not keywords of the atom")
    if use.separable and (atom.prox is None or atom.prox.kernel not in ADAPTIVE_KERNELS):
        problems.append("separable, but its prox kernel is not an entrywise kernel")
    if use.default == "prox" and atom.prox is None:
        problems.append("lowered as a prox by default, but has no prox")
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", sorted(SETS))
def test_set_training_declarations_are_consistent(name):
    """`constrain` reads a set's argument spellings, count arguments and shrink families from
    the catalogue: they must name real arguments and known families."""
    entry = SETS[name]
    problems = [f"alias {a} -> {t}: no argument {t}" for a, t in entry.arg_aliases.items() if t not in entry.static]
    problems += [f"count argument {a} is not an argument" for a in entry.integer_args if a not in entry.static]
    problems += [f"unknown shrink family {f}" for f in entry.shrinks if f not in ("entries", "spectrum")]
    if entry.shrinks and not entry.convex and name != "top_k" and name != "nm_sparse" and name != "low_rank":
        problems.append("a shrink family for a nonconvex set that does not only shrink")
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", sorted(SETS))
def test_set_is_complete(name):
    entry = SETS[name]
    cls = type(entry)
    problems = []
    if not entry.doc:
        problems.append("no doc line")
    if not _overrides(cls, "cvxpy", SetEntry) and "cvxpy" not in entry.lacks:
        problems.append("no CVXPY lowering and no `lacks['cvxpy']`")
    if entry.projection is None and "torch" not in entry.lacks:
        problems.append("no projection kernel and no `lacks['torch']`")
    if not entry.convex and "cvxpy" not in entry.lacks:
        problems.append("a nonconvex set must say it lacks CVXPY")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_prox_and_projection_kernels_exist_with_their_hyperparameters():
    from regspec.backends.torch.prox import KERNELS

    bad = []
    for name, atom in ATOMS.items():
        if atom.prox is None:
            continue
        kernel = KERNELS.get(atom.prox.kernel)
        if kernel is None:
            bad.append(f"atom {name}: no kernel `{atom.prox.kernel}`")
            continue
        for hyper_name, kw_name in atom.prox.hyper:
            if hyper_name not in kernel.hyper:
                bad.append(f"atom {name}: kernel {kernel.name} has no hyperparameter `{hyper_name}`")
            if kw_name not in atom.static and kw_name not in atom.tensor_kwargs:
                bad.append(f"atom {name}: `{kw_name}` is not one of its keywords")
        if kernel.kind != "prox":
            bad.append(f"atom {name}: `{kernel.name}` is a projection, not a prox")
    for name, entry in SETS.items():
        if entry.projection is None:
            continue
        kernel = KERNELS.get(entry.projection)
        if kernel is None:
            bad.append(f"set {name}: no kernel `{entry.projection}`")
            continue
        if kernel.kind != "projection":
            bad.append(f"set {name}: `{kernel.name}` is not a projection")
        if kernel.convex != entry.convex:
            bad.append(f"set {name}: convex={entry.convex} but kernel {kernel.name} says convex={kernel.convex}")
        static = {**entry.static, **{k: 1 for k, v in entry.static.items() if v is None}}
        try:
            hyper = entry.kernel_hyper(static)
        except Exception:  # sets whose hyperparameters need arrays (transport) are checked by name
            hyper = {k: None for k in entry.static}
        unknown = set(hyper) - set(kernel.hyper)
        if unknown:
            bad.append(f"set {name}: kernel {kernel.name} has no hyperparameters {sorted(unknown)}")
    assert not bad, "\n".join(bad)


def test_requested_entries_are_present():
    atoms = """norm1 norm2 norm_inf sum_squares quad_form huber logistic log_sum_exp entropy kl_div sum mean max
    min abs pos group_norm group_l2 norm_21 sum_of_norms class_group_l2 tv nuclear_norm spectral_norm
    lambda_max lambda_min lambda_sum_largest log_det trace diag reshape vec hstack vstack inner exp log
    elastic_net same rows cols""".split()
    sets = "nonneg box simplex l1_ball l2_ball linf_ball psd spectral_ball nuclear_ball transport top_k " \
           "nm_sparse low_rank sphere".split()
    assert not [a for a in atoms if a not in ATOMS]
    assert not [s for s in sets if s not in SETS]
    assert all(not SETS[s].convex for s in ("top_k", "nm_sparse", "low_rank", "sphere"))


def test_catalogue_import_is_lazy():
    """`regspec check` must not import torch or cvxpy: the catalogue imports them inside methods."""
    code = ("import sys, regspec.compiler.catalogue, regspec.compiler.pipeline, regspec.compiler.data; "
            "print(' '.join(m for m in ('torch', 'cvxpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
