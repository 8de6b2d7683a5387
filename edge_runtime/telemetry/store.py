"""The telemetry store: embedded, crash-safe, bounded (SQLite in WAL mode under the device root).

Layout: ``<root>/telemetry/telemetry.db`` (:func:`~edge_runtime.telemetry._status.db_path`), its WAL, and
``status.json`` beside it (what the facts report). Two tables: ``minutes`` holds one
:class:`~edge_runtime.telemetry.aggregate.MinuteAggregate` per (model, version, minute) and ``samples`` one
bounded uniform reservoir sample per (model, version, feature, minute) of the input statistics.
No raw input is ever stored.

Read API (the monitor, the fleet, tests) -- any process, no writer thread is started for it::

    store = TelemetryStore(db_path(root), device.config.telemetry_config())
    rows = store.minutes("defect-classifier", version="1.1.0", since=t0, until=t1)  # list[MinuteAggregate]
    xs = store.samples("defect-classifier", "1.1.0", "pixel_mean", since=t0)          # numpy float64 array
                                                                                       # (until= too)
    store.status()   # {"size_bytes", "max_bytes", "dropped", "last_error", ...}
    store.close()

- :meth:`TelemetryStore.minutes`: rows ordered by minute (then version); ``since`` inclusive and ``until``
  exclusive, in seconds since the epoch (a row's ``minute`` is the start of its minute). Only what the
  writer has committed is visible (the writer commits every ``flush_interval_s``; :meth:`flush` in the
  writing process commits now). A missing database is an empty store.
- :meth:`TelemetryStore.samples`: the stored reservoir values of the minutes in [``since``, ``until``), in
  minute order, at most ``max_samples`` of them (a uniform subset with a fixed seed when there are more,
  so two evaluations of the same rows agree). Each minute keeps at most ``samples_per_minute`` values
  (Algorithm R within the minute), so every minute weighs the same however busy it was.
- A database that cannot be read raises :class:`TelemetryError` (``code`` ``telemetry``) naming the file;
  only the writer moves a corrupt database aside.

Write path (:class:`~edge_runtime.serve.Predictor` calls it; also usable directly)::

    store.register_features(model, version, {"pixel_mean": bin_edges, ...})
    store.record(model, version, ts, latency_ms, ok, label, confidence, {"pixel_mean": 0.51, ...})
    store.feedback(model, version, ts, wrong)

The hot path (:meth:`record`) only adds to an in-memory aggregate of the current minute under a lock
(no I/O, no allocation beyond the first record of a minute); it never raises and never blocks on the
database. A background thread started by the first record commits the aggregates every
``flush_interval_s`` (one ``BEGIN IMMEDIATE`` transaction per flush, merging into the stored rows), then
applies retention and the size cap.

Failure rules (each kind of error is reported once in the status and the facts with its count, and
logged once; inference is never stopped or slowed):

- full disk, a lock held past ``busy_timeout_ms``, an I/O error: the batch is dropped and its records
  counted in ``dropped``; the next flush tries again with the next batch.
- a corrupt database (or one of an unknown schema): it is moved aside as
  ``telemetry.db.corrupt-<UTC time>`` (with its WAL; only the newest such copy is kept), a fresh one is
  started and the batch written to it.
- more than ``max_pending_minutes`` aggregates waiting (a writer that cannot keep up): new records are
  dropped and counted; the application's memory never grows with it.

Several recording processes may share one database (SQLite serialises their flushes and each merges into
the stored rows); the status file is then the last writer's, with that process's counts (``pid``).

Durability: a SIGKILL loses at most the records of the last flush interval (still in memory), never a
committed flush and never the store (SQLite WAL). ``synchronous=NORMAL``: a power cut may also lose the
last committed flushes, never consistency.

Bounds: after every flush the database plus its WAL is brought to at most 80 % of ``max_bytes`` whenever it
exceeds 90 % of it, by deleting the oldest minutes (aggregates and samples) and returning the pages to the
file system (``auto_vacuum=INCREMENTAL``, WAL checkpoint with truncation). The WAL is checkpointed
automatically well below the cap, so between flushes the files exceed the cap by at most one flush's
writes. Minutes older than ``retention_days`` by the store's clock are deleted too. A clock that goes
backwards files records under earlier minutes (merged, never lost); one that jumps forward by more than
the retention deletes older minutes early.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import errno
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EdgeRuntimeError
from ._status import file_bytes, status_path
from .aggregate import LATENCY_BUCKETS_MS, MinuteAggregate
from .config import TelemetryConfig

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SCHEMA_VERSION", "TelemetryError", "TelemetryStore"]

log = logging.getLogger("edge_runtime.telemetry")

#: 2: the numbers of a minute in columns and a packed latency array (a 24 h read decodes ~3x faster than
#: the JSON documents of 1); a database of another version is moved aside like a corrupt one
SCHEMA_VERSION = 2
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS minutes (model TEXT NOT NULL, version TEXT NOT NULL, minute INTEGER NOT NULL, "
    "count INTEGER NOT NULL, errors INTEGER NOT NULL, conf_sum REAL NOT NULL, conf_n INTEGER NOT NULL, "
    "feedback_n INTEGER NOT NULL, feedback_wrong INTEGER NOT NULL, latency_sum_ms REAL NOT NULL, "
    "latency BLOB NOT NULL, extra TEXT NOT NULL, PRIMARY KEY (model, version, minute)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS minutes_by_minute ON minutes (minute)",
    "CREATE TABLE IF NOT EXISTS samples (model TEXT NOT NULL, version TEXT NOT NULL, feature TEXT NOT NULL, "
    "minute INTEGER NOT NULL, seen INTEGER NOT NULL, vals BLOB NOT NULL, "
    "PRIMARY KEY (model, version, feature, minute)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS samples_by_minute ON samples (minute)",
)
#: the cap is enforced when the files pass HIGH of it, down to LOW of it
_HIGH, _LOW = 0.9, 0.8
#: the status file is rewritten at most this often for changed counters (at once for a new error or finding)
STATUS_EVERY_S = 30.0
#: status: at most this many distinct findings and moved-aside files are listed
_MAX_FINDINGS = 32
_SAMPLE_SEED = 20261203
_UPPER = LATENCY_BUCKETS_MS[:-1]  # bisect over the finite bounds; beyond them is the +inf bucket


class TelemetryError(EdgeRuntimeError):
    """The telemetry database cannot be read (corrupt, unknown schema, unreadable)."""

    code = "telemetry"


def _utc(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kind(exc: BaseException) -> str:
    """``full``, ``locked``, ``corrupt``, ``readonly`` or ``io``: what a database error means here."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return "corrupt"
    if primary == 13 or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):  # SQLITE_FULL
        return "full"
    if primary in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
        return "locked"
    if primary == 8 or (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES)):  # SQLITE_READONLY
        return "readonly"
    text = str(exc).lower()
    if "malformed" in text or "not a database" in text:
        return "corrupt"
    if "disk is full" in text:
        return "full"
    if "locked" in text:
        return "locked"
    return "io"


