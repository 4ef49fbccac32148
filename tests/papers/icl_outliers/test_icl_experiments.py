"""The icl_outliers experiments: registration, profiles, analyze() on hand-built records (PASS and
FAIL decided by the numbers), run() on tiny configs."""

from __future__ import annotations

import math

import pytest

import ssmlab.papers.icl_outliers  # noqa: F401  (registers)
from ssmlab.config import build_config
from ssmlab.errors import UserError
from ssmlab.experiment import REGISTRY, RunRecord
from ssmlab.papers.icl_outliers.experiments.placement import PAPER_TABLE1
from ssmlab.papers.icl_outliers.experiments.tolerance import key

IDS = ["icl_outliers/tolerance", "icl_outliers/iterations", "icl_outliers/gates",
       "icl_outliers/attention", "icl_outliers/placement"]


def exp(eid: str):
    return REGISTRY[eid]()


def rec(eid: str, params: dict, metrics: dict, history: dict | None = None, seed: int = 0,
        status: str = "ok") -> RunRecord:
    return RunRecord(eid, "h", params, seed, status, metrics, history or {}, {})


def verdicts(claims) -> list[str]:
    return [c.verdict for c in claims]


@pytest.mark.parametrize("eid", IDS)
def test_registered_with_valid_profiles(eid):
    E = REGISTRY[eid]
    assert E.paper == "icl_outliers" and E.__doc__
    for prof in ("quick", "paper"):
        cfg = build_config(E.Config, E.profiles[prof])
        assert len(E().cells(cfg)) >= 1


# ---- specs evaluated on hand-built records ---------------------------------------------------

def by_name(claims) -> dict:
    return {c.id.split(":", 1)[1]: c for c in claims}


def test_no_hand_built_claims_left():
    """Every experiment declares specs (one evaluator), none overrides analyze."""
    from ssmlab.experiment import Experiment
    for eid in IDS:
        E = REGISTRY[eid]
        assert E.analyze is Experiment.analyze, eid
        specs = E().specs(build_config(E.Config, E.profiles["quick"]))
        assert specs and all(s.ref and s.tolerance_source for s in specs)
        assert len({s.name for s in specs}) == len(specs)


def tolerance_records(mamba_err, linear_err, seeds=3, jitter=0.0):
    E = exp("icl_outliers/tolerance")
    cfg = build_config(E.Config, {"seeds": seeds})
    runs = []
    for kind, f in (("mamba", mamba_err), ("linear", linear_err)):
        for s in range(seeds):
            m = {key(r, a): f(r, a) + jitter * s for r in cfg.rules for a in cfg.alphas}
            m |= {"gate_outlier_paper_alpha": 0.01, "gate_clean_paper_alpha": 0.1}
            runs.append(rec(E.id, {"model": kind}, m, seed=s))
    return E, cfg, runs


def test_tolerance_specs_pass(tmp_path):
    E, cfg, runs = tolerance_records(lambda r, a: 0.0 if a <= 0.8 else 0.3,
                                     lambda r, a: 0.0 if a <= 0.5 else 0.9, jitter=0.001)
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert claims[0].id == "icl_outliers/tolerance:mamba_fig2"
    assert claims[0].ci_low is not None and claims[0].ci_high >= claims[0].ci_low
    assert (tmp_path / claims[0].figure).exists()


def test_tolerance_specs_fail_from_numbers(tmp_path):
    # Mamba breaks at α = 0.7 (beyond Thm 2's 0.6 but before the figure's 0.8); LT stays good
    E, cfg, runs = tolerance_records(lambda r, a: 0.0 if a < 0.7 else 0.2,
                                     lambda r, a: 0.05)
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert [c[n].verdict for n in ("mamba_fig2", "mamba_thm2", "linear_thm4")] == \
        ["FAIL", "PASS", "FAIL"]
    assert c["mamba_fig2"].value == pytest.approx(0.2)
    assert c["mamba_fig2"].diagnosis_kind == "finding" and "α = 0.6" in c["mamba_fig2"].diagnosis


