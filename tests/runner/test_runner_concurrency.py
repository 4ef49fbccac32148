"""Several processes on one store: creating it at once, and two sweeps sharing one sweep's work.

- Creation: 12 processes open the same new store at the same instant, several rounds; every
  open must succeed (the second opener used to see the file before its schema existed).
- Leases: a sweep claims a run in the store before computing it; a run leased by a live owner is
  not computed by another sweep, which waits for it to be committed; a lease whose owner stopped
  renewing it (killed) expires and is taken over.
- Slow: two `ssmlab run` processes of one sweep on one store compute each run exactly once and
  together finish well within one serial sweep's time; one of them killed with SIGKILL leaves
  its runs to the survivor, and the final table equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from ssmlab.runner.store import Heartbeat, Store, StoredRun, lease_owner, run_id_of
from ssmlab.runner.sweep import run_sweep


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSMLAB_RESULTS"}
    return env | {"SSMLAB_PLUGINS": "ssmlab.runner.testing", "OMP_NUM_THREADS": "1", **extra}


# -- creating one store from many processes ------------------------------------------------------
_OPENER = textwrap.dedent("""
    import json, sys, time
    from ssmlab.errors import UserError
    from ssmlab.runner.store import Store, StoredRun, run_id_of
    root, index, rounds, start, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        float(sys.argv[4]), float(sys.argv[5])
    for r in range(rounds):
        time.sleep(max(0.0, start + r * step - time.time()))  # every process at the same instant
        try:
            with Store.open(f"{root}/round{r}") as st:
                st.put_run(StoredRun(run_id=run_id_of("builtin/x", "c", index),
                                     experiment="builtin/x", cell_hash="c", seed=index,
                                     cfg_key="k", params={}, config={}, status="ok"))
            print(json.dumps({"round": r, "ok": True}), flush=True)
        except UserError as e:
            print(json.dumps({"round": r, "ok": False, "error": str(e)}), flush=True)
