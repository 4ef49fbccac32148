"""The icl_outliers experiments: registration, profiles, analyze() on hand-built records (PASS and
FAIL decided by the numbers), run() on tiny configs."""

from __future__ import annotations

import math

import pytest

import ssmlab.papers.icl_outliers  # noqa: F401  (registers)
from ssmlab.config import build_config
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


# ---- analyze() on hand-built records -------------------------------------------------------

def tolerance_records(mamba_err, linear_err):
    E = exp("icl_outliers/tolerance")
    cfg = build_config(E.Config, {"seeds": 2})
    runs = []
    for kind, f in (("mamba", mamba_err), ("linear", linear_err)):
        for s in range(2):
            m = {key(r, a): f(r, a) for r in cfg.rules for a in cfg.alphas}
            runs.append(rec(E.id, {"model": kind}, m, seed=s))
    return E, cfg, runs


def test_tolerance_analyze_pass(tmp_path):
    E, cfg, runs = tolerance_records(lambda r, a: 0.0 if a <= 0.8 else 0.3,
                                     lambda r, a: 0.0 if a <= 0.5 else 0.9)
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert (tmp_path / claims[0].figure).exists()


def test_tolerance_analyze_fail_from_numbers(tmp_path):
    # Mamba breaks at α = 0.7 (beyond Thm 2's 0.6 but before the figure's 0.8); LT stays good
    E, cfg, runs = tolerance_records(lambda r, a: 0.0 if a < 0.7 else 0.2,
                                     lambda r, a: 0.05)
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["FAIL", "PASS", "FAIL"]
    assert claims[0].value == pytest.approx(0.2) and "α = 0.6" in claims[0].note


def test_tolerance_analyze_reports_diverged_runs(tmp_path):
    E, cfg, runs = tolerance_records(lambda r, a: 0.0, lambda r, a: 0.9)
    runs = [r for r in runs if r.params["model"] == "mamba"]
    runs += [rec(E.id, {"model": "linear"}, {}, status="diverged")]
    claims = E.analyze(cfg, runs, tmp_path)
    assert claims[2].verdict == "FAIL" and "diverged" in claims[2].note
    # one note helper (records.not_ok_note), per model: Mamba's claims stay clean
    assert claims[0].note == claims[1].note == ""
    assert claims[2].note.startswith("1 of 1 runs not ok: 1 diverged")


def test_not_ok_runs_are_noted_by_every_experiment(tmp_path):
    """gates / attention note the not-ok runs of the experiment, placement those of the row's
    model; the verdicts come from the ok runs only."""
    E, cfg, runs = gate_records(0.001, 0.5)
    bad = rec(E.id, {}, {}, status="diverged")
    bad.reason = "diverged at step 7"
    claims = E.analyze(cfg, [*runs, bad], tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert all(c.note == "1 of 3 runs not ok: 1 diverged (diverged at step 7)" for c in claims)
    E = exp("icl_outliers/placement")
    cfg = build_config(E.Config, {})
    runs = [rec(E.id, {"model": k}, {f"acc_{pl}": v for pl, v in PAPER_TABLE1[k].items()}
                | {"acc_clean": 100.0}, seed=s) for k in PAPER_TABLE1 for s in range(2)]
    runs.append(rec(E.id, {"model": "linear"}, {}, status="diverged"))
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS"] * 6
    assert [c.note for c in claims[:3]] == ["", "1 of 3 runs not ok: 1 diverged", ""]


def iteration_records(f_m1):
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
        runs.append(rec(E.id, cell, {"steps": steps}))
    return E, cfg, runs


def test_iterations_analyze(tmp_path):
    E, cfg, runs = iteration_records(lambda k: 30.0 * k)
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert claims[0].value == pytest.approx(1.0)
    E, cfg, runs = iteration_records(lambda k: 3.0 * k**2)  # quadratic in M₁
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "FAIL"] and claims[2].value == pytest.approx(2.0)
    runs[0].metrics["steps"] = float("nan")  # an unconverged run is reported
    assert "did not reach" in E.analyze(cfg, runs, tmp_path)[0].note
    runs[1].status = "diverged"
    note = E.analyze(cfg, runs, tmp_path)[0].note
    assert note.startswith("1 of ") and "runs not ok: 1 diverged" in note and "did not reach" in note