def test_tolerance_thm4_needs_mamba_to_survive(tmp_path):
    """A label-averaging model fails past 1/2 with flipped labels: if Mamba fails as badly as
    the linear Transformer there, Thm 4's contrast is not shown (FAIL), however large the linear
    Transformer's own error."""
    E, cfg, runs = tolerance_records(lambda r, a: 0.0 if a <= 0.5 else 0.9,
                                     lambda r, a: 0.0 if a <= 0.5 else 0.95)
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["linear_thm4"].verdict == "FAIL" and c["linear_thm4"].value == pytest.approx(0.05)


def test_tolerance_straddling_interval_is_inconclusive(tmp_path):
    # seed errors 0.000, 0.008, 0.016 at α = 0.5: the mean 0.008 < 0.01 but the interval is not
    E, cfg, runs = tolerance_records(lambda r, a: 0.0, lambda r, a: 0.9 if a > 0.5 else 0.0)
    for r in runs:
        if r.params["model"] == "mamba":
            r.metrics[key("flipped", 0.5)] = 0.008 * r.seed
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["mamba_thm2"].verdict == "INCONCLUSIVE" and c["mamba_thm2"].seeds_needed


def test_tolerance_reports_diverged_runs(tmp_path):
    E, cfg, runs = tolerance_records(lambda r, a: 0.0, lambda r, a: 0.9)
    runs = [r for r in runs if r.params["model"] == "mamba"]
    runs += [rec(E.id, {"model": "linear"}, {}, status="diverged")]
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["linear_thm4"].verdict == "SKIP" and "diverged" in c["linear_thm4"].measured
    assert c["mamba_fig2"].verdict == "PASS" and "1 diverged" in c["mamba_fig2"].note


def iteration_records(f_m1, seeds=3, noise=0.02):
    E = exp("icl_outliers/iterations")
    cfg = build_config(E.Config, E.profiles["quick"])
    runs = []
    for cell in E.cells(cfg):
        if cell["sweep"] == "l_tr":
            steps = 900.0 if cell["model"] == "mamba" else 4000.0 / cell["l_tr"]
        elif cell["sweep"] == "p_a":
            steps = 100.0 / (1 - cell["p_a"])
        else:
            steps = f_m1(cell["M1"])
        runs += [rec(E.id, cell, {"steps": steps * (1 + noise * (s - 1))}, seed=s)
                 for s in range(seeds)]
    return E, cfg, runs


def test_iterations_specs(tmp_path):
    E, cfg, runs = iteration_records(lambda k: 30.0 * k)
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert {n: x.verdict for n, x in c.items()} == {
        "ratio_vs_ltr": "PASS", "mamba_vs_ltr": "PASS", "linear_vs_ltr": "PASS",
        "mamba_vs_inv_clean": "PASS", "mamba_vs_M1": "PASS"}
    assert c["ratio_vs_ltr"].value == pytest.approx(1.0)
    assert c["linear_vs_ltr"].value == pytest.approx(-1.0)
    E, cfg, runs = iteration_records(lambda k: 3.0 * k**2)  # quadratic in M₁
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["mamba_vs_M1"].verdict == "FAIL" and c["mamba_vs_M1"].value == pytest.approx(2.0)
    assert c["mamba_vs_inv_clean"].verdict == "PASS"


def test_iterations_unconverged_run_is_not_a_count(tmp_path):
    E, cfg, runs = iteration_records(lambda k: 30.0 * k)
    bad = next(r for r in runs if r.params.get("sweep") == "M1")
    bad.metrics["steps"] = float("nan")  # did not converge: no censored count enters the fit
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["mamba_vs_M1"].verdict == "FAIL" and "did not reach" in c["mamba_vs_M1"].note
    assert c["ratio_vs_ltr"].verdict == "PASS"


