"""The DCP composition rule (Grant & Boyd), shared by every atom, with human-readable reasons."""
from __future__ import annotations

from typing import Sequence

from regspec.compiler.catalogue.base import Curvature, Mono, Sign


def compose(name: str, intrinsic: Curvature, monos: Sequence[Mono], curvs: Sequence[Curvature],
            arg_texts: Sequence[str]) -> tuple[Curvature, str | None]:
    """Curvature of ``f(g_1, ..., g_k)`` from f's curvature and monotonicity and the g_i's curvature.

    Returns (curvature, reason); reason explains the first argument that breaks the rule.
    """
    if all(c is Curvature.CONSTANT for c in curvs):
        return Curvature.CONSTANT, None
    if intrinsic is Curvature.AFFINE:
        result = Curvature.AFFINE
        for i, (m, c) in enumerate(zip(monos, curvs)):
            if c.is_affine:
                continue
            if m is Mono.INCREASING:
                result = result + c
            elif m is Mono.DECREASING:
                result = result + (-c)
            else:
                return Curvature.UNKNOWN, (f"{name} is affine but not monotone in argument {i + 1}, "
                                           f"and `{arg_texts[i]}` is {c.value}")
            if result is Curvature.UNKNOWN:
                return result, f"{name} mixes convex and concave arguments (`{arg_texts[i]}` is {c.value})"
        return result, None
    if intrinsic not in (Curvature.CONVEX, Curvature.CONCAVE):
        return Curvature.UNKNOWN, f"{name} has no known curvature"
    for i, (m, c) in enumerate(zip(monos, curvs)):
        if c.is_affine:
            continue
        if c is Curvature.UNKNOWN:
            return Curvature.UNKNOWN, f"the argument `{arg_texts[i]}` of {name} has unknown curvature"
        same = (c is Curvature.CONVEX) == (intrinsic is Curvature.CONVEX)
        needed = Mono.INCREASING if same else Mono.DECREASING
        if m is not needed:
            how = "not monotone" if m is Mono.NONMONOTONE else m.value
            return Curvature.UNKNOWN, (f"{name} is {intrinsic.value}, but its argument `{arg_texts[i]}` is "
                                       f"{c.value} and {name} is {how}" +
                                       (f" (it would need to be {needed.value})" if m is not Mono.NONMONOTONE else ""))
    return intrinsic, None


def scale(curv: Curvature, sign: Sign) -> Curvature:
    """Curvature of ``c * g`` for a constant c of the given sign."""
    if curv.is_affine:
        return curv
    if sign.nonneg:
        return curv
    if sign.nonpos:
        return -curv
    return Curvature.UNKNOWN
