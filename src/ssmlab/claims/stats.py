"""Intervals for measured numbers: every number a claim is judged on is an `Estimate`, a point
value with a 95% interval and the way the interval was made.

- over seeds: a bootstrap over seeds (`scipy.stats.bootstrap`, percentile method, a fixed
  random state so that a report is reproducible from its store), widened to the Student-t
  interval when that is wider: value ± t_{n−1} · SE, SE = s/√n for a mean and the bootstrap's
  standard error · √(n/(n−1)) for any other statistic. The percentile bootstrap alone
  under-covers with few seeds (with 2 seeds its interval is the two values' range; with 3 it
  lies within their range); the t-widening keeps a 2- or 3-seed PASS honest, and for 10+ seeds
  the two agree, so it rarely matters there. Statistics of several cells measured with the
  same seeds (a difference, an ordering margin) resample whole seeds, so the pairing is kept
  (`paired=True`).
- fitted slopes: the least-squares slope's t-interval (`scipy.stats.linregress` standard
  error, n - 2 degrees of freedom); `seed_bootstrap` refits on resampled seeds instead when the
  points of one seed are not independent.
- exact: a deterministic computation (a construction, a closed form) has no spread; its
  interval is the point itself.

With one seed there is no interval: the estimate's bounds are NaN and the verdict cannot settle
(INCONCLUSIVE) unless the number is exact. The report prints n beside each interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
N_RESAMPLES = 2000
RANDOM_STATE = 0  # fixed: the same stored runs give the same interval


@dataclass(frozen=True)
class Estimate:
    """value with its interval [low, high]; n = how many `unit`s (seeds, runs, fitted points)
    are behind it; method says how the interval was made; detail is free text (per-cell
    numbers) printed after it."""

    value: float
    low: float
    high: float
    n: int
    method: str
    detail: str = ""
    unit: str = "seeds"

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)

    def clipped(self, low: float | None, high: float | None) -> Estimate:
        """The interval cut to the quantity's range (a correlation in [-1, 1], an accuracy
        difference in [-1, 1]): a t-widened interval can reach past it."""
        lo = self.low if low is None else max(self.low, low)
        hi = self.high if high is None else min(self.high, high)
        return Estimate(self.value, lo, hi, self.n, self.method, self.detail, self.unit)

    def scaled(self, k: float, detail: str | None = None) -> Estimate:
        """The same estimate in other units (e.g. a slope per token -> per 100 tokens)."""
        lo, hi = sorted((k * self.low, k * self.high))
        return Estimate(k * self.value, lo, hi, self.n, self.method,
                        self.detail if detail is None else detail, self.unit)

    def with_detail(self, detail: str) -> Estimate:
        return Estimate(self.value, self.low, self.high, self.n, self.method, detail, self.unit)

    def format(self, digits: int = 3) -> str:
        v = _num(self.value, digits)
        if self.method == "exact":
            core = f"{v} (exact)"
        elif self.has_interval:
            core = (f"{v} [{_num(self.low, digits)}, {_num(self.high, digits)}] "
                    f"({self.method}, n={self.n} {self.unit})")
        else:
            core = f"{v} (no interval: {self.method}, n={self.n} {self.unit})"
        return f"{core}; {self.detail}" if self.detail else core


def _num(x: float, digits: int) -> str:
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 10 ** -(digits - 1) or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) >= 10 ** digits else f"{x:.{digits}f}".rstrip("0").rstrip(".")


def exact(value: float, detail: str = "") -> Estimate:
    v = float(value)
    return Estimate(v, v, v, 1, "exact", detail)


def _clean(values: Sequence[float]) -> np.ndarray:
    return np.asarray([float(v) for v in values], float)


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., float], paired: bool,
               vectorized: bool) -> tuple[float, float, float]:
    """(low, high) of the percentile interval and the bootstrap standard error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (all equal) warn; handled below
        res = stats.bootstrap(data, statistic, paired=paired, vectorized=vectorized,
                              confidence_level=LEVEL, n_resamples=N_RESAMPLES,
                              method="percentile", random_state=RANDOM_STATE)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi, float(res.standard_error)


