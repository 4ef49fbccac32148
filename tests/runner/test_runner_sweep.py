"""Sweeps: resume, seed reuse, failures retried, analysis errors kept as claims, executors agree."""

from __future__ import annotations

import pytest

from ssmlab.errors import UserError
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep


def table(results, experiment):
    """The comparable content of a store: run key -> (status, metrics, history)."""
    with Store.open(results, create=False) as st:
        return {(r.run_id, r.seed, str(r.params)): (r.status, r.metrics, r.history)
                for r in st.runs(experiment)}


def test_resume_skips_finished_runs(tmp_path, exps):
    r1 = run_sweep("builtin/test_sleepy", results=tmp_path)
    assert (r1.total, r1.cached, r1.ran, r1.statuses["ok"]) == (12, 0, 12, 12)
    first = table(tmp_path, "builtin/test_sleepy")
    r2 = run_sweep("builtin/test_sleepy", results=tmp_path)
    assert (r2.cached, r2.ran) == (12, 0)
    assert table(tmp_path, "builtin/test_sleepy") == first
    assert [c.verdict for c in r2.claims] == ["PASS"]


def test_more_seeds_reuse_existing_runs(tmp_path, exps):
    run_sweep("builtin/test_sleepy", results=tmp_path, seeds=1)
    r = run_sweep("builtin/test_sleepy", results=tmp_path, seeds=3)
    assert (r.total, r.cached, r.ran) == (18, 6, 12)
    # analysis sees exactly this config's 18 runs
    assert r.claims[0].value == sum(i * 10 + s for i in range(6) for s in range(3))


def test_runs_are_deterministic_across_stores(tmp_path, exps):
    run_sweep("builtin/test_sleepy", results=tmp_path / "a")
    run_sweep("builtin/test_sleepy", results=tmp_path / "b")
    assert table(tmp_path / "a", "builtin/test_sleepy") == table(tmp_path / "b", "builtin/test_sleepy")


def test_failed_runs_are_stored_then_retried(tmp_path, exps, monkeypatch):
    monkeypatch.setenv("FLAKY_FAIL", "1")
    r = run_sweep("builtin/test_flaky", results=tmp_path)
    assert dict(r.statuses) == {"diverged": 1, "ok": 1, "failed": 2}
    assert "2 of 4 runs failed" in r.claims[0].note
    with Store.open(tmp_path) as st:
        failed = st.runs("builtin/test_flaky", statuses=["failed"])
    assert len(failed) == 2 and "RuntimeError: flaky cell" in failed[0].reason
    assert "Traceback" in failed[0].error
    monkeypatch.delenv("FLAKY_FAIL")
    r = run_sweep("builtin/test_flaky", results=tmp_path)
    assert (r.cached, r.ran) == (2, 2)  # diverged is final, failed is retried
    assert dict(r.statuses) == {"diverged": 1, "ok": 3}
    with Store.open(tmp_path) as st:
        assert sorted(x.attempts for x in st.runs("builtin/test_flaky")) == [1, 1, 2, 2]


def test_analysis_error_becomes_a_failed_claim(tmp_path, exps):
    r = run_sweep("builtin/test_badanalysis", results=tmp_path)
    assert r.statuses["ok"] == 1
    [c] = r.claims
    assert c.verdict == "FAIL" and "ZeroDivisionError" in c.measured
    with Store.open(tmp_path) as st:
        assert st.count_runs() == 1
        assert st.claims("builtin/test_badanalysis", r.cfg_hash)[0].verdict == "FAIL"


def test_local_pool_equals_serial(tmp_path, exps):
    run_sweep("builtin/test_sleepy", results=tmp_path / "s", executor="serial")
    run_sweep("builtin/test_sleepy", results=tmp_path / "l", executor="local", workers=2)
    ser, loc = table(tmp_path / "s", "builtin/test_sleepy"), table(tmp_path / "l", "builtin/test_sleepy")
    assert ser == loc and len(ser) == 12
    with Store.open(tmp_path / "l") as st:
        prov = st.runs("builtin/test_sleepy")[0].provenance
    assert prov["executor"] == "local" and prov["torch_threads"] == 1
    assert {"ssmlab", "git_commit", "torch", "host"} <= set(prov)


@pytest.mark.parametrize("kwargs, needle", [
    ({"executor": "spark"}, "unknown executor"),
    ({"executor": "serial", "scheduler": "tcp://x:1"}, "only used with --executor dask"),
    ({"executor": "dask"}, "needs --scheduler"),
    ({"executor": "local", "workers": 0}, "--workers must be >= 1"),
])
def test_bad_executor_options(tmp_path, exps, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        run_sweep("builtin/test_sleepy", results=tmp_path, **kwargs)
    assert not (tmp_path / "ssmlab.db").exists()


def test_a_cell_can_cap_its_seeds_without_changing_its_identity():
    from ssmlab.experiments.base import Experiment, ExperimentConfig
    from ssmlab.runner.sweep import plan

    class Capped(Experiment):
        id, paper, Config = "builtin/capped", "builtin", ExperimentConfig

        def __init__(self, cap):
            self.cap = cap

        def cells(self, cfg):
            return [{"i": 0}, {"i": 1, "_seeds": self.cap}]

        def run(self, cfg, params, seed):  # pragma: no cover - never executed here
            raise AssertionError

        def analyze(self, cfg, runs, figdir):  # pragma: no cover
            return []

    cfg = ExperimentConfig(seeds=4)
    runs = plan(Capped(2), cfg)
    assert [(r.params["i"], r.seed) for r in runs] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert all("_seeds" not in r.params for r in runs)
    more = plan(Capped(3), cfg)  # raising the cap keeps the stored runs' ids
    assert {r.run_id for r in runs} <= {r.run_id for r in more} and len(more) == 7
    with pytest.raises(ValueError, match="_seeds"):
        plan(Capped(0), cfg)