def gate_records(outlier_gate, factor, seeds=3):
    E = exp("icl_outliers/gates")
    cfg = build_config(E.Config, {})
    runs = []
    for s in range(seeds):
        f = factor * (1 + 0.01 * (s - 1))
        by_rank = [0.4 * f ** (j - 1) for j in range(1, 15)]
        runs.append(rec(E.id, {}, {"mean_outlier": outlier_gate * (1 + 0.1 * s),
                                   "max_outlier": 2 * outlier_gate, "mean_clean": 0.1},
                        {"gate_by_rank_clean": by_rank, "gate_by_position_clean": [0.1] * 20,
                         "gate_by_position_outlier": [outlier_gate] * 20}, seed=s))
    return E, cfg, runs


def test_gates_specs(tmp_path):
    E, cfg, runs = gate_records(0.001, 0.7)
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert {n: x.verdict for n, x in c.items()} == {
        "outlier_gate": "PASS", "clean_lower_bound": "PASS"}
    assert c["clean_lower_bound"].value == pytest.approx(math.log2(0.7), abs=0.01)
    # outliers not gated out; clean gates fall faster than 2^{-j} (factor 0.3 per example)
    E, cfg, runs = gate_records(0.2, 0.3)
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["outlier_gate"].verdict == "FAIL"
    assert c["clean_lower_bound"].verdict == "FAIL"
    assert c["clean_lower_bound"].diagnosis_kind == "finding"
    assert "faster than 2^" in c["clean_lower_bound"].diagnosis
    # a bound, not a rate: a slower decay than 2^{-j} satisfies Cor. 2
    E, cfg, runs = gate_records(0.001, 0.9)
    assert by_name(E.analyze(cfg, runs, tmp_path))["clean_lower_bound"].verdict == "PASS"


def attention_runs(E, depth, same1, other_mean1, other_abs=None, seeds=3):
    out = []
    for s in range(seeds):
        j = 1 + 0.01 * (s - 1)
        oa = abs(other_mean1) if other_abs is None else other_abs
        h = {"probe_step": [0, 1000, 2000], "same_sum": [3.6, same1 / 2, same1 * j],
             "other_sum": [0.0, other_mean1 * 5, other_mean1 * 10 * j],
             "same_mean": [0.36, same1 / 20, same1 / 10 * j],
             "other_mean": [0.0, other_mean1 / 2, other_mean1 * j],
             "other_abs_mean": [0.0, oa / 2, oa * j]}
        m = {f"first_{k}": v[0] for k, v in h.items() if k != "probe_step"}
        m |= {f"last_{k}": v[-1] for k, v in h.items() if k != "probe_step"}
        out.append(rec(E.id, {"model": depth}, m, h, seed=s))
    return out


def test_attention_specs(tmp_path):
    E = exp("icl_outliers/attention")
    cfg = build_config(E.Config, {})

    def run(same1, other_mean1, other_abs=None, stack=(100.0, 0.2)):
        return (attention_runs(E, "one_layer", same1, other_mean1, other_abs)
                + attention_runs(E, "stack", *stack))

    c = by_name(E.analyze(cfg, run(100.0, 0.2), tmp_path))
    assert list(c) == ["fig3_same_rises", "fig3_same_above_others", "same_rises",
                       "same_above_others", "cor1_other_eps"]
    assert all(x.verdict == "PASS" for x in c.values())
    c = by_name(E.analyze(cfg, run(100.0, -2.0), tmp_path))
    assert c["cor1_other_eps"].verdict == "FAIL" and "negative" in c["cor1_other_eps"].diagnosis
    assert c["cor1_other_eps"].value == pytest.approx(0.2, rel=0.02)
    # signed scores that cancel on average are not O(ε): |score| is what counts
    c = by_name(E.analyze(cfg, run(100.0, 0.0, other_abs=3.0), tmp_path))
    assert c["cor1_other_eps"].verdict == "FAIL"
    c = by_name(E.analyze(cfg, run(5.0, 0.0), tmp_path))
    assert c["same_rises"].verdict == "FAIL"  # grew < 2×
    assert c["fig3_same_rises"].verdict == "PASS"  # the stack's cells are judged apart
    # the stack's first layer: others rise faster than the same-pattern sum
    c = by_name(E.analyze(cfg, run(100.0, 0.2, stack=(2.0, 5.0)), tmp_path))
    assert c["fig3_same_rises"].verdict == "FAIL"
    assert c["fig3_same_above_others"].verdict == "FAIL"
    assert "seed 0: same 3.6" in c["fig3_same_above_others"].diagnosis
    assert c["same_rises"].verdict == "PASS"