def _t_widen(value: float, lo: float, hi: float, se: float, n: int) -> tuple[float, float]:
    """The union of [lo, hi] and value ± t_{n−1} · se (module docstring)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo = hi = value
    if n >= 2 and math.isfinite(se) and se > 0:
        half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * se
        lo, hi = min(lo, value - half), max(hi, value + half)
    return min(lo, value), max(hi, value)


def mean_ci(values: Sequence[float], detail: str = "", unit: str = "seeds") -> Estimate:
    """Mean over seeds (or over `unit`: "runs" when the values are seeds × cells) with its
    bootstrap interval. A non-finite value (a diverged run's NaN) makes the mean NaN: a
    diverged seed is not silently dropped."""
    v = _clean(values)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, f"no {unit}", detail, unit)
    m = float(v.mean())
    if not np.isfinite(v).all():
        return Estimate(math.nan, math.nan, math.nan, v.size, "a value is not finite", detail,
                        unit)
    if v.size == 1:
        return Estimate(m, math.nan, math.nan, 1, "one value", detail, unit)
    if np.ptp(v) == 0:
        return Estimate(m, m, m, v.size, f"bootstrap over {unit} (all equal)", detail, unit)
    lo, hi, _ = _bootstrap((v,), np.mean, paired=False, vectorized=True)
    lo, hi = _t_widen(m, lo, hi, float(v.std(ddof=1)) / math.sqrt(v.size), v.size)
    return Estimate(m, lo, hi, v.size, f"bootstrap over {unit}, t-widened", detail, unit)


def paired_ci(columns: Mapping[str, Sequence[float]], statistic: Callable[..., float],
              detail: str = "") -> Estimate:
    """statistic(*columns) with a bootstrap interval that resamples seeds, keeping each seed's
    values across the columns together (the columns are the same seeds, in the same order,
    measured in different cells). statistic takes one 1-d array per column and returns a
    float, e.g. `lambda a, b: a.mean() - b.mean()`."""
    cols = [_clean(c) for c in columns.values()]
    if not cols or cols[0].size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "no seeds", detail)
    n = cols[0].size
    if any(c.size != n for c in cols):
        raise ValueError(f"paired columns differ in length: {[c.size for c in cols]}")
    value = float(statistic(*cols))
    if not all(np.isfinite(c).all() for c in cols) or not math.isfinite(value):
        return Estimate(math.nan, math.nan, math.nan, n, "a seed is not finite", detail)
    if n == 1:
        return Estimate(value, math.nan, math.nan, 1, "one seed", detail)
    lo, hi, se = _bootstrap(tuple(cols), lambda *c: float(statistic(*c)), paired=True,
                            vectorized=False)
    lo, hi = _t_widen(value, lo, hi, se * math.sqrt(n / (n - 1)), n)
    return Estimate(value, lo, hi, n, "paired bootstrap over seeds, t-widened", detail)


def seed_bootstrap(per_seed: Sequence[object], statistic: Callable[[list], float],
                   detail: str = "") -> Estimate:
    """statistic(list of per-seed items) resampled over seeds: for a fit over all seeds' points
    (e.g. a log-log slope of steps against the gap), refit on each resample of whole seeds."""
    items = list(per_seed)
    if not items:
        return Estimate(math.nan, math.nan, math.nan, 0, "no seeds", detail)
    value = float(statistic(items))
    if not math.isfinite(value):
        return Estimate(value, math.nan, math.nan, len(items), "statistic not finite", detail)
    if len(items) == 1:
        return Estimate(value, math.nan, math.nan, 1, "one seed", detail)
    idx = np.arange(len(items), dtype=float)
    n = len(items)
    lo, hi, se = _bootstrap((idx,), lambda i: float(statistic([items[int(k)] for k in i])),
                            paired=False, vectorized=False)
    lo, hi = _t_widen(value, lo, hi, se * math.sqrt(n / (n - 1)), n)
    return Estimate(value, lo, hi, n, "bootstrap over seeds (refit), t-widened", detail)


def slope_ci(x: Sequence[float], y: Sequence[float], log: bool = False,
             detail: str = "") -> Estimate:
    """Least-squares slope of y on x (of log y on log x with log=True; non-positive points
    dropped) with its t-interval; fewer than 3 points or one distinct x: no interval."""
    xa, ya = _clean(x), _clean(y)
    if log:
        keep = (xa > 0) & (ya > 0)
        xa, ya = np.log(xa[keep]), np.log(ya[keep])
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    what = "log-log slope" if log else "slope"
    if xa.size < 2 or np.ptp(xa) == 0:
        return Estimate(math.nan, math.nan, math.nan, int(xa.size), f"{what}: too few points",
                        detail, "points")
    if np.ptp(ya) == 0:  # a flat line fits exactly: slope 0, no spread
        return Estimate(0.0, 0.0, 0.0, int(xa.size), f"{what}, exact fit (y constant)", detail,
                        "points")
    fit = stats.linregress(xa, ya)
    if xa.size < 3:
        return Estimate(float(fit.slope), math.nan, math.nan, 2, f"{what} through 2 points",
                        detail, "points")
    half = float(stats.t.ppf(0.5 + LEVEL / 2, xa.size - 2)) * float(fit.stderr)
    return Estimate(float(fit.slope), float(fit.slope) - half, float(fit.slope) + half,
                    int(xa.size), f"{what}, t-interval (r² {fit.rvalue ** 2:.2f})", detail,
                    "points")


def seeds_to_settle(est: Estimate, low: float | None, high: float | None) -> int | None:
    """About how many of the estimate's units (seeds, runs, fitted points) would make the
    interval clear the nearest bound of [low, high], assuming its half-width shrinks as 1/√n:
    n · (half-width / distance)². A rough guide: with few units the half-width itself is
    uncertain (a proportion near 0 or 1 needs more). None when the point sits on a bound, the
    number is exact or there is no interval."""
    if not est.has_interval or est.method == "exact" or est.n < 2:
        return None
    bounds = [b for b in (low, high) if b is not None and math.isfinite(b)]
    if not bounds:
        return None
    dist = min(abs(est.value - b) for b in bounds)
    half = max(est.high - est.value, est.value - est.low)
    if dist <= 0 or half <= 0:
        return None
    return max(est.n + 1, math.ceil(est.n * (half / dist) ** 2))
