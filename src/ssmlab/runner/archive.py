"""Carry finished runs from one results store to another: `ssmlab archive` / `ssmlab restore`.

Why: a paper profile takes hours; a store is one machine's SQLite file. The archive is what a
long profile ships beside its report (docs/results/paper/runs.jsonl.gz), so that a fresh clone
on another machine restores the finished runs into its store and `reproduce` computes only the
rest (a run is keyed by experiment, cell hash and seed, so a restored run is found exactly as a
run computed here would be).

Format: gzip-compressed JSON lines, one finished run (status ok or diverged) per line with every
column of the store's `runs` table. Failed and skipped runs are not archived: the store retries
them anyway. The line order is the store's (experiment, insertion), and gzip's header carries no
time stamp, so archiving the same runs twice gives the same bytes.

Restoring checks each line before it writes anything (valid JSON, every column, a known status,
the run id equal to the hash of its key): a corrupt or foreign file is one UserError naming the
line, and the store is left as it was. Stored runs win: an ok or diverged run already in the
store is kept (Store.put_run), a failed or skipped one is replaced by the archived result.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, fields
from pathlib import Path

from ssmlab.errors import UserError
from ssmlab.runner.export import check_experiment, check_output, write_atomically
from ssmlab.runner.store import DONE_STATUSES, Store, StoredRun, run_id_of, to_jsonable

COLUMNS = tuple(f.name for f in fields(StoredRun))
SUFFIX = ".jsonl.gz"


def archive_runs(store: Store, path: str | Path, experiment: str | None = None) -> int:
    """Write the store's finished runs (of `experiment`: an id or a paper prefix ending in '/')
    to `path`; return how many. Atomic: a temporary file renamed over the target."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise UserError(f"archive file {path} must end in {SUFFIX}")
    check_output(path)
    if experiment is not None:
        check_experiment(store, experiment)
    runs = store.runs(experiment, statuses=DONE_STATUSES)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                   filename="") as gz:
            for r in runs:
                line = json.dumps(to_jsonable(asdict(r)), sort_keys=True, allow_nan=True)
                gz.write(line.encode("utf-8") + b"\n")

    write_atomically(path, write)
    return len(runs)


def read_archive(path: str | Path) -> list[StoredRun]:
    """Every run of an archive, checked (module docstring); UserError naming the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"archive file {path} does not exist" if not path.exists()
                        else f"archive path {path} is not a file")
    out: list[StoredRun] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    out.append(_parse(line, path, i))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"archive file {path} is not a readable gzip file of runs: "
                        f"{e}") from None
    return out


def _parse(line: str, path: Path, lineno: int) -> StoredRun:
    where = f"archive file {path}, line {lineno}"
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise UserError(f"{where}: not a run (a JSON object is expected)")
    missing = [c for c in COLUMNS if c not in d]
    unknown = sorted(set(d) - set(COLUMNS))
    if missing or unknown:
        what = [f"{kind} {', '.join(names)}" for kind, names in
                (("missing", missing), ("unknown", unknown)) if names]
        raise UserError(f"{where}: not a run ({'; '.join(what)})")
    if d["status"] not in DONE_STATUSES:
        raise UserError(f"{where}: status {d['status']!r} is not one of "
                        f"{', '.join(DONE_STATUSES)}")
    try:
        expected = run_id_of(d["experiment"], d["cell_hash"], d["seed"])
    except (TypeError, ValueError):
        raise UserError(f"{where}: experiment, cell_hash or seed has the wrong type") from None
    if d["run_id"] != expected:
        raise UserError(f"{where}: run id {d['run_id']!r} is not the hash of its key "
                        f"(expected {expected})")
    return StoredRun(**d)


def restore_runs(store: Store, runs: list[StoredRun]) -> tuple[int, int]:
    """Put runs read by `read_archive` (so all checked before the first write) into `store`;
    return (added, kept): kept = already finished there."""
    added = sum(store.put_run(r) for r in runs)
    return added, len(runs) - added
