"""The filtering paper's data models: majority-voting and locality-structured feature sequences.

Paper: arXiv 2602.12499 (ICLR 2026), Shandirasegaran et al.; README.md beside this module, "The
setting", states both data models (our sources give no section numbers).
No code was released; unpublished details are config options with the default named below.

Glossary (code name -> paper symbol):
    basis[0]        o_+         class feature of the positive class
    basis[1]        o_-         class feature of the negative class
    basis[2:]       o_3..o_d    class-irrelevant features
    features        -           (N, L) index of each token's feature in `basis` (0, 1, >=2)
    tau             τ           token noise level, x_l = o + ξ
    alpha_r         α_r         fraction of "relevant" tokens (the label's feature)
    alpha_c         α_c         fraction of "confusing" tokens (the other class feature)
    delta_close     ΔL⁺         distance of the locally concentrated pair (the label's feature)
    delta_far       ΔL⁻         distance of the spread-out pair (the other class feature)
    y               z           label in {+1, -1}

Choices for unpublished details (defaults first):
    - basis: a random orthogonal basis of R^d per data seed ("random"; drawn from a stream of
      its own so train and test share it), or the standard basis ("standard").
    - noise: ξ ~ N(0, τ² I_d / d) so that ‖ξ‖ ≈ τ ("total"), or ξ ~ N(0, τ² I_d) ("per_coord").
      The theory needs τ < O(1/d).
    - majority counts: exactly round(α_r L) relevant and round(α_c L) confusing tokens per
      sequence ("exact"), or per-token multinomial draws with those probabilities ("multinomial";
      a sequence whose draw ties or inverts the majority is redrawn so the label invariant holds).
    - irrelevant tokens: uniform over o_3..o_d, positions uniform at random.
    - labels: exactly balanced (N/2 of each sign, rounded), in random order.
    - locality placement: both pairs' first positions uniform over the valid starts, redrawn until
      the four positions are distinct (pairs may interleave).

Purity: `sample(n, seed, part)` is a pure function of (config, n, seed, part) (the task protocol,
ssmlab.data.task); the token stream is `split_seed(seed, part)` (train even, test odd: disjoint),
the basis stream is shared by the two parts of one seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.data.task import Part
from ssmlab.seeding import split_seed

PLUS, MINUS = 0, 1  # indices of o_+ and o_- in the basis

# Sanity limits of the settable sizes (the papers use L <= 64, d <= 128): far above any profile,
# low enough that a typo cannot ask for an absurd tensor. What fits the machine is decided by
# the experiments' memory estimates, not here.
MAX_L = 2**14  # sequence length; the closed-form model holds (N, L, L) matrices
MAX_D = 4096  # token dimension = number of basis features (a d×d QR per seed)
MAX_TAU = 10.0  # noise level: 10× the unit feature norm already drowns every feature
_BASIS_STREAM = 1 << 42  # basis seeds live above train/test (2s, 2s+1) and init (2^40 + s)

Noise = Literal["total", "per_coord"]
Basis = Literal["random", "standard"]


@dataclass
class FeatureSequences:
    """A labelled set of feature sequences with slice metadata.

    X (N, L, d) tokens; y (N,) labels ±1 (float); features (N, L) int64 index into basis;
    basis (d, d) orthonormal rows o_k; meta: per-sample tensors (N,) for slicing accuracy.
    """

    X: Tensor
    y: Tensor
    features: Tensor
    basis: Tensor
    meta: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def batch(self) -> tuple[Tensor, Tensor]:
        return self.X, self.y


def basis_seed(seed: int) -> int:
    """The seed of the feature basis of run seed `seed` (shared by its train and test splits)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return _BASIS_STREAM + seed


def orthonormal_basis(d: int, seed: int, kind: Basis = "random",
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """(d, d) with orthonormal rows: Haar-random (QR of a Gaussian with the sign fix) or I_d."""
    if kind == "standard":
        return torch.eye(d, dtype=dtype)
    rng = np.random.default_rng(basis_seed(seed))
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))[None, :]  # Haar measure (Mezzadri 2007)
    return torch.as_tensor(q.T.copy(), dtype=dtype)  # rows are the basis vectors