def test_attention_one_layer_only_has_no_fig3_claims(tmp_path):
    E = exp("icl_outliers/attention")
    cfg = build_config(E.Config, {"models": ["one_layer"]})
    assert E.cells(cfg) == [{"model": "one_layer"}]
    c = by_name(E.analyze(cfg, attention_runs(E, "one_layer", 100.0, 0.2), tmp_path))
    assert list(c) == ["same_rises", "same_above_others", "cor1_other_eps"]
    with pytest.raises(UserError, match="stack.n_layers=1"):
        build_config(E.Config, {"stack": {"n_layers": 1}})
    with pytest.raises(UserError, match="stack.mixer=gla"):  # C_q · B_i is a Mamba layer's
        build_config(E.Config, {"stack": {"n_layers": 3, "mixer": "gla"}})


def placement_runs(E, table, seeds=5, spread=0.0):
    return [rec(E.id, {"model": k}, {f"acc_{pl}": min(100.0, v + spread * (s - 2))
                                     for pl, v in table[k].items()} | {"acc_clean": 100.0},
                seed=s) for k in table for s in range(seeds)]


def test_placement_specs(tmp_path):
    E = exp("icl_outliers/placement")
    cfg = build_config(E.Config, {})
    c = by_name(E.analyze(cfg, placement_runs(E, PAPER_TABLE1, spread=0.3), tmp_path))
    assert {n: x.verdict for n, x in c.items()} == {
        "mamba_row": "PASS", "linear_row": "PASS", "mamba_closest_drop": "PASS",
        "mamba_beats_linear": "PASS", "linear_flat": "PASS",
        "softmax_beats_mamba_closest": "PASS"}
    flat = {k: {"farthest": 100.0, "random": 100.0, "closest": 100.0} for k in PAPER_TABLE1}
    c = by_name(E.analyze(cfg, placement_runs(E, flat), tmp_path))
    # Mamba row off by 17 points (closest), linear off by 6; no drop; no gap; flat rows
    assert {n: x.verdict for n, x in c.items()} == {
        "mamba_row": "FAIL", "linear_row": "FAIL", "mamba_closest_drop": "FAIL",
        "mamba_beats_linear": "FAIL", "linear_flat": "PASS",
        "softmax_beats_mamba_closest": "FAIL"}
    assert all(x.diagnosis_kind == "setup-unknown" for x in c.values() if x.verdict == "FAIL")
    assert "seed 0:" in c["mamba_row"].diagnosis


def test_placement_seed_spread_is_not_a_pass(tmp_path):
    """± 5 points around a mean whose seeds spread widely: the interval decides, not the mean."""
    E = exp("icl_outliers/placement")
    cfg = build_config(E.Config, {})
    c = by_name(E.analyze(cfg, placement_runs(E, PAPER_TABLE1, spread=4.0), tmp_path))
    assert c["linear_row"].verdict == "INCONCLUSIVE"


# ---- run() on tiny configs -----------------------------------------------------------------

SMALL = {"data": {"d": 12, "M1": 3, "M2": 4, "V": 3}, "sgd": {"steps": 3, "batch_size": 8}}


