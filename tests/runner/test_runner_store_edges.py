"""Edge cases of opening a results store: each is a one-line UserError or works, and nothing
already stored changes.

Read-only stores: the tests run as root, and root ignores file modes, so `chmod` alone exercises
nothing. Two complementary tests cover the read-only path honestly:
- in-process, `os.access` is patched to say "not writable" (what it says for a 0444 file, a
  read-only directory or a read-only mount for a normal user); the store then opens SQLite with
  `mode=ro`, which SQLite enforces even for root, so reads and refused writes are real;
- when running as root, the CLI is also run as user `nobody` in a subprocess on a 0444 store in
  a 0555 directory (real permissions); as a normal user the same is done without switching.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ssmlab.errors import UserError
from ssmlab.runner import store as store_mod
from ssmlab.runner.store import SCHEMA_VERSION, Store, StoredRun, run_id_of


def tree(path: Path) -> dict[str, str] | None:
    """Every file under `path` with its sha256 (None when absent): 'byte-identical' checks."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(path.rglob("*"))}


def _run(seed: int = 0, status: str = "ok") -> StoredRun:
    return StoredRun(run_id=run_id_of("builtin/x", "cell", seed), experiment="builtin/x",
                     cell_hash="cell", seed=seed, cfg_key="k", params={"a": 1},
                     config={"seeds": 1}, status=status, metrics={"m": float(seed)})


def _store_with_runs(path: Path, n: int = 3) -> None:
    with Store.open(path) as st:
        for s in range(n):
            st.put_run(_run(s))


# -- the results path ---------------------------------------------------------------------------
def test_results_path_that_is_a_regular_file(tmp_path):
    res = tmp_path / "results"
    res.write_text("not a directory\n")
    with pytest.raises(UserError, match=f"results directory {res} is a file") as e:
        Store.open(res)
    assert "\n" not in str(e.value)
    assert res.read_text() == "not a directory\n"
    with pytest.raises(UserError, match="is a file"):
        Store.open(res, create=False)


def test_results_dir_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="cannot create results directory .*afile/sub") as e:
        Store.open(tmp_path / "afile" / "sub")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_store_path_that_is_a_directory(tmp_path):
    (tmp_path / "ssmlab.db").mkdir()
    with pytest.raises(UserError, match="is not a file"):
        Store.open(tmp_path)


def test_results_path_that_cannot_be_looked_at(tmp_path, monkeypatch):
    """A path inside a directory we may not enter: stat fails with EACCES (simulated)."""
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", refuse)
    with pytest.raises(UserError, match="results path .* cannot be read: Permission denied"):
        Store.open(tmp_path / "results")


def test_results_dir_that_cannot_be_created(tmp_path, monkeypatch):
    """mkdir fails (read-only parent for a normal user, simulated here: root may write
    anywhere): one line, nothing created."""
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match="cannot create results directory .*Permission denied"):
        Store.open(tmp_path / "ro" / "results")
    assert list(tmp_path.iterdir()) == []


def test_new_store_in_a_directory_that_is_not_writable(tmp_path, monkeypatch):
    res = tmp_path / "results"
    res.mkdir()
    _deny_writes(monkeypatch, res)
    with pytest.raises(UserError, match=f"cannot create a results store in {res}: .*read-only"):
        Store.open(res)
    assert list(res.iterdir()) == []


