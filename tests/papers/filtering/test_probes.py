"""Probes on hand-built weights: gate alignment, lucky neurons, gate statistics, sensitivity."""

from __future__ import annotations

import math

import pytest
import torch

from ssmlab.papers.filtering.probes import (
    class_alignment,
    gate_alignment,
    gate_stats,
    input_sensitivity,
    lucky_neurons,
    subspace_cosine,
)


def _basis(d=6):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    return q.T  # rows orthonormal


def test_gate_alignment_hand_built():
    B = _basis()
    w = 3 * B[0] + 4 * B[1] - 1e-3 * B[4]
    a = gate_alignment(w, B)
    assert a["proj_plus"] == pytest.approx(3) and a["proj_minus"] == pytest.approx(4)
    n = math.sqrt(9 + 16 + 1e-6)
    assert a["cos_plus"] == pytest.approx(3 / n) and a["cos_minus"] == pytest.approx(4 / n)
    assert a["irr_abs_cos_max"] == pytest.approx(1e-3 / n)
    assert a["proj_irr_min"] == pytest.approx(-1e-3)
    assert gate_alignment(torch.zeros(6, dtype=torch.float64), B)["cos_plus"] == 0.0


def test_lucky_neurons_hand_built():
    B = _basis()
    W = torch.stack([B[0], B[1], B[0] + B[1], B[2], -B[0], B[0]])  # (6, d)
    v = torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, -1.0])
    s = lucky_neurons(W, B, v, threshold=0.5)
    # row 0: o_+ with v>0 lucky; row 1: o_- with v<0 lucky; row 2: cos 0.707 with o_+, v>0 lucky;
    # row 3 irrelevant; row 4 anti-aligned; row 5 aligned with o_+ but v<0: not lucky
    assert s["lucky_frac"] == pytest.approx(3 / 6)
    assert s["lucky_plus_frac"] == pytest.approx(2 / 6)
    assert s["cos_lucky_mean"] == pytest.approx((1 + 1 + 2**-0.5) / 3)
    assert lucky_neurons(W, B, None, 0.5)["lucky_frac"] == pytest.approx(4 / 6)


def test_subspace_and_class_alignment():
    B = _basis()
    assert subspace_cosine(B[0] + B[3], B[:2]) == pytest.approx(2**-0.5)
    ca = class_alignment(torch.stack([B[0], B[2]]), B)
    assert ca["class_cos"] == pytest.approx(2**-0.5)
    assert ca["class_feature_cos"] == pytest.approx(0.5 * 2**-0.5)
    assert ca["irr_feature_cos"] == pytest.approx(2**-0.5 / 4)


def test_gate_stats_per_class():
    feats = torch.tensor([[0, 1, 2, 3], [1, 1, 0, 5]])
    y = torch.tensor([1.0, -1.0])
    gates = torch.tensor([[0.9, 0.2, 0.5, 0.3], [0.8, 0.6, 0.1, 0.7]])
    s = gate_stats(gates, feats, y)
    assert s["gate_relevant"] == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert s["gate_confusing"] == pytest.approx((0.2 + 0.1) / 2)
    assert s["gate_irrelevant"] == pytest.approx((0.5 + 0.3 + 0.7) / 3)


def test_input_sensitivity_of_a_linear_map():
    M = torch.randn(3, 5, dtype=torch.float64)
    X = torch.randn(4, 6, 5, dtype=torch.float64)
    J = input_sensitivity(lambda x: x @ M.T, X)  # each output channel e is M[e] · x_t
    torch.testing.assert_close(J, M)