def _noise(rng: np.random.Generator, shape: tuple[int, ...], tau: float, kind: Noise) -> np.ndarray:
    d = shape[-1]
    std = tau / np.sqrt(d) if kind == "total" else tau
    return rng.standard_normal(shape) * std


def _balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    y = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    if n % 2:
        y[-1] = rng.choice([1.0, -1.0])
    return rng.permutation(y)


def _tokens(features: np.ndarray, basis: Tensor, rng: np.random.Generator, tau: float,
            kind: Noise, dtype: torch.dtype) -> Tensor:
    B = basis.to(torch.float64).numpy()  # (d, d)
    X = B[features]  # (N, L, d)
    X = X + _noise(rng, X.shape, tau, kind)
    return torch.as_tensor(X, dtype=dtype)


class _SequenceConfig(StrictModel):
    L: int = Field(20, ge=4, le=MAX_L, description="sequence length")
    d: int = Field(32, ge=4, le=MAX_D, description="token dimension (= number of basis features)")
    tau: float = Field(0.01, ge=0, le=MAX_TAU, description="noise level τ")
    noise: Noise = Field("total", description="'total': ξ~N(0,τ²I/d); 'per_coord': ξ~N(0,τ²I)")
    basis: Basis = Field("random", description="random orthogonal basis per seed, or standard")

    def make_basis(self, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return orthonormal_basis(self.d, seed, self.basis, dtype)


class MajorityConfig(_SequenceConfig):
    """Majority-voting sequences (README.md, "The setting"): the label's feature holds a
    majority of the class tokens.

    In a positive sequence α_r L tokens are o_+ ("relevant"), α_c L are o_- ("confusing"), the
    rest irrelevant; negative sequences swap o_+ and o_-."""

    alpha_r: float = Field(0.4, gt=0, le=1)
    alpha_c: float = Field(0.2, ge=0, lt=1)
    counts: Literal["exact", "multinomial"] = "exact"

    @model_validator(mode="after")
    def _check(self) -> MajorityConfig:
        n_r, n_c = self.n_relevant, self.n_confusing
        if n_r <= n_c:
            raise ValueError(f"need round(alpha_r*L)={n_r} > round(alpha_c*L)={n_c} "
                             f"(alpha_r={self.alpha_r}, alpha_c={self.alpha_c}, L={self.L})")
        if n_r + n_c > self.L:
            raise ValueError(f"alpha_r + alpha_c must be <= 1, got {self.alpha_r + self.alpha_c}")
        if n_r + n_c < self.L and self.d < 3:
            raise ValueError("irrelevant tokens need d >= 3")
        return self

    @property
    def n_relevant(self) -> int:
        return int(round(self.alpha_r * self.L))

    @property
    def n_confusing(self) -> int:
        return int(round(self.alpha_c * self.L))

    @property
    def gap(self) -> float:
        """α_r - α_c as realised by the integer counts (exact mode)."""
        return (self.n_relevant - self.n_confusing) / self.L

    def _class_counts(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.counts == "exact":
            return np.full(n, self.n_relevant), np.full(n, self.n_confusing)
        p = [self.alpha_r, self.alpha_c, 1 - self.alpha_r - self.alpha_c]
        rel, conf = np.empty(n, int), np.empty(n, int)
        for i in range(n):
            while True:
                c = rng.multinomial(self.L, p)
                if c[0] > c[1]:
                    rel[i], conf[i] = c[0], c[1]
                    break
        return rel, conf

    def sample(self, n: int, seed: int, part: Part, dtype: torch.dtype = torch.float32
               ) -> FeatureSequences:
        """n sequences of `part` for run seed `seed` (pure; ssmlab.data.task.Sampler)."""
        rng = np.random.default_rng(split_seed(seed, part))
        basis = self.make_basis(seed, dtype)
        y = _balanced_labels(rng, n)
        rel, conf = self._class_counts(rng, n)
        L, d = self.L, self.d
        feats = rng.integers(2, d, size=(n, L)) if d > 2 else np.zeros((n, L), int)
        for i in range(n):
            pos = rng.permutation(L)
            own, other = (PLUS, MINUS) if y[i] > 0 else (MINUS, PLUS)
            feats[i, pos[: rel[i]]] = own
            feats[i, pos[rel[i] : rel[i] + conf[i]]] = other
        X = _tokens(feats, basis, rng, self.tau, self.noise, dtype)
        n_plus = (feats == PLUS).sum(1)
        n_minus = (feats == MINUS).sum(1)
        meta = {
            "n_plus": torch.as_tensor(n_plus),
            "n_minus": torch.as_tensor(n_minus),
            "gap": torch.as_tensor((rel - conf) / L, dtype=torch.float64),
        }
        return FeatureSequences(X, torch.as_tensor(y, dtype=dtype), torch.as_tensor(feats),
                                basis, meta)


class LocalityConfig(_SequenceConfig):
    """Locality-structured sequences (README.md, "The setting"): exactly two o_+ and two o_-
    tokens, the rest irrelevant. In a positive sequence the o_+ pair is ΔL⁺ apart (close) and
    the o_- pair ΔL⁻ apart (far); in a negative one the reverse. The label is the locally
    concentrated feature."""

    delta_close: int = Field(2, ge=1, le=MAX_L - 1,
                             description="ΔL⁺: distance of the label feature's pair")
    delta_far: int = Field(8, ge=2, le=MAX_L - 1,
                           description="ΔL⁻: distance of the other feature's pair")

    @model_validator(mode="after")
    def _check(self) -> LocalityConfig:
        if self.delta_close >= self.delta_far:
            raise ValueError(f"need delta_close < delta_far, got {self.delta_close} >= "
                             f"{self.delta_far}")
        if self.delta_far > self.L - 1:
            raise ValueError(f"delta_far={self.delta_far} does not fit in L={self.L}")
        if self.delta_far == self.L - 1 and self.delta_close >= self.L - 2:
            raise ValueError("the two pairs cannot be placed on distinct positions")
        return self

    @property
    def gap(self) -> float:
        """g = (1/2)^{ΔL⁺} - (1/2)^{ΔL⁻}, the quantity the locality bounds depend on."""
        return 0.5**self.delta_close - 0.5**self.delta_far

    def _place(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        L, dc, df = self.L, self.delta_close, self.delta_far
        while True:
            a = int(rng.integers(0, L - dc))
            b = int(rng.integers(0, L - df))
            if len({a, a + dc, b, b + df}) == 4:
                return a, a + dc, b, b + df

    def sample(self, n: int, seed: int, part: Part, dtype: torch.dtype = torch.float32
               ) -> FeatureSequences:
        """n sequences of `part` for run seed `seed` (pure; ssmlab.data.task.Sampler)."""
        rng = np.random.default_rng(split_seed(seed, part))
        basis = self.make_basis(seed, dtype)
        y = _balanced_labels(rng, n)
        L, d = self.L, self.d
        feats = rng.integers(2, d, size=(n, L))
        dist_plus = np.empty(n, int)
        dist_minus = np.empty(n, int)
        for i in range(n):
            c0, c1, f0, f1 = self._place(rng)
            close, far = (PLUS, MINUS) if y[i] > 0 else (MINUS, PLUS)
            feats[i, [c0, c1]] = close
            feats[i, [f0, f1]] = far
            dist_plus[i] = (c1 - c0) if y[i] > 0 else (f1 - f0)
            dist_minus[i] = (f1 - f0) if y[i] > 0 else (c1 - c0)
        X = _tokens(feats, basis, rng, self.tau, self.noise, dtype)
        meta = {
            "dist_plus": torch.as_tensor(dist_plus),
            "dist_minus": torch.as_tensor(dist_minus),
            "gap": torch.full((n,), self.gap, dtype=torch.float64),
        }
        return FeatureSequences(X, torch.as_tensor(y, dtype=dtype), torch.as_tensor(feats),
                                basis, meta)


def pair_distance(features: Tensor, feature: int) -> Tensor:
    """(N,) distance between the first and last occurrence of `feature` per sequence (-1 if
    it occurs fewer than twice); a check of the locality invariant independent of `meta`."""
    hit = features == feature  # (N, L)
    L = features.shape[1]
    idx = torch.arange(L).expand_as(features)
    first = torch.where(hit, idx, L).min(1).values
    last = torch.where(hit, idx, -1).max(1).values
    ok = hit.sum(1) >= 2
    return torch.where(ok, last - first, torch.full_like(last, -1))
