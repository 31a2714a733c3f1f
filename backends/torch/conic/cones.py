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
def in_exp_cone(v: Tensor) -> Tensor:
    r, s, t = v.unbind(1)
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    return ((s > 0) & (safe_s * torch.exp(torch.clamp(r / safe_s, max=RHO_LIMIT)) <= t)) | \
        ((r <= 0) & (s == 0) & (t >= 0))


def in_exp_dual_cone(v: Tensor) -> Tensor:
    u, w_, w = v.unbind(1)
    safe_u = torch.where(u < 0, u, -torch.ones_like(u))
    return ((u < 0) & (-safe_u * torch.exp(torch.clamp(w_ / safe_u, max=RHO_LIMIT)) <= math.e * w)) | \
        ((u == 0) & (w_ >= 0) & (w >= 0))


def _exp_newton(rho: Tensor, r0: Tensor, s0: Tensor, t0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The sign of f(rho) and two Newton iterates: on
    phi = log(A e^rho + Q t0^-) - log(B e^-rho + Q t0^+), which has the sign of f and is close to
    linear in the tails where f is exponential, and on f itself, which is close to linear near the
    bracket's ends where phi has a log singularity. Evaluated in log space (no overflow)."""
    a = ((rho - 1.0) * r0 + s0).clamp_min(0.0)
    b = (r0 - rho * s0).clamp_min(0.0)
    q = rho * rho - rho + 1.0
    tneg, tpos = (-t0).clamp_min(0.0), t0.clamp_min(0.0)
    la, lqn = torch.log(a) + rho, torch.log(q * tneg)
    lb, lqp = torch.log(b) - rho, torch.log(q * tpos)
    lhs, rhs = torch.logaddexp(la, lqn), torch.logaddexp(lb, lqp)
    dq = (2.0 * rho - 1.0) / q
    safe_a = torch.where(a > 0, a, torch.ones_like(a))
    safe_b = torch.where(b > 0, b, torch.ones_like(b))
    dlhs = torch.exp(la - lhs) * (r0 + a) / safe_a + torch.exp(lqn - lhs) * dq
    drhs = -torch.exp(lb - rhs) * (s0 + b) / safe_b + torch.exp(lqp - rhs) * dq
    phi = lhs - rhs
    newton_phi = rho - phi / (dlhs - drhs)
    # f / e^rhs = e^phi - 1 and f' / e^rhs = e^phi dlhs - drhs: the same Newton step as on f
    ephi = torch.exp(phi)
    newton_f = rho - (ephi - 1.0) / (ephi * dlhs - drhs)
    return torch.sign(phi), newton_phi, newton_f


def _exp_bracket(r0: Tensor, s0: Tensor) -> tuple[Tensor, Tensor]:
    """The interval of rho where A = (rho - 1) r0 + s0 > 0 and B = r0 - rho s0 > 0, clipped to
    [-RHO_LIMIT, RHO_LIMIT]."""
    lo = torch.full_like(r0, -RHO_LIMIT)
    hi = torch.full_like(r0, RHO_LIMIT)
    safe_r = torch.where(r0 != 0, r0, torch.ones_like(r0))
    safe_s = torch.where(s0 != 0, s0, torch.ones_like(s0))
    lo = torch.where(r0 > 0, torch.maximum(lo, 1.0 - s0 / safe_r), lo)
    hi = torch.where(r0 < 0, torch.minimum(hi, 1.0 - s0 / safe_r), hi)
    hi = torch.where(s0 > 0, torch.minimum(hi, r0 / safe_s), hi)
    lo = torch.where(s0 < 0, torch.maximum(lo, r0 / safe_s), lo)
    return lo.clamp(-RHO_LIMIT, RHO_LIMIT), hi.clamp(-RHO_LIMIT, RHO_LIMIT)


def _exp_root(r0: Tensor, s0: Tensor, t0: Tensor, start: Tensor | None = None) -> Tensor:
    """The root of f on its bracket (the safeguard of Numerical Recipes' ``rtsafe``): the Newton
    step on phi when it stays inside the bracket, else the Newton step on f; either only when it is
    at most half the step before it, else the bracket's midpoint. The bracket shrinks around the
    sign change. An end of the bracket that the linear conditions leave open starts one unit from
    the other; ``start`` (the roots of a previous call on nearby points) is used where it lies
    inside the bracket."""
    lo, hi = _exp_bracket(r0, s0)
    open_lo, open_hi = lo <= -RHO_LIMIT, hi >= RHO_LIMIT
    rho = torch.where(open_lo & ~open_hi, hi - 1.0, torch.where(open_hi & ~open_lo, lo + 1.0, 0.5 * (lo + hi)))
    if start is not None:
        rho = torch.where((start > lo) & (start < hi), start, rho)
    last_step = hi - lo
    done = torch.zeros_like(rho, dtype=torch.bool)
    for _ in range(EXP_NEWTON_ITERS):
        sign, newton_phi, newton_f = _exp_newton(rho, r0, s0, t0)
        lo = torch.where(sign < 0, rho, lo)
        hi = torch.where(sign > 0, rho, hi)
        inside_phi = torch.isfinite(newton_phi) & (newton_phi > lo) & (newton_phi < hi)
        inside_f = torch.isfinite(newton_f) & (newton_f > lo) & (newton_f < hi)
        newton = torch.where(inside_phi, newton_phi, newton_f)
        step = (newton - rho).abs()
        # converged: a Newton step at rounding level (it may land on the bracket's end) or an exact zero
        converged = (torch.isfinite(newton) & (step <= 1e-13 * (1.0 + rho.abs()))) | (sign == 0)
        fast = (inside_phi | inside_f) & (step <= 0.5 * last_step)
        nxt = torch.where(fast, newton, 0.5 * (lo + hi))
        nxt = torch.where(converged, torch.minimum(torch.maximum(newton, lo), hi), nxt)
        nxt = torch.where(sign == 0, rho, nxt)
        last_step = (nxt - rho).abs()
        rho = torch.where(done, rho, nxt)
        done = done | converged
        if bool(done.all()):
            break
    return rho


def _exp_boundary_point(r0: Tensor, s0: Tensor, t0: Tensor, rho: Tensor) -> Tensor:
    """The projection ``s (rho, 1, e^rho)`` from the root. Two exact formulas for it: ``s = A / Q``, or
    ``t = s e^rho = t0 + B e^-rho / Q`` (the normal component has length ``B e^-rho / Q``). Each
    loses digits to cancellation in a different regime (A ~ 0 when the point is nearly projected
    onto the ray (0, 0, 1), t0 + lambda ~ 0 near the other end), so each point uses the one whose
    sum is better conditioned."""
    q = rho * rho - rho + 1.0
    a = (rho - 1.0) * r0 + s0
    inf = torch.full_like(a, math.inf)
    cond_a = torch.where(a > 0, (((rho - 1.0) * r0).abs() + s0.abs()) / a.abs().clamp_min(1e-300), inf)
    lam = (r0 - rho * s0) * torch.exp(-rho) / q
    t = t0 + lam
    cond_t = torch.where(t > 0, (t0.abs() + lam.abs()) / t.abs().clamp_min(1e-300), inf)
    from_a = a / q
    use_a = cond_a <= cond_t
    s = torch.where(use_a, from_a, t * torch.exp(-rho))
    t_out = torch.where(use_a, from_a * torch.exp(rho), t)
    return torch.stack([s * rho, s, t_out], dim=1)


def project_exp(v: Tensor, start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Rows (r, s, t) of ``v`` (``(k, 3)``) onto the exponential cone, and the roots found (pass them
    back as ``start`` when projecting nearby points: Newton then needs two or three steps).
    Computed in float64 whatever ``v``'s dtype (float32's exp overflows at 88, and the root needs
    the digits)."""
    if v.dtype != torch.float64:
        p, rho = project_exp(v.double(), None if start is None else start.double())
        return p.to(v.dtype), rho
    r0, s0, t0 = v.unbind(1)
    inside = in_exp_cone(v)
    polar = in_exp_dual_cone(-v)
    corner = (r0 <= 0) & (s0 <= 0)
    easy = inside | polar | corner
    corner_pt = torch.stack([r0.clamp(max=0.0), torch.zeros_like(r0), t0.clamp(min=0.0)], dim=1)
    if bool(easy.all()):
        best = corner_pt
        rho = start if start is not None else torch.zeros_like(r0)
    else:
        # points handled in closed form get a harmless stand-in so the root finder sees a valid bracket
        one = torch.ones_like(r0)
        rr, ss, tt = torch.where(easy, one, r0), torch.where(easy, one, s0), torch.where(easy, 0 * one, t0)
        rho = _exp_root(rr, ss, tt, start)
        boundary = _exp_boundary_point(rr, ss, tt, rho)
        # safeguard: the nearest of the root's point and the two closed-form points that are always in K
        cands = torch.stack([boundary, corner_pt, torch.zeros_like(v)], dim=0)
        dist = torch.linalg.vector_norm(cands - v[None], dim=2)
        dist = torch.where(torch.isfinite(dist), dist, torch.full_like(dist, math.inf))
        best = cands.gather(0, dist.argmin(0)[None, :, None].expand(1, -1, 3))[0]
        if start is not None:
            rho = torch.where(easy, start, rho)
    out = torch.where(corner[:, None], corner_pt, best)
    out = torch.where(polar[:, None], torch.zeros_like(v), out)
    return torch.where(inside[:, None], v, out), rho


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
