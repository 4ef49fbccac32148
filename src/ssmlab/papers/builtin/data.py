"""Selective copying (Gu & Dao 2023, "Mamba", §3.1 and Table 1), small enough for a laptop.

Glossary (code name -> paper):
    seq_len     length of the noisy region (the paper: 4096; here 16 in the quick profile)
    n_tokens    number of data tokens to copy, K (the paper: 16)
    vocab       number of distinct data tokens (the paper: 16)

A sequence is `seq_len` positions holding K data tokens at uniformly random, sorted positions and
the blank token 0 elsewhere, followed by K marker tokens; at the K marker positions the model
must output the K data tokens in order. Token ids: 0 blank, 1..vocab data, vocab + 1 marker.
Labels are data token - 1 in {0, .., vocab - 1}, one per marker position.

Why it separates mixers: the spacing between data tokens varies, so a time-invariant (LTI)
filter cannot know where to look; an input-dependent Δ lets a selective SSM ignore blanks
("selection"). Pure: the same (config, seed) gives the same tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def selective_copying(n: int, seq_len: int, n_tokens: int, vocab: int,
                      seed: int) -> tuple[Tensor, Tensor]:
    """n sequences: inputs (n, seq_len + n_tokens) int64 and labels (n, n_tokens) int64."""
    if not 1 <= n_tokens <= seq_len:
        raise ValueError(f"need 1 <= n_tokens <= seq_len, got {n_tokens}, {seq_len}")
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, seq_len, generator=g).argsort(1)[:, :n_tokens].sort(1).values  # (n, K)
    toks = torch.randint(1, vocab + 1, (n, n_tokens), generator=g)  # (n, K)
    x = torch.zeros(n, seq_len + n_tokens, dtype=torch.long)  # (n, L)
    x.scatter_(1, pos, toks)
    x[:, seq_len:] = vocab + 1
    return x, toks - 1
