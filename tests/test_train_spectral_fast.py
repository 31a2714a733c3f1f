"""Spectral-ball projection and nuclear prox without a full SVD (backends/torch/spectral.py),
checked against a float64 SVD computed here, on spectra chosen to stress the certificate."""
from __future__ import annotations

import pytest
import torch

from regspec.backends.torch import spectral
from regspec.backends.torch.projections import proj_spectral_ball
from regspec.backends.torch.prox import prox_nuclear


def _with_spectrum(sigma: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    m = sigma.numel()
    u = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(n, m, dtype=torch.float64, generator=gen)).Q
    return (u * sigma) @ v.T


def _reference(x: torch.Tensor, singular_value_map) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(x.to(torch.float64), full_matrices=False)
    return (u * singular_value_map(s)) @ vh


def _matrices() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    m, n = 96, 400
    return {
        "gaussian": torch.randn(m, n, dtype=torch.float64, generator=gen) / n ** 0.5,
        "decaying": _with_spectrum(0.9 ** torch.arange(m, dtype=torch.float64), n, 2),
        # singular values clustered at 1 (as after an earlier projection), then nudged
        "clustered": _with_spectrum(1 + 1e-3 * torch.randn(m, dtype=torch.float64, generator=gen), n, 3),
        "rank_deficient": _with_spectrum(torch.cat([torch.linspace(3, 1, 30, dtype=torch.float64),
                                                    torch.zeros(m - 30, dtype=torch.float64)]), n, 4),
    }


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.to(torch.float64) - ref).norm() / ref.norm().clamp_min(1e-300))


# radius at a point of the spectrum: none above, three above, twenty above (past max_rank: the Gram eigh path)
@pytest.mark.parametrize("name", list(_matrices()))
@pytest.mark.parametrize("where", ["none", "top3", "many"])
def test_spectral_ball_matches_full_svd(name: str, where: str) -> None:
    x = _matrices()[name]
    s = torch.linalg.svdvals(x)
    radius = {"none": float(s[0]) * 1.001, "top3": float(s[2] + s[3]) / 2, "many": float(s[20]) + 1e-9}[where]
    assert spectral.spectral_ball_fast(x, radius) is not None     # the fast path itself is under test
    out = proj_spectral_ball(x, radius=radius)
    ref = _reference(x, lambda sigma: sigma.clamp_max(radius))
    # float64 Gram: rounding eps64 * (sigma_max / radius)^2 relative, far under 1e-11 here
    assert _relative_error(out, ref) < 1e-11
    assert float(torch.linalg.matrix_norm(out, ord=2)) <= radius * (1 + 1e-12)


@pytest.mark.parametrize("name", list(_matrices()))
@pytest.mark.parametrize("quantile", [0, 3, 20])
def test_nuclear_prox_matches_full_svd(name: str, quantile: int) -> None:
    x = _matrices()[name]
    s = torch.linalg.svdvals(x)
    tau = float(s[quantile]) * (1.001 if quantile == 0 else 1.0) + 1e-9
    assert spectral.nuclear_prox_fast(x, tau) is not None
    out = prox_nuclear(x, 1.0, lam=tau)
    ref = _reference(x, lambda sigma: (sigma - tau).clamp_min(0))
    if ref.norm() == 0:
        assert float(out.abs().max()) == 0.0
    else:
        assert _relative_error(out, ref) < 1e-10


def test_float32_tall_and_batched_inputs() -> None:
    x = _matrices()["decaying"]
    s = torch.linalg.svdvals(x)
    radius = float(s[4] + s[5]) / 2
    tall = x.T.to(torch.float32).contiguous()
    out = proj_spectral_ball(tall, radius=radius)
    assert out.dtype == torch.float32 and out.shape == tall.shape
    ref = _reference(tall, lambda sigma: sigma.clamp_max(radius))
    assert _relative_error(out, ref) < 1e-5        # float32 rounding of the result (eps32 ~ 1.2e-7)
    batch = torch.stack([x, 2 * x, 0.5 * x])
    steps = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64).reshape(3, 1)
    out = prox_nuclear(batch, steps, lam=float(s[3]))
    for i in range(3):
        tau = float(steps[i]) * float(s[3])
        assert _relative_error(out[i], _reference(batch[i], lambda sigma: (sigma - tau).clamp_min(0))) < 1e-10


