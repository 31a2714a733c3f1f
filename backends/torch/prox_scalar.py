"""Separable proxes whose scalar equation has a closed form through a special function or needs a
safeguarded 1-D root finder: pos, hinge, pinball, |x|^p (p > 1), x log x (Lambert W / Wright
omega), x^p (p < 0) on x > 0, and x^p (p > 1) on x >= 0.

Same signature as every kernel of ``prox.py`` (where they are registered)::

    prox_NAME(x: Tensor, step: float | Tensor, **hyper) -> Tensor
        = argmin_z step * lam * sum_i f(z_i) + 1/2 ||z - x||^2

All are elementwise, batched and free of Python loops over entries; the root finders run a fixed
small number of vectorized Newton steps with a bisection safeguard (a bracket [lo, hi] that always
holds the root), stopping when every entry has converged to float accuracy.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .projections import like

Step = float | Tensor

__all__ = ["prox_pos", "prox_hinge", "prox_pinball", "prox_deadzone", "prox_power_abs", "prox_power_nonneg", "prox_neg_power",
           "prox_neg_entropy", "prox_inv_pos", "prox_neg_log", "prox_kl_div", "prox_rel_entr", "wright_omega", "lambert_w", "bracketed_newton"]


def _tau(step: Step, lam: float | Tensor, x: Tensor) -> float | Tensor:
    return like(step, x) * like(lam, x)


# ---------------------------------------------------------------------------------------------------
# piecewise-linear losses
# ---------------------------------------------------------------------------------------------------


def prox_pos(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i max(z_i, 0) + 1/2||z - x||^2.

    x - clip(x, 0, tau) with tau = step*lam: x - tau above tau, 0 on [0, tau], x below 0.
    """
    tau = _tau(step, lam, x)
    if isinstance(tau, Tensor):
        return x - torch.clamp(x, min=torch.zeros_like(tau), max=tau)
    return x - x.clamp(0.0, tau)


def prox_hinge(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i max(0, 1 - z_i) + 1/2||z - x||^2.

    x + clip(1 - x, 0, tau): x + tau below 1 - tau, 1 on [1 - tau, 1], x above 1.
    """
    tau = _tau(step, lam, x)
    gap = 1.0 - x
    if isinstance(tau, Tensor):
        return x + torch.clamp(gap, min=torch.zeros_like(tau), max=tau)
    return x + gap.clamp(0.0, tau)


def prox_pinball(x: Tensor, step: Step, *, quantile: float = 0.5, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i rho_q(z_i) + 1/2||z - x||^2, rho_q(t) = max(q t, (q - 1) t), 0 < q < 1.

    x - clip(x, -(1 - q) tau, q tau): the quantile (check) loss shrinks x towards 0 asymmetrically.
    """
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"the pinball loss needs a quantile in (0, 1), got {quantile}")
    tau = _tau(step, lam, x)
    lo, hi = -(1.0 - quantile) * tau, quantile * tau
    if isinstance(tau, Tensor):
        return x - torch.clamp(x, min=lo, max=hi)
    return x - x.clamp(lo, hi)


