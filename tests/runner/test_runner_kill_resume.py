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


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live (non-zombie) descendant of `pid`."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the dev environment
        return _descendants_proc(pid)
    out = {}
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    for k in kids:
        try:
            if k.status() != psutil.STATUS_ZOMBIE:
                out[k.pid] = " ".join(k.cmdline())
        except psutil.NoSuchProcess:
            pass
    return out


def _descendants_proc(pid: int) -> dict[int, str]:
    parents: dict[int, int] = {}
    cmd: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            parents[int(d.name)] = int(fields[1])
            cmd[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out[child] = cmd[child]
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_pool_workers_exit_when_the_sweep_is_killed(tmp_path):
    """kill -9 of the sweep's process alone (not its process group): its loky workers used to
    idle on for 300 s holding their memory; they must be gone within a few seconds."""
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "ssmlab.cli", "run", "builtin/test_sleepy", "--set",
           "sleep=1.0", "--set", "n_cells=8", "--seeds", "2", "--executor", "local",
           "--workers", "2", "--results", str(res), "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _committed(res / "ssmlab.db") < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "sweep made no progress"
            time.sleep(0.05)
        kids = _descendants(proc.pid)
        workers = [p for p, c in kids.items() if "popen_loky" in c]
        assert len(workers) == 2, kids
    finally:
        proc.kill()
        proc.wait()
    t0 = time.monotonic()
    while any(_alive(p) for p in kids) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    gone_after = time.monotonic() - t0
    left = {p: c for p, c in kids.items() if _alive(p)}
    for p in left:  # do not leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    print(f"\nworkers {workers} gone {gone_after:.2f} s after the kill; leftovers: {left}")
    assert not [p for p in workers if p in left], left
    assert gone_after < 5.0
    assert left == {}, "loky's helper processes must follow their workers"
