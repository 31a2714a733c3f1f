"""Optional dependencies. scikit-learn (``regspec[data]``) serves the bundled data sets and
matplotlib (``regspec[plot]``) the plots; a feature that needs one says which extra installs it."""
from __future__ import annotations

import importlib
from types import ModuleType

from regspec.diagnostics import Span, error

#: importable module -> (distribution name, extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "sklearn": ("scikit-learn", "data"),
    "matplotlib": ("matplotlib", "plot"),
}


def require(module: str, feature: str, span: Span | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.datasets"``) or raise a located ``RegspecError`` that
    names the feature, the missing distribution and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if (exc.name or top).split(".")[0] != top:
            raise  # the package is there but broken: not a missing extra
        dist, extra = EXTRAS.get(top, (top, "all"))
        raise error(f"{feature} needs {dist}, which is not installed", span,
                    [f"install it with: pip install 'regspec[{extra}]' (or pip install {dist})"]) from None
