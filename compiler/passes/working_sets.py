"""Whether a FISTA problem has the shape the torch backend's working sets take (``regspec explain``):
one vector variable that the smooth part reads only through one product ``A @ x`` with ``A`` data
or a parameter, i.e. a smooth part ``phi(A x)``. The torch backend decides on the lowered program
(``backends/torch/working_set.py``: it also needs a prox kernel declared entrywise or grouped, and
enough entries or groups to skip); this is the IR-level half, with no torch import.
"""
from __future__ import annotations

from regspec.compiler.catalogue import Curvature
from regspec.compiler.ir import IR


def composite_product(ir: IR, split) -> int | None:
    """The ``matmul`` node through which the smooth part reads the only (vector) variable, or None."""
    variables = ir.nodes_of("var")
    if split.algorithm != "fista" or len(variables) != 1 or len(ir[variables[0]]["shape"]) != 1:
        return None
    var = variables[0]
    smooth: set[int] = set()
    for term in split.smooth:
        smooth |= ir.ancestors(term.core) | {term.core}
    uses = [u for u in ir.graph.successors(var) if u in smooth]
    if len(uses) != 1:
        return None
    d = ir[uses[0]]
    args = d.get("args", [])
    if d.get("atom") != "matmul" or len(args) != 2 or args[1] != var or args[0] == var:
        return None
    if ir[args[0]]["curvature"] is not Curvature.CONSTANT or len(ir[args[0]]["shape"]) != 2:
        return None
    return uses[0]


def working_set_lines(ir: IR, split) -> list[str]:
    """The explain line naming the working-set path, when the IR has its shape."""
    node = composite_product(ir, split)
    if node is None:
        return []
    return [f"  working sets: the smooth part reads the variable only through `{ir.text(node)}` (phi(A x)); "
            "with a prox kernel declared entrywise or grouped and enough entries or groups to skip "
            "(working_set.worth_it), FISTA runs on a growing working set (its inner solves on the set's Gram "
            "matrix when phi is quadratic) and the certificate above is checked on every coordinate of the "
            "full problem (result info['working_set'] gives the sizes; otherwise plain FISTA)"]
