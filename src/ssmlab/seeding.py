"""Seeds: one integer per run, split into disjoint streams so train and test never share one.

The one idiom: data and sampling take an explicit `generator(seed, split)` / `numpy_rng(seed,
split)`; code that draws from torch's global RNG (nn.Module initialisation) runs inside
`with seeded(split_seed(seed, "init")):`, which restores the global state on exit, so nothing
outside the block depends on it. Library code never calls `torch.manual_seed` directly.

`split_seed(s, "train")` is even and `split_seed(s, "test")` is odd for every run seed s, so the
train and test ranges are disjoint by construction; "init" (model initialisation) lives in a
third, separate range.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global (CPU) RNG seeded with `seed` inside the block and restored after it: for
    module initialisation, which draws from the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

