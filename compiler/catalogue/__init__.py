"""The one catalogue of atoms and sets. ``ATOMS`` and ``SETS`` map names to entry instances.

Atoms live in thematic modules (one small class per atom): ``atoms`` (operators, reductions,
starter norms), ``atoms_elementwise``, ``atoms_norms`` (group, fusion and TV terms),
``atoms_matrix`` (spectral and structural), ``atoms_builders`` (compile-time pair lists),
``atoms_cvxpy_names`` (elementwise and reduction atoms under CVXPY's names), ``atoms_training``
(weight decay, anchors, orthogonality, FLOPs, Jacobian: terms that come from training). An
entry's ``aliases`` are other spellings of it; ``cvxpy_notes`` explain CVXPY names spelled
differently here.
"""
from __future__ import annotations

from regspec.compiler.catalogue.atoms import ATOM_CLASSES
from regspec.compiler.catalogue.atoms_builders import BUILDER_CLASSES
from regspec.compiler.catalogue.atoms_cvxpy_names import CVXPY_NAME_CLASSES
from regspec.compiler.catalogue.atoms_elementwise import ELEMENTWISE_CLASSES
from regspec.compiler.catalogue.atoms_matrix import MATRIX_CLASSES
from regspec.compiler.catalogue.atoms_norms import NORM_CLASSES
from regspec.compiler.catalogue.atoms_training import TRAINING_CLASSES
from regspec.compiler.catalogue.base import (Atom, Curvature, Mono, Prox, SetEntry, Shape, ShapeError, Sign,
                                             TrainUse)
from regspec.compiler.catalogue.sets import SET_CLASSES

ALL_ATOM_CLASSES: list[type[Atom]] = [*ATOM_CLASSES, *ELEMENTWISE_CLASSES, *NORM_CLASSES, *MATRIX_CLASSES,
                                      *BUILDER_CLASSES, *CVXPY_NAME_CLASSES, *TRAINING_CLASSES]
ATOMS: dict[str, Atom] = {cls.name: cls() for cls in ALL_ATOM_CLASSES}
SETS: dict[str, SetEntry] = {cls.name: cls() for cls in SET_CLASSES}
assert len(ATOMS) == len(ALL_ATOM_CLASSES), "two atoms share a name"
# Derived from the entries' own ``aliases`` and ``cvxpy_notes`` (not a second table of atoms).
# Read from each class's own body: a subclass (min of max) does not inherit its parent's spellings.
ALIASES: dict[str, str] = {alias: cls.name for cls in ALL_ATOM_CLASSES for alias in vars(cls).get("aliases", ())}
CVXPY_NOTES: dict[str, str] = {name: note for cls in ALL_ATOM_CLASSES
                               for name, note in vars(cls).get("cvxpy_notes", {}).items()}
assert not ALIASES.keys() & ATOMS.keys(), "an alias shadows an atom"
assert not CVXPY_NOTES.keys() & (ATOMS.keys() | ALIASES.keys()), "a CVXPY note for a name that resolves"
assert len(SETS) == len(SET_CLASSES), "two sets share a name"

# Operators of the language and the atoms they denote.
OPERATORS = {"+": "add", "-": "sub", "*": "multiply", "/": "divide", "@": "matmul", "**": "power"}

# Bare names with a fixed meaning in argument position: groupings for group norms.
SYMBOLS = {"rows", "cols", "channels"}

__all__ = ["ATOMS", "ALIASES", "CVXPY_NOTES", "SETS", "OPERATORS", "SYMBOLS", "Atom", "SetEntry", "Curvature",
           "Mono", "Prox", "Shape", "ShapeError", "Sign", "TrainUse"]
