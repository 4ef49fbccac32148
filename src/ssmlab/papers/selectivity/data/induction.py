"""Induction heads (Olsson et al. 2022; the synthetic task of the Mamba paper, Gu & Dao 2023,
Sec. 4.1.2), used by the selectivity paper to compare Mamba-ΔT with Mamba.

Glossary:
    vocab_size  |V|     tokens 0..|V|-1; the last one, |V|-1, is the trigger s
    seq_len     T       sequence length
    trigger     s       appears exactly twice: at a random position p ≤ T-3, and at T-1

Sequence: x_t uniform over the |V|-1 ordinary tokens, except x_p = x_{T-1} = s. The label is
-100 everywhere except at T-1, whose label is x_{p+1} (the token that followed the first
trigger): "copy what came after the last time you saw this token".

Pure: `sample(n, seed, part)` draws from `numpy_rng(seed, part)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.data.task import Part
from ssmlab.seeding import numpy_rng

IGNORE = -100
MAX_LEN = 2**16  # sanity limits; the experiments' memory estimates refuse what does not fit
MAX_VOCAB = 2**16
MAX_EXAMPLES = 10**7


class InductionConfig(StrictModel):
    """vocab_size ≥ 3: the trigger plus at least two ordinary tokens (a copy task needs a
    choice); seq_len ≥ 4: a first trigger at p ≤ T - 3, its successor, and the final trigger."""

    vocab_size: int = Field(16, ge=3, le=MAX_VOCAB)
    seq_len: int = Field(32, ge=4, le=MAX_LEN)
    num_examples: int = Field(256, ge=1, le=MAX_EXAMPLES)

    @property
    def trigger(self) -> int:
        return self.vocab_size - 1

    def sample(self, n: int, seed: int, part: Part = "train") -> InductionData:
        """n examples of `part` for run seed `seed` (pure; ssmlab.data.task.Sampler)."""
        return induction_heads(self.model_copy(update={"num_examples": n}), seed, part)


@dataclass(frozen=True)
class InductionData:
    """inputs, labels (S, T) int64; trigger_pos (S,) = p; answer (S,) = inputs[:, p + 1]."""

    inputs: Tensor
    labels: Tensor
    trigger_pos: Tensor
    answer: Tensor
    slices: dict[str, int]


def induction_heads(cfg: InductionConfig, seed: int,
                    split: Literal["train", "test"] = "train") -> InductionData:
    rng = numpy_rng(seed, split)
    S, T = cfg.num_examples, cfg.seq_len
    x = rng.integers(0, cfg.vocab_size - 1, size=(S, T))  # ordinary tokens only
    p = rng.integers(0, T - 2, size=S)  # first trigger at p <= T - 3, so p + 1 < T - 1
    rows = np.arange(S)
    x[rows, p] = cfg.trigger
    x[:, -1] = cfg.trigger
    answer = x[rows, p + 1]
    labels = np.full((S, T), IGNORE, dtype=np.int64)
    labels[:, -1] = answer
    return InductionData(inputs=torch.from_numpy(x), labels=torch.from_numpy(labels),
                         trigger_pos=torch.from_numpy(p), answer=torch.from_numpy(answer),
                         slices={"seq_len": T, "vocab_size": cfg.vocab_size})