""")


def test_many_processes_create_one_store_at_once(tmp_path):
    procs, rounds, step = 12, 8, 0.3
    start = time.time() + 4.0  # time for every interpreter to start and import
    ps = [subprocess.Popen([sys.executable, "-c", _OPENER, str(tmp_path), str(i), str(rounds),
                            str(start), str(step)], env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(procs)]
    results = []
    for p in ps:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results += [json.loads(line) for line in out.splitlines()]
    failures = [r for r in results if not r["ok"]]
    assert len(results) == procs * rounds
    assert failures == [], f"{len(failures)} of {len(results)} opens failed: {failures[:3]}"
    for r in range(rounds):
        with Store.open(tmp_path / f"round{r}", create=False) as st:
            assert sorted(x.seed for x in st.runs("builtin/x")) == list(range(procs))


# -- leases --------------------------------------------------------------------------------------
def _ids(n: int) -> list[str]:
    return [run_id_of("builtin/x", "c", s) for s in range(n)]


def _row(seed: int, status: str = "ok") -> StoredRun:
    return StoredRun(run_id=run_id_of("builtin/x", "c", seed), experiment="builtin/x",
                     cell_hash="c", seed=seed, cfg_key="k", params={}, config={}, status=status)


def test_claims_split_the_runs_and_commits_release_them(tmp_path):
    ids = _ids(6)
    seen = dict.fromkeys(ids, 0)
    with Store.open(tmp_path) as a, Store.open(tmp_path) as b:
        ca = a.claim(seen, "A", ttl=30, limit=2)
        cb = b.claim(seen, "B", ttl=30, limit=2)
        assert ca.claimed == ids[:2] and cb.claimed == ids[2:4]
        assert cb.busy == {ids[0]: "A", ids[1]: "A"}
        again = a.claim(seen, "A", ttl=30, limit=10)  # A may renew its own, not take B's
        assert again.claimed == ids[:2] + ids[4:] and set(again.busy) == set(ids[2:4])
        assert a.put_run(_row(0), owner="A")  # committing releases that run's lease
        assert set(a.leases()) == set(ids) - {ids[0]}
        later = b.claim(seen, "B", ttl=30, limit=10)
        assert later.settled == {ids[0]: "ok"} and ids[0] not in later.claimed
        b.release("B")
        assert {o for o, _ in a.leases().values()} == {"A"}


def test_an_expired_lease_is_taken_over(tmp_path):
    ids = _ids(2)
    seen = dict.fromkeys(ids, 0)
    with Store.open(tmp_path) as a, Store.open(tmp_path) as b:
        assert a.claim(seen, "A", ttl=0.3, limit=2).claimed == ids
        assert b.claim(seen, "B", ttl=30, limit=2).claimed == []
        time.sleep(0.4)  # A was killed: nobody renews its leases
        assert b.claim(seen, "B", ttl=30, limit=2).claimed == ids
        assert {o for o, _ in a.leases().values()} == {"B"}


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    """A sweep killed with SIGKILL and rerun at once must not wait for its old leases."""
    import socket

    ids = _ids(2)
    seen = dict.fromkeys(ids, 0)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: that pid no longer exists
    host = socket.gethostname()
    with Store.open(tmp_path) as st:
        st.claim({ids[0]: 0}, f"{host}:{gone.pid}:dead", ttl=600, limit=1)
        st.claim({ids[1]: 0}, f"{host}:{os.getpid()}:alive", ttl=600, limit=1)
        c = st.claim(seen, "B", ttl=30, limit=2)
        assert c.claimed == [ids[0]] and c.busy == {ids[1]: f"{host}:{os.getpid()}:alive"}
        # a pid on another host cannot be checked: only expiry frees its leases
        st.claim({ids[0]: 0}, f"elsewhere:{gone.pid}:x", ttl=600, limit=1)
        st.release("B")
        st.claim({ids[0]: 0}, f"elsewhere:{gone.pid}:x", ttl=600, limit=1)
        assert st.claim(seen, "B", ttl=30, limit=2).claimed == []


def test_heartbeat_keeps_leases_alive_then_stops(tmp_path):
    ids = _ids(1)
    seen = dict.fromkeys(ids, 0)
    with Store.open(tmp_path) as a, Store.open(tmp_path) as b:
        a.claim(seen, "A", ttl=0.6, limit=1)
        with Heartbeat(a.path, "A", ttl=0.6) as hb:
            time.sleep(1.5)  # 2.5 lifetimes: renewed every 0.2 s
            assert b.claim(seen, "B", ttl=30, limit=1).claimed == []
            assert hb.renewals >= 3 and hb.error is None
        time.sleep(0.7)
        assert b.claim(seen, "B", ttl=30, limit=1).claimed == ids


def test_a_retry_made_by_another_sweep_settles_the_run(tmp_path):
    """A failed run that another sweep retried since this sweep planned is not rerun here."""
    rid = _ids(1)[0]
    with Store.open(tmp_path) as st:
        st.put_run(_row(0, "failed"))
        assert st.claim({rid: 1}, "A", ttl=30, limit=1).claimed == [rid]
        st.release("A")
        st.put_run(_row(0, "failed"), owner="B")  # B's retry failed again: attempts 2
        c = st.claim({rid: 1}, "A", ttl=30, limit=1)
        assert c.claimed == [] and c.settled == {rid: "failed"}


def test_lease_owner_names_host_pid_and_a_unique_part():
    a, b = lease_owner(), lease_owner()
    assert a != b and a.split(":")[1] == str(os.getpid()) and len(a.split(":")) == 3


def _leased_by_other(results: Path, ttl: float) -> Callable[[], None]:
    """Another sweep ('other') leases the sleepy runs of cell 0 (seeds 0, 1) of a 4-cell
    config; returns the function that commits them as that sweep would (value -1000)."""
    from ssmlab.runner.sweep import cfg_key_of, plan
    from ssmlab.runner.testing import Sleepy

    cfg = Sleepy.Config(n_cells=4, seeds=2)
    runs = [r for r in plan(Sleepy(), cfg) if r.params["i"] == 0]
    with Store.open(results) as st:
        assert len(st.claim({r.run_id: 0 for r in runs}, "other", ttl=ttl, limit=9).claimed) == 2

    def commit() -> None:
        with Store.open(results) as st:
            for r in runs:
                st.put_run(StoredRun(
                    run_id=r.run_id, experiment=Sleepy.id, cell_hash=r.cell_hash, seed=r.seed,
                    cfg_key=cfg_key_of(cfg), params=r.params, config=cfg.model_dump(mode="json"),
                    status="ok", metrics={"value": -1000.0, "noise": 0.0},
                    provenance={"pid": -1}), owner="other")

    return commit


def test_sweep_waits_for_runs_leased_by_a_live_owner(tmp_path, exps):
    commit = _leased_by_other(tmp_path, ttl=60)
    progress: list[int] = []
    threads: list[threading.Thread] = []

    def on_progress(done: int, total: int, run: object) -> None:
        progress.append(done)
        if done == 6:  # its own runs are done; the other sweep commits a while later
            threads.append(threading.Timer(0.5, commit))
            threads[-1].start()

    t0 = time.perf_counter()
    r = run_sweep("builtin/test_sleepy", results=tmp_path, overrides=["n_cells=4"],
                  lease_seconds=60, progress=on_progress)
    assert time.perf_counter() - t0 >= 0.5  # it waited for the other sweep
    assert (r.total, r.cached, r.ran, r.others) == (8, 0, 6, 2)
    assert r.statuses["ok"] == 8
    # the analysis covers every run, including the two the other owner committed
    assert r.claims[0].value == sum(i * 10 + s for i in range(4) for s in range(2)) - 2000 - 1
    assert progress[-1] == 8 and progress == sorted(progress)
    with Store.open(tmp_path) as st:
        pids = Counter(x.provenance["pid"] for x in st.runs("builtin/test_sleepy"))
        assert pids == {os.getpid(): 6, -1: 2} and st.leases() == {}


def test_sweep_takes_over_runs_whose_lease_expired(tmp_path, exps):
    _leased_by_other(tmp_path, ttl=1.0)  # and never commits: that sweep was killed
    t0 = time.perf_counter()
    r = run_sweep("builtin/test_sleepy", results=tmp_path, overrides=["n_cells=4"],
                  lease_seconds=60)
    assert (r.ran, r.others, r.statuses["ok"]) == (8, 0, 8)
    assert time.perf_counter() - t0 >= 0.5  # it had to wait for the lease to expire
    with Store.open(tmp_path) as st:
        assert {x.attempts for x in st.runs("builtin/test_sleepy")} == {1}
        assert {x.provenance["pid"] for x in st.runs("builtin/test_sleepy")} == {os.getpid()}
        assert st.leases() == {}


def test_leases_are_released_when_the_sweep_raises(tmp_path, exps, monkeypatch):
    from ssmlab.runner import store as store_mod

    real = store_mod.Store.put_run
    calls = []

    def interrupted(self, run, owner=None):
        calls.append(run.run_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, run, owner=owner)

    monkeypatch.setattr(store_mod.Store, "put_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("builtin/test_sleepy", results=tmp_path)
    monkeypatch.undo()
    with Store.open(tmp_path) as st:
        assert st.leases() == {} and st.count_runs() == 2


# -- two `ssmlab run` processes on one store (slow) ----------------------------------------------
N_CELLS, SEEDS, SLEEP = 12, 2, 0.5
TOTAL = N_CELLS * SEEDS
SWEEP = ["--set", f"n_cells={N_CELLS}", "--set", f"sleep={SLEEP}", "--seeds", str(SEEDS)]


def _cli(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssmlab.cli", "run", "builtin/test_sleepy", *SWEEP,
            "-e", "serial", "-q", "--results", str(results), *extra]


def _table(results: Path) -> dict[str, tuple]:
    with Store.open(results, create=False) as st:
        return {r.run_id: (r.status, r.metrics, r.history) for r in st.runs("builtin/test_sleepy")}


def _committed(db: Path) -> Counter:
    if not db.exists():
        return Counter()
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            rows = con.execute("SELECT provenance FROM runs").fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # being created
        return Counter()
    return Counter(json.loads(p)["pid"] for (p,) in rows)


@pytest.mark.slow
def test_two_processes_share_one_sweep(tmp_path):
    res = tmp_path / "shared"
    t0 = time.perf_counter()
    ps = [subprocess.Popen(_cli(res), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    wall = time.perf_counter() - t0
    for p, (_out, err) in zip(ps, outs, strict=True):
        assert p.returncode == 0, err
    with Store.open(res, create=False) as st:
        runs = st.runs("builtin/test_sleepy")
        sweeps = st.conn.execute("SELECT ran, seconds FROM sweeps ORDER BY id").fetchall()
        assert st.leases() == {}
    assert len(runs) == TOTAL and {r.status for r in runs} == {"ok"}
    assert {r.attempts for r in runs} == {1}  # each run computed exactly once
    per_pid = Counter(r.provenance["pid"] for r in runs)
    assert set(per_pid) == {p.pid for p in ps}, per_pid
    assert sorted(ran for ran, _ in sweeps) == sorted(per_pid.values())
    assert min(per_pid.values()) >= TOTAL // 4, per_pid  # both really worked
    ran = sorted(int(re.search(r"(\d+) ran", out).group(1)) for out, _ in outs)
    assert ran == sorted(per_pid.values())
    # One sweep alone sleeps TOTAL * SLEEP s. Each of the pair took clearly less (from its
    # start to its end, interpreter start-up excluded: it dominates wall time on a loaded
    # 2-core machine), which is impossible unless they split the runs.
    serial_sleep = TOTAL * SLEEP
    longest = max(sec for _, sec in sweeps)
    clean = tmp_path / "clean"
    t1 = time.perf_counter()
    done = subprocess.run(_cli(clean), env=_env(), capture_output=True, text=True, timeout=300)
    alone = time.perf_counter() - t1
    assert done.returncode == 0, done.stderr
    with Store.open(clean, create=False) as st:
        [(alone_sweep,)] = st.conn.execute("SELECT seconds FROM sweeps").fetchall()
    print(f"\ntwo processes: runs per process {sorted(per_pid.values())}, sweeps "
          f"{', '.join(f'{sec:.1f} s' for _, sec in sweeps)}, wall {wall:.1f} s; one process "
          f"alone: sweep {alone_sweep:.1f} s, wall {alone:.1f} s")
    assert alone_sweep >= serial_sleep
    assert longest < 0.8 * serial_sleep, (longest, serial_sleep)
    assert wall < 0.8 * 2 * alone  # the pair, start-up included, vs two sweeps one after another
    # and the table equals one uninterrupted sweep's
    assert _table(res) == _table(clean)


@pytest.mark.slow
def test_killed_process_leaves_its_runs_to_the_survivor(tmp_path):
    res = tmp_path / "shared"
    env = _env(SSMLAB_LEASE_SECONDS="3")
    victim = subprocess.Popen(_cli(res), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    survivor = subprocess.Popen(_cli(res), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _committed(res / "ssmlab.db")[victim.pid] < 3:
            assert victim.poll() is None, victim.stderr.read()
            assert time.monotonic() < deadline, "the victim made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    killed_at = time.perf_counter()
    by_victim = _committed(res / "ssmlab.db")[victim.pid]
    with Store.open(res, create=False) as st:
        held = [rid for rid, (owner, _) in st.leases().items() if f":{victim.pid}:" in owner]
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    print(f"\nkilled after {by_victim} runs holding {len(held)} lease(s); the survivor finished "
          f"{time.perf_counter() - killed_at:.1f} s later")
    assert victim.returncode == -signal.SIGKILL and by_victim < TOTAL // 2
    with Store.open(res, create=False) as st:
        runs = {r.run_id: r for r in st.runs("builtin/test_sleepy")}
        assert st.leases() == {}
    assert len(runs) == TOTAL and {r.attempts for r in runs.values()} == {1}
    for rid in held:  # the victim's in-flight runs were computed by the survivor
        assert runs[rid].provenance["pid"] == survivor.pid
    assert Counter(r.provenance["pid"] for r in runs.values())[victim.pid] == by_victim
    clean = tmp_path / "clean"
    done = subprocess.run(_cli(clean), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _table(res) == _table(clean)
