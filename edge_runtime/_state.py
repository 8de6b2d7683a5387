"""Persisted per-model state and the device lock.

State is one JSON document per model, replaced atomically (temp file, fsync, rename, fsync dir) at
every transition of the install state machine, so a power cut leaves either the previous or the next
state. A document that cannot be parsed is reported, never silently reset.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._fsutil import atomic_write_bytes
from ._json import check_fields, dumps_strict_bytes, loads_untrusted, read_untrusted_file
from ._limits import DEFAULT_LIMITS
from .errors import LockedError, StateCorruptError, quote_untrusted

STATE_SCHEMA = 1

#: phases of a pending operation, in order (what recovery does in each: edge_runtime.device's docstring)
PHASES = ("staging", "staged", "testing", "activating", "activated", "rolling_back")


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pending:
    op: str  # "install" or "rollback"
    version: str
    digest: str
    counter: int
    phase: str
    previous: str | None
    started_at: str
    smoke_attempts: int = 0
    reason: str | None = None


@dataclass
class ModelState:
    model: str
    active: str | None = None
    #: committed versions kept on disk -> {"digest", "counter", "committed_at", "smoke"}
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: committed versions in the order they were committed (oldest first)
    order: list[str] = field(default_factory=list)
    highest_counter: int = -1
    #: versions that failed here -> {"digest", "reason", "at"}
    bad: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: Pending | None = None
    last: dict[str, Any] | None = None
    #: kept versions whose files a verification found changed on disk -> {"digest", "reason", "at"}.
    #: They are never offered as ``previous`` nor used as a rollback target, and are dropped by the
    #: next garbage collection (their directory stays until then, for inspection).
    corrupt: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: set when the device could not reach the state an operation intended because a rollback target
    #: did not verify -> {"reason", "op", "version", "active", "at"}; cleared by the next install or
    #: operator rollback that commits, a passing post-install check, or ``repair``.
    degraded: dict[str, Any] | None = None

    def kept_versions(self) -> list[str]:
        """Committed versions kept on disk and not known to be corrupt, oldest first."""
        return [v for v in self.order if v in self.versions and v not in self.corrupt]

    def previous_committed(self) -> str | None:
        """The committed version before the active one, if still kept and not known to be corrupt."""
        kept = [v for v in self.kept_versions() if v != self.active]
        return kept[-1] if kept else None

    def health(self) -> str:
        """``pending``, ``degraded``, ``committed`` or ``none``: the one-word state of status and facts."""
        if self.pending:
            return "pending"
        if self.degraded:
            return "degraded"
        return "committed" if self.active else "none"

    def mark_corrupt(self, version: str, reason: str) -> None:
        """Record that ``version``'s files on disk no longer verify (persist with the store)."""
        digest = (self.versions.get(version) or {}).get("digest")
        self.corrupt[version] = {"digest": digest, "reason": reason, "at": utcnow()}

    def set_degraded(self, reason: str, *, op: str, version: str | None) -> None:
        self.degraded = {"reason": reason, "op": op, "version": version, "active": self.active, "at": utcnow()}

    def mark_healthy(self, version: str) -> None:
        """``version`` was just verified and committed: it is not corrupt, the model is not degraded."""
        self.corrupt.pop(version, None)
        self.degraded = None

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["schema"] = STATE_SCHEMA
        return dumps_strict_bytes(doc, f"state of {self.model}", indent=1, sort_keys=True) + b"\n"

    @classmethod
    def from_json(cls, data: bytes, path: Path) -> ModelState:
        def corrupt(why: str) -> StateCorruptError:
            return corrupt_state_error(path, why)

        # Untrusted input (a failing disk, a hand edit): bounded strict JSON, every field type-checked.
        lim = DEFAULT_LIMITS
        doc = loads_untrusted(data, lim, "the file", error=corrupt, max_bytes=lim.local_json_max_bytes)
        if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
            schema = doc.get("schema") if isinstance(doc, dict) else None
            raise corrupt(f"unknown schema {quote_untrusted(schema, 40)}")
        doc.pop("schema")
        check_fields(cls, doc, "the file", corrupt, skip=("pending",))
        pending = doc.pop("pending", None)
        if pending is not None:
            check_fields(Pending, pending, "its pending operation", corrupt)
        state = cls(**doc)
        state.pending = Pending(**pending) if pending else None
        _check_names(state, path.parent.name, corrupt)
        if state.pending is not None and state.pending.phase not in PHASES:
            raise corrupt(f"unknown phase {state.pending.phase!r}")
        if not isinstance(state.versions, dict) or not isinstance(state.order, list):
            raise corrupt("versions/order have the wrong type")
        if not isinstance(state.corrupt, dict) or not (state.degraded is None or isinstance(state.degraded, dict)):
            raise corrupt("corrupt/degraded have the wrong type")
        if state.active is not None and state.active not in state.versions:
            raise corrupt(f"active version {state.active} is not among the kept versions")
        return state


