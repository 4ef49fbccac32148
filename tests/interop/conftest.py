"""Fixtures for the interop tests: tiny random checkpoints written into tmp_path (nothing is
downloaded). The transformers-based fixtures skip when the optional `hf` extra is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssmlab.interop.checkpoint import save_transformers
from ssmlab.interop.testing import TINY, perturb_


@pytest.fixture
def tiny_checkpoint(tmp_path: Path):
    """factory(arch="mamba", seed=0, dtype=float32) -> a transformers directory written by
    ssmlab (no transformers needed), weights perturbed away from their init values."""

    def make(arch: str = "mamba", seed: int = 0, dtype: torch.dtype = torch.float32,
             name: str | None = None) -> Path:
        torch.manual_seed(seed)
        lm = perturb_(TINY[arch].build(dtype=dtype), seed + 1)
        return save_transformers(lm, tmp_path / (name or f"{arch}_{seed}"))

    return make


@pytest.fixture
def word_tokenizer():
    """factory(folder, words) -> writes a word-level tokenizer.json (id i = words[i]) with the
    `tokenizers` package; skips when it is missing."""
    tokenizers = pytest.importorskip("tokenizers")

    def make(folder: Path, words: list[str]) -> Path:
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import Whitespace

        tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(words)},
                                             unk_token=words[0]))
        tok.pre_tokenizer = Whitespace()
        path = folder / "tokenizer.json"
        tok.save(str(path))
        return path

    return make


@pytest.fixture
def hf(monkeypatch):
    """transformers, offline and quiet (skips the test when the `hf` extra is missing)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers
