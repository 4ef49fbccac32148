"""The results store: one SQLite file (results/ssmlab.db, WAL mode) that never loses a run.

Keys (see docs/architecture.md):
    cfg_key   hash of the experiment config *without* `seeds` / `seed_offset`: changing the number
              of seeds reuses the runs already made.
    cell_hash config_hash({"config": cfg without seed fields, "params": params}).
    run key   (experiment, cell_hash, seed); `run_id` = first 16 hex of sha256 of the key; `ssmlab show RUN`
              takes any unique prefix (10 hex are displayed).
    cfg_hash  config_hash of the full config (seeds included): keys the analysed configuration,
              i.e. the `configs` and `claims` tables.

Writes happen only in the parent process of a sweep, one transaction per finished run
(`BEGIN IMMEDIATE ... COMMIT`), so a SIGKILL at any moment leaves every finished run committed
and no half-written one. A finished run (ok / diverged / skipped) is final and never
overwritten; a failed run is retried (and replaced) by the next sweep.

A file that is not an ssmlab store (random bytes, another SQLite database, a newer schema) is
reported as a UserError and left byte-for-byte untouched: nothing is written before the file has
been recognised.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ssmlab.errors import UserError
from ssmlab.experiments.base import Claim, RunRecord

SCHEMA_VERSION = 1
DB_NAME = "ssmlab.db"
FINAL_STATUSES = ("ok", "diverged", "skipped")
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    experiment  TEXT NOT NULL,
    cell_hash   TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    cfg_key     TEXT NOT NULL,
    params      TEXT NOT NULL,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL,
    metrics     TEXT NOT NULL DEFAULT '{}',
    history     TEXT NOT NULL DEFAULT '{}',
    info        TEXT NOT NULL DEFAULT '{}',
    reason      TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    seconds     REAL NOT NULL DEFAULT 0,
    started     TEXT,
    finished    TEXT,
    provenance  TEXT NOT NULL DEFAULT '{}',
    attempts    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (experiment, cell_hash, seed)
);
CREATE INDEX IF NOT EXISTS runs_by_cfg ON runs (experiment, cfg_key);
CREATE TABLE IF NOT EXISTS configs (
    experiment  TEXT NOT NULL,
    cfg_hash    TEXT NOT NULL,
    cfg_key     TEXT NOT NULL,
    paper       TEXT NOT NULL,
    profile     TEXT NOT NULL,
    config      TEXT NOT NULL,
    doc         TEXT NOT NULL DEFAULT '',
    run_ids     TEXT NOT NULL DEFAULT '[]',
    figdir      TEXT NOT NULL DEFAULT '',
    created     TEXT NOT NULL,
    analyzed    TEXT,
    PRIMARY KEY (experiment, cfg_hash)
);
CREATE TABLE IF NOT EXISTS claims (
    experiment  TEXT NOT NULL,
    cfg_hash    TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    paper       TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    data        TEXT NOT NULL,
    created     TEXT NOT NULL,
    PRIMARY KEY (experiment, cfg_hash, idx)
);
CREATE TABLE IF NOT EXISTS sweeps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment  TEXT NOT NULL,
    cfg_hash    TEXT NOT NULL,
    executor    TEXT NOT NULL,
    workers     INTEGER NOT NULL,
    started     TEXT NOT NULL,
    finished    TEXT,
    total       INTEGER NOT NULL,
    cached      INTEGER NOT NULL,
    ran         INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    seconds     REAL
);
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_id_of(experiment: str, cell_hash: str, seed: int) -> str:
    """Stable id of a run key (16 hex; `ssmlab show` accepts any unique prefix, shown as 10)."""
    return hashlib.sha256(f"{experiment}\x00{cell_hash}\x00{int(seed)}".encode()).hexdigest()[:16]


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, allow_nan=True)


def to_jsonable(obj: Any) -> Any:
    """Numbers, strings, lists and dicts only: numpy / torch scalars and arrays become Python."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if hasattr(obj, "tolist"):  # numpy arrays / scalars, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    return str(obj)


@dataclass
class StoredRun:
    """One row of the `runs` table, decoded."""

    run_id: str
    experiment: str
    cell_hash: str
    seed: int
    cfg_key: str
    params: dict[str, Any]
    config: dict[str, Any]
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    error: str = ""
    seconds: float = 0.0
    started: str | None = None
    finished: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1

    def to_record(self) -> RunRecord:
        return RunRecord(
            experiment=self.experiment, config_hash=self.cfg_key, params=self.params,
            seed=self.seed, status=self.status,  # type: ignore[arg-type]
            metrics=self.metrics, history=self.history, info=self.info,
            seconds=self.seconds, reason=self.reason,
        )