class _Corrupt(Exception):
    """The database file is not a usable telemetry store (raised by the writer's own checks)."""


@dataclass
class _Minute:
    """What the hot path adds to for one (model, version, minute) until the writer takes it."""

    agg: MinuteAggregate
    edges: dict[str, tuple[float, ...]]
    #: feature -> reservoir of this minute (kept across flushes while the minute is current)
    res: dict[str, list[float]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    dirty: bool = False
    #: records (inferences and feedback) added since the writer last took this minute
    records: int = 0
    #: the reservoir stored before this process first wrote the minute: (values, seen), loaded once
    base: dict[str, tuple[list[float], int]] | None = None


#: one minute's delta as the writer takes it: key, aggregate, reservoirs (values, seen) when changed,
#: records in it, and the in-memory minute (for its stored reservoir)
_Batch = tuple[tuple[str, str, int], MinuteAggregate, "dict[str, tuple[list[float], int]] | None", int, _Minute]



def _minute_window(args: list[Any], since: float | None, until: float | None) -> str:
    """The SQL condition of the minutes in [``since``, ``until``) (either end open when None), its parameters
    appended to ``args``. Minutes are whole seconds: a fractional bound is rounded up on both ends."""
    sql = ""
    if since is not None:
        sql += " AND minute>=?"
        args.append(math.ceil(since))
    if until is not None:
        sql += " AND minute<?"
        args.append(math.ceil(until))
    return sql

class TelemetryStore:
    """One telemetry database: the writer's hot path and background flush, and the read API.

    ``path`` is the database file (:func:`~edge_runtime.telemetry._status.db_path` of a device root);
    ``clock`` (seconds since the epoch) dates status entries and drives retention. Nothing is opened or
    created until the first read, record or flush.
    """

    def __init__(
        self, path: Path, config: TelemetryConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self.config = config or TelemetryConfig()
        self.clock = clock
        self._lock = threading.Lock()  # the hot path's: _pending, counters
        self._flush_lock = threading.RLock()  # one writer at a time; owns _conn
        self._read_lock = threading.Lock()
        self._pending: dict[tuple[str, str, int], _Minute] = {}
        self._edges: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {}
        self._conn: sqlite3.Connection | None = None
        self._conn_ino: int | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_ino: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._recorded = 0
        self._flushed = 0
        self._dropped = 0
        self._errors: dict[str, dict[str, Any]] = {}
        self._last_error: dict[str, Any] | None = None
        self._findings: dict[str, dict[str, Any]] = {}
        self._moved_aside: list[str] = []
        self._last_flush_at: str | None = None
        self._status_dirty = False
        self._status_urgent = False
        self._status_written = -math.inf
        self._last_retention = -math.inf
        self._rng = random.Random()  # noqa: S311 - sampling, not security
        self._k = self.config.samples_per_minute
        self._atexit = _closer(weakref.ref(self))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------ hot path --------------------

    def register_features(self, model: str, version: str, edges: Mapping[str, Sequence[float]]) -> None:
        """The baseline bin edges of ``model`` ``version``'s features (validated by the caller: finite,
        strictly increasing, at least two). Records name features by these keys; others are ignored."""
        with self._lock:
            self._edges[(model, version)] = {name: tuple(float(e) for e in es) for name, es in edges.items()}

    def record(
        self,
        model: str,
        version: str,
        ts: float,
        latency_ms: float,
        ok: bool,
        label: str | None,
        confidence: float | None,
        features: Mapping[str, float] | None = None,
    ) -> None:
        """Add one inference to the aggregate of its minute. Never raises, never blocks on I/O.

        ``ok`` False is an error (``label`` and ``confidence`` are then ignored); a non-finite confidence
        counts as an error too, never as a confidence. ``features`` maps a registered feature to this
        input's statistic; a non-finite value is counted in ``features_nonfinite``, in no bin.
        """
        try:
            minute = int(ts // 60) * 60
            key = (model, version, minute)
            with self._lock:
                m = self._pending.get(key)
                if m is None:
                    m = self._open_minute(key)
                    if m is None:
                        return
                self._recorded += 1
                m.records += 1
                a = m.agg
                a.count += 1
                if ok and confidence is not None and math.isfinite(confidence):
                    a.conf_sum += confidence
                    a.conf_n += 1
                    if label is not None:
                        a.labels[label] = a.labels.get(label, 0) + 1
                else:
                    a.errors += 1
                a.latency_counts[bisect.bisect_left(_UPPER, latency_ms)] += 1
                a.latency_sum_ms += latency_ms
                if features:
                    for name, v in features.items():
                        edges = m.edges.get(name)
                        if edges is None:
                            continue
                        if not math.isfinite(v):
                            a.features_nonfinite[name] = a.features_nonfinite.get(name, 0) + 1
                            continue
                        counts = a.features[name]
                        i = bisect.bisect_right(edges, v) - 1
                        counts[0 if i < 0 else min(i, len(counts) - 1)] += 1
                        if self._k:
                            res = m.res[name]
                            seen = m.seen[name] = m.seen[name] + 1
                            if len(res) < self._k:
                                res.append(v)
                            else:
                                j = int(self._rng.random() * seen)
                                if j < self._k:
                                    res[j] = v
                            m.dirty = True
            if self._thread is None:
                self._start_writer()
        except Exception as exc:  # recording must never break inference
            self._count_drop("record", f"recording failed: {type(exc).__name__}: {exc}", 1)

    def feedback(self, model: str, version: str, ts: float, wrong: bool) -> None:
        """Count ground truth for an inference of ``model`` ``version`` in the minute it arrived (``ts``).

        Never raises. The minute is the arrival's, so minutes a rule already judged do not change later.
        """
        try:
            key = (model, version, int(ts // 60) * 60)
            with self._lock:
                m = self._pending.get(key) or self._open_minute(key)
                if m is None:
                    return
                m.records += 1
                m.agg.feedback_n += 1
                m.agg.feedback_wrong += bool(wrong)
            if self._thread is None:
                self._start_writer()
        except Exception as exc:
            self._count_drop("record", f"recording feedback failed: {type(exc).__name__}: {exc}", 1)

    def note(self, kind: str, message: str) -> None:
        """A finding about the recorded data (a baseline feature that cannot be recorded, feedback for an
        unknown inference): listed once per ``kind`` in the status with its count. Never raises."""
        with self._lock:
            f = self._findings.get(kind)
            if f is None:
                if len(self._findings) >= _MAX_FINDINGS:
                    return
                self._findings[kind] = {"kind": kind, "message": message[:500], "count": 1,
                                        "first_at": _utc(self.clock())}
                log.warning("telemetry: %s", message)
                self._status_urgent = True
            else:
                f["count"] += 1
            self._status_dirty = True

    def _open_minute(self, key: tuple[str, str, int]) -> _Minute | None:
        """(Under ``_lock``.) A new in-memory minute, or None (counted) when too many are waiting."""
        if len(self._pending) >= self.config.max_pending_minutes:
            self._dropped += 1
            self._error_locked("backlog", f"more than {self.config.max_pending_minutes} minutes wait for the "
                               "writer; records are dropped until it catches up")
            return None
        edges = self._edges.get((key[0], key[1]), {})
        agg = MinuteAggregate(key[0], key[1], key[2], features={n: [0] * (len(e) - 1) for n, e in edges.items()})
        m = _Minute(agg, edges, res={n: [] for n in edges}, seen=dict.fromkeys(edges, 0))
        self._pending[key] = m
        return m

    def _count_drop(self, kind: str, message: str, n: int) -> None:
        with self._lock:
            self._dropped += n
            self._error_locked(kind, message)

    def _error_locked(self, kind: str, message: str) -> None:
        now = _utc(self.clock())
        e = self._errors.get(kind)
        if e is None:
            self._errors[kind] = {"count": 1, "first_at": now, "last_at": now, "message": message[:500]}
            log.warning("telemetry %s: %s (records are dropped and counted; inference goes on)", kind, message)
        else:
            e["count"] += 1
            e["last_at"] = now
        self._last_error = {"kind": kind, "message": message[:500], "at": now}
        self._status_dirty = True
        self._status_urgent |= e is None  # a new kind of error is written at once

    # ------------------------------------------------------------------ writer ----------------------

    def _start_writer(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.flush_interval_s):
            self.flush()

    def flush(self) -> bool:
        """Commit what the hot path aggregated, then apply retention and the cap. True when committed.

        Never raises: a failure drops the batch (counted), a corrupt database is moved aside first.
        """
        with self._flush_lock:
            batch = self._take_batch()
            n = sum(r for _, _, _, r, _ in batch)
            ok = True
            if batch:
                ok = self._write_with_recovery(batch, n)
            if ok:
                try:
                    self._maintain()
                except (sqlite3.Error, OSError) as exc:  # reported like a write error; no record is lost
                    kind = _kind(exc)
                    if kind not in ("locked", "full"):
                        self._close_writer()  # the next flush reopens and checks the file
                    self._count_drop(kind, f"{self.path}: retention or size cap not applied: {exc}", 0)
            self._write_status()
            return ok

    def _take_batch(self) -> list[_Batch]:
        out = []
        with self._lock:
            for key, m in list(self._pending.items()):
                if m.records == 0 and not m.dirty:
                    del self._pending[key]  # untouched for a whole interval: the minute is over
                    continue
                samples = {n: (list(r), m.seen[n]) for n, r in m.res.items()} if m.dirty else None
                out.append((key, m.agg, samples, m.records, m))
                m.agg = MinuteAggregate(key[0], key[1], key[2],
                                        features={n: [0] * len(c) for n, c in m.agg.features.items()})
                m.dirty = False
                m.records = 0
        return out

    def _write_with_recovery(self, batch: list[_Batch], n: int) -> bool:
        for attempt in (1, 2):
            try:
                conn = self._writer()
                self._write(conn, batch)
            except (sqlite3.Error, OSError, _Corrupt) as exc:
                kind = "corrupt" if isinstance(exc, _Corrupt) else _kind(exc)
                if kind not in ("locked", "full"):  # those pass; anything else reopens (and re-checks) the file
                    self._close_writer()
                if kind == "corrupt" and attempt == 1:
                    self._move_aside(str(exc))
                    for *_, m in batch:
                        m.base = None
                    continue  # the batch goes into the fresh database
                self._count_drop(kind, f"{self.path}: {exc}", n)
                return False
            with self._lock:
                self._flushed += n
                self._last_flush_at = _utc(self.clock())
                self._status_urgent |= self._last_error is not None
                self._last_error = None  # healthy again; ``errors`` keeps each kind with its count and times
                self._status_dirty = True
            return True
        return False  # pragma: no cover - the loop always returns

    def _writer(self) -> sqlite3.Connection:
        """The writer's connection, (re)opened when the file was replaced or moved aside."""
        try:
            ino: int | None = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = None
        if self._conn is not None and ino == self._conn_ino:
            return self._conn
        self._close_writer()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.config.busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            _setup(conn, self.config, check=True)
        except BaseException:
            conn.close()
            raise
        self._conn, self._conn_ino = conn, os.stat(self.path).st_ino
        return conn

    def _close_writer(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = self._conn_ino = None

    def _write(self, conn: sqlite3.Connection, batch: list[_Batch]) -> None:
        with _transaction(conn):
            for key, delta, samples, _, m in batch:
                row = conn.execute(_SELECT_ONE, key).fetchone()
                agg = delta
                if row is not None:
                    try:
                        agg = _decode(row)
                        agg.merge(delta)
                    except (ValueError, KeyError, TypeError) as exc:
                        self.note("bad_row", f"stored minute {key} unusable ({exc}); replaced by the new counts")
                        agg = delta
                conn.execute("INSERT OR REPLACE INTO minutes VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", _encode(agg))
                if samples:
                    self._write_samples(conn, key, samples, m)

    def _write_samples(self, conn: sqlite3.Connection, key: tuple[str, str, int],
                       samples: dict[str, tuple[list[float], int]], m: _Minute) -> None:
        model, version, minute = key
        if m.base is None:  # what an earlier process (or an evicted entry) stored for this minute
            m.base = {}
            for name in samples:
                row = conn.execute(
                    "SELECT vals, seen FROM samples WHERE model=? AND version=? AND feature=? AND minute=?",
                    (model, version, name, minute),
                ).fetchone()
                if row is not None:
                    m.base[name] = (array("f", bytes(row[0])).tolist(), int(row[1]))
        for name, (vals, seen) in samples.items():
            base = m.base.get(name)
            if base is not None:
                vals, seen = _merge_reservoirs(base[0], base[1], vals, seen, self._k, self._rng)
            conn.execute("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?)",
                         (model, version, name, minute, seen, array("f", vals).tobytes()))

    def _maintain(self) -> None:
        """Retention (at most once a minute) and the size cap (after every flush)."""
        conn = self._conn
        if conn is None:
            return
        now = self.clock()
        if now - self._last_retention >= 60 or now < self._last_retention:
            self._last_retention = now
            cutoff = int(now - self.config.retention_s)
            with _transaction(conn):
                conn.execute("DELETE FROM minutes WHERE minute < ?", (cutoff,))
                conn.execute("DELETE FROM samples WHERE minute < ?", (cutoff,))
        cap = self.config.max_bytes
        if file_bytes(self.path) <= _HIGH * cap:
            return
        self._compact(conn)
        every = "SELECT minute FROM minutes UNION SELECT minute FROM samples"
        while file_bytes(self.path) > _LOW * cap:
            distinct = conn.execute(f"SELECT COUNT(*) FROM ({every})").fetchone()[0]  # noqa: S608 - constant
            if not distinct:
                break
            # the oldest tenth of the stored minutes (at least one)
            cut = conn.execute(f"{every} ORDER BY minute LIMIT 1 OFFSET ?", (max(0, distinct // 10 - 1),)).fetchone()[0]
            with _transaction(conn):
                deleted = conn.execute("DELETE FROM minutes WHERE minute <= ?", (cut,)).rowcount
                deleted += conn.execute("DELETE FROM samples WHERE minute <= ?", (cut,)).rowcount
            self._compact(conn)
            with self._lock:
                self._status_dirty = True
            if not deleted:
                break

    @staticmethod
    def _compact(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA incremental_vacuum")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _move_aside(self, why: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            for old in self.path.parent.glob(f"{self.path.name}.corrupt-*"):  # keep only the newest copy
                old.unlink()
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm", "-journal"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    if suffix == "-wal":
                        os.replace(side, aside.with_name(aside.name + suffix))
                    else:
                        side.unlink()
        except OSError as exc:
            self._count_drop("corrupt", f"{self.path} is corrupt ({why}) and cannot be moved aside: {exc}", 0)
            return
        with self._lock:
            self._moved_aside = [*self._moved_aside, f"{aside.name}: {why[:200]}"][-4:]
            self._error_locked("corrupt", f"{self.path} was corrupt ({why}); moved aside as {aside.name}, a fresh "
                               "database was started")

    def _write_status(self, *, force: bool = False) -> None:
        """Write the status file when an error, finding or move-aside is new, else at most every
        ``STATUS_EVERY_S`` (counters only: a flash disk is not rewritten every flush)."""
        size = file_bytes(self.path)
        with self._lock:
            due = time.monotonic() - self._status_written >= STATUS_EVERY_S
            if not (self._status_urgent or (force and self._status_dirty) or (self._status_dirty and due)):
                return
            self._status_dirty = self._status_urgent = False
            self._status_written = time.monotonic()
            doc = self._status_locked(size)
        from .._fsutil import atomic_write_bytes
        from .._json import dumps_strict_bytes

        with contextlib.suppress(OSError, EdgeRuntimeError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(status_path(self.path), dumps_strict_bytes(doc, "telemetry status", sort_keys=True))

    # ------------------------------------------------------------------ read API --------------------

    def _read(self) -> sqlite3.Connection | None:
        """(Under ``_read_lock``.) A read-only connection, reopened when the file was replaced."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TelemetryError(f"telemetry database {self.path} cannot be read: {exc.strerror}") from None
        if self._reader is None or ino != self._reader_ino:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                   timeout=self.config.busy_timeout_ms / 1000, isolation_level=None)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise _Corrupt(f"unknown schema version {version}")
            except (sqlite3.Error, _Corrupt) as exc:
                conn.close()
                raise self._read_error(exc) from None
            self._reader, self._reader_ino = conn, ino
        return self._reader

    def _read_error(self, exc: BaseException) -> TelemetryError:
        kind = "corrupt" if isinstance(exc, _Corrupt) else _kind(exc)
        with contextlib.suppress(Exception):
            if self._reader is not None:
                self._reader.close()
        self._reader = None
        return TelemetryError(
            f"telemetry database {self.path} cannot be read ({kind}): {exc}",
            hint="the recording application moves a corrupt database aside and starts a fresh one at its next "
            "flush; without one running, move the file away by hand",
            path=str(self.path),
            kind=kind,
        )

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        with self._read_lock:
            conn = self._read()
            if conn is None:
                return []
            try:
                return conn.execute(sql, tuple(args)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []  # created, but the writer has not committed the schema yet
                raise self._read_error(exc) from None
            except sqlite3.Error as exc:
                raise self._read_error(exc) from None

    def minutes(
        self, model: str, *, version: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[MinuteAggregate]:
        """Committed aggregates of ``model`` (one version or all), ordered by minute then version.

        ``since`` is inclusive, ``until`` exclusive (seconds since the epoch, compared with ``minute``).
        """
        sql = f"SELECT {_COLUMNS} FROM minutes WHERE model=?"  # noqa: S608 - constant column list
        args: list[Any] = [model]
        if version is not None:
            sql += " AND version=?"
            args.append(version)
        rows = self._query(sql + _minute_window(args, since, until) + " ORDER BY minute, version", args)
        try:
            return _decode_all(rows)
        except (ValueError, KeyError, TypeError) as exc:
            raise self._read_error(_Corrupt(f"a stored minute is unreadable: {exc}")) from None

    def samples(
        self, model: str, version: str, feature: str, *, since: float | None = None, until: float | None = None
    ) -> np.ndarray:
        """The stored reservoir values of ``feature`` for ``model`` ``version`` (float64, minute order) of the
        minutes in [``since``, ``until``), at most ``max_samples`` (a uniform subset with a fixed seed when
        there are more)."""
        import numpy as np

        sql = "SELECT vals FROM samples WHERE model=? AND version=? AND feature=?"
        args: list[Any] = [model, version, feature]
        rows = self._query(sql + _minute_window(args, since, until) + " ORDER BY minute", args)
        parts = []
        for (blob,) in rows:
            if not isinstance(blob, bytes) or len(blob) % 4:
                raise self._read_error(_Corrupt("a stored sample is not a float32 array"))
            parts.append(np.frombuffer(blob, dtype=np.float32))
        xs = np.concatenate(parts).astype(np.float64) if parts else np.empty(0, dtype=np.float64)
        xs = xs[np.isfinite(xs)]
        cap = self.config.max_samples
        if len(xs) > cap:
            idx = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(len(xs), size=cap, replace=False))
            xs = xs[idx]
        return xs

    def status(self) -> dict[str, Any]:
        """Size, cap, records recorded / committed / dropped, each kind of error once, the last error,
        databases moved aside and findings (the ``telemetry`` section of the facts)."""
        size = file_bytes(self.path)  # two stat calls, outside the hot path's lock
        with self._lock:
            return self._status_locked(size)

    def _status_locked(self, size: int) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size_bytes": size,
            "max_bytes": self.config.max_bytes,
            "recorded": self._recorded,
            "flushed": self._flushed,
            "dropped": self._dropped,
            "pending_minutes": len(self._pending),
            "errors": {k: dict(v) for k, v in self._errors.items()},
            "last_error": dict(self._last_error) if self._last_error else None,
            "moved_aside": list(self._moved_aside),
            "findings": [dict(f) for f in self._findings.values()],
            "last_flush_at": self._last_flush_at,
            "pid": os.getpid(),
            "updated_at": _utc(self.clock()),
        }

    def close(self) -> None:
        """Stop the writer, commit what is pending, close the database. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(10.0, self.config.busy_timeout_ms / 1000 * 3))
        self.flush()
        with self._flush_lock:
            self._write_status(force=True)
            self._close_writer()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        atexit.unregister(self._atexit)

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- helpers ----------------------


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back (and the error raised) when anything in it fails, so a
    failed statement never leaves the connection inside a transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _setup(conn: sqlite3.Connection, config: TelemetryConfig, *, check: bool) -> None:
    """Pragmas and schema of the writer's connection; raises ``_Corrupt`` for a file that is not ours."""
    page = 4096
    conn.execute(f"PRAGMA page_size={page}")
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # effective on a new file only (before any table)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch {mode} journal to WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # the WAL is checkpointed (and capped on disk) well below the size cap
    wal_pages = max(16, min(1000, config.max_bytes // 8 // page))
    conn.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
    conn.execute(f"PRAGMA journal_size_limit={config.max_bytes // 8}")
    if check:
        result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if result != "ok":
            raise _Corrupt(f"integrity check: {result}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise _Corrupt(f"unknown schema version {version}")
    if version == 0:
        with _transaction(conn):
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _closer(ref: weakref.ReferenceType[TelemetryStore]) -> Callable[[], None]:
    """At interpreter exit, commit what a store still holds (a store that was garbage-collected holds nothing)."""

    def close() -> None:
        store = ref()
        if store is not None:
            store.close()

    return close


_COLUMNS = ("model, version, minute, count, errors, conf_sum, conf_n, feedback_n, feedback_wrong, latency_sum_ms, "
            "latency, extra")
_LATENCY_BYTES = 8 * len(LATENCY_BUCKETS_MS)
_SELECT_ONE = f"SELECT {_COLUMNS} FROM minutes WHERE model=? AND version=? AND minute=?"  # noqa: S608 - constant


def _encode(agg: MinuteAggregate) -> tuple[Any, ...]:
    """A minute as the values of a ``minutes`` row (``_COLUMNS`` order)."""
    extra = json.dumps({"f": agg.features, "n": agg.features_nonfinite, "l": agg.labels}, separators=(",", ":"),
                       allow_nan=False)
    return (agg.model, agg.version, agg.minute, agg.count, agg.errors, agg.conf_sum, agg.conf_n, agg.feedback_n,
            agg.feedback_wrong, agg.latency_sum_ms, array("q", agg.latency_counts).tobytes(), extra)


def _parse_extra(text: str) -> Any:
    return json.loads(text, parse_float=_no_float, parse_constant=_no_float)


def _decode_all(rows: list[Any]) -> list[MinuteAggregate]:
    """Many rows: their histograms parsed in one JSON document (a parse per row costs more than the rest of
    the row); when that fails, or does not give one object per row, row by row (which names the bad one)."""
    docs: list[Any] = [None] * len(rows)
    extras = [r[-1] for r in rows]
    if len(rows) > 1 and all(type(x) is str and len(x) <= 1 << 20 for x in extras):
        with contextlib.suppress(ValueError, RecursionError):
            parsed = _parse_extra("[" + ",".join(extras) + "]")
            if len(parsed) == len(rows) and all(type(d) is dict for d in parsed):
                docs = parsed
    return [_decode(row, doc) for row, doc in zip(rows, docs, strict=True)]


def _no_float(text: str) -> Any:
    raise ValueError(f"a count is not an integer: {text[:20]}")


def _decode(row: Sequence[Any], doc: Any = None) -> MinuteAggregate:
    """A ``minutes`` row back into a :class:`MinuteAggregate`; a row that is not one raises ``ValueError`` or
    ``TypeError`` (the stored bytes are as untrusted as any file on a failing disk). The histograms' JSON may
    hold integers only (a float, NaN or Infinity is refused while parsing), so the counts are checked for
    their sign alone. ``doc``: the histograms already parsed (:func:`_decode_all`)."""
    model, version, minute, count, errors, conf_sum, conf_n, fb_n, fb_wrong, lat_sum, latency, extra = row
    if not (type(model) is str and type(version) is str
            and min(minute, count, errors, conf_n, fb_n, fb_wrong) >= 0
            and type(minute) is type(count) is type(errors) is type(conf_n) is type(fb_n) is type(fb_wrong) is int):
        raise ValueError("a key or count is not of its type")
    if not (type(conf_sum) is float and type(lat_sum) is float and math.isfinite(conf_sum + lat_sum)):
        raise ValueError("a sum is not a finite number")
    if type(latency) is not bytes or len(latency) != _LATENCY_BYTES or type(extra) is not str or len(extra) > 1 << 20:
        raise ValueError("the latency counts or the histograms are not in their format")
    lat = array("q", latency).tolist()
    if doc is None:
        doc = _parse_extra(extra)
    feats, nonfinite, labels = doc["f"], doc["n"], doc["l"]
    if not (type(feats) is dict and type(nonfinite) is dict and type(labels) is dict):
        raise ValueError("the histograms are not in their format")
    if min(lat) < 0 or min(nonfinite.values(), default=0) < 0 or min(labels.values(), default=0) < 0:
        raise ValueError("a count is negative")
    for counts in feats.values():
        if type(counts) is not list or min(counts, default=0) < 0:
            raise ValueError("a feature histogram is not a list of counts")
    return MinuteAggregate(model, version, minute, count, errors, conf_sum, conf_n, fb_n, fb_wrong, lat, lat_sum,
                           feats, nonfinite, labels)


def _merge_reservoirs(
    a: list[float], sa: int, b: list[float], sb: int, k: int, rng: random.Random
) -> tuple[list[float], int]:
    """A uniform sample of at most ``k`` from two disjoint reservoirs of ``sa`` and ``sb`` values seen:
    each slot is drawn from ``a`` with probability ``sa / (sa + sb)`` (without replacement)."""
    a, b = list(a), list(b)
    rng.shuffle(a)
    rng.shuffle(b)
    out: list[float] = []
    ra, rb = sa, sb
    while len(out) < k and (a or b):
        if a and (not b or rng.random() * (ra + rb) < ra):
            out.append(a.pop())
            ra = max(ra - 1, 0)
        else:
            out.append(b.pop())
            rb = max(rb - 1, 0)
    return out, sa + sb
