"""Invariants of the ICL-with-outliers data model (data/icl.py)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from ssmlab.errors import UserError
from ssmlab.papers.icl_outliers.data import (
    PLACEMENTS,
    V_PRIME_COEFFS,
    ICLDataConfig,
    all_tasks,
    make_patterns,
    outlier_mask,
    sample_test,
    sample_train,
    task_sets,
    training_tasks,
    unseen_tasks,
)

CFG = ICLDataConfig()  # the paper's set-up: d=30, M1=6, M2=10, V=3, β=3, κ_a=2, p_a=0.6


def gen(s: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(s)


@pytest.mark.parametrize("basis", ["standard", "random"])
def test_patterns_orthogonal_with_norm_beta(basis):
    pat = make_patterns(CFG.model_copy(update={"basis": basis}), seed=3, dtype=torch.float64)
    allp = torch.cat([pat.mu, pat.nu, pat.v_star])  # (19, d)
    gram = allp @ allp.T
    assert torch.allclose(gram, CFG.beta**2 * torch.eye(allp.shape[0], dtype=torch.float64), atol=1e-10)
    # v' lie in span(v*) with the paper's coefficients, and their coefficient sums are ≥ L = 0.3
    coeffs = pat.v_prime @ pat.v_star.T / CFG.beta**2
    assert torch.allclose(coeffs, torch.tensor(V_PRIME_COEFFS, dtype=torch.float64), atol=1e-10)
    assert min(sum(c) for c in V_PRIME_COEFFS) >= 0.3 - 1e-12
    assert torch.allclose(pat.v_prime @ torch.cat([pat.mu, pat.nu]).T, torch.zeros(3, 16, dtype=torch.float64))


def test_task_sets_cover_patterns_and_labels_evenly_and_are_disjoint():
    tr, ts = task_sets(CFG)
    assert tr == training_tasks(6, (1, 2, 3)) and ts == unseen_tasks(6, (1, 2, 3))
    assert not set(tr) & set(ts)
    assert sorted(set(tr) | set(ts)) == sorted(all_tasks(6))
    pos, neg = Counter(a for a, _ in tr), Counter(b for _, b in tr)
    assert set(pos.values()) == {3} and set(neg.values()) == {3} and len(pos) == 6
    # every unordered pair is seen in training
    assert {frozenset(t) for t in tr} == {frozenset(t) for t in all_tasks(6)}
    # test tasks are reversed training pairs
    assert all((b, a) in tr for a, b in ts)


def test_task_split_all_and_bad_configs():
    tr, ts = task_sets(ICLDataConfig(task_split="all"))
    assert tr == ts == all_tasks(6) and len(tr) == 30
    with pytest.raises(ValueError):
        ICLDataConfig(M1=6, train_shifts=(1, 2, 3, 4, 5))  # no unseen task left
    with pytest.raises(ValueError):
        ICLDataConfig(d=10)  # M1 + M2 + V > d
    with pytest.raises(ValueError):
        ICLDataConfig(train_shifts=(0,))


def test_training_prompts_structure():
    pat = make_patterns(CFG, dtype=torch.float64)
    B, l = 2000, 20
    pr = sample_train(pat, CFG, B, l, gen(1))
    assert pr.P.shape == (B, l + 1, CFG.d + 1)
    assert torch.all(pr.P[:, -1, -1] == 0)  # query label slot 0
    x, y = pr.P[:, :, :-1], pr.P[:, :-1, -1]
    # outlier component: κ_a β along exactly one v* for outliers, 0 for clean examples and query
    proj = x @ pat.v_star.T / CFG.beta  # (B, l+1, V)
    norm_v = proj.abs().sum(-1)
    assert torch.allclose(norm_v[:, :-1][pr.outlier], torch.tensor(CFG.kappa_a * CFG.beta, dtype=torch.float64))
    assert torch.all(norm_v[:, :-1][~pr.outlier] == 0) and torch.all(norm_v[:, -1] == 0)
    # the relevant pattern is μ_rel with coefficient 1, and belongs to the task
    mu_coef = x @ pat.mu.T / CFG.beta**2  # (B, l+1, M1)
    assert torch.allclose(mu_coef.gather(-1, pr.rel.unsqueeze(-1)).squeeze(-1), torch.ones(B, l + 1, dtype=torch.float64))
    assert torch.all((pr.rel == pr.task[:, :1]) | (pr.rel == pr.task[:, 1:]))
    # irrelevant pattern weight |κ| ≤ K
    assert (x @ pat.nu.T / CFG.beta**2).abs().max() <= CFG.K + 1e-12
    # clean labels follow f; the query's target too
    f = torch.where(pr.rel == pr.task[:, :1], 1.0, -1.0).to(torch.float64)
    assert torch.all(y[~pr.outlier] == f[:, :-1][~pr.outlier])
    assert torch.all(pr.z == f[:, -1])
    # outlier rate ≈ p_a; outlier labels uniform (independent of f)
    assert abs(pr.outlier.float().mean().item() - CFG.p_a) < 0.01
    agree = (y[pr.outlier] == f[:, :-1][pr.outlier]).double().mean().item()
    assert abs(agree - 0.5) < 0.02
    # training tasks only
    assert {tuple(t) for t in pr.task.tolist()} <= set(task_sets(CFG)[0])


@pytest.mark.parametrize("rule", ["flipped", "one_label", "random"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_test_prompts_fraction_rules_and_outlier_set(rule, alpha):
    pat = make_patterns(CFG, dtype=torch.float64)
    B, l = 500, 20
    pr = sample_test(pat, CFG, B, l, alpha, rule, "random", gen(2))
    n = int(alpha * l + 0.5)
    assert torch.all(pr.outlier.sum(1) == n)  # exact outlier fraction
    x, y = pr.P[:, :-1, :-1], pr.P[:, :-1, -1]
    f = torch.where(pr.rel == pr.task[:, :1], 1.0, -1.0).to(torch.float64)[:, :-1]
    # outliers carry κ'_a v' for some v' in V' (and nothing in span(v*) otherwise)
    coef = x @ pat.v_star.T / CFG.beta**2 / CFG.kappa_a  # (B, l, V)
    vp = torch.tensor(V_PRIME_COEFFS, dtype=torch.float64)  # (3, V)
    dist = (coef.unsqueeze(-2) - vp).abs().sum(-1).min(-1).values  # (B, l)
    assert torch.all(dist[pr.outlier] < 1e-9)
    assert torch.all(coef[~pr.outlier].abs().sum(-1) == 0)
    assert torch.all(y[~pr.outlier] == f[~pr.outlier])
    if n:
        yo, fo = y[pr.outlier], f[pr.outlier]
        if rule == "flipped":
            assert torch.all(yo == -fo)
        elif rule == "one_label":
            assert torch.all(yo == 1.0)
        else:
            assert abs((yo == fo).double().mean().item() - 0.5) < 0.05
    assert {tuple(t) for t in pr.task.tolist()} <= set(task_sets(CFG)[1])  # unseen tasks only
    assert torch.all(pr.P[:, -1, -1] == 0)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_placements(placement):
    l, alpha = 20, 0.5
    m = outlier_mask(500, l, alpha, placement, "exact", gen(4))
    assert torch.all(m.sum(1) == 10)
    if placement == "farthest":  # the first positions, far from the query at l + 1
        assert torch.all(m[:, :10]) and not m[:, 10:].any()
    elif placement == "closest":
        assert torch.all(m[:, 10:]) and not m[:, :10].any()
    else:  # random: every position is an outlier about half of the time
        assert (m.float().mean(0) - 0.5).abs().max() < 0.1


def test_bernoulli_count_and_bad_inputs():
    m = outlier_mask(4000, 20, 0.3, "random", "bernoulli", gen(5))
    assert abs(m.float().mean().item() - 0.3) < 0.01
    assert len(set(m.sum(1).tolist())) > 3  # the count varies
    with pytest.raises(UserError):
        outlier_mask(4, 20, 0.3, "closest", "bernoulli", gen(5))
    with pytest.raises(UserError):
        outlier_mask(4, 20, 1.5, "random", "exact", gen(5))
    pat = make_patterns(CFG)
    with pytest.raises(UserError):
        sample_test(pat, CFG, 4, 20, 0.3, "sideways", "random", gen(5))  # type: ignore[arg-type]


def test_purity_same_seed_same_tensors():
    pat = make_patterns(CFG)
    a, b = sample_train(pat, CFG, 64, 20, gen(7)), sample_train(pat, CFG, 64, 20, gen(7))
    c = sample_train(pat, CFG, 64, 20, gen(8))
    assert torch.equal(a.P, b.P) and torch.equal(a.z, b.z)
    assert not torch.equal(a.P, c.P)
    t1 = sample_test(pat, CFG, 64, 20, 0.4, "random", "random", gen(9))
    t2 = sample_test(pat, CFG, 64, 20, 0.4, "random", "random", gen(9))
    assert torch.equal(t1.P, t2.P) and torch.equal(t1.outlier, t2.outlier)