@dataclass
class ConfigRow:
    experiment: str
    cfg_hash: str
    cfg_key: str
    paper: str
    profile: str
    config: dict[str, Any]
    doc: str
    run_ids: list[str]
    figdir: str
    created: str
    analyzed: str | None


_RUN_COLS = ("run_id experiment cell_hash seed cfg_key params config status metrics history info "
             "reason error seconds started finished provenance attempts").split()
_JSON_RUN_COLS = {"params", "config", "metrics", "history", "info", "provenance"}


def _loads(text: str) -> Any:
    return json.loads(text) if text else {}


class Store:
    """Open with `Store.open(results_dir)`; use as a context manager or call close()."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, results: str | Path, create: bool = True) -> Store:
        """Open (or, when `create`, make) the store in directory `results` (or a .db file)."""
        results = Path(results)
        path = results if results.suffix == ".db" else results / DB_NAME
        exists = path.is_file() and path.stat().st_size > 0
        if path.exists() and not path.is_file():
            raise UserError(f"results file {path} is not a file")
        if not exists and not create:
            raise UserError(f"no results store at {path}: run an experiment first (ssmlab run ...)")
        if exists:
            cls._check_header(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise UserError(f"results file {path} cannot be opened: {e}") from None
        store = cls(path, conn)
        try:
            if exists:
                store._check_schema()
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if not exists:
                with store.transaction():
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                    conn.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (now_iso(),))
        except sqlite3.DatabaseError as e:
            conn.close()
            raise UserError(f"results file {path} is not a valid ssmlab store: {e}") from None
        except BaseException:
            conn.close()
            raise
        return store

    @staticmethod
    def _check_header(path: Path) -> None:
        try:
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise UserError(f"results file {path} cannot be read: {e}") from None
        if head != _SQLITE_MAGIC:
            raise UserError(f"results file {path} is not a valid ssmlab store: not an SQLite database")

    def _check_schema(self) -> None:
        """Read-only checks: the file must be an ssmlab store of a schema version we know."""
        try:
            names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
            if "meta" not in names or "runs" not in names:
                raise UserError(
                    f"results file {self.path} is not a valid ssmlab store: no ssmlab tables")
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise UserError(f"results file {self.path} is not a valid ssmlab store: {e}") from None
        if row is None:
            raise UserError(f"results file {self.path} is not a valid ssmlab store: no schema version")
        if int(row[0]) != SCHEMA_VERSION:
            raise UserError(
                f"results file {self.path} has schema version {row[0]}; this ssmlab reads "
                f"version {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- runs --------------------------------------------------------------------------------
    def put_run(self, run: StoredRun) -> bool:
        """Commit one run atomically. A final run already stored is kept (returns False)."""
        values = [
            dumps(getattr(run, c)) if c in _JSON_RUN_COLS else getattr(run, c) for c in _RUN_COLS
        ]
        cols = ", ".join(_RUN_COLS)
        marks = ", ".join("?" * len(_RUN_COLS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLS if c != "attempts")
        with self.transaction() as c:
            cur = c.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (experiment, cell_hash, seed) DO UPDATE SET {updates}, "
                f"attempts = runs.attempts + 1 WHERE runs.status = 'failed'",
                values,
            )
            return cur.rowcount > 0

    def run_statuses(self, experiment: str, cfg_key: str) -> dict[tuple[str, int], str]:
        rows = self.conn.execute(
            "SELECT cell_hash, seed, status FROM runs WHERE experiment=? AND cfg_key=?",
            (experiment, cfg_key),
        )
        return {(h, int(s)): st for h, s, st in rows}

    def _decode(self, row: Sequence[Any]) -> StoredRun:
        d = dict(zip(_RUN_COLS, row, strict=True))
        for c in _JSON_RUN_COLS:
            d[c] = _loads(d[c])
        return StoredRun(**d)

    def runs(
        self,
        experiment: str | None = None,
        run_ids: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
    ) -> list[StoredRun]:
        """Runs filtered by experiment (an id, or a paper prefix ending in '/'), ids, statuses;
        ordered by experiment, insertion."""
        where, args = [], []
        if experiment is not None:
            if experiment.endswith("/"):
                where.append("experiment LIKE ? ESCAPE '\\'")
                args.append(experiment.replace("_", "\\_").replace("%", "\\%") + "%")
            else:
                where.append("experiment = ?")
                args.append(experiment)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        sql = f"SELECT {', '.join(_RUN_COLS)} FROM runs"
        if run_ids is None:
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY experiment, rowid"
            return [self._decode(r) for r in self.conn.execute(sql, args)]
        out: list[StoredRun] = []
        ids = list(dict.fromkeys(run_ids))
        for i in range(0, len(ids), 500):  # SQLite limits the number of parameters
            chunk = ids[i : i + 500]
            cond = where + [f"run_id IN ({', '.join('?' * len(chunk))})"]
            out += [self._decode(r) for r in self.conn.execute(
                sql + " WHERE " + " AND ".join(cond), args + chunk)]
        order = {r: i for i, r in enumerate(ids)}
        return sorted(out, key=lambda r: order[r.run_id])

    def find_run(self, prefix: str) -> StoredRun:
        prefix = prefix.strip().lower()
        if not prefix or any(ch not in "0123456789abcdef" for ch in prefix):
            raise UserError(f"run id {prefix!r} is not hexadecimal (see `ssmlab export`)")
        rows = self.conn.execute(
            f"SELECT {', '.join(_RUN_COLS)} FROM runs WHERE run_id LIKE ? LIMIT 6", (prefix + "%",)
        ).fetchall()
        if not rows:
            raise UserError(f"no run with id {prefix!r} in {self.path}")
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:5])
            raise UserError(f"run id {prefix!r} is ambiguous: matches {ids}")
        return self._decode(rows[0])

    def count_runs(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    # -- configs and claims ------------------------------------------------------------------
    def put_config(self, row: ConfigRow) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO configs (experiment, cfg_hash, cfg_key, paper, profile, config, doc,"
                " run_ids, figdir, created, analyzed) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (experiment, cfg_hash) DO UPDATE SET profile=excluded.profile, "
                "doc=excluded.doc, run_ids=excluded.run_ids, figdir=excluded.figdir",
                (row.experiment, row.cfg_hash, row.cfg_key, row.paper, row.profile,
                 dumps(row.config), row.doc, dumps(row.run_ids), row.figdir, row.created,
                 row.analyzed),
            )

    def configs(self, experiment: str | None = None, latest_only: bool = True) -> list[ConfigRow]:
        """Analysed configs, newest analysis first per experiment; `latest_only` keeps one per
        experiment (what the report shows by default)."""
        sql = ("SELECT experiment, cfg_hash, cfg_key, paper, profile, config, doc, run_ids, "
               "figdir, created, analyzed FROM configs WHERE analyzed IS NOT NULL")
        args: list[Any] = []
        if experiment is not None:
            sql += " AND experiment = ?"
            args.append(experiment)
        sql += " ORDER BY experiment, analyzed DESC, rowid DESC"
        out: list[ConfigRow] = []
        seen: set[str] = set()
        for r in self.conn.execute(sql, args):
            if latest_only and r[0] in seen:
                continue
            seen.add(r[0])
            out.append(ConfigRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6],
                                 json.loads(r[7]), r[8], r[9], r[10]))
        return out

    def put_claims(self, experiment: str, cfg_hash: str, claims: Sequence[Claim]) -> None:
        """Replace the claims of one analysed config (atomically) and mark it analysed."""
        t = now_iso()
        with self.transaction() as c:
            c.execute("DELETE FROM claims WHERE experiment=? AND cfg_hash=?", (experiment, cfg_hash))
            for i, cl in enumerate(claims):
                c.execute(
                    "INSERT INTO claims VALUES (?,?,?,?,?,?,?)",
                    (experiment, cfg_hash, i, cl.paper, cl.verdict, cl.model_dump_json(), t),
                )
            c.execute("UPDATE configs SET analyzed=? WHERE experiment=? AND cfg_hash=?",
                      (t, experiment, cfg_hash))

    def claims(self, experiment: str, cfg_hash: str) -> list[Claim]:
        rows = self.conn.execute(
            "SELECT data FROM claims WHERE experiment=? AND cfg_hash=? ORDER BY idx",
            (experiment, cfg_hash),
        )
        return [Claim.model_validate_json(r[0]) for r in rows]

    # -- sweeps ------------------------------------------------------------------------------
    def start_sweep(self, experiment: str, cfg_hash: str, executor: str, workers: int,
                    total: int, cached: int) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO sweeps (experiment, cfg_hash, executor, workers, started, total, "
                "cached) VALUES (?,?,?,?,?,?,?)",
                (experiment, cfg_hash, executor, workers, now_iso(), total, cached),
            )
            return int(cur.lastrowid or 0)

    def finish_sweep(self, sweep_id: int, ran: int, failed: int, seconds: float) -> None:
        with self.transaction() as c:
            c.execute("UPDATE sweeps SET finished=?, ran=?, failed=?, seconds=? WHERE id=?",
                      (now_iso(), ran, failed, seconds, sweep_id))

    def sweeps(self, experiment: str, cfg_hash: str) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT * FROM sweeps WHERE experiment=? AND cfg_hash=? ORDER BY id",
            (experiment, cfg_hash),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]