def prox_deadzone(x: Tensor, step: Step, *, a: float = 0.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i max(|z_i| - a, 0) + 1/2||z - x||^2, a >= 0 (the deadzone-linear penalty).

    sign(x) max(min(|x|, a), |x| - tau): x inside the zone, its edge for a < |x| <= a + tau, and
    x shrunk by tau beyond; a = 0 is the soft threshold.
    """
    if not float(a) >= 0.0:
        raise ValueError(f"the deadzone penalty needs a >= 0, got {a}")
    tau = _tau(step, lam, x)
    mag = x.abs()
    return torch.sign(x) * torch.maximum(mag.clamp(max=float(a)), mag - tau)


# ---------------------------------------------------------------------------------------------------
# a vectorized safeguarded Newton method for increasing scalar equations
# ---------------------------------------------------------------------------------------------------


def bracketed_newton(phi, z: Tensor, lo: Tensor, hi: Tensor, *, max_iter: int = 100) -> Tensor:
    """The root of ``phi`` (increasing in z, entrywise) inside [lo, hi] with phi(lo) <= 0 <= phi(hi).

    ``phi(z)`` returns (value, derivative). Each step is Newton's when it lands inside the
    current bracket, else the bracket's midpoint; the bracket shrinks around the root on every step,
    so the iteration cannot leave it. Stops when every entry's step (or bracket) is below a few ulps
    of its value.
    """
    eps = torch.finfo(z.dtype).eps
    lo, hi = lo.clone(), hi.clone()
    for _ in range(max_iter):
        value, slope = phi(z)
        above = value > 0
        hi = torch.where(above, z, hi)
        lo = torch.where(above, lo, z)
        newton = z - value / slope
        # closed bracket: a converged Newton step lands on its end (the last iterate), and the
        # midpoint would then throw away the convergence
        inside = (newton >= lo) & (newton <= hi) & torch.isfinite(newton)
        new = torch.where(inside, newton, 0.5 * (lo + hi))
        new = torch.where(value == 0, z, new)
        scale = new.abs().clamp_min(torch.finfo(z.dtype).tiny)
        done = ((new - z).abs() <= 4 * eps * scale) | ((hi - lo) <= 4 * eps * scale)
        z = new
        if bool(done.all()):
            break
    return z


# ---------------------------------------------------------------------------------------------------
# powers
# ---------------------------------------------------------------------------------------------------


def _power_magnitude(a: Tensor, tau: float | Tensor, p: float) -> Tensor:
    """The root z in [0, a] of z + tau p z^(p-1) = a (a >= 0, p > 1): the prox of tau |.|^p at a."""
    tau_t = torch.as_tensor(tau, dtype=a.dtype, device=a.device).expand_as(a) if isinstance(tau, Tensor) \
        else torch.full_like(a, float(tau))
    c = tau_t * p

    def phi(z: Tensor) -> tuple[Tensor, Tensor]:
        zc = z.clamp_min(0)
        return zc + c * zc ** (p - 1) - a, 1 + c * (p - 1) * zc.clamp_min(torch.finfo(a.dtype).tiny) ** (p - 2)

    # the smaller of the two one-term solutions is a good start and an upper bound on the root
    start = torch.minimum(a, (a / c.clamp_min(torch.finfo(a.dtype).tiny)) ** (1.0 / (p - 1)))
    z = bracketed_newton(phi, start, torch.zeros_like(a), a.clone())
    return torch.where(a > 0, z, torch.zeros_like(a))


def prox_power_abs(x: Tensor, step: Step, *, p: float = 2.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i |z_i|^p + 1/2||z - x||^2, p >= 1.

    p = 1: soft threshold; p = 2: x/(1 + 2 tau); otherwise sign(x) z with z >= 0 the root of the
    increasing scalar equation z + tau p z^(p-1) = |x| (safeguarded Newton, ``bracketed_newton``).
    """
    p = float(p)
    if p < 1:
        raise ValueError(f"power_abs needs p >= 1 for a convex prox, got {p}")
    tau = _tau(step, lam, x)
    if p == 1.0:
        return x - (torch.clamp(x, min=-tau, max=tau) if isinstance(tau, Tensor) else x.clamp(-tau, tau))
    if p == 2.0:
        return x / (1 + 2 * tau)
    return torch.sign(x) * _power_magnitude(x.abs(), tau, p)


def prox_power_nonneg(x: Tensor, step: Step, *, p: float = 2.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i z_i^p + 1/2||z - x||^2 over z >= 0, p >= 1.

    The prox of tau |.|^p at max(x, 0): for x < 0 the minimizer is 0, for x >= 0 it is already >= 0.
    """
    return prox_power_abs(x.clamp_min(0), step, p=p, lam=lam)


def prox_neg_power(x: Tensor, step: Step, *, p: float = -1.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i z_i^p + 1/2||z - x||^2 over z > 0, p < 0 (p = -1: inv_pos).

    z is the root of the increasing, concave z - x + tau p z^(p-1) = 0, bracketed by
    (max(x, 0), max(x, 0) + (tau |p|)^(1/(2-p))] (safeguarded Newton from the right end).
    """
    p = float(p)
    if p >= 0:
        raise ValueError(f"neg_power needs p < 0, got {p}")
    tau = _tau(step, lam, x)
    tau_t = torch.as_tensor(tau, dtype=x.dtype, device=x.device).expand_as(x) if isinstance(tau, Tensor) \
        else torch.full_like(x, float(tau))
    c = tau_t * (-p)
    lo = x.clamp_min(0)
    hi = lo + c ** (1.0 / (2.0 - p))
    tiny = torch.finfo(x.dtype).tiny

    def phi(z: Tensor) -> tuple[Tensor, Tensor]:
        zc = z.clamp_min(tiny)
        return zc - x - c * zc ** (p - 1), 1 + c * (1 - p) * zc ** (p - 2)

    return bracketed_newton(phi, hi.clone(), lo, hi)


def prox_inv_pos(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i 1/z_i + 1/2||z - x||^2 over z > 0: the positive root of z^3 - x z^2 = tau."""
    return prox_neg_power(x, step, p=-1.0, lam=lam)


def prox_neg_log(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z -step*lam*sum_i log z_i + 1/2||z - x||^2 over z > 0: (x + sqrt(x^2 + 4 tau))/2.

    Written as 2 tau / (sqrt(x^2 + 4 tau) - x) for x < 0, which does not cancel."""
    tau = _tau(step, lam, x)
    root = torch.sqrt(x * x + 4 * tau)
    return torch.where(x >= 0, 0.5 * (x + root), 2 * tau / (root - x))


# ---------------------------------------------------------------------------------------------------
# entropy: Lambert W through the Wright omega function
# ---------------------------------------------------------------------------------------------------


def wright_omega(y: Tensor, iterations: int = 4) -> Tensor:
    """omega(y), the solution w > 0 of w + log w = y (so omega(y) = W(e^y), Lambert's principal branch).

    Start: y - log y for y > 1 (asymptotic), e^y for y < -2 (w ~ e^y), softplus in between; then
    the Fritsch-Shafer-Crowley iteration (fourth order), r = y - w - log w,
    w <- w (1 + r/(1 + w) ((1 + w)(1 + w + 2r/3) - r/2) / ((1 + w)(1 + w + 2r/3) - r)),
    a few times (float64-accurate from these starts). Entries where e^y underflows stay 0.
    """
    big = y > 1
    small = y < -2
    y_safe = torch.where(big, y, torch.ones_like(y))
    w = torch.where(big, y_safe - torch.log(y_safe),
                    torch.where(small, torch.exp(y), torch.nn.functional.softplus(y)))
    positive = w > 0
    w_safe = torch.where(positive, w, torch.ones_like(w))
    for _ in range(iterations):
        r = y - w_safe - torch.log(w_safe)
        one_w = 1 + w_safe
        t = one_w * (one_w + 2.0 * r / 3.0)
        new = w_safe * (1 + r / one_w * (t - r / 2) / (t - r))
        # (1 + w)^2 overflows for w near the float maximum, where y - log y is already exact
        w_safe = torch.where(torch.isfinite(new), new, w_safe).clamp_min(torch.finfo(y.dtype).tiny)
    return torch.where(positive, w_safe, torch.zeros_like(w))


def lambert_w(x: Tensor) -> Tensor:
    """W(x), the principal branch of Lambert's W for x >= 0 (w e^w = x), as omega(log x)."""
    return torch.where(x > 0, wright_omega(torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))), torch.zeros_like(x))


def prox_neg_entropy(x: Tensor, step: Step, *, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i z_i log z_i + 1/2||z - x||^2 over z >= 0 (the prox of -lam*entropy).

    tau W(e^(x/tau - 1)/tau) = tau omega(x/tau - 1 - log tau), written with Wright's omega so that
    e^(x/tau) never overflows; strictly positive wherever it does not underflow.
    """
    tau = _tau(step, lam, x)
    if isinstance(tau, Tensor):
        return tau * wright_omega(x / tau - 1 - torch.log(tau))
    if tau <= 0:
        return x.clamp_min(0)
    return tau * wright_omega(x / tau - 1 - math.log(tau))


def prox_rel_entr(x: Tensor, step: Step, *, y: Tensor | float = 1.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i z_i log(z_i / y_i) + 1/2||z - x||^2 over z >= 0 (y > 0 constant).

    z log(z/y) = z log z - z log y: the entropy prox at x + tau log y (a linear term shifts the point).
    """
    tau = _tau(step, lam, x)
    log_y = torch.log(like(y, x)) if isinstance(y, Tensor) else math.log(float(y))
    return prox_neg_entropy(x + tau * log_y, step, lam=lam)


def prox_kl_div(x: Tensor, step: Step, *, y: Tensor | float = 1.0, lam: float | Tensor = 1.0) -> Tensor:
    """argmin_z step*lam*sum_i (z_i log(z_i / y_i) - z_i + y_i) + 1/2||z - x||^2 over z >= 0 (y > 0 constant).

    The entropy prox at x + tau (log y + 1): the linear terms shift the point, the constant y drops.
    """
    tau = _tau(step, lam, x)
    return prox_rel_entr(x + tau, step, y=y, lam=lam)