# -- read-only stores ---------------------------------------------------------------------------
def _deny_writes(monkeypatch, *paths: Path) -> list[str]:
    """os.access says 'not writable' for these paths (and what lies in them); records calls."""
    real = os.access
    denied = [str(p) for p in paths]
    calls: list[str] = []

    def access(path, mode, *a, **k):
        p = str(path)
        if mode & os.W_OK and any(p == d or p.startswith(d + os.sep) for d in denied):
            calls.append(p)
            return False
        return real(path, mode, *a, **k)

    monkeypatch.setattr(store_mod.os, "access", access)
    return calls


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_store_reads_and_refuses_writes(tmp_path, monkeypatch, what):
    res = tmp_path / "results"
    _store_with_runs(res)
    before = tree(res)
    calls = _deny_writes(monkeypatch, res / "ssmlab.db" if what == "file" else res)

    with Store.open(res, create=False) as st:  # reading commands: show, export, report
        assert st.readonly
        assert [r.seed for r in st.runs("builtin/x")] == [0, 1, 2]
        assert st.find_run(run_id_of("builtin/x", "cell", 1)[:8]).metrics == {"m": 1.0}
        with pytest.raises(UserError, match=f"results store {res / 'ssmlab.db'} is read-only"):
            st.put_run(_run(7))
    assert calls, "the writability check must have run"
    with pytest.raises(UserError, match=f"results store {res / 'ssmlab.db'} is read-only") as e:
        Store.open(res)  # writing commands: run, reproduce
    assert "\n" not in str(e.value)
    assert tree(res) == before  # not even a -wal / -shm file


def test_read_only_open_of_a_writable_store_never_writes(tmp_path):
    res = tmp_path / "results"
    _store_with_runs(res)
    with Store.open(res, readonly=True) as st:
        assert st.readonly and st.count_runs() == 3
        with pytest.raises(UserError, match="is read-only"):
            st.put_run(_run(9))
        # the SQLite connection itself refuses writes (not only our guard)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            st.conn.execute("DELETE FROM runs")
    with Store.open(res, create=False) as st:
        assert st.count_runs() == 3 and not st.readonly


def test_sqlite_refusing_a_write_is_reported_as_read_only(tmp_path, monkeypatch):
    """os.access can say yes while SQLite still cannot write (e.g. a file made read-only after
    opening); the failed write must name the read-only store, not a corrupt one."""
    res = tmp_path / "results"
    _store_with_runs(res)
    with Store.open(res) as st:
        st.conn.close()
        st.conn = sqlite3.connect(f"file:{st.path}?mode=ro", uri=True, isolation_level=None)
        with pytest.raises(UserError, match="is read-only"):
            st.put_run(_run(5))
    with Store.open(res) as st:
        assert st.count_runs() == 3


def _without_root_powers() -> list[str]:
    """A command prefix under which file modes apply. Root ignores them; in a new user
    namespace (`unshare --user`) a process keeps owning root's files but loses
    CAP_DAC_OVERRIDE over them, so a 0444 file and a 0555 directory are really read-only."""
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root and user namespaces are unavailable: file modes cannot "
                    "be enforced (the read-only path is covered by the patched tests above)")
    return ["unshare", "--user"]


_CLI_SESSION = """
import contextlib, io, json, os, sys
from ssmlab.cli import main
out = {"writable": os.access(sys.argv[1], os.W_OK)}
for argv in json.loads(sys.argv[2]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            main(argv)
            code = 0
        except SystemExit as ex:
            code = ex.code
    out[argv[0]] = [code, o.getvalue(), e.getvalue()]
print(json.dumps(out))
"""