def test_tolerance_run_tiny():
    E = exp("icl_outliers/tolerance")
    cfg = build_config(E.Config, SMALL | {"l_tr": 6, "l_ts": 6, "alphas": [0.0, 0.5],
                                          "n_test": 16})
    for kind in ("mamba", "linear"):
        r = E.run(cfg, {"model": kind}, 0)
        assert r.status == "ok"
        assert {key(rule, a) for rule in cfg.rules for a in (0.0, 0.5)} <= set(r.metrics)
        assert all(0.0 <= r.metrics[key(rule, 0.5)] <= 1.0 for rule in cfg.rules)
    again = E.run(cfg, {"model": "mamba"}, 0)
    assert again.metrics == E.run(cfg, {"model": "mamba"}, 0).metrics  # pure in (cfg, seed)


def test_gates_and_attention_run_tiny():
    E = exp("icl_outliers/gates")
    cfg = build_config(E.Config, SMALL | {"l_tr": 6, "l_ts": 6, "n_test": 16, "fit_ranks": 4})
    r = E.run(cfg, {}, 1)
    assert r.status == "ok" and len(r.history["gate_by_position_clean"]) == 6
    assert 0 <= r.metrics["mean_clean"] <= 1
    E = exp("icl_outliers/attention")
    cfg = build_config(E.Config, SMALL | {"l_tr": 6, "n_probe": 16, "probe_every": 1,
                                          "stack": {"n_layers": 3, "d_model": 8},
                                          "stack_sgd": {"steps": 2, "batch_size": 8}})
    r = E.run(cfg, {"model": "one_layer"}, 1)
    assert r.status == "ok" and r.history["probe_step"] == [0, 1, 2, 3]  # + the final iterate
    assert r.metrics["first_same_sum"] > 0
    r = E.run(cfg, {"model": "stack"}, 1)  # Fig. 3's 3-layer stack, scored by its first layer
    assert r.status == "ok" and r.history["probe_step"] == [0, 1, 2]
    assert all(math.isfinite(r.metrics[f"{w}_{k}_sum"]) for w in ("first", "last")
               for k in ("same", "other"))


def test_iterations_run_tiny():
    E = exp("icl_outliers/iterations")
    cfg = build_config(E.Config, SMALL | {"holdout": 16, "target_loss": 0.99, "M1s": [3, 4],
                                          "sgd": {"lr": 0.5, "steps": 50, "batch_size": 8}})
    r = E.run(cfg, {"sweep": "l_tr", "model": "linear", "l_tr": 6}, 0)
    assert r.status == "ok" and r.metrics["steps"] >= 0
    assert r.history["holdout_loss"][-1] <= 0.99 or math.isnan(r.metrics["steps"])
    r = E.run(cfg, {"sweep": "M1", "model": "mamba", "M1": 4}, 0)
    assert r.status == "ok" and "steps" in r.metrics


def test_placement_run_tiny():
    E = exp("icl_outliers/placement")
    cfg = build_config(E.Config, SMALL | {"l_tr": 6, "l_ts": 6, "n_test": 16,
                                          "model": {"n_layers": 2, "d_model": 8},
                                          "sgd": {"optimizer": "adam", "lr": 1e-3, "steps": 2,
                                                  "batch_size": 8}})
    for kind in ("mamba", "linear", "softmax"):
        r = E.run(cfg, {"model": kind}, 0)
        assert r.status == "ok" and 0 <= r.metrics["acc_closest"] <= 100


def test_quick_profile_seed_caps():
    """The costly cells run fewer seeds (a cap the runner reads, not part of the cell hash)."""
    E = exp("icl_outliers/placement")
    cells = E.cells(build_config(E.Config, E.profiles["quick"]))
    assert {c["model"]: c.get("_seeds") for c in cells} == {"mamba": None, "linear": None,
                                                             "softmax": 5}
    E = exp("icl_outliers/iterations")
    cfg = build_config(E.Config, E.profiles["quick"])
    caps = {(c["sweep"], c.get("_seeds")) for c in E.cells(cfg)}
    assert caps == {("l_tr", 3), ("p_a", None), ("M1", None)} and cfg.seeds == 6
