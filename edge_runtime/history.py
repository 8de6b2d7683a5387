"""The fleet's queryable history: ``<reports>/history/history.db`` (SQLite, WAL), beside the journal.

One history, two files with one job each (controller side only):

* ``history/events.jsonl`` (:mod:`edge_runtime.audit`) stays THE journal: every release, deploy, rollback and
  health run appends one event there, through :func:`edge_runtime.audit.append_event` only. It is the record of
  decisions: append-only, greppable, a CI artifact.
* ``history/history.db`` is its index plus what is too large for a journal line: every event of the journal is
  copied into table ``events`` (:func:`sync_events`, incremental by byte offset, idempotent by line number, so
  the database can always be rebuilt from the journal: delete it and the next run re-reads every line), and
  each health run adds one row per device with its status and numbers (``health_runs`` / ``device_health``),
  which the HTML dashboard turns into trends across runs and people query with ``sqlite3``.

Why not a second, independent history: two writers of "what happened" drift apart; here the journal is the
one source for events and the database only mirrors it (plus per-device measurements that have no other
home). Why SQLite for the index: trends over thousands of devices and runs need indexed queries.

Schema versioned with ``PRAGMA user_version`` and forward-only :data:`MIGRATIONS`, applied under
``BEGIN IMMEDIATE`` (two processes that open an old database migrate it once). WAL mode and a busy timeout
let a reader (the dashboard) and concurrent writers (a health run and a deploy's summary) work at once; each
write is one transaction, so a crash leaves the database at a run boundary. A database written by a newer
version (``user_version`` above ours) is refused with the fix, never modified.

Example queries (``sqlite3 reports/history/history.db``)::

    -- status counts per health run
    SELECT at, in_sync, out_of_sync, degraded, rolled_back, unknown FROM health_runs ORDER BY at;
    -- one device over time
    SELECT r.at, d.status, d.p95_latency_ms, d.mean_confidence FROM device_health d
      JOIN health_runs r ON r.id = d.run WHERE d.device = 'dev-a1' ORDER BY r.at;
    -- devices unknown in the last run, with why
    SELECT device, reasons FROM device_health WHERE run = (SELECT max(id) FROM health_runs) AND status = 'unknown';
    -- every deploy and its outcome
    SELECT at, summary FROM events WHERE kind IN ('deploy', 'rollback') ORDER BY line;
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DB_NAME", "MIGRATIONS", "HistoryError", "connect", "db_path", "deploy_events", "health_trend",
           "record_health", "sync_events"]

DB_NAME = "history.db"
BUSY_TIMEOUT_S = 30.0

#: forward-only schema migrations; ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``
MIGRATIONS: list[str] = [
    # 1: health runs and each device's status
    """
    CREATE TABLE health_runs (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, at TEXT NOT NULL, failed INTEGER NOT NULL,
        total INTEGER NOT NULL, in_sync INTEGER NOT NULL, out_of_sync INTEGER NOT NULL, degraded INTEGER NOT NULL,
        rolled_back INTEGER NOT NULL, unknown INTEGER NOT NULL, summary TEXT NOT NULL
    );
    CREATE TABLE device_health (
        run INTEGER NOT NULL REFERENCES health_runs(id), device TEXT NOT NULL, grp TEXT, status TEXT NOT NULL,
        reasons TEXT NOT NULL, PRIMARY KEY (run, device)
    );
    """,
    # 2: the numbers per device (trends) and the journal's events (deploys, rollbacks, releases)
    """
    ALTER TABLE device_health ADD COLUMN versions TEXT;
    ALTER TABLE device_health ADD COLUMN inferences INTEGER;
    ALTER TABLE device_health ADD COLUMN error_rate REAL;
    ALTER TABLE device_health ADD COLUMN p95_latency_ms REAL;
    ALTER TABLE device_health ADD COLUMN mean_confidence REAL;
    CREATE INDEX device_health_device ON device_health(device, run);
    CREATE TABLE events (
        line INTEGER PRIMARY KEY, at TEXT, kind TEXT NOT NULL, subject TEXT, summary TEXT, data TEXT NOT NULL
    );
    CREATE INDEX events_kind ON events(kind, line);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]


class HistoryError(Exception):
    """The history database cannot be used; the message names the file and the fix."""


def db_path(reports_dir: Path | str) -> Path:
    return Path(reports_dir) / "history" / DB_NAME


