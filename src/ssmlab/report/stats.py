"""Small statistics every experiment's analysis needs: seed aggregates and fitted slopes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Fit:
    """Least-squares line y = slope * x + intercept with the slope's standard error."""

    slope: float
    intercept: float
    stderr: float
    r2: float

    def within(self, expected: float, tol: float) -> bool:
        return bool(np.isfinite(self.slope)) and abs(self.slope - expected) <= tol


def linear_fit(x: Iterable[float], y: Iterable[float]) -> Fit:
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2 or np.ptp(x) == 0:
        return Fit(float("nan"), float("nan"), float("nan"), float("nan"))
    A = np.stack([x, np.ones_like(x)], 1)
    (slope, icpt), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (slope * x + icpt)
    dof = max(x.size - 2, 1)
    se = float(np.sqrt(resid @ resid / dof / ((x - x.mean()) @ (x - x.mean()))))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else 1.0
    return Fit(float(slope), float(icpt), se, r2)


def loglog_fit(x: Iterable[float], y: Iterable[float]) -> Fit:
    """Slope of log y against log x (points with non-positive values dropped)."""
    x, y = np.asarray(list(x), float), np.asarray(list(y), float)
    keep = (x > 0) & (y > 0)
    return linear_fit(np.log(x[keep]), np.log(y[keep]))


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def group_by(items: Iterable[T], key: Callable[[T], object]) -> dict[object, list[T]]:
    out: dict[object, list[T]] = defaultdict(list)
    for it in items:
        out[key(it)].append(it)
    return dict(out)


def fmt_pm(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
