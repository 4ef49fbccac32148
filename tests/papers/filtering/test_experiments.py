"""Each filtering experiment: run() on a tiny config returns its metric keys; its claim specs,
evaluated on hand-built records, give PASS / FAIL / SKIP from the numbers, and each FAIL carries
its diagnosis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ssmlab.config import build_config
from ssmlab.data.scan_orders import neighbour_distances, scan_order
from ssmlab.experiment import REGISTRY, RunRecord
from ssmlab.papers.filtering.experiments import (
    alignment,
    attention,
    convergence,
    gate_ablation,
    locality,
    lucky,
    scan_orders,
)
from ssmlab.records import SkipRun

TINY_GD = {"lr": 2.0, "max_steps": 20, "probe_every": 5}


def rec(exp, params, seed, metrics, history=None, info=None, status="ok"):
    return RunRecord(exp.id, "h", params, seed, status, metrics, history or {}, info or {})


def verdicts(claims):
    return [c.verdict for c in claims]


def test_all_registered():
    ids = {"filtering/alignment", "filtering/convergence", "filtering/locality",
           "filtering/lucky", "filtering/gate_ablation", "filtering/attention",
           "filtering/scan_orders", "filtering/scan_orders_fmnist", "filtering/samples",
           "filtering/length"}
    assert ids <= set(REGISTRY)
    for i in ids:
        cls = REGISTRY[i]
        for prof in ("quick", "paper"):
            build_config(cls.Config, cls.profiles[prof])  # every profile validates


def test_alignment_run_and_analyze(tmp_path: Path):
    exp = alignment.Alignment()
    cfg = build_config(exp.Config, {"n_train": 16, "n_test": 16, "gd": TINY_GD,
                                    "data": {"L": 8, "d": 8, "alpha_r": 0.5, "alpha_c": 0.25}})
    r = exp.run(cfg, {}, 0)
    assert r.status == "ok"
    assert {"steps_to_converge", "test_error", "final_cos_plus", "irr_abs_cos_max_over_time"} \
        <= set(r.metrics)
    assert len(r.history["probe_step"]) == len(r.history["cos_plus"]) >= 3
    steps = list(range(0, 200, 10))
    good = {"probe_step": steps, "cos_plus": [0.0] + [min(0.9, 0.05 * i) for i in range(1, 20)],
            "cos_class": [0.0] + [0.99] * 19, "proj_plus": [0.1 * s for s in steps]}
    for k in alignment.KEYS:
        good.setdefault(k, [0.0] * 20)

    def runs(hist, irr, cls):
        return [rec(exp, {}, s, {"irr_abs_cos_max_over_time": irr + 0.01 * s,
                                 "final_cos_class": cls, "final_cos_plus": 0.7,
                                 "steps_to_converge": 190.0, "test_error": 0.0}, hist)
                for s in range(3)]

    claims = exp.analyze(cfg, runs(good, 0.05, 0.99), tmp_path)
    assert [c.id.split(":")[1] for c in claims] == ["cos_rises", "class_span", "proj_linear",
                                                   "irrelevant_flat"]
    assert verdicts(claims) == ["PASS"] * 4
    assert all(c.ci_low is not None and c.ref and c.tolerance_source for c in claims)
    bad = dict(good, cos_plus=[0.0] + [0.9 - 0.01 * i for i in range(1, 20)],
               proj_plus=[1e-4 * s**2 for s in steps])
    claims = exp.analyze(cfg, runs(bad, 0.3, 0.3), tmp_path)
    assert verdicts(claims) == ["FAIL"] * 4
    assert claims[0].diagnosis_kind == "setup-unknown" and "1/√2" in claims[0].diagnosis


def test_convergence_run_and_analyze(tmp_path: Path):
    exp = convergence.Convergence()
    cfg = build_config(exp.Config, {"n_train": 16, "n_test": 16, "gd": TINY_GD,
                                    "data": {"L": 8, "d": 8, "alpha_r": 0.5, "alpha_c": 0.25},
                                    "alpha_rs": [0.5, 0.75], "lrs": [2.0], "lengths": [8]})
    cells = exp.cells(cfg)
    assert len(cells) == len({tuple(sorted(c.items())) for c in cells})  # no duplicates
    r = exp.run(cfg, cells[0], 0)
    assert {"gap", "steps_to_converge", "steps_to_zero_error", "test_error"} <= set(r.metrics)

    def runs_with(slope_gap, slope_lr, slope_L):
        cfg2 = build_config(exp.Config, {})
        out = []
        for c in exp.cells(cfg2):
            gap = (round(c["alpha_r"] * c["L"]) - round(0.25 * c["L"])) / c["L"]
            steps = 10 * gap**slope_gap * c["lr"] ** slope_lr * c["L"] ** slope_L * 100
            for s in range(2):
                out.append(rec(exp, c, s, {"gap": gap, "steps_to_converge": steps,
                                           "steps_to_zero_error": 1.0}))
        return cfg2, out

    cfg2, runs = runs_with(-2, -1, 0)
    claims = exp.analyze(cfg2, runs, tmp_path)
    assert [c.id.split(":")[1] for c in claims] == ["gap_slope", "lr_slope"]  # no L claim
    assert verdicts(claims) == ["PASS", "PASS"]
    assert claims[0].value == pytest.approx(-2, abs=1e-6)
    cfg2, runs = runs_with(-1, -0.5, 3)
    claims = exp.analyze(cfg2, runs, tmp_path)
    assert verdicts(claims) == ["FAIL", "FAIL"]
    assert all(c.diagnosis_kind == "finding" and "per-seed slopes" in c.diagnosis for c in claims)
    # runs that never converged (NaN steps) give no slope: SKIP, not a FAIL on NaN
    cfg2, runs = runs_with(-2, -1, 0)
    for r in runs:
        r.metrics["steps_to_converge"] = math.nan
    claims = exp.analyze(cfg2, runs, tmp_path)
    assert verdicts(claims) == ["SKIP", "SKIP"]
    assert "converged runs at 0 value(s) of the gap (2 needed)" in claims[0].measured


def test_locality_run_and_analyze(tmp_path: Path):
    exp = locality.Locality()
    cfg = build_config(exp.Config, {"n_train": 16, "n_test": 16, "deltas_close": [1, 2],
                                    "gd": TINY_GD | {"converge": "error", "error_target": 0.3},
                                    "data": {"L": 8, "d": 8, "delta_close": 1, "delta_far": 5}})
    r = exp.run(cfg, {"delta_close": 2}, 0)
    assert {"gap", "steps_to_converge", "steps_censored", "final_proj_irr_mean",
            "final_proj_plus"} <= set(r.metrics)
    hist = {"probe_step": [0, 10], "step": [0, 10], "train_error": [0.5, 0.2],
            **{k: [0.0, 0.0] for k in locality.HKEYS}}
    cfg = build_config(exp.Config, {"deltas_close": [1, 2, 3]})

    def runs(irr, steps, converged=(1, 2, 3)):
        return [rec(exp, {"delta_close": k}, s,
                    {"final_proj_irr_mean": irr[k] + 0.01 * s, "final_proj_plus": 0.01,
                     "final_proj_minus": -0.01, "steps_censored": steps[k] + s,
                     "steps_to_converge": steps[k] + s if k in converged else math.nan,
                     "converged": float(k in converged), "gap": 0.5**k - 0.5**6,
                     "test_error": 0.1}, hist)
                for k in (1, 2, 3) for s in range(3)]

    # ΔL⁺ = 1 (below lemma_min_delta) may go positive without failing the lemma
    claims = exp.analyze(cfg, runs({1: 0.7, 2: -1.0, 3: -1.0}, {1: 100.0, 2: 300.0, 3: 900.0}),
                         tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert "ΔL⁺=1: irrelevant +0.7" in claims[0].note
    claims = exp.analyze(cfg, runs({1: -1.0, 2: 0.5, 3: 0.5}, {1: 300.0, 2: 100.0, 3: 50.0}),
                         tmp_path)
    assert verdicts(claims) == ["FAIL", "FAIL", "FAIL"]
    assert all(c.diagnosis_kind == "finding" for c in claims)
    # unconverged runs: the lemma counts only converged ones; a slowdown from a cell with
    # censored runs is not compared; fewer than 3 converged values of g: no rate (SKIP)
    claims = exp.analyze(cfg, runs({1: 0.7, 2: -1.0, 3: 5.0}, {1: 100.0, 2: 1500.0, 3: 2500.0},
                                   converged=(1, 2)), tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "SKIP"]
    assert "compared: 1→2, 2→3" in claims[1].measured
    claims = exp.analyze(cfg, runs({1: 0.7, 2: -1.0, 3: -1.0}, {1: 2500.0, 2: 2500.0, 3: 2500.0},
                                   converged=()), tmp_path)
    assert verdicts(claims) == ["SKIP", "SKIP", "SKIP"]


def test_lucky_run_and_analyze(tmp_path: Path):
    exp = lucky.Lucky()
    cfg = build_config(exp.Config, {
        "n_train": 16, "n_train_stack": 8, "n_test": 8, "n_probe": 4, "gd": TINY_GD,
        "data": {"L": 6, "d": 8, "alpha_r": 0.5, "alpha_c": 0.17},
        "stack": {"depth": 2, "d_state": 2, "width": 4},
        "stack_train": {"optimizer": "adam", "lr": 1e-3, "epochs": 2}})
    for kind in ("filtering", "mamba5"):
        r = exp.run(cfg, {"model": kind}, 0)
        assert {"wo_lucky_frac", "delta_class_cos", "wo_class_cos", "delta_irr_feature_cos",
                "test_error"} <= set(r.metrics)
    m = {"wo_lucky_frac": 0.5, "wo_cos_lucky_mean": 0.9, "wo_class_cos": 0.9,
         "delta_class_cos": 0.9, "delta_class_feature_cos": 0.6, "delta_irr_feature_cos": 0.1,
         "wo_class_feature_cos": 0.6, "wo_irr_feature_cos": 0.3, "test_error": 0.0}
    info = {"row_cos_plus": [0.1], "row_cos_minus": [0.2], "v_sign": [1.0]}
    runs = [rec(exp, {"model": k}, s, m, info=info) for k in ("filtering", "mamba5")
            for s in range(2)]
    claims = exp.analyze(cfg, runs, tmp_path)
    assert [c.id.split(":")[1] for c in claims] == ["lucky_fraction", "table3_delta",
                                                   "table3_wo"]
    assert verdicts(claims) == ["PASS", "PASS", "FAIL"]
    assert claims[2].value == pytest.approx(2.0) and claims[2].diagnosis_kind == "finding"
    assert "ours" in claims[0].measured  # the lucky-neuron definition is ours
    runs = [rec(exp, {"model": k}, s, m | {"wo_lucky_frac": 0.05}, info=info)
            for k in ("filtering", "mamba5") for s in range(2)]
    assert verdicts(exp.analyze(cfg, runs, tmp_path))[0] == "FAIL"


def test_gate_ablation_run_and_analyze(tmp_path: Path):
    exp = gate_ablation.GateAblation()
    cfg = build_config(exp.Config, {
        "n_train": 16, "n_test": 16, "gd": TINY_GD,
        "majority": {"L": 8, "d": 8, "alpha_r": 0.5, "alpha_c": 0.25},
        "locality": {"L": 8, "d": 8, "delta_close": 1, "delta_far": 5}})
    r = exp.run(cfg, {"data": "locality", "bc_init": "gaussian_trained", "gate": False}, 0)
    assert {"test_accuracy", "gate_relevant", "gate_irrelevant"} <= set(r.metrics)
    assert r.metrics["gate_relevant"] == pytest.approx(0.5)
    assert len(exp.cells(cfg)) == 8  # data × W_B, W_C reading × gate
    acc = {("majority", "identity", True): 0.99, ("majority", "identity", False): 0.7,
           ("majority", "gaussian_trained", True): 0.5,
           ("majority", "gaussian_trained", False): 0.5,
           ("locality", "identity", True): 0.8, ("locality", "identity", False): 0.75,
           ("locality", "gaussian_trained", True): 0.9,
           ("locality", "gaussian_trained", False): 0.6}
    runs = [rec(exp, {"data": d, "bc_init": bc, "gate": g}, s,
                {"test_accuracy": a + 0.001 * s, "gate_relevant": 0.9, "gate_irrelevant": 0.4,
                 "train_loss": 0.1})
            for (d, bc, g), a in acc.items() for s in range(2)]
    claims = exp.analyze(cfg, runs, tmp_path)
    assert [c.id.split(":")[1] for c in claims] == [
        "majority_identity", "majority_gaussian_trained", "locality_identity",
        "locality_gaussian_trained"]
    assert verdicts(claims) == ["PASS", "FAIL", "FAIL", "PASS"]
    assert "neither model learns" in claims[1].diagnosis
    assert "already matches" in claims[2].diagnosis and "gaussian_trained: gate 0.9" in \
        claims[2].diagnosis


def test_attention_run_and_analyze(tmp_path: Path):
    exp = attention.AttentionComparison()
    cfg = build_config(exp.Config, {
        "n_test": 16, "sample_sizes": [16],
        "data": {"L": 8, "d": 8, "delta_close": 1, "delta_far": 5},
        "train_cfg": {"optimizer": "adam", "lr": 0.01, "epochs": 3, "eval_every": 1}})
    for m in cfg.models:
        r = exp.run(cfg, {"model": m, "n_train": 16}, 0)
        assert {"test_accuracy", "train_accuracy"} <= set(r.metrics)
    cells = exp.cells(cfg)
    assert {"model": "mamba", "n_train": 16, "epochs": cfg.long_epochs} in cells
    r = exp.run(cfg, {"model": "mamba", "n_train": 16, "epochs": 2}, 0)
    assert r.status == "ok" and len(r.history["step"]) <= 3

    def runs(acc, long=0.99):
        out = [rec(exp, {"model": m, "n_train": 16}, s, {"test_accuracy": a + 0.001 * s})
               for m, a in acc.items() for s in range(2)]
        return out + [rec(exp, {"model": "mamba", "n_train": 16, "epochs": cfg.long_epochs}, s,
                          {"test_accuracy": long}) for s in range(2)]

    acc = {"mamba": 0.9, "local": 0.8, "softmax": 0.52, "softmax_bidir": 0.5}
    claims = exp.analyze(cfg, runs(acc), tmp_path)
    assert [c.id.split(":")[1] for c in claims] == ["mamba_vs_local", "local_learns",
                                                   "global_chance"]
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert claims[0].value == pytest.approx(0.1)  # the long cell is not mixed into the 0.9
    acc = {"mamba": 0.55, "local": 0.8, "softmax": 0.95, "softmax_bidir": 0.5}
    claims = exp.analyze(cfg, runs(acc), tmp_path)
    assert verdicts(claims) == ["FAIL", "PASS", "FAIL"]
    assert claims[0].diagnosis_kind == "profile-too-small" and "0.990" in claims[0].diagnosis
    assert claims[2].diagnosis_kind == "setup-unknown" and "0.500" in claims[2].diagnosis


def test_scan_orders_run_and_analyze(tmp_path: Path):
    exp = scan_orders.ScanOrders()
    cfg = build_config(exp.Config, {
        "n_train": 16, "n_test": 16, "data": {"H": 4, "W": 4, "d": 8, "far_min": 3},
        "train_cfg": {"optimizer": "adam", "lr": 0.01, "epochs": 1, "batch_size": 8}})
    r = exp.run(cfg, {"order": "hilbert"}, 0)
    assert {"test_accuracy", "predicted_gap", "grid_retention", "close_distance"} <= set(r.metrics)
    acc = {"row_major": 0.7, "snake": 0.72, "column_major": 0.7, "zorder": 0.69, "hilbert": 0.8}
    runs = [rec(exp, {"order": o}, s, {"test_accuracy": a + 0.01 * s, "predicted_gap": 0.2})
            for o, a in acc.items() for s in range(2)]
    claims = exp.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS", "PASS"]
    assert "mean dist" in claims[0].measured and "median dist" in claims[0].measured
    runs = [rec(exp, {"order": o}, s, {"test_accuracy": 0.9 - 0.1 * (o == "hilbert") + 0.01 * s,
                                       "predicted_gap": 0.2}) for o in acc for s in range(2)]
    assert verdicts(exp.analyze(cfg, runs, tmp_path)) == ["PASS", "FAIL"]
    # accuracy that falls with the number of distinct neighbour lags: the evidence says so
    lags = {o: len(np.unique(neighbour_distances(scan_order(o, 4, 4), 4, 4))) for o in acc}
    assert lags["row_major"] == 2 and lags["hilbert"] > 2
    runs = [rec(exp, {"order": o}, s, {"test_accuracy": 0.95 - 0.02 * lags[o] + 0.01 * s,
                                       "predicted_gap": 0.2}) for o in acc for s in range(2)]
    fail = exp.analyze(cfg, runs, tmp_path)[1]
    assert fail.verdict == "FAIL" and "with fewer distinct lags 1.00" in fail.diagnosis
    assert f", {lags['hilbert']})" in fail.diagnosis.split("hilbert ")[1]


def test_fashion_scan_skips_without_data(tmp_path: Path):
    exp = scan_orders.FashionScan()
    cfg = build_config(exp.Config, {"root": str(tmp_path)})
    with pytest.raises(SkipRun, match=str(tmp_path)) as skip:
        exp.run(cfg, {"order": "hilbert"}, 0)
    skipped = RunRecord(exp.id, "h", {"order": "hilbert"}, 0, "skipped", {}, {}, {},
                        reason=str(skip.value))
    claims = exp.analyze(cfg, [skipped], tmp_path)
    assert verdicts(claims) == ["SKIP"]
    assert str(tmp_path) in claims[0].measured and "1 skipped" in claims[0].note
    runs = [rec(exp, {"order": o}, s, {"test_accuracy": a + 0.01 * s})
            for o, a in (("row_major", 0.80), ("hilbert", 0.83)) for s in range(2)]
    cfg2 = build_config(exp.Config, {"orders": ["row_major", "hilbert"]})
    c = exp.analyze(cfg2, runs, tmp_path)[0]
    assert c.verdict == "PASS" and math.isclose(c.value, 0.03, abs_tol=1e-9)


@pytest.mark.slow
def test_fashion_scan_real_data_tiny(tmp_path: Path):
    from ssmlab.data.fashion_mnist import available

    exp = scan_orders.FashionScan()
    cfg = build_config(exp.Config, {"n_train": 64, "n_test": 64,
                                    "train_cfg": {"optimizer": "adam", "lr": 3e-3, "loss": "ce",
                                                  "batch_size": 32, "epochs": 1}})
    if not available(cfg.root):
        pytest.skip("no Fashion-MNIST installed")
    r = exp.run(cfg, {"order": "hilbert"}, 0)
    assert r.status == "ok" and 0 <= r.metrics["test_accuracy"] <= 1
    assert np.isfinite(r.metrics["test_loss"])


def test_gate_ablation_pairs_seeds_and_reports_fit(tmp_path: Path):
    """A fixed-gate run that diverged drops its seed from both arms (paired by seed, said in
    the measured text), and a gated arm that did not fit its training set is said in the
    evidence of a FAIL."""
    exp = gate_ablation.GateAblation()
    cfg = build_config(exp.Config, {"datasets": ["locality"], "bc_inits": ["identity"],
                                    "gd": TINY_GD})
    runs = []
    for s, (gated, fixed) in enumerate([(0.60, 0.99), (0.70, 1.00), (0.65, 1.00)]):
        for g, acc, fit in ((True, gated, 0.7), (False, fixed, 1.0)):
            status = "diverged" if (s, g) == (0, False) else "ok"
            metrics = {} if status == "diverged" else {
                "test_accuracy": acc, "train_accuracy": fit, "train_loss": 1 - fit,
                "gate_relevant": 0.7, "gate_irrelevant": 0.8}
            runs.append(rec(exp, {"data": "locality", "bc_init": "identity", "gate": g}, s,
                            metrics, status=status))
    (claim,) = exp.analyze(cfg, runs, tmp_path)
    assert claim.verdict == "FAIL"
    assert claim.value == pytest.approx((0.70 + 0.65) / 2 - 1.0)  # seeds 1, 2 only
    assert "paired on the 2 seeds that finished both (without: 1 of 3 runs" in claim.measured
    assert "with the gate 0.700 (0.300), fixed 1.000 (0.000)" in claim.diagnosis
    assert "has not fitted the training set" in claim.diagnosis
