"""Closed forms of the generalization paper's bounds, and the norm probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssmlab.papers.generalization.experiments.bound import t90
from ssmlab.papers.generalization.model import GenSSMClassifier, GenSSMConfig
from ssmlab.papers.generalization.probes import bound_probe, bound_quantities, norm_quantities
from ssmlab.papers.generalization.theory import (
    NormQuantities,
    capacity_term,
    comparison_table,
    log_capacity_term,
    log_s2,
    rademacher_lower_bound,
    rho_A,
    s2_asymptotic,
    s2_closed,
    s2_limit,
    s2_sum,
    spectral_abscissa,
    step_bound,
    t_dependence,
)

RHOS = [0.0, 0.3, 0.9, 0.999, 1.0, 1.001, 1.05, 1.5]


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("T", [0, 1, 2, 7, 50, 400])
def test_s2_closed_form_matches_the_sum(rho, T):
    direct = s2_sum(rho, T)
    assert s2_closed(rho, T) == pytest.approx(direct, rel=1e-9, abs=1e-12)
    if direct > 0:
        assert log_s2(rho, T) == pytest.approx(math.log(direct), rel=1e-9, abs=1e-9)


def test_s2_small_cases_by_hand():
    assert s2_closed(0.5, 3) == pytest.approx(0.5 + 2 * 0.25 + 3 * 0.125)
    assert s2_closed(1.0, 4) == 10.0


@pytest.mark.parametrize("rho", [0.2, 0.9, 0.99])
def test_s2_bounded_in_T_when_rho_below_one(rho):
    vals = [s2_closed(rho, T) for T in (10, 100, 1000, 10_000, 100_000)]
    assert all(a <= b for a, b in zip(vals, vals[1:], strict=False))  # increasing
    assert all(v <= s2_limit(rho) * (1 + 1e-12) for v in vals)  # never above the limit
    assert vals[-1] == pytest.approx(s2_limit(rho), rel=1e-6)  # and reaches it


@pytest.mark.parametrize("rho", [1.01, 1.1, 2.0])
def test_s2_exponential_when_rho_above_one(rho):
    # successive ratios tend to ρ (T+1)/T -> ρ; S₂ / (T ρ^{T+1} / (ρ-1)) -> 1
    T = 2000
    ratio = math.exp(log_s2(rho, T + 1) - log_s2(rho, T))
    assert ratio == pytest.approx(rho * (T + 1) / T, rel=1e-3)
    log_asym = math.log(T) + (T + 1) * math.log(rho) - math.log(rho - 1)
    assert math.exp(log_s2(rho, T) - log_asym) == pytest.approx(1.0, rel=0.06)
    assert s2_asymptotic(rho, 50) == pytest.approx(50 * rho ** 51 / (rho - 1))
    # ln S₂ keeps working where S₂ itself overflows
    big = log_s2(rho, 200_000)
    assert math.isfinite(big) and big > 700 * (rho > 1.01)


def test_s2_quadratic_at_rho_one():
    assert s2_closed(1.0, 1000) / s2_asymptotic(1.0, 1000) == pytest.approx(1.0, rel=2e-3)


@pytest.mark.parametrize("form", ["code", "worst_case"])
@pytest.mark.parametrize("p,B_q,B_u", [(-1.0, 2.0, 2.5), (0.5, 0.1, 1.0), (3.0, 1.0, 4.0)])
def test_rho_below_one_iff_sA_negative(form, p, B_q, B_u):
    for s in (-0.5, -0.1, -1e-3):
        assert rho_A(s, p, B_q, B_u, form) < 1
    assert rho_A(0.0, p, B_q, B_u, form) == 1.0
    for s in (1e-3, 0.1, 0.5):
        assert rho_A(s, p, B_q, B_u, form) > 1
    # the code's form: (1 + e^{p - B_q B_u})^{s_A}
    assert rho_A(-0.2, p, B_q, B_u, "code") == pytest.approx((1 + math.exp(p - B_q * B_u)) ** -0.2)


def test_worst_case_rho_dominates_code_form_for_positive_sA():
    assert rho_A(0.1, 0.0, 1.0, 2.0, "worst_case") > rho_A(0.1, 0.0, 1.0, 2.0, "code")
    assert rho_A(-0.1, 0.0, 1.0, 2.0, "worst_case") == rho_A(-0.1, 0.0, 1.0, 2.0, "code")


def test_spectral_abscissa_and_step_bound():
    assert spectral_abscissa(np.array([[-3.0, 0.2], [-1.0, -5.0]])) == 0.2
    assert step_bound(1.0, 2.0, 0.5) == pytest.approx(math.log1p(math.e ** 2))


def _q(**kw) -> NormQuantities:
    base = dict(s_A=-0.1, p=-1.0, L_p=1.0, B_q=2.0, B_u=2.5, B_w=1.5, B_B=3.0, M_B=9.0,
                B_C=4.0, M_C=12.0, B_A=9.5)
    return NormQuantities(**(base | kw))


def test_capacity_term_formula_and_monotonicity():
    q = _q()
    T, m = 100, 1000
    expect = (q.M_Delta * q.B_w * q.B_u ** 3 * q.B_B * q.B_C * q.B_A
              * s2_closed(q.rho(), T) / math.sqrt(m))
    assert capacity_term(q, T, m) == pytest.approx(expect, rel=1e-9)
    # monotone: larger norms, longer sequences -> larger; more samples -> smaller
    for key in ("B_w", "B_B", "B_C", "B_A", "B_u"):
        bigger = _q(**{key: getattr(q, key) * 1.5})
        assert log_capacity_term(bigger, T, m) > log_capacity_term(q, T, m)
    assert log_capacity_term(q, 2 * T, m) > log_capacity_term(q, T, m)
    assert log_capacity_term(q, T, 4 * m) == pytest.approx(log_capacity_term(q, T, m) - math.log(2))
    # s_A < 0: bounded in T; s_A > 0: overflows to inf in value but stays finite in log
    assert capacity_term(q, 10**6, m) <= capacity_term(q, 10**7, m) < math.inf
    pos = _q(s_A=0.5, B_q=0.1)
    assert capacity_term(pos, 20_000, m) == math.inf
    assert math.isfinite(log_capacity_term(pos, 20_000, m))


def test_lower_bound_thm_4_1():
    m = 500
    lb = [rademacher_lower_bound(2.0, 0.1, T, m) for T in (10, 20, 40)]
    assert lb[0] == pytest.approx(2.0 * (1.1 ** 10 - 1) / 0.1 * math.sqrt(2 / (math.pi * m)))
    assert lb[0] < lb[1] < lb[2]
    assert lb[2] / lb[1] > lb[1] / lb[0]  # growth accelerates: exponential
    assert rademacher_lower_bound(2.0, 0.0, 10, m) == pytest.approx(2.0 * 10 * math.sqrt(2 / (math.pi * m)))
    assert rademacher_lower_bound(1.0, 1e-9, 10, m) == pytest.approx(rademacher_lower_bound(1.0, 0.0, 10, m), rel=1e-6)
    with pytest.raises(ValueError):
        rademacher_lower_bound(1.0, -1.0, 10, m)


def test_comparison_table_T_dependence():
    Ts = [10, 100, 1000, 10_000]
    rows = {r["model"]: r["relative"] for r in comparison_table(Ts, rho_stable=0.9, rho_unstable=1.01)}
    assert rows["softmax attention"] == [1.0] * 4
    assert rows["linear attention"] == pytest.approx([1, 10, 100, 1000])
    stable = rows["selective SSM, s_A < 0"]
    assert stable[-1] == pytest.approx(stable[-2], rel=1e-6)  # saturated: no T dependence
    unstable = rows["selective SSM, s_A ≥ 0"]
    assert unstable[-1] / unstable[-2] > 1e30  # exponential
    with pytest.raises(ValueError):
        t_dependence("selective SSM, s_A < 0", 10, rho=1.2)


def test_t90():
    rho = 0.99
    T = t90(rho)
    assert s2_closed(rho, int(T)) >= 0.9 * s2_limit(rho) > s2_closed(rho, int(T) - 1)
    assert t90(1.0) == math.inf


def test_norm_probe_reads_the_model():
    m = GenSSMClassifier(GenSSMConfig(d=3, N=2, s_A=-0.2, vocab_size=4), torch.Generator().manual_seed(0))
    m.requires_grad_(False)
    q = norm_quantities(m)
    assert q.s_A == pytest.approx(float(m.ssm.A.max()))
    assert q.B_u == pytest.approx(float(m.embedding.weight.norm(dim=1).max()))
    assert q.B_B == pytest.approx(float(torch.linalg.matrix_norm(m.ssm.W_B)))
    assert q.M_C == pytest.approx(float(m.ssm.W_C.abs().sum()))
    assert q.B_A == pytest.approx(float(m.ssm.A.abs().max()))
    assert q.B_w == pytest.approx(float(m.w.norm()))
    row = bound_probe(T=50, m=100)(m, 0)
    assert row["rho_A"] < 1 and row["log_S2"] == pytest.approx(log_s2(q.rho(), 50))
    assert row == bound_quantities(q, 50, 100)
    for key in ("s_A", "L_p", "B_q", "B_B", "M_B", "B_C", "M_C", "B_A", "B_u", "log_capacity",
                "log_lower_bound", "M_Delta"):
        assert key in row


@pytest.mark.parametrize("s_A", [-0.2, 0.0])
def test_the_lower_bound_is_logged_only_where_thm_4_1_holds(s_A):
    """Thm 4.1 is stated for s_A > 0: at s_A ≤ 0 the probe logs NaN, not a 'lower bound'."""
    base = dict(p=-1.0, L_p=1.0, B_q=1.0, B_u=1.0, B_w=1.0, B_B=2.0, M_B=4.0, B_C=2.0, M_C=4.0)
    row = bound_quantities(NormQuantities(s_A=s_A, B_A=abs(s_A) or 1.0, **base), 50, 100)
    assert math.isnan(row["log_lower_bound"])
    row = bound_quantities(NormQuantities(s_A=0.1, B_A=0.1, **base), 50, 100)
    assert row["log_lower_bound"] == pytest.approx(
        math.log(rademacher_lower_bound(1.0, 0.1, 50, 100)))
