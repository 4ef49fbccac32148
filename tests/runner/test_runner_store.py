"""The SQLite store: creation, recognition of foreign / corrupt files, final runs kept, lookups."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from ssmlab.errors import UserError
from ssmlab.runner.store import SCHEMA_VERSION, Store, StoredRun, run_id_of


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _run(seed=0, status="ok", **kw):
    rid = run_id_of("builtin/x", "cell", seed)
    return StoredRun(run_id=rid, experiment="builtin/x", cell_hash="cell", seed=seed,
                     cfg_key="k", params={"a": 1}, config={"seeds": 1}, status=status, **kw)


def test_creates_wal_store_with_schema_version(tmp_path):
    with Store.open(tmp_path) as st:
        mode = st.conn.execute("PRAGMA journal_mode").fetchone()[0]
        ver = st.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert mode == "wal" and int(ver) == SCHEMA_VERSION
    assert (tmp_path / "ssmlab.db").is_file()


def test_missing_store_is_user_error_when_not_creating(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        Store.open(tmp_path, create=False)
    assert not (tmp_path / "ssmlab.db").exists()


@pytest.mark.parametrize("content", [b"\x00garbage" * 500, b"SQLite format 3\x00" + b"\xff" * 4000],
                         ids=["random-bytes", "bad-pages"])
def test_corrupt_file_is_user_error_and_untouched(tmp_path, content):
    db = tmp_path / "ssmlab.db"
    db.write_bytes(content)
    before = _digest(db)
    with pytest.raises(UserError, match="not a valid ssmlab store"):
        Store.open(tmp_path)
    assert _digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssmlab.db"]


def test_foreign_sqlite_and_newer_schema_are_refused(tmp_path):
    db = tmp_path / "ssmlab.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    before = _digest(db)
    with pytest.raises(UserError, match="no ssmlab tables"):
        Store.open(tmp_path)
    assert _digest(db) == before

    other = tmp_path / "new"
    with Store.open(other) as st, st.transaction() as c:
        c.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(UserError, match="schema version 999"):
        Store.open(other)


def test_final_runs_are_kept_failed_runs_replaced(tmp_path):
    with Store.open(tmp_path) as st:
        assert st.put_run(_run(0, "failed", reason="boom"))
        assert st.put_run(_run(0, "ok", metrics={"m": 1.0}))  # retry replaces the failure
        assert not st.put_run(_run(0, "ok", metrics={"m": 2.0}))  # a final run is never replaced
        [r] = st.runs("builtin/x")
        assert (r.status, r.metrics, r.attempts) == ("ok", {"m": 1.0}, 2)
        assert st.count_runs() == 1


@pytest.mark.parametrize("final", ["ok", "diverged"])
def test_skipped_runs_are_replaced_until_done(tmp_path, final):
    """Skipped (e.g. missing data) is finished for the analysis but retried: the retry
    replaces it, whether skipped again, failed or done; a done run is then kept."""
    with Store.open(tmp_path) as st:
        assert st.put_run(_run(0, "skipped", reason="no data"))
        assert st.put_run(_run(0, "skipped", reason="still no data"))
        assert st.put_run(_run(0, "failed", reason="boom"))
        assert st.put_run(_run(0, final, metrics={"m": 1.0}))
        assert not st.put_run(_run(0, "skipped", reason="data gone"))
        [r] = st.runs("builtin/x")
        assert (r.status, r.metrics, r.reason, r.attempts) == (final, {"m": 1.0}, "", 4)


def test_json_round_trip_keeps_nan_and_nesting(tmp_path):
    with Store.open(tmp_path) as st:
        st.put_run(_run(1, metrics={"nan": float("nan"), "x": 2.5},
                        history={"curve": [1, 2, 3]}, info={"slices": {"a": [1]}}))
        r = st.find_run(run_id_of("builtin/x", "cell", 1)[:6])
    assert r.metrics["x"] == 2.5 and r.metrics["nan"] != r.metrics["nan"]
    assert r.history == {"curve": [1, 2, 3]} and r.info == {"slices": {"a": [1]}}


def test_find_run_errors(tmp_path):
    with Store.open(tmp_path) as st:
        st.put_run(_run(0))
        with pytest.raises(UserError, match="no run with id"):
            st.find_run("ffffffffff")
        with pytest.raises(UserError, match="not hexadecimal"):
            st.find_run("xyz")
        for s in range(1, 40):  # enough runs that two share a first hex digit
            st.put_run(_run(s))
        firsts = [r.run_id[0] for r in st.runs("builtin/x")]
        dup = next(c for c in firsts if firsts.count(c) > 1)
        with pytest.raises(UserError, match="ambiguous"):
            st.find_run(dup)
