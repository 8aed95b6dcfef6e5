"""SQLite storage: runs, input-stream records, waitpoints.

One connection, used only from the event loop thread. Every write is one
transaction committed before the caller answers, so a 200 means the data is
in the database file (WAL) and survives kill -9."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from . import auth, clock

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,      -- creation order: list cursor
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT,                              -- JSON text
    payload_type TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT,
    is_test INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    idempotency_expires INTEGER,
    request_key TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
-- (columns added after the first release are in COLUMNS_ADDED)
CREATE INDEX IF NOT EXISTS runs_request_key ON runs (request_key);
CREATE INDEX IF NOT EXISTS runs_idempotency ON runs (task, idempotency_key);
CREATE TABLE IF NOT EXISTS records (
    run TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run, stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS waitpoints (
    id TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    stream TEXT NOT NULL,
    status TEXT NOT NULL,                      -- PENDING or COMPLETED
    output TEXT,
    output_is_error INTEGER NOT NULL DEFAULT 0,
    timeout_at INTEGER,
    completed_at INTEGER,
    created_at INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    user_key INTEGER NOT NULL,
    idempotency_expires INTEGER,
    tags TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS waitpoints_idempotency ON waitpoints (idempotency_key);
-- The real server keeps one pending .wait() per run and stream (a cache
-- entry that a later wait overwrites); a send completes that one.
CREATE TABLE IF NOT EXISTS input_waits (
    run TEXT NOT NULL,
    stream TEXT NOT NULL,
    waitpoint TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (run, stream)
) WITHOUT ROWID;
"""

# Columns added to older databases at open.
COLUMNS_ADDED = (
    ("runs", "ttl", "TEXT"),
    ("runs", "streams_version", "TEXT NOT NULL DEFAULT 'v2'"),
    ("runs", "cancel_at", "INTEGER"),               # pending cancel: finishes then
    ("runs", "output_streams", "TEXT NOT NULL DEFAULT '[]'"),
)
# A cancelled run is PENDING_CANCEL until its worker stops it: this long.
PENDING_CANCEL_MS = 300

FINISHED = frozenset({"COMPLETED", "CANCELED", "FAILED", "CRASHED",
                      "SYSTEM_FAILURE", "TIMED_OUT", "EXPIRED"})
WAITPOINT_TIMEOUT_CODE = "TRIGGER_WAITPOINT_TIMEOUT"
RUN_CACHE_SIZE = 10000


def now_ms() -> int:
    return clock.now_ms()


def iso(ms: Optional[int]) -> Optional[str]:
    """JavaScript Date#toJSON: 2024-04-03T12:00:00.000Z."""
    if ms is None:
        return None
    secs, rem = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%03dZ" % rem


@dataclass
class Run:
    n: int
    id: str
    task: str
    status: str
    payload: Optional[str]
    payload_type: Optional[str]
    tags: list
    metadata: Optional[str]
    is_test: bool
    created_at: int
    updated_at: int
    finished_at: Optional[int]
    ttl: Optional[str]
    streams_version: str
    cancel_at: Optional[int]
    output_streams: list

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Waitpoint:
    id: str
    run: str
    stream: str
    status: str
    output: Optional[str]
    output_is_error: bool
    timeout_at: Optional[int]
    completed_at: Optional[int]
    created_at: int
    idempotency_key: str
    user_key: bool
    idempotency_expires: Optional[int]
    tags: list


_RUN_COLS = ("n, id, task, status, payload, payload_type, tags, metadata, is_test,"
             " created_at, updated_at, finished_at, ttl, streams_version, cancel_at,"
             " output_streams")
_WP_COLS = ("id, run, stream, status, output, output_is_error, timeout_at,"
            " completed_at, created_at, idempotency_key, user_key,"
            " idempotency_expires, tags")


def waitpoint_status(wp: "Waitpoint") -> str:
    """The API's name for a waitpoint's state."""
    if wp.status == "PENDING":
        return "WAITING"
    return "TIMED_OUT" if wp.output_is_error else "COMPLETED"


