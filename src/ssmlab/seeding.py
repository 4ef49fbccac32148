"""Seeds: one integer per run, split into disjoint streams so train and test never share one.

`split_seed(s, "train")` is even and `split_seed(s, "test")` is odd for every run seed s, so the
train and test ranges are disjoint by construction; "init" (model initialisation) lives in a
third, separate range.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Split = Literal["train", "test", "init"]
_INIT_OFFSET = 1 << 40


def split_seed(seed: int, split: Split) -> int:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if split == "train":
        return 2 * seed
    if split == "test":
        return 2 * seed + 1
    if split == "init":
        return _INIT_OFFSET + seed
    raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'init'")


def generator(seed: int, split: Split) -> torch.Generator:
    """A torch.Generator for one stream of one run (no global RNG state touched)."""
    return torch.Generator().manual_seed(split_seed(seed, split))


def numpy_rng(seed: int, split: Split) -> np.random.Generator:
    return np.random.default_rng(split_seed(seed, split))
