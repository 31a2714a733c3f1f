"""The cones of CVXPY's SCS format and the Euclidean projections onto them and onto their duals.

A conic program in SCS format reads ``min c^T x  s.t.  b - A x = s in K`` with ``K`` the product, in
this order, of the zero cone ``{0}^z``, the nonnegative orthant, second-order cones
``{(t, u): ||u||_2 <= t}``, PSD cones (a symmetric n x n matrix as its lower triangle, column by
column, off-diagonal entries multiplied by sqrt(2) so that the vector inner product equals the
trace inner product), primal exponential cones ``cl{(r, s, t): s > 0, s exp(r / s) <= t}`` and dual
exponential cones. Every cone here is self-dual except the zero cone (dual: the whole space) and
the exponential cone, whose dual is ``cl{(u, v, w): u < 0, -u exp(v / u) <= e w}``; the projection
onto a dual cone follows from Moreau's decomposition ``v = P_K(v) - P_{K*}(-v)``.

The exponential-cone projection reduces to one equation in ``rho = r / s`` of the projected point
(the reduction of Friberg, "Projection onto the exponential cone: a univariate root-finding
problem", 2021): with ``A = (rho - 1) r0 + s0``, ``B = r0 - rho s0``, ``Q = rho^2 - rho + 1``, the
projection is ``s (rho, 1, e^rho)`` with ``s = A / Q`` where ``f(rho) = A e^rho - B e^-rho - Q t0``
vanishes. On the interval where ``A > 0`` and ``B > 0`` (the projection's ``s`` and the normal
component's length are positive) ``f`` goes from negative to positive and has one root; Newton's
method safeguarded by bisection on that bracket finds it (``_exp_root``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

SQRT2 = math.sqrt(2.0)
# exp overflows in float64 past ~709.8; the root of f always lies well inside this range for finite data
RHO_LIMIT = 700.0
EXP_NEWTON_ITERS = 100


@dataclass(frozen=True)
class ConeLayout:
    """Sizes of the cone blocks, in SCS order. ``psd`` holds matrix orders n (each block has n(n+1)/2
    entries); ``exp`` and ``exp_dual`` count 3-dimensional cones."""

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()
    exp: int = 0
    exp_dual: int = 0

    @property
    def size(self) -> int:
        return self.zero + self.nonneg + sum(self.soc) + sum(n * (n + 1) // 2 for n in self.psd) + \
            3 * (self.exp + self.exp_dual)

    def blocks(self) -> list[tuple[str, int, int]]:
        """(kind, start, stop) of each cone (the zero and nonnegative parts as one block each)."""
        out, at = [], 0
        for kind, sizes in (("zero", [self.zero] if self.zero else []),
                            ("nonneg", [self.nonneg] if self.nonneg else []),
                            ("soc", list(self.soc)),
                            ("psd", [n * (n + 1) // 2 for n in self.psd]),
                            ("exp", [3] * self.exp), ("exp_dual", [3] * self.exp_dual)):
            for m in sizes:
                out.append((kind, at, at + m))
                at += m
        return out

    def describe(self) -> str:
        parts = []
        if self.zero:
            parts.append(f"zero {self.zero}")
        if self.nonneg:
            parts.append(f"nonneg {self.nonneg}")
        if self.soc:
            parts.append(f"{len(self.soc)} second-order (sizes {_sizes(self.soc)})")
        if self.psd:
            parts.append(f"{len(self.psd)} PSD (orders {_sizes(self.psd)})")
        if self.exp:
            parts.append(f"{self.exp} exponential")
        if self.exp_dual:
            parts.append(f"{self.exp_dual} dual exponential")
        return ", ".join(parts) or "none"


def _sizes(sizes: tuple[int, ...]) -> str:
    distinct = sorted(set(sizes))
    return ", ".join(map(str, distinct[:4])) + (", ..." if len(distinct) > 4 else "")


# ------------------------------------------------------------------------------------ second-order, PSD
def project_soc(v: Tensor) -> Tensor:
    """Rows of ``v`` (``(k, n)``, ``v[:, 0]`` the cone's t) onto the second-order cone."""
    t, u = v[:, 0], v[:, 1:]
    nu = torch.linalg.vector_norm(u, dim=1)
    scale = 0.5 * (1.0 + t / torch.where(nu > 0, nu, torch.ones_like(nu)))
    boundary = torch.cat([(0.5 * (t + nu))[:, None], scale[:, None] * u], dim=1)
    inside = (nu <= t)[:, None]
    polar = (nu <= -t)[:, None]
    return torch.where(inside, v, torch.where(polar, torch.zeros_like(v), boundary))


def svec_indices(n: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """(rows, cols, is_off_diagonal) of the svec entries of an n x n matrix: the lower triangle column
    by column, i.e. (i, j) with i >= j ordered by j then i (CVXPY's SCS format)."""
    cols, rows = torch.triu_indices(n, n, device=device)  # (j, i) with i >= j, row-major over j
    return rows, cols, rows != cols


def svec_to_mat(v: Tensor, n: int) -> Tensor:
    """``(k, n(n+1)/2)`` svec rows -> ``(k, n, n)`` symmetric matrices."""
    rows, cols, off = svec_indices(n, v.device)
    vals = torch.where(off, v / SQRT2, v)
    m = v.new_zeros(v.shape[0], n, n)
    m[:, rows, cols] = vals
    m[:, cols, rows] = vals
    return m


def mat_to_svec(m: Tensor) -> Tensor:
    n = m.shape[-1]
    rows, cols, off = svec_indices(n, m.device)
    vals = m[:, rows, cols]
    return torch.where(off, vals * SQRT2, vals)


def project_psd(v: Tensor, n: int) -> Tensor:
    """svec rows (``(k, n(n+1)/2)``) onto the PSD cone: eigenvalues clipped at zero."""
    m = svec_to_mat(v, n)
    w, q = torch.linalg.eigh(m)
    return mat_to_svec((q * w.clamp_min(0.0)[:, None, :]) @ q.transpose(1, 2))


# ------------------------------------------------------------------------------------ exponential
# The exponential-cone functions take the array namespace ``xp`` (torch, or NumPy for CPU tensors:
# a projection works on arrays of a few elements, where a NumPy call costs a fraction of a torch
# one); both spell every function used here the same way.
def _pos(xp, x):
    return xp.maximum(x, xp.zeros_like(x))


def _stack(xp, columns: list) -> Any:
    return xp.stack(columns, 1)


def _in_exp(xp, r, s, t):
    safe_s = xp.where(s > 0, s, xp.ones_like(s))
    ratio = xp.minimum(r / safe_s, xp.full_like(r, RHO_LIMIT))
    return ((s > 0) & (safe_s * xp.exp(ratio) <= t)) | ((r <= 0) & (s == 0) & (t >= 0))


def _in_exp_dual(xp, u, v, w):
    safe_u = xp.where(u < 0, u, -xp.ones_like(u))
    ratio = xp.minimum(v / safe_u, xp.full_like(v, RHO_LIMIT))
    return ((u < 0) & (-safe_u * xp.exp(ratio) <= math.e * w)) | ((u == 0) & (v >= 0) & (w >= 0))


def in_exp_cone(v: Tensor) -> Tensor:
    return _in_exp(torch, v[:, 0], v[:, 1], v[:, 2])


def in_exp_dual_cone(v: Tensor) -> Tensor:
    return _in_exp_dual(torch, v[:, 0], v[:, 1], v[:, 2])


def _exp_newton(xp, rho, r0, s0, t0):
    """The sign of f(rho) and two Newton iterates: on
    phi = log(A e^rho + Q t0^-) - log(B e^-rho + Q t0^+), which has the sign of f and is close to
    linear in the tails where f is exponential, and on f itself, which is close to linear near the
    bracket's ends where phi has a log singularity. Evaluated in log space (no overflow)."""
    a = _pos(xp, (rho - 1.0) * r0 + s0)
    b = _pos(xp, r0 - rho * s0)
    q = rho * rho - rho + 1.0
    tneg, tpos = _pos(xp, -t0), _pos(xp, t0)
    la, lqn = xp.log(a) + rho, xp.log(q * tneg)
    lb, lqp = xp.log(b) - rho, xp.log(q * tpos)
    lhs, rhs = xp.logaddexp(la, lqn), xp.logaddexp(lb, lqp)
    dq = (2.0 * rho - 1.0) / q
    safe_a = xp.where(a > 0, a, xp.ones_like(a))
    safe_b = xp.where(b > 0, b, xp.ones_like(b))
    dlhs = xp.exp(la - lhs) * (r0 + a) / safe_a + xp.exp(lqn - lhs) * dq
    drhs = -xp.exp(lb - rhs) * (s0 + b) / safe_b + xp.exp(lqp - rhs) * dq
    phi = lhs - rhs
    newton_phi = rho - phi / (dlhs - drhs)
    # f / e^rhs = e^phi - 1 and f' / e^rhs = e^phi dlhs - drhs: the same Newton step as on f
    ephi = xp.exp(phi)
    newton_f = rho - (ephi - 1.0) / (ephi * dlhs - drhs)
    return xp.sign(phi), newton_phi, newton_f


def _exp_bracket(xp, r0, s0):
    """The interval of rho where A = (rho - 1) r0 + s0 > 0 and B = r0 - rho s0 > 0, clipped to
    [-RHO_LIMIT, RHO_LIMIT]."""
    lo = xp.full_like(r0, -RHO_LIMIT)
    hi = xp.full_like(r0, RHO_LIMIT)
    safe_r = xp.where(r0 != 0, r0, xp.ones_like(r0))
    safe_s = xp.where(s0 != 0, s0, xp.ones_like(s0))
    lo = xp.where(r0 > 0, xp.maximum(lo, 1.0 - s0 / safe_r), lo)
    hi = xp.where(r0 < 0, xp.minimum(hi, 1.0 - s0 / safe_r), hi)
    hi = xp.where(s0 > 0, xp.minimum(hi, r0 / safe_s), hi)
    lo = xp.where(s0 < 0, xp.maximum(lo, r0 / safe_s), lo)
    lim = xp.full_like(r0, RHO_LIMIT)
    return xp.minimum(xp.maximum(lo, -lim), lim), xp.minimum(xp.maximum(hi, -lim), lim)


def _exp_root(xp, r0, s0, t0, start=None):
    """The root of f on its bracket (the safeguard of Numerical Recipes' ``rtsafe``): the Newton
    step on phi when it stays inside the bracket, else the Newton step on f; either only when it is
    at most half the step before it, else the bracket's midpoint. The bracket shrinks around the
    sign change. An end of the bracket that the linear conditions leave open starts one unit from
    the other; ``start`` (the roots of a previous call on nearby points) is used where it lies
    inside the bracket."""
    lo, hi = _exp_bracket(xp, r0, s0)
    open_lo, open_hi = lo <= -RHO_LIMIT, hi >= RHO_LIMIT
    rho = xp.where(open_lo & ~open_hi, hi - 1.0, xp.where(open_hi & ~open_lo, lo + 1.0, 0.5 * (lo + hi)))
    if start is not None:
        rho = xp.where((start > lo) & (start < hi), start, rho)
    last_step = hi - lo
    done = rho != rho  # all False, of the namespace's bool type
    for _ in range(EXP_NEWTON_ITERS):
        sign, newton_phi, newton_f = _exp_newton(xp, rho, r0, s0, t0)
        lo = xp.where(sign < 0, rho, lo)
        hi = xp.where(sign > 0, rho, hi)
        inside_phi = xp.isfinite(newton_phi) & (newton_phi > lo) & (newton_phi < hi)
        inside_f = xp.isfinite(newton_f) & (newton_f > lo) & (newton_f < hi)
        newton = xp.where(inside_phi, newton_phi, newton_f)
        step = xp.abs(newton - rho)
        # converged: a Newton step at rounding level (it may land on the bracket's end) or an exact zero
        converged = (xp.isfinite(newton) & (step <= 1e-13 * (1.0 + xp.abs(rho)))) | (sign == 0)
        fast = (inside_phi | inside_f) & (step <= 0.5 * last_step)
        nxt = xp.where(fast, newton, 0.5 * (lo + hi))
        nxt = xp.where(converged, xp.minimum(xp.maximum(newton, lo), hi), nxt)
        nxt = xp.where(sign == 0, rho, nxt)
        last_step = xp.abs(nxt - rho)
        rho = xp.where(done, rho, nxt)
        done = done | converged
        if bool(done.all()):
            break
    return rho


def _exp_boundary_point(xp, r0, s0, t0, rho):
    """The projection ``s (rho, 1, e^rho)`` from the root. Two exact formulas for it: ``s = A / Q``, or
    ``t = s e^rho = t0 + B e^-rho / Q`` (the normal component has length ``B e^-rho / Q``). Each
    loses digits to cancellation in a different regime (A ~ 0 when the point is nearly projected
    onto the ray (0, 0, 1), t0 + lambda ~ 0 near the other end), so each point uses the one whose
    sum is better conditioned."""
    q = rho * rho - rho + 1.0
    a = (rho - 1.0) * r0 + s0
    inf = xp.full_like(a, math.inf)
    tiny = xp.full_like(a, 1e-300)
    cond_a = xp.where(a > 0, (xp.abs((rho - 1.0) * r0) + xp.abs(s0)) / xp.maximum(xp.abs(a), tiny), inf)
    lam = (r0 - rho * s0) * xp.exp(-rho) / q
    t = t0 + lam
    cond_t = xp.where(t > 0, (xp.abs(t0) + xp.abs(lam)) / xp.maximum(xp.abs(t), tiny), inf)
    from_a = a / q
    use_a = cond_a <= cond_t
    s = xp.where(use_a, from_a, t * xp.exp(-rho))
    t_out = xp.where(use_a, from_a * xp.exp(rho), t)
    return _stack(xp, [s * rho, s, t_out])


def _project_exp(xp, v, start):
    r0, s0, t0 = v[:, 0], v[:, 1], v[:, 2]
    inside = _in_exp(xp, r0, s0, t0)
    polar = _in_exp_dual(xp, -r0, -s0, -t0)
    corner = (r0 <= 0) & (s0 <= 0)
    easy = inside | polar | corner
    zero = xp.zeros_like(r0)
    corner_pt = _stack(xp, [xp.minimum(r0, zero), zero, xp.maximum(t0, zero)])
    if bool(easy.all()):
        best = corner_pt
        rho = start if start is not None else zero
    else:
        # points handled in closed form get a harmless stand-in so the root finder sees a valid bracket
        one = xp.ones_like(r0)
        rr, ss, tt = xp.where(easy, one, r0), xp.where(easy, one, s0), xp.where(easy, zero, t0)
        rho = _exp_root(xp, rr, ss, tt, start)
        boundary = _exp_boundary_point(xp, rr, ss, tt, rho)
        # safeguard: the nearest of the root's point and the two closed-form points that are always in K
        inf = xp.full_like(r0, math.inf)
        dists = []
        for cand in (boundary, corner_pt, xp.zeros_like(v)):
            d = ((cand - v) ** 2).sum(1)
            dists.append(xp.where(xp.isfinite(d), d, inf))
        first = (dists[0] <= dists[1]) & (dists[0] <= dists[2])
        best = xp.where(first[:, None], boundary, xp.where((dists[1] <= dists[2])[:, None], corner_pt, 0.0 * v))
        if start is not None:
            rho = xp.where(easy, start, rho)
    out = xp.where(corner[:, None], corner_pt, best)
    out = xp.where(polar[:, None], 0.0 * v, out)
    return xp.where(inside[:, None], v, out), rho


def project_exp(v: Tensor, start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Rows (r, s, t) of ``v`` (``(k, 3)``) onto the exponential cone, and the roots found (pass them
    back as ``start`` when projecting nearby points: Newton then needs two or three steps).
    Computed in float64 whatever ``v``'s dtype (float32's exp overflows at 88, and the root needs
    the digits); with NumPy for CPU tensors, torch on other devices."""
    v64 = v.detach().to(torch.float64)
    start64 = None if start is None else start.detach().to(torch.float64)
    if v.device.type == "cpu":
        with np.errstate(all="ignore"):  # logs of zero and overflowing exps are handled (module docstring)
            p, rho = _project_exp(np, v64.numpy(), None if start64 is None else start64.numpy())
        return torch.from_numpy(np.ascontiguousarray(p)).to(v.dtype), torch.from_numpy(np.asarray(rho))
    p, rho = _project_exp(torch, v64, start64)
    return p.to(v.dtype), rho


def project_exp_dual(v: Tensor, start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Onto the dual exponential cone, by Moreau: P_{K*}(v) = v + P_K(-v)."""
    p, rho = project_exp(-v, start)
    return v + p, rho


# ------------------------------------------------------------------------------------ the product
class ConeProjector:
    """Projections onto ``K`` and ``K*`` for one layout on one device: the second-order and PSD cones
    are grouped by size so that each group is one batched operation."""

    def __init__(self, layout: ConeLayout, device: torch.device | str = "cpu"):
        self.layout = layout
        self.device = torch.device(device)
        self.zero = slice(0, layout.zero)
        self.nonneg = slice(layout.zero, layout.zero + layout.nonneg)
        self.soc_groups: list[Tensor] = []      # (k, n) index tensors
        self.psd_groups: list[tuple[int, Tensor]] = []
        soc_by: dict[int, list[int]] = {}
        psd_by: dict[int, list[int]] = {}
        exp_starts, dual_starts = [], []
        orders = iter(layout.psd)
        for kind, start, stop in layout.blocks():
            if kind == "soc":
                soc_by.setdefault(stop - start, []).append(start)
            elif kind == "psd":
                psd_by.setdefault(next(orders), []).append(start)
            elif kind == "exp":
                exp_starts.append(start)
            elif kind == "exp_dual":
                dual_starts.append(start)
        self.soc_groups = [self._index(starts, n) for n, starts in soc_by.items()]
        self.psd_groups = [(n, self._index(starts, n * (n + 1) // 2)) for n, starts in psd_by.items()]
        self.exp = self._index(exp_starts, 3) if exp_starts else None
        self.exp_dual = self._index(dual_starts, 3) if dual_starts else None
        # the exponential-cone roots of the previous call, per block kind and direction: successive
        # PDHG iterates are close, so they are good starting points for the next projection
        self._roots: dict[tuple[str, bool], Tensor] = {}

    def _index(self, starts: list[int], width: int) -> Tensor:
        return (torch.tensor(starts, device=self.device)[:, None] +
                torch.arange(width, device=self.device)[None, :])

    def project(self, v: Tensor, dual: bool = False) -> Tensor:
        """P_K(v), or P_{K*}(v) with ``dual``: a new tensor."""
        out = v.clone()
        if not dual:
            out[self.zero] = 0.0
        out[self.nonneg] = out[self.nonneg].clamp_min(0.0)
        for idx in self.soc_groups:
            out[idx] = project_soc(v[idx])
        for n, idx in self.psd_groups:
            out[idx] = project_psd(v[idx], n)
        for name, idx, primal in (("exp", self.exp, not dual), ("exp_dual", self.exp_dual, dual)):
            if idx is not None:
                key = (name, dual)
                fn = project_exp if primal else project_exp_dual
                out[idx], self._roots[key] = fn(v[idx], self._roots.get(key))
        return out

    def block_ids(self) -> Tensor:
        """For each entry, the id of the cone block it belongs to; the zero and nonnegative parts give
        each entry its own id (a diagonal scaling keeps those cones), the others one id per cone."""
        ids = torch.empty(self.layout.size, dtype=torch.long)
        next_id = 0
        for kind, start, stop in self.layout.blocks():
            if kind in ("zero", "nonneg"):
                ids[start:stop] = torch.arange(next_id, next_id + stop - start)
                next_id += stop - start
            else:
                ids[start:stop] = next_id
                next_id += 1
        return ids
