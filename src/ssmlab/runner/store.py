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
and no half-written one. An ok or diverged run is final and never overwritten; a failed run is
retried (and replaced) by the next sweep, and so is a skipped one (skipping is cheap, and the
missing data may have been installed since); the analysis counts skipped runs as finished.

Several sweeps may share one store (two `ssmlab run` of one experiment, on one machine or on
machines sharing the file): before computing a run a sweep *leases* it (table `leases`: run id,
owner `host:pid:uuid`, expiry time). A run leased by a live owner is left to it; a heartbeat
thread renews its owner's leases, so a lease expires only when its owner stopped (killed), and
an expired lease is taken over, as is at once the lease of an owner on this host whose process
no longer exists. Committing a run releases its lease.

Opening never changes what is stored:
- a file that is not an ssmlab store (random bytes, another SQLite database, a newer or
  unreadable schema version) is a UserError and left byte-for-byte untouched;
- a store that cannot be written (file or directory read-only) opens read-only (SQLite
  `mode=ro`, or `immutable=1` when no write-ahead log is pending) for callers that only read
  (`create=False` or `readonly=True`); callers that write get "results store X is read-only";
- a file holding no table at all (0 bytes, or only a header) is what a crash between creating
  the file and committing its schema leaves, and what a concurrent creator's file looks like for
  an instant: SQLite reads it as an empty database, so it is initialised in place, inside the
  same write transaction that checks it is still empty (so concurrent creators cannot collide).
  A 0-byte file beside a non-empty `-wal` file is refused: that log may hold the runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ssmlab.errors import UserError
from ssmlab.records import Claim, RunRecord

SCHEMA_VERSION = 1  # the leases table is additive (created when missing): still version 1
DB_NAME = "ssmlab.db"
FINAL_STATUSES = ("ok", "diverged", "skipped")  # finished: what the analysis receives
DONE_STATUSES = ("ok", "diverged")  # never computed again; failed and skipped runs are retried
_SQLITE_MAGIC = b"SQLite format 3\x00"
LEASE_ENV = "SSMLAB_LEASE_SECONDS"
LEASE_SECONDS = 30.0  # a lease lives this long unless renewed (its owner renews every third)
_STALE_LEASE = 24 * 3600.0  # expired leases older than this are purged

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

# Added after the first release: created when missing by a writable open (a read-only open
# does without it), so stores of schema version 1 keep opening, and older ssmlab versions
# still open stores that have it (they ignore the table).
_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    run_id      TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_owner ON leases (owner);
"""


def _statements(script: str) -> list[str]:
    return [st for st in script.split(";") if st.strip()]


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


def lease_owner() -> str:
    """A sweep's lease owner id: host:pid:random (unique even if a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when a lease owner is known to be gone: it ran on this host and its pid no longer
    exists (a sweep killed with SIGKILL and rerun at once need not wait for its old leases
    to expire). Anything else (another host, a live or reused pid, a zombie) counts as alive,
    and its lease is taken over only when it expires."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # someone else's process, or not a pid
        return False
    return False


def lease_lifetime(value: float | None = None) -> float:
    """A lease's lifetime: `value`, else $SSMLAB_LEASE_SECONDS, else 30 s."""
    if value is None:
        text = os.environ.get(LEASE_ENV)
        if not text:
            return LEASE_SECONDS
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{LEASE_ENV}={text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise UserError(f"the lease lifetime must be a positive number of seconds, got {value}")
    return float(value)


@dataclass
class ClaimResult:
    """What `Store.claim` found: leased now, settled by someone else (run id -> status), and
    leased by another live owner (run id -> owner)."""

    claimed: list[str] = field(default_factory=list)
    settled: dict[str, str] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)


class Heartbeat:
    """Renews every lease of `owner` every ttl / 3 seconds from a thread with its own SQLite
    connection, so that a sweep busy computing (or waiting on its workers) keeps its runs.

        with Heartbeat(store.path, owner, ttl):
            ...   # claim, compute, commit

    A renewal that fails (the store locked for long) is retried at the next beat and kept in
    `error`; leases then expire and another sweep may compute the same run, which the store's
    conflict rule makes harmless (the first final result is kept)."""

    def __init__(self, path: Path, owner: str, ttl: float, interval: float | None = None):
        self.path, self.owner, self.ttl = path, owner, ttl
        self.interval = ttl / 3 if interval is None else interval
        self.renewals = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ssmlab-heartbeat-{owner}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("UPDATE leases SET expires=? WHERE owner=?",
                                 (time.time() + self.ttl, self.owner))
                    self.renewals += 1
                    self.error = None
                except sqlite3.Error as e:  # pragma: no cover - store locked for a minute
                    self.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()


