"""The one catalogue of atoms and sets. ``ATOMS`` and ``SETS`` map names to entry instances.

Atoms live in thematic modules (one small class per atom): ``atoms`` (operators, reductions,
starter norms), ``atoms_elementwise``, ``atoms_norms`` (group, fusion and TV terms),
``atoms_matrix`` (spectral and structural), ``atoms_builders`` (compile-time pair lists).
"""
from __future__ import annotations

from regspec.compiler.catalogue.atoms import ATOM_CLASSES
from regspec.compiler.catalogue.atoms_builders import BUILDER_CLASSES
from regspec.compiler.catalogue.atoms_elementwise import ELEMENTWISE_CLASSES
from regspec.compiler.catalogue.atoms_matrix import MATRIX_CLASSES
from regspec.compiler.catalogue.atoms_norms import NORM_CLASSES
from regspec.compiler.catalogue.base import Atom, Curvature, Mono, Prox, SetEntry, Shape, ShapeError, Sign
from regspec.compiler.catalogue.sets import SET_CLASSES

ALL_ATOM_CLASSES: list[type[Atom]] = [*ATOM_CLASSES, *ELEMENTWISE_CLASSES, *NORM_CLASSES, *MATRIX_CLASSES,
                                      *BUILDER_CLASSES]
ATOMS: dict[str, Atom] = {cls.name: cls() for cls in ALL_ATOM_CLASSES}
SETS: dict[str, SetEntry] = {cls.name: cls() for cls in SET_CLASSES}
assert len(ATOMS) == len(ALL_ATOM_CLASSES), "two atoms share a name"
assert len(SETS) == len(SET_CLASSES), "two sets share a name"

# Operators of the language and the atoms they denote.
OPERATORS = {"+": "add", "-": "sub", "*": "multiply", "/": "divide", "@": "matmul", "**": "power"}

# Bare names with a fixed meaning in argument position: groupings for group norms.
SYMBOLS = {"rows", "cols", "channels"}

__all__ = ["ATOMS", "SETS", "OPERATORS", "SYMBOLS", "Atom", "SetEntry", "Curvature", "Mono", "Prox", "Shape",
           "ShapeError", "Sign"]