def connect(reports_dir: Path | str, *, upto: int | None = None) -> sqlite3.Connection:
    """Open (create) the history database, in WAL mode, migrated to the newest schema (or ``upto``)."""
    path = db_path(reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = len(MIGRATIONS) if upto is None else upto
    # Setting up (switching to WAL, migrating) is serialised between processes by a lock file: SQLite answers
    # "database is locked" at once, without waiting, when two connections switch a new database to WAL.
    with _setup_lock(path):
        return _open(path, target)


@contextlib.contextmanager
def _setup_lock(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(path.name + ".setup-lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HistoryError(f"history database {path}: another process has been setting it up for more "
                                       f"than {BUSY_TIMEOUT_S:g} s; try again when it has finished") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _open(path: Path, target: int) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise HistoryError(f"{path} has schema version {version}, newer than this tool's "
                                   f"{len(MIGRATIONS)}: update the project, or move the file away to start anew "
                                   f"(it is rebuilt from history/events.jsonl; health rows are lost)")
            for n in range(version, target):
                for stmt in MIGRATIONS[n].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={n + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"history database {path} cannot be used: {exc}; move it away (it is rebuilt from "
                           f"history/events.jsonl at the next run; health rows are lost)") from None
    return conn


def _meta(conn: sqlite3.Connection, key: str, default: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return str(row[0]) if row else default


def sync_events(reports_dir: Path | str, conn: sqlite3.Connection | None = None) -> int:
    """Copy the journal's lines not yet in the database into ``events``; return how many were added.

    Reads from the byte offset reached last time (complete lines only: a line being appended is read next
    time); a journal that shrank (replaced) is re-read from the start. Idempotent (keyed by line number).
    """
    from .audit import history_path, parse_event

    own = conn is None
    c = conn or connect(reports_dir)
    try:
        journal = history_path(Path(reports_dir))
        try:
            size = os.stat(journal).st_size
        except FileNotFoundError:
            return 0
        c.execute("BEGIN IMMEDIATE")
        try:
            offset, line = int(_meta(c, "events_offset", "0")), int(_meta(c, "events_line", "0"))
            if size < offset:
                offset, line = 0, 0
            with journal.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(size - offset)
            added = 0
            rows = []
            for raw in data.splitlines(keepends=True):
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                line += 1
                ev = parse_event(raw) or {"kind": "unreadable", "data": {"line": line}}
                rows.append((line, ev.get("at"), str(ev.get("kind")), ev.get("subject"), ev.get("summary"),
                             json.dumps(ev.get("data"), sort_keys=True, default=str)))
                added += 1
            c.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          [("events_offset", str(offset)), ("events_line", str(line))])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return added
    finally:
        if own:
            c.close()


def _model_numbers(row: Mapping[str, Any]) -> tuple[int | None, float | None, float | None, float | None]:
    """A device's numbers over its models: inferences, error rate, worst p95 latency, lowest mean confidence."""
    tels = [m.get("telemetry") for m in row.get("models") or () if isinstance(m.get("telemetry"), Mapping)]
    if not tels:
        return None, None, None, None
    n = sum(int(t.get("inferences") or 0) for t in tels)
    errs = sum(int(t.get("errors") or 0) for t in tels)
    p95 = [float(t["p95_latency_ms"]) for t in tels if t.get("p95_latency_ms") is not None]
    conf = [float(t["mean_confidence"]) for t in tels if t.get("mean_confidence") is not None]
    return n, (errs / n if n else None), (max(p95) if p95 else None), (min(conf) if conf else None)


def record_health(reports_dir: Path | str, report: Mapping[str, Any], at: str, summary: str) -> int:
    """Append one health run and its device rows in one transaction; return the run's row id."""
    c = connect(reports_dir)
    try:
        counts = report["counts"]
        c.execute("BEGIN IMMEDIATE")
        try:
            cur = c.execute(
                "INSERT INTO health_runs (run_id, at, failed, total, in_sync, out_of_sync, degraded, rolled_back, "
                "unknown, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (report["run_id"], at, int(bool(report["failed"])), report["total"], counts["in_sync"],
                 counts["out_of_sync"], counts["degraded"], counts["rolled_back"], counts["unknown"], summary))
            run = int(cur.lastrowid or 0)
            rows = []
            for d in report["devices"]:
                n, er, p95, conf = _model_numbers(d)
                versions = {m["model"]: m.get("reported") for m in d.get("models") or ()}
                rows.append((run, d["device"], d.get("group"), d["status"], json.dumps(d.get("reasons") or []),
                             json.dumps(versions, sort_keys=True), n, er, p95, conf))
            c.executemany("INSERT INTO device_health (run, device, grp, status, reasons, versions, inferences, "
                          "error_rate, p95_latency_ms, mean_confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        sync_events(reports_dir, c)
        return run
    finally:
        c.close()


def health_trend(reports_dir: Path | str, runs: int = 50, devices: list[str] | None = None) -> dict[str, Any]:
    """The last ``runs`` health runs (status counts) and, for ``devices``, their numbers per run."""
    if not db_path(reports_dir).exists():
        return {"runs": [], "devices": {}}
    c = connect(reports_dir)
    try:
        rs = c.execute("SELECT id, at, in_sync, out_of_sync, degraded, rolled_back, unknown FROM health_runs "
                       "ORDER BY id DESC LIMIT ?", (runs,)).fetchall()[::-1]
        out: dict[str, Any] = {"runs": [dict(zip(("id", "at", "in_sync", "out_of_sync", "degraded", "rolled_back",
                                                  "unknown"), r, strict=True)) for r in rs], "devices": {}}
        if rs and devices:
            first = rs[0][0]
            marks = ",".join("?" * len(devices))
            for dev, at, p95, conf in c.execute(
                f"SELECT d.device, r.at, d.p95_latency_ms, d.mean_confidence FROM device_health d JOIN health_runs r "  # noqa: S608
                f"ON r.id = d.run WHERE d.run >= ? AND d.device IN ({marks}) ORDER BY d.run", (first, *devices)):
                out["devices"].setdefault(dev, []).append({"at": at, "p95_latency_ms": p95, "mean_confidence": conf})
        return out
    finally:
        c.close()


def deploy_events(reports_dir: Path | str, limit: int = 1) -> list[dict[str, Any]]:
    """The newest ``limit`` deploy/rollback events of the journal (synced first), newest first."""
    c = connect(reports_dir)
    try:
        sync_events(reports_dir, c)
        rows = c.execute("SELECT line, at, kind, subject, summary, data FROM events WHERE kind IN ('deploy', "
                         "'rollback') ORDER BY line DESC LIMIT ?", (limit,)).fetchall()
        return [{"line": r[0], "at": r[1], "kind": r[2], "subject": r[3], "summary": r[4], "data": json.loads(r[5])}
                for r in rows]
    finally:
        c.close()
