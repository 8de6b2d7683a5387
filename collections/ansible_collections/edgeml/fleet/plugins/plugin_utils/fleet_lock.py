# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The fleet lock: one rollout (deploy or rollback) at a time per fleet, on the controller.

An Ansible run is several processes (the ``ansible-playbook`` process and short-lived workers that run the
tasks), so no task can simply keep a file descriptor open for the whole run. The lock is therefore a
*holder record* whose life is tied to the ``ansible-playbook`` process:

* ``<lock_dir>/<fleet>.lock`` is a JSON record of the holder: user, host, pid and start time of the
  ``ansible-playbook`` process, playbook, start time (UTC) and run id. It is replaced atomically (temp file,
  fsync, rename), so a reader never sees half a record.
* Every read-decide-write of the record happens under an exclusive ``flock`` of ``<fleet>.lock.guard``
  (held for milliseconds), so two runs cannot both see the lock free and both take it.
* The lock is *held* while the record names a process that is alive on this host with the recorded start
  time (a recycled pid has another start time). When the holder ends in any way (normal end, failure,
  Ctrl-C, ``kill -9``, a reboot), its record goes stale and the next run takes it over, saying so: a crashed
  holder never blocks a fleet. ``deploy.yml`` also releases the record at its end.
* A record written on another host (a lock directory on a shared filesystem) cannot be checked from here
  and counts as held: clear it with ``scripts/fleet_lock.py clear --force`` after checking that host.

The functions here are pure Python (no Ansible), used by the action plugin ``edgeml.fleet.fleet_lock`` and
the operator's script ``scripts/fleet_lock.py``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import hashlib
import json
import math
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCK_SCHEMA = 1
POLL_S = 1.0


