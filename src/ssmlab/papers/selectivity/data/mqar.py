"""Multi-query associative recall (MQAR) in the zoology format (Arora et al. 2023, `multiquery_ar`).

Glossary (code name -> selectivity paper / zoology):
    vocab_size      |V|     tokens 0..|V|-1
    0               blank   the filler between queries ("0" in zoology's example)
    keys            K       tokens 1 .. |V|/2 - 1           (n_keys = |V|/2 - 1)
    values          V       tokens |V|/2 .. |V| - 1         (n_values = |V| - |V|/2)
    num_kv_pairs    P       distinct keys per sequence, each with one value
    seq_len         L       input length
    power_a         a       query gaps drawn with p(g) ∝ a g^(a-1), g = 1..space (zoology)

Layout of one sequence (L = 2P + 2·space, zoology's `multiquery_ar` with random_non_queries=False):

    k_1 v_1 k_2 v_2 ... k_P v_P | 0 0 k_3 0 k_1 0 ... 0 k_2 0 ...
    labels: -100 everywhere except at each query position, where the label is the query's value

Queries sit at even offsets 2·g (g distinct, drawn without replacement) of the query region, so
two queries are never adjacent; every key of the context is queried exactly once. Keys of one
sequence are distinct, so every query's key appeared exactly once before it and each answer is
unique (tested invariants). Values are drawn without replacement too (zoology), so P ≤ n_keys
and P ≤ n_values.

Deviation from zoology, on purpose: zoology's default `random_non_queries=True` fills the
blanks with random tokens, which can repeat a key and break "the query's key appeared exactly
once"; the selectivity paper's constructions assume the blank filler, so that is the only
format here.

Pure: `MQARConfig.sample(n, seed, part)` uses `numpy_rng(seed, "train" | "test")`, so the same
(config, n, seed, part) gives the same tensors and train / test draws never share a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.data.task import Part
from ssmlab.seeding import numpy_rng

IGNORE = -100
BLANK = 0
MAX_LEN = 2**16  # sanity limits; the experiments' memory estimates refuse what does not fit
MAX_VOCAB = 2**16
MAX_EXAMPLES = 10**7


class MQARConfig(StrictModel):
    """One MQAR distribution (zoology's MQARConfig without random_non_queries)."""

    vocab_size: int = Field(16, ge=6, le=MAX_VOCAB,
                            description="tokens; keys 1..V/2-1, values V/2..V-1")
    seq_len: int = Field(32, ge=4, le=MAX_LEN, description="input length L (even)")
    num_kv_pairs: int = Field(4, ge=1, le=MAX_LEN // 4, description="P key-value pairs per sequence")
    power_a: float = Field(0.01, gt=0, le=1, description="query gap power law (1 = uniform)")
    num_examples: int = Field(256, ge=1, le=MAX_EXAMPLES)

    @model_validator(mode="after")
    def _check(self) -> MQARConfig:
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even, got {self.seq_len}")
        if self.num_kv_pairs > self.n_keys or self.num_kv_pairs > self.n_values:
            raise ValueError(
                f"num_kv_pairs={self.num_kv_pairs} needs that many distinct keys and values; "
                f"vocab_size={self.vocab_size} gives {self.n_keys} keys, {self.n_values} values"
            )
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(
                f"seq_len={self.seq_len} too short for {self.num_kv_pairs} pairs and their "
                f"queries (needs >= 4·P = {4 * self.num_kv_pairs})"
            )
        return self

    @property
    def n_keys(self) -> int:
        return self.vocab_size // 2 - 1

    @property
    def n_values(self) -> int:
        return self.vocab_size - self.vocab_size // 2

    @property
    def key_tokens(self) -> np.ndarray:
        return np.arange(1, self.vocab_size // 2)

    @property
    def value_tokens(self) -> np.ndarray:
        return np.arange(self.vocab_size // 2, self.vocab_size)

    def sample(self, n: int, seed: int, part: Part = "train") -> MQARData:
        """n examples of `part` for run seed `seed` (pure; ssmlab.data.task.Sampler)."""
        return multiquery_ar(self.model_copy(update={"num_examples": n}), seed, part)


@dataclass(frozen=True)
class MQARData:
    """inputs, labels (S, L) int64; keys / values (S, P) the pairs in context order;
    query_pos (S, P) position of the query of keys[:, i]; slices: metadata for splitting."""

    inputs: Tensor
    labels: Tensor
    keys: Tensor
    values: Tensor
    query_pos: Tensor
    slices: dict[str, int]


def query_gap_probs(space: int, power_a: float) -> np.ndarray:
    """zoology's gap law p(g) ∝ a · g^(a-1), g = 1..space, normalised."""
    p = power_a * np.arange(1, space + 1, dtype=float) ** (power_a - 1)
    return p / p.sum()


def multiquery_ar(cfg: MQARConfig, seed: int, split: Literal["train", "test"] = "train") -> MQARData:
    rng = numpy_rng(seed, split)
    S, P, L = cfg.num_examples, cfg.num_kv_pairs, cfg.seq_len
    ctx = 2 * P
    space = (L - ctx) // 2
    keys = np.stack([rng.choice(cfg.key_tokens, size=P, replace=False) for _ in range(S)])  # (S, P)
    values = np.stack([rng.choice(cfg.value_tokens, size=P, replace=False) for _ in range(S)])
    p = query_gap_probs(space, cfg.power_a)
    gaps = np.stack([rng.choice(space, size=P, replace=False, p=p) for _ in range(S)])  # (S, P)
    inputs = np.full((S, L), BLANK, dtype=np.int64)
    inputs[:, 0:ctx:2] = keys
    inputs[:, 1:ctx:2] = values
    query_pos = ctx + 2 * gaps  # (S, P)
    rows = np.arange(S)[:, None]
    inputs[rows, query_pos] = keys
    labels = np.full((S, L), IGNORE, dtype=np.int64)
    labels[rows, query_pos] = values
    return MQARData(
        inputs=torch.from_numpy(inputs), labels=torch.from_numpy(labels),
        keys=torch.from_numpy(keys), values=torch.from_numpy(values),
        query_pos=torch.from_numpy(query_pos),
        slices={"num_kv_pairs": P, "seq_len": L, "vocab_size": cfg.vocab_size},
    )
