"""The one catalogue of atoms and sets. ``ATOMS`` and ``SETS`` map names to entry instances."""
from __future__ import annotations

from regspec.compiler.catalogue.atoms import ATOM_CLASSES
from regspec.compiler.catalogue.base import Atom, Curvature, Mono, Prox, SetEntry, Shape, ShapeError, Sign
from regspec.compiler.catalogue.sets import SET_CLASSES

ATOMS: dict[str, Atom] = {cls.name: cls() for cls in ATOM_CLASSES}
SETS: dict[str, SetEntry] = {cls.name: cls() for cls in SET_CLASSES}

# Operators of the language and the atoms they denote.
OPERATORS = {"+": "add", "-": "sub", "*": "multiply", "/": "divide", "@": "matmul", "**": "power"}

# Bare names with a fixed meaning in argument position (groupings for group norms, pair builders).
SYMBOLS = {"rows", "cols", "channels"}

__all__ = ["ATOMS", "SETS", "OPERATORS", "SYMBOLS", "Atom", "SetEntry", "Curvature", "Mono", "Prox", "Shape",
           "ShapeError", "Sign"]
