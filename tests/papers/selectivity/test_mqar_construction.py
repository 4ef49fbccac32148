"""The analytical MQAR weights reach 100% in the real layers, at every length; sizes order."""

from __future__ import annotations

import pytest
import torch

from ssmlab.papers.selectivity.data.mqar import MQARConfig
from ssmlab.papers.selectivity.model import first_block
from ssmlab.papers.selectivity.theory.mqar import (
    MIXERS,
    construct,
    construction_sizes,
    mqar_accuracy,
)


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("seq_len,pairs", [(16, 4), (64, 8), (256, 8)])
def test_construction_solves_mqar(mixer: str, seq_len: int, pairs: int) -> None:
    cfg = MQARConfig(vocab_size=18, seq_len=seq_len, num_kv_pairs=pairs, num_examples=48)
    data = cfg.sample(cfg.num_examples, 7, "test")
    lm = construct(mixer, cfg)
    assert mqar_accuracy(lm, data.inputs, data.labels) == 1.0


@pytest.mark.parametrize("mixer", MIXERS)
def test_construction_float32_and_uniform_gaps(mixer: str) -> None:
    cfg = MQARConfig(vocab_size=12, seq_len=128, num_kv_pairs=5, power_a=1.0, num_examples=32)
    data = cfg.sample(cfg.num_examples, 1, "test")
    lm = construct(mixer, cfg, dtype=torch.float32)
    assert mqar_accuracy(lm, data.inputs, data.labels) == 1.0


def test_wrong_weights_fail() -> None:
    """Perturbing the key routing breaks recall: the accuracy check can fail."""
    cfg = MQARConfig(vocab_size=18, seq_len=32, num_kv_pairs=8, num_examples=32)
    data = cfg.sample(cfg.num_examples, 2, "test")
    lm = construct("mamba", cfg)
    with torch.no_grad():
        K = cfg.n_keys
        blk = first_block(lm)
        blk.x_proj.weight[1 + K:] = blk.x_proj.weight[1 + K:].roll(1, 0)
    assert mqar_accuracy(lm, data.inputs, data.labels) < 0.5


def test_sizes_order_mamba2_mamba_s4d() -> None:
    for vocab in (12, 18, 34):
        cfg = MQARConfig(vocab_size=vocab, seq_len=64, num_kv_pairs=4)
        sizes = {s.mixer: s for s in construction_sizes(cfg)}
        K, V = cfg.n_keys, cfg.n_values
        assert sizes["mamba2"].mixer_params < sizes["mamba"].mixer_params < sizes["s4d"].mixer_params
        assert (sizes["mamba"].d_used, sizes["mamba"].d_state) == (K + V, K)
        assert (sizes["mamba2"].d_used, sizes["mamba2"].d_state) == (V, K)
        assert (sizes["s4d"].d_used, sizes["s4d"].d_state) == (K * V, 1)
        assert sizes["s4d"].d_inner >= K * V
