"""filtering/length (issue 13, Thm 1's L² at fixed token counts): the cells' data hold the
counts, the claim on hand-built records (PASS at slope 2, FAIL with a diagnosis at slope 4 and
when flat, censored runs named), and a tiny end-to-end run through the runner."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ssmlab.config import build_config
from ssmlab.experiment import RunRecord
from ssmlab.papers.filtering.experiments import length
from ssmlab.runner.registry import load_registry, resolve_config
from ssmlab.runner.sweep import run_sweep

EXP = "filtering/length"
REG = load_registry()


def test_cells_hold_the_counts_at_every_length():
    exp = length.LengthAtFixedCounts()
    for prof in ("quick", "paper"):
        cfg = resolve_config(REG[EXP], prof)
        for c in exp.cells(cfg):
            data = length._data(cfg, c["L"])
            assert (data.n_relevant, data.n_confusing) == (cfg.n_relevant, cfg.n_confusing)
            assert data.L == c["L"] and data.d == cfg.data.d
            assert data.gap == pytest.approx((cfg.n_relevant - cfg.n_confusing) / c["L"])
        costs = [exp.cost(cfg, c) for c in exp.cells(cfg)]
        assert costs == sorted(costs)  # the longest L is the costliest


def _records(exp, cfg, steps_of, seeds=4):
    return [RunRecord(exp.id, "h", c, s, "ok",
                      {"steps_to_converge": steps_of(c["L"]) * (1 + 0.03 * s),
                       "gap": 1.0 / c["L"], "test_error": 0.0,
                       "converged": float(math.isfinite(steps_of(c["L"])))}, {}, {})
            for c in exp.cells(cfg) for s in range(seeds)]


def test_claim_passes_at_slope_two_and_fails_at_four_or_flat(tmp_path: Path):
    exp = length.LengthAtFixedCounts()
    cfg = build_config(exp.Config, {"lengths": [8, 16, 32, 64]})
    (c,) = exp.analyze(cfg, _records(exp, cfg, lambda L: 0.5 * L**2), tmp_path)
    assert c.verdict == "PASS" and c.value == pytest.approx(2, abs=0.01)
    assert c.ci_low is not None and "mean steps by L: 8: 33, 16: 134" in c.measured
    assert (tmp_path / "filtering_length.png").exists()
    (c,) = exp.analyze(cfg, _records(exp, cfg, lambda L: 0.01 * L**4), tmp_path)
    assert c.verdict == "FAIL" and c.value == pytest.approx(4, abs=0.01)
    assert c.diagnosis_kind == "finding" and "per-seed slopes 4.00" in c.diagnosis
    (c,) = exp.analyze(cfg, _records(exp, cfg, lambda L: 120.0), tmp_path)
    assert c.verdict == "FAIL" and c.value == pytest.approx(0, abs=0.01)


def test_never_converged_runs_are_left_out_and_named_and_a_slope_needs_two_lengths(
        tmp_path: Path):
    exp = length.LengthAtFixedCounts()
    cfg = build_config(exp.Config, {"lengths": [8, 16, 32, 64]})
    runs = _records(exp, cfg, lambda L: math.nan if L == 64 else 0.5 * L**2)
    (c,) = exp.analyze(cfg, runs, tmp_path)
    assert c.value == pytest.approx(2, abs=0.01)
    assert "4 of 16 runs did not converge within 3000 steps" in c.note
    runs = _records(exp, cfg, lambda L: math.nan if L > 8 else 0.5 * L**2)
    (c,) = exp.analyze(cfg, runs, tmp_path)  # one length converged: no slope to judge
    assert c.verdict == "SKIP" and "converged runs at 1 value(s) of L (2 needed)" in c.measured


def test_tiny_end_to_end_run(tmp_path: Path):
    tiny = ["data.d=8", "n_relevant=3", "n_confusing=1", "lengths=[4, 8]", "n_train=8",
            "n_test=8", "gd.max_steps=30", "gd.probe_every=5"]
    r = run_sweep(EXP, profile="quick", overrides=tiny, seeds=2, results=tmp_path,
                  executor="serial")
    assert r.total == 4 and r.statuses["ok"] == 4
    assert [c.id for c in r.claims] == ["filtering/length:l2_at_fixed_counts"]
    res = length.LengthAtFixedCounts().run(resolve_config(REG[EXP], "quick", overrides=tiny),
                                           {"L": 8}, 0)
    assert res.metrics["gap"] == pytest.approx(0.25)
    assert (res.metrics["converged"] == 1.0) == math.isfinite(res.metrics["steps_to_converge"])
