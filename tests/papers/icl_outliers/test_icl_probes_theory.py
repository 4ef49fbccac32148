"""Probes (gates by position / rank, score concentration) and the theory's closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from ssmlab.papers.icl_outliers import theory as th
from ssmlab.papers.icl_outliers.data import ICLDataConfig, make_patterns, sample_test, sample_train
from ssmlab.papers.icl_outliers.model import ICLMamba
from ssmlab.papers.icl_outliers.probes import (
    clean_ranks,
    gate_profile,
    score_concentration,
    score_probe,
)


def test_clean_ranks():
    out = torch.tensor([[False, True, False, True, False], [True, True, True, True, True]])
    assert clean_ranks(out).tolist() == [[3, 0, 2, 0, 1], [0, 0, 0, 0, 0]]


def test_gate_profile_with_zero_gate_vector_is_exactly_geometric():
    """w = 0: σ = 1/2 everywhere, so G_{i,l+1} = 2^{-(l+2-i)}: the j-th example from the query
    (counting the query's own decay) has gate 2^{-(j+1)}, outliers or not."""
    cfg = ICLDataConfig()
    pat = make_patterns(cfg, dtype=torch.float64)
    pr = sample_test(pat, cfg, 50, 10, 0.0, "flipped", "random", torch.Generator().manual_seed(0))
    m = ICLMamba(cfg.d, 11, seed=0, dtype=torch.float64)
    m.w.data.zero_()
    prof = gate_profile(m, pr)
    expected = [2.0 ** -(j + 1) for j in range(1, 11)]
    assert prof["by_rank_clean"] == pytest.approx(expected, rel=1e-12)
    assert prof["by_position_clean"] == pytest.approx(expected[::-1], rel=1e-12)
    assert all(math.isnan(v) for v in prof["by_position_outlier"]) and math.isnan(prof["mean_outlier"])


def test_gate_profile_separates_outliers_when_w_points_away_from_v_star():
    cfg = ICLDataConfig()
    pat = make_patterns(cfg, dtype=torch.float64)
    pr = sample_test(pat, cfg, 200, 20, 0.3, "flipped", "random", torch.Generator().manual_seed(1))
    m = ICLMamba(cfg.d, 21, seed=0, dtype=torch.float64)
    m.w.data.zero_()
    m.w.data[:-1] = -pat.v_star.sum(0)  # w^T v'_r = -β² κ_a Σλ_r ≤ -5.4: outliers gated out
    prof = gate_profile(m, pr)
    assert prof["mean_outlier"] < 0.01 < prof["mean_clean"]


def test_score_concentration_at_init():
    """At init W_B^T W_C = δ² I: same-pattern examples score δ²β²(1 + κκ'[same ν]), other-pattern
    examples only δ²β²κκ'[same ν] (mean zero)."""
    cfg = ICLDataConfig(p_a=0.4)
    pat = make_patterns(cfg, dtype=torch.float64)
    pr = sample_train(pat, cfg, 2000, 20, torch.Generator().manual_seed(2))
    m = ICLMamba(cfg.d, 21, delta=0.2, seed=0, dtype=torch.float64)
    s = score_concentration(m, pr)
    assert s["same_mean"] == pytest.approx(0.04 * 9, rel=0.01)
    assert abs(s["other_mean"]) < 0.01
    assert s["same_sum"] == pytest.approx(s["same_mean"] * 10, rel=0.05)  # ~half of 20 share it
    assert score_probe(pr)(m, 0) == s


def test_theory_thresholds_and_scalings():
    assert th.mamba_alpha_threshold(0.6, 20, 20) == pytest.approx(0.6)
    assert th.mamba_alpha_threshold(0.6, 40, 20) == 1.0
    assert th.linear_alpha_threshold() == 0.5
    tm = th.mamba_iterations(0.1, 0.6, 3.0, 6)
    for l in (5, 20, 80):
        assert tm / th.linear_iterations(0.1, 0.6, 3.0, 6, l) == pytest.approx(l)
    assert th.mamba_iterations(0.1, 0.5, 3.0, 6) == pytest.approx(2 * th.mamba_iterations(0.1, 0.0, 3.0, 6))
    assert th.outlier_gate_bound(6) == pytest.approx(1 / 36)
    with pytest.raises(ValueError):
        th.mamba_alpha_threshold(0.5, 0, 20)
