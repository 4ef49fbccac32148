"""Kill a sweep with SIGKILL in the middle, rerun it, and check that no run is lost or
duplicated, that runs committed before the kill are reused untouched, and that the final table
equals an uninterrupted run's.

The default test kills a serial sweep (the parent is the only writer for every executor, so this
is the store's atomicity under test) and resumes in-process; the slow variant kills a local
process-pool sweep together with its workers and resumes through the CLI.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep

ARGS = ["--set", "sleep=0.25", "--set", "n_cells=8", "--seeds", "2"]  # 16 runs
TOTAL = 16


def _cmd(results: Path, executor: str) -> list[str]:
    return [sys.executable, "-m", "ssmlab.cli", "run", "builtin/test_sleepy", *ARGS,
            "--executor", executor, "--workers", "2", "--results", str(results), "--quiet"]


def _env() -> dict[str, str]:
    return {**os.environ, "SSMLAB_PLUGINS": "ssmlab.runner.testing", "OMP_NUM_THREADS": "1"}


def _committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status='ok'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # the store is still being created
        return 0


def _rows(results: Path) -> dict[str, tuple]:
    with Store.open(results, create=False) as st:
        return {r.run_id: (r.status, r.metrics, r.history, r.finished, r.attempts)
                for r in st.runs("builtin/test_sleepy")}


@pytest.mark.parametrize(
    "executor", ["serial", pytest.param("local", marks=pytest.mark.slow)])
def test_sigkill_then_resume(tmp_path, exps, executor):
    res = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(res, executor), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _committed(res / "ssmlab.db") < 4:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "sweep made no progress"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes, at once
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _rows(res)
    assert 4 <= len(before) < TOTAL, "the kill must land in the middle of the sweep"

    if executor == "serial":
        r = run_sweep("builtin/test_sleepy", overrides=["sleep=0.25", "n_cells=8"], seeds=2,
                      results=res, executor="serial")
        assert r.statuses["ok"] == TOTAL
    else:
        done = subprocess.run(_cmd(res, executor), env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
    after = _rows(res)
    assert len(after) == TOTAL  # nothing lost; run keys are unique, so nothing duplicated
    with Store.open(res) as st:
        assert st.count_runs() == TOTAL
        last = st.conn.execute("SELECT cached, ran FROM sweeps ORDER BY id DESC").fetchone()
    assert tuple(last) == (len(before), TOTAL - len(before))  # finished runs were not rerun
    for rid, row in before.items():
        assert after[rid] == row  # same result, same finish time, one attempt

    # an uninterrupted run of the same config gives the same table
    clean = tmp_path / "clean"
    run_sweep("builtin/test_sleepy", overrides=["sleep=0.25", "n_cells=8"], seeds=2,
              results=clean, executor="serial")
    strip = {k: v[:3] for k, v in after.items()}  # (status, metrics, history)
    assert strip == {k: v[:3] for k, v in _rows(clean).items()}
