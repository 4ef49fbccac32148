"""Export: one row per run, params / metrics flattened, CSV and Parquet round-trip; bad input
(an unknown experiment, a format that contradicts the suffix, an unusable output path, parquet
without pyarrow) is one UserError before anything is written, and a failed write leaves no
partial file."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from ssmlab.errors import UserError
from ssmlab.runner.export import BASE_COLUMNS, export_runs
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep


@pytest.fixture
def store(tmp_path, exps):
    run_sweep("builtin/test_sleepy", results=tmp_path)
    run_sweep("builtin/test_flaky", results=tmp_path)
    with Store.open(tmp_path) as st:
        yield st


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(store, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"runs.{fmt}"
    n = export_runs(store, out, fmt, histories=True)
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert n == len(df) == 16 and df["run_id"].is_unique
    sleepy = df[df.experiment == "builtin/test_sleepy"].set_index("run_id")
    for r in store.runs("builtin/test_sleepy"):
        row = sleepy.loc[r.run_id]
        assert row["param.i"] == r.params["i"] and row["seed"] == r.seed
        assert row["metric.value"] == r.metrics["value"]
        assert row["metric.noise"] == pytest.approx(r.metrics["noise"], rel=1e-12)
        assert row["status"] == "ok" and row["prov.torch_threads"] == 1
    assert set(df.status) == {"ok", "diverged"}
    # the header of an empty export is the same table's fixed columns
    extra = [c for c in df.columns if c not in BASE_COLUMNS]
    assert set(BASE_COLUMNS) <= set(df.columns)
    assert all(c == "history" or c.split(".")[0] in ("param", "metric", "prov") for c in extra)


def test_filter_by_experiment_and_bad_format(store, tmp_path):
    assert export_runs(store, tmp_path / "a.csv", "csv", experiment="builtin/test_flaky") == 4
    assert export_runs(store, tmp_path / "b.csv", "csv", experiment="builtin/") == 16
    with pytest.raises(UserError, match="unknown export format"):
        export_runs(store, tmp_path / "c.xlsx", "xlsx")


# -- bad input: checked before anything is written ---------------------------------------------
def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("experiment,needles", [
    ("builtin/nope", ["'builtin/nope'", "builtin/test_flaky, builtin/test_sleepy"]),
    ("nopaper/", ["'nopaper/'", "builtin/test_flaky, builtin/test_sleepy"]),
    ("builtin", ["'builtin'", "use 'builtin/'"]),
])
def test_unknown_experiment_names_it_and_lists_the_stored_ones(store, tmp_path, experiment,
                                                               needles):
    out = tmp_path / "out" / "runs.csv"
    out.parent.mkdir()
    with pytest.raises(UserError) as e:
        export_runs(store, out, "csv", experiment=experiment)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("name,fmt", [("x.csv", "parquet"), ("x.parquet", "csv"), ("x.pq", "csv"),
                                      ("x.txt", "csv"), ("x.gz", "csv"), ("x.csv.gz", "parquet")])
def test_format_must_match_the_suffix(store, tmp_path, name, fmt):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match=rf"{re.escape(name)} has suffix .* format is {fmt}"):
        export_runs(store, out / name, fmt)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name,fmt", [("runs", "csv"), ("runs", "parquet"), ("RUNS.CSV", "csv"),
                                      ("runs.pq", "parquet"), ("runs.csv.gz", "csv")])
def test_matching_or_missing_suffix_is_accepted(store, tmp_path, name, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    n = export_runs(store, tmp_path / name, fmt)
    df = (pd.read_parquet(tmp_path / name) if fmt == "parquet"
          else pd.read_csv(tmp_path / name, compression="infer"))
    assert n == len(df) == 16 and df["run_id"].is_unique


def test_output_that_is_a_directory_or_in_a_missing_folder(store, tmp_path):
    before = _listing(tmp_path)
    with pytest.raises(UserError, match=rf"output path {re.escape(str(tmp_path))} is a directory"):
        export_runs(store, tmp_path, "csv")
    missing = tmp_path / "nowhere" / "runs.csv"
    with pytest.raises(UserError, match=rf"cannot write {re.escape(str(missing))}: folder .*"
                                        "does not exist"):
        export_runs(store, missing, "csv")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile is not a folder"):
        export_runs(store, tmp_path / "afile" / "runs.csv", "csv")
    assert not (tmp_path / "nowhere").exists()
    assert _listing(tmp_path) == sorted([*before, "afile"])


def test_unwritable_folder(store, tmp_path, monkeypatch):
    """Refused up front where the folder's permissions say so (faked here: root bypasses them),
    and a failure to create or rename the file is one UserError naming it, not a traceback."""
    import ssmlab.runner.export as export

    out = tmp_path / "ro" / "runs.csv"
    out.parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(export.os, "access",
                        lambda p, m: False if Path(p) == out.parent else real_access(p, m))
    with pytest.raises(UserError, match=rf"cannot write {re.escape(str(out))}: .* not writable"):
        export_runs(store, out, "csv")
    monkeypatch.setattr(export.os, "access", real_access)
    real_open = os.open

    def denied(p, *a, **k):
        if Path(p).parent == out.parent:
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr(export.os, "open", denied)
    with pytest.raises(UserError, match=rf"cannot write {re.escape(str(out))}: Permission denied"):
        export_runs(store, out, "csv")
    assert list(out.parent.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_really_unwritable_folder(store, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            export_runs(store, ro / "runs.csv", "csv")
    finally:
        ro.chmod(0o700)


def test_failure_mid_write_keeps_the_previous_file(store, tmp_path, monkeypatch):
    """Disk full half-way: the previous export is intact and no temporary file is left."""
    out = tmp_path / "runs.csv"
    out.write_text("previous export\n")

    def half_then_full(self, path, **kw):
        Path(path).write_text("run_id,exp")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    with pytest.raises(UserError, match=rf"cannot write {re.escape(str(out))}: No space left"):
        export_runs(store, out, "csv")
    assert [p.name for p in tmp_path.iterdir() if "runs" in p.name] == ["runs.csv"]
    assert out.read_text() == "previous export\n"


def test_overwrites_an_existing_export_whole(store, tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text("x\n" * 100000)
    assert export_runs(store, out, "csv", experiment="builtin/test_flaky") == 4
    assert len(pd.read_csv(out)) == 4
    assert [p.name for p in tmp_path.iterdir() if "runs" in p.name] == ["runs.csv"]


def test_parquet_without_pyarrow(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(UserError, match="parquet export needs pyarrow: pip install pyarrow"):
        export_runs(store, tmp_path / "runs.parquet", "parquet")
    assert not (tmp_path / "runs.parquet").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_empty_store_gives_the_header_only(tmp_path, fmt):
    """Zero runs and no filter: an empty table with the base columns (a valid answer, so that a
    script reading it works); a filter on an empty store is an error saying the store is empty."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"runs.{fmt}"
    with Store.open(tmp_path / "empty") as st:
        assert export_runs(st, out, fmt) == 0
        with pytest.raises(UserError, match="'builtin/'.* holds no runs yet"):
            export_runs(st, tmp_path / f"other.{fmt}", fmt, experiment="builtin/")
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(df) == 0 and list(df.columns) == list(BASE_COLUMNS)
    assert not (tmp_path / f"other.{fmt}").exists()