class FleetLockError(Exception):
    """The fleet lock could not be taken (held by someone else) or the lock record is unusable."""

    def __init__(self, message: str, *, hint: str | None = None, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.holder = holder

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


@dataclass(frozen=True)
class Holder:
    fleet: str
    run_id: str
    user: str
    host: str
    pid: int
    #: start time of ``pid`` in clock ticks since boot (/proc/<pid>/stat), to tell a recycled pid apart
    pid_start: str | None
    playbook: str
    started_at: str
    command: str = ""

    def describe(self) -> str:
        return (f"{self.user}@{self.host}, pid {self.pid}, {self.playbook}, run {self.run_id}, "
                f"since {self.started_at}")

    @classmethod
    def from_json(cls, data: bytes) -> Holder:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.pop("schema", None) != LOCK_SCHEMA:
            raise ValueError("not a fleet lock record of schema 1")
        return cls(**doc)

    def to_json(self) -> bytes:
        return json.dumps({"schema": LOCK_SCHEMA, **asdict(self)}, indent=1, sort_keys=True).encode() + b"\n"


def new_run_id() -> str:
    """A run id: UTC time and 32 random bits, e.g. ``20261202T172400Z-3f9a1c2b``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def fleet_name(inventory_sources: list[str]) -> str:
    """The lock name of the fleet described by these inventory sources: readable, and unique per sources."""
    real = sorted(os.path.realpath(s) for s in inventory_sources) or ["<no inventory>"]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(real[0]).name or "fleet")[:40]
    return f"{base}-{hashlib.sha256(chr(0).join(real).encode()).hexdigest()[:12]}"


def lock_path(lock_dir: str | Path, fleet: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", fleet) or fleet.startswith("."):
        raise FleetLockError(f"fleet name {fleet!r} is not usable as a lock name",
                             hint="use letters, digits, '.', '_' and '-' (edge_fleet_name)")
    return Path(lock_dir) / f"{fleet}.lock"


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` (field 22 of /proc/<pid>/stat), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):  # ended, not yet reaped by its parent: not a holder
        return None
    return fields[19] if len(fields) > 19 else None


def _cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def playbook_process() -> int:
    """The pid of the ``ansible-playbook`` process this code runs under (a worker's parent, usually).

    Walks up the parent chain to the first process whose command line runs ``ansible-playbook``; falls back
    to the direct parent.
    """
    pid = os.getppid()
    for _attempt in range(6):
        if any(Path(a).name == "ansible-playbook" for a in _cmdline(pid)[:3]):
            return pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return os.getppid()


def holder_for(fleet: str, run_id: str, playbook: str, pid: int | None = None) -> Holder:
    """The record this process would write: user, host, the ansible-playbook pid and its start time."""
    pid = playbook_process() if pid is None else pid
    return Holder(
        fleet=fleet, run_id=run_id, user=getpass.getuser(), host=socket.gethostname(), pid=pid,
        pid_start=process_start(pid), playbook=playbook,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), command=" ".join(_cmdline(pid))[:300],
    )


def alive(holder: Holder) -> bool | None:
    """Whether the holder process still runs: True, False, or None when it is on another host."""
    if holder.host != socket.gethostname():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    start = process_start(holder.pid)
    if start is None:
        return False  # gone (or a zombie being reaped)
    return holder.pid_start is None or start == holder.pid_start


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    """The short exclusive flock around every read-decide-write of the record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".guard"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def read(path: Path) -> Holder | None:
    """The current record, None when there is none; an unreadable one raises FleetLockError (held)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Holder.from_json(data)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise FleetLockError(
            f"the fleet lock record {path} is unreadable ({exc}); it counts as held",
            hint=f"if no deploy or rollback runs on this fleet, remove it: scripts/fleet_lock.py clear --force {path}",
        ) from None


def _write(path: Path, holder: Holder) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(holder.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _same_process(a: Holder, b: Holder) -> bool:
    return (a.host, a.pid, a.pid_start) == (b.host, b.pid, b.pid_start)


def _held_by_other(current: Holder | None, me: Holder) -> bool:
    if current is None or _same_process(current, me):
        return False
    return alive(current) is not False


def acquire(
    path: Path,
    me: Holder,
    wait_s: float = 0.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Holder | None:
    """Take the lock for ``me``, waiting up to ``wait_s`` seconds for a live holder to finish.

    Returns the stale record that was taken over (its holder is gone), or None. Raises FleetLockError
    naming the holder when it is still held after ``wait_s``. The same ``ansible-playbook`` process
    taking it again (its record) is not a conflict.
    """
    if math.isnan(wait_s) or wait_s < 0:
        raise FleetLockError(f"lock wait {wait_s!r} must be 0 or more seconds", hint="set edge_lock_wait, e.g. 600")
    deadline = clock() + wait_s
    while True:
        with _guard(path):
            current = read(path)
            if not _held_by_other(current, me):
                _write(path, me)
                return current if current is not None and not _same_process(current, me) else None
        remaining = deadline - clock()
        if remaining <= 0:
            if current is None:  # _held_by_other(None, me) is False: returned above
                raise AssertionError("unreachable: no lock record while held")
            where = "on another host: it cannot be checked from here" if alive(current) is None else "still running"
            raise FleetLockError(
                f"fleet {me.fleet} is locked by {current.describe()} ({where}); nothing was changed",
                hint=(f"another deploy or rollback is running on this fleet: wait for it, or re-run with "
                      f"-e edge_lock_wait=<seconds> to wait; see scripts/fleet_lock.py status {path.parent}"),
                holder=current,
            )
        sleep(min(POLL_S, remaining))


def release(path: Path, run_id: str) -> bool:
    """Remove the record if it is this run's; True when it was removed."""
    with _guard(path):
        try:
            current = read(path)
        except FleetLockError:
            return False
        if current is None or current.run_id != run_id:
            return False
        path.unlink()
        return True


def status(path: Path) -> dict[str, Any]:
    """The record and whether its holder is alive (``held``: True, False, or None when unknown)."""
    try:
        current = read(path)
    except FleetLockError as exc:
        return {"path": str(path), "held": True, "holder": None, "error": str(exc)}
    if current is None:
        return {"path": str(path), "held": False, "holder": None}
    live = alive(current)
    return {"path": str(path), "held": live is not False, "alive": live, "holder": asdict(current)}


def clear(path: Path, *, force: bool = False) -> str:
    """Remove a stale record (its process is gone). A live one is refused; another host's needs ``force``."""
    with _guard(path):
        try:
            current = read(path)
        except FleetLockError:
            if not force:
                raise
            current = None
        if current is not None:
            live = alive(current)
            if live:
                raise FleetLockError(f"{path} is held by a running process: {current.describe()}",
                                     hint="it is released when that run ends; never clear a live lock")
            if live is None and not force:
                raise FleetLockError(
                    f"{path} was taken on another host ({current.describe()}); this host cannot check it",
                    hint="check that no deploy or rollback runs there, then clear it with --force",
                )
        try:
            path.unlink()
        except FileNotFoundError:
            return f"{path}: no lock"
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return f"{path}: no lock"
            raise
        return f"{path}: cleared" + (f" (was {current.describe()})" if current else "")
