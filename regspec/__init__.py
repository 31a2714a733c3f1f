"""regspec: a declarative optimization-graph compiler.

``regspec.load(path_or_text)`` parses a `.reg` spec; ``regspec.solve(spec, ...)`` compiles one
problem block to CVXPY or to torch and solves it. Every error from bad input is a
``regspec.RegspecError`` carrying located diagnostics.
"""
from regspec.api import Spec, choose_backend, load, solve
from regspec.diagnostics import RegspecError
from regspec.result import Result
from regspec.train_api import attach, compile_trainer, train

__all__ = ["Spec", "load", "solve", "choose_backend", "RegspecError", "Result", "attach", "compile_trainer", "train"]
__version__ = "0.1.0"
