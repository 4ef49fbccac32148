"""Figure helpers: mean and confidence band over seeds, fitted slope against the predicted one.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot, so no global backend is chosen
on import and no figure is registered anywhere) rendered to PNG files inside the experiment's
figdir, so a figure can be redrawn from the results store alone (no logging service).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ssmlab.report.stats import Fit


def new_figure(ncols: int = 1, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * ncols, height))
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def mean_band(
    ax: Axes, x: Sequence[float], ys: Sequence[Sequence[float]], label: str | None = None,
    z: float = 1.96, **kw,
) -> None:
    """Plot the mean over seeds (rows of ys aligned with x) with a ±z·SEM band."""
    arr = np.asarray(ys, float)  # (S, len(x))
    if arr.ndim == 1:
        arr = arr[None]
    m = np.nanmean(arr, 0)
    n = np.maximum(np.sum(np.isfinite(arr), 0), 1)
    sem = np.nanstd(arr, 0, ddof=1) / np.sqrt(n) if arr.shape[0] > 1 else np.zeros_like(m)
    (line,) = ax.plot(x, m, label=label, **kw)
    ax.fill_between(x, m - z * sem, m + z * sem, color=line.get_color(), alpha=0.2, lw=0)


def fit_line(ax: Axes, x: Sequence[float], fit: Fit, predicted: float | None = None,
             loglog: bool = True, label: str = "fit") -> None:
    """Draw a fitted line (in log-log when loglog) and, if given, the predicted slope through
    the same centre point, so the two slopes can be compared by eye."""
    x = np.asarray(x, float)
    xs = np.linspace(x.min(), x.max(), 50) if not loglog else np.geomspace(x.min(), x.max(), 50)
    lx = np.log(xs) if loglog else xs
    y = fit.slope * lx + fit.intercept
    ax.plot(xs, np.exp(y) if loglog else y, "k--", lw=1, label=f"{label}: slope {fit.slope:.2f}")
    if predicted is not None:
        c = lx.mean()
        yp = predicted * (lx - c) + (fit.slope * c + fit.intercept)
        ax.plot(xs, np.exp(yp) if loglog else yp, ":", color="tab:red", lw=1.5,
                label=f"predicted slope {predicted:g}")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")


def save(fig: Figure, figdir: Path, name: str) -> str:
    """Save as PNG into figdir and return the file name (what Claim.figure stores)."""
    figdir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figdir / name, dpi=110)
    return name
