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
    from ssmlab.experiment import Experiment, ExperimentConfig
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


# -- a worker that dies takes only its own run down ---------------------------------------------
class _FakeLoky:
    """Stands in for loky's reusable executor, deterministically: each `wait` either breaks
    the pool (when a killer task is in flight: every pending future then fails with
    TerminatedWorkerError, as loky does) or finishes the oldest pending task."""

    def __init__(self, killers: dict[str, int]):
        self.killers = killers  # run id -> how many more times it kills its worker
        self.executors: list[dict] = []
        self.breaks: list[list[str]] = []  # run ids in flight at each break

    def get_reusable_executor(self, **kw):
        if not self.executors or self.executors[-1]["broken"]:
            self.executors.append({"pending": [], "broken": False})
        ex = self.executors[-1]

        class Executor:
            def submit(self, fn, task):
                from concurrent.futures import Future

                f = Future()
                f.set_running_or_notify_cancel()
                ex["pending"].append((f, task))
                return f

        self.kw = kw
        return Executor()

    def wait(self, real_wait):
        def wait(fs, timeout=None, return_when="ALL_COMPLETED"):
            from joblib.externals.loky.process_executor import TerminatedWorkerError

            ex = self.executors[-1]
            ids = [t["run_id"] for _, t in ex["pending"]]
            if any(self.killers.get(i, 0) > 0 for i in ids):
                for i in ids:
                    if self.killers.get(i, 0) > 0:
                        self.killers[i] -= 1
                self.breaks.append(ids)
                for f, _ in ex["pending"]:
                    f.set_exception(TerminatedWorkerError(
                        "A worker process managed by the executor was unexpectedly "
                        "terminated.\nThe exit codes of the workers are {SIGKILL(-9)}"))
                ex["pending"].clear()
                ex["broken"] = True
            elif ex["pending"]:
                f, t = ex["pending"].pop(0)
                f.set_result({"status": "ok", "id": t["run_id"]})
            return real_wait(fs, timeout=0, return_when=return_when)
        return wait


def _drive(monkeypatch, killers: dict[str, int], ids: list[str]) -> tuple[dict, _FakeLoky]:
    import concurrent.futures

    import joblib.externals.loky

    from ssmlab.runner.executors import LocalPool

    fake = _FakeLoky(killers)
    monkeypatch.setattr(joblib.externals.loky, "get_reusable_executor",
                        fake.get_reusable_executor)
    monkeypatch.setattr(concurrent.futures, "wait", fake.wait(concurrent.futures.wait))
    pool, todo, out = LocalPool(2), list(ids), {}
    for _ in range(100):
        while todo and pool.free() > 0:
            pool.submit({"run_id": todo.pop(0)})
        for t, o in pool.collect(timeout=0):
            assert t["run_id"] not in out
            out[t["run_id"]] = o
        if not todo and not pool.busy():
            break
    return out, fake


def test_local_pool_reruns_the_healthy_tasks_of_a_broken_pool(monkeypatch):
    out, fake = _drive(monkeypatch, {"K": 99}, ["H", "K", "A", "B"])
    assert out["H"] == {"status": "ok", "id": "H"}  # in flight at the break, rerun, ok
    assert out["K"]["status"] == "failed" and out["K"]["reason"].startswith(
        "worker died: TerminatedWorkerError: A worker process managed by the executor was "
        "unexpectedly terminated. The exit codes")
    assert [out[x]["status"] for x in "AB"] == ["ok", "ok"]
    # the first break had both in flight; the killer was judged on a second break, alone
    assert fake.breaks == [["H", "K"], ["K"]]
    assert fake.kw["initializer"].__name__ == "init_pool_worker"  # workers watch their parent


def test_local_pool_a_worker_killed_once_from_outside_costs_no_run(monkeypatch):
    out, fake = _drive(monkeypatch, {"K": 1}, ["H", "K", "A"])  # dies once, then runs fine
    assert {k: o["status"] for k, o in out.items()} == {"H": "ok", "K": "ok", "A": "ok"}
    assert fake.breaks == [["H", "K"]]


@pytest.mark.slow
def test_a_dead_worker_fails_only_its_own_run(tmp_path, exps):
    """Cell 1 kills its worker (SIGKILL, as the OOM killer would) while cell 0 runs in the other
    worker. loky then fails every task in flight; the healthy one must be rerun and stored ok,
    and only the killer stored failed, "worker died"."""
    sync = tmp_path / "sync"
    sync.mkdir()
    r = run_sweep("builtin/test_crashy", results=tmp_path / "res", executor="local", workers=2,
                  overrides=["sleep=1.0", "crash_cell=1", "wait_for=[0]", f"sync_dir={sync}"])
    assert dict(r.statuses) == {"ok": 3, "failed": 1}, r.statuses
    with Store.open(tmp_path / "res") as st:
        runs = {x.params["i"]: x for x in st.runs("builtin/test_crashy")}
    assert runs[1].status == "failed" and runs[1].reason.startswith("worker died: ")
    assert "TerminatedWorkerError" in runs[1].reason
    assert [runs[i].status for i in (0, 2, 3)] == ["ok", "ok", "ok"]
    assert runs[0].metrics == {"value": 0.0} and runs[0].attempts == 1
    # cell 0 was really in flight when the pool broke: it started twice, in two processes
    assert len(list(sync.glob("started-0-*"))) == 2
    # the killer was retried alone once before being judged: two deaths
    assert len(list(sync.glob("started-1-*"))) == 2
    assert r.claims and "1 of 4 runs failed" in r.claims[0].note