def corrupt_state_error(path: Path, why: str) -> StateCorruptError:
    """The error for a state file that cannot be used, with the repair command as the fix."""
    return StateCorruptError(
        f"state file {path} is corrupt: {why}",
        hint=f"nothing was changed; inspect the file, then run `edge-runtime --root {path.parents[2]} "
        f"repair {path.parent.name}` to rebuild it from the verified versions on disk",
        path=str(path),
    )


def _check_names(state: ModelState, model: str, corrupt: Callable[[str], StateCorruptError]) -> None:
    """Versions become paths (``versions/<v>``): every one in a state file must be a valid version."""
    from .errors import BundleFormatError
    from .manifest import Version

    if state.model != model:
        raise corrupt(f"it names the model {quote_untrusted(state.model, 64)}, not {model}")
    names = [*state.versions, *state.order, *state.bad, *state.corrupt]
    names += [v for v in (state.active, state.pending.version if state.pending else None) if v is not None]
    for v in names:
        try:
            Version.parse(v)
        except BundleFormatError:
            raise corrupt(f"{quote_untrusted(v, 40)} is not a valid version") from None
    for v, info in state.versions.items():
        if not isinstance(info.get("digest"), str):
            raise corrupt(f"kept version {v} has no manifest digest")
    for v, info in state.bad.items():
        if not isinstance(info.get("reason"), str):
            raise corrupt(f"quarantined version {v} has no reason")


def state_label(state: ModelState, busy: bool) -> str:
    """The one-word state that ``status`` and the facts show for a model.

    :meth:`ModelState.health`, with a pending operation told apart by the device lock: ``busy`` while a
    process holds the lock (the operation is running), ``recovery pending`` when nobody does (it was
    interrupted; the next mutating command or ``edge-runtime recover`` resolves it -- read-only commands
    never do, so they never run a smoke test nor wait for one).
    """
    health = state.health()
    if health == "pending":
        return "busy" if busy else "recovery pending"
    return health


class StateStore:
    """Reads and writes ``models/<name>/state.json`` under a device root."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir

    def path(self, name: str) -> Path:
        from .manifest import path_part  # a name from the command line must not leave models/

        return self.models_dir / path_part(name, "model name") / "state.json"

    def names(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        from .manifest import _NAME  # a stray directory that is not a model name is not a model

        return sorted(
            p.name for p in self.models_dir.iterdir() if _NAME.fullmatch(p.name) and (p / "state.json").exists()
        )

    def load(self, name: str) -> ModelState:
        p = self.path(name)
        try:
            data = read_untrusted_file(p, DEFAULT_LIMITS.local_json_max_bytes)
        except FileNotFoundError:
            return ModelState(model=name)
        except OSError as exc:  # not a regular file (a FIFO would have blocked), unreadable
            raise corrupt_state_error(p, f"it cannot be read: {exc.strerror}") from None
        return ModelState.from_json(data, p)

    def save(self, state: ModelState) -> None:
        p = self.path(state.model)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p, state.to_json())


class DeviceLock:
    """An exclusive, non-blocking ``flock`` on ``<root>/lock``; the file names the holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: whether this object holds the lock now (is_held() cannot tell: flock sees its own fd as another)
        self.held_here = False

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            return "unknown"

    @contextmanager
    def hold(self, what: str) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise LockedError(
                        f"another edge-runtime operation is running on {self.path.parent} ({self.holder()})",
                        hint="wait for it to finish; a crashed holder releases the lock automatically",
                    ) from None
                raise
            # the holder's name is informational: a full or read-only disk must not stop recovery (R3)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{what}, pid {os.getpid()}\n".encode(), 0)
            self.held_here = True
            try:
                yield
            finally:
                self.held_here = False
        finally:
            os.close(fd)

    def busy_elsewhere(self) -> bool:
        """Whether another holder (not this object) has the lock now."""
        return not self.held_here and self.is_held()

    def is_held(self) -> bool:
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False
