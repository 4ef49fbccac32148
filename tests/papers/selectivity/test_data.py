"""Invariants of the selectivity paper's tasks: MQAR, KEEP n-TH, induction heads, step targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ssmlab.papers.selectivity.data.induction import InductionConfig
from ssmlab.papers.selectivity.data.keep_nth import KeepNthConfig
from ssmlab.papers.selectivity.data.mqar import BLANK, IGNORE, MQARConfig, query_gap_probs
from ssmlab.papers.selectivity.data.piecewise import (
    PiecewiseConfig,
    cell_averages,
    piecewise_constant,
)

MQAR_CASES = [
    MQARConfig(vocab_size=16, seq_len=32, num_kv_pairs=4, num_examples=64),
    MQARConfig(vocab_size=18, seq_len=32, num_kv_pairs=8, num_examples=64),
    MQARConfig(vocab_size=64, seq_len=128, num_kv_pairs=16, power_a=1.0, num_examples=32),
]


@pytest.mark.parametrize("cfg", MQAR_CASES, ids=lambda c: f"V{c.vocab_size}-L{c.seq_len}-P{c.num_kv_pairs}")
def test_mqar_invariants(cfg: MQARConfig) -> None:
    d = cfg.sample(cfg.num_examples, 3)
    S, L, P = cfg.num_examples, cfg.seq_len, cfg.num_kv_pairs
    assert d.inputs.shape == d.labels.shape == (S, L)
    keys, vals = set(cfg.key_tokens.tolist()), set(cfg.value_tokens.tolist())
    for x, y, kk, vv, qp in zip(d.inputs.tolist(), d.labels.tolist(), d.keys.tolist(),
                                d.values.tolist(), d.query_pos.tolist(), strict=True):
        # context: k v k v ... with distinct keys and distinct values from their ranges
        assert x[0:2 * P:2] == kk and x[1:2 * P:2] == vv
        assert len(set(kk)) == P and len(set(vv)) == P
        assert set(kk) <= keys and set(vv) <= vals
        answered = [t for t in range(L) if y[t] != IGNORE]
        assert sorted(answered) == sorted(qp) and len(answered) == P
        for t in range(2 * P, L):
            assert x[t] == BLANK or t in qp
        for t in answered:
            assert t >= 2 * P and x[t] in keys
            before = x[:t]
            assert before.count(x[t]) == 1  # the query's key appeared exactly once before it
            i = before.index(x[t])
            assert y[t] == x[i + 1] and y[t] in vals  # the answer is the paired value
        # answers unique: each key is queried once and values are distinct
        assert len({y[t] for t in answered}) == P
        assert sorted(x[t] for t in answered) == sorted(kk)
        # queries are never adjacent (even offsets)
        assert all(abs(a - b) >= 2 for a in qp for b in qp if a != b)


def test_mqar_pure_and_split_disjoint() -> None:
    cfg = MQAR_CASES[0]
    a, b = cfg.sample(cfg.num_examples, 5), cfg.sample(cfg.num_examples, 5)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    test = cfg.sample(cfg.num_examples, 5, "test")
    assert not torch.equal(a.inputs, test.inputs)
    assert not torch.equal(cfg.sample(cfg.num_examples, 6).inputs, a.inputs)


def test_mqar_gap_law_and_validation() -> None:
    p = query_gap_probs(10, 1.0)
    assert np.allclose(p, 0.1)
    p = query_gap_probs(10, 0.01)
    assert p[0] > p[-1] and np.isclose(p.sum(), 1.0)
    with pytest.raises(ValidationError):
        MQARConfig(vocab_size=16, num_kv_pairs=8)  # only 7 keys
    with pytest.raises(ValidationError):
        MQARConfig(vocab_size=16, seq_len=12, num_kv_pairs=4)
    with pytest.raises(ValidationError):
        MQARConfig(seq_len=33)
    with pytest.raises(ValidationError):
        MQARConfig(unknown=1)


def test_keep_nth() -> None:
    cfg = KeepNthConfig(vocab_size=8, seq_len=20, n=3, num_examples=50)
    d = cfg.sample(cfg.num_examples, 1)
    assert d.inputs.shape == (50, 20)
    assert torch.equal(d.labels[:, -1], d.inputs[:, 2])
    assert (d.labels[:, :-1] == IGNORE).all()
    assert torch.equal(d.inputs, cfg.sample(cfg.num_examples, 1).inputs)
    assert not torch.equal(d.inputs, cfg.sample(cfg.num_examples, 1, "test").inputs)
    assert int(d.inputs.max()) < 8
    with pytest.raises(ValidationError):
        KeepNthConfig(seq_len=4, n=5)


def test_induction() -> None:
    cfg = InductionConfig(vocab_size=10, seq_len=24, num_examples=80)
    d = cfg.sample(cfg.num_examples, 2)
    s = cfg.trigger
    for x, y, p in zip(d.inputs.tolist(), d.labels.tolist(), d.trigger_pos.tolist(), strict=True):
        assert x.count(s) == 2 and x[p] == s and x[-1] == s
        assert y[-1] == x[p + 1] != s
        assert all(v == IGNORE for v in y[:-1])
    assert torch.equal(d.inputs, cfg.sample(cfg.num_examples, 2).inputs)
    assert not torch.equal(d.inputs, cfg.sample(cfg.num_examples, 2, "test").inputs)


def test_piecewise_cell_averages_exact() -> None:
    breaks, heights = np.array([0.3, 0.71]), np.array([1.0, -2.0, 0.5])
    g = cell_averages(breaks, heights, 8)
    # cell [0.25, 0.375) holds 0.05 of height 1 and 0.075 of height -2
    assert np.isclose(g[2], (0.05 * 1 - 0.075 * 2) * 8)
    assert np.isclose(g.mean(), 0.3 * 1 - 0.41 * 2 + 0.29 * 0.5)
    cfg = PiecewiseConfig(pieces=5, grid=256)
    t = piecewise_constant(cfg, 4)
    assert t.breaks.shape == (4,) and np.all(np.diff(t.breaks) >= cfg.min_gap)
    assert np.array_equal(t.values, piecewise_constant(cfg, 4).values)
    assert len(np.unique(np.round(t.values, 12))) >= 5
    with pytest.raises(ValidationError):
        PiecewiseConfig(grid=100)