def test_nuclear_prox_below_every_singular_value() -> None:
    # tau far under sigma_min of a well-conditioned matrix: every value shrinks, none is zeroed
    x = _matrices()["gaussian"]
    tau = 1e-6
    assert spectral.nuclear_prox_fast(x, tau) is not None
    out = prox_nuclear(x, 1.0, lam=tau)
    assert _relative_error(out, _reference(x, lambda sigma: (sigma - tau).clamp_min(0))) < 1e-12


def test_lambda_max_bound_is_an_upper_bound_and_tight() -> None:
    x = _matrices()["gaussian"]
    g = x @ x.T
    true = float(torch.linalg.eigvalsh(g)[-1])
    bound = spectral._lambda_max_upper_bound(g)
    assert true <= bound <= true * g.shape[0] ** (1 / 2 ** (spectral._SQUARINGS + 1)) * (1 + 1e-9)


def test_small_or_ill_scaled_matrices_keep_the_full_svd() -> None:
    small = torch.randn(20, 30, dtype=torch.float64)
    assert spectral.spectral_ball_fast(small, 0.5) is None
    x = _matrices()["decaying"]
    # sigma_max / radius = 1e3 > 10: the float64 Gram's rounding would show in a float64 result
    assert spectral.spectral_ball_fast(x, 1e-3) is None
    out = proj_spectral_ball(x, radius=1e-3)
    assert _relative_error(out, _reference(x, lambda sigma: sigma.clamp_max(1e-3))) < 1e-12


# ---------------------------------------------------------------- `every N steps` on regularize
TRAIN = """
train t {{
  model mlp(hidden = [16])
  data digits(split = 0.8)
  epochs 1
  batch 64
{body}
}}
"""


def _plan(body: str):
    import regspec
    from regspec.compiler.train_plan import plan_train

    return plan_train(regspec.load(TRAIN.format(body=body)).ast)


def test_regularize_takes_gates_like_constrain() -> None:
    plan = _plan('  regularize nuclear(param("layers.0.weight")) * 1e-3 every 10 steps from epoch 0.5')
    term = plan.terms[0]
    assert term.lowering == "prox" and term.gate is not None
    assert (term.gate.every, term.gate.every_unit, term.gate.start) == (10, "steps", 0.5)
    assert "lazy prox" in term.why


def test_gate_on_a_loss_term_or_in_a_problem_is_a_located_error() -> None:
    import regspec
    from regspec.diagnostics import RegspecError

    with pytest.raises(RegspecError) as info:
        _plan('  regularize l1(param("layers.0.weight")) * 1e-3 via grad every 10 steps')
    assert "gates a proximal step" in str(info.value) and info.value.first.span.line == 7
    problem = "problem p {\n  var x[3]\n  minimize sum_squares(x - 1)\n  regularize norm1(x) every 2 steps\n}\n"
    with pytest.raises(RegspecError) as info:
        regspec.load(problem).compiled()
    assert "training runs, not problems" in str(info.value)


def test_a_prox_every_n_steps_takes_n_times_the_step() -> None:
    from torch import nn

    from regspec.backends.torch.train.proxstep import ProxEngine, ProxGroup, When

    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -0.5, 0.2, 0.05]]))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    engine = ProxEngine(lin, opt, [ProxGroup("l1", ["weight"], 0.3, when=When(every=3))])
    seen = []
    for _ in range(6):
        opt.zero_grad()
        (lin.weight * 0).sum().backward()    # zero gradient: only the prox moves the weights
        opt.step()
        engine.after_step()
        seen.append(lin.weight.detach().clone())
    torch.testing.assert_close(seen[1], torch.tensor([[1.0, -0.5, 0.2, 0.05]]))     # steps 1, 2: closed
    # step 3: soft threshold by 3 * lr * w = 0.09; step 6: again
    torch.testing.assert_close(seen[2], torch.tensor([[0.91, -0.41, 0.11, 0.0]]))
    torch.testing.assert_close(seen[5], torch.tensor([[0.82, -0.32, 0.02, 0.0]]))
