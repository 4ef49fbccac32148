"""Majority of bits with training-only flip noise (generalization paper, Sec. 5, "Majority").

Glossary (code name -> paper):
    T           sequence length T
    n_train     m, number of training samples (paper: 1000)
    n_test      number of test samples (paper: 1000)
    flip_prob   probability that a 1 in a *training* input flips to 0 (paper: 0.25)

Data model (as in the authors' code, gen_err_sel_ssm `create_majority_dataset`):
    the number of ones k ~ U{0, .., T}; the k ones are placed at uniformly random positions;
    the label is 1[k > T/2], computed from the clean sequence *before* noise; then, in the
    training inputs only, every 1 flips to 0 independently with probability `flip_prob`.
    Test inputs are clean. Labels are returned as ±1 floats (ssmlab's binary convention; the
    trainer's BCE maps them to {0, 1}).

Pure: the same (config, seed) gives the same tensors; train and test use disjoint seed
streams (`ssmlab.seeding.split_seed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.seeding import numpy_rng

MAX_T = 2**16  # sanity limit on the length; the experiments' memory estimates refuse the rest
MAX_SAMPLES = 10**7


class MajorityConfig(StrictModel):
    """Majority-of-bits task. Defaults are the paper's sizes."""

    T: int = Field(100, ge=1, le=MAX_T, description="sequence length")
    n_train: int = Field(1000, ge=1, le=MAX_SAMPLES)
    n_test: int = Field(1000, ge=1, le=MAX_SAMPLES)
    flip_prob: float = Field(0.25, ge=0, le=1, description="train-only 1->0 flip probability")


@dataclass
class MajorityData:
    """Token tensors (int64, values in {0, 1}) and ±1 labels.

    x_train: (n_train, T) noisy training inputs; x_train_clean: (n_train, T) before noise;
    y_train: (n_train,) ±1; x_test: (n_test, T) clean; y_test: (n_test,) ±1.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_train_clean: Tensor

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.x_test, self.y_test


def _clean_sequences(rng: np.random.Generator, n: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) 0/1 sequences with k ~ U{0..T} ones at random positions, and k (n,)."""
    k = rng.integers(0, T + 1, size=n)  # (n,)
    # Random positions: the k smallest of T i.i.d. uniform keys mark the ones (a uniformly random
    # k-subset), vectorised over samples.
    ranks = rng.random((n, T)).argsort(axis=1).argsort(axis=1)  # (n, T) a random permutation
    x = (ranks < k[:, None]).astype(np.int64)  # (n, T)
    return x, k


def majority_bits(cfg: MajorityConfig, seed: int) -> MajorityData:
    """Build the task for one run seed (see module docstring for the data model)."""
    r_train, r_test = numpy_rng(seed, "train"), numpy_rng(seed, "test")
    x_tr, k_tr = _clean_sequences(r_train, cfg.n_train, cfg.T)
    x_te, k_te = _clean_sequences(r_test, cfg.n_test, cfg.T)
    y_tr = np.where(k_tr > cfg.T / 2, 1.0, -1.0)  # labels before noise
    y_te = np.where(k_te > cfg.T / 2, 1.0, -1.0)
    flips = (r_train.random(x_tr.shape) < cfg.flip_prob) & (x_tr == 1)  # (n_train, T)
    x_noisy = np.where(flips, 0, x_tr)
    return MajorityData(
        x_train=torch.from_numpy(x_noisy),
        y_train=torch.from_numpy(y_tr).float(),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te).float(),
        x_train_clean=torch.from_numpy(x_tr),
    )
