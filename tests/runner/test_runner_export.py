"""Export: one row per run, params / metrics flattened, CSV and Parquet round-trip."""

from __future__ import annotations

import pandas as pd
import pytest

from ssmlab.errors import UserError
from ssmlab.runner.export import export_runs
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


def test_filter_by_experiment_and_bad_format(store, tmp_path):
    assert export_runs(store, tmp_path / "a.csv", "csv", experiment="builtin/test_flaky") == 4
    assert export_runs(store, tmp_path / "b.csv", "csv", experiment="builtin/") == 16
    with pytest.raises(UserError, match="unknown export format"):
        export_runs(store, tmp_path / "c.xlsx", "xlsx")
