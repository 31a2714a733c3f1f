"""regspec: a declarative optimization-graph compiler.

``regspec.load(path_or_text)`` parses a `.reg` spec; ``regspec.solve(spec, ...)`` compiles one
problem block to CVXPY or to torch and solves it. Every error from bad input is a
``regspec.RegspecError`` carrying located diagnostics.

The public names are imported on first use (PEP 562), so ``import regspec`` and the command
line's front end (``regspec check``) do not pay for numpy, lark, torch or CVXPY until a name that
needs them is touched.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names resolve lazily below
    from regspec.api import Spec, choose_backend, load, solve
    from regspec.diagnostics import RegspecError
    from regspec.result import Result
    from regspec.train_api import attach, compile_trainer, load_trained, train

_EXPORTS = {
    "Spec": "regspec.api", "load": "regspec.api", "solve": "regspec.api", "choose_backend": "regspec.api",
    "RegspecError": "regspec.diagnostics", "Result": "regspec.result",
    "attach": "regspec.train_api", "compile_trainer": "regspec.train_api", "train": "regspec.train_api",
    "load_trained": "regspec.train_api",
}

__all__ = ["Spec", "load", "solve", "choose_backend", "RegspecError", "Result", "attach", "compile_trainer", "train",
           "load_trained"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # `import regspec; regspec.api.X` worked when this file imported everything: keep it
        try:
            return importlib.import_module(f"regspec.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"regspec.{name}":
                raise
            raise AttributeError(f"module 'regspec' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
