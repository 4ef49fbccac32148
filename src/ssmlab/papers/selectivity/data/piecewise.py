"""Piecewise-constant targets on [0, 1) (selectivity paper, approximation claim: discontinuous
functions with m pieces), sampled as cell averages on a grid of L = 2^J cells.

Glossary (code name -> paper symbol):
    pieces      m       number of constant pieces (m - 1 jumps)
    grid        L       cells of width 1/L; g[i] = L ∫_{i/L}^{(i+1)/L} g(t) dt
    breaks      a_1 < ... < a_{m-1}    jump locations, uniform in (0, 1), sorted
    heights     c_1 .. c_m             piece values, i.i.d. N(0, 1)

Cell averages (not point samples) make the grid vector the exact L2 projection of the
continuous target onto functions constant on the cells, so discrete Haar analysis of the vector
equals continuous Haar analysis of g for every level j < J. Jumps fall inside cells (never
exactly on a dyadic point, almost surely), so no finite set of Haar levels represents g
exactly: the approximation error keeps decaying level by level until the grid resolution.

Pure: `piecewise_constant(cfg, seed)` draws from `numpy_rng(seed, "train")`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from ssmlab.config import StrictModel
from ssmlab.seeding import numpy_rng

MAX_GRID = 2**16  # sanity limit; the experiments' memory estimates refuse what does not fit


class PiecewiseConfig(StrictModel):
    pieces: int = Field(4, ge=1, le=MAX_GRID, description="m (at most one piece per cell)")
    grid: int = Field(1024, ge=2, le=MAX_GRID, description="L, a power of two")
    min_gap: float = Field(0.02, ge=0, lt=1, description="minimum distance between jumps")

    @model_validator(mode="after")
    def _check(self) -> PiecewiseConfig:
        if self.grid & (self.grid - 1):
            raise ValueError(f"grid must be a power of two, got {self.grid}")
        if (self.pieces - 1) * self.min_gap >= 1:
            raise ValueError(f"{self.pieces} pieces cannot be {self.min_gap} apart in [0, 1)")
        if self.pieces > self.grid:
            raise ValueError(f"pieces={self.pieces} must be <= grid={self.grid} (cells)")
        return self


@dataclass(frozen=True)
class PiecewiseTarget:
    values: np.ndarray  # (L,) cell averages
    breaks: np.ndarray  # (m - 1,)
    heights: np.ndarray  # (m,)


def cell_averages(breaks: np.ndarray, heights: np.ndarray, L: int) -> np.ndarray:
    """Exact cell averages of the step function with the given breaks and heights: (L,)."""
    edges = np.concatenate([[0.0], breaks, [1.0]])
    grid = np.arange(L + 1) / L
    # antiderivative G(x) = ∫_0^x g, piecewise linear, evaluated on the cell edges
    cum = np.concatenate([[0.0], np.cumsum(heights * np.diff(edges))])
    idx = np.clip(np.searchsorted(edges, grid, side="right") - 1, 0, len(heights) - 1)
    G = cum[idx] + heights[idx] * (grid - edges[idx])
    return np.diff(G) * L


def piecewise_constant(cfg: PiecewiseConfig, seed: int) -> PiecewiseTarget:
    rng = numpy_rng(seed, "train")
    m = cfg.pieces
    for _ in range(1000):
        breaks = np.sort(rng.uniform(0.0, 1.0, size=m - 1))
        gaps = np.diff(np.concatenate([[0.0], breaks, [1.0]]))
        if m == 1 or gaps.min() >= cfg.min_gap:
            break
    heights = rng.standard_normal(m)
    return PiecewiseTarget(values=cell_averages(breaks, heights, cfg.grid), breaks=breaks,
                           heights=heights)
