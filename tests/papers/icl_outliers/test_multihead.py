"""icl_outliers/multihead: specs on hand-built records, and one tiny run."""

from __future__ import annotations

import pytest

import ssmlab.papers.icl_outliers  # noqa: F401  (registers)
from ssmlab.config import build_config
from ssmlab.errors import UserError
from ssmlab.experiment import REGISTRY, RunRecord
from ssmlab.papers.icl_outliers.experiments.tolerance import key

EID = "icl_outliers/multihead"


def records(err, seeds=3, jitter=0.001):
    """err(heads, α) -> error; heads 0 = Mamba."""
    E = REGISTRY[EID]()
    cfg = build_config(E.Config, {"seeds": seeds})
    runs = []
    for cell in E.cells(cfg):
        for s in range(seeds):
            m = {key("flipped", a): err(cell["heads"], a) + jitter * s for a in cfg.alphas}
            runs.append(RunRecord(EID, "h", cell, s, "ok", m, {}, {}))
    return E, cfg, runs


def by_name(claims) -> dict:
    return {c.id.split(":", 1)[1]: c for c in claims}


def test_specs_pass(tmp_path):
    E, cfg, runs = records(lambda h, a: 0.0 if (h == 0 or a <= 0.5) else 0.6 - 0.01 * (h > 1))
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["multihead_gap"].verdict == "PASS"
    assert c["multihead_gap"].value == pytest.approx(0.59)
    assert c["multihead_barely"].verdict == "PASS"
    assert c["multihead_barely"].value == pytest.approx(0.01)
    assert (tmp_path / c["multihead_gap"].figure).exists()


def test_specs_fail(tmp_path):
    # more heads close the gap: H=4 as good as Mamba, H=1 bad
    E, cfg, runs = records(lambda h, a: 0.0 if (h != 1 or a <= 0.5) else 0.6)
    c = by_name(E.analyze(cfg, runs, tmp_path))
    assert c["multihead_gap"].verdict == "FAIL" and c["multihead_gap"].value == pytest.approx(0.0)
    assert c["multihead_barely"].verdict == "FAIL"
    assert c["multihead_barely"].value == pytest.approx(0.6)
    assert c["multihead_barely"].diagnosis_kind == "finding"
    assert "H=1" in c["multihead_barely"].diagnosis


def test_bad_heads_rejected():
    E = REGISTRY[EID]
    with pytest.raises(UserError):
        build_config(E.Config, {"heads": [2, 4]})
    with pytest.raises(UserError):
        build_config(E.Config, {"heads": [1, 5]})


def test_run_tiny():
    E = REGISTRY[EID]()
    cfg = build_config(E.Config, {"data": {"d": 12, "M1": 3, "M2": 4, "V": 3},
                                  "sgd": {"steps": 3, "batch_size": 8}, "d_model": 8,
                                  "heads": [1, 2], "l_tr": 6, "l_ts": 6,
                                  "alphas": [0.0, 0.5], "n_test": 16})
    for cell in E.cells(cfg):
        r = E.run(cfg, cell, 0)
        assert r.status == "ok"
        assert all(0.0 <= r.metrics[key("flipped", a)] <= 1.0 for a in (0.0, 0.5))
    assert E.run(cfg, {"model": "linear", "heads": 2}, 0).metrics == \
        E.run(cfg, {"model": "linear", "heads": 2}, 0).metrics
