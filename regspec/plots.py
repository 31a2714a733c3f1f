"""Pictures of results, drawn with matplotlib's non-interactive Agg backend and written as PNG
beside the files they depict. matplotlib is the optional extra ``regspec[plot]``: without it
``available()`` is False and callers skip the picture with a one-line note (``missing_note``).

* ``training_curves``: a run's ``metrics.jsonl`` -> ``curves.png``: task and validation loss,
  other validation metrics, each regularizer's value and weight, and the per-epoch sparsity,
  rank and spectral norm of the tensors the terms select.
* ``convergence``: a first-order solve's residual history (``Result.history``) -> the
  residuals per iteration on a log scale, with the stopping tolerance (``regspec solve --plot``).
  The sweep path is drawn by ``regspec.sweep.plot``.

Every plotting function returns the series it drew, so tests can check the picture's data
against the run's own records. numpy and matplotlib are imported inside the functions.
"""
from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from regspec.files import write_atomic

__all__ = ["available", "missing_note", "pyplot", "read_metrics", "training_series", "training_curves",
           "convergence_series", "convergence", "write_png"]

#: one curve: x values (epochs completed) and y values (NaN where the run logged nothing)
Series = tuple[list[float], list[float]]
LEGEND_CHARS = 48


def available() -> bool:
    """Whether matplotlib can be imported (without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def missing_note(what: str) -> str:
    return f"note: {what} not drawn: matplotlib is not installed (pip install 'regspec[plot]')"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (a located error naming the extra when missing)."""
    from regspec.extras import require

    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Render ``fig`` and write it atomically (``regspec.files.write_atomic``)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


# ------------------------------------------------------------------ training curves
def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, from a crash mid-write, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _panel_of(key: str) -> str | None:
    """Which panel a metric key belongs to (None: not drawn)."""
    if key in ("loss", "val_loss"):
        return "loss"
    if key.startswith("val_"):
        return "validation"
    if key.startswith("reg/"):
        return "regularizer values"
    if key.startswith("weight/"):
        return "regularizer weights"
    if key.startswith("tensor/"):
        return {"zero_frac": "sparsity (fraction of exact zeros)", "rank": "rank",
                "spectral_norm": "spectral norm"}.get(key.rsplit("/", 1)[-1])
    return None


PANELS = ("loss", "validation", "regularizer values", "regularizer weights",
          "sparsity (fraction of exact zeros)", "rank", "spectral norm")


def training_series(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Series]]:
    """panel -> metric key -> (epochs completed, values), in the order the run logged them."""
    records = list(records)
    xs = [float(_number(r.get("epoch")) + 1) for r in records]
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    out: dict[str, dict[str, Series]] = {}
    for key in keys:
        panel = _panel_of(key)
        if panel is not None:
            ys = [_number(r.get(key)) for r in records]
            if any(math.isfinite(y) for y in ys):
                out.setdefault(panel, {})[key] = (xs, ys)
    return {p: out[p] for p in PANELS if p in out}


def _label(key: str) -> str:
    for prefix in ("reg/", "weight/", "tensor/"):
        key = key.removeprefix(prefix)
    if key.count("/") == 1 and key.endswith(("/zero_frac", "/rank", "/spectral_norm")):
        key = key.rsplit("/", 1)[0]
    return key if len(key) <= LEGEND_CHARS else key[:LEGEND_CHARS - 1] + "…"


def _log_scale_fits(series: dict[str, Series]) -> bool:
    ys = [y for _, vals in series.values() for y in vals if math.isfinite(y)]
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) >= 100


def training_curves(records: Iterable[dict[str, Any]], path: Path, title: str = "") -> dict[str, dict[str, Series]]:
    """Draw the run's records (``metrics.jsonl``) as ``path`` (PNG), one panel per kind of
    quantity; returns the series drawn (see ``training_series``)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    series = training_series(records)
    cols = 2 if len(series) > 1 else 1
    rows = max(1, math.ceil(len(series) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.3 * rows), squeeze=False)
    for ax, (panel, curves) in zip(axes.flat, series.items()):
        for key, (xs, ys) in curves.items():
            ax.plot(xs, ys, marker="." if len(xs) <= 50 else None, linewidth=1.2, label=_label(key))
        if panel in ("loss", "regularizer values", "regularizer weights") and _log_scale_fits(curves):
            ax.set_yscale("log")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    if not series:
        axes[0, 0].text(0.5, 0.5, "no epoch finished yet", ha="center", va="center")
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    write_png(fig, path)
    return series


# ------------------------------------------------------------------ solver convergence
def convergence_series(history: Iterable[dict[str, float]]) -> dict[str, Series]:
    """residual name -> (iterations, values) from a solver's history (one dict per check)."""
    history = list(history)
    xs = [_number(h.get("iteration")) for h in history]
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k != "iteration" and k not in keys]
    return {k: (xs, [_number(h.get(k)) for h in history]) for k in keys}


def convergence(history: Iterable[dict[str, float]], path: Path, *, tol: float | None = None,
                keys: Iterable[str] | None = None, title: str = "") -> dict[str, Series]:
    """Residuals per iteration (log scale): relative ones (``*_rel``, which the stopping rule
    compares with ``tol``) on the left panel, absolute ones on the right; ``keys`` keeps only
    those quantities (e.g. the result's residuals, leaving out step sizes). Returns the series."""
    plt = pyplot()
    series = convergence_series(history)
    if keys is not None:
        wanted = set(keys)
        series = {k: v for k, v in series.items() if k in wanted}
    groups = {"relative (the stopping rule)": {k: v for k, v in series.items() if k.endswith("_rel")},
              "absolute": {k: v for k, v in series.items() if not k.endswith("_rel")}}
    groups = {name: g for name, g in groups.items() if g} or {"residuals": {}}
    fig, axes = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 4.0), squeeze=False)
    for ax, (name, curves) in zip(axes[0], groups.items()):
        for key, (xs, ys) in curves.items():
            ax.plot(xs, [y if y > 0 else math.nan for y in ys], marker="." if len(xs) <= 60 else None,
                    linewidth=1.2, label=key)
        if tol is not None and name.startswith("relative"):
            ax.axhline(tol, color="black", linestyle="--", linewidth=1, label=f"tol {tol:.1g}")
        if curves:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no iteration history recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or "convergence")
    fig.tight_layout()
    write_png(fig, path)
    return series
