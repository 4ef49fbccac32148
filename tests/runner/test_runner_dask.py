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
