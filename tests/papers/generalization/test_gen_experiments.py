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


def length_runs(exp, gap_of_T, train_of_T=lambda T: 0.95, Ts=(25, 200, 400), seeds=3,
                chance=0.5):
    rng = np.random.default_rng(0)
    out = []
    for T in Ts:
        for s in range(seeds):
            tr = train_of_T(T) + rng.normal(0, 0.003)
            gap = gap_of_T(T) + rng.normal(0, 0.003)
            out.append(rec(exp, {"T": T}, s, metrics={"train_acc": tr, "test_acc": tr - gap,
                                                      "gap": gap, "majority_class_acc": chance}))
    return out


def by_name(claims):
    return {c.id.split(":")[1]: c for c in claims}


def test_every_spec_has_a_ref_a_tolerance_source_and_a_stable_id():
    for cls in (MajorityLength, ListOpsLength, ImdbLength, StabilityMargin, BoundVsT,
                AttentionView):
        specs = cls().specs(resolve_config(cls, "quick"))
        assert specs and len({s.name for s in specs}) == len(specs)
        for s in specs:
            assert s.ref.strip() and s.tolerance_source.strip() and s.statement.strip()


# ----------------------------------------------------------------------------- length


def test_length_flat_gap_passes(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    gap = by_name(exp.analyze(cfg, length_runs(exp, lambda T: 0.08), tmp_path))["gap_slope"]
    assert gap.id == "generalization/length_majority:gap_slope"
    assert gap.verdict == "PASS" and abs(gap.value) < cfg.gap_slope_tol
    assert gap.ci_low < gap.value < gap.ci_high and gap.n == 9
    assert (tmp_path / gap.figure).is_file()


def test_length_growing_gap_fails(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    runs = length_runs(exp, lambda T: 0.05 + 0.0005 * T)  # +0.05 per 100 tokens
    gap = by_name(exp.analyze(cfg, runs, tmp_path))["gap_slope"]
    assert gap.verdict == "FAIL"
    assert gap.value == pytest.approx(0.05, abs=0.005) and gap.ci_low > cfg.gap_slope_tol


def test_length_shrinking_gap_is_not_growth(tmp_path):
    """One-sided: the bound limits growth; a gap falling by 5 points per 100 tokens passes."""
    exp = ListOpsLength()
    cfg = resolve_config(ListOpsLength, "quick")
    runs = length_runs(exp, lambda T: 0.3 - 0.0005 * T, Ts=(100, 200, 300), seeds=2)
    gap = by_name(exp.analyze(cfg, runs, tmp_path))["gap_slope"]
    assert gap.verdict == "PASS" and gap.value == pytest.approx(-0.05, abs=0.005)


def test_length_noisy_gap_is_inconclusive_and_says_how_many_seeds(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    rng = np.random.default_rng(1)
    runs = [rec(exp, {"T": T}, s, metrics={"train_acc": 0.95, "test_acc": 0.95 - g, "gap": g})
            for T in (25, 200, 400) for s in range(3)
            for g in [0.0001 * T + rng.normal(0, 0.03)]]
    gap = by_name(exp.analyze(cfg, runs, tmp_path))["gap_slope"]
    assert gap.verdict == "INCONCLUSIVE" and gap.ci_low < cfg.gap_slope_tol < gap.ci_high


def test_length_paper_comparison(tmp_path):
    exp = MajorityLength()
    cfg = resolve_config(MajorityLength, "quick")
    paper = {25: (0.933, 0.859), 200: (0.969, 0.890), 400: (0.981, 0.876)}
    close = [rec(exp, {"T": T}, s, metrics={"train_acc": paper[T][0] + d, "test_acc": paper[T][1],
                                            "gap": paper[T][0] + d - paper[T][1]})
             for T in paper for s, d in enumerate((-0.002, 0.002))]
    c = by_name(exp.analyze(cfg, close, tmp_path))["paper_means"]
    assert c.verdict == "PASS" and c.value == pytest.approx(0.0, abs=1e-9)
    # two seeds at ±0.002: the t-widened interval reaches well past the seeds' own spread
    assert 0.01 < c.ci_high <= cfg.paper_tol
    far = [rec(exp, {"T": T}, s, metrics={"train_acc": 0.80 + d, "test_acc": 0.70, "gap": 0.10})
           for T in paper for s, d in enumerate((-0.002, 0.002))]
    c = by_name(exp.analyze(cfg, far, tmp_path))["paper_means"]
    assert c.verdict == "FAIL" and c.ci_low > cfg.paper_tol
    assert c.diagnosis_kind == "profile-too-small"


def test_listops_learns_needs_train_accuracy_above_the_constant_predictor(tmp_path):
    exp = ListOpsLength()
    cfg = resolve_config(ListOpsLength, "quick")
    Ts = (100, 200, 300)
    at_chance = length_runs(exp, lambda T: 0.01, train_of_T=lambda T: 0.12, Ts=Ts, seeds=2,
                            chance=0.16)
    c = by_name(exp.analyze(cfg, at_chance, tmp_path))["learns"]
    assert c.verdict == "FAIL" and c.value == pytest.approx(-0.04, abs=0.01)
    assert c.diagnosis_kind == "profile-too-small" and "Findings" in c.diagnosis
    learning = length_runs(exp, lambda T: 0.05, train_of_T=lambda T: 0.25, Ts=Ts, seeds=2,
                           chance=0.16)
    assert by_name(exp.analyze(cfg, learning, tmp_path))["learns"].verdict == "PASS"


def test_length_excludes_diverged_runs(tmp_path):
    exp = ListOpsLength()
    cfg = resolve_config(ListOpsLength, "quick")
    runs = length_runs(exp, lambda T: 0.05) + [rec(exp, {"T": 400}, 9, status="diverged",
                                                     metrics={"s_A": 0.1})]
    gap = by_name(exp.analyze(cfg, runs, tmp_path))["gap_slope"]
    assert gap.verdict == "PASS" and gap.n == 9 and "diverged" in gap.note


def test_imdb_without_data_is_skipped(tmp_path):
    exp = ImdbLength()
    cfg = resolve_config(ImdbLength, "quick", overrides=[f"task.imdb_dir={tmp_path / 'none'}"])
    with pytest.raises(SkipRun) as skip:
        exp.run(cfg, {"T": 100}, 0)
    assert str(skip.value) == f"no IMDb data at {tmp_path / 'none'}"
    runs = [rec(exp, {"T": T}, 0, status="skipped", reason=str(skip.value)) for T in (100, 200)]
    (claim,) = exp.analyze(cfg, runs, tmp_path)
    assert claim.verdict == "SKIP" and claim.id == "generalization/length_imdb:gap_slope"
    assert "no IMDb data at" in claim.measured and "\n" not in claim.measured
    assert claim.note == f"2 of 2 runs not ok: 2 skipped (no IMDb data at {tmp_path / 'none'})"


def test_the_runner_stores_a_missing_imdb_copy_as_a_skipped_run(tmp_path):
    """SkipRun raised inside run() reaches the store as status 'skipped' with its reason."""
    cfg = resolve_config(ImdbLength, "quick", overrides=[f"task.imdb_dir={tmp_path / 'none'}"])
    out = execute({"experiment": ImdbLength.id, "config": cfg.model_dump(mode="json"),
                   "params": {"T": 100}, "seed": 0})
    assert out["status"] == "skipped", out
    assert out["reason"] == f"no IMDb data at {tmp_path / 'none'}"


# ----------------------------------------------------------------------------- stability

NORMS = dict(p=-1.0, B_q=1.0, B_u=1.0)


def stab_runs(exp, end_sA, diverge_at):
    runs = []
    for T in (50, 150, 300):
        for s in range(4):
            if T in diverge_at and s < diverge_at[T]:
                runs.append(rec(exp, {"T": T, "s_A": 0.1}, s, status="diverged",
                                metrics={"s_A": 0.12}, history={"s_A": [0.1, 0.12], "loss": [1e9]}))
            else:
                runs.append(rec(exp, {"T": T, "s_A": 0.1}, s,
                                metrics={"s_A": end_sA, "rho_A": 0.999, "train_acc": 0.95} | NORMS,
                                history={"s_A": [0.1, 0.02, end_sA], "probe_epoch": [0, 1, 2],
                                         "loss": [5.0, 0.3]}))
    for sA in (-0.1, 0.0, 0.1):
        runs.append(rec(exp, {"T": 250, "s_A": sA}, 0,
                        metrics={"s_A": min(sA, 0.0), "rho_A": 1.0, "train_acc": 0.9} | NORMS,
                        history={"s_A": [sA, 0.0], "probe_epoch": [0, 1], "loss": [0.5]}))
    return runs


def test_stability_passes_when_runs_recover_or_diverge_more_at_long_T(tmp_path):
    exp = StabilityMargin()
    cfg = resolve_config(StabilityMargin, "quick", overrides=["sA_values=[-0.1,0.0,0.1]"])
    c = by_name(exp.analyze(cfg, stab_runs(exp, -0.01, {300: 4, 150: 1}), tmp_path))
    assert c["recovery"].verdict == "PASS" and c["recovery"].value == pytest.approx(0.0)
    assert c["divergence_grows"].verdict == "PASS"
    assert c["divergence_grows"].value == pytest.approx(1.0)
    assert c["divergence_grows"].ci_low > 0
    # 3 of 4 seeds diverging at T = 300: with 4 seeds the t-widened interval reaches 0
    weak = by_name(exp.analyze(cfg, stab_runs(exp, -0.01, {300: 3, 150: 1}), tmp_path))
    assert weak["divergence_grows"].verdict == "INCONCLUSIVE"
    assert weak["divergence_grows"].value == pytest.approx(0.75)


def test_stability_fails_when_sA_stays_positive_or_nothing_diverges(tmp_path):
    exp = StabilityMargin()
    cfg = resolve_config(StabilityMargin, "quick", overrides=["sA_values=[-0.1,0.0,0.1]"])
    c = by_name(exp.analyze(cfg, stab_runs(exp, 0.08, {}), tmp_path))
    rec_, div = c["recovery"], c["divergence_grows"]
    assert rec_.verdict == "FAIL" and rec_.value == pytest.approx(12 / 13)  # T=250 ends at 0
    assert rec_.diagnosis_kind == "finding" and "T=50: 4/4" in rec_.diagnosis
    assert "largest step" in rec_.diagnosis
    assert div.verdict == "FAIL" and div.diagnosis_kind == "profile-too-small"
    assert "no run of the T sweep diverged" in div.diagnosis


def test_stability_one_exception_is_inconclusive(tmp_path):
    exp = StabilityMargin()
    cfg = resolve_config(StabilityMargin, "quick", overrides=["sA_values=[-0.1,0.0,0.1]"])
    runs = stab_runs(exp, -0.01, {300: 3, 150: 1})
    runs[0].metrics["s_A"] = 0.05  # one converged run stays unstable
    c = by_name(exp.analyze(cfg, runs, tmp_path))["recovery"]
    assert c.verdict == "INCONCLUSIVE" and c.ci_low <= 0 < c.ci_high


# ----------------------------------------------------------------------------- bound


def bound_norms(s_A: float, T: int, target: float, m: int = 1000,
                form: str = "worst_case") -> dict[str, float]:
    """Norms with ρ_A = exp(s_A · softplus(∓2)) and ln capacity (B_A dropped) = target."""
    base = dict(s_A=s_A, p=-1.0, L_p=1.0, B_q=1.0, B_u=1.0, B_w=1.0, B_B=2.0, M_B=4.0,
                B_C=2.0, M_C=4.0, B_A=abs(s_A))
    rest = log_capacity_term(NormQuantities(**base), T, m, form, include_B_A=False)
    return base | {"B_w": math.exp(target - rest)}


def bound_runs(exp, pos_log_cap, gap=lambda T, s: 0.08 + 0.001 * s):
    runs = []
    for T in (50, 150, 300):
        for sA in (-0.1, 0.0, 0.1):
            for s in range(2):
                lc = {-0.1: 10.0, 0.0: 10 + 2 * math.log(T / 50), 0.1: pos_log_cap(T)}[sA]
                g = gap(T, s)
                runs.append(rec(exp, {"T": T, "s_A": sA}, s, metrics=bound_norms(sA, T, lc) | {
                    "gap": g, "train_acc": 0.95, "test_acc": 0.95 - g}))
    return runs


def test_bound_claims_from_numbers(tmp_path):
    exp = BoundVsT()
    cfg = resolve_config(BoundVsT, "quick")
    assert cfg.rho_form == "worst_case"
    c = by_name(exp.analyze(cfg, bound_runs(exp, lambda T: 10 + 0.1 * T), tmp_path))
    assert set(c) == {"capacity_growth_pos", "gap_neg"}
    assert c["capacity_growth_pos"].verdict == "PASS"
    assert c["capacity_growth_pos"].value == pytest.approx(25.0)
    assert "'code' form" in c["capacity_growth_pos"].measured
    assert c["gap_neg"].verdict == "PASS" and "T₉₀" in c["gap_neg"].note
    c = by_name(exp.analyze(cfg, bound_runs(exp, lambda T: 10 + math.log(T)), tmp_path))
    expo = c["capacity_growth_pos"]
    assert expo.verdict == "FAIL"  # growth like T is not exponential
    assert expo.diagnosis_kind == "finding" and "'code' form" in expo.diagnosis


def test_bound_gap_growing_with_T_fails(tmp_path):
    exp = BoundVsT()
    cfg = resolve_config(BoundVsT, "quick")
    runs = bound_runs(exp, lambda T: 10 + 0.1 * T, gap=lambda T, s: 0.0005 * T + 0.001 * s)
    c = by_name(exp.analyze(cfg, runs, tmp_path))["gap_neg"]
    assert c.verdict == "FAIL" and c.value == pytest.approx(0.05, abs=1e-3)


def test_bound_the_code_form_hides_the_growth():
    """For s_A > 0 the smallest-step ρ_A sits closer to 1 than the largest-step one."""
    q = NormQuantities(**bound_norms(0.1, 300, 10.0))
    assert 1 < q.rho("code") < q.rho("worst_case")
    q = NormQuantities(**bound_norms(-0.1, 300, 10.0))
    assert q.rho("code") == q.rho("worst_case") < 1


# ----------------------------------------------------------------------------- attention


def test_attention_claim_from_numbers(tmp_path):
    exp = AttentionView()
    cfg = resolve_config(AttentionView, "quick")
    M = np.tril(np.ones((2, 5, 5))).tolist()
    hist = {"attention": M, "tokens": [0, 1, 1, 0, 1]}
    base = {"example_label": 1.0, "example_score": 2.0, "test_acc": 0.9}
    good = rec(exp, {}, 0, metrics=base | {"scan_vs_attention_rel_err": 1e-15}, history=hist)
    (c,) = exp.analyze(cfg, [good], tmp_path)
    assert c.verdict == "PASS" and (tmp_path / c.figure).is_file()
    bad = rec(exp, {}, 0, metrics=base | {"scan_vs_attention_rel_err": 0.3}, history=hist)
    (c,) = exp.analyze(cfg, [bad], tmp_path)
    assert c.verdict == "FAIL" and c.value == pytest.approx(0.3)
    (c,) = exp.analyze(cfg, [rec(exp, {}, 0, status="diverged", reason="x")], tmp_path)
    assert c.verdict == "SKIP"


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
