"""Export the runs table for analysis elsewhere (pandas, R, a spreadsheet).

One row per run: run_id, experiment, seed, status, seconds, started, finished, reason,
cfg_key, cell_hash, then `param.<name>` and `metric.<name>` columns (nested dicts flattened with
dots), `prov.<name>` provenance columns, the config as a JSON string, and — with
`histories=True` — each run's history as a JSON string.

`export_runs` checks everything it can before it writes a byte (the format, that it matches the
file's suffix, pyarrow for parquet, the output folder, the experiment filter), then writes a
temporary file in the output folder and renames it over the target: a failure never leaves a
half-written or empty file, nor destroys an existing one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
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


# the columns every row has, in order: the header of an export with zero runs
BASE_COLUMNS = ("run_id", "experiment", "seed", "status", "seconds", "started", "finished",
                "reason", "attempts", "cfg_key", "cell_hash", "config")
FORMATS = {"csv": (".csv",), "parquet": (".parquet", ".pq")}
# a csv may be compressed; pandas infers the compression from these
CSV_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def runs_frame(store: Store, experiment: str | None = None, histories: bool = False):
    """The runs as a pandas DataFrame (one row per run; with zero runs, the base columns)."""
    import pandas as pd

    rows = [run_row(r, histories) for r in store.runs(experiment)]
    if not rows:
        return pd.DataFrame(columns=[*BASE_COLUMNS, *(["history"] if histories else [])])
    return pd.DataFrame(rows)


def check_format(path: Path, fmt: str) -> None:
    """`fmt` must be known and agree with the file's suffix (a path without one is fine), so
    that `-f parquet -o runs.csv` does not write Parquet bytes under a .csv name."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    suffixes = [x.lower() for x in path.suffixes]
    if fmt == "csv" and len(suffixes) >= 2 and suffixes[-1] in CSV_COMPRESSION:
        suffixes.pop()  # runs.csv.gz
    suffix = suffixes[-1] if suffixes else ""
    if suffix and suffix not in FORMATS[fmt]:
        want = " or ".join(FORMATS[fmt])
        raise UserError(f"output file {path} has suffix {suffix!r} but the format is {fmt} "
                        f"(use a {want} file name, or --format matching {suffix!r})")


def check_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UserError("parquet export needs pyarrow: pip install pyarrow "
                        "(or pip install 'ssmlab[dev]'), or export --format csv") from None


def check_output(path: Path) -> None:
    """The output must be a file (new or existing) in an existing, writable folder."""
    if path.is_dir():
        raise UserError(f"output path {path} is a directory; give a file name such as "
                        f"{path / 'runs.csv'}")
    parent = path.parent
    if not parent.exists():
        raise UserError(f"cannot write {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: folder {parent} is not writable")


def check_experiment(store: Store, experiment: str) -> None:
    """An experiment filter that matches no stored run is a mistake (a typo, a missing '/'):
    name it and list what the store holds instead of writing an empty file."""
    present = [r[0] for r in store.conn.execute(
        "SELECT DISTINCT experiment FROM runs ORDER BY experiment")]
    prefix = experiment.endswith("/")
    if any(e.startswith(experiment) if prefix else e == experiment for e in present):
        return
    if not present:
        raise UserError(f"no stored runs of experiment {experiment!r}: the store "
                        f"{store.path} holds no runs yet")
    hint = (f" (for every experiment of paper {experiment!r}, use {experiment + '/'!r})"
            if not prefix and any(e.startswith(experiment + "/") for e in present) else "")
    shown = ", ".join(present[:30]) + (f", … ({len(present)} in all)" if len(present) > 30
                                       else "")
    raise UserError(f"no stored runs of experiment {experiment!r}{hint}; experiments in the "
                    f"store: {shown}")


def export_runs(store: Store, path: str | Path, fmt: str = "csv", experiment: str | None = None,
                histories: bool = False) -> int:
    """Write the runs table to `path` as csv or parquet; return the number of rows.

    Everything is checked first (see the module docstring); bad input raises UserError and
    leaves the file system untouched. A store with zero runs and no filter gives a file with the
    header only (an empty table is a valid answer); a filter matching nothing is an error.
    """
    path = Path(path)
    check_format(path, fmt)
    if fmt == "parquet":
        check_pyarrow()
    check_output(path)
    if experiment is not None:
        check_experiment(store, experiment)
    df = runs_frame(store, experiment, histories)
    if fmt == "parquet":
        # mixed-type columns (a param that is a number in one experiment, a string in another)
        # are stored as strings so that one table holds every experiment
        for col in df.columns:
            if df[col].dtype == object:
                kinds = {type(v) for v in df[col].dropna()}
                if len(kinds) > 1:
                    df[col] = df[col].map(lambda v: None if v is None else str(v))
    write_atomically(path, lambda tmp: df.to_csv(tmp, index=False) if fmt == "csv"
                     else df.to_parquet(tmp, index=False))
    return len(df)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a new temporary file beside `path` (its name ends like the target,
    runs.csv.gz, so pandas infers the same compression), which is then renamed over `path`: a
    failure leaves neither a partial file nor a damaged old one. OSError -> UserError."""
    tmp = path.with_name(f".{uuid.uuid4().hex[:12]}.tmp-{path.name}")
    try:
        # O_EXCL: never clobber; mode 0o666 & ~umask, like a file pandas would create
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
