"""Where the telemetry store lives under a device root, and its status as the facts report it.

Light on purpose (no sqlite3, no numpy): :mod:`edge_runtime.facts` imports it on every command.
The writing process (:class:`~edge_runtime.telemetry.store.TelemetryStore`) keeps a small JSON status
file beside the database (records dropped, each kind of error once with its count, databases moved
aside); :func:`telemetry_facts` reads it back, as untrusted input, for the ``telemetry`` section of the
facts.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

__all__ = ["DB_NAME", "STATUS_NAME", "TELEMETRY_DIR", "db_path", "status_path", "telemetry_facts"]

TELEMETRY_DIR = "telemetry"
DB_NAME = "telemetry.db"
STATUS_NAME = "status.json"
#: the status file is small; anything larger is not ours
STATUS_MAX_BYTES = 64 << 10


def db_path(root: Path) -> Path:
    """``<root>/telemetry/telemetry.db``: the device's telemetry database."""
    return Path(root) / TELEMETRY_DIR / DB_NAME


def status_path(db: Path) -> Path:
    """The status file the writer keeps beside the database ``db``."""
    return db.parent / STATUS_NAME


def file_bytes(db: Path) -> int:
    """Bytes the database takes on disk: the file plus its write-ahead log (what the size cap covers)."""
    total = 0
    for p in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(OSError):
            total += os.stat(p).st_size
    return total


def telemetry_facts(root: Path) -> dict[str, Any]:
    """The ``telemetry`` section of the facts: size, cap, records dropped and the errors, each once.

    A device that never recorded has ``"state": "none"``; an unreadable status file is reported as
    such (``"state": "unknown"``), never as healthy.
    """
    from .._json import loads_untrusted, read_untrusted_file
    from ..errors import EdgeRuntimeError

    db = db_path(root)
    out: dict[str, Any] = {"path": str(db), "size_bytes": file_bytes(db) if db.exists() else None}
    sp = status_path(db)
    try:
        raw = read_untrusted_file(sp, STATUS_MAX_BYTES)
        doc = loads_untrusted(raw, what="telemetry status", max_bytes=STATUS_MAX_BYTES)
    except FileNotFoundError:
        out["state"] = "none" if not db.exists() else "unknown"
        return out
    except (OSError, EdgeRuntimeError) as exc:
        out.update(state="unknown", error=f"status file {sp} unreadable: {getattr(exc, 'message', exc)}")
        return out
    if not isinstance(doc, dict):
        out.update(state="unknown", error=f"status file {sp} is not an object")
        return out
    for key in ("max_bytes", "recorded", "flushed", "dropped", "errors", "last_error", "moved_aside",
                "findings", "last_flush_at", "pid", "updated_at"):
        out[key] = doc.get(key)
    out["state"] = "error" if doc.get("last_error") else "ok"
    return out
