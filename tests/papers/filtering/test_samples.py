"""filtering/samples (issue 13): config ranges and cross-field rules, the N* estimator on
hand-built accuracy curves (interpolation, censoring), the claim specs on hand-built records
(PASS, FAIL with diagnosis, SKIP when N* is censored), the memory estimate, and a tiny
end-to-end run through the runner."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from configkit import rejected
from memkit import assert_refused, estimate

from ssmlab.config import build_config
from ssmlab.experiment import RunRecord
from ssmlab.memory import LIMIT_ENV
from ssmlab.papers.filtering.experiments import samples
from ssmlab.runner.registry import load_registry, resolve_config
from ssmlab.runner.sweep import run_sweep

EXP = "filtering/samples"
REG = load_registry()


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, words", [
    (("sample_sizes=[1, 4]",), ("sample_sizes.0",)),
    (("sample_sizes=[4, 4]",), ("sample_sizes", "listed twice")),
    (("sample_sizes=[4]",), ("sample_sizes", "at least 2")),
    (("sample_sizes=[2, 2000000]",), ("sample_sizes.1", "less than or equal")),
    (("dims=[2, 8]",), ("dims.0",)),
    (("dims=[8, 10000]",), ("dims.1",)),
    (("dims=[16, 16]",), ("dims", "listed twice")),
    (("alpha_rs=[0.25, 0.5]",), ("alpha_rs value 0.25", "alpha_c")),
    (("alpha_rs=[0.5, 0.8]",), ("alpha_rs value 0.8", "alpha_r + alpha_c")),
    (("alpha_rs=[0.5, 1.5]",), ("alpha_rs.1",)),
    (("target_accuracy=0.5",), ("target_accuracy", "greater than 0.5")),
    (("target_accuracy=1.01",), ("target_accuracy",)),
    (("target_accuracy=.nan",), ("target_accuracy",)),
    (("n_test=1",), ("n_test",)),
    (("gd.max_steps=0",), ("gd.max_steps",)),
    (("data.alpha_r=0.25",), ("data", "alpha_r", "alpha_c")),
    (("sample_sizes=" + str(list(range(2, 70))),), ("sample_sizes", "at most 64")),
])
def test_bad_override_is_a_one_line_error_naming_the_field(overrides, words):
    msg = rejected(REG[EXP], *overrides)
    for w in words:
        assert w in msg, (w, msg)


def test_values_at_the_edges_are_accepted_and_profiles_validate():
    cfg = resolve_config(REG[EXP], "quick", overrides=["alpha_rs=[0.3125, 0.75]",
                                                       "dims=[4, 8]", "target_accuracy=1",
                                                       "sample_sizes=[2, 3]"])
    assert cfg.alpha_rs == (0.3125, 0.75) and cfg.dims == (4, 8)
    for prof in ("quick", "paper"):
        c = resolve_config(REG[EXP], prof)
        assert 0 < samples.Samples().memory_bytes(c) < 16 * 2**30
    paper = resolve_config(REG[EXP], "paper")
    assert paper.dims == (32, 64, 128) and paper.seeds == 5


def test_cells_are_the_union_of_the_two_sweeps():
    exp = samples.Samples()
    cfg = resolve_config(REG[EXP], "quick")
    cells = exp.cells(cfg)
    assert len(cells) == len({tuple(sorted(c.items())) for c in cells})  # no duplicates
    n_n = len(cfg.sample_sizes)
    ref_in = cfg.data.d in cfg.dims and cfg.data.alpha_r in cfg.alpha_rs
    assert len(cells) == n_n * (len(cfg.alpha_rs) + len(cfg.dims) - int(ref_in))
    for c in cells:  # never the full factorial: off-reference in at most one of d, α_r
        assert c["d"] == cfg.data.d or c["alpha_r"] == cfg.data.alpha_r
    assert {c["n_train"] for c in cells} == set(cfg.sample_sizes)


@pytest.mark.parametrize("override", ["sample_sizes=[2, 4, 8, 64]", "dims=[16, 32, 128]",
                                      "data.L=32", "n_test=4000"])
def test_memory_estimate_grows_with_the_sizes(override):
    assert estimate(EXP, override) > estimate(EXP)


def test_a_config_far_too_large_is_refused(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "16G")
    assert_refused(EXP, "sample_sizes=[2, 1000000]", "data.L=4096")


# --- the N* estimator -----------------------------------------------------------------------


def test_n_star_interpolates_in_log_n():
    ns = [2, 4, 8, 16]
    v, c = samples.n_star(ns, [0.6, 0.8, 0.9, 1.0], 0.95)  # crossing halfway from 8 to 16
    assert c == "" and v == pytest.approx(8 * math.sqrt(2))
    v, c = samples.n_star(ns, [0.6, 0.8, 0.9, 1.0], 0.9)  # a grid point that reaches it exactly
    assert c == "" and v == pytest.approx(8)
    v, c = samples.n_star(ns, [0.6, 0.94, 0.97, 0.9], 0.95)  # the first crossing counts
    assert c == "" and v == pytest.approx(4 * 2 ** (1 / 3))
    v, c = samples.n_star([16, 2, 8, 4], [1.0, 0.6, 0.9, 0.8], 0.95)  # order of the grid
    assert c == "" and v == pytest.approx(8 * math.sqrt(2))
    v, c = samples.n_star(ns, [0.6, float("nan"), 0.9, 1.0], 0.95)  # a missing point skipped
    assert c == "" and v == pytest.approx(8 * math.sqrt(2))


def test_n_star_censoring():
    ns = [2, 4, 8, 16]
    assert samples.n_star(ns, [0.5, 0.6, 0.7, 0.94], 0.95) == (16, "above")
    assert samples.n_star(ns, [0.95, 0.99, 1.0, 1.0], 0.95) == (2, "below")
    assert samples.n_star(ns, [float("nan")] * 4, 0.95)[1] == "none"


# --- claims on hand-built records -----------------------------------------------------------

L = 16
GRID = [2 ** k for k in range(1, 11)]  # 2 .. 1024
SYN = {"sample_sizes": GRID, "dims": [16, 32, 64], "alpha_rs": [0.3125, 0.375, 0.4375],
       "data": {"L": L, "d": 32, "alpha_r": 0.3125, "alpha_c": 0.25}}


def _gap(alpha_r: float) -> float:
    return (round(alpha_r * L) - round(0.25 * L)) / L


def _records(exp, cfg, n_star_of, steps_of, seeds=3):
    """Runs of every cell: accuracy 0.95 + 0.05 tanh(log(N / N*)) (0.95 exactly at N*), steps
    from steps_of(gap, N) (NaN: not converged); small seed-dependent offsets."""
    out = []
    for c in exp.cells(cfg):
        g = _gap(c["alpha_r"])
        ns = n_star_of(c["d"], g)
        for s in range(seeds):
            acc = 0.95 + 0.05 * math.tanh(math.log(c["n_train"] / ns)) + 0.003 * (s - 1)
            steps = steps_of(g, c["n_train"]) * (1 + 0.02 * s)
            out.append(RunRecord(exp.id, "h", c, s, "ok",
                                 {"gap": g, "d": float(c["d"]), "n_train": float(c["n_train"]),
                                  "test_accuracy": min(acc, 1.0), "steps_to_converge": steps,
                                  "converged": float(np.isfinite(steps))}, {}, {}))
    return out


def test_claims_pass_when_the_paper_holds(tmp_path: Path):
    exp = samples.Samples()
    cfg = build_config(exp.Config, SYN)
    runs = _records(exp, cfg, lambda d, g: 0.02 * d / g**2,
                    lambda g, n: 5.0 * g**-2 * (1 + 0.1 * math.log2(n)))
    claims = exp.analyze(cfg, runs, tmp_path)
    assert [c.id.split(":")[1] for c in claims] == ["steps_fall_every_n", "samples_grow_with_d",
                                                   "samples_fall_with_gap"]
    assert [c.verdict for c in claims] == ["PASS", "PASS", "PASS"]
    assert claims[0].value == pytest.approx(-2, abs=0.05)
    assert claims[1].value == pytest.approx(1, abs=0.1)  # N* ∝ d, recovered from the curves
    assert claims[2].value == pytest.approx(-2, abs=0.15)
    assert all(c.ci_low is not None and c.tolerance_source and c.figure for c in claims)
    assert (tmp_path / "filtering_samples.png").exists()


def test_claims_fail_with_a_diagnosis_and_name_the_censored_values(tmp_path: Path):
    exp = samples.Samples()
    cfg = build_config(exp.Config, SYN)
    # N* falls with d and grows with the gap (gap 3/16 never reaches the target: censored);
    # at N = 16 steps grow with the gap, at every other N they fall
    runs = _records(exp, cfg, lambda d, g: 5e4 * g**2 * 32 / d,
                    lambda g, n: 100 * g if n == 16 else 5.0 * g**-2)
    claims = exp.analyze(cfg, runs, tmp_path)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL", "FAIL"]
    assert all(c.diagnosis_kind == "finding" for c in claims)
    assert claims[0].value == pytest.approx(1, abs=0.05)  # the N = 16 slope
    assert "N = 16" in claims[0].diagnosis
    assert claims[1].value == pytest.approx(-1, abs=0.1)
    assert "d = 16: N = 2 → " in claims[1].diagnosis
    assert claims[2].value == pytest.approx(2, abs=0.15)
    for text in (claims[2].note, claims[2].diagnosis, claims[2].measured):
        assert "gap 0.188: N* > 1024 (censored above the grid)" in text


def test_censored_thresholds_and_no_convergence_skip(tmp_path: Path):
    exp = samples.Samples()
    cfg = build_config(exp.Config, SYN)
    # every curve reaches the target at the smallest N: N* ≤ 2 everywhere; no run converges
    runs = _records(exp, cfg, lambda d, g: 0.5, lambda g, n: math.nan)
    claims = exp.analyze(cfg, runs, tmp_path)
    assert [c.verdict for c in claims] == ["SKIP", "SKIP", "SKIP"]
    assert "no N has converged runs" in claims[0].measured
    assert "censored below the grid" in claims[1].measured
    # one d inside the grid is not enough for a slope either
    runs = _records(exp, cfg, lambda d, g: 100.0 if d == 32 else 2000.0, lambda g, n: 10 / g)
    claims = exp.analyze(cfg, runs, tmp_path)
    assert claims[1].verdict == "SKIP" and "1 value(s) of d" in claims[1].measured
    assert "N* > 1024 (censored above the grid)" in claims[1].measured


def test_steps_claim_needs_every_n_to_fall(tmp_path: Path):
    """Nine N fall as Thm 1 says, one (the largest) rises slightly: the claim judges that one."""
    exp = samples.Samples()
    cfg = build_config(exp.Config, SYN)
    runs = _records(exp, cfg, lambda d, g: 0.02 * d / g**2,
                    lambda g, n: 300.0 * g**0.3 if n == 1024 else 5.0 * g**-2)
    claim = exp.analyze(cfg, runs, tmp_path)[0]
    assert claim.verdict == "FAIL"
    assert claim.value == pytest.approx(0.3, abs=0.02)
    assert "N = 1024: 0.30" in claim.measured and "N = 2: -2.00" in claim.measured


# --- end to end -------------------------------------------------------------------------------

TINY = ["data.L=8", "data.d=8", "data.alpha_r=0.375", "data.alpha_c=0.25",
        "alpha_rs=[0.375, 0.5]", "dims=[8, 16]", "sample_sizes=[2, 4]", "n_test=16",
        "gd.max_steps=20", "gd.probe_every=5"]


def test_tiny_end_to_end_run(tmp_path: Path):
    r = run_sweep(EXP, profile="quick", overrides=TINY, seeds=2, results=tmp_path,
                  executor="serial")
    assert r.total == 2 * 6  # (2 gaps + 2 d - the shared reference) × 2 N, 2 seeds
    assert r.statuses["ok"] == r.total
    assert [c.id.split(":")[1] for c in r.claims] == ["steps_fall_every_n",
                                                     "samples_grow_with_d",
                                                     "samples_fall_with_gap"]
    assert all(c.verdict in ("PASS", "FAIL", "INCONCLUSIVE", "SKIP") for c in r.claims)
    exp = samples.Samples()
    cfg = resolve_config(REG[EXP], "quick", overrides=TINY)
    res = exp.run(cfg, {"alpha_r": 0.5, "d": 16, "n_train": 4}, 0)
    assert res.status == "ok"
    m = res.metrics
    assert m["gap"] == pytest.approx(0.25) and m["d"] == 16 and m["n_train"] == 4
    assert 0 <= m["test_accuracy"] <= 1 and m["converged"] in (0.0, 1.0)
    assert (m["converged"] == 1.0) == math.isfinite(m["steps_to_converge"])