def _run(row) -> Run:
    r = list(row)
    r[6] = json.loads(r[6])
    r[8] = bool(r[8])
    r[15] = json.loads(r[15])
    return Run(*r)


def _waitpoint(row) -> Waitpoint:
    r = list(row)
    r[5] = bool(r[5])
    r[10] = bool(r[10])
    r[12] = json.loads(r[12])
    return Waitpoint(*r)


class Store:
    def __init__(self, path: str, fsync: bool = True):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at each commit, so a 200 also survives a
        # power cut; NORMAL would only survive a process crash.
        self.db.execute("PRAGMA synchronous=%s" % ("FULL" if fsync else "NORMAL"))
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        for table, column, decl in COLUMNS_ADDED:
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self.env_id = self._env_id()
        # Runs as last read, for the lookup every run route starts with.
        # This process is the database's only writer (DB.lock), and
        # finish_run is the only change to a run after it is created.
        self._runs: dict = {}

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _env_id(self) -> str:
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key='env_id'").fetchone()
            if row:
                return row[0]
            env_id = auth.random_id("c", 24)   # shaped like a cuid
            db.execute("INSERT INTO meta VALUES ('env_id', ?)", (env_id,))
            return env_id

    # ---- runs

    def create_run(self, task: str, payload: Optional[str], payload_type: Optional[str],
                   tags: list, metadata: Optional[str], is_test: bool,
                   idempotency_key: Optional[str], idempotency_expires: Optional[int],
                   request_key: Optional[str], ttl: Optional[str] = None,
                   streams_version: str = "v2") -> Run:
        """A run as a worker executing it shows it (EXECUTING)."""
        t = now_ms()
        run_id = auth.random_id("run_")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, task, status, payload, payload_type, tags, metadata,"
                " is_test, idempotency_key, idempotency_expires, request_key,"
                " created_at, updated_at, ttl, streams_version)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, task, "EXECUTING", payload, payload_type, json.dumps(tags),
                 metadata, int(is_test), idempotency_key, idempotency_expires,
                 request_key, t, t, ttl, streams_version))
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Optional[Run]:
        run = self._runs.get(run_id)
        if run is None:
            row = self.db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id=?",
                                  (run_id,)).fetchone()
            if row is None:
                return None
            run = _run(row)
            if len(self._runs) >= RUN_CACHE_SIZE:
                del self._runs[next(iter(self._runs))]     # the oldest
            self._runs[run_id] = run
        if run.cancel_at is not None and run.finished_at is None and \
                run.cancel_at <= now_ms():
            # The pending cancel is over (applied when observed).
            self.finish_run(run_id, "CANCELED", run.cancel_at)
            return self.get_run(run_id)
        return run

    def cancel_run(self, run_id: str) -> None:
        """Cancel as the engine does a run a worker executes: PENDING_CANCEL
        for a moment (the API still shows it executing), then CANCELED."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET cancel_at=? WHERE id=? AND cancel_at IS NULL"
                       " AND finished_at IS NULL", (now_ms() + PENDING_CANCEL_MS, run_id))
        self._runs.pop(run_id, None)

    def _finish_cancelled(self) -> None:
        """Apply every pending cancel that is over."""
        with self.transaction() as db:
            done = db.execute("UPDATE runs SET status='CANCELED', finished_at=cancel_at,"
                              " updated_at=cancel_at WHERE cancel_at <= ?"
                              " AND finished_at IS NULL", (now_ms(),)).rowcount
        if done:
            self._runs.clear()

    def add_output_stream(self, run: Run, stream: str) -> None:
        if stream in run.output_streams:
            return
        with self.transaction() as db:
            db.execute("UPDATE runs SET output_streams=? WHERE id=?",
                       (json.dumps(run.output_streams + [stream]), run.id))
        self._runs.pop(run.id, None)

    def run_by_request_key(self, key: str) -> Optional[Run]:
        row = self.db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE request_key=?",
                              (key,)).fetchone()
        return _run(row) if row else None

    def run_by_idempotency_key(self, task: str, key: str) -> Optional[Run]:
        row = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE task=? AND idempotency_key=?"
            " AND (idempotency_expires IS NULL OR idempotency_expires > ?)"
            " ORDER BY n DESC LIMIT 1", (task, key, now_ms())).fetchone()
        return _run(row) if row else None

    def finish_run(self, run_id: str, status: str, at: Optional[int] = None) -> None:
        t = now_ms() if at is None else at
        try:
            with self.transaction() as db:
                db.execute("UPDATE runs SET status=?, finished_at=?, updated_at=?"
                           " WHERE id=? AND finished_at IS NULL", (status, t, t, run_id))
        finally:
            self._runs.pop(run_id, None)

    def list_runs(self, statuses: list, tasks: list, tags: list, size: int,
                  after: Optional[str], before: Optional[str]) -> tuple:
        """Newest first. Returns (runs, has_newer, has_older)."""
        self._finish_cancelled()
        where, args = [], []
        if statuses:
            where.append("status IN (%s)" % ",".join("?" * len(statuses)))
            args += statuses
        if tasks:
            where.append("task IN (%s)" % ",".join("?" * len(tasks)))
            args += tasks
        if tags:
            where.append("EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE value IN (%s))"
                         % ",".join("?" * len(tags)))
            args += tags
        base = " AND ".join(where) or "1"

        def cursor(run_id: str) -> int:
            row = self.db.execute("SELECT n FROM runs WHERE id=?", (run_id,)).fetchone()
            return row[0] if row else 0

        if before:
            rows = self.db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE {base} AND n > ? ORDER BY n ASC LIMIT ?",
                args + [cursor(before), size + 1]).fetchall()
            has_newer = len(rows) > size
            runs = [_run(r) for r in rows[:size]][::-1]
            return runs, has_newer, True
        limit_n = cursor(after) if after else None
        if limit_n is not None:
            rows = self.db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE {base} AND n < ? ORDER BY n DESC LIMIT ?",
                args + [limit_n, size + 1]).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE {base} ORDER BY n DESC LIMIT ?",
                args + [size + 1]).fetchall()
        return [_run(r) for r in rows[:size]], after is not None, len(rows) > size

    # ---- records

    def stream_tail(self, run_id: str, stream: str) -> tuple:
        """(next seq, timestamp of the last record or 0)."""
        row = self.db.execute(
            "SELECT seq, ts FROM records WHERE run=? AND stream=? ORDER BY seq DESC LIMIT 1",
            (run_id, stream)).fetchone()
        return (row[0] + 1, row[1]) if row else (0, 0)

    def insert_record(self, db: sqlite3.Connection, run_id: str, stream: str,
                      seq: int, ts: int, body: str) -> None:
        db.execute("INSERT INTO records VALUES (?,?,?,?,?)", (run_id, stream, seq, ts, body))

    def read_records(self, run_id: str, stream: str, from_seq: int, limit: int) -> list:
        return self.db.execute(
            "SELECT seq, ts, body FROM records WHERE run=? AND stream=? AND seq>=?"
            " ORDER BY seq LIMIT ?", (run_id, stream, from_seq, limit)).fetchall()

    # ---- waitpoints

    def get_waitpoint(self, wp_id: str) -> Optional[Waitpoint]:
        row = self.db.execute(f"SELECT {_WP_COLS} FROM waitpoints WHERE id=?",
                              (wp_id,)).fetchone()
        if not row:
            return None
        wp = _waitpoint(row)
        if wp.status == "PENDING" and wp.timeout_at is not None and wp.timeout_at <= now_ms():
            # Timeouts are applied when observed: nothing runs in between
            # that could tell the difference, and it survives restarts.
            with self.transaction() as db:
                self._time_out(db, wp)
        return wp

    def _time_out(self, db: sqlite3.Connection, wp: Waitpoint) -> None:
        wp.status, wp.output_is_error, wp.completed_at = "COMPLETED", True, wp.timeout_at
        wp.output = json.dumps({"code": WAITPOINT_TIMEOUT_CODE,
                                "message": f"Waitpoint timed out at {iso(wp.timeout_at)}"},
                               separators=(",", ":"))
        db.execute("UPDATE waitpoints SET status='COMPLETED', output=?, output_is_error=1,"
                   " completed_at=? WHERE id=?", (wp.output, wp.completed_at, wp.id))

    def list_waitpoints(self, statuses: list, idempotency_key: Optional[str], tags: list,
                        size: int, after: Optional[str]) -> tuple:
        """Waitpoint tokens (not .wait() waitpoints), newest first:
        (waitpoints, has_more)."""
        where, args = ["run=''"], []
        if idempotency_key:
            where.append("idempotency_key=?")
            args.append(idempotency_key)
        if tags:
            where.append("EXISTS (SELECT 1 FROM json_each(waitpoints.tags) WHERE value IN (%s))"
                         % ",".join("?" * len(tags)))
            args += tags
        if after:
            where.append("rowid < (SELECT rowid FROM waitpoints WHERE id=?)")
            args.append(after)
        out = []
        for (wp_id,) in self.db.execute(
                f"SELECT id FROM waitpoints WHERE {' AND '.join(where)} ORDER BY rowid DESC",
                args):
            wp = self.get_waitpoint(wp_id)
            if wp is not None and (not statuses or waitpoint_status(wp) in statuses):
                out.append(wp)
                if len(out) > size:
                    break
        return out[:size], len(out) > size

    def waitpoint_by_idempotency_key(self, key: str) -> Optional[Waitpoint]:
        row = self.db.execute(
            "SELECT id FROM waitpoints WHERE idempotency_key=? AND user_key=1"
            " AND (idempotency_expires IS NULL OR idempotency_expires > ?)"
            " ORDER BY created_at DESC LIMIT 1", (key, now_ms())).fetchone()
        return self.get_waitpoint(row[0]) if row else None

    def create_waitpoint(self, db: sqlite3.Connection, run_id: str, stream: str,
                         timeout_at: Optional[int], idempotency_key: Optional[str],
                         idempotency_expires: Optional[int], tags: list) -> Waitpoint:
        wp = Waitpoint(auth.random_id("waitpoint_"), run_id, stream, "PENDING", None,
                       False, timeout_at, None, now_ms(),
                       idempotency_key or auth.random_id("", 21), idempotency_key is not None,
                       idempotency_expires, tags)
        db.execute(f"INSERT INTO waitpoints ({_WP_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (wp.id, wp.run, wp.stream, wp.status, None, 0, wp.timeout_at, None,
                    wp.created_at, wp.idempotency_key, int(wp.user_key),
                    wp.idempotency_expires, json.dumps(tags)))
        return wp

    def link_input_wait(self, db: sqlite3.Connection, run_id: str, stream: str,
                        wp: Waitpoint) -> None:
        db.execute("INSERT OR REPLACE INTO input_waits VALUES (?,?,?,?)",
                   (run_id, stream, wp.id, wp.timeout_at))

    def complete_waitpoint(self, db: sqlite3.Connection, wp_id: str,
                           output: Optional[str]) -> None:
        db.execute("UPDATE waitpoints SET status='COMPLETED', output=?, output_is_error=0,"
                   " completed_at=? WHERE id=? AND status='PENDING'"
                   " AND (timeout_at IS NULL OR timeout_at > ?)",
                   (output, now_ms(), wp_id, now_ms()))

    def complete_linked_wait(self, db: sqlite3.Connection, run_id: str, stream: str,
                             output: str) -> None:
        """A send: complete the .wait() linked to this stream, if any."""
        row = db.execute("SELECT waitpoint FROM input_waits WHERE run=? AND stream=?",
                         (run_id, stream)).fetchone()
        if row:
            self.complete_waitpoint(db, row[0], output)
            self.unlink_input_wait(db, run_id, stream)

    def unlink_input_wait(self, db: sqlite3.Connection, run_id: str, stream: str) -> None:
        db.execute("DELETE FROM input_waits WHERE run=? AND stream=?", (run_id, stream))
