"""Fused multi-tensor application vs the per-tensor loop, exact zeros, the registry, and CUDA."""

from __future__ import annotations

import inspect

import pytest
import torch
from regspec.backends.torch import fused
from regspec.backends.torch.fused import apply_prox_group, apply_prox_loop
from regspec.backends.torch.prox import KERNELS, Kernel, blocks, get_kernel

DTYPES = (torch.float32, torch.float64)

# a small MLP/CNN-like parameter list: repeated shapes (stacked together), odd ones (run alone)
SHAPES = [(8, 5), (8, 5), (8, 5), (16,), (4, 3, 3, 3), (4, 3, 3, 3), (6, 10), (1,), (16,)]
MATRIX_SHAPES = [(6, 4), (6, 4), (6, 4), (3, 5), (2, 4, 4), (5, 5)]
SQUARE_SHAPES = [(4, 4), (4, 4), (3, 3), (2, 5, 5)]


def make_tensors(shapes, dtype, seed=0, zero_fraction=0.3):
    """Random tensors with a fraction of exact zeros (which shrinkage kernels must keep exactly)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for shape in shapes:
        x = torch.randn(shape, generator=generator, dtype=dtype) * 2
        x[torch.rand(shape, generator=generator) < zero_fraction] = 0.0
        if len(shape) >= 2:
            x.reshape(shape[0], -1)[0] = 0.0  # one whole zero row / filter
        tensors.append(x)
    return tensors


def run_both(name, tensors, steps, **hyper):
    fused_tensors = [t.clone() for t in tensors]
    loop_tensors = [t.clone() for t in tensors]
    apply_prox_group(name, fused_tensors, steps, **hyper)
    apply_prox_loop(name, loop_tensors, steps, **hyper)
    return fused_tensors, loop_tensors


STEPS = [0.3, 0.05, 1.2, 0.7, 0.2, 0.9, 0.4, 2.0, 0.1]

# (name, hyper, shapes): pointwise kernels use the same elementwise ops as the loop -> bitwise equal
POINTWISE_CASES = [
    ("l1", dict(lam=0.8)),
    ("l1_nonneg", dict(lam=0.5)),
    ("l2sq", dict(lam=0.1)),
    ("sum_squares", dict(lam=0.3)),
    ("elastic_net", dict(lam_l1=0.6, lam_l2=0.2)),
    ("huber", dict(M=0.5, lam=0.7)),
    ("nonneg", dict()),
    ("box", dict(lo=-0.5, hi=1.0)),
    ("box", dict(lo=None, hi=0.0)),  # nonpos
    ("linf_ball", dict(radius=0.6)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POINTWISE_CASES, ids=[c[0] for c in POINTWISE_CASES])
@pytest.mark.parametrize("per_tensor_steps", [False, True])
def test_pointwise_fused_equals_loop_bitwise(dtype, case, per_tensor_steps):
    name, hyper = case
    tensors = make_tensors(SHAPES, dtype)
    steps = STEPS if per_tensor_steps else 0.4
    fused_out, loop_out = run_both(name, tensors, steps, **hyper)
    for fused_x, loop_x in zip(fused_out, loop_out):
        assert torch.equal(fused_x, loop_x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_per_tensor_tensor_hyper(dtype):
    tensors = make_tensors(SHAPES, dtype, seed=1)
    generator = torch.Generator().manual_seed(2)
    others = [torch.rand(t.shape, generator=generator, dtype=dtype) for t in tensors]
    cases = [
        ("l1", dict(lam=0.5, weight=others)),
        ("l1_nonneg", dict(weight=others)),
        ("anchor_l2", dict(anchor=others, lam=0.8)),
        ("anchor_l2", dict(anchor=others, lam=0.8, fisher=[o * 3 for o in others])),
        ("box", dict(lo=[-o for o in others], hi=others)),
    ]
    for name, hyper in cases:
        fused_out, loop_out = run_both(name, tensors, STEPS, **hyper)
        for fused_x, loop_x in zip(fused_out, loop_out):
            assert torch.equal(fused_x, loop_x), name


def tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)


GROUP_CASES = [
    ("group_l2", dict(lam=0.5, groups="rows")),
    ("group_l2", dict(lam=0.5, groups="channels")),
    ("group_l2", dict(lam=0.5, groups="cols")),
    ("group_l2", dict(lam=0.5, groups="all")),
    ("group_l2", dict(lam=0.3, groups=blocks(2, 2))),
    ("l2", dict(lam=0.9)),
    ("linf", dict(lam=0.4)),
    ("l2_ball", dict(radius=1.5)),
    ("l1_ball", dict(radius=2.0)),
    ("l1_ball", dict(radius=1.0, dim=-1)),
    ("simplex", dict(radius=1.0)),
    ("simplex", dict(radius=2.0, dim=None)),
    ("sphere", dict(radius=2.0)),
    ("top_k", dict(k=3)),
    ("top_k", dict(k=1, dim=0)),
    ("nm_sparse", dict(n=1, m=2, dim=0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GROUP_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(GROUP_CASES)])
def test_stacked_fused_equals_loop(dtype, case):
    name, hyper = case
    tensors = make_tensors(SHAPES, dtype, seed=3)
    fused_out, loop_out = run_both(name, tensors, STEPS, **hyper)
    for fused_x, loop_x in zip(fused_out, loop_out):
        torch.testing.assert_close(fused_x, loop_x, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_l2_labels_fused(dtype):
    tensors = make_tensors([(6, 4), (6, 4), (6, 4), (6,)], dtype, seed=4)
    row_labels = torch.tensor([0, 1, 0, 2, 1, 2])
    for hyper in (
        dict(groups=row_labels, lam=0.6),
        dict(groups=row_labels, lam=[0.1, 0.5, 0.9, 0.3], num_groups=3),
        # per-tensor labels: different label objects never share a stack
        dict(groups=[row_labels, row_labels.flip(0), row_labels, row_labels], lam=0.4),
    ):
        fused_out, loop_out = run_both("group_l2", tensors, [0.5, 1.0, 0.2, 0.7], **hyper)
        for fused_x, loop_x in zip(fused_out, loop_out):
            torch.testing.assert_close(fused_x, loop_x, **tolerance(dtype))


SPECTRAL_CASES = [
    ("nuclear", dict(lam=0.6), MATRIX_SHAPES),
    ("spectral_norm", dict(lam=0.6), MATRIX_SHAPES),
    ("spectral_ball", dict(radius=1.0), MATRIX_SHAPES),
    ("nuclear_ball", dict(radius=2.0), MATRIX_SHAPES),
    ("low_rank", dict(k=2), MATRIX_SHAPES),
    ("stiefel", dict(), MATRIX_SHAPES),
    ("psd", dict(), SQUARE_SHAPES),
    ("neg_log_det", dict(lam=0.5), SQUARE_SHAPES),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPECTRAL_CASES, ids=[c[0] for c in SPECTRAL_CASES])
def test_spectral_fused_equals_loop(dtype, case):
    name, hyper, shapes = case
    tensors = make_tensors(shapes, dtype, seed=5, zero_fraction=0.0)
    steps = [0.3, 0.8, 1.5, 0.2, 0.6, 1.0][: len(shapes)]
    fused_out, loop_out = run_both(name, tensors, steps, **hyper)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-11)
    for fused_x, loop_x in zip(fused_out, loop_out):
        torch.testing.assert_close(fused_x, loop_x, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_zeros_stay_zero(dtype):
    tensors = make_tensors(SHAPES, dtype, seed=6, zero_fraction=0.5)
    zero_before = [t == 0 for t in tensors]
    for name, hyper in [
        ("l1", dict(lam=0.3)),
        ("elastic_net", dict(lam_l1=0.3, lam_l2=0.1)),
        ("group_l2", dict(lam=0.3)),
    ]:
        out = [t.clone() for t in tensors]
        apply_prox_group(name, out, 0.5, **hyper)
        for before, after in zip(zero_before, out):
            assert (after[before] == 0).all(), name
    # soft thresholding sets |x| <= tau to exactly zero, and keeps the rest exactly x - tau*sign(x)
    out = [t.clone() for t in tensors]
    apply_prox_group("l1", out, 0.5, lam=1.0)
    for x, y in zip(tensors, out):
        small = x.abs() <= 0.5
        assert (y[small] == 0).all()
        assert torch.equal(y[~small], x[~small] - 0.5 * torch.sign(x[~small]))
    # a zero row stays a zero row under the block soft threshold (no 0/0)
    out = [t.clone() for t in tensors]
    apply_prox_group("group_l2", out, 0.0, groups="rows")
    for x, y in zip(tensors, out):
        assert not y.isnan().any()
        assert torch.equal(x, y)  # zero threshold: factor exactly 1


def test_fusable_kernels_do_not_fall_back_to_the_loop(monkeypatch):
    def no_loop(*args, **kwargs):
        raise AssertionError("fell back to the per-tensor loop")

    monkeypatch.setattr(fused, "apply_prox_loop", no_loop)
    for name, hyper in POINTWISE_CASES + GROUP_CASES:
        apply_prox_group(name, make_tensors(SHAPES, torch.float32), STEPS, **hyper)
    for name, hyper, shapes in SPECTRAL_CASES:
        apply_prox_group(name, make_tensors(shapes, torch.float64, zero_fraction=0.0), 0.5, **hyper)
    others = make_tensors(SHAPES, torch.float32, seed=11)
    apply_prox_group("anchor_l2", make_tensors(SHAPES, torch.float32), STEPS, anchor=others, fisher=others)


def test_in_place_on_parameters_with_grad():
    layer = torch.nn.Linear(5, 4)
    weight_before = layer.weight.detach().clone()
    apply_prox_group("l1", [layer.weight, layer.bias], [0.1, 0.1], lam=1.0)
    expected = weight_before - weight_before.clamp(-0.1, 0.1)
    assert torch.equal(layer.weight.detach(), expected)
    assert layer.weight.requires_grad and layer.weight.grad_fn is None


def test_large_tensors_skip_the_stack(monkeypatch):
    monkeypatch.setitem(fused.STACK_MAX_NUMEL, "cpu", 10)
    tensors = make_tensors(SHAPES, torch.float64, seed=7)
    fused_out, loop_out = run_both("group_l2", tensors, STEPS, lam=0.5)
    for fused_x, loop_x in zip(fused_out, loop_out):
        torch.testing.assert_close(fused_x, loop_x, **tolerance(torch.float64))


def test_tensor_steps_and_unfusable_kernels_use_the_loop():
    tensors = make_tensors(SHAPES, torch.float64, seed=8)
    steps = [torch.full(t.shape, 0.3, dtype=torch.float64) for t in tensors]  # per-entry (Adam-style) steps
    fused_out, loop_out = run_both("l1", tensors, steps, lam=1.0)
    for fused_x, loop_x in zip(fused_out, loop_out):
        assert torch.equal(fused_x, loop_x)
    a_matrix = torch.randn(2, 10, dtype=torch.float64)
    vectors = [torch.randn(10, dtype=torch.float64) for _ in range(3)]
    fused_out, loop_out = run_both("affine", vectors, 1.0, A=a_matrix, b=torch.ones(2, dtype=torch.float64))
    for fused_x, loop_x in zip(fused_out, loop_out):
        assert torch.equal(fused_x, loop_x)
        torch.testing.assert_close(a_matrix @ fused_x, torch.ones(2, dtype=torch.float64))


def test_tensor_hyper_of_another_dtype_is_cast_to_x():
    tensors = make_tensors(SHAPES, torch.float32, seed=12)
    weights = [torch.rand(t.shape, dtype=torch.float64) for t in tensors]  # float64 weights, float32 x
    fused_out, loop_out = run_both("l1", tensors, 0.3, weight=weights)
    for fused_x, loop_x in zip(fused_out, loop_out):
        assert fused_x.dtype == torch.float32
        assert torch.equal(fused_x, loop_x)
    bounds = [torch.full(t.shape, 0.5, dtype=torch.float64) for t in tensors]
    fused_out, loop_out = run_both("box", tensors, 1.0, lo=-0.1, hi=bounds)
    for fused_x, loop_x in zip(fused_out, loop_out):
        assert torch.equal(fused_x, loop_x) and fused_x.max() <= 0.5


def test_argument_errors():
    tensors = make_tensors(SHAPES[:2], torch.float64)
    with pytest.raises(ValueError, match="steps"):
        apply_prox_group("l1", tensors, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="list of 3"):
        apply_prox_group("l1", tensors, 0.1, weight=[tensors[0]] * 3)
    with pytest.raises(TypeError, match="no hyperparameter"):
        apply_prox_group("l1", tensors, 0.1, radius=1.0)
    with pytest.raises(KeyError, match="group_l2"):
        apply_prox_group("grop_l2", tensors, 0.1)


# ---------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------


def test_registry_records():
    required = set(
        "l1 l1_nonneg l2 group_l2 elastic_net l2sq anchor_l2 linf huber sum_squares nuclear spectral_norm"
        " neg_log_det nonneg box simplex l1_ball l2_ball linf_ball psd spectral_ball nuclear_ball affine"
        " transport top_k nm_sparse sphere low_rank".split()
    )
    assert required <= set(KERNELS)
    for name, kernel in KERNELS.items():
        assert isinstance(kernel, Kernel) and kernel.name == name
        assert kernel.fn.__doc__.startswith("argmin_"), name
        prefix = "proj_" if kernel.kind == "projection" else "prox_"
        assert kernel.fn.__name__ == prefix + name
        parameters = list(inspect.signature(kernel.fn).parameters.values())
        assert [p.name for p in parameters[:2]] == ["x", "step"]
        assert kernel.hyper == tuple(p.name for p in parameters[2:])
        assert kernel.math and kernel.structure in ("pointwise", "group", "spectral", "tensor")
    nonconvex = {name for name, kernel in KERNELS.items() if not kernel.convex}
    assert nonconvex == {"top_k", "nm_sparse", "sphere", "low_rank", "stiefel"}
    with pytest.raises(AttributeError):
        KERNELS["l1"].convex = False  # frozen


def test_get_kernel():
    assert get_kernel("l1") is KERNELS["l1"]
    assert get_kernel("prox_nuclear") is KERNELS["nuclear"]
    assert get_kernel("proj_simplex") is KERNELS["simplex"]
    with pytest.raises(KeyError, match="'l1_ball'"):
        get_kernel("l1ball")
    with pytest.raises(KeyError, match="no prox or projection kernel"):
        get_kernel("zzzzzz")


def test_kernels_keep_dtype_and_reject_bad_groupings():
    for dtype in DTYPES:
        x = torch.randn(4, 6, dtype=dtype)
        for name, kernel in KERNELS.items():
            hyper = {
                "anchor_l2": dict(anchor=torch.zeros_like(x)),
                "affine": dict(A=torch.ones(1, 6, dtype=dtype), b=torch.ones(1, dtype=dtype)),
                "transport_marginals": dict(
                    a=torch.full((4,), 0.25, dtype=dtype), b=torch.full((6,), 1 / 6, dtype=dtype)
                ),
                "transport": dict(
                    a=torch.full((4,), 0.25, dtype=dtype), b=torch.full((6,), 1 / 6, dtype=dtype)
                ),
                "top_k": dict(k=3),
                "nm_sparse": dict(n=2, m=4),
                "low_rank": dict(k=2),
            }.get(name, {})
            square = name in ("psd", "neg_log_det")
            out = kernel.fn(x[:, :4] if square else x, 0.5, **hyper)
            assert out.dtype == dtype and out.device == x.device, name
    with pytest.raises(ValueError, match="unknown grouping"):
        KERNELS["group_l2"].fn(torch.randn(3, 3), 0.1, groups="diagonal")
    with pytest.raises(ValueError, match="fit neither"):
        KERNELS["group_l2"].fn(torch.randn(3, 3), 0.1, groups=torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    tensors = make_tensors(SHAPES, dtype, seed=9)
    matrices = make_tensors(MATRIX_SHAPES, dtype, seed=10, zero_fraction=0.0)
    cases = [
        ("l1", tensors, dict(lam=0.8)),
        ("l2sq", tensors, dict(lam=0.1)),
        ("group_l2", tensors, dict(lam=0.5)),
        ("group_l2", tensors, dict(lam=0.5, groups=blocks(2, 2))),
        ("simplex", tensors, dict()),
        ("top_k", tensors, dict(k=3)),
        ("nuclear", matrices, dict(lam=0.6)),
        ("spectral_ball", matrices, dict(radius=1.0)),
    ]
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-11)
    for name, inputs, hyper in cases:
        on_cpu = [t.clone() for t in inputs]
        on_gpu = [t.cuda() for t in inputs]
        apply_prox_group(name, on_cpu, 0.4, **hyper)
        apply_prox_group(name, on_gpu, 0.4, **hyper)
        for c, g in zip(on_cpu, on_gpu):
            assert g.is_cuda
            torch.testing.assert_close(g.cpu(), c, **tol)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1], device="cuda")
    x = torch.randn(8, 3, dtype=dtype, device="cuda")
    out = get_kernel("group_l2").fn(x, 0.3, groups=labels, num_groups=3)
    expected = get_kernel("group_l2").fn(x.cpu(), 0.3, groups=labels.cpu())
    torch.testing.assert_close(out.cpu(), expected, **tol)
