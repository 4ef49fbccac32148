"""Export the runs table for analysis elsewhere (pandas, R, a spreadsheet).

One row per run: run_id, experiment, seed, status, seconds, started, finished, reason,
cfg_key, cell_hash, then `param.<name>` and `metric.<name>` columns (nested dicts flattened with
dots), `prov.<name>` provenance columns, the config as a JSON string, and — with
`histories=True` — each run's history as a JSON string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssmlab.errors import UserError
from ssmlab.runner.store import Store, StoredRun


def flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out |= flatten(v, key)
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def run_row(r: StoredRun, histories: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": r.run_id, "experiment": r.experiment, "seed": r.seed, "status": r.status,
        "seconds": r.seconds, "started": r.started, "finished": r.finished, "reason": r.reason,
        "attempts": r.attempts, "cfg_key": r.cfg_key, "cell_hash": r.cell_hash,
    }
    row |= flatten(r.params, "param")
    row |= flatten(r.metrics, "metric")
    row |= flatten(r.provenance, "prov")
    row["config"] = json.dumps(r.config, sort_keys=True)
    if histories:
        row["history"] = json.dumps(r.history, sort_keys=True)
    return row


def runs_frame(store: Store, experiment: str | None = None, histories: bool = False):
    """The runs as a pandas DataFrame (one row per run)."""
    import pandas as pd

    rows = [run_row(r, histories) for r in store.runs(experiment)]
    return pd.DataFrame(rows)


def export_runs(store: Store, path: str | Path, fmt: str = "csv", experiment: str | None = None,
                histories: bool = False) -> int:
    """Write the runs table to `path` as csv or parquet; return the number of rows."""
    path = Path(path)
    df = runs_frame(store, experiment, histories)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("parquet export needs pyarrow: pip install pyarrow") from None
        # mixed-type columns (a param that is a number in one experiment, a string in another)
        # are stored as strings so that one table holds every experiment
        for col in df.columns:
            if df[col].dtype == object:
                kinds = {type(v) for v in df[col].dropna()}
                if len(kinds) > 1:
                    df[col] = df[col].map(lambda v: None if v is None else str(v))
        df.to_parquet(path, index=False)
    else:
        raise UserError(f"unknown export format {fmt!r}; formats: csv, parquet")
    return len(df)
