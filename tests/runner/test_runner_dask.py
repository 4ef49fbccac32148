"""The Dask executor sends the same cells to a cluster and stores the same table as serial.

CI runs it against an in-process LocalCluster on loopback (no extra processes, a few seconds);
the `--scheduler local` path (worker processes) is the slow variant.
"""

from __future__ import annotations

import pytest

from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep

distributed = pytest.importorskip("dask.distributed")


def table(results):
    with Store.open(results, create=False) as st:
        return {r.run_id: (r.status, r.metrics, r.history) for r in st.runs("builtin/test_sleepy")}


def test_dask_local_cluster_equals_serial(tmp_path, exps):
    run_sweep("builtin/test_sleepy", results=tmp_path / "serial", executor="serial")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        r = run_sweep("builtin/test_sleepy", results=tmp_path / "dask", executor="dask",
                      scheduler=addr)
        assert (r.ran, r.statuses["ok"]) == (12, 12)
        # resume through the cluster too: nothing left to run
        r2 = run_sweep("builtin/test_sleepy", results=tmp_path / "dask", executor="dask",
                       scheduler=addr)
        assert (r2.cached, r2.ran) == (12, 0)
    assert table(tmp_path / "dask") == table(tmp_path / "serial")
    with Store.open(tmp_path / "dask") as st:
        prov = st.runs("builtin/test_sleepy")[0].provenance
    assert prov["executor"] == "dask" and prov["scheduler"] == addr


@pytest.mark.slow
def test_dask_scheduler_local_spawns_worker_processes(tmp_path, exps, monkeypatch):
    monkeypatch.setenv("SSMLAB_PLUGINS", "ssmlab.runner.testing")
    run_sweep("builtin/test_sleepy", results=tmp_path / "serial", executor="serial")
    run_sweep("builtin/test_sleepy", results=tmp_path / "dask", executor="dask",
              scheduler="local", workers=2)
    assert table(tmp_path / "dask") == table(tmp_path / "serial")


def _tree(path):
    import hashlib

    if not path.exists():
        return None
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("state", ["absent", "store"])
def test_unreachable_scheduler_leaves_the_results_dir_as_it_was(tmp_path, exps, state):
    import time

    from ssmlab.errors import UserError

    res = tmp_path / "res"
    if state == "store":
        run_sweep("builtin/test_sleepy", results=res)
    before = _tree(res)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"cannot reach Dask scheduler 'tcp://127.0.0.1:1'") as e:
        run_sweep("builtin/test_sleepy", results=res, executor="dask",
                  scheduler="tcp://127.0.0.1:1")
    assert "\n" not in str(e.value)
    assert time.perf_counter() - t0 < 10  # refused at once, not after the client's retries
    assert _tree(res) == before


def test_the_scheduler_is_connected_to_before_the_first_write(tmp_path, exps, monkeypatch):
    """Past the quick probe, a scheduler the client cannot use still writes nothing: the sweep
    connects before it opens the store."""
    from ssmlab.errors import UserError
    from ssmlab.runner import executors

    calls = []

    def refuse(scheduler, workers):
        calls.append(scheduler)
        assert not (tmp_path / "res").exists(), "the store was opened before connecting"
        raise UserError(f"cannot reach Dask scheduler {scheduler!r}: handshake failed")

    monkeypatch.setattr(executors, "probe_scheduler", lambda s: None)
    monkeypatch.setattr(executors, "_dask_client", refuse)
    with pytest.raises(UserError, match="handshake failed"):
        run_sweep("builtin/test_sleepy", results=tmp_path / "res", executor="dask",
                  scheduler="tcp://10.0.0.1:8786")
    assert calls == ["tcp://10.0.0.1:8786"] and not (tmp_path / "res").exists()


@pytest.mark.parametrize("address, needle", [
    ("tcp://nohostport", "is not tcp://HOST:PORT"),
    ("tcp://127.0.0.1:notaport", "is not tcp://HOST:PORT"),
    ("127.0.0.1:1", "cannot reach Dask scheduler '127.0.0.1:1'"),
])
def test_bad_scheduler_addresses_are_one_line_errors(tmp_path, exps, address, needle):
    from ssmlab.errors import UserError

    with pytest.raises(UserError, match=needle):
        run_sweep("builtin/test_sleepy", results=tmp_path / "res", executor="dask",
                  scheduler=address)
    assert not (tmp_path / "res").exists()