class Store:
    """Open with `Store.open(results_dir)`; use as a context manager or call close()."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool = False):
        self.path = path
        self.conn = conn
        self.readonly = readonly
        self.readonly_reason = ""
        self._has_leases = False

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, results: str | Path, create: bool = True, readonly: bool | None = None) -> Store:
        """Open (or, when `create`, make) the store in directory `results` (or a .db file).

        readonly: True opens read-only (never writes, not even the additive migration); False
        requires a writable store; None (default) requires one when `create` (the writing
        commands: run, reproduce) and falls back to read-only when not (show, export, report).
        A write through a read-only store raises "results store X is read-only".
        """
        path, directory = cls._locate(Path(results))
        if cls._exists(path) and not path.is_file():
            raise UserError(f"results file {path} is not a file")
        if not cls._exists(path):
            if not create or readonly:
                raise UserError(f"no results store at {path}: run an experiment first "
                                f"(ssmlab run ...)")
            cls._make_directory(directory)
            if not os.access(directory, os.W_OK | os.X_OK):
                raise UserError(f"cannot create a results store in {directory}: the directory "
                                f"is read-only")
            return cls._open_writable(path, new=True, create=True)
        size = cls._size(path)
        if size == 0 and (readonly or not create):
            raise UserError(f"no results store at {path}: the file is empty")
        why_not = cls._not_writable(path, directory)
        if readonly or (why_not and readonly is None and not create):
            return cls._open_readonly(path, why_not)
        if why_not:
            raise UserError(f"results store {path} is read-only ({why_not})")
        if size == 0:
            wal = Path(f"{path}-wal")
            wal_size = cls._size(wal) if wal.exists() else 0
            if wal_size:
                raise UserError(f"results file {path} is empty but {wal} holds {wal_size} bytes "
                                f"(it may hold the runs): left untouched")
        return cls._open_writable(path, new=False, create=create)

    @property
    def folder(self) -> Path:
        """The results folder: the database's, where figures and the report are written."""
        return self.path.parent

    @staticmethod
    def _locate(results: Path) -> tuple[Path, Path]:
        if results.suffix == ".db":
            return results, results.parent
        if Store._exists(results) and not results.is_dir():
            raise UserError(f"results directory {results} is a file, not a directory")
        return results / DB_NAME, results

    @staticmethod
    def _exists(path: Path) -> bool:
        try:
            return path.exists()
        except OSError as e:  # e.g. inside a directory we may not enter
            raise UserError(f"results path {path} cannot be read: {e.strerror or e}") from None

    @staticmethod
    def _make_directory(directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create results directory {directory}: "
                            f"{e.strerror or e}") from None

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError as e:
            raise UserError(f"results file {path} cannot be read: {e.strerror or e}") from None

    @staticmethod
    def _not_writable(path: Path, directory: Path) -> str:
        """Why the store cannot be written ('' when it can). SQLite writes the file and creates
        its -wal / -shm files beside it, so both must be writable. (For root, os.access says
        writable unless the file system is mounted read-only.)"""
        if not os.access(path, os.W_OK):
            return "the file is not writable"
        if not os.access(directory, os.W_OK | os.X_OK):
            return "its directory is not writable"
        return ""

    @classmethod
    def _open_readonly(cls, path: Path, why: str) -> Store:
        """A store that cannot be written (`why`): SQLite `mode=ro`, plus `immutable=1` when
        no write-ahead log is pending (`mode=ro` on a WAL database must create the -shm file,
        which fails in a read-only directory and would leave files beside a read-only store;
        without a -wal file no writer is connected, so the file is what it holds).
        A writable store opened read-only on request: an ordinary connection with
        `PRAGMA query_only`, which keeps SQLite's locking (safe beside a running sweep) and
        leaves no -wal / -shm file behind."""
        cls._check_header(path)
        wal = Path(f"{path}-wal")
        if why:
            immutable = not (wal.exists() and cls._size(wal) > 0)
            target: str = f"file:{quote(str(path.resolve()))}?mode=ro" + (
                "&immutable=1" if immutable else "")
        else:
            target = str(path)
        try:
            conn = sqlite3.connect(target, uri=bool(why), timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise UserError(f"results file {path} cannot be opened: {e}") from None
        store = cls(path, conn, readonly=True)
        store.readonly_reason = why or "opened read-only"
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA query_only = ON")
            store._check_schema()
        except sqlite3.OperationalError as e:
            conn.close()
            if "readonly" in str(e) or "unable to open" in str(e):
                raise UserError(f"results store {path} is read-only and cannot be read: its "
                                f"write-ahead log needs write access ({e})") from None
            raise UserError(f"results file {path} is not a valid ssmlab store: {e}") from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _open_writable(cls, path: Path, new: bool, create: bool) -> Store:
        """Read-write. `create`: initialise a file that holds no table and add missing tables
        (the writing commands); without it nothing is written when opening (show, export)."""
        if not new:
            cls._check_header(path)
        try:
            conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise UserError(f"results file {path} cannot be opened: {e}") from None
        store = cls(path, conn)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            if create and not store._table_names():
                store._initialise()  # new, 0 bytes, or only a header: nothing to lose
            store._check_schema()
            if create:
                store._migrate()
                store._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as e:
            conn.close()
            if "readonly" in str(e):
                raise UserError(f"results store {path} is read-only ({e})") from None
            raise UserError(f"results file {path} is not a valid ssmlab store: {e}") from None
        except sqlite3.DatabaseError as e:
            conn.close()
            raise UserError(f"results file {path} is not a valid ssmlab store: {e}") from None
        except BaseException:
            conn.close()
            raise
        return store

    def _table_names(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}

    def _initialise(self) -> None:
        """Create the schema in a file holding no table, in one write transaction that first
        checks the file is still empty: of several processes creating the store at once, the
        first creates it and the others find it made (and check it as any existing store)."""
        with self.transaction() as c:
            if self._table_names():
                return
            for stmt in _statements(_SCHEMA) + _statements(_LEASES):
                c.execute(stmt)
            c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("INSERT INTO meta VALUES ('created', ?)", (now_iso(),))

    def _migrate(self) -> None:
        """Additive migrations of a writable store: when opened to write, or lazily before the
        first lease (a read-only open does without them)."""
        if self._has_leases:
            return
        if "leases" not in self._table_names():
            with self.transaction() as c:
                for stmt in _statements(_LEASES):
                    c.execute(stmt)
        self._has_leases = True

    @staticmethod
    def _retry_locked(fn: Any, seconds: float = 60.0) -> Any:
        """Switching to WAL takes an exclusive lock without SQLite's busy handler: retry while
        another process holds the database (e.g. creating it at the same instant)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    def _check_header(path: Path) -> None:
        try:
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise UserError(f"results file {path} cannot be read: {e.strerror or e}") from None
        # A shorter read is a file being created: SQLite (which locks) inspects it next.
        if len(head) == len(_SQLITE_MAGIC) and head != _SQLITE_MAGIC:
            raise UserError(f"results file {path} is not a valid ssmlab store: not an SQLite database")

    def _check_schema(self) -> None:
        """Read-only checks: the file must be an ssmlab store of a schema version we know."""
        try:
            names = self._table_names()
            if "meta" not in names or "runs" not in names:
                raise UserError(
                    f"results file {self.path} is not a valid ssmlab store: no ssmlab tables")
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            raise  # locked, read-only, cannot open: the caller names it
        except sqlite3.DatabaseError as e:
            raise UserError(f"results file {self.path} is not a valid ssmlab store: {e}") from None
        if row is None:
            raise UserError(f"results file {self.path} is not a valid ssmlab store: no schema version")
        try:
            version = int(str(row[0]).strip())
        except ValueError:
            raise UserError(f"results file {self.path} is not a valid ssmlab store: schema "
                            f"version {str(row[0])[:40]!r} is not a number") from None
        if version != SCHEMA_VERSION:
            raise UserError(
                f"results file {self.path} has schema version {version}; this ssmlab reads "
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
        if self.readonly:
            raise UserError(f"results store {self.path} is read-only ({self.readonly_reason})")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "readonly" in str(e):
                raise UserError(f"results store {self.path} is read-only ({e})") from None
            raise
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self._rollback()
            if "readonly" in str(e):
                raise UserError(f"results store {self.path} is read-only ({e})") from None
            raise
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # -- runs --------------------------------------------------------------------------------
    def put_run(self, run: StoredRun, owner: str | None = None) -> bool:
        """Commit one run atomically and release `owner`'s lease on it. An ok or diverged run
        already stored is kept (returns False); a failed or skipped one is replaced and its
        `attempts` counts the tries."""
        values = [
            dumps(getattr(run, c)) if c in _JSON_RUN_COLS else getattr(run, c) for c in _RUN_COLS
        ]
        cols = ", ".join(_RUN_COLS)
        marks = ", ".join("?" * len(_RUN_COLS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLS if c != "attempts")
        done = ", ".join(f"'{s}'" for s in DONE_STATUSES)
        if owner is not None:
            self._migrate()
        with self.transaction() as c:
            cur = c.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (experiment, cell_hash, seed) DO UPDATE SET {updates}, "
                f"attempts = runs.attempts + 1 WHERE runs.status NOT IN ({done})",
                values,
            )
            if owner is not None:
                c.execute("DELETE FROM leases WHERE run_id=? AND owner=?", (run.run_id, owner))
            return cur.rowcount > 0

    def run_statuses(self, experiment: str, cfg_key: str) -> dict[tuple[str, int], str]:
        return {k: st for k, (st, _) in self.run_states(experiment, cfg_key).items()}

    def run_states(self, experiment: str, cfg_key: str) -> dict[tuple[str, int], tuple[str, int]]:
        """(cell_hash, seed) -> (status, attempts) of the stored runs of one config."""
        rows = self.conn.execute(
            "SELECT cell_hash, seed, status, attempts FROM runs WHERE experiment=? AND cfg_key=?",
            (experiment, cfg_key),
        )
        return {(h, int(s)): (st, int(a)) for h, s, st, a in rows}

    def run_times(self, experiment: str, cfg_key: str) -> dict[tuple[str, int], tuple[str, float]]:
        """(cell_hash, seed) -> (status, seconds) of the stored runs of one config."""
        rows = self.conn.execute(
            "SELECT cell_hash, seed, status, seconds FROM runs WHERE experiment=? AND cfg_key=?",
            (experiment, cfg_key),
        )
        return {(h, int(s)): (st, float(sec or 0.0)) for h, s, st, sec in rows}

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

    # -- leases -----------------------------------------------------------------------------
    def claim(self, candidates: Mapping[str, int] | Iterable[tuple[str, int]], owner: str,
              ttl: float, limit: int) -> ClaimResult:
        """Lease up to `limit` of the `candidates` (run id -> the run's `attempts` when the
        sweep planned it, 0 if absent; a mapping or pairs, read lazily: only as far as needed)
        for `owner`, in one transaction, in the given order.

        A candidate is *settled* when its run is now ok / diverged, or was attempted again since
        it was planned (another sweep computed it: it is not computed twice in one generation);
        *busy* when another owner's lease on it has not expired; otherwise it is leased (an
        expired lease is taken over, the owner's own lease renewed)."""
        self._migrate()
        now = time.time()
        out = ClaimResult()
        with self.transaction() as c:
            c.execute("DELETE FROM leases WHERE expires < ?", (now - _STALE_LEASE,))
            pairs = candidates.items() if isinstance(candidates, Mapping) else candidates
            for rid, seen in pairs:
                if len(out.claimed) >= limit:
                    break
                row = c.execute("SELECT status, attempts FROM runs WHERE run_id=?",
                                (rid,)).fetchone()
                if row is not None and (row[0] in DONE_STATUSES or int(row[1]) > seen):
                    out.settled[rid] = row[0]
                    continue
                lease = c.execute("SELECT owner, expires FROM leases WHERE run_id=?",
                                  (rid,)).fetchone()
                if (lease is not None and lease[0] != owner and lease[1] > now
                        and not owner_is_dead(lease[0])):
                    out.busy[rid] = lease[0]
                    continue
                c.execute("INSERT INTO leases (run_id, owner, expires) VALUES (?, ?, ?) "
                          "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, "
                          "expires = excluded.expires", (rid, owner, now + ttl))
                out.claimed.append(rid)
        return out

    def release(self, owner: str, run_ids: Sequence[str] | None = None) -> None:
        """Drop `owner`'s leases (all, or those on `run_ids`)."""
        self._migrate()
        with self.transaction() as c:
            if run_ids is None:
                c.execute("DELETE FROM leases WHERE owner=?", (owner,))
            else:
                c.executemany("DELETE FROM leases WHERE owner=? AND run_id=?",
                              [(owner, r) for r in run_ids])

    def leases(self) -> dict[str, tuple[str, float]]:
        """run id -> (owner, expiry as Unix time); empty for a store without the table."""
        if "leases" not in self._table_names():
            return {}
        return {r: (o, float(e)) for r, o, e in
                self.conn.execute("SELECT run_id, owner, expires FROM leases")}

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
