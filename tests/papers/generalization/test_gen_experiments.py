"""The generalization experiments: analyze() turns hand-built records into PASS / FAIL / SKIP
from their numbers, run() works end to end at toy sizes, configs and profiles are strict."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ssmlab.experiment import RunRecord
from ssmlab.papers.generalization.experiments.attention import AttentionView
from ssmlab.papers.generalization.experiments.bound import BoundVsT
from ssmlab.papers.generalization.experiments.length import (
    ImdbLength,
    ListOpsLength,
    MajorityLength,
)
from ssmlab.papers.generalization.experiments.stability import StabilityMargin
from ssmlab.papers.generalization.theory import NormQuantities, log_capacity_term
from ssmlab.records import SkipRun
from ssmlab.runner.registry import resolve_config
from ssmlab.runner.sweep import plan
from ssmlab.runner.worker import execute


def rec(exp, params, seed, status="ok", metrics=None, history=None, reason=""):
    return RunRecord(experiment=exp.id, config_hash="h", params=params, seed=seed, status=status,
                     metrics=metrics or {}, history=history or {}, info={}, reason=reason)


def length_runs(exp, gap_of_T, train_of_T=lambda T: 0.95):
    rng = np.random.default_rng(0)
    out = []
    for T in (25, 200, 400):
        for s in range(3):
            tr = train_of_T(T) + rng.normal(0, 0.003)
            gap = gap_of_T(T) + rng.normal(0, 0.003)
            out.append(rec(exp, {"T": T}, s, metrics={"train_acc": tr, "test_acc": tr - gap, "gap": gap}))
    return out


def claims_by(claims):
    return {c.ref.split(",")[0] + ("/paper" if "authors" in c.ref else ""): c for c in claims}


# ----------------------------------------------------------------------------- length


def test_length_flat_gap_passes(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    runs = length_runs(exp, lambda T: 0.08)
    claims = exp.analyze(cfg, runs, tmp_path)
    gap = claims[0]
    assert gap.passed is True and abs(gap.value) < cfg.gap_slope_tol
    assert (tmp_path / gap.figure).is_file()


def test_length_growing_gap_fails_with_explanation(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    runs = length_runs(exp, lambda T: 0.05 + 0.0005 * T)  # +0.05 per 100 tokens
    gap = exp.analyze(cfg, runs, tmp_path)[0]
    assert gap.passed is False
    assert gap.value == pytest.approx(0.05, abs=0.005)
    assert "grows" in gap.note


def test_length_paper_comparison(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    paper = {25: (0.933, 0.859), 200: (0.969, 0.890), 400: (0.981, 0.876)}
    close = [rec(exp, {"T": T}, s, metrics={"train_acc": paper[T][0], "test_acc": paper[T][1],
                                            "gap": paper[T][0] - paper[T][1]})
             for T in paper for s in range(2)]
    cmp_claim = exp.analyze(cfg, close, tmp_path)[1]
    assert cmp_claim.passed is True and cmp_claim.value == pytest.approx(0.0, abs=1e-9)
    far = [rec(exp, {"T": T}, s, metrics={"train_acc": 0.80, "test_acc": 0.70, "gap": 0.10})
           for T in paper for s in range(2)]
    cmp_claim = exp.analyze(cfg, far, tmp_path)[1]
    assert cmp_claim.passed is False and cmp_claim.value > 0.1


def test_length_excludes_diverged_runs(tmp_path):
    exp = ListOpsLength()
    cfg = resolve_config(ListOpsLength, "quick")
    runs = length_runs(exp, lambda T: 0.05) + [rec(exp, {"T": 400}, 9, status="diverged",
                                                     metrics={"s_A": 0.1})]
    gap = exp.analyze(cfg, runs, tmp_path)[0]
    assert gap.passed is True and "diverged" in gap.note


def test_imdb_without_data_is_skipped(tmp_path):
    exp = ImdbLength()
    cfg = resolve_config(ImdbLength, "quick", overrides=[f"task.imdb_dir={tmp_path / 'none'}"])
    with pytest.raises(SkipRun) as skip:
        exp.run(cfg, {"T": 100}, 0)
    assert str(skip.value) == f"no IMDb data at {tmp_path / 'none'}"
    runs = [rec(exp, {"T": T}, 0, status="skipped", reason=str(skip.value)) for T in (100, 200)]
    (claim,) = exp.analyze(cfg, runs, tmp_path)
    assert claim.passed is None and claim.verdict == "SKIP"
    assert "no IMDb data at" in claim.measured
    assert claim.note == f"2 of 2 runs not ok: 2 skipped (no IMDb data at {tmp_path / 'none'})"


def test_the_runner_stores_a_missing_imdb_copy_as_a_skipped_run(tmp_path):
    """SkipRun raised inside run() reaches the store as status 'skipped' with its reason."""
    cfg = resolve_config(ImdbLength, "quick", overrides=[f"task.imdb_dir={tmp_path / 'none'}"])
    out = execute({"experiment": ImdbLength.id, "config": cfg.model_dump(mode="json"),
                   "params": {"T": 100}, "seed": 0})
    assert out["status"] == "skipped", out
    assert out["reason"] == f"no IMDb data at {tmp_path / 'none'}"


# ----------------------------------------------------------------------------- stability


def stab_runs(exp, end_sA, diverge_at):
    runs = []
    for T in (50, 150, 300):
        for s in range(4):
            if T in diverge_at and s < diverge_at[T]:
                runs.append(rec(exp, {"T": T, "s_A": 0.1}, s, status="diverged",
                                metrics={"s_A": 0.12}, history={"s_A": [0.1, 0.12], "loss": [1e9]}))
            else:
                runs.append(rec(exp, {"T": T, "s_A": 0.1}, s,
                                metrics={"s_A": end_sA, "rho_A": 0.999},
                                history={"s_A": [0.1, 0.02, end_sA], "probe_epoch": [0, 1, 2],
                                         "loss": [5.0, 0.3]}))
    for sA in (-0.1, 0.0, 0.1):
        runs.append(rec(exp, {"T": 250, "s_A": sA}, 0, metrics={"s_A": min(sA, 0.0), "rho_A": 1.0},
                        history={"s_A": [sA, 0.0], "probe_epoch": [0, 1], "loss": [0.5]}))
    return runs


def test_stability_passes_when_runs_recover_or_diverge_more_at_long_T(tmp_path):
    exp = StabilityMargin()
    cfg = resolve_config(StabilityMargin, "quick", overrides=["sA_values=[-0.1,0.0,0.1]"])
    recovery, divergence = exp.analyze(cfg, stab_runs(exp, -0.01, {300: 3, 150: 1}), tmp_path)
    assert recovery.passed is True and recovery.value == pytest.approx(0.0)  # the T=250 run
    assert divergence.passed is True and divergence.value == pytest.approx(0.75)


def test_stability_fails_when_sA_stays_positive_or_nothing_diverges(tmp_path):
    exp = StabilityMargin()
    cfg = resolve_config(StabilityMargin, "quick", overrides=["sA_values=[-0.1,0.0,0.1]"])
    recovery, divergence = exp.analyze(cfg, stab_runs(exp, 0.08, {}), tmp_path)
    assert recovery.passed is False and "ρ_A" in recovery.note
    assert divergence.passed is False and "No run diverged" in divergence.note


# ----------------------------------------------------------------------------- bound


def bound_norms(s_A: float, T: int, target: float, m: int = 1000) -> dict[str, float]:
    """Norms with ρ_A(code) = exp(s_A · softplus(-2)) and ln capacity (B_A dropped) = target."""
    base = dict(s_A=s_A, p=-1.0, L_p=1.0, B_q=1.0, B_u=1.0, B_w=1.0, B_B=2.0, M_B=4.0,
                B_C=2.0, M_C=4.0, B_A=abs(s_A))
    rest = log_capacity_term(NormQuantities(**base), T, m, include_B_A=False)
    return base | {"B_w": math.exp(target - rest)}


def bound_runs(exp, pos_log_cap):
    runs = []
    for T in (50, 150, 300):
        for sA in (-0.1, 0.0, 0.1):
            lc = {-0.1: 10.0, 0.0: 10 + 2 * math.log(T / 50), 0.1: pos_log_cap(T)}[sA]
            runs.append(rec(exp, {"T": T, "s_A": sA}, 0, metrics=bound_norms(sA, T, lc) | {
                "gap": 0.08, "train_acc": 0.95, "test_acc": 0.87}))
    return runs


def test_bound_claims_from_numbers(tmp_path):
    exp = BoundVsT()
    cfg = resolve_config(BoundVsT, "quick")
    bounded, expo, gap = exp.analyze(cfg, bound_runs(exp, lambda T: 10 + 0.1 * T), tmp_path)
    rho = math.exp(-0.1 * math.log1p(math.exp(-2.0)))
    assert bounded.passed is True and bounded.value == pytest.approx(rho)
    assert expo.passed is True and expo.value == pytest.approx(25.0)
    assert gap.passed is True
    _, expo, _ = exp.analyze(cfg, bound_runs(exp, lambda T: 10 + math.log(T)), tmp_path)
    assert expo.passed is False  # growth like T is not exponential
    assert "worst_case" in expo.note


def test_bound_fails_when_a_negative_regime_model_has_rho_one(tmp_path):
    exp = BoundVsT()
    cfg = resolve_config(BoundVsT, "quick")
    runs = bound_runs(exp, lambda T: 10 + 0.1 * T)
    runs[0].metrics["s_A"] = -1e-18  # s_A < 0 but ρ_A rounds to 1: no finite limit in floats
    bounded = exp.analyze(cfg, runs, tmp_path)[0]
    assert bounded.passed is False


# ----------------------------------------------------------------------------- attention


def test_attention_claim_from_numbers(tmp_path):
    exp = AttentionView()
    cfg = resolve_config(AttentionView, "quick")
    M = np.tril(np.ones((2, 5, 5))).tolist()
    hist = {"attention": M, "tokens": [0, 1, 1, 0, 1]}
    base = {"example_label": 1.0, "example_score": 2.0, "test_acc": 0.9}
    good = rec(exp, {}, 0, metrics=base | {"scan_vs_attention_rel_err": 1e-15}, history=hist)
    (c,) = exp.analyze(cfg, [good], tmp_path)
    assert c.passed is True and (tmp_path / c.figure).is_file()
    bad = rec(exp, {}, 0, metrics=base | {"scan_vs_attention_rel_err": 0.3}, history=hist)
    (c,) = exp.analyze(cfg, [bad], tmp_path)
    assert c.passed is False


# ----------------------------------------------------------------------------- toy runs, configs


TINY_TRAIN = ["training.epochs=2", "task.n_train=64", "task.n_test=32"]


def test_toy_runs_end_to_end(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick", overrides=TINY_TRAIN + ["T_values=[12]"])
    r = exp.run(cfg, {"T": 12}, 0)
    assert r.status == "ok" and 0 <= r.metrics["test_acc"] <= 1
    assert r.history["probe_epoch"] == [0, 1, 2] and len(r.history["s_A"]) == 3
    assert len(r.history["loss"]) == 2
    assert exp.run(cfg, {"T": 12}, 0).metrics == r.metrics  # pure in (cfg, params, seed)

    lo = ListOpsLength()
    cfg = resolve_config(ListOpsLength, "quick", overrides=TINY_TRAIN + [
        f"task.cache_dir={tmp_path}", "model.d=4"])
    r = lo.run(cfg, {"T": 20}, 0)
    assert r.status == "ok" and r.info["max_len"] < 25 and r.info["min_len"] > 15

    att = AttentionView()
    cfg = resolve_config(AttentionView, "quick", overrides=TINY_TRAIN + ["T=10"])
    r = att.run(cfg, {}, 0)
    assert r.status == "ok" and r.metrics["scan_vs_attention_rel_err"] < 1e-9
    assert np.asarray(r.history["attention"]).shape == (4, 10, 10)

    st = StabilityMargin()
    cfg = resolve_config(StabilityMargin, "quick", overrides=TINY_TRAIN)
    cells = st.cells(cfg)
    assert len(cells) == len({(c["T"], c["s_A"]) for c in cells})
    seeds_per_cell = Counter((p.params["T"], p.params["s_A"]) for p in plan(st, cfg))
    assert seeds_per_cell[(250, -0.05)] == 2  # the s_A sweep runs 2 seeds in the quick profile
    assert seeds_per_cell[(300, 0.1)] == cfg.seeds  # the T sweep runs all of them

    bd = BoundVsT()
    cfg = resolve_config(BoundVsT, "quick", overrides=TINY_TRAIN)
    r = bd.run(cfg, {"T": 12, "s_A": -0.1}, 0)
    assert r.status == "ok" and r.metrics["s_A"] == pytest.approx(-0.1) and r.metrics["rho_A"] < 1


def test_a_run_neither_reads_nor_moves_the_global_rng():
    """Data, init and shuffling come from the run seed's own generators; the one global draw
    (nn.Embedding's default init, overwritten) happens inside seeding.seeded and is undone."""
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick", overrides=TINY_TRAIN + ["T_values=[12]"])
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    r = exp.run(cfg, {"T": 12}, 3)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(456)
    again = exp.run(cfg, {"T": 12}, 3)
    assert again.metrics == r.metrics and again.history == r.history


@pytest.mark.parametrize("cls", [MajorityLength, ListOpsLength, ImdbLength, StabilityMargin,
                                 BoundVsT, AttentionView])
def test_profiles_validate_and_configs_are_strict(cls):
    for profile in ("quick", "paper"):
        cfg = resolve_config(cls, profile)
        assert cls().cells(cfg)
    with pytest.raises(ValidationError):
        cls.Config(unknown_key=1)