def test_read_only_store_with_real_permissions(tmp_path):
    """A 0444 store in a 0555 directory, opened by a process that really cannot write there:
    show and export work, run says read-only, and nothing in the directory changes. (One
    interpreter runs the three commands: start-up dominates.)"""
    import json

    res, out = tmp_path / "results", tmp_path / "out"
    _store_with_runs(res)
    with Store.open(res) as st:
        rid = st.runs("builtin/x")[1].run_id
    out.mkdir()
    (res / "ssmlab.db").chmod(0o444)
    res.chmod(0o555)
    try:
        before = tree(res)
        env = {k: v for k, v in os.environ.items() if k != "SSMLAB_RESULTS"}
        env |= {"SSMLAB_PLUGINS": "ssmlab.runner.testing", "PYTHONDONTWRITEBYTECODE": "1"}
        commands = [["show", rid[:10]], ["export", "-o", str(out / "runs.csv")],
                    ["run", "builtin/test_sleepy", "-e", "serial", "-q"]]
        commands = [[*c, "--results", str(res)] for c in commands]
        done = subprocess.run([*_without_root_powers(), sys.executable, "-c", _CLI_SESSION,
                               str(res), json.dumps(commands)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout.splitlines()[-1])
        assert got["writable"] is False, "the test must run without write access"
        code, shown, err = got["show"]
        assert code == 0 and rid in shown and "metric m" in shown, err
        code, _, err = got["export"]
        assert code == 0, err
        assert (out / "runs.csv").read_text().count("\n") == 4
        code, _, err = got["run"]
        assert code == 2
        assert err.strip().splitlines() == [
            f"error: results store {res / 'ssmlab.db'} is read-only (the file is not writable)"]
        assert tree(res) == before
    finally:
        res.chmod(0o755)
        (res / "ssmlab.db").chmod(0o644)


# -- empty and half-made files ------------------------------------------------------------------
def test_zero_byte_store_is_initialised_in_place(tmp_path):
    """A 0-byte ssmlab.db holds nothing (SQLite reads it as an empty database): it is what a
    crash between creating the file and the first commit leaves. It is made a store."""
    db = tmp_path / "ssmlab.db"
    db.touch()
    with Store.open(tmp_path) as st:
        assert st.count_runs() == 0
        st.put_run(_run(0))
    with Store.open(tmp_path, create=False) as st:
        assert st.count_runs() == 1


def test_zero_byte_store_is_not_a_store_for_reading(tmp_path):
    db = tmp_path / "ssmlab.db"
    db.touch()
    with pytest.raises(UserError, match="no results store .*empty"):
        Store.open(tmp_path, create=False)
    assert db.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["ssmlab.db"]


def test_zero_byte_store_beside_a_write_ahead_log_is_left_alone(tmp_path):
    """The runs of a store whose main file was lost may still sit in its -wal file: refuse."""
    (tmp_path / "ssmlab.db").touch()
    (tmp_path / "ssmlab.db-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\x00" * 4000)
    before = tree(tmp_path)
    with pytest.raises(UserError, match="is empty but .*ssmlab.db-wal holds 4004 bytes"):
        Store.open(tmp_path)
    assert tree(tmp_path) == before


def test_empty_sqlite_database_is_initialised(tmp_path):
    """No table at all (another SQLite database has some, and is refused: test_runner_store)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    con = sqlite3.connect(empty / "ssmlab.db")
    con.execute("PRAGMA journal_mode=WAL")  # header written, no table: an interrupted creation
    con.close()
    with Store.open(empty) as st:
        assert st.count_runs() == 0


@pytest.mark.parametrize("value, needle", [
    ("two", "schema version 'two' is not a number"),
    ("", "schema version '' is not a number"),
    ("99", "has schema version 99; this ssmlab reads version 1"),
])
def test_bad_schema_version_is_one_line(tmp_path, value, needle):
    _store_with_runs(tmp_path)
    con = sqlite3.connect(tmp_path / "ssmlab.db")
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (value,))
    con.commit()
    con.close()
    before = tree(tmp_path)
    for kw in ({}, {"create": False}, {"readonly": True}):
        with pytest.raises(UserError, match=needle) as e:
            Store.open(tmp_path, **kw)
        assert "\n" not in str(e.value)
    assert tree(tmp_path) == before


# -- migration ----------------------------------------------------------------------------------
def _version1_store(path: Path) -> None:
    """A store as the first release wrote it: schema version 1, no leases table."""
    _store_with_runs(path)
    con = sqlite3.connect(path / "ssmlab.db")
    con.execute("DROP TABLE leases")
    con.commit()
    con.close()


def test_version_1_store_gets_the_leases_table_when_opened_for_writing(tmp_path):
    _version1_store(tmp_path)
    with Store.open(tmp_path) as st:
        names = {r[0] for r in st.conn.execute("SELECT name FROM sqlite_master")}
        assert "leases" in names
        assert [r.seed for r in st.runs("builtin/x")] == [0, 1, 2]
        ver = st.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(ver) == SCHEMA_VERSION == 1


def test_version_1_store_opens_read_only_without_the_leases_table(tmp_path):
    _version1_store(tmp_path)
    before = tree(tmp_path)
    with Store.open(tmp_path, readonly=True) as st:
        assert st.count_runs() == 3
        assert st.leases() == {}
    assert tree(tmp_path) == before
