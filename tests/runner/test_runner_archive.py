"""Archive / restore: finished runs travel between stores exactly (every column), a restored
store computes nothing again, stored results win, and a corrupt archive changes nothing."""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict

import pytest

from ssmlab.errors import UserError
from ssmlab.runner.archive import archive_runs, read_archive, restore_runs
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep

SLEEPY, FLAKY = "builtin/test_sleepy", "builtin/test_flaky"


@pytest.fixture
def source(tmp_path, exps, monkeypatch):
    run_sweep(SLEEPY, results=tmp_path / "a")
    monkeypatch.setenv("FLAKY_FAIL", "1")
    run_sweep(FLAKY, results=tmp_path / "a")  # its odd cells fail: not archived
    monkeypatch.delenv("FLAKY_FAIL")
    with Store.open(tmp_path / "a") as st:
        yield st


def _lines(path):
    return [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_round_trip_and_nothing_recomputed(source, tmp_path):
    path = tmp_path / "runs.jsonl.gz"
    finished = source.runs(statuses=("ok", "diverged"))
    assert len(source.runs()) > len(finished) > 0  # the flaky sweep failed some runs
    assert archive_runs(source, path) == len(finished)
    with Store.open(tmp_path / "b") as dest:
        assert restore_runs(dest, read_archive(path)) == (len(finished), 0)
        assert [asdict(r) for r in dest.runs()] == [asdict(r) for r in finished]
        assert restore_runs(dest, read_archive(path)) == (0, len(finished))  # idempotent
    again = run_sweep(SLEEPY, results=tmp_path / "b")
    assert again.ran == 0 and again.cached == again.total > 0
    # the same runs archive to the same bytes (no time stamp in the gzip header)
    with Store.open(tmp_path / "b") as dest:
        archive_runs(dest, tmp_path / "again.jsonl.gz", experiment=SLEEPY)
    archive_runs(source, tmp_path / "sleepy.jsonl.gz", experiment=SLEEPY)
    assert (tmp_path / "again.jsonl.gz").read_bytes() == (tmp_path / "sleepy.jsonl.gz").read_bytes()


def test_stored_results_win_and_failed_runs_are_replaced(source, tmp_path):
    path = tmp_path / "runs.jsonl.gz"
    archive_runs(source, path)
    rows = _lines(path)
    # the same keys, another result: a store that has them finished keeps its own
    for r in rows:
        r["metrics"] = {"value": -1.0}
    forged = tmp_path / "forged.jsonl.gz"
    forged.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    before = [asdict(r) for r in source.runs()]
    added, kept = restore_runs(source, read_archive(forged))
    assert (added, kept) == (0, len(rows))
    assert [asdict(r) for r in source.runs()] == before
    # a failed run of the store is replaced by an archived finished one of the same key
    failed = source.runs(FLAKY, statuses=("failed",))[0]
    ok = {**asdict(failed), "status": "ok", "error": "", "metrics": {"value": 1.0}}
    one = tmp_path / "one.jsonl.gz"
    one.write_bytes(gzip.compress((json.dumps(ok) + "\n").encode()))
    assert restore_runs(source, read_archive(one)) == (1, 0)
    (now,) = source.runs(run_ids=[failed.run_id])
    assert now.status == "ok" and now.metrics == {"value": 1.0}


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r.update(run_id="0" * 16), "is not the hash of its key"),
    (lambda r: r.update(status="failed"), "status 'failed' is not one of ok, diverged"),
    (lambda r: r.pop("metrics"), "missing metrics"),
    (lambda r: r.update(bogus=1), "unknown bogus"),
    (lambda r: r.update(seed=None), "wrong type"),
])
def test_a_bad_line_changes_nothing(source, tmp_path, mutate, needle):
    path = tmp_path / "runs.jsonl.gz"
    archive_runs(source, path)
    rows = _lines(path)
    mutate(rows[-1])
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    with pytest.raises(UserError, match=f"line {len(rows)}: .*{needle}"):
        read_archive(bad)


def test_truncated_archive_is_refused(source, tmp_path):
    path = tmp_path / "runs.jsonl.gz"
    archive_runs(source, path)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError, match="not a readable gzip file"):
        read_archive(cut)
