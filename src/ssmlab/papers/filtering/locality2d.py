"""2-D locality-structured images: the filtering paper's locality data model on an H×W grid.

Why: the paper (arXiv 2602.12499, slides) reads its locality theorem as the reason why scans that
keep 2-D neighbours close in the sequence (Hilbert) beat row-wise scans. Here the class evidence
sits in a small patch of the grid and the grid is flattened by any order of
`ssmlab.data.scan_orders`, so the same image gives sequences whose ΔL⁺ depends on the scan.

Each image holds exactly two o_+ and two o_- tokens (the filtering basis, data.py),
the rest irrelevant features, all with noise τ. Positive image: the two o_+ tokens are 4-neighbours
(a 1×2 or 2×1 patch, orientation and position uniform) and the two o_- tokens lie at Manhattan
distance ≥ `far_min`; negative image: the reverse. Tokens are returned in row-major cell order
(N, H·W, d); flatten them with `flatten(X, scan_order(name, H, W))`.

Meta (per image): close_a, close_b, far_a, far_b — row-major cell indices of the pairs — used to
compute each scan's sequence distances (`pair_distances`).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator

from ssmlab.config import StrictModel
from ssmlab.data.scan_orders import inverse
from ssmlab.data.task import Part
from ssmlab.papers.filtering.data import (
    MAX_D,
    MAX_TAU,
    MINUS,
    PLUS,
    Basis,
    FeatureSequences,
    Noise,
    _balanced_labels,
    _tokens,
    orthonormal_basis,
)
from ssmlab.seeding import split_seed

MAX_SIDE = 256  # grid side: L = H·W ≤ 2**16 tokens (the profiles use 8×8)
MIN_FAR_FRACTION = 1e-4  # the far pair is placed by rejection sampling (see _place)


def far_pair_fraction(H: int, W: int, far_min: int) -> float:
    """Fraction of the unordered pairs of distinct cells of an H×W grid at Manhattan distance
    ≥ far_min: the acceptance rate of the far pair's rejection sampling."""
    dr = np.arange(H)[:, None]
    dc = np.arange(W)[None, :]
    # ordered pairs at offset (±dr, ±dc): (H - dr)(W - dc), times 2 per sign that is not 0
    count = (H - dr) * (W - dc) * np.where(dr > 0, 2, 1) * np.where(dc > 0, 2, 1)
    far = count[(dr + dc) >= far_min].sum()
    return float(far) / (H * W * (H * W - 1))


class LocalityGridConfig(StrictModel):
    """2-D locality images (module doc)."""

    H: int = Field(8, ge=2, le=MAX_SIDE, description="grid rows")
    W: int = Field(8, ge=2, le=MAX_SIDE, description="grid columns")
    d: int = Field(32, ge=4, le=MAX_D, description="token dimension (= number of features)")
    tau: float = Field(0.01, ge=0, le=MAX_TAU, description="noise level τ")
    noise: Noise = "total"
    basis: Basis = "random"
    far_min: int = Field(4, ge=2, le=2 * (MAX_SIDE - 1),
                         description="min Manhattan distance of the spread-out pair")

    @model_validator(mode="after")
    def _check(self) -> LocalityGridConfig:
        if self.far_min > (self.H - 1) + (self.W - 1):
            raise ValueError(f"far_min={self.far_min} exceeds the grid's diameter "
                             f"{self.H - 1 + self.W - 1} (H={self.H}, W={self.W})")
        frac = far_pair_fraction(self.H, self.W, self.far_min)
        if frac < MIN_FAR_FRACTION:
            # the far pair is drawn by rejection: ~1/frac draws per image
            raise ValueError(f"far_min={self.far_min} leaves only {frac:.1e} of the cell pairs of "
                             f"the {self.H}×{self.W} grid far enough (need ≥ "
                             f"{MIN_FAR_FRACTION:g}); lower far_min or enlarge H, W")
        return self

    @property
    def L(self) -> int:
        return self.H * self.W

    def _place(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        H, W = self.H, self.W
        while True:
            if rng.random() < 0.5:  # horizontal neighbours
                r, c = int(rng.integers(0, H)), int(rng.integers(0, W - 1))
                a, b = r * W + c, r * W + c + 1
            else:  # vertical neighbours
                r, c = int(rng.integers(0, H - 1)), int(rng.integers(0, W))
                a, b = r * W + c, (r + 1) * W + c
            f1, f2 = (int(v) for v in rng.choice(H * W, size=2, replace=False))
            (r1, c1), (r2, c2) = divmod(f1, W), divmod(f2, W)
            if abs(r1 - r2) + abs(c1 - c2) < self.far_min:
                continue
            if len({a, b, f1, f2}) == 4:
                return a, b, min(f1, f2), max(f1, f2)

    def sample(self, n: int, seed: int, part: Part, dtype: torch.dtype = torch.float32
               ) -> FeatureSequences:
        rng = np.random.default_rng(split_seed(seed, part))
        basis = orthonormal_basis(self.d, seed, self.basis, dtype)
        y = _balanced_labels(rng, n)
        feats = rng.integers(2, self.d, size=(n, self.L))
        pos = np.empty((n, 4), np.int64)
        for i in range(n):
            a, b, f1, f2 = self._place(rng)
            close, far = (PLUS, MINUS) if y[i] > 0 else (MINUS, PLUS)
            feats[i, [a, b]] = close
            feats[i, [f1, f2]] = far
            pos[i] = (a, b, f1, f2)
        X = _tokens(feats, basis, rng, self.tau, self.noise, dtype)
        meta = {k: torch.as_tensor(pos[:, j]) for j, k in
                enumerate(("close_a", "close_b", "far_a", "far_b"))}
        return FeatureSequences(X, torch.as_tensor(y, dtype=dtype), torch.as_tensor(feats),
                                basis, meta)


def pair_distances(meta: dict[str, torch.Tensor], order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequence distances (close pair, far pair) of every image under a scan order."""
    pos = inverse(np.asarray(order))
    close = np.abs(pos[meta["close_a"].numpy()] - pos[meta["close_b"].numpy()])
    far = np.abs(pos[meta["far_a"].numpy()] - pos[meta["far_b"].numpy()])
    return close, far
