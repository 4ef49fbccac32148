"""filtering/transformer (issue 13): a tiny in-process run of both models on both data types, and
the claim specs on hand-built records (PASS and FAIL cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmlab.config import build_config
from ssmlab.experiment import RunRecord
from ssmlab.papers.filtering.experiments import transformer

TINY = {"n_train": 16, "n_test": 16,
        "majority": {"L": 8, "d": 8, "alpha_r": 0.5, "alpha_c": 0.25},
        "locality": {"L": 8, "d": 8, "delta_close": 1, "delta_far": 5},
        "train_cfg": {"optimizer": "adam", "lr": 0.01, "epochs": 3, "eval_every": 1}}


def rec(exp, params, seed, metrics):
    return RunRecord(exp.id, "h", params, seed, "ok", metrics, {}, {})


def test_tiny_run_of_every_cell():
    exp = transformer.TransformerComparison()
    cfg = build_config(exp.Config, TINY)
    cells = exp.cells(cfg)
    assert cells == [{"data": d, "model": m} for d in ("majority", "locality")
                     for m in ("mamba", "softmax")]
    for c in cells:
        r = exp.run(cfg, c, 0)
        assert r.status == "ok"
        assert {"test_accuracy", "train_accuracy"} <= set(r.metrics)
        assert 0 <= r.metrics["test_accuracy"] <= 1
    bidir = build_config(exp.Config, {**TINY, "transformer": "softmax_bidir"})
    assert {"data": "locality", "model": "softmax_bidir"} in exp.cells(bidir)
    assert exp.run(bidir, {"data": "locality", "model": "softmax_bidir"}, 1).status == "ok"


def _runs(exp, acc):
    return [rec(exp, {"data": d, "model": m}, s,
                {"test_accuracy": a + 0.002 * s, "train_accuracy": 1.0})
            for (d, m), a in acc.items() for s in range(3)]


def test_specs_pass_and_fail(tmp_path: Path):
    exp = transformer.TransformerComparison()
    cfg = build_config(exp.Config, TINY)
    acc = {("majority", "mamba"): 0.99, ("majority", "softmax"): 0.97,
           ("locality", "mamba"): 0.9, ("locality", "softmax"): 0.7}
    claims = exp.analyze(cfg, _runs(exp, acc), tmp_path)
    assert [c.id.split(":")[1] for c in claims] == ["transformer_majority",
                                                   "mamba_vs_transformer_locality"]
    assert [c.verdict for c in claims] == ["PASS", "PASS"]
    assert claims[1].value == pytest.approx(0.2)
    acc = {("majority", "mamba"): 0.99, ("majority", "softmax"): 0.6,
           ("locality", "mamba"): 0.7, ("locality", "softmax"): 0.95}
    claims = exp.analyze(cfg, _runs(exp, acc), tmp_path)
    assert [c.verdict for c in claims] == ["FAIL", "FAIL"]
    assert claims[0].diagnosis_kind == "profile-too-small" and "0.602" in claims[0].diagnosis
    assert claims[1].diagnosis_kind == "setup-unknown" and "0.950" in claims[1].diagnosis
    one = build_config(exp.Config, {**TINY, "datasets": ["majority"]})
    assert [c.id.split(":")[1] for c in exp.analyze(one, _runs(exp, acc), tmp_path)] == \
        ["transformer_majority"]