# -- skipped runs are retried -------------------------------------------------------------------
def test_skipped_runs_are_retried_and_replaced_once_the_data_is_there(tmp_path, exps,
                                                                      monkeypatch):
    data = tmp_path / "data.txt"
    monkeypatch.setenv("SSMLAB_TEST_DATA", str(data))
    r = run_sweep("builtin/test_data", results=tmp_path / "res")
    assert (r.cached, r.ran, dict(r.statuses)) == (0, 3, {"skipped": 3})
    assert [c.verdict for c in r.claims] == ["SKIP"]  # the analysis got the skipped runs
    r = run_sweep("builtin/test_data", results=tmp_path / "res")  # still absent: skipped again
    assert (r.cached, r.ran, dict(r.statuses)) == (0, 3, {"skipped": 3})
    data.write_text("12345")
    r = run_sweep("builtin/test_data", results=tmp_path / "res")
    assert (r.cached, r.ran, dict(r.statuses)) == (0, 3, {"ok": 3})
    assert [c.verdict for c in r.claims] == ["PASS"]
    with Store.open(tmp_path / "res") as st:
        runs = st.runs("builtin/test_data")
    assert sorted(x.metrics["value"] for x in runs) == [5.0, 6.0, 7.0]
    assert {x.attempts for x in runs} == {3} and {x.reason for x in runs} == {""}
    r = run_sweep("builtin/test_data", results=tmp_path / "res")  # ok runs are final
    assert (r.cached, r.ran) == (3, 0)


# -- preflight: every user-input check before the store is opened --------------------------------
def _tree(path):
    import hashlib

    if not path.exists():
        return None
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("executor, workers, limit, refused", [
    ("serial", 8, "1500", False),   # one run at a time: 1000 B
    ("local", 2, "2500", False),    # 2 workers: 2000 B
    ("local", 3, "2500", True),     # 3 workers: 3000 B
    ("local", 8, "3500", False),    # 8 workers but only 3 runs: 3000 B
    ("local", 8, "2500", True),
])
def test_preflight_memory_counts_the_runs_that_execute_at_once(exps, monkeypatch, executor,
                                                               workers, limit, refused):
    from ssmlab.runner.sweep import preflight

    monkeypatch.setenv("SSMLAB_MEMORY_LIMIT", limit)
    cls = exps["builtin/test_data"]
    cfg = cls.Config(seeds=1)  # 3 runs, 1000 B each
    workers_ = None if executor == "serial" else workers
    if refused:
        with pytest.raises(UserError, match="estimated peak memory"):
            preflight(cls, cfg, executor, workers_, None)
    else:
        assert preflight(cls, cfg, executor, workers_, None) == (
            workers if executor == "local" else preflight(cls, cfg, "serial", None, None))


def test_preflight_skips_the_memory_check_for_a_remote_scheduler(exps, monkeypatch):
    pytest.importorskip("dask.distributed")
    import socket

    from ssmlab.runner.sweep import preflight

    monkeypatch.setenv("SSMLAB_MEMORY_LIMIT", "1")
    cls = exps["builtin/test_data"]
    with socket.socket() as srv:  # something listening, standing in for a scheduler
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert preflight(cls, cls.Config(), "dask", 2, f"tcp://127.0.0.1:{port}") == 2
    with pytest.raises(UserError, match="estimated peak memory"):
        preflight(cls, cls.Config(), "dask", 2, "local")  # a local cluster is this machine


@pytest.mark.parametrize("state", ["absent", "store"])
@pytest.mark.parametrize("case", ["memory", "corrupt-data", "bad-executor"])
def test_refused_sweep_leaves_the_results_dir_as_it_was(tmp_path, exps, monkeypatch, state,
                                                        case):
    res = tmp_path / "res"
    if state == "store":
        run_sweep("builtin/test_sleepy", results=res)
    before = _tree(res)
    kwargs = {}
    if case == "memory":
        monkeypatch.setenv("SSMLAB_MEMORY_LIMIT", "1K")
        kwargs = {"executor": "local", "workers": 2}
        needle = "estimated peak memory"
    elif case == "corrupt-data":
        data = tmp_path / "data.txt"
        data.write_text("corrupt!")
        monkeypatch.setenv("SSMLAB_TEST_DATA", str(data))
        needle = "is corrupt"
    else:
        kwargs = {"executor": "local", "workers": 0}
        needle = "--workers must be >= 1"
    with pytest.raises(UserError, match=needle):
        run_sweep("builtin/test_data", results=res, overrides=["n_cells=2"], **kwargs)
    assert _tree(res) == before


def test_costliest_runs_are_handed_out_first(tmp_path, exps, monkeypatch):
    """Longest-processing-time order: runs start in descending Experiment.cost, plan order
    among equals."""
    from ssmlab.runner.sweep import dispatch_order, plan
    from ssmlab.runner.testing import Sleepy

    exp, cfg = Sleepy(), Sleepy.Config(n_cells=4, seeds=2)
    monkeypatch.setattr(Sleepy, "cost", lambda self, cfg, p: 1.0 + (p["i"] % 2))
    expected = [(1, 0), (1, 1), (3, 0), (3, 1), (0, 0), (0, 1), (2, 0), (2, 1)]
    assert [(r.params["i"], r.seed) for r in dispatch_order(exp, cfg, plan(exp, cfg))] == expected
    started, run = [], Sleepy.run
    monkeypatch.setattr(Sleepy, "run", lambda self, cfg, params, seed: (
        started.append((params["i"], seed)), run(self, cfg, params, seed))[1])
    r = run_sweep("builtin/test_sleepy", results=tmp_path, executor="serial",
                  overrides=["n_cells=4"])
    assert r.statuses["ok"] == 8 and started == expected
    monkeypatch.setattr(Sleepy, "cost", lambda self, cfg, p: 0.0)
    with pytest.raises(ValueError, match="cost must be positive"):
        dispatch_order(exp, cfg, plan(exp, cfg))
