"""KEEP n-TH (selectivity paper, Sec. on memory decay): output the n-th token of a length-T
sequence at its last position.

Glossary (code name -> paper symbol):
    seq_len     T       sequence length
    n           n       which token to keep (1-based: the answer is tokens[n - 1])
    vocab_size  |V|     tokens 0..|V|-1, drawn i.i.d. uniformly

Sequence: x_1 ... x_T i.i.d. uniform; label -100 everywhere except at position T, whose label is
x_n. The paper's exact vocabulary, n and T grid were not published (its reachable text gives
none of them; README.md, "The setting"): the defaults (|V| = 16, n = 4; the memory experiment
uses |V| = 8) are ours, exposed as config. To retain x_n until step T a model must
keep its memory factor e^{-λΔ_t} ≈ 1 for t > n (Lemma 2), and may erase everything before n.

Pure: `sample(n, seed, part)` draws from `numpy_rng(seed, part)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.data.task import Part
from ssmlab.seeding import numpy_rng

IGNORE = -100
MAX_LEN = 2**16  # sanity limits; the experiments' memory estimates refuse what does not fit
MAX_VOCAB = 2**16
MAX_EXAMPLES = 10**7


class KeepNthConfig(StrictModel):
    vocab_size: int = Field(16, ge=2, le=MAX_VOCAB)
    seq_len: int = Field(32, ge=1, le=MAX_LEN, description="T")
    n: int = Field(4, ge=1, le=MAX_LEN, description="1-based position of the token to keep")
    num_examples: int = Field(256, ge=1, le=MAX_EXAMPLES)

    @model_validator(mode="after")
    def _check(self) -> KeepNthConfig:
        if self.n > self.seq_len:
            raise ValueError(f"n={self.n} must be <= seq_len={self.seq_len}")
        return self

    def sample(self, n: int, seed: int, part: Part = "train") -> KeepNthData:
        """n examples of `part` for run seed `seed` (pure; ssmlab.data.task.Sampler)."""
        return keep_nth(self.model_copy(update={"num_examples": n}), seed, part)


@dataclass(frozen=True)
class KeepNthData:
    """inputs, labels (S, T) int64; answer (S,) = inputs[:, n - 1]."""

    inputs: Tensor
    labels: Tensor
    answer: Tensor
    slices: dict[str, int]


def keep_nth(cfg: KeepNthConfig, seed: int, split: Literal["train", "test"] = "train") -> KeepNthData:
    rng = numpy_rng(seed, split)
    x = torch.from_numpy(rng.integers(0, cfg.vocab_size, size=(cfg.num_examples, cfg.seq_len)))
    answer = x[:, cfg.n - 1].clone()  # (S,)
    labels = torch.full_like(x, IGNORE)
    labels[:, -1] = answer
    return KeepNthData(inputs=x, labels=labels, answer=answer,
                       slices={"seq_len": cfg.seq_len, "n": cfg.n})