def gate_records(outlier_gate, factor):
    E = exp("icl_outliers/gates")
    cfg = build_config(E.Config, {})
    by_rank = [0.4 * factor ** (j - 1) for j in range(1, 15)]
    runs = [rec(E.id, {}, {"mean_outlier": outlier_gate, "max_outlier": 2 * outlier_gate,
                           "mean_clean": 0.1},
                {"gate_by_rank_clean": by_rank, "gate_by_position_clean": [0.1] * 20,
                 "gate_by_position_outlier": [outlier_gate] * 20}, seed=s) for s in range(2)]
    return E, cfg, runs


def test_gates_analyze(tmp_path):
    E, cfg, runs = gate_records(0.001, 0.5)
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["PASS", "PASS", "PASS"]
    assert claims[2].value == pytest.approx(-1.0)
    E, cfg, runs = gate_records(0.2, 0.9)  # outliers not gated out; decay too slow
    claims = E.analyze(cfg, runs, tmp_path)
    assert verdicts(claims) == ["FAIL", "PASS", "FAIL"]
    assert claims[2].value == pytest.approx(math.log2(0.9)) and "lower bound" in claims[2].note


def test_attention_analyze(tmp_path):
    E = exp("icl_outliers/attention")
    cfg = build_config(E.Config, {})

    def run(same1, other_mean1):
        h = {"probe_step": [0, 50], "same_sum": [3.6, same1], "other_sum": [0.0, other_mean1 * 10],
             "same_mean": [0.36, same1 / 10], "other_mean": [0.0, other_mean1]}
        m = {f"first_{k}": v[0] for k, v in h.items() if k != "probe_step"}
        m |= {f"last_{k}": v[1] for k, v in h.items() if k != "probe_step"}
        return [rec(E.id, {}, m, h, seed=s) for s in range(2)]

    assert verdicts(E.analyze(cfg, run(100.0, 0.2), tmp_path)) == ["PASS", "PASS"]
    claims = E.analyze(cfg, run(100.0, -2.0), tmp_path)
    assert verdicts(claims) == ["PASS", "FAIL"] and "negative" in claims[1].note
    assert verdicts(E.analyze(cfg, run(5.0, 0.0), tmp_path))[0] == "FAIL"  # grew < 2×


def test_placement_analyze(tmp_path):
    E = exp("icl_outliers/placement")
    cfg = build_config(E.Config, {})

    def runs_from(table):
        return [rec(E.id, {"model": k}, {f"acc_{pl}": v for pl, v in table[k].items()} | {"acc_clean": 100.0},
                    seed=s) for k in table for s in range(2)]

    claims = E.analyze(cfg, runs_from(PAPER_TABLE1), tmp_path)
    assert verdicts(claims) == ["PASS"] * 6
    flat = {k: {"farthest": 100.0, "random": 100.0, "closest": 100.0} for k in PAPER_TABLE1}
    claims = E.analyze(cfg, runs_from(flat), tmp_path)
    # Mamba row off by 17 points (closest), linear off by 6, softmax within 1; no drop; no gap
    assert verdicts(claims) == ["FAIL", "FAIL", "PASS", "FAIL", "FAIL", "PASS"]


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
    cfg = build_config(E.Config, SMALL | {"l_tr": 6, "n_probe": 16, "probe_every": 1})
    r = E.run(cfg, {}, 1)
    assert r.status == "ok" and r.history["probe_step"] == [0, 1, 2, 3]  # + the final iterate
    assert r.metrics["first_same_sum"] > 0


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
